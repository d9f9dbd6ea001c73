//! How plugin code runs, behind two small traits: a [`Backend`] is one loaded piece of code (a core
//! wasm module today; a component or a Starlark script tomorrow) and a [`BackendInstance`] is one
//! live copy of it that serves one call at a time.
//!
//! The core (`load`, `pool`, `call`) knows only these traits: it selects the hooks an operator asked
//! for, keeps warm instances and recycles them, arms the per-call budget, counts and logs failures.
//! A backend knows how to make an instance, how to hand it an input and how to read its result; it
//! reports every failure as one [`FailureKind`], so the facts of a call (trap, fuel, deadline,
//! memory or table limit, guest panic) are collected in one place, inside the backend that saw them.
//!
//! Nothing here assumes wasmtime: a backend without wasm (a script interpreter) implements the same
//! two traits and reads its name, config, limits, KV namespace and clock from the [`PluginContext`].

use std::{any::Any, collections::BTreeMap, fmt, sync::Arc};

use helios_plugin_schema::{GuardVerdict, Hook, Limits};

use crate::{
    FailureKind,
    bundle::{BundleStore, ContentId},
    services::{Clock, KvBackend, KvCaps, KvError, Level, LogSink},
};

/// One loaded piece of plugin code. Immutable after load; shared by every instance.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Hooks of the catalogue the code exports, in catalogue order. The core serves the subset the
    /// operator configured; a backend never needs to know about the selection.
    fn hooks(&self) -> &[Hook];
    /// Whether the code serves chio's guard call (`evaluate`).
    fn is_guard(&self) -> bool;
    /// A new instance bound to `ctx`. Code that runs while instantiating (a wasm start function, a
    /// script's top level) runs under the per-call budget of `ctx.limits()`.
    fn instantiate(&self, ctx: &Arc<PluginContext>) -> Result<Box<dyn BackendInstance>, FailureKind>;
}

/// One live instance. The core calls [`BackendInstance::arm`] before every call and never uses an
/// instance again after a call returned an error.
pub trait BackendInstance: Send {
    /// Resets the per-call budget (fuel, deadline) and the facts of the previous call.
    fn arm(&mut self);
    /// Runs `hook` on the JSON `input` and hands the JSON result to `out` (borrowed from the guest
    /// where the backend can: the core parses it in place). An empty result reads as `null`.
    /// `out`'s error becomes [`FailureKind::BadResult`] naming the hook.
    fn call_hook(
        &mut self,
        hook: Hook,
        input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), FailureKind>;
    /// [`BackendInstance::call_hook`] with `host`: the host's per-call data that is not part of
    /// the JSON input, for an in-process backend (the HTTP host hands a Starlark script the
    /// handles behind `ctx.transaction_state` and `ctx.stream_state`). The default ignores it:
    /// a wasm guest sees only its input.
    fn call_hook_with_host(
        &mut self,
        hook: Hook,
        input: &[u8],
        host: &dyn Any,
        out: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), FailureKind> {
        let _ = host;
        self.call_hook(hook, input, out)
    }
    /// Runs the guard on a JSON [`helios_plugin_schema::GuardRequest`].
    fn evaluate(&mut self, request: &[u8]) -> Result<GuardVerdict, FailureKind>;
    /// Bytes of memory the instance holds now (compared with the recycle threshold after a call).
    fn memory_bytes(&self) -> u64;
    /// Guest log lines dropped over the per-call cap during the last call.
    fn dropped_logs(&self) -> u32;
    /// The content bundles the last call opened (its verdict trace). Default: none.
    fn bundles_opened(&self) -> Vec<ContentId> {
        Vec::new()
    }
    /// Fuel the last call consumed, if the backend meters fuel. Default: `None`.
    fn fuel_consumed(&self) -> Option<u64> {
        None
    }
    /// An empty buffer the instance keeps for encoding its calls' inputs, so a pooled call
    /// allocates nothing on the host; given back with [`BackendInstance::put_scratch`]. Default: a
    /// new one.
    fn take_scratch(&mut self) -> Vec<u8> {
        Vec::new()
    }
    /// Gives back the buffer of [`BackendInstance::take_scratch`]. Default: drops it.
    fn put_scratch(&mut self, buf: Vec<u8>) {
        drop(buf);
    }
    /// The host functions the last call used, when the backend times them (only while the
    /// runtime has an observer). Default: `None`.
    fn host_calls(&self) -> Option<&crate::HostCalls> {
        None
    }
}

/// Everything the host binds to a plugin at load, shared by its instances: who it is, its config,
/// its limits, and the services it may use. A plugin never names its KV namespace: the context
/// does, so no key bytes can reach another plugin.
pub struct PluginContext {
    pub(crate) name: Arc<str>,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) limits: Limits,
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) kv_caps: KvCaps,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) log_sink: Option<Arc<dyn LogSink>>,
    /// The content bundles the plugin's manifest declares (the only ones it may open).
    pub(crate) bundles: Arc<[ContentId]>,
    pub(crate) bundle_store: Option<Arc<dyn BundleStore>>,
    pub(crate) observer: Option<Arc<dyn crate::observe::PluginObserver>>,
}

impl fmt::Debug for PluginContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginContext")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .field("kv_caps", &self.kv_caps)
            .finish_non_exhaustive()
    }
}

impl PluginContext {
    /// The plugin's name, as configured.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The plugin's config value for `key` (what the guest's `get_config` sees).
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(String::as_str)
    }
    /// The content bundles the plugin may open.
    pub fn bundles(&self) -> &[ContentId] {
        &self.bundles
    }
    /// The per-call limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    /// The host clock, in Unix seconds.
    pub fn now_unix_secs(&self) -> i64 {
        self.clock.now_unix_secs()
    }
    /// Calls `f` with the value of `key` in this plugin's namespace, or `None`.
    pub fn kv_get(&self, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) -> Result<(), KvError> {
        self.kv.get(&self.name, key, f)
    }
    /// Stores `value` under `key` in this plugin's namespace, within its caps.
    pub fn kv_set(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.kv.set_within(&self.name, key, value, self.kv_caps)
    }
    /// Removes `key` from this plugin's namespace.
    pub fn kv_delete(&self, key: &[u8]) -> Result<(), KvError> {
        self.kv.delete(&self.name, key)
    }
    /// Emits one guest log line (to `tracing` with a `plugin` field, and to the runtime's sink).
    /// Per-call caps are the backend's job.
    pub fn log(&self, level: Level, message: &str) {
        let plugin = &*self.name;
        match level {
            Level::Trace => tracing::trace!(target: "helios_plugin::guest", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "helios_plugin::guest", plugin, "{message}"),
            Level::Info => tracing::info!(target: "helios_plugin::guest", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "helios_plugin::guest", plugin, "{message}"),
            Level::Error => tracing::error!(target: "helios_plugin::guest", plugin, "{message}"),
        }
        if let Some(sink) = &self.log_sink {
            sink.log(plugin, level, message);
        }
    }
}
