//! WASM plugins in the HTTP chain: a module built with the SDK's `#[hook(HttpRequest)]` (and the
//! other `http_*` / `connection_*` hooks of the schema catalogue), verified like every plugin of
//! the SQL proxy before any of it is compiled, then run through the host's `Plugin` (pooled
//! instances, fuel, deadline, memory limits) beside Starlark scripts.
//!
//! Verification ([`helios_plugin_artefact::verify_path`]): size cap, SHA-256, the config's
//! `blocklist`, and the signature (`<module>.wasm.sig` sidecar, or an artefact) against the
//! config's `verify_with` trust root. An entry may say `"unsigned": true` to load a module
//! without a signature — for development only: the config is refused unless the proxy listens on
//! a loopback address, and every such load logs a warning.

use std::sync::Arc;

use helios_plugin_artefact::{Blocklist, TrustRoot, VerifyOptions};
use helios_plugin_host::{PluginConfig, Runtime};
use helios_plugin_starlark::PluginEntry;

use crate::chain::Member;
use crate::config::Config;

/// The verification settings of a config, loaded once for every `.wasm` entry.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    root: Option<TrustRoot>,
    blocklist: Option<Blocklist>,
}

impl Trust {
    /// Loads the config's `verify_with` directory and `blocklist` file (each failure names it).
    pub fn load(config: &Config) -> Result<Trust, String> {
        let root = match &config.verify_with {
            None => None,
            Some(dir) => Some(TrustRoot::load(dir).map_err(|e| format!("config verify_with: {e}"))?),
        };
        let blocklist = match &config.blocklist {
            None => None,
            Some(f) => Some(Blocklist::load(f).map_err(|e| format!("config blocklist: {e}"))?),
        };
        Ok(Trust { root, blocklist })
    }

    fn options(&self, entry: &PluginEntry) -> VerifyOptions {
        let mut opts = VerifyOptions::default().allow_unsigned(entry.unsigned);
        if let Some(r) = &self.root {
            opts = opts.trust_root(r.clone());
        }
        if let Some(b) = &self.blocklist {
            opts = opts.blocklist(b.clone());
        }
        opts
    }
}

/// Verifies `entry.path` and loads it into `runtime` with `vars` as the plugin's config
/// (`get_config`) and the entry's `on_error`. The plugin's name is the entry's `name` — which,
/// for a signed module, must equal the name its signature binds — or else the signed name.
pub fn load(runtime: &Runtime, trust: &Trust, entry: &PluginEntry) -> Result<Member, String> {
    let shown = entry.effective_name();
    let verified = helios_plugin_artefact::verify_path(&entry.path, &trust.options(entry))
        .map_err(|e| format!("plugin \"{shown}\": {e}"))?;
    let name = match (&entry.name, &verified.signer) {
        (Some(n), Some(_)) if *n != verified.name => {
            return Err(format!(
                "plugin \"{n}\": `name` must equal the name its signature binds, \"{}\" (or leave `name` out)",
                verified.name
            ));
        }
        (Some(n), _) => n.clone(),
        (None, Some(_)) => verified.name.clone(),
        (None, None) => shown.clone(),
    };
    let mut config = verified.config.clone();
    for (k, v) in &entry.vars {
        config.insert(k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
    }
    let on_error = match entry.on_error {
        helios_plugin_starlark::OnError::Skip => helios_plugin_host::OnError::Skip,
        helios_plugin_starlark::OnError::Abort => helios_plugin_host::OnError::Abort,
    };
    let cfg = PluginConfig::new(name.clone()).config_map(config).on_error(on_error);
    // Compiles and logs name, version, digest and signer (the loader's step every host shares).
    let plugin = helios_plugin_loader::load_verified(runtime, &verified, cfg).map_err(|e| e.to_string())?;
    let mut entry = entry.clone();
    entry.name = Some(name);
    Member::loaded(Arc::clone(&plugin), entry, "wasm")
}
