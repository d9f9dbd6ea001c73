//! What an operator configures for a plugin ([`PluginConfig`]) and what a host holds once it is
//! loaded ([`Plugin`]): its backend, the hooks it serves, its pool of instances and its counters.
//! Loading is in `load`, calling in `call`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use helios_plugin_schema::module_info::ModuleInfo;
use helios_plugin_schema::{
    Hook, Limits,
    limits::{DEFAULT_MAX_IDLE_INSTANCES, DEFAULT_PRIORITY, DEFAULT_RECYCLE_AFTER_CALLS, DEFAULT_RECYCLE_MEMORY_BYTES},
};
use serde::Deserialize;

use crate::{
    backend::{Backend, PluginContext},
    bundle::ContentId,
    pool::Pool,
    services::KvCaps,
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
    pub(crate) kv_caps: KvCaps,
    pub(crate) wit_world: Option<String>,
    pub(crate) bundles: Vec<ContentId>,
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
            kv_caps: KvCaps::default(),
            wit_world: None,
            bundles: Vec::new(),
        }
    }
    /// The WIT world the plugin's (signed) manifest declares (`wit_world`). A component must declare
    /// exactly [`GUARD_WIT_WORLD`](helios_plugin_schema::manifest::GUARD_WIT_WORLD). Default: none.
    pub fn wit_world(mut self, world: impl Into<String>) -> Self {
        self.wit_world = Some(world.into());
        self
    }
    /// The content bundles the plugin's (signed) manifest declares: the only ones it may open, read
    /// from the runtime's [`BundleStore`](crate::BundleStore). Default: none.
    pub fn bundles(mut self, ids: impl IntoIterator<Item = ContentId>) -> Self {
        self.bundles = ids.into_iter().collect();
        self
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
    /// Fuel per call; `None` = unmetered. Default: [`DEFAULT_FUEL`](helios_plugin_schema::limits::DEFAULT_FUEL).
    pub fn fuel(mut self, fuel: Option<u64>) -> Self {
        self.limits.fuel = fuel;
        self
    }
    /// Default: [`DEFAULT_DEADLINE`](helios_plugin_schema::limits::DEFAULT_DEADLINE).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.limits.deadline = d;
        self
    }
    /// Default: [`DEFAULT_MAX_MEMORY_BYTES`](helios_plugin_schema::limits::DEFAULT_MAX_MEMORY_BYTES).
    pub fn max_memory_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_memory_bytes = bytes;
        self
    }
    /// Default: [`DEFAULT_MAX_TABLE_ELEMENTS`](helios_plugin_schema::limits::DEFAULT_MAX_TABLE_ELEMENTS).
    pub fn max_table_elements(mut self, n: u64) -> Self {
        self.limits.max_table_elements = n;
        self
    }
    /// Default: [`DEFAULT_MAX_MODULE_BYTES`](helios_plugin_schema::limits::DEFAULT_MAX_MODULE_BYTES).
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
    /// Keys this plugin may keep in its KV namespace. Default: [`KV_MAX_KEYS`](helios_plugin_schema::limits::KV_MAX_KEYS).
    pub fn kv_max_keys(mut self, n: usize) -> Self {
        self.kv_caps.max_keys = n;
        self
    }
    /// Bytes (keys + values) this plugin may keep in its KV namespace. Default:
    /// [`KV_MAX_TOTAL_BYTES`](helios_plugin_schema::limits::KV_MAX_TOTAL_BYTES).
    pub fn kv_max_bytes(mut self, bytes: usize) -> Self {
        self.kv_caps.max_bytes = bytes;
        self
    }
    pub fn name(&self) -> &str {
        &self.name
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

/// A loaded plugin. `Send + Sync`: share it with `Arc` and call it from many threads.
pub struct Plugin {
    pub(crate) ctx: Arc<PluginContext>,
    pub(crate) cfg: PluginConfig,
    pub(crate) backend: Box<dyn Backend>,
    /// The hooks served: the backend's, narrowed to the configured ones.
    pub(crate) served: Vec<Hook>,
    pub(crate) info: Option<ModuleInfo>,
    pub(crate) pool: Pool,
    pub(crate) calls: AtomicU64,
    pub(crate) failures: AtomicU64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.ctx.name)
            .field("hooks", &self.served)
            .field("guard", &self.is_guard())
            .field("backend", &self.backend)
            .field("mode", &self.cfg.mode)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The plugin's name (also its KV namespace).
    pub fn name(&self) -> &str {
        &self.ctx.name
    }
    /// Hooks this plugin serves, in catalogue order.
    pub fn hooks(&self) -> &[Hook] {
        &self.served
    }
    /// Whether it serves `hook`.
    pub fn serves(&self, hook: Hook) -> bool {
        self.served.contains(&hook)
    }
    /// Whether it serves chio's guard call (`evaluate`).
    pub fn is_guard(&self) -> bool {
        self.backend.is_guard()
    }
    /// Whether the plugin reads the host's statement facts ([`QueryContext::facts`]): every plugin
    /// except a wasm module that declared `facts=none` in its `helios.plugin` section. [`Chain`]
    /// leaves the facts out of the others' input.
    ///
    /// [`QueryContext::facts`]: helios_plugin_schema::QueryContext::facts
    /// [`Chain`]: crate::Chain
    pub fn reads_facts(&self) -> bool {
        self.info.as_ref().is_none_or(|i| !i.declared_without_facts)
    }
    /// Static facts about a wasm module (size, sha256, imports, exports, declared hooks); `None`
    /// for a plugin of another backend.
    pub fn module_info(&self) -> Option<&ModuleInfo> {
        self.info.as_ref()
    }
    pub fn priority(&self) -> i32 {
        self.cfg.priority
    }
    pub fn on_error(&self) -> OnError {
        self.cfg.on_error
    }
    pub fn limits(&self) -> &Limits {
        &self.ctx.limits
    }
    pub fn mode(&self) -> InstanceMode {
        self.cfg.mode
    }
    /// The caps of its KV namespace.
    pub fn kv_caps(&self) -> KvCaps {
        self.ctx.kv_caps
    }
    /// The config map the guest reads with `get_config` (introspection hides secret keys).
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.ctx.config
    }
    /// Whether a failure of this guard logs and allows instead of denying.
    pub fn is_advisory(&self) -> bool {
        self.cfg.advisory
    }
    /// Counters since load.
    pub fn stats(&self) -> PluginStats {
        PluginStats {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            instances_created: self.pool.created.load(Ordering::Relaxed),
            instances_recycled: self.pool.recycled.load(Ordering::Relaxed),
        }
    }
    /// Warm instances waiting for a call.
    pub fn idle_instances(&self) -> usize {
        self.pool.idle_len()
    }
}
