//! Runs helios-plugin WebAssembly plugins under fuel, memory and time limits.
//!
//! ```
//! use helios_plugin_host::{Chain, PluginConfig, Runtime, RuntimeConfig};
//! use helios_plugin_host::schema::{GuardRequest, Hook, PreQueryResult, QueryContext};
//!
//! // A guard (chio's convention) that denies every call, and a hook plugin (HeliosProxy's) that
//! // blocks every statement; real plugins are built with the SDK, these are written by hand.
//! let guard = r#"(module (memory (export "memory") 1)
//!     (func (export "evaluate") (param i32 i32) (result i32) (i32.const 1)))"#;
//! let blocker = r#"(module (memory (export "memory") 1)
//!     (data (i32.const 1024) "{\"kind\":\"block\",\"reason\":\"no\"}")
//!     (func (export "alloc") (param i32) (result i32) (i32.const 4096))
//!     (func (export "pre_query") (param i32 i32) (result i64) (i64.const 0x000004000000001e)))"#;
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let guard = runtime.load(guard.as_bytes(), PluginConfig::new("deny-all"))?;
//! let verdict = guard.evaluate(&GuardRequest { tool_name: "rm".into(), ..Default::default() });
//! assert!(!verdict.is_allow());
//!
//! let blocker = runtime.load(blocker.as_bytes(), PluginConfig::new("blocker").hooks([Hook::PreQuery]))?;
//! let chain = Chain::new(vec![blocker]);
//! let outcome = chain.pre_query(&QueryContext { query: "DROP TABLE t".into(), ..Default::default() });
//! assert_eq!(outcome.result, PreQueryResult::Block { reason: "no".into() });
//! assert_eq!(outcome.decided_by.as_deref(), Some("blocker"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! One [`Runtime`] holds one wasmtime `Engine` (pooling allocator, fuel metering, epoch deadlines)
//! and one linker with the import surface. [`Runtime::load`] checks the size cap and the import
//! surface before compiling, compiles each distinct module once and pre-links an instance template.
//! A [`Plugin`] keeps warm instances and recycles them by policy; a [`Chain`] calls plugins in
//! priority order with their `on_error` policies. Other ways of running plugin code (a component, a
//! script) implement [`Backend`] and load with [`Runtime::load_backend`].
//!
//! **Invariants:** nothing a guest does (pointers, lengths, return values, traps, loops, memory
//! growth) panics the host or reaches another plugin's state; an instance that failed is never reused;
//! every failure names the plugin and its cause.

pub mod backend;
pub mod bundle;
mod call;
mod chain;
mod component;
mod error;
mod http_chain;
mod load;
mod observe;
mod plugin;
mod pool;
pub mod reload;
mod runtime;
mod services;
mod wasm;

pub use backend::{Backend, BackendInstance, PluginContext};
pub use bundle::{BundleError, BundleStore, ContentId, DirBundleStore, MemoryBundleStore};
pub use call::EvalTrace;
pub use chain::{CallObserver, Chain, PreQueryOutcome, RouteOutcome};
pub use error::{FailureKind, LoadError, PluginError};
pub use http_chain::HttpOutcome;
pub use observe::{CallEvent, HOST_FUNCTIONS, HostCallTime, HostCalls, PluginObserver, failure_cause};
pub use plugin::{InstanceMode, OnError, Plugin, PluginConfig, PluginStats};
pub use reload::{
    Answered, CANARY_FIXTURE_COUNT, CanaryCorpus, CanaryFailure, CanaryMismatch, DebouncedReload, HotPlugin,
    HotReloadError, OpenGate, ReloadGate, ReloadOutcome, ShadowStats,
};
pub use runtime::{
    DEFAULT_EPOCH_TICK, DEFAULT_LINEAR_MEMORY_KEEP_RESIDENT, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PLUGIN_MEMORY_BYTES,
    DEFAULT_MAX_WASM_STACK, Runtime, RuntimeConfig,
};
pub use services::{
    Clock, KvBackend, KvCaps, KvError, Level, LogSink, ManualClock, MemoryKv, MemoryLogSink, SystemClock,
};

pub use helios_plugin_schema as schema;

#[cfg(test)]
mod tests {
    /// Hosts share plugins and chains across threads.
    #[test]
    fn public_types_are_send_and_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<crate::Runtime>();
        assert::<crate::Plugin>();
        assert::<crate::Chain>();
        assert::<crate::PluginError>();
    }
}
