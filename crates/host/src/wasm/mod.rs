//! The core-wasm backend: a module compiled by wasmtime, speaking one or both calling conventions
//! ([`hook`], [`guard`]), linked against the host import surface ([`imports`]), run under fuel, an
//! epoch deadline and our resource limiter ([`state`]).
//!
//! Each convention resolves and type-checks its own exports at load (against `schema::abi::EXPORTS`
//! and `HOOK_SIG`), binds them per instance, writes its input and reads its result through
//! [`memory`]. A third convention is a new module here with the same three steps and a field in
//! [`WasmBackend`]/[`WasmInstance`]; the core (`load`, `pool`, `call`) does not change.
//!
//! The facts of a call — the error wasmtime returned, the limit our limiter refused, the panic message
//! the guest logged — are turned into one [`FailureKind`] in one place, [`WasmInstance::settle`].

pub(crate) mod cache;
mod guard;
mod hook;
pub(crate) mod imports;
pub(crate) mod memory;
pub(crate) mod state;
pub(crate) mod wasi;

use std::sync::Arc;

use helios_plugin_schema::module_info::ModuleInfo;
use helios_plugin_schema::{GuardVerdict, Hook, Limits, abi};
use sha2::{Digest, Sha256};
use wasmtime::{Extern, ExternType, Instance, InstancePre, Memory, Module, ModuleExport, Store, Trap, TypedFunc};

use crate::{
    Runtime,
    backend::{Backend, BackendInstance, PluginContext},
    error::{FailureKind, ImportFault, LimitFault, LoadError},
};
use state::HostState;

/// A compiled module with its instance template and the exports of each convention it speaks.
pub(crate) struct WasmBackend {
    pre: InstancePre<HostState>,
    /// Keeps the runtime's weak module cache entry alive while this plugin is loaded.
    _module: Arc<Module>,
    memory: ModuleExport,
    hook: Option<hook::HookAbi>,
    guard: Option<guard::GuardAbi>,
    fuel: bool,
    epoch_ticks: u64,
    /// The module imports WASI preview 1: each instance gets its own empty context.
    wasi: bool,
}

impl std::fmt::Debug for WasmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmBackend")
            .field("hooks", &self.hooks())
            .field("guard", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a call failed before it was settled: a wasmtime error (trap, limit, import fault) still to be
/// classified, or a failure the convention already named.
pub(crate) enum CallError {
    Wasm(wasmtime::Error),
    Failure(FailureKind),
}

impl From<wasmtime::Error> for CallError {
    fn from(e: wasmtime::Error) -> Self {
        CallError::Wasm(e)
    }
}

pub(crate) fn bad_result(export: &str, detail: impl Into<String>) -> CallError {
    CallError::Failure(FailureKind::BadResult { export: export.to_owned(), detail: detail.into() })
}

impl WasmBackend {
    /// Checks, compiles and indexes a module (binary or WAT) for plugin `name`.
    ///
    /// Order: structure and import names (no compilation yet), compile (cached by SHA-256), import
    /// types, the memory export, each convention's exports, the `helios.plugin` declaration.
    pub(crate) fn new(
        runtime: &Runtime,
        name: &str,
        wasm: &[u8],
        limits: &Limits,
    ) -> Result<(WasmBackend, ModuleInfo), LoadError> {
        let text_converted;
        let wasm = if wasm.starts_with(b"\0asm") {
            wasm
        } else {
            text_converted = wat::parse_bytes(wasm)
                .map_err(|e| LoadError::Malformed {
                    plugin: name.into(),
                    detail: format!("not a wasm binary, nor valid WAT: {e}"),
                })?
                .into_owned();
            &text_converted[..]
        };
        let info =
            ModuleInfo::parse(wasm).map_err(|e| LoadError::Malformed { plugin: name.into(), detail: e.to_string() })?;
        let known = |module: &str, field: &str| abi::import(module, field).is_some() || wasi::is_import(module, field);
        if let Some(imp) = info.imports.iter().find(|i| i.kind != "func" || !known(&i.module, &i.name)) {
            let mut allowed =
                abi::IMPORTS.iter().map(|s| format!("{}.{}", s.module, s.name)).collect::<Vec<_>>().join(", ");
            allowed.push_str(", and WASI preview 1 (");
            allowed.push_str(wasi::MODULE);
            allowed.push_str(".*)");
            return Err(LoadError::ForbiddenImport {
                plugin: name.into(),
                module: imp.module.clone(),
                field: imp.name.clone(),
                allowed,
            });
        }
        let module = compile(runtime, name, wasm, &info.sha256)?;
        check_import_types(name, &module)?;
        let memory = match module.get_export(abi::MEMORY) {
            Some(ExternType::Memory(_)) => module.get_export_index(abi::MEMORY),
            _ => None,
        }
        .ok_or_else(|| LoadError::Export {
            plugin: name.into(),
            export: abi::MEMORY.into(),
            problem: "is missing: plugins must export their linear memory".into(),
        })?;
        let hook = hook::HookAbi::resolve(name, &module)?;
        let guard = guard::GuardAbi::resolve(name, &module)?;
        let exported = hook.as_ref().map(|h| h.hooks()).unwrap_or(&[]);
        // The declaration must match the exports, whatever subset the operator serves.
        if let Some(h) = info.declared_hooks.iter().find(|h| !exported.contains(h)) {
            return Err(LoadError::Export {
                plugin: name.into(),
                export: h.export_name().into(),
                problem: "is declared in the helios.plugin section but not exported".into(),
            });
        }
        let wasi = info.imports.iter().any(|i| i.module == wasi::MODULE);
        let linker = if wasi { &runtime.inner.wasi_linker } else { &runtime.inner.linker };
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Compile { plugin: name.into(), detail: format!("{e:#}") })?;
        let backend = WasmBackend {
            pre,
            _module: module,
            memory,
            hook,
            guard,
            fuel: runtime.inner.cfg.fuel,
            epoch_ticks: runtime.epoch_ticks(limits.deadline),
            wasi,
        };
        Ok((backend, info))
    }
}

impl Backend for WasmBackend {
    fn hooks(&self) -> &[Hook] {
        self.hook.as_ref().map(|h| h.hooks()).unwrap_or(&[])
    }

    fn is_guard(&self) -> bool {
        self.guard.is_some()
    }

    fn instantiate(&self, ctx: &Arc<PluginContext>) -> Result<Box<dyn BackendInstance>, FailureKind> {
        let mut state = HostState::new(ctx.clone());
        if self.wasi {
            state.wasi = Some(Box::new(wasi::WasiState::new()));
        }
        let mut store = Store::new(self.pre.module().engine(), state);
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        let mut inst = WasmInstance {
            store,
            memory: None,
            hook: None,
            guard: None,
            fuel: self.fuel,
            epoch_ticks: self.epoch_ticks,
            wasi: self.wasi,
        };
        // A start function runs during instantiation: give it the per-call budget too.
        inst.arm();
        let instantiated = self.pre.instantiate(&mut inst.store).and_then(|i| {
            // A WASI reactor (a cdylib for wasm32-wasip1) initialises its libc once, before any export.
            if self.wasi
                && let Ok(init) = i.get_typed_func::<(), ()>(&mut inst.store, wasi::INITIALIZE)
            {
                init.call(&mut inst.store, ())?;
            }
            Ok(i)
        });
        if self.wasi {
            wasi::flush_streams(inst.store.data_mut());
        }
        let instance = match instantiated {
            Ok(i) => i,
            Err(e) => {
                return Err(match inst.settle::<()>(Err(CallError::Wasm(e))) {
                    Err(FailureKind::Trap { message }) => FailureKind::Instantiate { detail: message },
                    Err(other) => other,
                    Ok(()) => FailureKind::Instantiate { detail: "instantiation failed".into() },
                });
            }
        };
        let memory = match instance.get_module_export(&mut inst.store, &self.memory) {
            Some(Extern::Memory(m)) => m,
            _ => return Err(FailureKind::Instantiate { detail: "memory export vanished".into() }),
        };
        inst.store.data_mut().memory = Some(memory);
        inst.memory = Some(memory);
        let bind_err = |e: wasmtime::Error| FailureKind::Instantiate { detail: format!("{e:#}") };
        if let Some(h) = &self.hook {
            inst.hook = Some(h.bind(&instance, &mut inst.store).map_err(bind_err)?);
        }
        if let Some(g) = &self.guard {
            inst.guard = Some(g.bind(&instance, &mut inst.store).map_err(bind_err)?);
        }
        Ok(Box::new(inst))
    }
}

/// One store and instance with the typed exports of each convention it speaks.
pub(crate) struct WasmInstance {
    store: Store<HostState>,
    /// `None` only while instantiating.
    memory: Option<Memory>,
    hook: Option<hook::HookFuncs>,
    guard: Option<guard::GuardFuncs>,
    fuel: bool,
    epoch_ticks: u64,
    wasi: bool,
}

impl WasmInstance {
    /// Runs one call of a convention; for a WASI module, its stdout/stderr then go to the log.
    ///
    /// wasmtime-wasi runs its I/O on tokio and panics when asked to block inside an async worker: a
    /// host that calls a WASI plugin there gets a failed call naming the reason, not a panic.
    fn run<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, CallError>) -> Result<T, CallError> {
        if !self.wasi {
            return f(self);
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))).unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a WASI call panicked");
            Err(CallError::Failure(FailureKind::Trap {
                message: format!("WASI host call failed: {why} (call WASI plugins from a blocking thread)"),
            }))
        });
        wasi::flush_streams(self.store.data_mut());
        r
    }

    /// Turns a call's outcome and the facts its store collected into the one cause a user can act
    /// on. A guest panic is the cause of whatever followed it (a trap, a bad result); then a fault
    /// of an import; then the limit the limiter refused; then the trap itself.
    fn settle<T>(&self, r: Result<T, CallError>) -> Result<T, FailureKind> {
        let e = match r {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let facts = &self.store.data().call;
        if let Some(message) = &facts.panic {
            return Err(FailureKind::GuestPanic { message: message.clone() });
        }
        let e = match e {
            CallError::Failure(kind) => return Err(kind),
            CallError::Wasm(e) => e,
        };
        if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return Err(FailureKind::Trap { message: format!("the plugin called WASI proc_exit({})", exit.0) });
        }
        if let Some(f) = e.downcast_ref::<ImportFault>() {
            return Err(FailureKind::BadImportCall { import: f.import.into(), detail: f.detail.clone() });
        }
        let limits = &self.store.data().ctx.limits;
        Err(match e.downcast_ref::<LimitFault>().copied().or(facts.limit) {
            Some(LimitFault::Memory { requested, limit }) => FailureKind::MemoryLimit { requested, limit },
            Some(LimitFault::Table { requested, limit }) => FailureKind::TableLimit { requested, limit },
            None => match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => FailureKind::FuelExhausted { limit: limits.fuel.unwrap_or(u64::MAX) },
                Some(Trap::Interrupt) => FailureKind::DeadlineExceeded { deadline: limits.deadline },
                Some(Trap::StackOverflow) => FailureKind::StackOverflow,
                Some(t) => FailureKind::Trap { message: t.to_string() },
                None => FailureKind::Trap { message: format!("{e:#}") },
            },
        })
    }
}

impl BackendInstance for WasmInstance {
    fn arm(&mut self) {
        // Only a metering engine takes fuel: asking another one builds an error on every call.
        if self.fuel {
            let fuel = self.store.data().ctx.limits.fuel.unwrap_or(u64::MAX);
            let _ = self.store.set_fuel(fuel);
        }
        self.store.set_epoch_deadline(self.epoch_ticks);
        // Only WASI's `poll_oneoff` reads the arming time: other calls do not read the clock.
        let armed_at = self.wasi.then(std::time::Instant::now);
        self.store.data_mut().call = state::CallFacts { armed_at, ..Default::default() };
        self.store.data_mut().bundles.reset();
        if self.store.data().time_host_calls {
            self.store.data_mut().host_calls = crate::HostCalls::default();
        }
    }

    fn call_hook(
        &mut self,
        hook: Hook,
        input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), FailureKind> {
        let r = self.run(|i| match (&mut i.hook, i.memory) {
            (Some(funcs), Some(memory)) => hook::call(&mut i.store, memory, funcs, hook, input, out),
            _ => Err(CallError::Failure(FailureKind::NotServed { export: hook.export_name().into() })),
        });
        self.settle(r)
    }

    fn evaluate(&mut self, request: &[u8]) -> Result<GuardVerdict, FailureKind> {
        let r = self.run(|i| match (&mut i.guard, i.memory) {
            (Some(funcs), Some(memory)) => guard::evaluate(&mut i.store, memory, funcs, request),
            _ => Err(CallError::Failure(FailureKind::NotServed { export: abi::EVALUATE.into() })),
        });
        self.settle(r)
    }

    fn memory_bytes(&self) -> u64 {
        self.memory.map(|m| m.data_size(&self.store) as u64).unwrap_or(0)
    }

    fn dropped_logs(&self) -> u32 {
        self.store.data().call.dropped_logs
    }

    fn bundles_opened(&self) -> Vec<crate::bundle::ContentId> {
        self.store.data().bundles.opened()
    }

    fn take_scratch(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.store.data_mut().scratch);
        buf.clear();
        buf
    }

    fn put_scratch(&mut self, buf: Vec<u8>) {
        // An input too large to keep in guest memory is not kept here either.
        if buf.capacity() <= memory::KEPT_INPUT_MAX_BYTES as usize {
            self.store.data_mut().scratch = buf;
        }
    }

    fn host_calls(&self) -> Option<&crate::HostCalls> {
        let data = self.store.data();
        data.time_host_calls.then_some(&data.host_calls)
    }

    fn fuel_consumed(&self) -> Option<u64> {
        if !self.fuel {
            return None;
        }
        let budget = self.store.data().ctx.limits.fuel.unwrap_or(u64::MAX);
        self.store.get_fuel().ok().map(|left| budget.saturating_sub(left))
    }
}

// ---- load-time helpers shared by the conventions --------------------------------------------------

fn matches_sig(f: &wasmtime::FuncType, sig: &abi::Sig) -> bool {
    let same = |t: wasmtime::ValType, want: &abi::ValType| match want {
        abi::ValType::I32 => matches!(t, wasmtime::ValType::I32),
        abi::ValType::I64 => matches!(t, wasmtime::ValType::I64),
    };
    f.params().len() == sig.params.len()
        && f.results().len() == sig.results.len()
        && f.params().zip(sig.params).all(|(t, w)| same(t, w))
        && f.results().zip(sig.results).all(|(t, w)| same(t, w))
}

fn found_sig(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => {
            let p: Vec<_> = f.params().map(|t| t.to_string()).collect();
            let r: Vec<_> = f.results().map(|t| t.to_string()).collect();
            format!("({}) -> ({})", p.join(", "), r.join(", "))
        }
        _ => "not a function".to_string(),
    }
}

/// The export `export` if the module has it with signature `sig`; an error naming both signatures if
/// it has it with another.
pub(crate) fn func_export(
    plugin: &str,
    module: &Module,
    export: &str,
    sig: &abi::Sig,
) -> Result<Option<ModuleExport>, LoadError> {
    let Some(ty) = module.get_export(export) else { return Ok(None) };
    if !matches!(&ty, ExternType::Func(f) if matches_sig(f, sig)) {
        return Err(LoadError::Export {
            plugin: plugin.into(),
            export: export.into(),
            problem: format!("has the wrong type: expected {sig}, found {}", found_sig(&ty)),
        });
    }
    Ok(module.get_export_index(export))
}

/// The signature of a fixed-name export, from the schema's table.
pub(crate) fn sig_of(export: &str) -> &'static abi::Sig {
    match abi::export(export) {
        Some(e) => &e.sig,
        None => &abi::HOOK_SIG,
    }
}

/// Binds a resolved export of a live instance to its typed function.
pub(crate) fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    export: &ModuleExport,
) -> wasmtime::Result<TypedFunc<P, R>> {
    match instance.get_module_export(&mut *store, export) {
        Some(Extern::Func(f)) => f.typed::<P, R>(&*store),
        _ => Err(wasmtime::Error::msg("a resolved export vanished from the instance")),
    }
}

fn check_import_types(name: &str, module: &Module) -> Result<(), LoadError> {
    for imp in module.imports() {
        let Some(want) = abi::import(imp.module(), imp.name()) else { continue };
        let ty = imp.ty();
        if !matches!(&ty, ExternType::Func(f) if matches_sig(f, &want.sig)) {
            return Err(LoadError::ImportType {
                plugin: name.into(),
                module: imp.module().into(),
                field: imp.name().into(),
                expected: want.sig.to_string(),
                found: match ty {
                    ExternType::Func(_) => found_sig(&ty),
                    other => format!("{other:?}"),
                },
            });
        }
    }
    Ok(())
}

/// Compiles `wasm` once per runtime (and once per machine with a disk cache). Modules are cached
/// weakly: one stays in memory while a plugin uses it and is freed after the last one is dropped.
/// `sha256_hex` is the digest `ModuleInfo::parse` already took of these bytes (not hashed twice).
fn compile(runtime: &Runtime, name: &str, wasm: &[u8], sha256_hex: &str) -> Result<Arc<Module>, LoadError> {
    let inner = &runtime.inner;
    let key: [u8; 32] = match hex::decode(sha256_hex).ok().and_then(|v| <[u8; 32]>::try_from(v).ok()) {
        Some(k) => k,
        None => Sha256::digest(wasm).into(),
    };
    if let Some(m) = inner.modules.lock().ok().and_then(|m| m.get(&key).and_then(std::sync::Weak::upgrade)) {
        return Ok(m);
    }
    let cached = match &inner.disk_cache {
        Some(cache) => match cache.get(&inner.engine, name, &key) {
            cache::Lookup::Hit(m) => Some(m),
            cache::Lookup::Miss | cache::Lookup::Rejected => None,
        },
        None => None,
    };
    let module = match cached {
        Some(m) => m,
        None => {
            let m = Module::new(&inner.engine, wasm)
                .map_err(|e| LoadError::Compile { plugin: name.into(), detail: format!("{e:#}") })?;
            if let Some(cache) = &inner.disk_cache {
                cache.put(name, &key, &m);
            }
            m
        }
    };
    let module = Arc::new(module);
    if let Ok(mut m) = inner.modules.lock() {
        m.retain(|_, w| w.strong_count() > 0);
        m.insert(key, Arc::downgrade(&module));
    }
    Ok(module)
}
