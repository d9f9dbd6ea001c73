//! The HTTP host with real clients (curl, Python httpx) against a real upstream on loopback.

use crate::support::*;
use serde_json::{Value, json};

fn examples_plugins() -> Value {
    json!([
        {"path": "block_path.star", "vars": {"prefixes": "/admin, /internal"}},
        {"path": "add_auth_header.star", "vars": {"token": "Bearer example-token"}, "redact_keys": ["token"]},
        {"path": "count_clients.star"},
        {"path": "redact_json.star", "vars": {"field": "password"}}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_scripts_through_curl_in_reverse_mode() {
    let up = upstream().await;
    let s = Setup::with_examples();
    let proxy = start(&s.config(up, examples_plugins(), json!({}))).await;
    let base = format!("http://{}", proxy.addr);

    // The auth header from vars reaches the upstream; the per-client count goes up.
    let (code, out) = curl(&["-i", &format!("{base}/api/items?x=1")]).await;
    assert_eq!(code, 0);
    let (status, headers, body) = parse_http(&out);
    assert_eq!(status, 200, "{out}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["authorization"], "Bearer example-token");
    assert_eq!((seen["path"].as_str(), seen["query"].as_str()), (Some("/api/items"), Some("x=1")));
    assert_eq!(seen["headers"]["x-client-requests"], "1");
    assert_eq!(header(&headers, "x-client-requests"), Some("1"));

    // A client's own Authorization header is kept.
    let (_, out) = curl(&["-H", "Authorization: Basic abc", &format!("{base}/api")]).await;
    let seen: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(seen["headers"]["authorization"], "Basic abc");
    assert_eq!(seen["headers"]["x-client-requests"], "2");

    // Blocked paths are answered by the plugin; the upstream never sees them.
    let (_, out) = curl(&["-i", &format!("{base}/admin/users")]).await;
    let (status, headers, body) = parse_http(&out);
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "x-blocked-by"), Some("block_path"));
    assert!(body.contains("blocked by policy: /admin"), "{body}");
    let (_, out) = curl(&["-i", &format!("{base}/administrator")]).await;
    assert_eq!(parse_http(&out).0, 200, "a prefix match is on path segments");

    // A JSON field is redacted in responses, at any depth.
    let (_, out) = curl(&[&format!("{base}/user")]).await;
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc,
        json!({"name": "ann", "password": "[redacted]", "sessions": [{"id": 1, "password": "[redacted]"}]})
    );
    proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_and_http2_upstream() {
    let up = upstream().await;
    let s = Setup::with_examples();
    let proxy = start(&s.config(up, examples_plugins(), json!({"upstream_http2": true}))).await;
    let (code, out) = curl(&["--http2-prior-knowledge", "-i", &format!("http://{}/h2", proxy.addr)]).await;
    assert_eq!(code, 0, "{out}");
    let (status, _, body) = parse_http(&out);
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["version"], "HTTP/2.0", "upstream spoken to over HTTP/2");
    assert_eq!(seen["headers"]["authorization"], "Bearer example-token");
    let (_, out) = curl(&["--http2-prior-knowledge", "-i", &format!("http://{}/internal", proxy.addr)]).await;
    assert!(out.starts_with("HTTP/2 403"), "{out}");
    proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_proxy_with_curl_and_connect_tunnel() {
    let up = upstream().await;
    let s = Setup::with_examples();
    let proxy = start(&s.config(up, examples_plugins(), json!({"mode": "forward"}))).await;
    let px = format!("http://{}", proxy.addr);
    let (code, out) = curl(&["-x", &px, &format!("http://{up}/via-forward")]).await;
    assert_eq!(code, 0, "{out}");
    let seen: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(seen["path"], "/via-forward");
    assert_eq!(seen["headers"]["authorization"], "Bearer example-token");
    let (_, out) = curl(&["-i", "-x", &px, &format!("http://{up}/admin")]).await;
    assert_eq!(parse_http(&out).0, 403);
    // CONNECT: a tunnel to the upstream; curl speaks HTTP inside it.
    let (code, out) = curl(&["-p", "-x", &px, &format!("http://{up}/tunneled")]).await;
    assert_eq!(code, 0, "{out}");
    let seen: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(seen["path"], "/tunneled");
    assert!(seen["headers"].get("authorization").is_none(), "hooks do not see inside a tunnel");
    // An origin-form request to a forward proxy is refused with the reason.
    let (_, out) = curl(&["-i", &format!("{px}/no-target")]).await;
    let (status, _, body) = parse_http(&out);
    assert_eq!(status, 400);
    assert!(body.contains("absolute"), "{body}");
    proxy.stop();
}

const STREAM_CHECK: &str = r#"
def req(msg, ctx):
    msg["headers"]["x-hook-saw-streamed"] = str(msg["body_streamed"])
    if not msg["body_streamed"]:
        msg["body"] = msg["body"].upper()
def resp(msg, ctx):
    msg["headers"]["x-hook-saw-streamed"] = str(msg["body_streamed"])
register_hook("http", "on_request", req)
register_hook("http", "on_response", resp)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_within_the_cap_are_mutable_and_larger_ones_stream_unchanged() {
    let up = upstream().await;
    let s = Setup::new(&[("stream.star", STREAM_CHECK)]);
    let proxy = start(&s.config(up, json!([{"path": "stream.star"}]), json!({"body_cap": 65536}))).await;
    let base = format!("http://{}", proxy.addr);

    let (_, out) = curl(&["--data-binary", "small body", &format!("{base}/small")]).await;
    let seen: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(seen["body"], "SMALL BODY");
    assert_eq!(seen["headers"]["x-hook-saw-streamed"], "False");
    assert_eq!(seen["body_len"], 10, "content-length follows the new body");

    // 1 MiB upload, declared and chunked: the hook is told, the bytes pass unchanged.
    let big = s.path("big.bin");
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &data).unwrap();
    let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
    for chunked in [false, true] {
        let mut args = vec!["--data-binary".to_string(), format!("@{}", big.display())];
        if chunked {
            args.extend(["-H".into(), "Transfer-Encoding: chunked".into()]);
        }
        args.push(format!("{base}/upload"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = curl(&args).await;
        assert_eq!(code, 0);
        let seen: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(seen["body_len"], 1 << 20, "chunked={chunked}");
        assert_eq!(seen["body_sha256"], want.as_str(), "chunked={chunked}");
        assert_eq!(seen["headers"]["x-hook-saw-streamed"], "True", "chunked={chunked}");
    }

    // A large response streams through unchanged with the hook told so.
    let (_, out) = curl(&["-i", &format!("{base}/big?n=300000")]).await;
    let (status, headers, body) = parse_http(&out);
    assert_eq!(status, 200);
    assert_eq!(body.len(), 300000);
    assert_eq!(header(&headers, "x-hook-saw-streamed"), Some("True"));
    proxy.stop();
}

const ORDER_A: &str = r#"
def h(msg, ctx):
    msg["headers"]["x-order"] = "a"
register_hook("http", "on_request", h)
register_hook("http", "on_request", lambda msg, ctx: msg["headers"].update({"x-order": msg["headers"]["x-order"] + ",a2"}))
"#;
const ORDER_B: &str = r#"
def post(msg, ctx):
    msg["headers"]["x-order"] = msg["headers"]["x-order"] + ",b-post"
def pre(msg, ctx):
    msg["headers"]["x-order"] = msg["headers"].get("x-order", "") + ",b"
register_hook("http", "on_request", post, phase = "post_pipeline")
register_hook("http", "on_request", pre)
"#;
const FAILING: &str = r#"
def h(msg, ctx):
    msg["headers"]["x-order"] = "clobbered"
    fail("deliberate failure in " + ctx.plugin)
register_hook("http", "on_request", h)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_mutation_visibility_and_skip_versus_abort() {
    let up = upstream().await;
    let s = Setup::new(&[("a.star", ORDER_A), ("b.star", ORDER_B), ("failing.star", FAILING)]);

    // Plugin order, then registration order; pre_pipeline before post_pipeline; a skipped
    // failure changes nothing.
    let plugins = json!([{"path": "a.star"}, {"path": "failing.star"}, {"path": "b.star"}]);
    let proxy = start(&s.config(up, plugins, json!({}))).await;
    let (_, out) = curl(&[&format!("http://{}/o", proxy.addr)]).await;
    let seen: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(seen["headers"]["x-order"], "a,a2,b,b-post");
    let doc = helios_http_proxy::mcp::introspect(&proxy.chain);
    assert_eq!(doc["plugins"][1]["name"], "failing");
    assert_eq!(doc["plugins"][1]["errors"], 1);
    assert_eq!(doc["plugins"][2]["calls"], 2);
    proxy.stop();

    // on_error = abort: the request is refused, naming the plugin and its error.
    let plugins = json!([{"path": "a.star"}, {"path": "failing.star", "on_error": "abort"}, {"path": "b.star"}]);
    let proxy = start(&s.config(up, plugins, json!({}))).await;
    let (_, out) = curl(&["-i", &format!("http://{}/o", proxy.addr)]).await;
    let (status, headers, body) = parse_http(&out);
    assert_eq!(status, 502);
    assert_eq!(header(&headers, "x-helios-aborted-by"), Some("failing"));
    assert!(body.contains("deliberate failure in failing"), "{body}");
    let doc = helios_http_proxy::mcp::introspect(&proxy.chain);
    assert_eq!(doc["plugins"][2]["calls"], 0, "nothing after an abort runs");
    proxy.stop();
}

const DROPPER: &str = r#"
def conn(msg, ctx):
    if state.incr("conns") == 2:
        return action.DROP
def req(msg, ctx):
    if msg["path"] == "/drop":
        return action.DROP
def bye(msg, ctx):
    state.incr("disconnects")
    return action.DROP  # not allowed on on_disconnect: treated as continue
def report(msg, ctx):
    msg["headers"]["x-disconnects"] = str(state.get("disconnects", 0))
register_hook("connection", "on_connect", conn)
register_hook("connection", "on_disconnect", bye)
register_hook("http", "on_request", req)
register_hook("http", "on_response", report)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_actions_on_requests_and_connections() {
    let up = upstream().await;
    let s = Setup::new(&[("drop.star", DROPPER)]);
    let proxy = start(&s.config(up, json!([{"path": "drop.star"}]), json!({}))).await;
    let base = format!("http://{}", proxy.addr);
    // 1st connection: fine.
    let (code, _) = curl(&[&format!("{base}/ok")]).await;
    assert_eq!(code, 0);
    // 2nd connection: refused at on_connect (curl: empty reply / connection reset).
    let (code, _) = curl(&[&format!("{base}/ok")]).await;
    assert!(code == 52 || code == 56, "curl exit {code}");
    // 3rd: the request is dropped: no answer at all.
    let (code, out) = curl(&[&format!("{base}/drop")]).await;
    assert!(code == 52 || code == 56, "curl exit {code}: {out}");
    // 4th: on_disconnect ran for the earlier connections that were served (1st and 3rd; the
    // refused one never got that far).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, out) = curl(&["-i", &format!("{base}/ok")]).await;
    let (_, headers, _) = parse_http(&out);
    let n: u32 = header(&headers, "x-disconnects").unwrap().parse().unwrap();
    assert!(n >= 2, "{n}");
    proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpx_client_through_the_proxy() {
    let up = upstream().await;
    let s = Setup::with_examples();
    let proxy = start(&s.config(up, examples_plugins(), json!({}))).await;
    let script = r#"
import sys, json, httpx
base = sys.argv[1]
with httpx.Client(base_url=base, timeout=20) as c:
    r = c.post("/items", json={"a": 1})
    seen = r.json()
    r2 = c.get("/admin/x")
    r3 = c.get("/user")
    print(json.dumps({"auth": seen["headers"].get("authorization"), "body": seen["body"],
                      "count": r.headers.get("x-client-requests"), "blocked": r2.status_code,
                      "user": r3.json()}))
"#;
    let out = python(script, &[format!("http://{}", proxy.addr)]).await;
    let got: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got["auth"], "Bearer example-token");
    assert_eq!(got["body"], "{\"a\":1}");
    assert_eq!(got["count"], "1");
    assert_eq!(got["blocked"], 403);
    assert_eq!(got["user"]["password"], "[redacted]");
    proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_config_is_refused_at_start_with_the_migration_message() {
    let up = upstream().await;
    let s = Setup::with_examples();
    let cfg = s.config(
        up,
        json!([{"path": "add_auth_header.star", "protocol": "http", "hooks": ["on_receive_from_client"]}]),
        json!({}),
    );
    let out = std::process::Command::new(bin()).arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(helios_plugin_starlark::MIGRATION_MESSAGE), "{err}");
    // A script that fails to load stops the start too, naming the plugin.
    std::fs::write(
        s.path("broken.star"),
        "register_hook(\"connection\", \"on_connect\", lambda m, c: None, phase = \"post_pipeline\")",
    )
    .unwrap();
    let cfg = s.config(up, json!([{"path": "broken.star"}]), json!({}));
    let out = std::process::Command::new(bin()).arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"broken\"") && err.contains("takes no phase="), "{err}");
}

const PERSIST: &str = r#"
def h(msg, ctx):
    n = store.incr("total")
    v = state.incr("volatile")
    msg["headers"]["x-total"] = str(n)
    msg["headers"]["x-volatile"] = str(v)
register_hook("http", "on_request", h)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_survives_a_process_restart_and_state_does_not() {
    let up = upstream().await;
    let s = Setup::new(&[("persist.star", PERSIST)]);
    let cfg = s.config(up, json!([{"path": "persist.star"}]), json!({"store_path": "plugins.db"}));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let p = spawn(&cfg, false);
        for _ in 0..2 {
            let (_, out) = curl(&[&format!("http://{}/p", p.addr)]).await;
            let v: Value = serde_json::from_str(&out).unwrap();
            seen.push((
                v["headers"]["x-total"].as_str().unwrap().to_string(),
                v["headers"]["x-volatile"].as_str().unwrap().to_string(),
            ));
        }
    }
    let want: Vec<(String, String)> =
        [("1", "1"), ("2", "2"), ("3", "1"), ("4", "2")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(seen, want);
    assert!(s.path("plugins.db").exists());
}
