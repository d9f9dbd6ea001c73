//! `proxy.toml`: listeners, upstream nodes, users, pooling and the `[[plugins]]` the host reads.
//!
//! Every table denies unknown fields: a typo in a proxy's configuration must stop it at start, not
//! silently change how it routes or authenticates. `[[plugins]]` entries are kept as raw TOML here
//! and interpreted by the plugin loader ([`crate::plugins`]), so the host's own parser can take over
//! that section unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// Largest protocol message accepted from a client or a server. Default: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Upstream connections per pool key (node, user, database, startup parameters). Default: 20.
pub const DEFAULT_POOL_SIZE: usize = 20;
/// How long a statement waits for a free upstream connection. Default: 10 s.
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (TCP and authentication) to a node may take. Default: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle upstream connection is closed after this long. Default: 600 s.
pub const DEFAULT_SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a graceful shutdown waits for sessions to finish. Default: 30 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Client connections the proxy serves at once; one more is refused with 53300. Default: 1000
/// (PgBouncer's default has 100; clients are cheap here, upstream connections are what `pool_size`
/// caps).
pub const DEFAULT_MAX_CLIENT_CONN: usize = 1000;
/// Upstream connections to one database of a node, over all its users and pool keys (PgBouncer's
/// `max_db_connections`); a client that would open one more waits, FIFO, up to `pool_timeout_ms`,
/// then gets 53300 naming this cap. 0 is no cap. Default: 100 (PostgreSQL's default
/// `max_connections`, so the proxy alone does not exhaust a default server).
pub const DEFAULT_MAX_DB_CONNECTIONS: usize = 100;
/// Upstream connections of one user to a node, over all its databases and pool keys (PgBouncer's
/// `max_user_connections`; `[[users]] max_user_connections` overrides it per user). Waiting and the
/// error as for [`DEFAULT_MAX_DB_CONNECTIONS`]. 0 is no cap. Default: 100.
pub const DEFAULT_MAX_USER_CONNECTIONS: usize = 100;
/// How long a client may take from connecting to finishing authentication. Default: 60 s (as
/// PgBouncer's `client_login_timeout`).
pub const DEFAULT_CLIENT_LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a session may sit idle inside a transaction before it is closed (holding locks and an
/// upstream connection). Default: 0, off (as PostgreSQL's `idle_in_transaction_session_timeout`).
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::ZERO;
/// Plugin calls (`pre_query`, `route`) running at once, each on a thread off the async workers.
/// Default: 64.
pub const DEFAULT_PLUGIN_WORKERS: usize = 64;
/// How long a statement waits for a free plugin worker before it is refused (53000). Default: 5 s.
pub const DEFAULT_PLUGIN_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `session` (a client keeps its upstream connections) or `transaction` (returned after each
    /// transaction). Default: session.
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// See [`DEFAULT_POOL_SIZE`].
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// See [`DEFAULT_POOL_TIMEOUT`] (milliseconds).
    #[serde(default = "default_pool_timeout_ms")]
    pub pool_timeout_ms: u64,
    /// See [`DEFAULT_CONNECT_TIMEOUT`] (milliseconds).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// See [`DEFAULT_SERVER_IDLE_TIMEOUT`] (milliseconds).
    #[serde(default = "default_server_idle_timeout_ms")]
    pub server_idle_timeout_ms: u64,
    /// See [`DEFAULT_SHUTDOWN_TIMEOUT`] (milliseconds).
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// See [`DEFAULT_MAX_MESSAGE_BYTES`].
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// See [`DEFAULT_MAX_CLIENT_CONN`].
    #[serde(default = "default_max_client_conn")]
    pub max_client_conn: usize,
    /// See [`DEFAULT_MAX_DB_CONNECTIONS`].
    #[serde(default = "default_max_db_connections")]
    pub max_db_connections: usize,
    /// See [`DEFAULT_MAX_USER_CONNECTIONS`].
    #[serde(default = "default_max_user_connections")]
    pub max_user_connections: usize,
    /// See [`DEFAULT_CLIENT_LOGIN_TIMEOUT`] (milliseconds).
    #[serde(default = "default_client_login_timeout_ms")]
    pub client_login_timeout_ms: u64,
    /// See [`DEFAULT_PLUGIN_WORKERS`].
    #[serde(default = "default_plugin_workers")]
    pub plugin_workers: usize,
    /// See [`DEFAULT_PLUGIN_WAIT_TIMEOUT`] (milliseconds).
    #[serde(default = "default_plugin_wait_timeout_ms")]
    pub plugin_wait_timeout_ms: u64,
    /// See [`DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT`] (milliseconds; 0 is off).
    #[serde(default)]
    pub idle_in_transaction_timeout_ms: u64,
    pub listeners: Vec<ListenerConfig>,
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Plugin entries, interpreted by the plugin loader.
    #[serde(default)]
    pub plugins: Vec<toml::Table>,
    /// Where plugin KV state lives (`[state]`: memory, sqlite or redis); see `helios_plugin_state`.
    #[serde(default)]
    pub state: helios_plugin_state::StateConfig,
    /// Where compiled plugin modules are kept so a restart loads them without compiling (the host's
    /// integrity-checked module cache): a directory (relative to the config file), or `off`.
    /// Default: `$XDG_CACHE_HOME/helios-proxy/modules`, else `$HOME/.cache/helios-proxy/modules`.
    /// Whoever can write that directory can run code in the proxy: keep it the proxy user's own.
    #[serde(default)]
    pub module_cache: Option<String>,
    /// The admin listener (`[admin]`: `/metrics`, `/plugins`, `POST /reload`); off when absent.
    /// Its `token_file` is relative to the working directory.
    #[serde(default)]
    pub admin: Option<helios_plugin_admin::AdminConfig>,
    /// The directory relative plugin paths are resolved against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl ProxyConfig {
    /// The module cache directory `module_cache` asks for; `None` when `off` (or when the default
    /// is asked for and neither `XDG_CACHE_HOME` nor `HOME` is set).
    pub fn module_cache_dir(&self) -> Option<PathBuf> {
        match self.module_cache.as_deref().map(str::trim) {
            Some(off) if off.eq_ignore_ascii_case("off") => None,
            Some(dir) if !dir.is_empty() => Some(self.base_dir.join(dir)),
            _ => {
                let base =
                    std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
                        std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache"))
                    })?;
                Some(base.join("helios-proxy").join("modules"))
            }
        }
    }
}

fn default_pool_size() -> usize {
    DEFAULT_POOL_SIZE
}
fn default_pool_timeout_ms() -> u64 {
    DEFAULT_POOL_TIMEOUT.as_millis() as u64
}
fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT.as_millis() as u64
}
fn default_server_idle_timeout_ms() -> u64 {
    DEFAULT_SERVER_IDLE_TIMEOUT.as_millis() as u64
}
fn default_shutdown_timeout_ms() -> u64 {
    DEFAULT_SHUTDOWN_TIMEOUT.as_millis() as u64
}
fn default_plugin_workers() -> usize {
    DEFAULT_PLUGIN_WORKERS
}
fn default_plugin_wait_timeout_ms() -> u64 {
    DEFAULT_PLUGIN_WAIT_TIMEOUT.as_millis() as u64
}
fn default_client_login_timeout_ms() -> u64 {
    DEFAULT_CLIENT_LOGIN_TIMEOUT.as_millis() as u64
}
fn default_max_client_conn() -> usize {
    DEFAULT_MAX_CLIENT_CONN
}
fn default_max_db_connections() -> usize {
    DEFAULT_MAX_DB_CONNECTIONS
}
fn default_max_user_connections() -> usize {
    DEFAULT_MAX_USER_CONNECTIONS
}
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// How upstream connections are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    #[default]
    Session,
    Transaction,
}

/// One address the proxy accepts clients on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `host:port`, e.g. `127.0.0.1:6432` (port 0 picks a free one).
    pub listen: String,
    /// How clients authenticate. Default: trust.
    #[serde(default)]
    pub auth: ClientAuth,
    /// `trust` on an address other than loopback lets anyone who reaches it log in as any
    /// configured user with that user's stored upstream password: refused at start unless this is
    /// true. Default: false.
    #[serde(default)]
    pub allow_trust_non_loopback: bool,
    /// PEM certificate chain (leaf first) for TLS with clients; with `tls_key_file`, an SSLRequest
    /// is answered `S` and the session runs over TLS (`sslmode=require`/`verify-full`). Relative
    /// paths are resolved against the configuration file. Reloaded on SIGHUP.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

/// Whether `listen` (`host:port`) is a loopback address.
fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Client authentication methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ClientAuth {
    /// Any user name is accepted without a password.
    #[default]
    #[serde(rename = "trust")]
    Trust,
    /// The user must be in `[[users]]` and prove its password with SCRAM-SHA-256.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

/// Whether a node takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Primary,
    Standby,
}

/// One upstream PostgreSQL server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub role: NodeRole,
    /// TLS to this node, as libpq's `sslmode`: `disable`, `prefer` (TLS when offered, certificate
    /// not checked), `require` (TLS or fail, certificate not checked) or `verify-full` (TLS with a
    /// certificate for `host` signed by `tls_ca_file`). Default: disable.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// PEM CA certificates for `verify-full`.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

/// TLS to a node (libpq's `sslmode` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    #[default]
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// One user: how it proves itself to the proxy and which credentials the proxy uses upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain password: checked with SCRAM from clients and sent upstream (md5, SCRAM or cleartext).
    #[serde(default)]
    pub password: Option<String>,
    /// A stored SCRAM verifier (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`, as in
    /// `pg_authid` or PgBouncer's auth file) for client authentication only.
    #[serde(default)]
    pub scram_verifier: Option<String>,
    /// The password used upstream when it differs from `password` (or when only a verifier is set).
    #[serde(default)]
    pub upstream_password: Option<String>,
    /// `helios.*` attributes the operator binds to this user (e.g. `"helios.tenant" = "acme"`):
    /// plugins see these values, and a client's attempt to set one (startup options or `SET`) is
    /// refused with 42501. Only as strong as the listener's authentication: bind them behind
    /// `scram-sha-256`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// This user's own `max_user_connections` (0 is no cap). Default: the global one.
    #[serde(default)]
    pub max_user_connections: Option<usize>,
}

impl UserConfig {
    /// The password the proxy sends to a node for this user, if any.
    pub fn upstream_password(&self) -> Option<&str> {
        self.upstream_password.as_deref().or(self.password.as_deref())
    }
}

impl ProxyConfig {
    /// Parses `text` (the contents of `origin`, used in messages) and checks it.
    pub fn from_toml(text: &str, origin: &str) -> Result<ProxyConfig, ConfigError> {
        let mut cfg: ProxyConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { file: origin.to_string(), message: e.to_string() })?;
        cfg.base_dir = Path::new(origin).parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io { file: path.display().to_string(), message: e.to_string() })?;
        ProxyConfig::from_toml(&text, &path.display().to_string())
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            file: origin.to_string(),
            field: field.to_string(),
            message,
        };
        self.state.validate().map_err(|e| invalid("state", e.to_string()))?;
        if self.listeners.is_empty() {
            return Err(invalid("listeners", "expected at least one [[listeners]] entry, found none".into()));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.tls_cert_file.is_some() != l.tls_key_file.is_some() {
                return Err(invalid(
                    &format!("listeners[{i}]"),
                    "tls_cert_file and tls_key_file go together: set both or neither".into(),
                ));
            }
            if l.auth == ClientAuth::Trust && !l.allow_trust_non_loopback && !is_loopback(&l.listen) {
                return Err(invalid(
                    &format!("listeners[{i}].auth"),
                    format!(
                        "trust on {} (not a loopback address) lets anyone who reaches it log in with the stored \
                         upstream passwords: use auth = \"scram-sha-256\", or set allow_trust_non_loopback = true",
                        l.listen
                    ),
                ));
            }
        }
        if self.nodes.is_empty() {
            return Err(invalid("nodes", "expected at least one [[nodes]] entry, found none".into()));
        }
        let mut names = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.tls == UpstreamTls::VerifyFull && n.tls_ca_file.is_none() {
                return Err(invalid(
                    &format!("nodes[{i}].tls_ca_file"),
                    format!("node \"{}\": tls = \"verify-full\" needs tls_ca_file (PEM CA certificates)", n.name),
                ));
            }
            if let Some(first) = names.insert(n.name.as_str(), i) {
                return Err(invalid(
                    &format!("nodes[{i}].name"),
                    format!("node name \"{}\" is already used by nodes[{first}]", n.name),
                ));
            }
        }
        let mut users = BTreeMap::new();
        for (i, u) in self.users.iter().enumerate() {
            if let Some(first) = users.insert(u.name.as_str(), i) {
                return Err(invalid(
                    &format!("users[{i}].name"),
                    format!("user \"{}\" is already defined by users[{first}]", u.name),
                ));
            }
            for k in u.attributes.keys() {
                if !k.starts_with(crate::attrs::HELIOS_PREFIX) || k.len() <= crate::attrs::HELIOS_PREFIX.len() {
                    return Err(invalid(
                        &format!("users[{i}].attributes"),
                        format!("user \"{}\": attribute \"{k}\" must be named helios.<name>", u.name),
                    ));
                }
            }
            if let Some(v) = &u.scram_verifier {
                crate::scram::Verifier::parse(v)
                    .map_err(|e| invalid(&format!("users[{i}].scram_verifier"), format!("user \"{}\": {e}", u.name)))?;
            }
        }
        if self.plugin_workers == 0 {
            return Err(invalid("plugin_workers", "expected at least 1, found 0".into()));
        }
        if self.pool_size == 0 {
            return Err(invalid("pool_size", "expected at least 1, found 0".into()));
        }
        if self.max_message_bytes < 1024 {
            return Err(invalid(
                "max_message_bytes",
                format!("expected at least 1024, found {}", self.max_message_bytes),
            ));
        }
        Ok(())
    }

    /// The node statements go to when no plugin decides: the first primary, else the first node.
    pub fn default_node(&self) -> &NodeConfig {
        self.nodes.iter().find(|n| n.role == NodeRole::Primary).unwrap_or(&self.nodes[0])
    }

    /// A configured user by name.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The pool caps: `pool_size`, `max_db_connections`, `max_user_connections` (with the
    /// per-user overrides) and `pool_timeout_ms`.
    pub fn pool_limits(&self) -> crate::pool::PoolLimits {
        crate::pool::PoolLimits {
            pool_size: self.pool_size,
            max_db_connections: self.max_db_connections,
            max_user_connections: self.max_user_connections,
            user_caps: self.users.iter().filter_map(|u| Some((u.name.clone(), u.max_user_connections?))).collect(),
            timeout: self.pool_timeout(),
        }
    }

    pub fn plugin_wait_timeout(&self) -> Duration {
        Duration::from_millis(self.plugin_wait_timeout_ms)
    }

    pub fn client_login_timeout(&self) -> Duration {
        Duration::from_millis(self.client_login_timeout_ms)
    }

    /// `None` when off.
    pub fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        (self.idle_in_transaction_timeout_ms > 0).then(|| Duration::from_millis(self.idle_in_transaction_timeout_ms))
    }

    pub fn pool_timeout(&self) -> Duration {
        Duration::from_millis(self.pool_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn server_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.server_idle_timeout_ms)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[listeners]]
        listen = "127.0.0.1:0"
        [[nodes]]
        name = "primary"
        host = "127.0.0.1"
        port = 5432
        role = "primary"
    "#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = ProxyConfig::from_toml(MINIMAL, "proxy.toml").unwrap();
        assert_eq!(c.pool_mode, PoolMode::Session);
        assert_eq!(c.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(c.max_client_conn, DEFAULT_MAX_CLIENT_CONN);
        assert_eq!(c.pool_limits().max_db_connections, DEFAULT_MAX_DB_CONNECTIONS);
        assert_eq!(c.pool_limits().max_user_connections, DEFAULT_MAX_USER_CONNECTIONS);
        assert_eq!(c.pool_timeout(), DEFAULT_POOL_TIMEOUT);
        assert_eq!(c.client_login_timeout(), DEFAULT_CLIENT_LOGIN_TIMEOUT);
        assert_eq!(c.idle_in_transaction_timeout(), None);
        assert_eq!(c.plugin_workers, DEFAULT_PLUGIN_WORKERS);
        assert_eq!(c.plugin_wait_timeout(), DEFAULT_PLUGIN_WAIT_TIMEOUT);
        assert_eq!(c.listeners[0].auth, ClientAuth::Trust);
        assert_eq!(c.default_node().name, "primary");
    }

    #[test]
    fn trust_on_a_non_loopback_address_is_refused_unless_allowed() {
        for (listen, ok) in [("127.0.0.1:6432", true), ("[::1]:6432", true), ("localhost:6432", true)] {
            let text = MINIMAL.replace("127.0.0.1:0", listen);
            assert_eq!(ProxyConfig::from_toml(&text, "proxy.toml").is_ok(), ok, "{listen}");
        }
        let text = MINIMAL.replace("127.0.0.1:0", "0.0.0.0:6432");
        let err = ProxyConfig::from_toml(&text, "proxy.toml").unwrap_err().to_string();
        assert!(err.contains("listeners[0].auth") && err.contains("0.0.0.0:6432"), "{err}");
        let allowed =
            text.replace("listen = \"0.0.0.0:6432\"", "listen = \"0.0.0.0:6432\"\nallow_trust_non_loopback = true");
        assert!(ProxyConfig::from_toml(&allowed, "proxy.toml").is_ok());
        let scram = text.replace("listen = \"0.0.0.0:6432\"", "listen = \"0.0.0.0:6432\"\nauth = \"scram-sha-256\"");
        assert!(ProxyConfig::from_toml(&scram, "proxy.toml").is_ok());
    }

    #[test]
    fn the_module_cache_is_on_by_default_relative_to_the_config_and_can_be_off() {
        let c = ProxyConfig::from_toml(MINIMAL, "conf/proxy.toml").unwrap();
        if std::env::var_os("XDG_CACHE_HOME").is_some() || std::env::var_os("HOME").is_some() {
            let dir = c.module_cache_dir().expect("on by default");
            assert!(dir.ends_with("helios-proxy/modules"), "{}", dir.display());
        }
        let c = ProxyConfig::from_toml(&format!("module_cache = \"off\"\n{MINIMAL}"), "conf/proxy.toml").unwrap();
        assert_eq!(c.module_cache_dir(), None);
        let c = ProxyConfig::from_toml(&format!("module_cache = \"cache/m\"\n{MINIMAL}"), "conf/proxy.toml").unwrap();
        assert_eq!(c.module_cache_dir(), Some(PathBuf::from("conf/cache/m")));
    }

    #[test]
    fn a_typo_names_the_field_and_the_file() {
        let text = format!("{MINIMAL}\npool_mdoe = \"transaction\"\n");
        let err = ProxyConfig::from_toml(&text, "conf/proxy.toml").unwrap_err().to_string();
        assert!(err.contains("conf/proxy.toml") && err.contains("pool_mdoe"), "{err}");
    }

    #[test]
    fn duplicate_node_names_are_refused() {
        let text = format!("{MINIMAL}\n[[nodes]]\nname = \"primary\"\nhost = \"h\"\nport = 1\nrole = \"standby\"\n");
        let err = ProxyConfig::from_toml(&text, "proxy.toml").unwrap_err().to_string();
        assert!(err.contains("nodes[1].name") && err.contains("already used"), "{err}");
    }

    #[test]
    fn a_broken_scram_verifier_is_refused_at_load() {
        let text = format!("{MINIMAL}\n[[users]]\nname = \"app\"\nscram_verifier = \"SCRAM-SHA-256$x\"\n");
        let err = ProxyConfig::from_toml(&text, "proxy.toml").unwrap_err().to_string();
        assert!(err.contains("users[0].scram_verifier") && err.contains("app"), "{err}");
    }
}
