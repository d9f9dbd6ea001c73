//! The one observation point of the call path: after every call, the runtime's [`PluginObserver`]
//! (if one is configured with [`RuntimeConfig::observer`](crate::RuntimeConfig::observer)) is told
//! which plugin ran which export, for how long, how much fuel it burned and how it failed, if it
//! did. Metrics exporters implement it; with no observer nothing is timed.

use std::time::{Duration, Instant};

use helios_plugin_schema::abi;

use crate::FailureKind;

/// The host functions a call's [`HostCalls`] times, in slot order (the import's field name, as
/// chio's `host_function` label says it).
pub const HOST_FUNCTIONS: [&str; HOST_FUNCTION_COUNT] = [
    abi::KV_GET,
    abi::KV_SET,
    abi::KV_DELETE,
    abi::KV_ADD,
    abi::KV_CAS,
    abi::SHA256_HEX,
    abi::LOG,
    abi::GET_CONFIG,
    abi::GET_TIME_UNIX_SECS,
    abi::BUNDLE_OPEN,
    abi::FETCH_BLOB,
];
const HOST_FUNCTION_COUNT: usize = 11;

/// One host function's share of one call: how often the guest called it and the time spent in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCallTime {
    pub calls: u32,
    pub total: Duration,
}

/// Per-host-function accumulators of one call: a fixed array in the store's data, so timing a
/// host import allocates nothing. Timed only when the runtime has an observer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCalls {
    slots: [HostCallTime; HOST_FUNCTION_COUNT],
}

impl HostCalls {
    /// The host functions called during the call, with their counts and total time.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, HostCallTime)> + '_ {
        HOST_FUNCTIONS.iter().zip(self.slots.iter()).filter(|(_, t)| t.calls > 0).map(|(f, t)| (*f, *t))
    }

    /// Whether no host function was called.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|t| t.calls == 0)
    }

    /// Adds one call of host function `slot` (an index into [`HOST_FUNCTIONS`]) that started at `since`.
    pub(crate) fn record(&mut self, slot: usize, since: Instant) {
        if let Some(t) = self.slots.get_mut(slot) {
            t.calls += 1;
            t.total += since.elapsed();
        }
    }

    /// The slot of a host function by its field name.
    pub(crate) const fn slot(name: &str) -> usize {
        let mut i = 0;
        while i < HOST_FUNCTION_COUNT {
            if const_eq(HOST_FUNCTIONS[i], name) {
                return i;
            }
            i += 1;
        }
        panic!("not a timed host function")
    }
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// One finished call, as the host saw it.
#[derive(Debug, Clone, Copy)]
pub struct CallEvent<'a> {
    /// The plugin's configured name.
    pub plugin: &'a str,
    /// Lowercase hex SHA-256 of the module, when the plugin is a wasm module.
    pub digest: Option<&'a str>,
    /// The export called: a hook's name or `evaluate`.
    pub export: &'a str,
    /// Wall-clock time of the call, instance checkout and check-in included.
    pub duration: Duration,
    /// Fuel the call consumed, when the backend meters fuel and an instance ran.
    pub fuel_consumed: Option<u64>,
    /// Why the call failed, or `None` when it returned a result.
    pub failure: Option<&'a FailureKind>,
    /// The host functions the guest called during the call, with counts and time (empty for a
    /// backend that does not time its imports).
    pub host_calls: &'a HostCalls,
}

/// Told about every call of every plugin of a runtime. Called on the calling thread right after
/// the call: keep it cheap and never block.
pub trait PluginObserver: Send + Sync + std::fmt::Debug {
    fn call_finished(&self, event: &CallEvent<'_>);
}

/// A short, stable name of a failure's cause (a metric label): `fuel`, `deadline`, `memory`,
/// `table`, `stack`, `panic`, `trap`, `import`, `bad_result`, `bad_verdict`, `not_served`,
/// `instantiate`.
pub fn failure_cause(kind: &FailureKind) -> &'static str {
    match kind {
        FailureKind::FuelExhausted { .. } => "fuel",
        FailureKind::DeadlineExceeded { .. } => "deadline",
        FailureKind::MemoryLimit { .. } => "memory",
        FailureKind::TableLimit { .. } => "table",
        FailureKind::StackOverflow => "stack",
        FailureKind::GuestPanic { .. } => "panic",
        FailureKind::Trap { .. } => "trap",
        FailureKind::BadImportCall { .. } => "import",
        FailureKind::BadResult { .. } => "bad_result",
        FailureKind::BadVerdict { .. } => "bad_verdict",
        FailureKind::NotServed { .. } => "not_served",
        FailureKind::Instantiate { .. } => "instantiate",
    }
}
