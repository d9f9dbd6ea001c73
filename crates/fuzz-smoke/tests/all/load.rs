//! Load and leaks: two threads drive one chain of two KV-counting plugins (`hostile-sdk` in its
//! `count` behaviour). Every call must be counted exactly once, and resident memory must not grow
//! once the instances are warm.
//!
//! Iterations per thread: 20,000 by default (CI); `HELIOS_LONG=1` runs the full 1,000,000 (also
//! what `cargo xtask fuzz` runs after the fuzzers); `HELIOS_LOAD_ITERATIONS=<n>` picks any count.
//!
//! The counters are per client (`count:<client_id>`), and each thread is one client: a client's
//! calls are sequential, so the guest's read-add-write never races with itself, even though the two
//! threads run two instances of each plugin at once. A counter shared by clients would lose updates
//! under this host (kv_get and kv_set are separate calls); SECURITY.md explains why and what the fix
//! is. Every test of this binary holds `serial()`, so nothing else moves the resident set it measures.

use std::{
    sync::{Arc, Barrier},
    time::Instant,
};

use helios_plugin_host::{Chain, PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{HookContext, PreQueryResult, QueryContext};

/// Resident set size of this process, from /proc/self/status (kB → bytes).
fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value");
    kb * 1024
}

fn iterations() -> u64 {
    if let Some(n) = std::env::var("HELIOS_LOAD_ITERATIONS").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    if std::env::var("HELIOS_LONG").is_ok_and(|v| v == "1") { 1_000_000 } else { 20_000 }
}

const THREADS: u64 = 2;
/// Growth of the resident set allowed between the end of the warm-up and the end of the run.
const MAX_RSS_GROWTH_BYTES: u64 = 16 << 20;

fn counter(rt: &Runtime, plugin: &str, client: &str) -> Option<u64> {
    let key = format!("count:{client}");
    rt.kv()
        .entries(plugin)
        .into_iter()
        .find(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| u64::from_le_bytes(v[..8].try_into().unwrap()))
}

#[test]
fn two_threads_through_a_chain_of_kv_counters_lose_no_update_and_keep_memory_flat() {
    let _serial = crate::serial();
    let n = iterations();
    let warmup = (n / 10).clamp(1, 5_000);
    let wasm = helios_plugin_test_support::guest("hostile-sdk");
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let a = rt.load(&wasm, PluginConfig::new("counter-a").config("behavior", "count").priority(1)).unwrap();
    let b = rt.load(&wasm, PluginConfig::new("counter-b").config("behavior", "count").priority(2)).unwrap();
    let chain = Arc::new(Chain::new(vec![a.clone(), b.clone()]));
    let warm = Arc::new(Barrier::new(THREADS as usize + 1));
    let measured = Arc::new(Barrier::new(THREADS as usize + 1));
    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (chain, warm, measured) = (chain.clone(), warm.clone(), measured.clone());
            std::thread::spawn(move || {
                let ctx = QueryContext {
                    query: "SELECT 1".into(),
                    hook_context: HookContext { client_id: Some(format!("t{t}")), ..Default::default() },
                    ..Default::default()
                };
                for i in 0..n {
                    if i == warmup {
                        warm.wait();
                        measured.wait();
                    }
                    let out = chain.pre_query(&ctx);
                    assert_eq!(out.result, PreQueryResult::Continue, "thread {t} call {i}: {:?}", out.skipped);
                    assert!(out.skipped.is_empty(), "thread {t} call {i}: {:?}", out.skipped);
                }
                if warmup >= n {
                    warm.wait();
                    measured.wait();
                }
            })
        })
        .collect();
    warm.wait();
    let rss_warm = vm_rss();
    measured.wait();
    for w in workers {
        w.join().expect("a load thread panicked");
    }
    let elapsed = started.elapsed();
    let rss_end = vm_rss();
    let calls = THREADS * n * 2;
    eprintln!(
        "load: {THREADS} threads x {n} chain calls (2 plugins each) = {calls} plugin calls in {elapsed:?} ({:.1} us per plugin call); \
         VmRSS after warm-up {} KiB, at the end {} KiB",
        elapsed.as_secs_f64() * 1e6 / calls as f64,
        rss_warm / 1024,
        rss_end / 1024
    );
    for p in ["counter-a", "counter-b"] {
        for t in 0..THREADS {
            assert_eq!(counter(&rt, p, &format!("t{t}")), Some(n), "{p}: client t{t} lost updates");
        }
    }
    for p in [&a, &b] {
        let s = p.stats();
        assert_eq!((s.calls, s.failures), (THREADS * n, 0), "{}: {s:?}", p.name());
        assert!(s.instances_created <= THREADS + s.instances_recycled, "{}: instances leak: {s:?}", p.name());
    }
    assert!(
        rss_end <= rss_warm + MAX_RSS_GROWTH_BYTES,
        "resident memory grew by {} KiB after the warm-up (allowed: {} KiB)",
        (rss_end - rss_warm) / 1024,
        MAX_RSS_GROWTH_BYTES / 1024
    );
}
