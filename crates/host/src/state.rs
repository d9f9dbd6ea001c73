//! Per-store host state: who the plugin is (bound at instantiation, never named by the guest), its
//! memory, its limits, and what happened during the current call.

use std::{collections::BTreeMap, sync::Arc};

use helios_plugin_schema::Limits;
use wasmtime::{Memory, ResourceLimiter};

use crate::{
    error::LimitFault,
    services::{Clock, KvBackend, LogSink},
};

/// Everything a plugin's instances share; immutable after load.
#[derive(Debug)]
pub(crate) struct PluginShared {
    pub name: Arc<str>,
    pub config: BTreeMap<String, String>,
    pub limits: Limits,
    pub kv: Arc<dyn KvBackend>,
    pub clock: Arc<dyn Clock>,
    pub log_sink: Option<Arc<dyn LogSink>>,
}

/// What happened during one call; reset before each call.
#[derive(Debug, Default)]
pub(crate) struct CallState {
    pub logs: u32,
    pub dropped_logs: u32,
    /// The panic message the SDK's panic hook logged, if any.
    pub panic: Option<String>,
    /// Set when the limiter refused a grow.
    pub limit: Option<LimitFault>,
}

/// The data of every `Store` the host creates.
#[derive(Debug)]
pub(crate) struct HostState {
    pub shared: Arc<PluginShared>,
    /// Set right after instantiation; `None` while a start function runs.
    pub memory: Option<Memory>,
    pub call: CallState,
}

impl HostState {
    pub fn new(shared: Arc<PluginShared>) -> Self {
        HostState { shared, memory: None, call: CallState::default() }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let limit = self.shared.limits.max_memory_bytes;
        if desired as u64 > limit {
            let fault = LimitFault::Memory { requested: desired as u64, limit };
            self.call.limit = Some(LimitFault::Memory { requested: desired as u64, limit });
            return Err(wasmtime::Error::new(fault));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let limit = self.shared.limits.max_table_elements;
        if desired as u64 > limit {
            let fault = LimitFault::Table { requested: desired as u64, limit };
            self.call.limit = Some(LimitFault::Table { requested: desired as u64, limit });
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
