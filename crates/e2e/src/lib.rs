//! End-to-end tests of the first-party plugins: each plugin's wasm build (the file
//! `cargo xtask build-examples` writes) runs through helios-plugin-host's `Runtime` and `Chain`.
//!
//! The tests live in `tests/all`; this library holds what they share: finding the built modules
//! (a missing module is an error that says how to build it, never a skipped test) and a host with a
//! controlled clock and a log sink.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use helios_plugin_host::{LoadError, ManualClock, MemoryLogSink, Plugin, PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{HookContext, QueryContext};

/// The first-party plugins, by package name.
pub const PLUGINS: [&str; 8] = helios_plugin_test_support::FIRST_PARTY_PLUGINS;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    helios_plugin_test_support::target_dir()
}

/// Where cargo writes a plugin's guest build.
pub fn wasm_path(package: &str) -> PathBuf {
    helios_plugin_test_support::guest_path(package)
}

/// A plugin's built module, or an error saying how to build it.
pub fn wasm(package: &str) -> Result<Vec<u8>, String> {
    let path = wasm_path(package);
    std::fs::read(&path).map_err(|e| {
        format!(
            "{}: cannot read the wasm build of plugin {package} ({e}); run `cargo xtask build-examples` first",
            path.display()
        )
    })
}

/// A host with a manual clock and a memory log sink.
#[derive(Debug)]
pub struct Host {
    pub runtime: Runtime,
    pub clock: Arc<ManualClock>,
    pub logs: Arc<MemoryLogSink>,
}

impl Host {
    /// A runtime whose clock starts at `now` (unix seconds). Compiled modules are cached on disk
    /// under the target directory, so each plugin compiles once per build, not once per test.
    pub fn new(now: i64) -> Host {
        let clock = ManualClock::new(now);
        let logs = MemoryLogSink::new();
        let cache = target_dir().join("e2e-module-cache");
        let runtime =
            Runtime::new(RuntimeConfig::default().clock(clock.clone()).log_sink(logs.clone()).module_cache_dir(cache))
                .unwrap_or_else(|e| panic!("cannot build the runtime: {e}"));
        Host { runtime, clock, logs }
    }

    /// Loads a plugin's wasm build with `config`; panics with the build instructions when the module
    /// is missing.
    pub fn load(&self, package: &str, config: &[(&str, &str)]) -> Arc<Plugin> {
        let cfg = config.iter().fold(PluginConfig::new(package), |c, (k, v)| c.config(*k, *v));
        self.try_load(package, cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Loads a plugin's wasm build with a prepared config.
    pub fn try_load(&self, package: &str, cfg: PluginConfig) -> Result<Arc<Plugin>, String> {
        let bytes = wasm(package)?;
        self.runtime.load(&bytes, cfg).map_err(|e: LoadError| format!("plugin {package}: {e}"))
    }

    /// Log messages of one plugin, oldest first.
    pub fn messages(&self, plugin: &str) -> Vec<String> {
        self.logs.lines().into_iter().filter(|(p, _, _)| p == plugin).map(|(_, _, m)| m).collect()
    }
}

/// A statement from `identity` with attributes.
pub fn query(request_id: &str, sql: &str, identity: Option<&str>, attrs: &[(&str, &str)]) -> QueryContext {
    QueryContext {
        query: sql.to_owned(),
        hook_context: HookContext {
            request_id: request_id.to_owned(),
            identity: identity.map(str::to_owned),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        },
        ..Default::default()
    }
}
