//! Typed errors: [`LoadError`] (a module that never becomes a plugin) and [`PluginError`] (one call
//! that failed). Both name the plugin; both say what was expected and what was found.

use std::{sync::Arc, time::Duration};

/// Why a module could not be loaded. Nothing of the module ran.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("plugin \"{plugin}\": module is {size} bytes, over the {limit}-byte cap")]
    TooLarge { plugin: String, size: u64, limit: u64 },
    #[error("plugin \"{plugin}\": {detail}")]
    Malformed { plugin: String, detail: String },
    #[error("plugin \"{plugin}\": import {module}.{field} is not part of the host surface (allowed: {allowed})")]
    ForbiddenImport { plugin: String, module: String, field: String, allowed: String },
    #[error("plugin \"{plugin}\": import {module}.{field} has the wrong type: expected {expected}, found {found}")]
    ImportType { plugin: String, module: String, field: String, expected: String, found: String },
    #[error("plugin \"{plugin}\": a component must declare wit_world {expected:?} in its manifest, found {found}")]
    WitWorld { plugin: String, expected: &'static str, found: String },
    #[error("plugin \"{plugin}\": component imports {import}, which this host does not serve (allowed: {allowed})")]
    ComponentImport { plugin: String, import: String, allowed: String },
    #[error("plugin \"{plugin}\": export {export} {problem}")]
    Export { plugin: String, export: String, problem: String },
    #[error("plugin \"{plugin}\": module serves neither a hook of the catalogue nor the guard export `evaluate`")]
    NothingServed { plugin: String },
    #[error("plugin \"{plugin}\": {what} is {value}, over the runtime's maximum of {max}")]
    LimitOverRuntime { plugin: String, what: &'static str, value: u64, max: u64 },
    #[error("plugin \"{plugin}\": compile failed: {detail}")]
    Compile { plugin: String, detail: String },
    #[error("plugin \"{plugin}\": cannot read {path}: {source}")]
    Io { plugin: String, path: String, source: std::io::Error },
    #[error("runtime: {0}")]
    Runtime(String),
}

/// What went wrong in one call. The instance that failed is discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The call used all its fuel.
    FuelExhausted { limit: u64 },
    /// The call ran past its wall-clock deadline.
    DeadlineExceeded { deadline: Duration },
    /// The guest tried to grow its memory past the cap.
    MemoryLimit { requested: u64, limit: u64 },
    /// The guest tried to grow a table past the cap.
    TableLimit { requested: u64, limit: u64 },
    /// The guest's call stack overflowed.
    StackOverflow,
    /// The guest panicked; the message came through the SDK's panic hook.
    GuestPanic { message: String },
    /// Any other trap.
    Trap { message: String },
    /// The guest handed a pointer/length to an import that is outside its memory, or otherwise
    /// misused an import.
    BadImportCall { import: String, detail: String },
    /// An export returned something the host cannot use (bad pointer, bad length, bad JSON).
    BadResult { export: String, detail: String },
    /// `evaluate` returned a code other than 0 or 1.
    BadVerdict { code: i32 },
    /// The plugin does not serve what was asked.
    NotServed { export: String },
    /// An instance could not be created.
    Instantiate { detail: String },
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureKind::FuelExhausted { limit } => write!(f, "fuel exhausted (limit {limit} per call)"),
            FailureKind::DeadlineExceeded { deadline } => {
                write!(f, "deadline exceeded (limit {} ms per call)", deadline.as_millis())
            }
            FailureKind::MemoryLimit { requested, limit } => {
                write!(f, "memory limit: grow to {requested} bytes refused (cap {limit} bytes)")
            }
            FailureKind::TableLimit { requested, limit } => {
                write!(f, "table limit: grow to {requested} elements refused (cap {limit})")
            }
            FailureKind::StackOverflow => f.write_str("call stack exhausted (deep recursion)"),
            FailureKind::GuestPanic { message } => write!(f, "guest panicked: {message}"),
            FailureKind::Trap { message } => write!(f, "trapped: {message}"),
            FailureKind::BadImportCall { import, detail } => write!(f, "bad call to import {import}: {detail}"),
            FailureKind::BadResult { export, detail } => write!(f, "bad result from export {export}: {detail}"),
            FailureKind::BadVerdict { code } => {
                write!(f, "evaluate returned {code}, expected 0 (allow) or 1 (deny)")
            }
            FailureKind::NotServed { export } => write!(f, "module does not export {export}"),
            FailureKind::Instantiate { detail } => write!(f, "cannot instantiate: {detail}"),
        }
    }
}

/// One failed call, naming the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub plugin: Arc<str>,
    pub kind: FailureKind,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin \"{}\": {}", self.plugin, self.kind)
    }
}

impl std::error::Error for PluginError {}

/// Raised inside a host import when the guest misuses it; turned into a trap, then into
/// [`FailureKind::BadImportCall`].
#[derive(Debug)]
pub(crate) struct ImportFault {
    pub import: &'static str,
    pub detail: String,
}

impl std::fmt::Display for ImportFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.import, self.detail)
    }
}

impl std::error::Error for ImportFault {}

/// Raised by the resource limiter when a grow goes past the cap.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LimitFault {
    Memory { requested: u64, limit: u64 },
    Table { requested: u64, limit: u64 },
}

impl std::fmt::Display for LimitFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitFault::Memory { requested, limit } => write!(f, "memory grow to {requested} over cap {limit}"),
            LimitFault::Table { requested, limit } => write!(f, "table grow to {requested} over cap {limit}"),
        }
    }
}

impl std::error::Error for LimitFault {}
