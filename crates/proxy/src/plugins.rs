//! Loads `[[plugins]]` from `proxy.toml` into a [`Chain`] with the loader's parser
//! ([`helios_plugin_loader::PluginsConfig`]): every plugin is verified (digest, blocklist,
//! signature, name) before it is compiled. The proxy's config reader keeps those tables raw.

use std::path::Path;
use std::sync::Arc;

use helios_plugin_host::{Chain, Runtime, RuntimeConfig};
use helios_plugin_loader::{LoadedEntry, PluginsConfig};

use crate::config::ProxyConfig;
use crate::error::ConfigError;

/// Verifies and loads every plugin of `cfg` (read from `origin`) with one default runtime, using the
/// module cache `cfg.module_cache` names (on by default).
pub fn load_chain(cfg: &ProxyConfig, origin: &str) -> Result<Chain, ConfigError> {
    load_chain_observed(cfg, origin, None)
}

/// [`load_chain`] with a call observer on the runtime (the admin listener's metrics).
pub fn load_chain_observed(
    cfg: &ProxyConfig,
    origin: &str,
    observer: Option<Arc<dyn helios_plugin_host::PluginObserver>>,
) -> Result<Chain, ConfigError> {
    Ok(Chain::new(load_entries_observed(cfg, origin, observer)?.into_iter().map(|e| e.plugin).collect()))
}

/// Every `[[plugins]]` entry verified and loaded, with its shadow candidate if it names one, in
/// file order.
pub fn load_entries_observed(
    cfg: &ProxyConfig,
    origin: &str,
    observer: Option<Arc<dyn helios_plugin_host::PluginObserver>>,
) -> Result<Vec<LoadedEntry>, ConfigError> {
    if cfg.plugins.is_empty() {
        return Ok(Vec::new());
    }
    let store = helios_plugin_state::Store::open(&cfg.state)
        .map_err(|e| ConfigError::Plugins { message: format!("{origin}: [state]: {e}") })?;
    tracing::info!(backend = %store.describe(), "plugin state store");
    let mut rc = RuntimeConfig::default().kv(store.backend());
    if let Some(dir) = cfg.module_cache_dir() {
        tracing::info!(dir = %dir.display(), "compiled plugin modules are cached (module_cache = \"off\" to disable)");
        rc = rc.module_cache_dir(dir);
    }
    if let Some(o) = observer {
        rc = rc.observer(o);
    }
    let runtime = Runtime::new(rc)
        .map_err(|e| ConfigError::Plugins { message: format!("{origin}: cannot start the plugin runtime: {e}") })?;
    let host = |e: helios_plugin_loader::ConfigError| ConfigError::Plugins { message: e.to_string() };
    let plugins = PluginsConfig::from_tables(&cfg.plugins, Path::new(origin)).map_err(host)?;
    let entries = plugins.build_entries(&runtime).map_err(host)?;
    for e in &entries {
        let shadow = e.shadow.as_ref().and_then(|s| s.module_info()).map(|m| m.sha256.as_str());
        tracing::info!(plugin = e.plugin.name(), hooks = ?e.plugin.hooks(), priority = e.plugin.priority(), shadow, "plugin in chain");
    }
    Ok(entries)
}

/// Like [`load_chain`] with a caller's runtime (its clock, KV and log sink).
pub fn load_chain_with(cfg: &ProxyConfig, origin: &str, runtime: &Runtime) -> Result<Chain, ConfigError> {
    let host = |e: helios_plugin_loader::ConfigError| ConfigError::Plugins { message: e.to_string() };
    let plugins = PluginsConfig::from_tables(&cfg.plugins, Path::new(origin)).map_err(host)?;
    let chain = plugins.build_chain(runtime).map_err(host)?;
    for p in chain.plugins() {
        tracing::info!(plugin = p.name(), hooks = ?p.hooks(), priority = p.priority(), "plugin in chain");
    }
    Ok(chain)
}

/// The chain as the proxy's hooks.
pub fn hooks_from_config(cfg: &ProxyConfig, origin: &str) -> Result<Arc<dyn crate::StatementHooks>, ConfigError> {
    Ok(Arc::new(load_chain(cfg, origin)?))
}
