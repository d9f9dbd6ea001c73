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

#[tokio::test(flavor = "multi_thread")]
async fn a_file_change_sighups_and_admin_requests_in_a_burst_coalesce_into_exactly_one_reload() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let key = helios_plugin_artefact::keys::generate_signing_key().unwrap();
    let path = write_guard(dir.path(), "g", &wat_guard(), &[("deny_substring", "alpha")], Signing::Pinned(&key));
    std::fs::write(dir.path().join("admin.token"), "t0ken\n").unwrap();
    let admin = free_port();
    let cfg = dir.path().join("chio.yaml");
    // Watching every 50 ms; triggers less than 1.5 s apart coalesce.
    std::fs::write(
        &cfg,
        format!(
            "wasm_guards:\n  - name: g\n    path: {:?}\nupstreams:\n{}gateway:\n  reload_poll_ms: 50\n  reload_debounce_ms: 1500\n  admin:\n    listen: 127.0.0.1:{admin}\n    token_file: admin.token\n",
            path.display().to_string(),
            stdio_upstream("files", &seen_log)
        ),
    )
    .unwrap();
    let gw = HttpGateway::start(&cfg);
    let agent = gw.agent("a").await;
    assert!(call(&agent, "echo", json!({"text": "alpha"})).await.0, "v1 denies alpha");

    // 10 triggers within a few hundred ms: the guard's files change (the watcher's trigger),
    // 5 SIGHUPs, and 4 admin reload requests at once (each waits for the reload covering it).
    let v2 = with_marker(wat_guard(), "v2");
    write_guard(dir.path(), "g", &v2, &[("deny_substring", "beta")], Signing::Pinned(&key));
    let admins: Vec<_> = (0..4).map(|_| std::thread::spawn(move || admin_post(admin, "/reload", "t0ken"))).collect();
    for i in 1..=5 {
        let ok = std::process::Command::new("kill").arg("-HUP").arg(gw.child.id().to_string()).status().unwrap();
        assert!(ok.success());
        // The kernel folds signals that arrive before the handler ran: send the next once this one is seen.
        let deadline = Instant::now() + Duration::from_secs(10);
        while gw.log().matches("SIGHUP: guard reload requested").count() < i {
            assert!(Instant::now() < deadline, "SIGHUP {i} not seen:\n{}", gw.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let answers: Vec<(u16, String)> = admins.into_iter().map(|t| t.join().unwrap()).collect();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["epoch"], 1, "every request is answered by the one reload: {body}");
    }
    assert!(call(&agent, "echo", json!({"text": "beta"})).await.0, "v2 is live");
    assert!(!call(&agent, "echo", json!({"text": "alpha"})).await.0, "v1 is gone");
    // Nothing else is pending: give a straggling trigger a full quiet period to show up.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("guard reload attempt") {
        assert!(Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = gw.log();
    let attempts: Vec<&str> = log.lines().filter(|l| l.contains("guard reload attempt")).collect();
    assert_eq!(attempts.len(), 1, "exactly one reload:\n{log}");
    assert!(attempts[0].contains("10 triggers coalesced"), "{}", attempts[0]);
    assert!(attempts[0].contains("file changed") && attempts[0].contains("sighup") && attempts[0].contains("admin"));
    let (_, metrics) = admin_get(admin, "/metrics");
    assert!(
        metrics.lines().any(|l| l == "chio_guard_reload_total{guard=\"g\",outcome=\"applied\"} 1"),
        "one applied reload:\n{metrics}"
    );
}

fn admin_request(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_string())
}

fn admin_post(port: u16, path: &str, token: &str) -> (u16, String) {
    admin_request(port, "POST", path, Some(token))
}

fn admin_get(port: u16, path: &str) -> (u16, String) {
    admin_request(port, "GET", path, None)
}
