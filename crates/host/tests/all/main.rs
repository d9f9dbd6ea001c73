//! Integration tests of the host, one module per feature. Guests are real modules: hand-written WAT
//! here, and SDK-built wasm from `cargo xtask build-examples` in `sdk_guests`.

mod chain;
mod escape;
mod guard_abi;
mod hostile;
mod kv;
mod load;
mod sdk_guests;
mod support;
