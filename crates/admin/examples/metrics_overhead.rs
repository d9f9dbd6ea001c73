//! Bench row: the cost of metrics per pooled guard call. The tool-denylist guard (built by
//! `cargo xtask build-examples`) is loaded twice, in a runtime without an observer (baseline) and
//! in one whose observer is a `Metrics` registry (every call: counter, histogram, fuel; plus the
//! chio verdict counter a gateway records per decision). Batches alternate so both see the same
//! machine load; the median of the batch means is reported with the load average.
//!
//! Run: `cargo test -p helios-plugin-admin --release --example metrics_overhead` (or without
//! `--release`: the dev profile compiles wasmtime and cranelift at opt-level 3 but this crate not).

use std::sync::Arc;
use std::time::Instant;

use helios_plugin_admin::{GuardOutcome, Metrics};
use helios_plugin_host::schema::GuardRequest;
use helios_plugin_host::{PluginConfig, Runtime, RuntimeConfig};

fn main() {
    let guest = helios_plugin_test_support::guest_path("tool-denylist");
    let wasm = std::fs::read(&guest)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask build-examples` first)", guest.display()));
    let config = PluginConfig::new("tool-denylist").config("denylist", "rm,curl,wget,shutdown,dd,mkfs");
    let req = GuardRequest {
        tool_name: "read_file".into(),
        server_id: "fs-server".into(),
        agent_id: "support-bot".into(),
        arguments: serde_json::json!({"path": "/srv/docs/faq.md", "max_bytes": 65536}),
        scopes: vec!["fs:read".into()],
        ..Default::default()
    };
    let off = Runtime::new(RuntimeConfig::default()).unwrap().load(&wasm, config.clone()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let on = Runtime::new(RuntimeConfig::default().observer(metrics.clone())).unwrap().load(&wasm, config).unwrap();
    let digest = on.module_info().unwrap().sha256.clone();
    metrics.guard_live(&digest, 0, wasm.len() as u64);
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
        "| pooled tool-denylist guard call, metrics off / on ({profile}) | {a:.0} ns | {b:.0} ns | {:+.1} % | load {} |",
        (b - a) / a * 100.0,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    assert!(metrics.render().contains("helios_plugin_calls_total"), "the observer saw the calls");
}
