//! Runs helios-plugin WebAssembly plugins under fuel, memory and time limits.
//!
//! ```no_run
//! use helios_plugin_host::{Runtime, RuntimeConfig, PluginConfig};
//! use helios_plugin_schema::GuardRequest;
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let wasm = std::fs::read("tool_denylist.wasm")?;
//! let guard = runtime.load(&wasm, PluginConfig::new("tool-denylist").config("denylist", "rm,curl"))?;
//! let verdict = guard.evaluate(&GuardRequest { tool_name: "rm".into(), ..Default::default() });
//! assert!(!verdict.is_allow());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! One [`Runtime`] holds one wasmtime `Engine` (pooling allocator, fuel metering, epoch deadlines)
//! and one linker with the import surface. [`Runtime::load`] checks the size cap and the import
//! surface before compiling, compiles each distinct module once and pre-links an instance template.
//! A [`Plugin`] keeps warm instances and recycles them by policy; a [`Chain`] calls plugins in
//! priority order with their `on_error` policies.
//!
//! **Invariants:** nothing a guest does (pointers, lengths, return values, traps, loops, memory
//! growth) panics the host or reaches another plugin's state; an instance that failed is never reused;
//! every failure names the plugin and its cause.

mod cache;
mod chain;
pub mod config;
mod error;
mod imports;
mod plugin;
mod runtime;
mod services;
mod state;

pub use chain::{Chain, PreQueryOutcome, RouteOutcome};
pub use error::{FailureKind, LoadError, PluginError};
pub use plugin::{InstanceMode, OnError, Plugin, PluginConfig, PluginStats};
pub use runtime::{
    DEFAULT_EPOCH_TICK, DEFAULT_LINEAR_MEMORY_KEEP_RESIDENT, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PLUGIN_MEMORY_BYTES,
    DEFAULT_MAX_WASM_STACK, Runtime, RuntimeConfig,
};
pub use services::{Clock, KvBackend, KvError, Level, LogSink, ManualClock, MemoryKv, MemoryLogSink, SystemClock};

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
