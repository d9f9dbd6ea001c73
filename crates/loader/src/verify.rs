//! The steps between a config entry and a running plugin that every host shares, whatever its
//! config format: verify the plugin and check it is the one the entry names ([`verify_named`]),
//! overlay the entry's config on the signed manifest's ([`merged_config`]), and load it into the
//! runtime with one log line ([`load_verified`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use helios_plugin_artefact::{VerifiedPlugin, VerifyOptions};
use helios_plugin_host::{ContentId, LoadError, Plugin, PluginConfig, Runtime};

/// An entry's name that is not the plugin's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} differs from the plugin's own name {plugin:?} ({from})")]
pub struct NameMismatch {
    /// The name the config entry gives.
    pub entry: String,
    /// The name the plugin carries: its signed manifest's, or an unsigned module's file stem.
    pub plugin: String,
    /// Where that name comes from, as the message says it.
    pub from: &'static str,
}

/// A plugin that failed [`verify_named`].
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Size cap, SHA-256, blocklist, signature or a malformed file (see the artefact crate).
    #[error(transparent)]
    Artefact(Box<helios_plugin_artefact::Error>),
    #[error("field name: {0}")]
    Name(NameMismatch),
}

/// Verifies the plugin at `path` (an artefact, a guard manifest or its directory, or a `.wasm`
/// with its `.wasm.sig`) and checks that its signed name is `name`: an entry cannot run a plugin
/// under another plugin's name (and so in its KV namespace).
pub fn verify_named(path: &Path, name: &str, opts: &VerifyOptions) -> Result<VerifiedPlugin, VerifyError> {
    let plugin = helios_plugin_artefact::verify_path(path, opts).map_err(|e| VerifyError::Artefact(Box::new(e)))?;
    if plugin.name != name {
        let from = if plugin.signer.is_some() {
            "from its signed manifest"
        } else {
            "from its manifest, or for an unsigned module without one, its file name"
        };
        return Err(VerifyError::Name(NameMismatch { entry: name.to_string(), plugin: plugin.name, from }));
    }
    Ok(plugin)
}

/// The signed manifest's config with `overrides` (the entry's) replacing values key by key.
pub fn merged_config(plugin: &VerifiedPlugin, overrides: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut config = plugin.config.clone();
    config.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    config
}

/// Compiles a verified plugin with `config` (whose name, limits and policies the caller set from
/// its entry), plus what its signed manifest binds: the WIT world of a component and the content
/// bundles it may open (their ids were checked by the verification). Logs what was loaded: name,
/// version, digest and signer.
pub fn load_verified(
    runtime: &Runtime,
    plugin: &VerifiedPlugin,
    config: PluginConfig,
) -> Result<Arc<Plugin>, LoadError> {
    let mut config = config.bundles(plugin.bundles.iter().filter_map(|b| b.parse::<ContentId>().ok()));
    if let Some(world) = &plugin.wit_world {
        config = config.wit_world(world.clone());
    }
    let loaded = runtime.load(&plugin.wasm, config)?;
    tracing::info!(
        plugin = %loaded.name(),
        version = %plugin.version,
        sha256 = %plugin.sha256,
        signer = plugin.signer.as_ref().map(|s| s.label.as_str()).unwrap_or("UNSIGNED"),
        "plugin verified and loaded"
    );
    Ok(loaded)
}
