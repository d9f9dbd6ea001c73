//! Typed errors of the proxy. Each message says what was expected, what was found and where.

use thiserror::Error;

/// A configuration file that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{file}: cannot read: {message}")]
    Io { file: String, message: String },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {field}: {message}")]
    Invalid { file: String, field: String, message: String },
    /// `[[plugins]]` could not become a chain; the host's message names file, entry and field.
    #[error("{message}")]
    Plugins { message: String },
}

/// A protocol violation or I/O failure on one connection. It ends that connection only.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("{peer}: i/o error: {source}")]
    Io {
        peer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{peer}: connection closed")]
    Closed { peer: String },
    #[error("{peer}: message of {found} bytes exceeds the limit of {limit} bytes")]
    TooLarge { peer: String, found: usize, limit: usize },
    #[error("{peer}: invalid message length {found} (expected at least 4)")]
    BadLength { peer: String, found: i64 },
    #[error("{peer}: malformed {what} message: {message}")]
    Malformed { peer: String, what: &'static str, message: String },
}

/// Why the proxy could not get a usable connection to a node.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UpstreamError {
    #[error("node \"{node}\" ({addr}): cannot connect: {message}")]
    Connect { node: String, addr: String, message: String },
    #[error("node \"{node}\" ({addr}): {severity} {code}: {message}")]
    Server { node: String, addr: String, severity: String, code: String, message: String },
    #[error("node \"{node}\" ({addr}): authentication: {message}")]
    Auth { node: String, addr: String, message: String },
    #[error("node \"{node}\" ({addr}): protocol: {message}")]
    Protocol { node: String, addr: String, message: String },
    /// `cap` names the full cap and its setting, e.g. `max_db_connections = 2 reached for
    /// database "app"`.
    #[error("node \"{node}\": no free connection within {waited_ms} ms (pool_timeout_ms): {cap}")]
    PoolTimeout { node: String, waited_ms: u64, cap: String },
}

impl UpstreamError {
    /// The SQLSTATE a client sees for this failure.
    pub fn sqlstate(&self) -> &str {
        match self {
            UpstreamError::Server { code, .. } => code,
            UpstreamError::PoolTimeout { .. } => "53300",
            UpstreamError::Auth { .. } => "28000",
            _ => "08001",
        }
    }
}

/// Failures that stop the proxy from starting or serving.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("listener {listen}: cannot bind: {source}")]
    Bind {
        listen: String,
        #[source]
        source: std::io::Error,
    },
}
