//! The one observation point of the call path: after every call, the runtime's [`PluginObserver`]
//! (if one is configured with [`RuntimeConfig::observer`](crate::RuntimeConfig::observer)) is told
//! which plugin ran which export, for how long, how much fuel it burned and how it failed, if it
//! did. Metrics exporters implement it; with no observer nothing is timed.

use std::time::Duration;

use crate::FailureKind;

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
