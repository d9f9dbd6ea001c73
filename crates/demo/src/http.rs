//! A few HTTP requests through helios-http-proxy with one chain mixing Starlark scripts
//! (examples/http-scripts) and a signed WASM plugin (examples/http-header-wasm), in config order,
//! against a real upstream on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use helios_plugin_artefact::{keys, signing};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

/// The upstream: echoes the request headers it got as JSON; `/user` answers a document with a
/// password in it.
async fn upstream() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = if req.uri().path() == "/user" {
                        json!({"name": "ann", "password": "hunter2"})
                    } else {
                        let headers: serde_json::Map<String, Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or("?"))))
                            .collect();
                        json!({"path": req.uri().path(), "headers": headers})
                    };
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

/// Writes the proxy's config and the signed module under `dir`; returns the config's path.
fn setup(root: &Path, dir: &Path, upstream: SocketAddr) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir.join("trusted"))?;
    let scripts = root.join("examples/http-scripts");
    let wasm_path = helios_plugin_test_support::guest_path("http-header-wasm");
    let wasm = std::fs::read(&wasm_path)
        .with_context(|| format!("reading {} (run `cargo xtask build-examples`)", wasm_path.display()))?;
    let key = keys::generate_signing_key()?;
    std::fs::write(dir.join("trusted/demo.pub"), keys::public_key_base64(&key.verifying_key()))?;
    std::fs::write(dir.join("header.wasm"), &wasm)?;
    let sidecar = signing::sign_module(&key, &wasm, "http-header-wasm", "1.0.0");
    std::fs::write(dir.join("header.wasm.sig"), signing::sidecar_bytes(&sidecar))?;
    let config = json!({
        "listen": "127.0.0.1:0",
        "upstream": format!("http://{upstream}"),
        "verify_with": "trusted",
        "plugins": [
            {"path": scripts.join("block_path.star"), "vars": {"prefixes": "/admin"}},
            {"path": scripts.join("add_auth_header.star"), "vars": {"token": "Bearer demo-token"}, "redact_keys": ["token"]},
            {"path": "header.wasm", "vars": {"header": "x-tenant", "value": "acme"}},
            {"path": scripts.join("count_clients.star")},
            {"path": scripts.join("redact_json.star"), "vars": {"field": "password"}}
        ]
    });
    let path = dir.join("proxy.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    Ok(path)
}

/// Runs the HTTP part of the demo: the chain as loaded, then each request with what the client
/// and the upstream saw, then the host's per-plugin counters.
pub fn requests(root: &Path, work: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let up = upstream().await?;
        let config_path = setup(root, &work.join("http"), up)?;
        let config = helios_http_proxy::Config::load(&config_path).map_err(anyhow::Error::msg)?;
        let services = helios_http_proxy::services(&config).map_err(anyhow::Error::msg)?;
        let chain = Arc::new(helios_http_proxy::build_chain(&config, &services).map_err(anyhow::Error::msg)?);
        println!("  config   {}", config_path.display());
        for m in chain.members() {
            let points: Vec<String> = m.points().iter().map(|p| p.to_string()).collect();
            println!("  chain    {:<18} {:<8} {}", m.plugin().name(), m.backend(), points.join(" "));
        }
        let running = helios_http_proxy::start(config, chain.clone()).await?;
        println!("  proxy    http://{} → upstream http://{up}\n", running.addr);

        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        for path in ["/hello", "/admin/users", "/user", "/hello"] {
            let uri: hyper::Uri = format!("http://{}{path}", running.addr).parse()?;
            let resp = client.request(Request::get(uri).body(Full::new(Bytes::new()))?).await?;
            let status = resp.status().as_u16();
            let count =
                resp.headers().get("x-client-requests").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            let seen =
                resp.headers().get("x-wasm-seen-status").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            let body = resp.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&body).trim().to_string();
            println!("  GET {path:<13} → {status}  x-client-requests={count} x-wasm-seen-status={seen}");
            match serde_json::from_str::<Value>(&text) {
                Ok(doc) if doc.get("headers").is_some() => {
                    let h = &doc["headers"];
                    println!(
                        "      upstream saw authorization={} x-tenant={} x-client-requests={}",
                        h["authorization"], h["x-tenant"], h["x-client-requests"]
                    );
                }
                _ => println!("      body {text}"),
            }
        }
        println!("\n  {:<18} {:<8} {:>5} {:>8}", "plugin", "backend", "calls", "failures");
        for m in chain.members() {
            let s = m.stats();
            println!("  {:<18} {:<8} {:>5} {:>8}", m.plugin().name(), m.backend(), s.calls, s.failures);
        }
        running.stop();
        Ok(())
    })
}
