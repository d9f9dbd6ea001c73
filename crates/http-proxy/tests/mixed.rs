//! One chain mixing WASM and Starlark plugins in config order, through curl and a real upstream.
//! Needs the guests built (`cargo xtask build-examples`; `cargo xtask test` does it first).

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::*;

fn wasm_module() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let p = target.join("wasm32-unknown-unknown/guest/http_header_wasm.wasm");
    assert!(p.exists(), "{} is missing: run `cargo xtask build-examples` first", p.display());
    p
}

const FIRST: &str = r#"
def h(msg, ctx):
    msg["headers"]["x-order"] = "star1"
register_hook("http", "on_request", h)
"#;
const LAST: &str = r#"
def h(msg, ctx):
    # Sees what the WASM plugin before it wrote.
    msg["headers"]["x-order"] = msg["headers"]["x-order"] + ",star2(" + msg["headers"]["x-tenant"] + ")"
def resp(msg, ctx):
    msg["headers"]["x-star-saw"] = msg["headers"].get("x-wasm-seen-status", "nothing")
register_hook("http", "on_request", h)
register_hook("http", "on_response", resp)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_and_starlark_in_one_chain_in_config_order() {
    let up = upstream().await;
    let s = Setup::new(&[("first.star", FIRST), ("last.star", LAST)]);
    std::fs::copy(wasm_module(), s.path("header.wasm")).unwrap();
    let plugins = json!([
        {"path": "first.star"},
        {"path": "header.wasm", "vars": {"header": "x-tenant", "value": "acme"}},
        {"path": "last.star"}
    ]);
    let proxy = start(&s.config(up, plugins, json!({}))).await;
    let (_, out) = curl(&["-i", &format!("http://{}/mixed", proxy.addr)]).await;
    let (status, headers, body) = parse_http(&out);
    assert_eq!(status, 200, "{out}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-order"], "star1,wasm,star2(acme)");
    assert_eq!(seen["headers"]["x-tenant"], "acme");
    // Response hooks: WASM first (config order), then the script sees its header.
    assert_eq!(header(&headers, "x-wasm-seen-status"), Some("200"));
    assert_eq!(header(&headers, "x-star-saw"), Some("200"));

    let doc = helios_http_proxy::mcp::introspect(&proxy.chain);
    let backends: Vec<&str> =
        doc["plugins"].as_array().unwrap().iter().map(|p| p["backend"].as_str().unwrap()).collect();
    assert_eq!(backends, ["starlark", "wasm", "starlark"]);
    assert_eq!(
        doc["plugins"][1]["registrations"],
        json!([
            {"protocol": "http", "event": "on_request", "phase": "pre_pipeline"},
            {"protocol": "http", "event": "on_response", "phase": "pre_pipeline"}
        ])
    );
    proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_module_without_http_hooks_is_refused_naming_it() {
    let up = upstream().await;
    let s = Setup::new(&[]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    std::fs::copy(target.join("wasm32-unknown-unknown/guest/tool_denylist.wasm"), s.path("guard.wasm")).unwrap();
    let cfg = helios_http_proxy::Config::load(&s.config(up, json!([{"path": "guard.wasm"}]), json!({}))).unwrap();
    let services = helios_http_proxy::services(&cfg).unwrap();
    let err = helios_http_proxy::build_chain(&cfg, &services).unwrap_err();
    assert!(err.contains("\"guard\"") && err.contains("exports no HTTP or connection hook"), "{err}");
}
