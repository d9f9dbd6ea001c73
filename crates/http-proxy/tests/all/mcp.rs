//! `plugin_introspect` with a real MCP client session (the Python `mcp` SDK): initialize,
//! tools/list, tools/call, over stdio and over streamable HTTP; redact_keys never leak.

use crate::support::*;
use serde_json::{Value, json};

const CLIENT: &str = r#"
import sys, json, asyncio
from mcp import ClientSession

def attr(o, *names):
    # The SDK's models use camelCase in 1.x and snake_case in 2.x.
    for n in names:
        if o is not None and hasattr(o, n):
            return getattr(o, n)
    return None

async def session(read, write):
    async with ClientSession(read, write) as s:
        init = await s.initialize()
        tools = await s.list_tools()
        res = await s.call_tool("plugin_introspect", {})
        text = "".join(c.text for c in res.content if getattr(c, "type", "") == "text")
        print(json.dumps({
            "server": attr(attr(init, "server_info", "serverInfo"), "name"),
            "tools": [{"name": t.name, "readOnly": bool(attr(t.annotations, "read_only_hint", "readOnlyHint"))} for t in tools.tools],
            "isError": bool(attr(res, "is_error", "isError")),
            "text": text,
        }))

async def main():
    kind = sys.argv[1]
    if kind == "http":
        from mcp.client.streamable_http import streamable_http_client
        async with streamable_http_client(sys.argv[2]) as streams:
            await session(streams[0], streams[1])
    else:
        from mcp.client.stdio import stdio_client, StdioServerParameters
        params = StdioServerParameters(command=sys.argv[2], args=["--config", sys.argv[3], "--mcp-stdio"])
        async with stdio_client(params) as (read, write):
            await session(read, write)

asyncio.run(main())
"#;

const SECRET: &str = "Bearer very-secret-token-123";

fn plugins() -> Value {
    json!([
        {"path": "block_path.star", "vars": {"prefixes": "/admin"}},
        {"path": "add_auth_header.star", "vars": {"token": SECRET, "note": "visible"}, "redact_keys": ["token"], "on_error": "abort", "max_steps": 5000},
        {"path": "count_clients.star"}
    ])
}

fn check(out: &str) {
    assert!(!out.contains("very-secret-token"), "a redacted value leaked: {out}");
    let got: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got["tools"], json!([{"name": "plugin_introspect", "readOnly": true}]));
    assert_eq!(got["isError"], false);
    let doc: Value = serde_json::from_str(got["text"].as_str().unwrap()).unwrap();
    let p = &doc["plugins"];
    assert_eq!(p.as_array().unwrap().len(), 3);
    assert_eq!(p[1]["name"], "add_auth_header");
    assert_eq!(p[1]["backend"], "starlark");
    assert_eq!(p[1]["on_error"], "abort");
    assert_eq!(p[1]["max_steps"], 5000);
    assert_eq!(p[1]["vars"], json!({"token": "<redacted>", "note": "visible"}));
    assert_eq!(p[1]["registrations"], json!([{"protocol": "http", "event": "on_request", "phase": "pre_pipeline"}]));
    assert_eq!(
        p[2]["registrations"],
        json!([
            {"protocol": "connection", "event": "on_connect", "phase": "none"},
            {"protocol": "http", "event": "on_request", "phase": "pre_pipeline"},
            {"protocol": "http", "event": "on_response", "phase": "pre_pipeline"}
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_introspect_over_streamable_http() {
    let up = upstream().await;
    let s = Setup::with_examples();
    let cfg = s.config(up, plugins(), json!({"mcp_listen": "127.0.0.1:0"}));
    let proxy = spawn(&cfg, true);
    // Some traffic first, so counters are non-zero and the secret has been used.
    let (_, out) = curl(&[&format!("http://{}/x", proxy.addr)]).await;
    assert!(out.contains("very-secret-token"), "the plugin does use the secret: {out}");
    let out = python(CLIENT, &["http".into(), proxy.mcp.clone().unwrap()]).await;
    check(&out);
    let got: Value = serde_json::from_str(out.trim()).unwrap();
    let doc: Value = serde_json::from_str(got["text"].as_str().unwrap()).unwrap();
    assert_eq!(doc["plugins"][1]["calls"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_introspect_over_stdio() {
    let up = upstream().await;
    let s = Setup::with_examples();
    let cfg = s.config(up, plugins(), json!({}));
    let out = python(CLIENT, &["stdio".into(), bin().into(), cfg.display().to_string()]).await;
    check(&out);
}
