//! `helios-http-proxy` configuration (JSON, yorishiro's shape plus the listener settings).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use helios_plugin_starlark::{PluginEntry, parse_plugins};
use serde::Deserialize;
use serde_json::Value;

/// Default cap of a body a hook sees (and may grow to).
pub const DEFAULT_BODY_CAP: usize = 1 << 20;

/// Reverse proxy (one upstream) or forward proxy (absolute-form requests and CONNECT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Reverse,
    Forward,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: SocketAddr,
    #[serde(default = "reverse")]
    mode: Mode,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    upstream_http2: bool,
    #[serde(default)]
    body_cap: Option<usize>,
    #[serde(default)]
    store_path: Option<PathBuf>,
    #[serde(default)]
    mcp_listen: Option<SocketAddr>,
    #[serde(default)]
    verify_with: Option<PathBuf>,
    #[serde(default)]
    blocklist: Option<PathBuf>,
    // Parsed separately (legacy fields first), listed here so `deny_unknown_fields` accepts it.
    #[serde(default, rename = "plugins")]
    _plugins: Value,
}

fn reverse() -> Mode {
    Mode::Reverse
}

/// The proxy's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Reverse or forward.
    pub mode: Mode,
    /// The upstream base URL (`http://host:port`), reverse mode only.
    pub upstream: Option<hyper::Uri>,
    /// Talk HTTP/2 (prior knowledge) to the upstream.
    pub upstream_http2: bool,
    /// Bodies up to this size are given to hooks; larger ones stream through unchanged.
    pub body_cap: usize,
    /// SQLite database for the persistent `store`; absent keeps `store` in memory.
    pub store_path: Option<PathBuf>,
    /// Where the MCP streamable HTTP endpoint (`plugin_introspect`) listens.
    pub mcp_listen: Option<SocketAddr>,
    /// Trust-root directory every `.wasm` plugin's signature must verify against (PEM, signify,
    /// hex or base64 `.pub` files, as for the SQL proxy).
    pub verify_with: Option<PathBuf>,
    /// Digest blocklist (`{"digests": ["sha256:..."]}`) checked before any module is compiled.
    pub blocklist: Option<PathBuf>,
    /// Plugins, in chain order, paths resolved against the config file's directory.
    pub plugins: Vec<PluginEntry>,
}

impl Config {
    /// Parses a JSON config; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        // Legacy plugin fields get the migration message before any other check.
        let value: Value = serde_json::from_str(text).map_err(|e| format!("config is not JSON: {e}"))?;
        let plugins = match value.get("plugins") {
            None | Some(Value::Null) => Vec::new(),
            Some(p) => parse_plugins(p).map_err(|e| e.to_string())?,
        };
        let raw: Raw = serde_json::from_value(value).map_err(|e| format!("config: {e}"))?;
        let upstream = match (&raw.mode, raw.upstream) {
            (Mode::Reverse, None) => return Err("config: reverse mode needs `upstream` (http://host:port)".into()),
            (_, None) => None,
            (_, Some(u)) => {
                let uri: hyper::Uri = u.parse().map_err(|e| format!("config: upstream \"{u}\": {e}"))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(format!("config: upstream \"{u}\" must be an http://host:port URL"));
                }
                Some(uri)
            }
        };
        let plugins: Vec<PluginEntry> = plugins.into_iter().map(|p| p.resolve(base)).collect();
        for (index, p) in plugins.iter().enumerate() {
            if !p.unsigned {
                continue;
            }
            if !p.is_wasm() {
                return Err(format!(
                    "config: plugins[{index}] ({}): `unsigned` applies to .wasm plugins only",
                    p.effective_name()
                ));
            }
            if !raw.listen.ip().is_loopback() {
                return Err(format!(
                    "config: plugins[{index}] ({}): `unsigned: true` is for development and is refused while `listen` ({}) is not a loopback address; sign the module and set `verify_with`",
                    p.effective_name(),
                    raw.listen
                ));
            }
        }
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        Ok(Config {
            listen: raw.listen,
            mode: raw.mode,
            upstream,
            upstream_http2: raw.upstream_http2,
            body_cap: raw.body_cap.unwrap_or(DEFAULT_BODY_CAP),
            store_path: raw.store_path.map(resolve),
            mcp_listen: raw.mcp_listen,
            verify_with: raw.verify_with.map(resolve),
            blocklist: raw.blocklist.map(resolve),
            plugins,
        })
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Config::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }
}
