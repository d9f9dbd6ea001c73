//! The gateway's configuration: chio's `chio.yaml` with its `wasm_guards[]` block exactly as chio's
//! page shows it, plus the gateway's own `gateway:` and `upstreams:` sections. The same document is
//! accepted as TOML (`[[wasm_guards]]`, `[[upstreams]]`, `[gateway]`) when the file ends in `.toml`.
//!
//! ```yaml
//! wasm_guards:
//!   - name: tool-denylist
//!     path: guards/tool-denylist/tool_denylist.wasm   # guard-manifest.yaml is found walking up from here
//!     fuel_limit: 5000000                             # default 10,000,000
//!     priority: 100                                   # lower runs first; default 1000
//!     advisory: false                                 # a failing advisory guard allows; default false
//!     max_memory_bytes: 16777216                      # default 16 MiB
//!     max_module_size: 10485760                       # default 10 MiB
//!     config: { denylist: "rm,curl" }                 # overrides the manifest's config, key by key
//! upstreams:
//!   - id: files
//!     command: python3
//!     args: [files_server.py]
//!   - id: web
//!     url: http://127.0.0.1:9000/mcp
//!   - id: internal
//!     url: https://mcp.internal.example:8443/mcp
//!     ca_file: certs/internal-ca.pem   # trusted besides the system roots (optional)
//! gateway:
//!   trusted_keys: keys/            # trust-root directory; default: only keys pinned by manifests
//!   blocklist: blocklist.json      # {"digests": ["sha256:..."]}
//! ```
//!
//! chio's own top-level sections (`kernel`, `adapters`) are accepted and ignored, so a chio.yaml
//! loads as it is. Every other field is known: a typo is an error naming the file and the field,
//! because a misspelt `advisory` or `priority` would silently change what is allowed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use helios_plugin_schema::limits::{
    DEFAULT_FUEL, DEFAULT_MAX_MEMORY_BYTES, DEFAULT_MAX_MODULE_BYTES, DEFAULT_PRIORITY,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Reload triggers (file change, SIGHUP, admin request) less than this apart become one reload.
/// Default: 250 ms.
pub const DEFAULT_RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);
/// Largest JSON-RPC message accepted from an agent (a stdio line or an HTTP body). Default: 4 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;
/// How long a forwarded call may take upstream before the agent gets an error. Default: 30 s.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to an upstream (spawn + handshake + tool list) may take. Default: 20 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Guard evaluations that run at once, each on a blocking thread. Default: 4.
pub const DEFAULT_GUARD_THREADS: usize = 4;
/// How long a tool call waits for a guard thread before it is denied. Default: 2 s.
pub const DEFAULT_GUARD_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often guard files and the config are checked for changes (0 turns watching off). Default: 1 s.
pub const DEFAULT_RELOAD_POLL: Duration = Duration::from_secs(1);

/// A configuration that could not be read. Each message names the file, and the entry and field
/// where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {entry} field {field}: {message}")]
    Field { file: String, entry: String, field: &'static str, message: String },
}

/// A config value: chio's `config` maps are strings; YAML scalars (numbers, booleans) are taken as
/// their text so `threshold: 0.8` means `"0.8"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum Scalar {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::String(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

fn scalar_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: BTreeMap<String, Scalar> = BTreeMap::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.to_string())).collect())
}

/// One `wasm_guards[]` entry, field for field as chio's page documents it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmGuardEntry {
    /// The guard's name; must equal the `name` of its `guard-manifest.yaml` (and signature).
    pub name: String,
    /// The guard's `.wasm`. Its `guard-manifest.yaml` is found walking up from this file's directory.
    pub path: PathBuf,
    /// Fuel per evaluation. Default: 10,000,000.
    #[serde(default = "default_fuel")]
    pub fuel_limit: u64,
    /// Lower runs first. Default: 1000.
    #[serde(default = "default_priority")]
    pub priority: i32,
    /// A failing (trapping, out of fuel, bad result) advisory guard allows and logs; a non-advisory
    /// one denies. A deliberate deny always denies. Default: false.
    #[serde(default)]
    pub advisory: bool,
    /// Linear memory cap. Default: 16 MiB.
    #[serde(default = "default_memory")]
    pub max_memory_bytes: u64,
    /// Module size cap, checked before the module is hashed or compiled. Default: 10 MiB.
    #[serde(default = "default_module_size")]
    pub max_module_size: u64,
    /// String values the guest reads with `get_config`; override the manifest's, key by key.
    #[serde(default, deserialize_with = "scalar_map")]
    pub config: BTreeMap<String, String>,
    /// Config keys whose values the admin listener's `/plugins` never shows (yorishiro's
    /// `redact_keys`; an extension of chio's entry). Each must be a key of `config`.
    #[serde(default)]
    pub redact_keys: Vec<String>,
    /// A candidate version run beside this guard on sampled real tool calls, compared and never
    /// applied; `/plugins` shows its agreement rate and `POST /plugins/<name>/promote` applies it
    /// through the canary (an extension of chio's entry).
    pub shadow: Option<ShadowEntry>,
}

/// A guard entry's `shadow` candidate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowEntry {
    /// The candidate's `.wasm`; its own `guard-manifest.yaml` (found walking up) names the same
    /// guard and is verified like the live one's. Relative to the config file.
    pub path: PathBuf,
    /// Share of the live guard's calls the candidate also runs on, in (0, 1]: one call in
    /// `round(1 / sample_rate)`. Default: 1 (every call).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: f64,
}

fn default_sample_rate() -> f64 {
    1.0
}

fn default_fuel() -> u64 {
    DEFAULT_FUEL
}
fn default_priority() -> i32 {
    DEFAULT_PRIORITY
}
fn default_memory() -> u64 {
    DEFAULT_MAX_MEMORY_BYTES
}
fn default_module_size() -> u64 {
    DEFAULT_MAX_MODULE_BYTES
}

/// One upstream MCP server: a child process over stdio (`command`) or a streamable HTTP `url`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamEntry {
    /// The server's id: the `server_id` guards see, and the prefix of its tools when names collide.
    pub id: String,
    /// Program to run (stdio transport).
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables for it.
    #[serde(default, deserialize_with = "scalar_map")]
    pub env: BTreeMap<String, String>,
    /// Working directory of the child; relative to the config file. Default: the config's directory.
    pub cwd: Option<PathBuf>,
    /// Streamable HTTP endpoint (`http://` or `https://`), instead of `command`.
    pub url: Option<String>,
    /// PEM certificate(s) of a CA trusted for this `https://` upstream besides the system roots
    /// (a private or self-signed CA). Relative to the config file.
    pub ca_file: Option<PathBuf>,
}

/// How the upstream is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    Command {
        program: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: PathBuf,
    },
    /// A streamable HTTP endpoint; for `https://`, the extra trusted CA (PEM) from `ca_file`.
    Url {
        url: String,
        ca_pem: Option<Vec<u8>>,
    },
}

/// The `gateway:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Trust-root directory (PEM, signify, hex or base64 public keys). Relative to the config file.
    pub trusted_keys: Option<PathBuf>,
    /// Digest blocklist (`{"digests": ["sha256:..."]}`). Relative to the config file.
    pub blocklist: Option<PathBuf>,
    /// Load guards without a signature (development only; each load logs a warning). Default: false.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// See [`DEFAULT_MAX_REQUEST_BYTES`].
    pub max_request_bytes: Option<usize>,
    /// See [`DEFAULT_CALL_TIMEOUT`] (milliseconds).
    pub call_timeout_ms: Option<u64>,
    /// See [`DEFAULT_CONNECT_TIMEOUT`] (milliseconds).
    pub connect_timeout_ms: Option<u64>,
    /// See [`DEFAULT_GUARD_THREADS`].
    pub guard_threads: Option<usize>,
    /// See [`DEFAULT_GUARD_QUEUE_TIMEOUT`] (milliseconds).
    pub guard_queue_timeout_ms: Option<u64>,
    /// See [`DEFAULT_RELOAD_POLL`] (milliseconds; 0 = no watching, SIGHUP still reloads).
    pub reload_poll_ms: Option<u64>,
    /// See [`DEFAULT_RELOAD_DEBOUNCE`] (milliseconds).
    pub reload_debounce_ms: Option<u64>,
    /// Append every guard decision as a JSON line to this file (besides the `tracing` log).
    pub decision_log: Option<PathBuf>,
    /// Scopes granted to each agent (by its MCP client name); guards see them as `scopes`.
    #[serde(default)]
    pub agent_scopes: BTreeMap<String, Vec<String>>,
    /// Where reload incidents (canary failures, rollbacks) are written. Relative to the config
    /// file. Default: `incidents/` next to the config file.
    pub incident_dir: Option<PathBuf>,
    /// The admin listener (`/metrics`, `/plugins`, `POST /reload`); off when absent. Its
    /// `token_file` is relative to the config file.
    pub admin: Option<helios_plugin_admin::AdminConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    wasm_guards: Vec<WasmGuardEntry>,
    #[serde(default)]
    upstreams: Vec<UpstreamEntry>,
    #[serde(default)]
    gateway: GatewaySection,
    /// chio's kernel section: not ours, accepted so a chio.yaml loads unchanged.
    #[serde(default)]
    kernel: Option<IgnoredAny>,
    /// chio's adapters: not ours (our upstreams are MCP servers).
    #[serde(default)]
    adapters: Option<IgnoredAny>,
}

/// A parsed, checked configuration; relative paths are resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file it came from, as shown in messages.
    pub file: PathBuf,
    pub wasm_guards: Vec<WasmGuardEntry>,
    pub upstreams: Vec<(String, UpstreamTarget)>,
    pub gateway: GatewaySection,
}

impl GatewayConfig {
    /// Reads a `chio.yaml` (or `.yml`), or the same document as `.toml`.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { file: file.clone(), source })?;
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        GatewayConfig::parse(&text, path, is_toml)
    }

    /// Parses `text` as if read from `path` (relative paths resolve against its directory).
    pub fn parse(text: &str, path: &Path, is_toml: bool) -> Result<GatewayConfig, ConfigError> {
        let file = path.display().to_string();
        let doc: Document = if is_toml {
            toml::from_str(text).map_err(|e| ConfigError::Parse { file: file.clone(), message: one_line(&e) })?
        } else {
            serde_norway::from_str(text)
                .map_err(|e| ConfigError::Parse { file: file.clone(), message: one_line(&e) })?
        };
        if doc.kernel.is_some() || doc.adapters.is_some() {
            tracing::info!(file, "chio's kernel/adapters sections are not used by the MCP gateway; ignored");
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let field = |entry: String, field: &'static str, message: String| ConfigError::Field {
            file: file.clone(),
            entry,
            field,
            message,
        };
        let mut guards = Vec::with_capacity(doc.wasm_guards.len());
        let mut names = std::collections::HashSet::new();
        for (i, mut g) in doc.wasm_guards.into_iter().enumerate() {
            let entry = format!("wasm_guards[{i}] ({})", g.name);
            if g.name.trim().is_empty() {
                return Err(field(entry, "name", "is empty".into()));
            }
            if !names.insert(g.name.clone()) {
                return Err(field(entry, "name", format!("{:?} is used by an earlier guard", g.name)));
            }
            if g.path.as_os_str().is_empty() {
                return Err(field(entry, "path", "is empty".into()));
            }
            if g.fuel_limit == 0 {
                return Err(field(entry, "fuel_limit", "must be at least 1".into()));
            }
            if g.max_memory_bytes < 65536 {
                return Err(field(
                    entry,
                    "max_memory_bytes",
                    format!("{} is under one 64 KiB page", g.max_memory_bytes),
                ));
            }
            g.path = dir.join(&g.path);
            if let Some(shadow) = &mut g.shadow {
                if shadow.path.as_os_str().is_empty() {
                    return Err(field(entry, "shadow.path", "is empty".into()));
                }
                if !(shadow.sample_rate > 0.0 && shadow.sample_rate <= 1.0) {
                    return Err(field(entry, "shadow.sample_rate", format!("{} is not in (0, 1]", shadow.sample_rate)));
                }
                shadow.path = dir.join(&shadow.path);
            }
            guards.push(g);
        }
        let mut upstreams = Vec::with_capacity(doc.upstreams.len());
        for (i, u) in doc.upstreams.into_iter().enumerate() {
            let entry = format!("upstreams[{i}] ({})", u.id);
            if u.id.is_empty() || !u.id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return Err(field(entry, "id", format!("{:?} is not an id (1 or more of A-Z a-z 0-9 - _ .)", u.id)));
            }
            if upstreams.iter().any(|(id, _)| id == &u.id) {
                return Err(field(entry, "id", format!("{:?} is used by an earlier upstream", u.id)));
            }
            if u.ca_file.is_some() && !u.url.as_deref().is_some_and(|url| url.starts_with("https://")) {
                return Err(field(entry, "ca_file", "belongs to an https:// url upstream".into()));
            }
            let target = match (u.command, u.url) {
                (Some(program), None) => UpstreamTarget::Command {
                    program,
                    args: u.args,
                    env: u.env,
                    cwd: u.cwd.map(|c| dir.join(c)).unwrap_or_else(|| dir.to_path_buf()),
                },
                (None, Some(url)) => {
                    if !url.starts_with("http://") && !url.starts_with("https://") {
                        return Err(field(entry, "url", format!("{url:?}: give an http:// or https:// URL")));
                    }
                    if !u.args.is_empty() || !u.env.is_empty() || u.cwd.is_some() {
                        return Err(field(entry, "url", "args, env and cwd belong to a command upstream".into()));
                    }
                    let ca_pem = match &u.ca_file {
                        None => None,
                        Some(f) => {
                            let path = dir.join(f);
                            let pem = std::fs::read(&path).map_err(|e| {
                                field(entry.clone(), "ca_file", format!("cannot read {}: {e}", path.display()))
                            })?;
                            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                                return Err(field(
                                    entry,
                                    "ca_file",
                                    format!("{} holds no PEM certificate", path.display()),
                                ));
                            }
                            Some(pem)
                        }
                    };
                    UpstreamTarget::Url { url, ca_pem }
                }
                (Some(_), Some(_)) => return Err(field(entry, "url", "give either command or url, not both".into())),
                (None, None) => return Err(field(entry, "command", "missing: give a command or a url".into())),
            };
            upstreams.push((u.id, target));
        }
        let mut gateway = doc.gateway;
        gateway.trusted_keys = gateway.trusted_keys.map(|p| dir.join(p));
        gateway.blocklist = gateway.blocklist.map(|p| dir.join(p));
        gateway.decision_log = gateway.decision_log.map(|p| dir.join(p));
        gateway.incident_dir = Some(dir.join(gateway.incident_dir.unwrap_or_else(|| PathBuf::from("incidents"))));
        if let Some(admin) = &mut gateway.admin {
            admin.token_file = admin.token_file.take().map(|p| dir.join(p));
        }
        if gateway.guard_threads == Some(0) {
            return Err(field("gateway".into(), "guard_threads", "must be at least 1".into()));
        }
        if gateway.max_request_bytes.is_some_and(|n| n < 1024) {
            return Err(field("gateway".into(), "max_request_bytes", "must be at least 1024".into()));
        }
        Ok(GatewayConfig { file: path.to_path_buf(), wasm_guards: guards, upstreams, gateway })
    }

    pub fn max_request_bytes(&self) -> usize {
        self.gateway.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES)
    }
    pub fn call_timeout(&self) -> Duration {
        self.gateway.call_timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_CALL_TIMEOUT)
    }
    pub fn connect_timeout(&self) -> Duration {
        self.gateway.connect_timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }
    pub fn guard_threads(&self) -> usize {
        self.gateway.guard_threads.unwrap_or(DEFAULT_GUARD_THREADS)
    }
    pub fn guard_queue_timeout(&self) -> Duration {
        self.gateway.guard_queue_timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_GUARD_QUEUE_TIMEOUT)
    }
    pub fn reload_poll(&self) -> Duration {
        self.gateway.reload_poll_ms.map(Duration::from_millis).unwrap_or(DEFAULT_RELOAD_POLL)
    }
    pub fn reload_debounce(&self) -> Duration {
        self.gateway.reload_debounce_ms.map(Duration::from_millis).unwrap_or(DEFAULT_RELOAD_DEBOUNCE)
    }
}

/// Parser errors sometimes span lines; messages here are one line.
fn one_line(e: &dyn fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"
kernel:
  signing_key: "${CHIO_SIGNING_KEY}"
adapters:
  - id: petstore
    protocol: openapi
    upstream: "http://petstore.example/api"
wasm_guards:
  - name: tool-denylist
    path: /etc/chio/guards/tool-denylist/tool_denylist_guard.wasm
    fuel_limit: 5000000
    priority: 100
"#;

    #[test]
    fn chios_page_example_parses_with_chios_defaults() {
        let c = GatewayConfig::parse(PAGE, Path::new("/etc/chio/chio.yaml"), false).unwrap();
        let g = &c.wasm_guards[0];
        assert_eq!((g.name.as_str(), g.fuel_limit, g.priority, g.advisory), ("tool-denylist", 5_000_000, 100, false));
        assert_eq!((g.max_memory_bytes, g.max_module_size), (16 << 20, 10 << 20));
        assert_eq!(g.path, Path::new("/etc/chio/guards/tool-denylist/tool_denylist_guard.wasm"));
    }

    #[test]
    fn every_documented_field_is_read_and_scalars_become_strings() {
        let text = r#"
wasm_guards:
  - name: pii
    path: guards/pii/pii.wasm
    fuel_limit: 7
    priority: -3
    advisory: true
    max_memory_bytes: 1048576
    max_module_size: 2048
    config: { threshold: 0.8, mode: strict, n: 3, on: true }
upstreams:
  - id: files
    command: python3
    args: [srv.py]
    env: { A: 1 }
  - id: web
    url: http://127.0.0.1:9/mcp
"#;
        let c = GatewayConfig::parse(text, Path::new("conf/chio.yaml"), false).unwrap();
        let g = &c.wasm_guards[0];
        assert_eq!(
            (g.fuel_limit, g.priority, g.advisory, g.max_memory_bytes, g.max_module_size),
            (7, -3, true, 1 << 20, 2048)
        );
        assert_eq!(g.config["threshold"], "0.8");
        assert_eq!(g.config["n"], "3");
        assert_eq!(g.config["on"], "true");
        assert_eq!(g.path, Path::new("conf/guards/pii/pii.wasm"));
        assert!(
            matches!(&c.upstreams[0].1, UpstreamTarget::Command { program, env, .. } if program == "python3" && env["A"] == "1")
        );
        assert_eq!(c.upstreams[1].1, UpstreamTarget::Url { url: "http://127.0.0.1:9/mcp".into(), ca_pem: None });
    }

    #[test]
    fn the_toml_form_reads_the_same_document() {
        let text = r#"
[[wasm_guards]]
name = "tool-denylist"
path = "g/tool_denylist.wasm"
fuel_limit = 5_000_000
priority = 100
advisory = true
config = { denylist = "rm,curl" }

[[upstreams]]
id = "files"
command = "python3"

[gateway]
call_timeout_ms = 500
"#;
        let c = GatewayConfig::parse(text, Path::new("gw.toml"), true).unwrap();
        assert_eq!(c.wasm_guards[0].config["denylist"], "rm,curl");
        assert!(c.wasm_guards[0].advisory);
        assert_eq!(c.call_timeout(), Duration::from_millis(500));
    }

    #[test]
    fn unknown_fields_are_errors_naming_the_file_and_the_field() {
        for (text, is_toml, field) in [
            ("wasm_guards:\n  - name: a\n    path: a.wasm\n    fuel_limt: 5\n", false, "fuel_limt"),
            ("wasm_guards:\n  - name: a\n    path: a.wasm\n    advisroy: true\n", false, "advisroy"),
            ("wasm_gaurds: []\n", false, "wasm_gaurds"),
            ("gateway:\n  call_timeout: 5\n", false, "call_timeout"),
            ("upstreams:\n  - id: a\n    comand: x\n", false, "comand"),
            ("[[wasm_guards]]\nname = \"a\"\npath = \"a.wasm\"\npriorty = 1\n", true, "priorty"),
        ] {
            let e = GatewayConfig::parse(text, Path::new("conf/chio.yaml"), is_toml).unwrap_err().to_string();
            assert!(e.contains("conf/chio.yaml") && e.contains(field), "{e}");
        }
    }

    #[test]
    fn bad_values_name_the_entry_and_field() {
        let e = GatewayConfig::parse("upstreams:\n  - id: a\n", Path::new("c.yaml"), false).unwrap_err().to_string();
        assert!(e.contains("upstreams[0] (a) field command"), "{e}");
        let e = GatewayConfig::parse("upstreams:\n  - id: a\n    url: ftp://x/mcp\n", Path::new("c.yaml"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("field url") && e.contains("https://"), "{e}");
        let e = GatewayConfig::parse(
            "upstreams:\n  - id: a\n    url: http://x/mcp\n    ca_file: ca.pem\n",
            Path::new("c.yaml"),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("upstreams[0] (a) field ca_file") && e.contains("https://"), "{e}");
        let e = GatewayConfig::parse(
            "wasm_guards:\n  - {name: a, path: a.wasm}\n  - {name: a, path: b.wasm}\n",
            Path::new("c.yaml"),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("wasm_guards[1] (a) field name"), "{e}");
    }
}
