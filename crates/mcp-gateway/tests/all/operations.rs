//! Hot swap of guards (file change or SIGHUP) while calls run: no call fails, calls in flight
//! finish on the old guard, a reload that does not verify leaves the old guard serving.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn decisions(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guard_swapped_by_a_file_change_during_calls_fails_no_call() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let decision_log = dir.path().join("decisions.jsonl");
    let key = helios_plugin_artefact::keys::generate_signing_key().unwrap();
    let v1 = with_marker(wat_guard(), "v1");
    let path = write_guard(dir.path(), "swap", &v1, &[("deny_substring", "alpha")], Signing::Pinned(&key));
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(
        &cfg,
        format!(
            "wasm_guards:\n  - name: swap\n    path: {:?}\nupstreams:\n{}gateway:\n  reload_poll_ms: 100\n  decision_log: {:?}\n",
            path.display().to_string(),
            stdio_upstream("files", &seen_log),
            decision_log.display().to_string()
        ),
    )
    .unwrap();
    let gw = HttpGateway::start(&cfg);
    assert!(call(&gw.agent("probe").await, "echo", json!({"text": "alpha"})).await.0, "v1 denies alpha");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for a in 0..4 {
        let agent = gw.agent(&format!("agent-{a}")).await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (is_error, text) = call(&agent, "echo", json!({"text": format!("gamma-{a}-{n}")})).await;
                assert_eq!(
                    (is_error, text),
                    (false, format!("files echo: gamma-{a}-{n}")),
                    "no call fails during the swap"
                );
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // v2: another module (another digest) denying "beta" instead, signed by the same key.
    let v2 = with_marker(wat_guard(), "v2");
    write_guard(dir.path(), "swap", &v2, &[("deny_substring", "beta")], Signing::Pinned(&key));
    let probe = gw.agent("probe").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !call(&probe, "echo", json!({"text": "beta"})).await.0 {
        assert!(Instant::now() < deadline, "the new guard was not live within 30 s:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert!(total > 8, "calls kept flowing during the swap ({total})");
    assert_eq!(call(&probe, "echo", json!({"text": "alpha"})).await, (false, "files echo: alpha".into()), "v1 is gone");

    let sha = |b: &[u8]| helios_plugin_artefact::signing::sha256_hex(b)[..16].to_string();
    let digests: std::collections::BTreeSet<String> =
        decisions(&decision_log).iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect();
    assert_eq!(digests, [sha(&v1), sha(&v2)].into_iter().collect(), "decisions name the module that made them");
    assert!(gw.log().contains("guard reloaded"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_a_reload_that_does_not_verify_keeps_the_old_guard() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let key = helios_plugin_artefact::keys::generate_signing_key().unwrap();
    let path = write_guard(dir.path(), "g", &wat_guard(), &[("deny_substring", "alpha")], Signing::Pinned(&key));
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(
        &cfg,
        format!(
            "wasm_guards:\n  - name: g\n    path: {:?}\nupstreams:\n{}gateway:\n  reload_poll_ms: 0\n",
            path.display().to_string(),
            stdio_upstream("files", &seen_log)
        ),
    )
    .unwrap();
    let gw = HttpGateway::start(&cfg);
    let agent = gw.agent("a").await;
    let hup = || {
        let ok = std::process::Command::new("kill").arg("-HUP").arg(gw.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    };

    // A module tampered with after signing: the reload is refused, the old guard keeps serving.
    std::fs::write(&path, with_marker(wat_guard(), "tampered")).unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw.log().contains("guard reload failed") {
        assert!(Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.log().contains("wasm_sha256") || gw.log().contains("E_HASH_MISMATCH"), "{}", gw.log());
    assert!(call(&agent, "echo", json!({"text": "alpha"})).await.0, "the old guard still denies alpha");

    // A correct new version, applied on SIGHUP (watching is off).
    write_guard(dir.path(), "g", &wat_guard(), &[("deny_substring", "beta")], Signing::Pinned(&key));
    hup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !call(&agent, "echo", json!({"text": "beta"})).await.0 {
        assert!(Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(&agent, "echo", json!({"text": "alpha"})).await, (false, "files echo: alpha".into()));
}

/// A guard that spins until its deadline.
fn spinning_guard() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "evaluate") (param i32 i32) (result i32) (loop $l (br $l)) i32.const 0))"#,
    )
    .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn slow_guards_run_off_the_async_worker_and_a_full_queue_denies_instead_of_waiting() {
    use helios_mcp_gateway::decide::Decider;
    use helios_mcp_gateway::{GatewayConfig, Guards};
    use helios_plugin_host::{Runtime, RuntimeConfig};
    use helios_plugin_schema::{GuardRequest, GuardVerdict};

    let dir = tempfile::tempdir().unwrap();
    let path = write_guard(dir.path(), "spin", &spinning_guard(), &[], Signing::Unsigned);
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(
        &cfg,
        format!(
            "wasm_guards:\n  - name: spin\n    path: {:?}\n    fuel_limit: 100000000000\n",
            path.display().to_string()
        ),
    )
    .unwrap();
    let config = GatewayConfig::load(&cfg).unwrap();
    let guards = Guards::load(Runtime::new(RuntimeConfig::default()).unwrap(), &config).unwrap();
    let decider = Decider::new(guards, 1, Duration::from_millis(30), Vec::new());

    let req = GuardRequest { tool_name: "echo".into(), ..Default::default() };
    let (d1, d2) = (decider.clone(), decider.clone());
    let (r1, r2) = (req.clone(), req.clone());
    let first = tokio::spawn(async move { d1.decide(r1).await });
    tokio::task::yield_now().await;
    let second = tokio::spawn(async move { d2.decide(r2).await });
    // The only async worker is free while the guard spins (100 ms, its deadline) on a blocking
    // thread: this timer fires while the guard is still running. Were the guard on the worker, the
    // timer could only fire after it had finished.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!first.is_finished(), "the async worker was blocked by the guard");

    match second.await.unwrap() {
        GuardVerdict::Deny { reason } => assert!(reason.contains("no guard slot free within 30 ms"), "{reason}"),
        v => panic!("a call that finds every guard thread busy is denied, got {v:?}"),
    }
    match first.await.unwrap() {
        GuardVerdict::Deny { reason } => {
            assert!(reason.contains("guard \"spin\" failed closed") && reason.contains("deadline exceeded"), "{reason}")
        }
        v => panic!("a guard past its deadline denies, got {v:?}"),
    }
}
