//! A loaded [`Plugin`]: its compiled module, its pre-linked instance template, its pool of warm
//! instances, and the machinery of one call shared by both calling conventions.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use helios_plugin_artefact::ModuleInfo;
use helios_plugin_schema::{
    GuardRequest, GuardVerdict, Hook, HookSpec, Limits, abi,
    guard::DenyReason,
    limits::{
        self, DEFAULT_MAX_IDLE_INSTANCES, DEFAULT_PRIORITY, DEFAULT_RECYCLE_AFTER_CALLS, DEFAULT_RECYCLE_MEMORY_BYTES,
    },
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmtime::{Extern, Instance, InstancePre, Memory, Module, ModuleExport, Store, Trap, TypedFunc, ValType};

use crate::{
    Runtime,
    error::{FailureKind, ImportFault, LimitFault, LoadError, PluginError},
    imports::checked_range,
    state::{HostState, PluginShared},
};

/// How instances are managed for a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceMode {
    /// Warm instances are reused across calls (one call at a time each) and recycled by policy.
    #[default]
    Pooled,
    /// A fresh instance per call: nothing survives between calls but KV.
    Fresh,
}

/// What a hook chain does when this plugin fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Log the failure and go on with the next plugin (fail-open). Default for hooks.
    #[default]
    Skip,
    /// Stop the chain and block the statement, naming the cause (fail-closed).
    Abort,
}

/// Everything the host binds to a plugin at load. Builder-style; every default is named.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub(crate) name: String,
    pub(crate) limits: Limits,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) mode: InstanceMode,
    pub(crate) advisory: bool,
    pub(crate) on_error: OnError,
    pub(crate) priority: i32,
    pub(crate) recycle_after_calls: u64,
    pub(crate) recycle_memory_bytes: u64,
    pub(crate) max_idle: usize,
    pub(crate) hooks: Option<Vec<Hook>>,
}

impl PluginConfig {
    /// A plugin named `name`; the name is also its KV namespace.
    pub fn new(name: impl Into<String>) -> Self {
        PluginConfig {
            name: name.into(),
            limits: Limits::default(),
            config: BTreeMap::new(),
            mode: InstanceMode::Pooled,
            advisory: false,
            on_error: OnError::Skip,
            priority: DEFAULT_PRIORITY,
            recycle_after_calls: DEFAULT_RECYCLE_AFTER_CALLS,
            recycle_memory_bytes: DEFAULT_RECYCLE_MEMORY_BYTES,
            max_idle: DEFAULT_MAX_IDLE_INSTANCES,
            hooks: None,
        }
    }
    /// A config value the guest reads with `get_config`.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }
    /// Replaces the whole config map.
    pub fn config_map(mut self, map: BTreeMap<String, String>) -> Self {
        self.config = map;
        self
    }
    /// All limits at once. Default: `Limits::default()`.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Fuel per call; `None` = unmetered. Default: [`limits::DEFAULT_FUEL`].
    pub fn fuel(mut self, fuel: Option<u64>) -> Self {
        self.limits.fuel = fuel;
        self
    }
    /// Default: [`limits::DEFAULT_DEADLINE`].
    pub fn deadline(mut self, d: Duration) -> Self {
        self.limits.deadline = d;
        self
    }
    /// Default: [`limits::DEFAULT_MAX_MEMORY_BYTES`].
    pub fn max_memory_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_memory_bytes = bytes;
        self
    }
    /// Default: [`limits::DEFAULT_MAX_TABLE_ELEMENTS`].
    pub fn max_table_elements(mut self, n: u64) -> Self {
        self.limits.max_table_elements = n;
        self
    }
    /// Default: [`limits::DEFAULT_MAX_MODULE_BYTES`].
    pub fn max_module_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_module_bytes = bytes;
        self
    }
    /// Default: [`InstanceMode::Pooled`].
    pub fn mode(mut self, mode: InstanceMode) -> Self {
        self.mode = mode;
        self
    }
    /// A failing advisory guard logs and allows instead of denying. Default: off.
    pub fn advisory(mut self, on: bool) -> Self {
        self.advisory = on;
        self
    }
    /// Default: [`OnError::Skip`].
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }
    /// Lower runs first. Default: [`DEFAULT_PRIORITY`].
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
    /// Default: [`DEFAULT_RECYCLE_AFTER_CALLS`].
    pub fn recycle_after_calls(mut self, n: u64) -> Self {
        self.recycle_after_calls = n.max(1);
        self
    }
    /// Default: [`DEFAULT_RECYCLE_MEMORY_BYTES`].
    pub fn recycle_memory_bytes(mut self, bytes: u64) -> Self {
        self.recycle_memory_bytes = bytes;
        self
    }
    /// Warm instances kept idle. Default: [`DEFAULT_MAX_IDLE_INSTANCES`].
    pub fn max_idle_instances(mut self, n: usize) -> Self {
        self.max_idle = n;
        self
    }
    /// Serve only these hooks (each must be exported); exported hooks not listed are never called.
    /// Default: every hook the module exports.
    pub fn hooks(mut self, hooks: impl IntoIterator<Item = Hook>) -> Self {
        self.hooks = Some(hooks.into_iter().collect());
        self
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Export handles resolved once at load.
struct ExportIndex {
    memory: ModuleExport,
    alloc: Option<ModuleExport>,
    dealloc: Option<ModuleExport>,
    chio_alloc: Option<ModuleExport>,
    chio_free: Option<ModuleExport>,
    evaluate: Option<ModuleExport>,
    deny_reason: Option<ModuleExport>,
    hooks: Vec<Option<ModuleExport>>,
}

/// Typed functions of one live instance.
struct Funcs {
    alloc: Option<TypedFunc<i32, i32>>,
    dealloc: Option<TypedFunc<(i32, i32), ()>>,
    chio_alloc: Option<TypedFunc<i32, i32>>,
    chio_free: Option<TypedFunc<(i32, i32), ()>>,
    evaluate: Option<TypedFunc<(i32, i32), i32>>,
    deny_reason: Option<TypedFunc<(i32, i32), i32>>,
    hooks: Vec<Option<TypedFunc<(i32, i32), i64>>>,
}

/// One instance with its store. Serves one call at a time.
struct Live {
    store: Store<HostState>,
    memory: Memory,
    funcs: Funcs,
    calls: u64,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("calls", &self.calls).finish_non_exhaustive()
    }
}

/// Counters of one plugin since load.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PluginStats {
    pub calls: u64,
    pub failures: u64,
    pub instances_created: u64,
    pub instances_recycled: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    failures: AtomicU64,
    created: AtomicU64,
    recycled: AtomicU64,
}

/// A loaded plugin. `Send + Sync`: share it with `Arc` and call it from many threads.
pub struct Plugin {
    runtime: Runtime,
    shared: Arc<PluginShared>,
    cfg: PluginConfig,
    pre: InstancePre<HostState>,
    exports: ExportIndex,
    served: Vec<Hook>,
    info: ModuleInfo,
    idle: Mutex<Vec<Live>>,
    counters: Counters,
}

enum CallError {
    Wasm(wasmtime::Error),
    Failure(FailureKind),
}

impl From<wasmtime::Error> for CallError {
    fn from(e: wasmtime::Error) -> Self {
        CallError::Wasm(e)
    }
}

fn bad_result(export: &str, detail: impl Into<String>) -> CallError {
    CallError::Failure(FailureKind::BadResult { export: export.to_owned(), detail: detail.into() })
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.shared.name)
            .field("hooks", &self.served)
            .field("guard", &self.is_guard())
            .field("sha256", &self.info.sha256)
            .field("mode", &self.cfg.mode)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Loads a plugin from module bytes (binary wasm, or WAT text).
    ///
    /// Before anything is compiled: the size cap, the structure, and the import surface are checked.
    /// Nothing of the module runs here except its start function, when the first instance is made.
    pub fn load(&self, wasm: &[u8], cfg: PluginConfig) -> Result<Arc<Plugin>, LoadError> {
        let name = cfg.name.clone();
        let size = wasm.len() as u64;
        if size > cfg.limits.max_module_bytes {
            return Err(LoadError::TooLarge { plugin: name, size, limit: cfg.limits.max_module_bytes });
        }
        let text_converted;
        let wasm = if wasm.starts_with(b"\0asm") {
            wasm
        } else {
            text_converted = wat::parse_bytes(wasm)
                .map_err(|e| LoadError::Malformed {
                    plugin: name.clone(),
                    detail: format!("not a wasm binary, nor valid WAT: {e}"),
                })?
                .into_owned();
            &text_converted[..]
        };
        let max_mem = self.inner.cfg.max_plugin_memory_bytes;
        if cfg.limits.max_memory_bytes > max_mem {
            return Err(LoadError::LimitOverRuntime {
                plugin: name,
                what: "max_memory_bytes",
                value: cfg.limits.max_memory_bytes,
                max: max_mem,
            });
        }
        let info = ModuleInfo::parse(wasm)
            .map_err(|e| LoadError::Malformed { plugin: name.clone(), detail: e.to_string() })?;
        if let Some(imp) = info.imports.iter().find(|i| i.kind != "func" || abi::import(&i.module, &i.name).is_none()) {
            let allowed =
                abi::IMPORTS.iter().map(|s| format!("{}.{}", s.module, s.name)).collect::<Vec<_>>().join(", ");
            return Err(LoadError::ForbiddenImport {
                plugin: name,
                module: imp.module.clone(),
                field: imp.name.clone(),
                allowed,
            });
        }
        let module = self.compile(&name, wasm, &info.sha256)?;
        check_import_types(&name, &module)?;
        let mut exports = index_exports(&name, &module)?;
        let mut served: Vec<Hook> = Hook::ALL.iter().copied().filter(|h| exports.hooks[h.index()].is_some()).collect();
        if let Some(wanted) = &cfg.hooks {
            if let Some(missing) = wanted.iter().find(|h| !served.contains(h)) {
                return Err(LoadError::Export {
                    plugin: name,
                    export: missing.export_name().into(),
                    problem: "is configured to be served but the module does not export it".into(),
                });
            }
            served.retain(|h| wanted.contains(h));
            for h in Hook::ALL {
                if !served.contains(h) {
                    exports.hooks[h.index()] = None;
                }
            }
        }
        if served.is_empty() && exports.evaluate.is_none() {
            return Err(LoadError::NothingServed { plugin: name });
        }
        if !served.is_empty() && exports.alloc.is_none() {
            return Err(LoadError::Export {
                plugin: name,
                export: abi::ALLOC.into(),
                problem: "is missing: hook plugins must export it".into(),
            });
        }
        for hook in &info.declared_hooks {
            if !served.contains(hook) {
                return Err(LoadError::Export {
                    plugin: name,
                    export: hook.export_name().into(),
                    problem: "is declared in the helios.plugin section but not exported".into(),
                });
            }
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Compile { plugin: name.clone(), detail: format!("{e:#}") })?;
        let shared = Arc::new(PluginShared {
            name: Arc::from(name.as_str()),
            config: cfg.config.clone(),
            limits: cfg.limits,
            kv: self.inner.cfg.kv.clone(),
            clock: self.inner.cfg.clock.clone(),
            log_sink: self.inner.cfg.log_sink.clone(),
        });
        let plugin = Plugin {
            runtime: self.clone(),
            shared,
            cfg,
            pre,
            exports,
            served,
            info,
            idle: Mutex::new(Vec::new()),
            counters: Counters::default(),
        };
        tracing::debug!(plugin = %plugin.shared.name, sha256 = %plugin.info.sha256, hooks = ?plugin.served, guard = plugin.is_guard(), "plugin loaded");
        Ok(Arc::new(plugin))
    }

    /// Loads a plugin from a `.wasm` (or `.wat`) file.
    pub fn load_file(&self, path: impl AsRef<Path>, cfg: PluginConfig) -> Result<Arc<Plugin>, LoadError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Io {
            plugin: cfg.name.clone(),
            path: path.display().to_string(),
            source,
        })?;
        if meta.len() > cfg.limits.max_module_bytes {
            return Err(LoadError::TooLarge { plugin: cfg.name, size: meta.len(), limit: cfg.limits.max_module_bytes });
        }
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            plugin: cfg.name.clone(),
            path: path.display().to_string(),
            source,
        })?;
        self.load(&bytes, cfg)
    }

    /// `sha256_hex` is the digest `ModuleInfo::parse` already took of these bytes (not hashed twice).
    fn compile(&self, name: &str, wasm: &[u8], sha256_hex: &str) -> Result<Module, LoadError> {
        let key: [u8; 32] = match hex::decode(sha256_hex).ok().and_then(|v| <[u8; 32]>::try_from(v).ok()) {
            Some(k) => k,
            None => Sha256::digest(wasm).into(),
        };
        if let Some(m) = self.inner.modules.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(m);
        }
        let cached = match &self.inner.disk_cache {
            Some(cache) => match cache.get(&self.inner.engine, name, &key) {
                crate::cache::Lookup::Hit(m) => Some(m),
                crate::cache::Lookup::Miss | crate::cache::Lookup::Rejected => None,
            },
            None => None,
        };
        let module = match cached {
            Some(m) => m,
            None => {
                let m = Module::new(&self.inner.engine, wasm)
                    .map_err(|e| LoadError::Compile { plugin: name.into(), detail: format!("{e:#}") })?;
                if let Some(cache) = &self.inner.disk_cache {
                    cache.put(name, &key, &m);
                }
                m
            }
        };
        if let Ok(mut m) = self.inner.modules.lock() {
            m.insert(key, module.clone());
        }
        Ok(module)
    }
}

fn sig_string(params: impl Iterator<Item = ValType>, results: impl Iterator<Item = ValType>) -> String {
    let p: Vec<_> = params.map(|t| t.to_string()).collect();
    let r: Vec<_> = results.map(|t| t.to_string()).collect();
    format!("({}) -> ({})", p.join(", "), r.join(", "))
}

fn abi_sig_string(params: &str, results: &str) -> String {
    let conv = |s: &str| s.chars().map(|c| if c == 'I' { "i32" } else { "i64" }).collect::<Vec<_>>().join(", ");
    format!("({}) -> ({})", conv(params), conv(results))
}

fn check_import_types(name: &str, module: &Module) -> Result<(), LoadError> {
    for imp in module.imports() {
        let Some(sig) = abi::import(imp.module(), imp.name()) else { continue };
        let expected = abi_sig_string(sig.params, sig.results);
        let found = match imp.ty() {
            wasmtime::ExternType::Func(f) => sig_string(f.params(), f.results()),
            other => format!("{other:?}"),
        };
        if expected != found {
            return Err(LoadError::ImportType {
                plugin: name.into(),
                module: imp.module().into(),
                field: imp.name().into(),
                expected,
                found,
            });
        }
    }
    Ok(())
}

fn index_exports(name: &str, module: &Module) -> Result<ExportIndex, LoadError> {
    let func = |export: &str, params: &str, results: &str| -> Result<Option<ModuleExport>, LoadError> {
        let Some(ty) = module.get_export(export) else { return Ok(None) };
        let expected = abi_sig_string(params, results);
        let found = match ty {
            wasmtime::ExternType::Func(f) => sig_string(f.params(), f.results()),
            _ => "not a function".to_string(),
        };
        if expected != found {
            return Err(LoadError::Export {
                plugin: name.into(),
                export: export.into(),
                problem: format!("has the wrong type: expected {expected}, found {found}"),
            });
        }
        Ok(module.get_export_index(export))
    };
    let memory = match module.get_export(abi::MEMORY) {
        Some(wasmtime::ExternType::Memory(_)) => module.get_export_index(abi::MEMORY),
        _ => None,
    }
    .ok_or_else(|| LoadError::Export {
        plugin: name.into(),
        export: abi::MEMORY.into(),
        problem: "is missing: plugins must export their linear memory".into(),
    })?;
    let mut hooks = Vec::with_capacity(Hook::ALL.len());
    for h in Hook::ALL {
        hooks.push(func(h.export_name(), "II", "L")?);
    }
    Ok(ExportIndex {
        memory,
        alloc: func(abi::ALLOC, "I", "I")?,
        dealloc: func(abi::DEALLOC, "II", "")?,
        chio_alloc: func(abi::CHIO_ALLOC, "I", "I")?,
        chio_free: func(abi::CHIO_FREE, "II", "")?,
        evaluate: func(abi::EVALUATE, "II", "I")?,
        deny_reason: func(abi::CHIO_DENY_REASON, "II", "I")?,
        hooks,
    })
}

fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    export: &Option<ModuleExport>,
) -> Result<Option<TypedFunc<P, R>>, wasmtime::Error> {
    let Some(export) = export else { return Ok(None) };
    match instance.get_module_export(&mut *store, export) {
        Some(Extern::Func(f)) => Ok(Some(f.typed::<P, R>(&*store)?)),
        _ => Ok(None),
    }
}

impl Plugin {
    /// The plugin's name (also its KV namespace).
    pub fn name(&self) -> &str {
        &self.shared.name
    }
    /// Hooks this plugin's module exports, in catalogue order.
    pub fn hooks(&self) -> &[Hook] {
        &self.served
    }
    /// Whether it serves `hook`.
    pub fn serves(&self, hook: Hook) -> bool {
        self.exports.hooks[hook.index()].is_some()
    }
    /// Whether it exports chio's `evaluate`.
    pub fn is_guard(&self) -> bool {
        self.exports.evaluate.is_some()
    }
    /// Static facts about the module (size, sha256, imports, exports, declared hooks).
    pub fn module_info(&self) -> &ModuleInfo {
        &self.info
    }
    pub fn priority(&self) -> i32 {
        self.cfg.priority
    }
    pub fn on_error(&self) -> OnError {
        self.cfg.on_error
    }
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }
    pub fn mode(&self) -> InstanceMode {
        self.cfg.mode
    }
    /// Counters since load.
    pub fn stats(&self) -> PluginStats {
        PluginStats {
            calls: self.counters.calls.load(Ordering::Relaxed),
            failures: self.counters.failures.load(Ordering::Relaxed),
            instances_created: self.counters.created.load(Ordering::Relaxed),
            instances_recycled: self.counters.recycled.load(Ordering::Relaxed),
        }
    }
    /// Warm instances waiting for a call.
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    fn err(&self, kind: FailureKind) -> PluginError {
        PluginError { plugin: self.shared.name.clone(), kind }
    }

    fn instantiate(&self) -> Result<Live, PluginError> {
        let mut store = Store::new(self.pre.module().engine(), HostState::new(self.shared.clone()));
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        // A start function runs during instantiation: give it the per-call budget too.
        self.arm(&mut store);
        let instance = match self.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => {
                let kind = classify(&e, &store, &self.shared.limits);
                let kind = match kind {
                    FailureKind::Trap { message } => FailureKind::Instantiate { detail: message },
                    other => other,
                };
                return Err(self.err(kind));
            }
        };
        let inst = |e: wasmtime::Error| self.err(FailureKind::Instantiate { detail: format!("{e:#}") });
        let memory = match instance.get_module_export(&mut store, &self.exports.memory) {
            Some(Extern::Memory(m)) => m,
            _ => return Err(self.err(FailureKind::Instantiate { detail: "memory export vanished".into() })),
        };
        store.data_mut().memory = Some(memory);
        let x = &self.exports;
        let mut hooks = Vec::with_capacity(x.hooks.len());
        for h in &x.hooks {
            hooks.push(typed(&instance, &mut store, h).map_err(inst)?);
        }
        let funcs = Funcs {
            alloc: typed(&instance, &mut store, &x.alloc).map_err(inst)?,
            dealloc: typed(&instance, &mut store, &x.dealloc).map_err(inst)?,
            chio_alloc: typed(&instance, &mut store, &x.chio_alloc).map_err(inst)?,
            chio_free: typed(&instance, &mut store, &x.chio_free).map_err(inst)?,
            evaluate: typed(&instance, &mut store, &x.evaluate).map_err(inst)?,
            deny_reason: typed(&instance, &mut store, &x.deny_reason).map_err(inst)?,
            hooks,
        };
        self.counters.created.fetch_add(1, Ordering::Relaxed);
        Ok(Live { store, memory, funcs, calls: 0 })
    }

    /// Sets the per-call budgets on a store.
    fn arm(&self, store: &mut Store<HostState>) {
        // Only a metering engine takes fuel: asking another one builds an error on every call.
        if self.runtime.inner.cfg.fuel {
            let fuel = self.shared.limits.fuel.unwrap_or(u64::MAX);
            let _ = store.set_fuel(fuel);
        }
        store.set_epoch_deadline(self.runtime.epoch_ticks(self.shared.limits.deadline));
        store.data_mut().call = Default::default();
    }

    fn checkout(&self) -> Result<Live, PluginError> {
        if self.cfg.mode == InstanceMode::Pooled
            && let Some(live) = self.idle.lock().ok().and_then(|mut v| v.pop())
        {
            return Ok(live);
        }
        self.instantiate()
    }

    fn checkin(&self, mut live: Live) {
        live.calls += 1;
        let recycle = self.cfg.mode == InstanceMode::Fresh
            || live.calls >= self.cfg.recycle_after_calls
            || live.memory.data_size(&live.store) as u64 > self.cfg.recycle_memory_bytes;
        if recycle {
            self.counters.recycled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.cfg.max_idle
        {
            idle.push(live);
        }
    }

    /// The machinery of one call: check out an instance, arm limits, run, map failures, recycle.
    fn run<R>(&self, what: &str, f: impl FnOnce(&mut Live) -> Result<R, CallError>) -> Result<R, PluginError> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let _span = tracing::debug_span!("plugin_call", plugin = %self.shared.name, export = what).entered();
        let mut live = match self.checkout() {
            Ok(l) => l,
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.arm(&mut live.store);
        let result = f(&mut live);
        let dropped = live.store.data().call.dropped_logs;
        if dropped > 0 {
            tracing::warn!(plugin = %self.shared.name, dropped, cap = limits::LOG_MAX_ENTRIES_PER_CALL, "guest log lines over the per-call cap were dropped");
        }
        match result {
            Ok(r) => {
                self.checkin(live);
                Ok(r)
            }
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                let kind = match e {
                    CallError::Failure(k) => {
                        // A guest that panicked while producing a bad result: the panic is the cause.
                        match live.store.data().call.panic.clone() {
                            Some(message) => FailureKind::GuestPanic { message },
                            None => k,
                        }
                    }
                    CallError::Wasm(e) => classify(&e, &live.store, &self.shared.limits),
                };
                // The instance that failed is never reused.
                drop(live);
                let err = self.err(kind);
                tracing::warn!(plugin = %self.shared.name, export = what, error = %err.kind, "plugin call failed");
                Err(err)
            }
        }
    }

    // ---- guard convention ---------------------------------------------------------------------

    /// Runs chio's `evaluate` and returns the verdict. Never fails: a trap, fuel or deadline
    /// exhaustion, a bad pointer or a return code other than 0/1 is a deny naming the cause and the
    /// guard (fail-closed) — or, for an advisory guard, a logged allow.
    pub fn evaluate(&self, request: &GuardRequest) -> GuardVerdict {
        match self.try_evaluate(request) {
            Ok(v) => v,
            Err(e) if self.cfg.advisory => {
                tracing::warn!(plugin = %self.shared.name, error = %e.kind, "advisory guard failed; allowing");
                GuardVerdict::Allow
            }
            Err(e) => GuardVerdict::deny(format!("guard \"{}\" failed closed: {}", self.shared.name, e.kind)),
        }
    }

    /// Like [`Plugin::evaluate`] but returns the failure instead of mapping it to a verdict.
    pub fn try_evaluate(&self, request: &GuardRequest) -> Result<GuardVerdict, PluginError> {
        let json = serde_json::to_vec(request)
            .map_err(|e| self.err(FailureKind::Trap { message: format!("cannot encode request: {e}") }))?;
        self.evaluate_json(&json)
    }

    /// `evaluate` over raw JSON request bytes.
    pub fn evaluate_json(&self, request: &[u8]) -> Result<GuardVerdict, PluginError> {
        if !self.is_guard() {
            return Err(self.err(FailureKind::NotServed { export: abi::EVALUATE.into() }));
        }
        self.run(abi::EVALUATE, |live| guard_call(live, request))
    }

    // ---- hook convention ----------------------------------------------------------------------

    /// Calls a hook with typed input and output.
    pub fn call<S: HookSpec>(&self, input: &S::Input) -> Result<S::Output, PluginError> {
        let json = serde_json::to_vec(input)
            .map_err(|e| self.err(FailureKind::Trap { message: format!("cannot encode input: {e}") }))?;
        self.call_with(S::HOOK, &json, |bytes| serde_json::from_slice::<S::Output>(bytes).map_err(|e| e.to_string()))
    }

    /// Calls a hook on raw JSON and returns the raw JSON result.
    pub fn call_json(&self, hook: Hook, input: &[u8]) -> Result<Vec<u8>, PluginError> {
        self.call_with(hook, input, |b| Ok(b.to_vec()))
    }

    /// Calls a hook and parses the result straight out of guest memory (one copy in, none out).
    pub fn call_with<R>(
        &self,
        hook: Hook,
        input: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<R, String>,
    ) -> Result<R, PluginError> {
        let export = hook.export_name();
        if !self.serves(hook) {
            return Err(self.err(FailureKind::NotServed { export: export.into() }));
        }
        self.run(export, |live| hook_call(live, hook, input, parse))
    }
}

fn write_input(live: &mut Live, export: &str, ptr: i32, input: &[u8]) -> Result<(), CallError> {
    let size = live.memory.data_size(&live.store);
    let r = checked_range(size, ptr, input.len() as i32)
        .map_err(|e| bad_result(export, format!("returned a buffer that does not fit the input: {e}")))?;
    live.memory.data_mut(&mut live.store)[r].copy_from_slice(input);
    Ok(())
}

fn hook_call<R>(
    live: &mut Live,
    hook: Hook,
    input: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<R, String>,
) -> Result<R, CallError> {
    let export = hook.export_name();
    let len = i32::try_from(input.len()).map_err(|_| bad_result(export, "input over 2 GiB"))?;
    let Some(alloc) = live.funcs.alloc.clone() else {
        return Err(CallError::Failure(FailureKind::NotServed { export: abi::ALLOC.into() }));
    };
    let Some(func) = live.funcs.hooks[hook.index()].clone() else {
        return Err(CallError::Failure(FailureKind::NotServed { export: export.into() }));
    };
    let ptr = alloc.call(&mut live.store, len)?;
    if ptr == 0 && len > 0 {
        return Err(bad_result(abi::ALLOC, format!("returned a null pointer for {len} bytes")));
    }
    write_input(live, abi::ALLOC, ptr, input)?;
    let packed = func.call(&mut live.store, (ptr, len))?;
    let (rp, rl) = abi::unpack_ptr_len(packed);
    if rl > limits::MAX_RESULT_BYTES {
        return Err(bad_result(
            export,
            format!("result of {rl} bytes is over the {}-byte cap", limits::MAX_RESULT_BYTES),
        ));
    }
    let size = live.memory.data_size(&live.store);
    let r = checked_range(size, rp as i32, rl as i32).map_err(|e| bad_result(export, format!("result {e}")))?;
    let parsed = {
        let bytes = &live.memory.data(&live.store)[r];
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { bytes };
        parse(bytes).map_err(|e| bad_result(export, format!("malformed JSON result: {e}")))?
    };
    if let Some(dealloc) = live.funcs.dealloc.clone() {
        dealloc.call(&mut live.store, (ptr, len))?;
        if rl > 0 {
            dealloc.call(&mut live.store, (rp as i32, rl as i32))?;
        }
    }
    Ok(parsed)
}

fn guard_call(live: &mut Live, request: &[u8]) -> Result<GuardVerdict, CallError> {
    let len = i32::try_from(request.len()).map_err(|_| bad_result(abi::EVALUATE, "request over 2 GiB"))?;
    // chio's placement rule: where chio_alloc points, else offset 0.
    let mut ptr = 0;
    let mut allocated = false;
    if let Some(a) = live.funcs.chio_alloc.clone() {
        let p = a.call(&mut live.store, len)?;
        if p != 0 && checked_range(live.memory.data_size(&live.store), p, len).is_ok() {
            ptr = p;
            allocated = true;
        }
    }
    if checked_range(live.memory.data_size(&live.store), ptr, len).is_err() {
        return Err(bad_result(abi::EVALUATE, format!("the {len}-byte request does not fit guest memory")));
    }
    write_input(live, abi::CHIO_ALLOC, ptr, request)?;
    let Some(evaluate) = live.funcs.evaluate.clone() else {
        return Err(CallError::Failure(FailureKind::NotServed { export: abi::EVALUATE.into() }));
    };
    let code = evaluate.call(&mut live.store, (ptr, len))?;
    let verdict = match code {
        abi::VERDICT_ALLOW => GuardVerdict::Allow,
        abi::VERDICT_DENY => GuardVerdict::Deny { reason: deny_reason(live)? },
        other => return Err(CallError::Failure(FailureKind::BadVerdict { code: other })),
    };
    if allocated && let Some(free) = live.funcs.chio_free.clone() {
        free.call(&mut live.store, (ptr, len))?;
    }
    Ok(verdict)
}

const GENERIC_DENY: &str = "denied by guard (no reason given)";

fn deny_reason(live: &mut Live) -> Result<String, CallError> {
    let Some(reason_fn) = live.funcs.deny_reason.clone() else {
        return Ok(GENERIC_DENY.into());
    };
    let cap = limits::DENY_REASON_BUFFER_BYTES as i32;
    let mut buf = 0;
    let mut allocated = false;
    if let Some(a) = live.funcs.chio_alloc.clone() {
        let p = a.call(&mut live.store, cap)?;
        if p != 0 && checked_range(live.memory.data_size(&live.store), p, cap).is_ok() {
            buf = p;
            allocated = true;
        }
    }
    if checked_range(live.memory.data_size(&live.store), buf, cap).is_err() {
        return Ok(GENERIC_DENY.into());
    }
    let n = reason_fn.call(&mut live.store, (buf, cap))?;
    let reason = if n == abi::DENY_REASON_NONE {
        GENERIC_DENY.to_string()
    } else if n < 0 || n > cap {
        return Err(bad_result(abi::CHIO_DENY_REASON, format!("returned {n} bytes for a {cap}-byte buffer")));
    } else {
        let start = buf as u32 as usize;
        let bytes = &live.memory.data(&live.store)[start..start + n as usize];
        match serde_json::from_slice::<DenyReason>(bytes) {
            Ok(r) => r.reason,
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        }
    };
    if allocated && let Some(free) = live.funcs.chio_free.clone() {
        free.call(&mut live.store, (buf, cap))?;
    }
    Ok(reason)
}

/// Maps a wasmtime error to the cause a user can act on.
fn classify(e: &wasmtime::Error, store: &Store<HostState>, limits: &Limits) -> FailureKind {
    let call = &store.data().call;
    if let Some(message) = &call.panic {
        return FailureKind::GuestPanic { message: message.clone() };
    }
    if let Some(f) = e.downcast_ref::<ImportFault>() {
        return FailureKind::BadImportCall { import: f.import.into(), detail: f.detail.clone() };
    }
    let limit = e.downcast_ref::<LimitFault>().or(call.limit.as_ref());
    match limit {
        Some(LimitFault::Memory { requested, limit }) => {
            return FailureKind::MemoryLimit { requested: *requested, limit: *limit };
        }
        Some(LimitFault::Table { requested, limit }) => {
            return FailureKind::TableLimit { requested: *requested, limit: *limit };
        }
        None => {}
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => FailureKind::FuelExhausted { limit: limits.fuel.unwrap_or(u64::MAX) },
        Some(Trap::Interrupt) => FailureKind::DeadlineExceeded { deadline: limits.deadline },
        Some(Trap::StackOverflow) => FailureKind::StackOverflow,
        Some(t) => FailureKind::Trap { message: t.to_string() },
        None => FailureKind::Trap { message: format!("{e:#}") },
    }
}
