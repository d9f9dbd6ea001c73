//! The fuzz-smoke tests, one binary: every fuzz target over its seed corpus (`smoke`) and the
//! two-thread load test (`load`). Guests come from `cargo xtask build-examples` (through
//! `helios_plugin_test_support`); no test starts cargo.
//!
//! Every test holds [`serial`] while it runs: the load test measures this process's resident set,
//! which a test running beside it would move.

mod load;
mod smoke;

use std::sync::{Mutex, MutexGuard};

/// One test at a time in this binary (a failed test does not poison the others).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
