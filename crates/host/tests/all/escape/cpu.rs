//! CPU, stack and time: fuel, the wall-clock deadline, deep recursion.

use std::time::Duration;

use helios_plugin_host::PluginConfig;
use helios_plugin_schema::GuardRequest;

use super::{assert_policies, both, hostile, same};
use crate::support::runtime;

#[test]
fn deep_recursion_is_a_named_stack_overflow_under_every_policy() {
    let (rt, _) = runtime();
    let extra =
        "(func $r (param i32) (result i32) (i32.add (call $r (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))";
    let wat = both("", extra, "(drop (call $r (i32.const 0)))");
    assert_policies(&rt, wat.as_bytes(), "recursion", same, "call stack exhausted");
}

#[test]
fn fuel_exhaustion_is_named_under_every_policy() {
    let (rt, _) = runtime();
    let wat = both("", "", "(loop (br 0))");
    assert_policies(&rt, wat.as_bytes(), "spin", |c| c.fuel(Some(100_000)), "fuel exhausted (limit 100000 per call)");
    // The instance that ran out of fuel is not pooled.
    let p = rt.load(wat.as_bytes(), PluginConfig::new("spin-pool").fuel(Some(100_000))).unwrap();
    assert!(!p.evaluate(&GuardRequest::default()).is_allow());
    assert_eq!(p.idle_instances(), 0, "a failed instance must not go back to the pool");
}

#[test]
fn an_unmetered_busy_loop_of_host_calls_is_stopped_by_the_deadline_under_every_policy() {
    let (rt, _) = runtime();
    let imports = r#"(import "env" "sha256_hex" (func $sha (param i32 i32 i32) (result i32)))"#;
    let wat = both(imports, "", "(loop (drop (call $sha (i32.const 0) (i32.const 65536) (i32.const 1024))) (br 0))");
    let started = std::time::Instant::now();
    assert_policies(
        &rt,
        wat.as_bytes(),
        "stall",
        |c| c.fuel(None).deadline(Duration::from_millis(20)),
        "deadline exceeded (limit 20 ms per call)",
    );
    // Four calls hit the deadline; none may run much past it.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deadline did not stop the guest: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_rust_guest_that_spins_is_stopped_by_fuel_under_every_policy() {
    let (rt, _) = runtime();
    // The deadline is generous so that only fuel can stop it, however loaded the machine.
    let cfg = |c: PluginConfig| c.config("attack", "spin").fuel(Some(1_000_000)).deadline(Duration::from_secs(10));
    assert_policies(&rt, &hostile("hostile-raw"), "raw-spin", cfg, "fuel exhausted (limit 1000000 per call)");
}
