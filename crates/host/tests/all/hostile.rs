//! Guests that loop, stall, grow, recurse, panic or hand over bad pointers: each gets the verdict its
//! policy says, an error naming the cause and the plugin, and leaves the host running.

use std::time::{Duration, Instant};

use helios_plugin_host::{FailureKind, Plugin, PluginConfig};
use helios_plugin_schema::{GuardVerdict, Hook, QueryContext, hooks::spec};

use crate::support::{guard, runtime, scripted_hook};

fn denied_because(p: &Plugin, needle: &str) -> String {
    match p.evaluate(&Default::default()) {
        GuardVerdict::Deny { reason } => {
            assert!(reason.contains(needle), "reason {reason:?} does not mention {needle:?}");
            assert!(reason.contains(&format!("\"{}\"", p.name())), "reason {reason:?} does not name the guard");
            reason
        }
        GuardVerdict::Allow => panic!("{} was allowed", p.name()),
    }
}

/// After a failure the plugin still works with a fresh instance when its input is benign, and the
/// runtime serves other plugins.
fn host_intact(rt: &helios_plugin_host::Runtime) {
    let ok = rt.load(guard("", "(i32.const 0)").as_bytes(), PluginConfig::new("healthy")).unwrap();
    assert_eq!(ok.evaluate(&Default::default()), GuardVerdict::Allow);
}

#[test]
fn an_infinite_loop_is_denied_naming_fuel() {
    let (rt, _) = runtime();
    let p = rt.load(guard("", "(loop (br 0)) (i32.const 0)").as_bytes(), PluginConfig::new("spin")).unwrap();
    denied_because(&p, "fuel exhausted");
    assert_eq!(p.idle_instances(), 0, "a failed instance must not go back to the pool");
    host_intact(&rt);
}

#[test]
fn a_loop_of_slow_host_calls_is_denied_naming_the_deadline() {
    let (rt, _) = runtime();
    let imports = r#"(import "env" "sha256_hex" (func $sha (param i32 i32 i32) (result i32)))"#;
    let body = "(loop (drop (call $sha (i32.const 0) (i32.const 1048576) (i32.const 1024))) (br 0)) (i32.const 0)";
    let p = rt
        .load(guard(imports, body).as_bytes(), PluginConfig::new("slow").deadline(Duration::from_millis(50)))
        .unwrap();
    let t = Instant::now();
    let reason = denied_because(&p, "deadline exceeded");
    assert!(reason.contains("50 ms"), "{reason}");
    assert!(t.elapsed() < Duration::from_secs(5), "the deadline did not stop the guest: {:?}", t.elapsed());
    host_intact(&rt);
}

#[test]
fn growing_memory_past_the_cap_is_denied() {
    let (rt, _) = runtime();
    // 32 pages (2 MiB) initially; ask for 1000 more pages (64 MiB) against a 16 MiB cap.
    let p = rt
        .load(guard("", "(drop (memory.grow (i32.const 1000))) (i32.const 0)").as_bytes(), PluginConfig::new("grow"))
        .unwrap();
    denied_because(&p, "memory limit");
    // Under the cap is fine.
    let small = rt
        .load(guard("", "(drop (memory.grow (i32.const 16))) (i32.const 0)").as_bytes(), PluginConfig::new("grow-ok"))
        .unwrap();
    assert_eq!(small.evaluate(&Default::default()), GuardVerdict::Allow);
    host_intact(&rt);
}

#[test]
fn an_initial_memory_over_the_cap_fails_to_instantiate_naming_the_limit() {
    let (rt, _) = runtime();
    let wat = r#"(module (memory (export "memory") 512) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#;
    let p = rt.load(wat.as_bytes(), PluginConfig::new("fat")).unwrap();
    denied_because(&p, "memory limit");
}

#[test]
fn deep_recursion_is_denied() {
    let (rt, _) = runtime();
    let wat = r#"(module (memory (export "memory") 1)
      (func $r (param i32) (result i32) (i32.add (call $r (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
      (func (export "evaluate") (param i32 i32) (result i32) (call $r (i32.const 0))))"#;
    let p = rt.load(wat.as_bytes(), PluginConfig::new("deep")).unwrap();
    denied_because(&p, "call stack exhausted");
    host_intact(&rt);
}

#[test]
fn growing_a_table_past_the_cap_is_denied() {
    let (rt, _) = runtime();
    let wat = r#"(module (memory (export "memory") 1) (table 1 funcref)
      (func (export "evaluate") (param i32 i32) (result i32) (drop (table.grow (ref.null func) (i32.const 100000))) (i32.const 0)))"#;
    let p = rt.load(wat.as_bytes(), PluginConfig::new("tables")).unwrap();
    denied_because(&p, "table limit");
}

#[test]
fn a_start_function_that_loops_fails_the_call_naming_fuel() {
    let (rt, _) = runtime();
    let wat = r#"(module (memory (export "memory") 1) (func $s (loop (br 0))) (start $s)
      (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#;
    let p = rt.load(wat.as_bytes(), PluginConfig::new("start-loop")).unwrap();
    denied_because(&p, "fuel exhausted");
    host_intact(&rt);
}

#[test]
fn a_panic_reported_through_the_log_is_the_named_cause_and_reaches_the_log() {
    let (rt, sink) = runtime();
    let msg = "guest panicked: boom at src/lib.rs:3:5";
    let imports = r#"(import "chio" "log" (func $log (param i32 i32 i32)))"#;
    let body = format!("(call $log (i32.const 4) (i32.const 1024) (i32.const {})) unreachable", msg.len());
    let wat = guard(imports, &body).replace(
        "(memory (export \"memory\") 32)",
        &format!("(memory (export \"memory\") 32) {}", crate::support::data(1024, msg)),
    );
    let p = rt.load(wat.as_bytes(), PluginConfig::new("panicky")).unwrap();
    let reason = denied_because(&p, "boom at src/lib.rs:3:5");
    assert!(reason.contains("guest panicked"), "{reason}");
    assert!(
        sink.lines().iter().any(|(plugin, _, m)| plugin == "panicky" && m.contains("boom")),
        "log: {:?}",
        sink.lines()
    );
}

/// One module per (import, argument set) that hands the import a range outside memory.
#[test]
fn out_of_bounds_pointers_and_lengths_to_every_import_are_errors_naming_the_import() {
    let far = "(i32.const 0x7fff0000)";
    let neg = "(i32.const -1)";
    let z = "(i32.const 0)";
    let n8 = "(i32.const 8)";
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "env.kv_get",
            r#"(import "env" "kv_get" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {far} {n8} {z} {n8}))"),
        ),
        (
            "env.kv_get",
            r#"(import "env" "kv_get" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {n8} {z} {neg}))"),
        ),
        (
            "env.kv_set",
            r#"(import "env" "kv_set" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {neg} {z} {n8}))"),
        ),
        (
            "env.kv_set",
            r#"(import "env" "kv_set" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {n8} {far} {n8}))"),
        ),
        (
            "env.kv_delete",
            r#"(import "env" "kv_delete" (func $f (param i32 i32) (result i32)))"#,
            format!("(drop (call $f {far} {far}))"),
        ),
        (
            "env.sha256_hex",
            r#"(import "env" "sha256_hex" (func $f (param i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {neg} {z}))"),
        ),
        (
            "env.sha256_hex",
            r#"(import "env" "sha256_hex" (func $f (param i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {n8} (i32.const 2097150)))"),
        ),
        (
            "chio.log",
            r#"(import "chio" "log" (func $f (param i32 i32 i32)))"#,
            format!("(call $f (i32.const 2) {far} {n8})"),
        ),
        (
            "chio.log",
            r#"(import "chio" "log" (func $f (param i32 i32 i32)))"#,
            format!("(call $f (i32.const 2) {z} (i32.const -2147483648))"),
        ),
        (
            "chio.get_config",
            r#"(import "chio" "get_config" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {neg} {n8} {z} {n8}))"),
        ),
        (
            "chio.get_config",
            r#"(import "chio" "get_config" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {n8} {z} {far}))"),
        ),
    ];
    let (rt, _) = runtime();
    for (i, (import, decl, call)) in cases.iter().enumerate() {
        let p = rt
            .load(guard(decl, &format!("{call} (i32.const 0)")).as_bytes(), PluginConfig::new(format!("oob-{i}")))
            .unwrap();
        let err = p.try_evaluate(&Default::default()).unwrap_err();
        match &err.kind {
            FailureKind::BadImportCall { import: got, detail } => {
                assert_eq!(got, import, "case {i}");
                assert!(detail.contains("outside guest memory"), "case {i}: {detail}");
            }
            other => panic!("case {i} ({import}): expected a bad import call, got {other}"),
        }
        assert!(err.to_string().contains(&format!("oob-{i}")), "{err}");
    }
    host_intact(&rt);
}

#[test]
fn hook_exports_returning_bad_pointers_lengths_or_json_are_errors_naming_the_export() {
    let (rt, _) = runtime();
    let hook = |alloc_ret: &str, result: &str, data: &str| {
        format!(
            r#"(module (memory (export "memory") 1) {data}
            (func (export "alloc") (param i32) (result i32) {alloc_ret})
            (func (export "pre_query") (param i32 i32) (result i64) {result}))"#
        )
    };
    let cases = [
        ("alloc", hook("(i32.const 0x7ffffff0)", "(i64.const 0)", "")),
        ("pre_query", hook("(i32.const 1024)", "(i64.const 0x00fffff000000010)", "")),
        ("pre_query", hook("(i32.const 1024)", "(i64.const 0x00000000ffffffff)", "")),
        ("pre_query", hook("(i32.const 1024)", "(i64.const 0x0000000000000005)", r#"(data (i32.const 0) "{bad}")"#)),
        ("pre_query", hook("(i32.const 1024)", "(i64.const 0)", "")),
    ];
    for (i, (export, wat)) in cases.iter().enumerate() {
        let p = rt.load(wat.as_bytes(), PluginConfig::new(format!("bad-result-{i}"))).unwrap();
        let err = p.call::<spec::PreQuery>(&QueryContext::default()).unwrap_err();
        match &err.kind {
            FailureKind::BadResult { export: got, .. } => assert_eq!(got, export, "case {i}: {err}"),
            other => panic!("case {i}: expected a bad result, got {other}"),
        }
    }
    // The scripted hook still works in the same runtime.
    let ok = rt.load(scripted_hook().as_bytes(), PluginConfig::new("fine")).unwrap();
    assert_eq!(ok.call::<spec::PreQuery>(&QueryContext::default()).unwrap(), Default::default());
    assert!(ok.serves(Hook::Route));
}

#[test]
fn a_failed_instance_is_replaced_and_the_next_call_succeeds() {
    let (rt, _) = runtime();
    let p = rt
        .load(scripted_hook().as_bytes(), PluginConfig::new("flaky").config("action", "t").config("needle", "boom"))
        .unwrap();
    let q = |sql: &str| QueryContext { query: sql.into(), ..Default::default() };
    assert!(p.call::<spec::PreQuery>(&q("select 1")).is_ok());
    let err = p.call::<spec::PreQuery>(&q("boom")).unwrap_err();
    assert!(matches!(err.kind, FailureKind::Trap { .. }), "{err}");
    assert!(p.call::<spec::PreQuery>(&q("select 2")).is_ok());
    let s = p.stats();
    assert_eq!((s.calls, s.failures), (3, 1));
    assert_eq!(s.instances_created, 2, "one instance served two good calls; the trapped one was replaced");
}
