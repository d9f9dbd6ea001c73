//! Allowed calls are forwarded with their result; denied calls answer with the guard's reason and
//! never reach the server; failing guards deny unless advisory; stdio and HTTP; both clients.

use serde_json::json;

use crate::support::*;

fn config(dir: &std::path::Path, guards: &str, upstreams: &str, gateway: &str) -> std::path::PathBuf {
    let path = dir.join("chio.yaml");
    std::fs::write(
        &path,
        format!("wasm_guards:\n{guards}upstreams:\n{upstreams}gateway:\n  reload_poll_ms: 0\n{gateway}"),
    )
    .unwrap();
    path
}

fn deny_guard(dir: &std::path::Path, substring: &str) -> String {
    let path = write_guard(dir, "wat-deny", &wat_guard(), &[("deny_substring", substring)], Signing::Unsigned);
    format!("  - name: wat-deny\n    path: {:?}\n    priority: 10\n", path.display().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_call_is_forwarded_and_a_denied_one_answers_with_the_reason_and_never_reaches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let cfg = config(
        dir.path(),
        &deny_guard(dir.path(), "delete_file"),
        &stdio_upstream("files", &seen_log),
        &format!("  decision_log: {:?}\n", dir.path().join("decisions.jsonl").display().to_string()),
    );
    let agent = stdio_agent(&cfg, "coder-agent").await;

    let tools: Vec<String> = agent.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(tools.contains(&"echo".to_string()) && tools.contains(&"delete_file".to_string()), "{tools:?}");

    let (is_error, text) = call(&agent, "echo", json!({"text": "hello"})).await;
    assert!(!is_error, "{text}");
    assert_eq!(text, "files echo: hello", "the upstream's own result comes back");
    let (is_error, text) = call(&agent, "add", json!({"a": 2, "b": 40})).await;
    assert_eq!((is_error, text.as_str()), (false, "42"));

    let (is_error, text) = call(&agent, "delete_file", json!({"path": "/etc/passwd"})).await;
    assert!(is_error, "a denied call is a tool error");
    assert!(text.contains("request contains denied substring \"delete_file\""), "the guard's reason: {text}");

    let seen = seen(&seen_log);
    let tools_seen: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tools_seen, ["echo", "add"], "the denied call never reached the server");
    assert_eq!(seen[0].1, json!({"text": "hello"}), "arguments are forwarded untouched");

    // The decision log has guard, digest, verdict, reason and duration for every decision.
    let log = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
    let decisions: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(decisions.len(), 3, "{log}");
    let deny = &decisions[2];
    assert_eq!((deny["guard"].as_str(), deny["verdict"].as_str()), (Some("wat-deny"), Some("deny")));
    assert_eq!(deny["digest"].as_str().unwrap().len(), 16);
    assert!(deny["reason"].as_str().unwrap().contains("delete_file"));
    assert!(deny["duration_us"].is_u64());
    assert_eq!(
        (deny["tool"].as_str(), deny["server"].as_str(), deny["agent"].as_str()),
        (Some("delete_file"), Some("files"), Some("coder-agent"))
    );
    assert_eq!(decisions[0]["verdict"], "allow");
    agent.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_guard_denies_and_an_advisory_trapping_guard_allows() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let trap = write_guard(dir.path(), "trap", &trapping_guard(), &[], Signing::Unsigned);
    let entry = |advisory: bool| {
        format!("  - name: trap\n    path: {:?}\n    advisory: {advisory}\n", trap.display().to_string())
    };

    let cfg = config(dir.path(), &entry(false), &stdio_upstream("files", &seen_log), "");
    let agent = stdio_agent(&cfg, "coder-agent").await;
    let (is_error, text) = call(&agent, "echo", json!({"text": "x"})).await;
    assert!(is_error);
    assert!(
        text.contains("guard \"trap\" failed closed") && text.contains("unreachable"),
        "names guard and cause: {text}"
    );
    agent.cancel().await.unwrap();
    assert!(seen(&seen_log).is_empty(), "a failing guard lets nothing through");

    let cfg = config(dir.path(), &entry(true), &stdio_upstream("files", &seen_log), "");
    let agent = stdio_agent(&cfg, "coder-agent").await;
    let (is_error, text) = call(&agent, "echo", json!({"text": "x"})).await;
    assert_eq!((is_error, text.as_str()), (false, "files echo: x"), "an advisory guard's failure allows");
    agent.cancel().await.unwrap();
    assert_eq!(seen(&seen_log).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_agent_is_guarded_over_stdio_and_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let cfg = config(dir.path(), &deny_guard(dir.path(), "/etc/shadow"), &stdio_upstream("files", &seen_log), "");
    let calls = json!([["read_file", {"path": "/workspace/a.rs"}], ["read_file", {"path": "/etc/shadow"}]]).to_string();

    let check = |lines: Vec<serde_json::Value>| {
        assert!(lines[0]["tools"].as_array().unwrap().iter().any(|t| t == "read_file"), "{lines:?}");
        assert_eq!(lines[1]["is_error"], false);
        assert_eq!(lines[1]["text"], "contents of /workspace/a.rs");
        assert_eq!(lines[2]["is_error"], true);
        assert!(lines[2]["text"].as_str().unwrap().contains("denied substring \"/etc/shadow\""), "{lines:?}");
    };
    let cfg_s = cfg.display().to_string();
    check(tokio::task::spawn_blocking(move || python_agent(&["stdio", GATEWAY, &cfg_s, &calls])).await.unwrap());

    let gw = HttpGateway::start(&cfg);
    let (url, calls) = (
        gw.url.clone(),
        json!([["read_file", {"path": "/workspace/a.rs"}], ["read_file", {"path": "/etc/shadow"}]]).to_string(),
    );
    check(tokio::task::spawn_blocking(move || python_agent(&["http", &url, &calls])).await.unwrap());

    let paths: Vec<String> = seen(&seen_log).iter().map(|(_, a)| a["path"].as_str().unwrap().to_string()).collect();
    assert_eq!(paths, ["/workspace/a.rs", "/workspace/a.rs"], "/etc/shadow never reached the server");
    assert!(gw.log().contains("agent=python-agent"), "the agent's identity is its client name: {}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn many_agents_at_once_over_http_each_get_their_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let cfg = config(
        dir.path(),
        &deny_guard(dir.path(), "forbidden"),
        &stdio_upstream("files", &seen_log),
        "  guard_threads: 2\n",
    );
    let gw = HttpGateway::start(&cfg);
    let mut tasks = Vec::new();
    for a in 0..6 {
        let agent = gw.agent(&format!("agent-{a}")).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..8 {
                let word = if i % 4 == 3 { "forbidden" } else { "fine" };
                let (is_error, text) = call(&agent, "echo", json!({"text": format!("{word}-{a}-{i}")})).await;
                if word == "forbidden" {
                    assert!(is_error && text.contains("denied substring"), "{text}");
                } else {
                    assert_eq!((is_error, text), (false, format!("files echo: fine-{a}-{i}")));
                }
            }
            agent.cancel().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen(&seen_log);
    assert_eq!(seen.len(), 6 * 6, "36 allowed calls reached the server, 12 denied did not");
    assert!(seen.iter().all(|(_, a)| !a["text"].as_str().unwrap().contains("forbidden")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tool_denylist_guard_registered_as_on_chios_page_denies_listed_tools() {
    let wasm = helios_plugin_test_support::guest("tool-denylist");
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let key = helios_plugin_artefact::keys::generate_signing_key().unwrap();
    let path =
        write_guard(dir.path(), "tool-denylist", &wasm, &[("denylist", "delete_file,crash")], Signing::Pinned(&key));
    // chio.yaml as chio's page writes it (step 5), kernel and adapters included.
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(
        &cfg,
        format!(
            "kernel:\n  signing_key: \"${{CHIO_SIGNING_KEY}}\"\nadapters:\n  - id: petstore\n    protocol: openapi\n    upstream: \"http://petstore.example/api\"\nwasm_guards:\n  - name: tool-denylist\n    path: {:?}\n    fuel_limit: 5000000\n    priority: 100\nupstreams:\n{}",
            path.display().to_string(),
            stdio_upstream("files", &seen_log)
        ),
    )
    .unwrap();
    let agent = stdio_agent(&cfg, "coder-agent").await;
    let (is_error, text) = call(&agent, "delete_file", json!({"path": "/"})).await;
    assert!(is_error && text.contains("tool \"delete_file\" is on the denylist"), "{text}");
    let (is_error, text) = call(&agent, "read_file", json!({"path": "/w"})).await;
    assert_eq!((is_error, text.as_str()), (false, "contents of /w"));
    agent.cancel().await.unwrap();
    assert_eq!(seen(&seen_log).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn guards_see_the_agents_scopes_and_the_action_and_path_the_host_extracted() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let scope = write_guard(dir.path(), "no-admin", &wat_guard(), &[("deny_substring", "fs:admin")], Signing::Unsigned);
    let etc = write_guard(
        dir.path(),
        "no-etc-delete",
        &wat_guard(),
        &[("deny_substring", r#""action_type":"file_delete","extracted_path":"/etc"#)],
        Signing::Unsigned,
    );
    let guards = format!(
        "  - name: no-admin\n    path: {:?}\n  - name: no-etc-delete\n    path: {:?}\n",
        scope.display().to_string(),
        etc.display().to_string()
    );
    let cfg = config(
        dir.path(),
        &guards,
        &stdio_upstream("files", &seen_log),
        "  agent_scopes:\n    root-agent: [\"fs:admin\"]\n",
    );
    let gw = HttpGateway::start(&cfg);
    let root = gw.agent("root-agent").await;
    let coder = gw.agent("coder-agent").await;

    let (is_error, text) = call(&root, "echo", json!({"text": "hi"})).await;
    assert!(is_error && text.contains("fs:admin"), "the agent's scopes reach the guard: {text}");
    let (is_error, text) = call(&coder, "delete_file", json!({"path": "/etc/passwd"})).await;
    assert!(is_error && text.contains("file_delete"), "{text}");
    assert_eq!(call(&coder, "delete_file", json!({"path": "/tmp/x"})).await, (false, "deleted /tmp/x".into()));
    assert_eq!(
        call(&coder, "read_file", json!({"path": "/etc/passwd"})).await,
        (false, "contents of /etc/passwd".into())
    );
    assert_eq!(call(&coder, "echo", json!({"text": "hi"})).await, (false, "files echo: hi".into()));
    let seen: Vec<String> = seen(&seen_log).into_iter().map(|(t, a)| format!("{t} {}", a)).collect();
    assert_eq!(
        seen,
        [r#"delete_file {"path":"/tmp/x"}"#, r#"read_file {"path":"/etc/passwd"}"#, r#"echo {"text":"hi"}"#]
    );
}
