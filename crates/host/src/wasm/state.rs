//! Per-store host state: who the plugin is (bound at instantiation, never named by the guest), its
//! memory, and the facts of the current call (log counts, the guest's panic message, the limit a
//! grow ran into). The facts are read in one place, `WasmInstance::settle`.

use std::sync::Arc;

use wasmtime::{Memory, ResourceLimiter};

use crate::{backend::PluginContext, error::LimitFault};

/// What happened during one call; reset before each call.
#[derive(Debug, Default)]
pub(crate) struct CallFacts {
    pub logs: u32,
    pub dropped_logs: u32,
    /// The panic message the SDK's panic hook logged, if any.
    pub panic: Option<String>,
    /// Set when the limiter refused a grow.
    pub limit: Option<LimitFault>,
}

/// The data of every `Store` the wasm backend creates.
#[derive(Debug)]
pub(crate) struct HostState {
    pub ctx: Arc<PluginContext>,
    /// Set right after instantiation; `None` while a start function runs.
    pub memory: Option<Memory>,
    pub call: CallFacts,
}

impl HostState {
    pub fn new(ctx: Arc<PluginContext>) -> Self {
        HostState { ctx, memory: None, call: CallFacts::default() }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let limit = self.ctx.limits.max_memory_bytes;
        if desired as u64 > limit {
            let fault = LimitFault::Memory { requested: desired as u64, limit };
            self.call.limit = Some(fault);
            return Err(wasmtime::Error::new(fault));
        }
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

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }
}
