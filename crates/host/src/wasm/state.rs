//! Per-store host state: who the plugin is (bound at instantiation, never named by the guest), its
//! memory, and the facts of the current call (log counts, the guest's panic message, the limit a
//! grow ran into). The facts are read in one place, `WasmInstance::settle`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use helios_plugin_schema::{abi, limits};
use wasmtime::{Memory, ResourceLimiter};

use crate::{HostCalls, backend::PluginContext, bundle::OpenBundles, error::LimitFault, services::Level};

/// What happened during one call; reset before each call.
#[derive(Debug, Default)]
pub(crate) struct CallFacts {
    pub logs: u32,
    pub dropped_logs: u32,
    /// The panic message the SDK's panic hook logged, if any.
    pub panic: Option<String>,
    /// Set when the limiter refused a grow.
    pub limit: Option<LimitFault>,
    /// When the call was armed (WASI modules only): WASI's `poll_oneoff` sleeps at most until the deadline.
    pub armed_at: Option<Instant>,
}

impl CallFacts {
    /// What is left of `deadline` since the call was armed.
    pub fn deadline_left(&self, deadline: Duration) -> Duration {
        self.armed_at.map_or(deadline, |t| deadline.saturating_sub(t.elapsed()))
    }
}

impl CallFacts {
    /// One guest log line, under the per-call caps (lines over [`limits::LOG_MAX_ENTRIES_PER_CALL`]
    /// are counted and dropped, each cut at [`limits::LOG_MAX_MESSAGE_BYTES`]). An error line
    /// starting with the SDK's panic prefix is the call's panic message (never dropped). Shared by
    /// every backend that runs guest code (core modules, components, WASI stdout/stderr).
    pub fn log(&mut self, ctx: &PluginContext, level: Level, bytes: &[u8]) {
        let panic = level == Level::Error && bytes.starts_with(abi::PANIC_LOG_PREFIX.as_bytes());
        if self.logs >= limits::LOG_MAX_ENTRIES_PER_CALL && !panic {
            self.dropped_logs += 1;
            return;
        }
        self.logs += 1;
        let bytes = &bytes[..bytes.len().min(limits::LOG_MAX_MESSAGE_BYTES)];
        let msg = String::from_utf8_lossy(bytes);
        if panic {
            self.panic = Some(msg[abi::PANIC_LOG_PREFIX.len()..].to_owned());
        }
        ctx.log(level, &msg);
    }
}

/// The data of every `Store` the wasm backend creates.
#[derive(Debug)]
pub(crate) struct HostState {
    pub ctx: Arc<PluginContext>,
    /// Set right after instantiation; `None` while a start function runs.
    pub memory: Option<Memory>,
    pub call: CallFacts,
    /// The content bundles opened in the current call.
    pub bundles: OpenBundles,
    /// The WASI preview 1 context of a module that imports it (see `wasm::wasi`), made per instance.
    pub wasi: Option<Box<super::wasi::WasiState>>,
    /// The buffer the host encodes each call's JSON input into (kept across calls, see
    /// `BackendInstance::take_scratch`).
    pub scratch: Vec<u8>,
    /// Time the host imports (the runtime has an observer); the accumulators are reset per call.
    pub time_host_calls: bool,
    pub host_calls: HostCalls,
}

impl HostState {
    pub fn new(ctx: Arc<PluginContext>) -> Self {
        let time_host_calls = ctx.observer.is_some();
        HostState {
            ctx,
            memory: None,
            call: CallFacts::default(),
            bundles: OpenBundles::default(),
            wasi: None,
            scratch: Vec::new(),
            time_host_calls,
            host_calls: HostCalls::default(),
        }
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
