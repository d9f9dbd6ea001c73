//! Loading: from bytes (or a file) to a [`Plugin`]. The checks every backend shares live here —
//! the size cap, the memory cap against the runtime's, the operator's hook selection — and the
//! backend does the rest (for wasm: structure, imports, compile, exports; see `wasm`).

use std::{
    path::Path,
    sync::{Arc, atomic::AtomicU64},
};

use helios_plugin_schema::Hook;
use helios_plugin_schema::module_info::ModuleInfo;

use crate::{
    Plugin, PluginConfig, Runtime,
    backend::{Backend, PluginContext},
    component::{self, ComponentBackend},
    error::LoadError,
    pool::{Pool, RecyclePolicy},
    wasm::WasmBackend,
};

impl Runtime {
    /// Loads a plugin from module bytes: a core module or a component of the world
    /// `chio:guard/guard@0.2.0`, binary or WAT text. The header decides which backend runs it.
    ///
    /// Before anything is compiled: the size cap, the structure, and the import surface are checked
    /// (for a component, first the `wit_world` its manifest declares). Nothing of the module runs
    /// here except its start function, when the first instance is made.
    pub fn load(&self, wasm: &[u8], cfg: PluginConfig) -> Result<Arc<Plugin>, LoadError> {
        let size = wasm.len() as u64;
        if size > cfg.limits.max_module_bytes {
            return Err(LoadError::TooLarge { plugin: cfg.name, size, limit: cfg.limits.max_module_bytes });
        }
        self.check_memory_cap(&cfg)?;
        let text_converted;
        let wasm = if wasm.starts_with(b"\0asm") {
            wasm
        } else {
            text_converted = wat::parse_bytes(wasm)
                .map_err(|e| LoadError::Malformed {
                    plugin: cfg.name.clone(),
                    detail: format!("not a wasm binary, nor valid WAT: {e}"),
                })?
                .into_owned();
            &text_converted[..]
        };
        if component::is_component(wasm) {
            let backend = ComponentBackend::new(self, &cfg.name, wasm, cfg.wit_world.as_deref(), &cfg.limits)?;
            return self.assemble(Box::new(backend), None, cfg);
        }
        let (backend, info) = WasmBackend::new(self, &cfg.name, wasm, &cfg.limits)?;
        self.assemble(Box::new(backend), Some(info), cfg)
    }

    /// Loads a plugin from a `.wasm` (or `.wat`) file.
    pub fn load_file(&self, path: impl AsRef<Path>, cfg: PluginConfig) -> Result<Arc<Plugin>, LoadError> {
        let path = path.as_ref();
        let io = |source| LoadError::Io { plugin: cfg.name.clone(), path: path.display().to_string(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > cfg.limits.max_module_bytes {
            return Err(LoadError::TooLarge { plugin: cfg.name, size: meta.len(), limit: cfg.limits.max_module_bytes });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        self.load(&bytes, cfg)
    }

    /// Loads a plugin of another backend (a component, a script): the core serves the configured
    /// hooks, pools its instances and applies `cfg`'s policies exactly as for a wasm module.
    pub fn load_backend(&self, backend: Box<dyn Backend>, cfg: PluginConfig) -> Result<Arc<Plugin>, LoadError> {
        self.check_memory_cap(&cfg)?;
        self.assemble(backend, None, cfg)
    }

    fn check_memory_cap(&self, cfg: &PluginConfig) -> Result<(), LoadError> {
        let max = self.inner.cfg.max_plugin_memory_bytes;
        if cfg.limits.max_memory_bytes > max {
            return Err(LoadError::LimitOverRuntime {
                plugin: cfg.name.clone(),
                what: "max_memory_bytes",
                value: cfg.limits.max_memory_bytes,
                max,
            });
        }
        Ok(())
    }

    /// Narrows the hooks to the configured ones, binds the context, and builds the plugin.
    fn assemble(
        &self,
        backend: Box<dyn Backend>,
        info: Option<ModuleInfo>,
        cfg: PluginConfig,
    ) -> Result<Arc<Plugin>, LoadError> {
        let served = select_hooks(&cfg.name, backend.hooks(), cfg.hooks.as_deref())?;
        if served.is_empty() && !backend.is_guard() {
            return Err(LoadError::NothingServed { plugin: cfg.name });
        }
        let ctx = Arc::new(PluginContext {
            name: Arc::from(cfg.name.as_str()),
            config: cfg.config.clone(),
            limits: cfg.limits,
            kv: self.inner.cfg.kv.clone(),
            kv_caps: cfg.kv_caps,
            clock: self.inner.cfg.clock.clone(),
            log_sink: self.inner.cfg.log_sink.clone(),
            bundles: Arc::from(cfg.bundles.as_slice()),
            bundle_store: self.inner.cfg.bundle_store.clone(),
            observer: self.inner.cfg.observer.clone(),
        });
        let pool = Pool::new(RecyclePolicy {
            mode: cfg.mode,
            after_calls: cfg.recycle_after_calls,
            memory_bytes: cfg.recycle_memory_bytes,
            max_idle: cfg.max_idle,
        });
        let plugin =
            Plugin { ctx, cfg, backend, served, info, pool, calls: AtomicU64::new(0), failures: AtomicU64::new(0) };
        tracing::debug!(plugin = %plugin.ctx.name, sha256 = plugin.info.as_ref().map(|i| i.sha256.as_str()), hooks = ?plugin.served, guard = plugin.is_guard(), "plugin loaded");
        Ok(Arc::new(plugin))
    }
}

/// The hooks a plugin serves: every exported one, or the configured subset (each of which must be
/// exported).
fn select_hooks(plugin: &str, exported: &[Hook], wanted: Option<&[Hook]>) -> Result<Vec<Hook>, LoadError> {
    let Some(wanted) = wanted else { return Ok(exported.to_vec()) };
    if let Some(missing) = wanted.iter().find(|h| !exported.contains(h)) {
        return Err(LoadError::Export {
            plugin: plugin.into(),
            export: missing.export_name().into(),
            problem: "is configured to be served but the module does not export it".into(),
        });
    }
    Ok(exported.iter().copied().filter(|h| wanted.contains(h)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_subset_is_served_in_catalogue_order_and_must_be_exported() {
        let exported = [Hook::PreQuery, Hook::Route, Hook::PostQuery];
        assert_eq!(select_hooks("p", &exported, None).unwrap(), exported);
        assert_eq!(
            select_hooks("p", &exported, Some(&[Hook::PostQuery, Hook::PreQuery])).unwrap(),
            [Hook::PreQuery, Hook::PostQuery]
        );
        let e = select_hooks("p", &[Hook::PreQuery], Some(&[Hook::Route])).unwrap_err().to_string();
        assert!(e.contains("plugin \"p\"") && e.contains("route") && e.contains("does not export"), "{e}");
    }
}
