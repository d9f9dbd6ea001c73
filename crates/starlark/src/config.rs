//! yorishiro's plugin configuration: `plugins: [{path, name, on_error, max_steps, vars, redact_keys}]`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The error a config that still carries the removed per-plugin `hooks`/`protocol` fields gets,
/// word for word as yorishiro prints it.
pub const MIGRATION_MESSAGE: &str =
    "field hooks/protocol removed in RFC-001; use register_hook() in your script. See docs/rfc/plugin-migration.md";

/// The per-call step budget when `max_steps` is absent or zero.
pub const DEFAULT_MAX_STEPS: u64 = 1_000_000;

/// What a hook chain does when this plugin's hook fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Log, count, continue with the next hook (fail-open; the default).
    #[default]
    Skip,
    /// Stop the chain; the host refuses the message.
    Abort,
}

/// One entry of the `plugins` array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// Path of the `.star` script (or, for a mixed chain, a `.wasm` module).
    pub path: PathBuf,
    /// Stable identifier; defaults to the file's basename without its extension.
    #[serde(default)]
    pub name: Option<String>,
    /// `skip` (default) or `abort`.
    #[serde(default)]
    pub on_error: OnError,
    /// Per-call step budget; 0 means [`DEFAULT_MAX_STEPS`].
    #[serde(default)]
    pub max_steps: u64,
    /// Primitive values the script sees as the frozen `config` dict.
    #[serde(default)]
    pub vars: Map<String, Value>,
    /// `vars` keys that `plugin_introspect` shows as `"<redacted>"`.
    #[serde(default)]
    pub redact_keys: Vec<String>,
    /// A `.wasm` module loads without a signature (development only; the HTTP host refuses it
    /// unless it listens on loopback). Not part of yorishiro's shape; scripts are not signed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsigned: bool,
}

impl PluginEntry {
    /// A plain entry for `path` with every default.
    pub fn new(path: impl Into<PathBuf>) -> PluginEntry {
        PluginEntry {
            path: path.into(),
            name: None,
            on_error: OnError::Skip,
            max_steps: 0,
            vars: Map::new(),
            redact_keys: Vec::new(),
            unsigned: false,
        }
    }

    /// `name`, or the basename of `path` without `.star`/`.wasm`.
    pub fn effective_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let file = self.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        file.strip_suffix(".star").or_else(|| file.strip_suffix(".wasm")).unwrap_or(&file).to_string()
    }

    /// `max_steps`, with 0 meaning the default.
    pub fn effective_max_steps(&self) -> u64 {
        if self.max_steps == 0 { DEFAULT_MAX_STEPS } else { self.max_steps }
    }

    /// Whether this entry names a WebAssembly module rather than a script.
    pub fn is_wasm(&self) -> bool {
        self.path.extension().is_some_and(|e| e == "wasm")
    }

    /// `vars` with every key listed in `redact_keys` replaced by `"<redacted>"`.
    pub fn redacted_vars(&self) -> Map<String, Value> {
        self.vars
            .iter()
            .map(|(k, v)| {
                let shown = if self.redact_keys.iter().any(|r| r == k) { Value::from("<redacted>") } else { v.clone() };
                (k.clone(), shown)
            })
            .collect()
    }

    /// Resolves a relative `path` against `base` (the config file's directory).
    pub fn resolve(mut self, base: &Path) -> PluginEntry {
        if self.path.is_relative() {
            self.path = base.join(&self.path);
        }
        self
    }
}

/// Why a `plugins` array was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The legacy per-plugin `hooks`/`protocol` fields.
    #[error("plugins[{index}] ({path}): {MIGRATION_MESSAGE}")]
    Legacy { index: usize, path: String },
    /// Any other shape error.
    #[error("plugins[{index}]: {message}")]
    Invalid { index: usize, message: String },
    /// `plugins` is not an array.
    #[error("`plugins` must be an array of {{path, name, on_error, max_steps, vars, redact_keys}} objects")]
    NotAnArray,
    /// Two entries resolve to the same name.
    #[error("plugins[{index}]: duplicate plugin name \"{name}\" (set `name` to tell them apart)")]
    DuplicateName { index: usize, name: String },
}

/// Parses the value of a `plugins` key. Legacy `hooks`/`protocol` fields are refused with
/// [`MIGRATION_MESSAGE`] before any other check, so an old config gets the migration hint rather
/// than an "unknown field" error.
pub fn parse_plugins(value: &Value) -> Result<Vec<PluginEntry>, ConfigError> {
    let items = value.as_array().ok_or(ConfigError::NotAnArray)?;
    let mut out: Vec<PluginEntry> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if let Some(obj) = item.as_object()
            && (obj.contains_key("hooks") || obj.contains_key("protocol"))
        {
            let path = obj.get("path").and_then(Value::as_str).unwrap_or("?").to_string();
            return Err(ConfigError::Legacy { index, path });
        }
        let entry: PluginEntry =
            serde_json::from_value(item.clone()).map_err(|e| ConfigError::Invalid { index, message: e.to_string() })?;
        for (k, v) in &entry.vars {
            if v.is_object() || v.is_array() {
                return Err(ConfigError::Invalid {
                    index,
                    message: format!("vars.{k} must be a string, number, boolean or null (got a {})", kind(v)),
                });
            }
        }
        for r in &entry.redact_keys {
            if !entry.vars.contains_key(r) {
                return Err(ConfigError::Invalid {
                    index,
                    message: format!("redact_keys names \"{r}\", which is not in vars"),
                });
            }
        }
        let name = entry.effective_name();
        if name.is_empty() {
            return Err(ConfigError::Invalid { index, message: "plugin name is empty".into() });
        }
        if out.iter().any(|e| e.effective_name() == name) {
            return Err(ConfigError::DuplicateName { index, name });
        }
        out.push(entry);
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
        _ => "scalar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_fields_get_the_migration_message() {
        for legacy in [
            json!([{"path": "a.star", "hooks": ["on_receive_from_client"]}]),
            json!([{"path": "a.star", "protocol": "http"}]),
        ] {
            let err = parse_plugins(&legacy).unwrap_err().to_string();
            assert!(err.contains(MIGRATION_MESSAGE), "{err}");
            assert!(err.contains("a.star"), "{err}");
        }
    }

    #[test]
    fn defaults_follow_the_page() {
        let p = parse_plugins(&json!([{"path": "plugins/add_auth_header.star"}])).unwrap();
        assert_eq!(p[0].effective_name(), "add_auth_header");
        assert_eq!(p[0].on_error, OnError::Skip);
        assert_eq!(p[0].effective_max_steps(), 1_000_000);
        let p = parse_plugins(&json!([{"path": "x.star", "name": "n", "on_error": "abort", "max_steps": 5}])).unwrap();
        assert_eq!(
            (p[0].effective_name().as_str(), p[0].on_error, p[0].effective_max_steps()),
            ("n", OnError::Abort, 5)
        );
    }

    #[test]
    fn shape_errors_name_the_entry_and_field() {
        let err =
            parse_plugins(&json!([{"path": "a.star"}, {"path": "b.star", "on_eror": "skip"}])).unwrap_err().to_string();
        assert!(err.contains("plugins[1]") && err.contains("on_eror"), "{err}");
        let err = parse_plugins(&json!([{"path": "a.star", "vars": {"x": {"y": 1}}}])).unwrap_err().to_string();
        assert!(err.contains("vars.x"), "{err}");
        let err = parse_plugins(&json!([{"path": "a.star"}, {"path": "dir/a.star"}])).unwrap_err().to_string();
        assert!(err.contains("duplicate plugin name \"a\""), "{err}");
        let err = parse_plugins(&json!([{"path": "a.star", "redact_keys": ["token"]}])).unwrap_err().to_string();
        assert!(err.contains("token"), "{err}");
    }

    #[test]
    fn redaction_hides_only_listed_keys() {
        let p = parse_plugins(
            &json!([{"path": "a.star", "vars": {"token": "s3cret", "user": "u"}, "redact_keys": ["token"]}]),
        )
        .unwrap();
        let shown = p[0].redacted_vars();
        assert_eq!(shown["token"], "<redacted>");
        assert_eq!(shown["user"], "u");
    }
}
