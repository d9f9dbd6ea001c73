//! The single home of every name, number and wire type that helios-plugin guests and hosts share.
//!
//! A guest built with `helios-plugin-abi` and a host built with `helios-plugin-host` agree on the ABI
//! because both read it from here: export and import names ([`abi`]), the hook catalogue ([`hooks`]),
//! default limits ([`limits`]) and the JSON shapes that cross the boundary ([`wire`], [`guard`]).
//!
//! **Invariant:** this crate knows nothing of wasmtime, of I/O or of the guest allocator. It compiles
//! for `wasm32-unknown-unknown` and for the host alike.

pub mod abi;
pub mod guard;
pub mod hooks;
pub mod http;
pub mod limits;
pub mod manifest;
#[cfg(feature = "module-info")]
pub mod module_info;
pub mod section;
pub mod wire;

/// Statement facts (the types only; extraction lives in `helios-plugin-facts`'s features).
pub use helios_plugin_facts as facts;

pub use guard::{GuardRequest, GuardVerdict};
pub use hooks::{Hook, HookId, HookSpec, Phase, Protocol};
pub use limits::Limits;
pub use wire::{HookContext, PostQueryEnvelope, PreQueryResult, QueryContext, QueryOutcome, RouteResult, WithoutFacts};
