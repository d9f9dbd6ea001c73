//! The gateway's admin listener (issue 15 through issue 16 deliverable 3): chio's `chio_guard_*`
//! families from real tool calls, `/plugins` with redacted config, and `POST /reload` behind the
//! bearer token applying a new guard version under a new epoch.

use std::io::{Read, Write};

use serde_json::json;

use crate::support::*;

fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
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

fn has(metrics: &str, line: &str) -> bool {
    metrics.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread")]
async fn chio_guard_metrics_plugins_and_reload_come_from_the_gateways_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let v1 = wat_guard();
    let path = write_guard(dir.path(), "g", &v1, &[("deny_substring", "alpha")], Signing::Unsigned);
    std::fs::write(dir.path().join("admin.token"), "gw-token\n").unwrap();
    let admin = free_port();
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(
        &cfg,
        format!(
            "wasm_guards:\n  - name: g\n    path: {:?}\n    redact_keys: [deny_substring]\nupstreams:\n{}gateway:\n  reload_poll_ms: 0\n  admin:\n    listen: 127.0.0.1:{admin}\n    token_file: admin.token\n",
            path.display().to_string(),
            stdio_upstream("files", &seen_log)
        ),
    )
    .unwrap();
    let gw = HttpGateway::start(&cfg);
    let agent = gw.agent("a").await;
    assert!(call(&agent, "echo", json!({"text": "alpha"})).await.0, "alpha is denied");
    assert!(!call(&agent, "echo", json!({"text": "one"})).await.0);
    assert!(!call(&agent, "echo", json!({"text": "two"})).await.0);

    let d1 = &signing_sha(&v1)[..16];
    let (status, metrics) = http(admin, "GET", "/metrics", None);
    assert_eq!(status, 200);
    for line in [
        format!("chio_guard_verdict_total{{guard=\"{d1}\",epoch=\"0\",verdict=\"allow\"}} 2"),
        format!("chio_guard_verdict_total{{guard=\"{d1}\",epoch=\"0\",verdict=\"deny\"}} 1"),
        format!("chio_guard_deny_total{{guard=\"{d1}\",epoch=\"0\"}} 1"),
        format!("chio_guard_eval_duration_seconds_count{{guard=\"{d1}\",epoch=\"0\"}} 3"),
        format!("chio_guard_module_bytes{{guard=\"{d1}\"}} {}", v1.len()),
        "helios_plugin_calls_total{plugin=\"g\",export=\"evaluate\"} 3".to_string(),
    ] {
        assert!(has(&metrics, &line), "missing {line}\n{metrics}");
    }
    assert!(metrics.contains(&format!("chio_guard_fuel_consumed_total{{guard=\"{d1}\",epoch=\"0\"}}")), "{metrics}");

    let (status, plugins) = http(admin, "GET", "/plugins", None);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&plugins).unwrap();
    assert_eq!(v[0]["name"], "g");
    assert_eq!(v[0]["version"], "1.0.0");
    assert_eq!(v[0]["digest"], format!("sha256:{}", signing_sha(&v1)));
    assert_eq!(v[0]["config"]["deny_substring"], "<redacted>");
    assert!(!plugins.contains("alpha"), "{plugins}");

    // A new version (other bytes, denies beta); reload needs the token.
    let v2 = with_marker(wat_guard(), "v2");
    write_guard(dir.path(), "g", &v2, &[("deny_substring", "beta")], Signing::Unsigned);
    assert_eq!(http(admin, "POST", "/reload", None).0, 401);
    assert!(call(&agent, "echo", json!({"text": "alpha"})).await.0, "nothing changed without the token");
    let (status, body) = http(admin, "POST", "/reload", Some("gw-token"));
    assert_eq!(status, 200, "{body}");
    assert!(call(&agent, "echo", json!({"text": "beta"})).await.0, "the new version denies beta");
    let d2 = &signing_sha(&v2)[..16];
    let (_, metrics) = http(admin, "GET", "/metrics", None);
    for line in [
        format!("chio_guard_verdict_total{{guard=\"{d2}\",epoch=\"1\",verdict=\"deny\"}} 1"),
        "chio_guard_reload_total{guard=\"g\",outcome=\"applied\"} 1".to_string(),
        format!("chio_guard_module_bytes{{guard=\"{d2}\"}} {}", v2.len()),
    ] {
        assert!(has(&metrics, &line), "missing {line}\n{metrics}");
    }
    assert!(!metrics.contains(&format!("chio_guard_module_bytes{{guard=\"{d1}\"}}")), "the old module's gauge goes");
}

fn signing_sha(bytes: &[u8]) -> String {
    helios_plugin_artefact::signing::sha256_hex(bytes)
}

/// Traps on requests over 2,000 bytes, allows everything else.
fn long_request_trap() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "evaluate") (param $p i32) (param $l i32) (result i32)
               (if (i32.gt_u (local.get $l) (i32.const 2000)) (then unreachable))
               (i32.const 0)))"#,
    )
    .unwrap()
}

fn incidents(dir: &std::path::Path) -> Vec<(String, serde_json::Value, usize)> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join("incidents"))
        .map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(p.join("incident.json")).unwrap()).unwrap();
            let traces = std::fs::read_to_string(p.join("last_5_eval_traces.ndjson")).unwrap().lines().count();
            (p.file_name().unwrap().to_string_lossy().into_owned(), json, traces)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_fails_its_canary_is_refused_and_a_failing_live_guard_is_rolled_back() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let path = write_guard(dir.path(), "g", &wat_guard(), &[("deny_substring", "alpha")], Signing::Unsigned);
    // 32 recorded verdicts beside the manifest: all allow.
    let canary = dir.path().join("g/canary");
    std::fs::create_dir_all(&canary).unwrap();
    let mut manifest = String::new();
    for i in 0..32 {
        let body = serde_json::to_vec(&json!({
            "request": {"tool_name": "echo", "server_id": "files", "arguments": {"text": format!("ok{i}")}},
            "expected_verdict_bytes": "{\"decision\":\"allow\"}"
        }))
        .unwrap();
        let file = format!("{i:02}.json");
        std::fs::write(canary.join(&file), &body).unwrap();
        manifest.push_str(&format!("{}  {file}\n", hex::encode(sha2::Sha256::digest(&body))));
    }
    std::fs::write(canary.join("MANIFEST.sha256"), manifest).unwrap();
    std::fs::write(dir.path().join("admin.token"), "gw-token\n").unwrap();
    let admin = free_port();
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(
        &cfg,
        format!(
            "wasm_guards:\n  - name: g\n    path: {:?}\nupstreams:\n{}gateway:\n  reload_poll_ms: 0\n  admin:\n    listen: 127.0.0.1:{admin}\n    token_file: admin.token\n",
            path.display().to_string(),
            stdio_upstream("files", &seen_log)
        ),
    )
    .unwrap();
    let gw = HttpGateway::start(&cfg);
    let agent = gw.agent("a").await;

    // A candidate that denies what the corpus recorded as allowed never serves.
    write_guard(dir.path(), "g", &with_marker(wat_guard(), "v2"), &[("deny_substring", "ok")], Signing::Unsigned);
    let (status, body) = http(admin, "POST", "/reload", Some("gw-token"));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("canary failed on fixture 00.json"), "{body}");
    log_shows(&gw, |l| l.contains("RELOAD_CANARY_FAILED")).await;
    assert!(call(&agent, "echo", json!({"text": "alpha"})).await.0, "v1 still denies alpha");
    assert!(!call(&agent, "echo", json!({"text": "ok"})).await.0, "v1 still allows ok");
    let found = incidents(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].1["outcome"].as_str(), found[0].1["fixture"].as_str()),
        (Some("canary_failed"), Some("00.json"))
    );
    assert_eq!(found[0].2, 1, "one trace: the first fixture diverged");

    // A candidate that passes the canary but traps on long live requests: five errors roll back.
    write_guard(dir.path(), "g", &long_request_trap(), &[], Signing::Unsigned);
    let (status, body) = http(admin, "POST", "/reload", Some("gw-token"));
    assert_eq!(status, 200, "{body}");
    assert!(!call(&agent, "echo", json!({"text": "alpha"})).await.0, "the new guard allows alpha");
    let long = "x".repeat(3000);
    for _ in 0..5 {
        let (denied, text) = call(&agent, "echo", json!({"text": long})).await;
        assert!(denied && text.contains("failed closed"), "{text}");
    }
    assert!(call(&agent, "echo", json!({"text": "alpha"})).await.0, "rolled back: v1 denies alpha again");
    log_shows(&gw, |l| l.contains("RELOAD_ROLLED_BACK")).await;
    let found = incidents(dir.path());
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[1].1["outcome"], "rolled_back");
    assert_eq!(found[1].2, 5, "the five failing evaluations");
    let (_, metrics) = http(admin, "GET", "/metrics", None);
    for line in [
        "chio_guard_reload_total{guard=\"g\",outcome=\"canary_failed\"} 1",
        "chio_guard_reload_total{guard=\"g\",outcome=\"applied\"} 1",
        "chio_guard_reload_total{guard=\"g\",outcome=\"rolled_back\"} 1",
    ] {
        assert!(has(&metrics, line), "missing {line}\n{metrics}");
    }
}

/// Waits (up to 20 s) until the gateway's log satisfies `ok`: its stderr is read on another thread.
async fn log_shows(gw: &HttpGateway, ok: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ok(&gw.log()) {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// 32 recorded "allow" verdicts (`ok0` … `ok31`) beside `dir/g`'s manifest.
fn allow_canary(guard_dir: &std::path::Path) {
    use sha2::Digest;
    let canary = guard_dir.join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    let mut manifest = String::new();
    for i in 0..32 {
        let body = serde_json::to_vec(&json!({
            "request": {"tool_name": "echo", "server_id": "files", "arguments": {"text": format!("ok{i}")}},
            "expected_verdict_bytes": "{\"decision\":\"allow\"}"
        }))
        .unwrap();
        let file = format!("{i:02}.json");
        std::fs::write(canary.join(&file), &body).unwrap();
        manifest.push_str(&format!("{}  {file}\n", hex::encode(sha2::Sha256::digest(&body))));
    }
    std::fs::write(canary.join("MANIFEST.sha256"), manifest).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_candidate_from_chio_yaml_counts_a_known_divergence_exactly_and_is_promoted_through_the_canary() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let key = helios_plugin_artefact::keys::generate_signing_key().unwrap();
    // Live: denies "alpha". Candidate (another module, its own signed manifest for the same guard
    // name): denies "beta".
    let live = write_guard(dir.path(), "g", &wat_guard(), &[("deny_substring", "alpha")], Signing::Pinned(&key));
    let next = with_marker(wat_guard(), "next");
    let candidate =
        write_guard(&dir.path().join("next"), "g", &next, &[("deny_substring", "beta")], Signing::Pinned(&key));
    allow_canary(&dir.path().join("g"));
    std::fs::write(dir.path().join("admin.token"), "gw-token\n").unwrap();
    let admin = free_port();
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(
        &cfg,
        format!(
            "wasm_guards:\n  - name: g\n    path: {:?}\n    shadow:\n      path: {:?}\n      sample_rate: 1\nupstreams:\n{}gateway:\n  reload_poll_ms: 0\n  admin:\n    listen: 127.0.0.1:{admin}\n    token_file: admin.token\n",
            live.display().to_string(),
            candidate.display().to_string(),
            stdio_upstream("files", &seen_log)
        ),
    )
    .unwrap();
    let gw = HttpGateway::start(&cfg);

    // The real Python MCP client: only the live guard's verdicts apply.
    let calls = json!([
        ["echo", {"text": "alpha"}],
        ["echo", {"text": "beta"}],
        ["echo", {"text": "gamma"}],
        ["echo", {"text": "beta two"}],
        ["echo", {"text": "delta"}]
    ]);
    let lines = python_agent(&["http", &gw.url, &calls.to_string()]);
    let denied: Vec<bool> = lines[1..].iter().map(|l| l["is_error"].as_bool().unwrap()).collect();
    assert_eq!(denied, [true, false, false, false, false], "{lines:?}");
    let reached: Vec<String> = seen(&seen_log).iter().map(|(_, a)| a["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(reached, ["beta", "gamma", "beta two", "delta"], "the candidate's denies are never applied");

    // The candidate ran on all 5 calls off the call path: alpha (live deny, candidate allow) and
    // both betas (live allow, candidate deny) diverged — 3 of 5.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let shadow = loop {
        let (status, body) = http(admin, "GET", "/plugins", None);
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v[0]["shadow"]["compared"] == 5 {
            break v[0]["shadow"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "the shadow did not compare 5 calls: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(shadow["divergences"], 3, "{shadow}");
    assert_eq!(shadow["agreement_rate"], 0.4, "{shadow}");
    assert_eq!(shadow["digest"], format!("sha256:{}", signing_sha(&next)));
    log_shows(&gw, |l| l.matches("shadow candidate diverged from the live guard").count() >= 3).await;
    assert_eq!(gw.log().matches("shadow candidate diverged from the live guard").count(), 3, "{}", gw.log());

    // Promote needs the token, then goes through the canary (32 recorded allows: it passes).
    assert_eq!(http(admin, "POST", "/plugins/g/promote", None).0, 401);
    assert_eq!(http(admin, "POST", "/plugins/nope/promote", Some("gw-token")).0, 409);
    let (status, body) = http(admin, "POST", "/plugins/g/promote", Some("gw-token"));
    assert_eq!(status, 200, "{body}");
    log_shows(&gw, |l| l.contains("RELOAD_APPLIED")).await;
    let lines =
        python_agent(&["http", &gw.url, &json!([["echo", {"text": "alpha"}], ["echo", {"text": "beta"}]]).to_string()]);
    let denied: Vec<bool> = lines[1..].iter().map(|l| l["is_error"].as_bool().unwrap()).collect();
    assert_eq!(denied, [false, true], "the candidate is live: {lines:?}");
    let (_, plugins) = http(admin, "GET", "/plugins", None);
    let v: serde_json::Value = serde_json::from_str(&plugins).unwrap();
    assert_eq!(v[0]["digest"], format!("sha256:{}", signing_sha(&next)));
    assert!(v[0].get("shadow").is_none(), "the promoted candidate is no longer a shadow: {plugins}");
    let (_, metrics) = http(admin, "GET", "/metrics", None);
    assert!(has(&metrics, "chio_guard_reload_total{guard=\"g\",outcome=\"applied\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_candidate_that_fails_the_canary_is_not_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let live = write_guard(dir.path(), "g", &wat_guard(), &[("deny_substring", "alpha")], Signing::Unsigned);
    // The candidate denies "ok", which the corpus recorded as allowed.
    let candidate = write_guard(
        &dir.path().join("next"),
        "g",
        &with_marker(wat_guard(), "next"),
        &[("deny_substring", "ok")],
        Signing::Unsigned,
    );
    allow_canary(&dir.path().join("g"));
    std::fs::write(dir.path().join("admin.token"), "gw-token\n").unwrap();
    let admin = free_port();
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(
        &cfg,
        format!(
            "wasm_guards:\n  - name: g\n    path: {:?}\n    shadow: {{ path: {:?} }}\nupstreams:\n{}gateway:\n  reload_poll_ms: 0\n  admin:\n    listen: 127.0.0.1:{admin}\n    token_file: admin.token\n",
            live.display().to_string(),
            candidate.display().to_string(),
            stdio_upstream("files", &seen_log)
        ),
    )
    .unwrap();
    let gw = HttpGateway::start(&cfg);
    let (status, body) = http(admin, "POST", "/plugins/g/promote", Some("gw-token"));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("canary failed on fixture 00.json"), "{body}");
    log_shows(&gw, |l| l.contains("RELOAD_CANARY_FAILED")).await;
    let agent = gw.agent("a").await;
    assert!(call(&agent, "echo", json!({"text": "alpha"})).await.0, "the live guard still serves");
    assert!(!call(&agent, "echo", json!({"text": "ok"})).await.0);
}
