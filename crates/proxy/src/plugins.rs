//! Loads `[[plugins]]` from `proxy.toml` into a [`Chain`].
//!
//! Kept small on purpose: when the host crate parses `[[plugins]]` itself, this module becomes a
//! call to that parser. Fields: `name`, `path` (a `.wasm`, relative to the config file),
//! `config` (string table), and optional `priority`, `on_error` (`skip`|`abort`), `fuel`,
//! `advisory`, `mode` (`pooled`|`fresh`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use helios_plugin_host::{Chain, InstanceMode, OnError, PluginConfig, Runtime, RuntimeConfig};
use serde::Deserialize;

use crate::config::ProxyConfig;
use crate::error::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginEntry {
    name: String,
    path: PathBuf,
    #[serde(default)]
    config: BTreeMap<String, String>,
    priority: Option<i32>,
    on_error: Option<OnError>,
    fuel: Option<u64>,
    advisory: Option<bool>,
    mode: Option<InstanceMode>,
}

/// Loads every plugin of `cfg` (in order) with one shared runtime.
pub fn load_chain(cfg: &ProxyConfig, origin: &str) -> Result<Chain, ConfigError> {
    if cfg.plugins.is_empty() {
        return Ok(Chain::new(Vec::new()));
    }
    let err = |index: usize, name: &str, message: String| ConfigError::Plugin { file: origin.to_string(), index, name: name.to_string(), message };
    let runtime = Runtime::new(RuntimeConfig::default()).map_err(|e| err(0, "(runtime)", e.to_string()))?;
    let mut plugins = Vec::new();
    for (i, table) in cfg.plugins.iter().enumerate() {
        let shown = table.get("name").and_then(|v| v.as_str()).unwrap_or("?").to_string();
        let entry: PluginEntry = table.clone().try_into().map_err(|e: toml::de::Error| err(i, &shown, e.to_string()))?;
        let mut pc = PluginConfig::new(entry.name.clone()).config_map(entry.config);
        if let Some(p) = entry.priority {
            pc = pc.priority(p);
        }
        if let Some(o) = entry.on_error {
            pc = pc.on_error(o);
        }
        if entry.fuel.is_some() {
            pc = pc.fuel(entry.fuel);
        }
        if let Some(a) = entry.advisory {
            pc = pc.advisory(a);
        }
        if let Some(m) = entry.mode {
            pc = pc.mode(m);
        }
        let path = if entry.path.is_absolute() { entry.path.clone() } else { cfg.base_dir.join(&entry.path) };
        let plugin = runtime.load_file(&path, pc).map_err(|e| err(i, &entry.name, e.to_string()))?;
        tracing::info!(plugin = %entry.name, path = %path.display(), hooks = ?plugin.hooks(), "plugin loaded");
        plugins.push(plugin);
    }
    Ok(Chain::new(plugins))
}

/// The chain as the proxy's hooks.
pub fn hooks_from_config(cfg: &ProxyConfig, origin: &str) -> Result<Arc<dyn crate::StatementHooks>, ConfigError> {
    Ok(Arc::new(load_chain(cfg, origin)?))
}
