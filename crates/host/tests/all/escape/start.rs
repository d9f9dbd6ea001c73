//! How instances begin and end: start functions (loops, imports, traps, calls into their own exports),
//! re-entry from host code, and the replacement of an instance that failed.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use helios_plugin_host::{FailureKind, Level, LogSink, Plugin, PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{GuardRequest, GuardVerdict, QueryContext, hooks::spec};

use super::{assert_policies, both, same};
use crate::support::{runtime, scripted_hook};

#[test]
fn a_start_function_that_loops_is_stopped_by_fuel_under_every_policy() {
    let (rt, _) = runtime();
    let wat = both("", "(func $start (loop (br 0))) (start $start)", "");
    let cfg = |c: PluginConfig| c.fuel(Some(1_000_000)).deadline(Duration::from_secs(10));
    assert_policies(&rt, wat.as_bytes(), "start-loop", cfg, "fuel exhausted (limit 1000000 per call)");
}

#[test]
fn a_start_function_that_calls_a_host_import_is_a_clean_error_under_every_policy() {
    let (rt, sink) = runtime();
    let imports = r#"(import "chio" "log" (func $log (param i32 i32 i32)))"#;
    let wat = both(imports, "(func $start (call $log (i32.const 2) (i32.const 64) (i32.const 4))) (start $start)", "");
    assert_policies(
        &rt,
        wat.as_bytes(),
        "start-import",
        same,
        "bad call to import chio.log: called before the instance was ready",
    );
    assert!(
        sink.lines().iter().all(|(p, _, _)| !p.starts_with("start-import")),
        "a start function logged: {:?}",
        sink.lines()
    );
}

#[test]
fn a_start_function_that_calls_the_guests_own_export_cannot_reach_the_host() {
    let (rt, _) = runtime();
    // The start function calls the function behind `evaluate`, which writes KV: the import refuses.
    let imports = r#"(import "env" "kv_set" (func $set (param i32 i32 i32 i32) (result i32)))"#;
    let extra = r#"(func $export_body (export "helper") (param i32 i32) (result i32)
        (call $set (i32.const 64) (i32.const 4) (i32.const 64) (i32.const 4)))
      (func $start (drop (call $export_body (i32.const 0) (i32.const 0)))) (start $start)"#;
    let wat = both(imports, extra, "");
    assert_policies(
        &rt,
        wat.as_bytes(),
        "start-export",
        same,
        "bad call to import env.kv_set: called before the instance was ready",
    );
    for name in ["start-export", "start-export-skip", "start-export-abort"] {
        assert!(rt.kv().entries(name).is_empty(), "{name} wrote KV from its start function");
    }
}

#[test]
fn a_start_function_that_traps_is_a_named_instantiation_failure_under_every_policy() {
    let (rt, _) = runtime();
    let wat = both("", "(func $start unreachable) (start $start)", "");
    assert_policies(&rt, wat.as_bytes(), "start-trap", same, "cannot instantiate");
}

/// A log sink that calls back into the plugin that is logging, once: host code reached from inside
/// a guest call re-enters the plugin.
#[derive(Debug, Default)]
struct ReenteringSink {
    plugin: OnceLock<Arc<Plugin>>,
    inner: Mutex<Option<GuardVerdict>>,
    lines: Mutex<Vec<String>>,
}

impl LogSink for ReenteringSink {
    fn log(&self, _plugin: &str, _level: Level, message: &str) {
        self.lines.lock().unwrap().push(message.to_owned());
        let Some(p) = self.plugin.get() else { return };
        let first = self.inner.lock().unwrap().is_none();
        if first {
            *self.inner.lock().unwrap() = Some(GuardVerdict::deny("placeholder"));
            let v = p.evaluate(&GuardRequest::default());
            *self.inner.lock().unwrap() = Some(v);
        }
    }
}

#[test]
fn a_host_call_reentering_a_plugin_from_inside_its_own_call_gets_another_instance_never_the_same_store() {
    let sink = Arc::new(ReenteringSink::default());
    let rt = Runtime::new(RuntimeConfig::default().log_sink(sink.clone())).unwrap();
    // The guest counts its calls in a global of its instance and logs from a nested call path.
    let imports = r#"(import "chio" "log" (func $log (param i32 i32 i32)))"#;
    let extra = r#"(global $calls (mut i32) (i32.const 0))
      (func $deep (param i32) (if (local.get 0) (then (call $deep (i32.sub (local.get 0) (i32.const 1))))
                                               (else (call $log (i32.const 2) (i32.const 64) (i32.const 8)))))"#;
    let body = "(global.set $calls (i32.add (global.get $calls) (i32.const 1))) (call $deep (i32.const 50))
      (if (i32.gt_u (global.get $calls) (i32.const 1)) (then unreachable))";
    let p = rt.load(both(imports, extra, body).as_bytes(), PluginConfig::new("reentrant")).unwrap();
    sink.plugin.set(p.clone()).unwrap();
    // Outer call: logs, the sink re-enters; the inner call must not see the outer instance's global.
    assert_eq!(p.evaluate(&GuardRequest::default()), GuardVerdict::Allow);
    assert_eq!(*sink.inner.lock().unwrap(), Some(GuardVerdict::Allow), "the re-entered call shared the outer store");
    assert_eq!(sink.lines.lock().unwrap().len(), 2);
    let s = p.stats();
    assert_eq!((s.calls, s.failures, s.instances_created), (2, 0, 2), "{s:?}");
    // Both instances served one call each and went back to the pool.
    assert_eq!(p.idle_instances(), 2);
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
