//! An MCP gateway that runs chio WebAssembly guards on every agent tool call.
//!
//! ```text
//! agent ──MCP (stdio | streamable HTTP)──▶ Gateway ──tools/call──▶ guards (wasm, blocking pool)
//!                                             │ allow                  │ deny → tool error with the reason
//!                                             ▼
//!                            upstream MCP servers (child processes over stdio | HTTP URLs)
//! ```
//!
//! The configuration is chio's `chio.yaml` with its `wasm_guards[]` block ([`config`]); each guard is
//! verified (signature, digest blocklist, size, SHA-256) before any of its code runs and loaded into
//! the helios host ([`guards`]); evaluations run off the async workers with a bounded queue
//! ([`decide`]); upstreams are rmcp clients whose death or silence becomes a clear error
//! ([`upstream`]); [`server`] is the MCP server agents see.
//!
//! **Invariants:** no tool call reaches an upstream unless every non-advisory guard allowed it; a
//! guard that fails denies unless it is advisory; a reload never leaves a call without a complete
//! guard set (the old set serves until the new one is whole).

pub mod config;
pub mod decide;
pub mod guards;
pub mod ops;
pub mod request;
pub mod run;
pub mod server;
pub mod upstream;

pub use config::{ConfigError, GatewayConfig};
pub use guards::{Decision, DecisionObserver, Guards, Outcome, ReloadListener};
pub use run::{Built, build};
pub use server::Gateway;
