//! Everything about a plugin that can be known without running it: its module's imports, exports and
//! self-declared hooks ([`module_info`]).
//!
//! **Invariant:** this crate never executes guest code and knows nothing of wasmtime; it reads bytes.

pub mod module_info;

pub use module_info::{ModuleInfo, ModuleInfoError};
