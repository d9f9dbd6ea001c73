//! Integration tests of the host, one module per feature, in one binary. Guests are real modules:
//! hand-written WAT, and SDK-built wasm that `cargo xtask build-examples` built before the tests run
//! (`helios_plugin_test_support::guest`); no test starts cargo.

mod chain;
mod component;
mod escape;
mod guard_abi;
mod guest_every_hook;
mod guest_misbehave;
mod kv;
mod load;
mod reload;
mod sdk_guests;
mod support;
