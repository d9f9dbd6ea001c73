//! Upstreams over stdio and HTTP, name collisions, and upstreams that die or hang.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn config(dir: &std::path::Path, upstreams: &str, gateway: &str) -> std::path::PathBuf {
    let path = dir.join("chio.yaml");
    std::fs::write(&path, format!("upstreams:\n{upstreams}gateway:\n  reload_poll_ms: 0\n{gateway}")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_dies_mid_call_gives_a_clear_error_and_the_next_call_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let cfg = config(dir.path(), &stdio_upstream("files", &seen_log), "");
    let agent = stdio_agent(&cfg, "coder-agent").await;
    let t = Instant::now();
    let (is_error, text) = call(&agent, "crash", json!({"reason": "boom"})).await;
    assert!(is_error, "{text}");
    assert!(text.contains("upstream \"files\" closed the connection during tools/call \"crash\""), "{text}");
    assert!(t.elapsed() < Duration::from_secs(20), "the agent learns at once, not after the call timeout");
    // The session goes on: the next call starts the server again.
    let (is_error, text) = call(&agent, "echo", json!({"text": "again"})).await;
    assert_eq!((is_error, text.as_str()), (false, "files echo: again"));
    agent.cancel().await.unwrap();
    let tools: Vec<String> = seen(&seen_log).into_iter().map(|(t, _)| t).collect();
    assert_eq!(tools, ["crash", "echo"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_hangs_answers_with_a_timeout_error_and_other_calls_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let cfg = config(dir.path(), &stdio_upstream("files", &seen_log), "  call_timeout_ms: 1500\n");
    let gw = HttpGateway::start(&cfg);
    let agent = gw.agent("slow-agent").await;
    let other = gw.agent("fast-agent").await;
    let hang = tokio::spawn(async move {
        let t = Instant::now();
        let r = call(&agent, "hang", json!({"seconds": 600})).await;
        (r, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (is_error, text) = call(&other, "echo", json!({"text": "meanwhile"})).await;
    assert_eq!((is_error, text.as_str()), (false, "files echo: meanwhile"), "a hung call does not block others");
    let ((is_error, text), took) = hang.await.unwrap();
    assert!(
        is_error && text.contains("upstream \"files\" did not answer tools/call \"hang\" within 1500 ms"),
        "{text}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_stdio_upstreams_side_by_side_get_server_prefixes_when_names_collide() {
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let web = HttpUpstream::start(&seen_log);
    let upstreams = format!("{}  - id: web\n    url: {}\n", stdio_upstream("files", &seen_log), web.url);
    let cfg = config(dir.path(), &upstreams, "");
    let agent = stdio_agent(&cfg, "coder-agent").await;
    let tools: Vec<String> = agent.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(tools.contains(&"files__echo".into()) && tools.contains(&"web__echo".into()), "{tools:?}");
    assert!(!tools.contains(&"echo".into()), "{tools:?}");
    assert_eq!(call(&agent, "web__echo", json!({"text": "a"})).await, (false, "web echo: a".into()));
    assert_eq!(call(&agent, "files__echo", json!({"text": "b"})).await, (false, "files echo: b".into()));
    let unknown = agent
        .call_tool({
            let mut p = rmcp::model::CallToolRequestParams::new("nope");
            p.arguments = json!({}).as_object().cloned();
            p
        })
        .await;
    assert!(unknown.unwrap_err().to_string().contains("unknown tool \"nope\""));
    agent.cancel().await.unwrap();
}

#[test]
fn an_unreachable_upstream_stops_the_gateway_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "  - id: ghost\n    command: /nonexistent/mcp-server\n", "");
    let out = std::process::Command::new(GATEWAY).arg("--config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstream \"ghost\" is unreachable") && err.contains("/nonexistent/mcp-server"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_body_over_the_request_cap_is_refused_with_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let seen_log = dir.path().join("seen.jsonl");
    let cfg = config(dir.path(), &stdio_upstream("files", &seen_log), "  max_request_bytes: 4096\n");
    let gw = HttpGateway::start(&cfg);
    let addr = gw.url.trim_start_matches("http://").trim_end_matches("/mcp").to_string();
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(8192)
    );
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(seen(&seen_log).is_empty());
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
fn self_signed_ca(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]
        .iter()
        .copied()
        .chain(["-subj", "/CN=helios test CA"])
        .collect::<Vec<_>>());
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_is_reached_through_its_private_ca_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    self_signed_ca(dir.path());
    let seen_log = dir.path().join("seen.jsonl");
    let port = free_port();
    let mut upstream = std::process::Command::new("python3")
        .arg(fixtures().join("upstream_server.py"))
        .args(["https", &port.to_string()])
        .arg(dir.path().join("server.pem"))
        .arg(dir.path().join("server.key"))
        .env("SEEN_LOG", &seen_log)
        .env("SERVER_NAME", "secure")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs the upstream fixture");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the HTTPS upstream did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("https://127.0.0.1:{port}/mcp");

    // With the CA: the TLS handshake verifies and calls go through.
    let cfg = config(dir.path(), &format!("  - id: secure\n    url: {url}\n    ca_file: ca.pem\n"), "");
    let gw = HttpGateway::start(&cfg);
    let agent = gw.agent("tls-agent").await;
    let (is_error, text) = call(&agent, "echo", json!({"text": "over tls"})).await;
    assert_eq!((is_error, text.as_str()), (false, "secure echo: over tls"));
    let _ = agent.cancel().await;
    drop(gw);

    // Without it the certificate is not trusted: the gateway refuses to start, naming the upstream.
    let cfg = config(dir.path(), &format!("  - id: secure\n    url: {url}\n"), "  connect_timeout_ms: 5000\n");
    let out = std::process::Command::new(GATEWAY).arg("--config").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("upstream \"secure\" is unreachable"), "{err}");
    // A ca_file that is not a certificate is a config error naming the field.
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    let cfg = config(dir.path(), &format!("  - id: secure\n    url: {url}\n    ca_file: bad.pem\n"), "");
    let out = std::process::Command::new(GATEWAY).arg("--config").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ca_file") && err.contains("no PEM certificate"), "{err}");
    let _ = upstream.kill();
    let _ = upstream.wait();
    assert_eq!(seen(&seen_log).len(), 1, "only the call over verified TLS reached the server");
}
