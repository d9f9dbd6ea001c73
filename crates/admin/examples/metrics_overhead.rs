//! Bench rows: the cost of metrics per pooled guard call. Each guard is loaded twice, in a runtime
//! without an observer (baseline) and in one whose observer is a `Metrics` registry (every call:
//! counter, histogram, fuel, the per-host-function accumulators and
//! `chio_guard_host_call_duration_seconds`; plus the chio verdict counter a gateway records per
//! decision). Two guards: tool-denylist (built by `cargo xtask build-examples`; an allowed call makes
//! no host call once its config is cached) and a hand-written guard that calls `chio.log` twice and
//! `chio.get_config` once per call (the host-call timing path). Batches alternate so both runtimes
//! see the same machine load; the median of the batch means is reported with the load average.
//!
//! Run: `cargo run -p helios-plugin-admin --release --example metrics_overhead` (or without
//! `--release`: the dev profile compiles wasmtime and cranelift at opt-level 3 but this crate not).

use std::sync::Arc;
use std::time::Instant;

use helios_plugin_admin::{GuardOutcome, Metrics};
use helios_plugin_host::schema::GuardRequest;
use helios_plugin_host::{CallEvent, HostCalls, PluginConfig, PluginObserver, Runtime, RuntimeConfig};

/// Allows every call after two `chio.log` lines (debug) and one `chio.get_config` lookup.
const HOST_CALLING: &str = r#"(module
    (import "chio" "log" (func $log (param i32 i32 i32)))
    (import "chio" "get_config" (func $cfg (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 100) "evaluating")
    (data (i32.const 200) "mode")
    (func (export "evaluate") (param i32 i32) (result i32)
      (call $log (i32.const 1) (i32.const 100) (i32.const 10))
      (drop (call $cfg (i32.const 200) (i32.const 4) (i32.const 300) (i32.const 64)))
      (call $log (i32.const 1) (i32.const 100) (i32.const 10))
      (i32.const 0)))"#;

fn main() {
    let guest = helios_plugin_test_support::guest_path("tool-denylist");
    let wasm = std::fs::read(&guest)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask build-examples` first)", guest.display()));
    let denylist = PluginConfig::new("tool-denylist").config("denylist", "rm,curl,wget,shutdown,dd,mkfs");
    let host_calling = PluginConfig::new("host-calling").config("mode", "strict");
    let req = GuardRequest {
        tool_name: "read_file".into(),
        server_id: "fs-server".into(),
        agent_id: "support-bot".into(),
        arguments: serde_json::json!({"path": "/srv/docs/faq.md", "max_bytes": 65536}),
        scopes: vec!["fs:read".into()],
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::default());
    let off_rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let on_rt = Runtime::new(RuntimeConfig::default().observer(metrics.clone())).unwrap();
    for (label, bytes, config) in [
        ("pooled tool-denylist guard call", &wasm[..], denylist),
        ("pooled guard call with 3 host calls (2 log, 1 get_config)", HOST_CALLING.as_bytes(), host_calling),
    ] {
        let off = off_rt.load(bytes, config.clone()).unwrap();
        let on = on_rt.load(bytes, config).unwrap();
        let digest = on.module_info().unwrap().sha256.clone();
        metrics.guard_live(&digest, 0, bytes.len() as u64);
        let (batch, rounds) = (2_000u32, 15);
        for _ in 0..batch {
            off.evaluate(&req);
            on.evaluate(&req);
        }
        let (mut t_off, mut t_on) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..batch {
                std::hint::black_box(off.evaluate(&req));
            }
            t_off.push(t.elapsed().as_nanos() as f64 / batch as f64);
            let t = Instant::now();
            for _ in 0..batch {
                let v = on.evaluate(&req);
                metrics.guard_verdict(&digest, if v.is_allow() { GuardOutcome::Allow } else { GuardOutcome::Deny });
                std::hint::black_box(v);
            }
            t_on.push(t.elapsed().as_nanos() as f64 / batch as f64);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (a, b) = (median(&mut t_off), median(&mut t_on));
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
        println!(
            "| {label}, metrics off / on ({profile}) | {a:.0} ns | {b:.0} ns | {:+.1} % | load {} |",
            (b - a) / a * 100.0,
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
    }
    // Where the difference goes: the observer alone (what `Metrics` does per call, fed a ready
    // event) and the two clock reads the host adds to time a call when it has an observer.
    let digest = "sha256:0123456789abcdef0123456789abcdef";
    metrics.guard_live(digest, 0, 1);
    let no_host_calls = HostCalls::default();
    let event = CallEvent {
        plugin: "observer-only",
        digest: Some(digest),
        export: helios_plugin_host::schema::abi::EVALUATE,
        duration: std::time::Duration::from_nanos(1500),
        fuel_consumed: Some(900),
        failure: None,
        host_calls: &no_host_calls,
    };
    let n = 2_000_000u32;
    let t = Instant::now();
    for _ in 0..n {
        metrics.call_finished(std::hint::black_box(&event));
        metrics.guard_verdict(digest, GuardOutcome::Allow);
    }
    let observer = t.elapsed().as_nanos() as f64 / f64::from(n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(Instant::now().elapsed());
    }
    let clock = t.elapsed().as_nanos() as f64 / f64::from(n);
    println!("| per call: the observer and the verdict counter | {observer:.0} ns |");
    println!("| per call: the host's two clock reads (`Instant::now`, `elapsed`) | {clock:.0} ns |");
    let text = metrics.render();
    assert!(text.contains("helios_plugin_calls_total"), "the observer saw the calls");
    assert!(
        text.contains("chio_guard_host_call_duration_seconds_count{") && text.contains("host_function=\"get_config\""),
        "the host calls were timed"
    );
}
