//! Starlark script plugins in yorishiro's model.
//!
//! A script subscribes from its top level with `register_hook(protocol, event, fn, phase=...)`.
//! [`ScriptPlugin::load`] runs that top level under the plugin's budget and checks every
//! registration against the host's [`HostHooks`]; [`ScriptPlugin::call`] runs one hook with a
//! JSON-shaped `msg` (mutated in place) and a `ctx`, and answers a [`Verdict`].
//!
//! A loaded script becomes a host plugin through [`ScriptBackend`] (the host's `Backend` trait), so
//! it runs in the same chain as wasm modules, under the same failure policy and counters.
//!
//! Scripts have no filesystem, network or environment: besides the Starlark builtins and `json`,
//! they see only `register_hook` and the modules `state`, `store`, `config` (their `vars`,
//! frozen), `action`, `crypto` and `proxy`.

pub mod backend;
pub mod catalogue;
pub mod config;
mod engine;
pub mod state;
mod value;

pub use backend::{ScriptBackend, serve_http_hook};
pub use catalogue::{HookPoint, HostHooks, Phase};
pub use config::{MIGRATION_MESSAGE, OnError, PluginEntry, parse_plugins};
pub use engine::{
    CALL_DEADLINE, Cause, HookContext, MAX_CALL_DEPTH, MAX_HEAP_BYTES, Registration, Respond, ScriptError,
    ScriptPlugin, Services, Verdict, globals,
};
pub use state::{KvStore, MemoryStore, PluginStore, Scope, SqliteStore, StateRegistry};
