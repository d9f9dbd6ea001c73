//! The SDK's tests, one binary: the wrappers against the in-process host (`native_host`), the
//! macros' compile-time behaviour (`ui`, trybuild over `tests/ui/`), and real guests built for
//! wasm32 read back the way the host's tooling reads them (`wasm_guests`). Guests come from
//! `cargo xtask build-examples` through `helios_plugin_test_support`; no test here builds a guest.

mod native_host;
mod ui;
mod wasm_guests;
