//! wat-guard: a chio guard written by hand in WebAssembly text against chio's core ABI, without the
//! SDK (`guard.wat` next to this crate). The crate only carries the text and its tests, which load it
//! in `helios-plugin-host` the way an operator would.

/// The guard's WebAssembly text. `helios_plugin_host::Runtime::load` accepts it as is (wasmtime's
/// `wat` feature); `wat::parse_str` turns it into a binary module for other hosts.
pub const GUARD_WAT: &str = include_str!("../guard.wat");

/// The config key holding the substring to deny.
pub const DENY_SUBSTRING_KEY: &str = "deny_substring";
