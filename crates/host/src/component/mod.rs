//! The Component Model backend: a guard written as a component of the world
//! `chio:guard/guard@0.2.0` (`wit/guard.wit`), bound with `wasmtime::component::bindgen!`
//! ([`bindings`]). `Runtime::load` picks it from the binary's header; callers never say which.
//!
//! It shares the core machinery with the core-module backend: the same engine (fuel metering, epoch
//! deadlines, pooling allocator), the same per-plugin limits (our resource limiter caps every linear
//! memory and table of the component), the same pool and recycle policies and the same failure
//! semantics (a failed instance is dropped; a guard fails closed, an advisory one allows). Imports:
//! the three `chio:guard/*@0.2.0` interfaces and a deny-all WASI 0.2 context ([`wasi`]); anything
//! else is a load error naming the import.

pub(crate) mod bindings;
pub(crate) mod wasi;

use std::sync::Arc;

use helios_plugin_schema::{GuardRequest, GuardVerdict, abi, limits, manifest::GUARD_WIT_WORLD};
use wasmtime::{
    Engine, ResourceLimiter, Store, Trap,
    component::{Component, HasSelf, Linker, ResourceTable, types::ComponentItem},
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::{
    Runtime,
    backend::{Backend, BackendInstance, PluginContext},
    bundle::{ContentId, OpenBundles},
    error::{FailureKind, ImportFault, LimitFault, LoadError},
    wasm::state::CallFacts,
};

/// The interfaces of the world a component may import (besides WASI 0.2).
pub(crate) const GUARD_IMPORTS: &[&str] =
    &["chio:guard/types@0.2.0", "chio:guard/host@0.2.0", "chio:guard/policy-context@0.2.0"];

/// The WASI 0.2 interfaces the deny-all context serves (`wasmtime_wasi::p2::add_to_linker_sync`),
/// without their `@0.2.x` version.
const WASI_P2: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];

/// Whether the host serves the interface a component imports as `import`.
fn serves(import: &str) -> bool {
    if GUARD_IMPORTS.contains(&import) {
        return true;
    }
    match import.split_once("@0.2.") {
        Some((name, patch)) => {
            WASI_P2.contains(&name) && !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Whether `bytes` is a binary component (the component layer of the wasm header).
pub(crate) fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00] && bytes[4..6] != [0x01, 0x00]
}

/// The component linker of a runtime: the guard world and WASI 0.2 (deny-all, see [`wasi`]).
pub(crate) struct ComponentLinker(Linker<ComponentState>);

impl std::fmt::Debug for ComponentLinker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ComponentLinker(chio:guard@0.2.0, wasi@0.2 deny-all)")
    }
}

pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<ComponentLinker> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    bindings::Guard::add_to_linker::<ComponentState, HasSelf<ComponentState>>(&mut linker, |s| s)?;
    Ok(ComponentLinker(linker))
}

/// The data of every component `Store`.
pub(crate) struct ComponentState {
    pub ctx: Arc<PluginContext>,
    pub call: CallFacts,
    pub bundles: OpenBundles,
    wasi: WasiCtx,
    table: ResourceTable,
    stdout: wasi::Capture,
    stderr: wasi::Capture,
    /// The largest size any memory of the instance has grown to (what the recycle policy sees).
    memory_high: u64,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl ComponentState {
    fn new(ctx: Arc<PluginContext>) -> ComponentState {
        let (stdout, stderr) = (wasi::Capture::default(), wasi::Capture::default());
        ComponentState {
            ctx,
            call: CallFacts::default(),
            bundles: OpenBundles::default(),
            wasi: wasi::deny_all(&stdout, &stderr),
            table: ResourceTable::new(),
            stdout,
            stderr,
            memory_high: 0,
        }
    }

    /// Forwards what the guest wrote to stdout (info) and stderr (warn) during the call to the
    /// plugin log, one line per line, under the per-call log caps.
    fn flush_output(&mut self) {
        wasi::forward(&self.stdout, &self.stderr, &mut self.call, &self.ctx);
    }
}

impl ResourceLimiter for ComponentState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let limit = self.ctx.limits.max_memory_bytes;
        if desired as u64 > limit {
            let fault = LimitFault::Memory { requested: desired as u64, limit };
            self.call.limit = Some(fault);
            return Err(wasmtime::Error::new(fault));
        }
        self.memory_high = self.memory_high.max(desired as u64);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let limit = self.ctx.limits.max_table_elements;
        if desired as u64 > limit {
            let fault = LimitFault::Table { requested: desired as u64, limit };
            self.call.limit = Some(fault);
            return Err(wasmtime::Error::new(fault));
        }
        Ok(true)
    }

    // A component is several core instances (the guest, the WASI adapter, shims); each memory and
    // table is still capped by the two functions above.
    fn instances(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }

    fn tables(&self) -> usize {
        16
    }
}

/// A compiled component of the guard world with its instance template.
pub(crate) struct ComponentBackend {
    pre: bindings::GuardPre<ComponentState>,
    fuel: bool,
    epoch_ticks: u64,
}

impl std::fmt::Debug for ComponentBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentBackend").field("world", &GUARD_WIT_WORLD).finish_non_exhaustive()
    }
}

impl ComponentBackend {
    /// Checks, compiles and links a component for plugin `name`, which its manifest says
    /// implements `wit_world`.
    ///
    /// Order: the declared world (nothing compiled yet), compile (validates), the imports against
    /// the world and WASI 0.2, link, the `evaluate` export's type.
    pub(crate) fn new(
        runtime: &Runtime,
        name: &str,
        bytes: &[u8],
        wit_world: Option<&str>,
        limits: &helios_plugin_schema::Limits,
    ) -> Result<ComponentBackend, LoadError> {
        if wit_world != Some(GUARD_WIT_WORLD) {
            return Err(LoadError::WitWorld {
                plugin: name.into(),
                expected: GUARD_WIT_WORLD,
                found: wit_world.map_or_else(|| "none (wit_world missing)".into(), |w| format!("{w:?}")),
            });
        }
        let inner = &runtime.inner;
        let component = Component::new(&inner.engine, bytes)
            .map_err(|e| LoadError::Malformed { plugin: name.into(), detail: format!("invalid component: {e:#}") })?;
        let ty = component.component_type();
        for (import, item) in ty.imports(&inner.engine) {
            let served = matches!(item.ty, ComponentItem::ComponentInstance(_)) && serves(import);
            if !served {
                return Err(LoadError::ComponentImport {
                    plugin: name.into(),
                    import: import.into(),
                    allowed: format!("{}, and WASI 0.2 (deny-all): {}", GUARD_IMPORTS.join(", "), WASI_P2.join(", ")),
                });
            }
        }
        let pre = inner
            .component_linker
            .0
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Compile { plugin: name.into(), detail: format!("cannot link: {e:#}") })?;
        let pre = bindings::GuardPre::new(pre).map_err(|e| LoadError::Export {
            plugin: name.into(),
            export: abi::EVALUATE.into(),
            problem: format!("does not match the world {GUARD_WIT_WORLD}: {e:#}"),
        })?;
        Ok(ComponentBackend { pre, fuel: inner.cfg.fuel, epoch_ticks: runtime.epoch_ticks(limits.deadline) })
    }
}

impl Backend for ComponentBackend {
    fn hooks(&self) -> &[helios_plugin_schema::Hook] {
        &[]
    }

    fn is_guard(&self) -> bool {
        true
    }

    fn instantiate(&self, ctx: &Arc<PluginContext>) -> Result<Box<dyn BackendInstance>, FailureKind> {
        let mut store = Store::new(self.pre.engine(), ComponentState::new(ctx.clone()));
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        let mut inst = ComponentInstance { store, guard: None, fuel: self.fuel, epoch_ticks: self.epoch_ticks };
        inst.arm();
        match self.pre.instantiate(&mut inst.store) {
            Ok(guard) => {
                inst.guard = Some(guard);
                Ok(Box::new(inst))
            }
            Err(e) => Err(match inst.settle::<()>(Err(e)) {
                Err(FailureKind::Trap { message }) => FailureKind::Instantiate { detail: message },
                Err(other) => other,
                Ok(()) => FailureKind::Instantiate { detail: "instantiation failed".into() },
            }),
        }
    }
}

/// One store and instance of a component guard.
pub(crate) struct ComponentInstance {
    store: Store<ComponentState>,
    /// `None` only while instantiating.
    guard: Option<bindings::Guard>,
    fuel: bool,
    epoch_ticks: u64,
}

/// Cuts a deny reason to what a core-module guard can return (`DENY_REASON_BUFFER_BYTES`), on a
/// character boundary.
fn capped_reason(mut reason: String) -> String {
    let cap = limits::DENY_REASON_BUFFER_BYTES as usize;
    if reason.len() > cap {
        let mut end = cap;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

fn to_wit(r: GuardRequest) -> Result<bindings::GuardRequest, String> {
    Ok(bindings::GuardRequest {
        tool_name: r.tool_name,
        server_id: r.server_id,
        agent_id: r.agent_id,
        arguments: r.arguments.to_string(),
        scopes: r.scopes,
        action_type: r.action_type,
        extracted_path: r.extracted_path,
        extracted_target: r.extracted_target,
        filesystem_roots: r.filesystem_roots,
        matched_grant_index: r
            .matched_grant_index
            .map(|i| u32::try_from(i).map_err(|_| format!("matched_grant_index {i} does not fit the world's u32")))
            .transpose()?,
    })
}

impl ComponentInstance {
    /// The one place a call's outcome and its facts become a cause (as `WasmInstance::settle`).
    fn settle<T>(&self, r: wasmtime::Result<T>) -> Result<T, FailureKind> {
        let e = match r {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let facts = &self.store.data().call;
        if let Some(message) = &facts.panic {
            return Err(FailureKind::GuestPanic { message: message.clone() });
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

impl BackendInstance for ComponentInstance {
    fn arm(&mut self) {
        if self.fuel {
            let fuel = self.store.data().ctx.limits.fuel.unwrap_or(u64::MAX);
            let _ = self.store.set_fuel(fuel);
        }
        self.store.set_epoch_deadline(self.epoch_ticks);
        let state = self.store.data_mut();
        state.call = Default::default();
        state.bundles.reset();
    }

    fn call_hook(
        &mut self,
        hook: helios_plugin_schema::Hook,
        _input: &[u8],
        _out: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), FailureKind> {
        Err(FailureKind::NotServed { export: hook.export_name().into() })
    }

    fn evaluate(&mut self, request: &[u8]) -> Result<GuardVerdict, FailureKind> {
        let bad = |detail: String| FailureKind::BadResult { export: abi::EVALUATE.into(), detail };
        let request: GuardRequest =
            serde_json::from_slice(request).map_err(|e| bad(format!("the request is not a GuardRequest: {e}")))?;
        let request = to_wit(request).map_err(bad)?;
        let Some(guard) = &self.guard else {
            return Err(FailureKind::NotServed { export: abi::EVALUATE.into() });
        };
        let r = guard.call_evaluate(&mut self.store, &request);
        self.store.data_mut().flush_output();
        match self.settle(r)? {
            bindings::Verdict::Allow => Ok(GuardVerdict::Allow),
            bindings::Verdict::Deny(reason) => Ok(GuardVerdict::Deny { reason: capped_reason(reason) }),
        }
    }

    fn memory_bytes(&self) -> u64 {
        // A component's memories are not exported to the host; the limiter saw every grow.
        self.store.data().memory_high
    }

    fn dropped_logs(&self) -> u32 {
        self.store.data().call.dropped_logs
    }

    fn bundles_opened(&self) -> Vec<ContentId> {
        self.store.data().bundles.opened()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_imports_are_the_world_and_wasi_0_2() {
        assert!(serves("chio:guard/host@0.2.0") && serves("wasi:cli/stdout@0.2.6") && serves("wasi:io/streams@0.2.0"));
        assert!(
            !serves("chio:guard/host@0.1.0") && !serves("wasi:cli/stdout@0.3.0") && !serves("wasi:http/types@0.2.0")
        );
        assert!(!serves("wasi:cli/stdout@0.2.") && !serves("wasi:cli/stdout"));
    }

    #[test]
    fn the_header_tells_a_component_from_a_core_module() {
        assert!(is_component(b"\0asm\x0d\x00\x01\x00"));
        assert!(!is_component(b"\0asm\x01\x00\x00\x00"));
        assert!(!is_component(b"\0asm"));
        assert!(!is_component(b"(component)"));
    }

    #[test]
    fn a_deny_reason_is_cut_at_the_core_buffer_size_on_a_char_boundary() {
        let cap = limits::DENY_REASON_BUFFER_BYTES as usize;
        assert_eq!(capped_reason("no".into()), "no");
        let long = "é".repeat(cap);
        let cut = capped_reason(long);
        assert!(cut.len() <= cap && cut.len() >= cap - 1, "{}", cut.len());
    }
}
