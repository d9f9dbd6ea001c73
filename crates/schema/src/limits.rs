//! Default limits, defined once. Hosts may change every one of them per plugin.

use std::time::Duration;

/// Fuel per call (≈ wasm instructions). Default: 10,000,000.
pub const DEFAULT_FUEL: u64 = 10_000_000;
/// Wall-clock deadline per call, enforced by epoch interruption. Default: 100 ms.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(100);
/// Linear memory per instance. Default: 16 MiB.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 16 << 20;
/// Table elements per instance. Default: 10,000.
pub const DEFAULT_MAX_TABLE_ELEMENTS: u64 = 10_000;
/// Module size, checked before compiling. Default: 10 MiB.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 10 << 20;
/// A pooled instance is discarded after this many calls. Default: 100,000.
pub const DEFAULT_RECYCLE_AFTER_CALLS: u64 = 100_000;
/// A pooled instance whose memory grew past this is discarded after the call. Default: 8 MiB.
pub const DEFAULT_RECYCLE_MEMORY_BYTES: u64 = 8 << 20;
/// Warm instances kept per plugin. Default: 16.
pub const DEFAULT_MAX_IDLE_INSTANCES: usize = 16;
/// Priority of a plugin in a chain; lower runs first. Default: 1000.
pub const DEFAULT_PRIORITY: i32 = 1000;

/// One KV value. Default: 64 KiB.
pub const KV_MAX_VALUE_BYTES: usize = 64 << 10;
/// One KV key. Default: 1 KiB.
pub const KV_MAX_KEY_BYTES: usize = 1 << 10;
/// Keys per plugin. Default: 1024.
pub const KV_MAX_KEYS: usize = 1024;
/// Bytes (keys + values) per plugin. Default: 64 MiB.
pub const KV_MAX_TOTAL_BYTES: usize = 64 << 20;

/// One guest log message; longer ones are truncated. Default: 4096 bytes.
pub const LOG_MAX_MESSAGE_BYTES: usize = 4096;
/// Log entries per call; further ones are dropped and counted. Default: 256.
pub const LOG_MAX_ENTRIES_PER_CALL: u32 = 256;
/// Largest read of a content bundle (`fetch-blob`, `bundle-handle.read`). Default: 64 KiB.
pub const BUNDLE_READ_MAX_BYTES: u32 = 64 << 10;
/// Bundle handles a guard may open in one evaluation (a flood beyond fails the call). Default: 64.
pub const BUNDLE_OPENS_MAX_PER_CALL: usize = 64;
/// Size of the buffer the host offers `chio_deny_reason`. Default: 4096 bytes.
pub const DENY_REASON_BUFFER_BYTES: u32 = 4096;
/// Largest JSON result a hook may return. Default: 4 MiB.
pub const MAX_RESULT_BYTES: u32 = 4 << 20;

/// The per-plugin limits a host applies to every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per call; `None` turns metering off for the plugin. Default: [`DEFAULT_FUEL`].
    pub fuel: Option<u64>,
    /// Wall-clock deadline per call. Default: [`DEFAULT_DEADLINE`].
    pub deadline: Duration,
    /// Linear memory cap. Default: [`DEFAULT_MAX_MEMORY_BYTES`].
    pub max_memory_bytes: u64,
    /// Table elements cap. Default: [`DEFAULT_MAX_TABLE_ELEMENTS`].
    pub max_table_elements: u64,
    /// Module size cap. Default: [`DEFAULT_MAX_MODULE_BYTES`].
    pub max_module_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: Some(DEFAULT_FUEL),
            deadline: DEFAULT_DEADLINE,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_table_elements: DEFAULT_MAX_TABLE_ELEMENTS,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
        }
    }
}
