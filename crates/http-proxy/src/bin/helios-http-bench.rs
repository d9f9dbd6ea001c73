//! `helios-http-bench`: the HTTP host's bench rows, in one run on one machine.
//!
//! * the same header-adding logic as a native hook, a Starlark hook and a WASM hook: time per hook
//!   call (the chain alone) and requests/s through the proxy;
//! * requests/s through the proxy with 0 plugins and with the 4 example scripts, beside the
//!   upstream alone.
//!
//! Usage: `helios-http-bench [--secs 3] [--conns 16] [--wasm path/to/http_header_wasm.wasm]`
//! (build with `--release`; the wasm comes from `cargo xtask build-examples`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use helios_http_proxy::chain::{Chain, Member};
use helios_http_proxy::{Config, Mode};
use helios_plugin_host::schema::Hook;
use helios_plugin_starlark::{HookContext, Phase, PluginEntry, Services, Verdict};
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value as Json, json};

/// The native twin of the header scripts: sets one header.
fn native_header(_hook: Hook, msg: &mut Json, _ctx: &HookContext) -> Verdict {
    if let Some(h) = msg.get_mut("headers").and_then(Json::as_object_mut) {
        h.insert("x-wasm".into(), Json::from("added-by-wasm"));
    }
    Verdict::Continue
}

const STAR_HEADER: &str = r#"
def h(msg, ctx):
    msg["headers"]["x-wasm"] = "added-by-wasm"
register_hook("http", "on_request", h)
"#;

struct Args {
    secs: u64,
    conns: usize,
    wasm: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args { secs: 3, conns: 16, wasm: None };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--secs" => a.secs = v.parse().unwrap_or(3),
            "--conns" => a.conns = v.parse().unwrap_or(16),
            "--wasm" => a.wasm = Some(PathBuf::from(v)),
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    a
}

async fn upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

/// Requests/s against `addr` with `conns` keep-alive connections for `secs`.
async fn load(addr: SocketAddr, conns: usize, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (done, stop) = (done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build_http();
            let uri: hyper::Uri = format!("http://{addr}/bench").parse().expect("uri");
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get(uri.clone()).body(Empty::new()).expect("request");
                match client.request(req).await {
                    Ok(r) => {
                        let ok = r.status().is_success();
                        let _ = r.into_body().collect().await;
                        if ok {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // warm-up
    let start_count = done.load(Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = done.load(Ordering::Relaxed) - start_count;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    rate
}

fn config(upstream: SocketAddr) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        mode: Mode::Reverse,
        upstream: Some(format!("http://{upstream}").parse().expect("uri")),
        upstream_http2: false,
        body_cap: 1 << 20,
        store_path: None,
        mcp_listen: None,
        verify_with: None,
        blocklist: None,
        plugins: Vec::new(),
    }
}

/// Microseconds per `fire` of http/on_request through `chain` (best of 5 batches).
fn per_call(chain: &Chain) -> f64 {
    let msg = json!({"method": "GET", "url": "http://x/bench", "path": "/bench", "query": "", "version": "HTTP/1.1",
        "headers": {"host": "127.0.0.1", "user-agent": "bench", "accept": "*/*"}, "body": "", "body_streamed": false, "client": "127.0.0.1:1"});
    let ctx = HookContext::default();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            let mut m = msg.clone();
            let _ = chain.fire("http", "on_request", Phase::PrePipeline, &mut m, &ctx);
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    best
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let dir = tempfile_dir();
    std::fs::write(dir.join("header.star"), STAR_HEADER).expect("write script");
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/http-scripts");
    let services = Services::new(helios_plugin_starlark::HostHooks::http_proxy());
    let up = upstream().await;

    let mut rows: Vec<(String, Option<f64>, f64)> = Vec::new();
    let direct = load(up, a.conns, a.secs).await;
    rows.push(("upstream alone (no proxy)".into(), None, direct));

    let rt = helios_plugin_host::Runtime::new(helios_plugin_host::RuntimeConfig::default()).expect("runtime");
    let chain_of = |members: Vec<Member>| {
        let mut c = Chain::new();
        for m in members {
            c.push(m);
        }
        c
    };
    let mut chains: Vec<(String, Chain)> = vec![("proxy, 0 plugins".into(), Chain::new())];
    let native = Member::native(&rt, "native-header", &[Hook::HttpRequest], native_header).expect("native");
    chains.push(("proxy + header hook, native".into(), chain_of(vec![native])));
    let star = Member::script(&rt, &PluginEntry::new(dir.join("header.star")), &services).expect("script");
    chains.push(("proxy + header hook, Starlark".into(), chain_of(vec![star])));
    if let Some(w) = &a.wasm {
        let entry = PluginEntry { unsigned: true, ..PluginEntry::new(w) };
        let wasm = helios_http_proxy::wasm::load(&rt, &Default::default(), &entry).expect("wasm plugin");
        chains.push(("proxy + header hook, WASM".into(), chain_of(vec![wasm])));
    }
    let entries = [
        json!({"path": examples.join("block_path.star"), "vars": {"prefixes": "/admin"}}),
        json!({"path": examples.join("add_auth_header.star"), "vars": {"token": "Bearer x"}}),
        json!({"path": examples.join("count_clients.star")}),
        json!({"path": examples.join("redact_json.star")}),
    ];
    let mut four = Vec::new();
    for e in helios_plugin_starlark::parse_plugins(&Json::Array(entries.to_vec())).expect("entries") {
        four.push(Member::script(&rt, &e, &services).expect("example script"));
    }
    chains.push(("proxy + the 4 example scripts".into(), chain_of(four)));

    for (label, chain) in chains {
        let chain = Arc::new(chain);
        let hook_us = if chain.is_empty() { None } else { Some(per_call(&chain)) };
        let running = helios_http_proxy::start(config(up), chain).await.expect("start proxy");
        let rate = load(running.addr, a.conns, a.secs).await;
        running.stop();
        rows.push((label, hook_us, rate));
    }

    println!("| configuration | hook µs/call (chain alone) | requests/s | vs upstream alone |");
    println!("|---|---|---|---|");
    for (label, us, rate) in rows {
        let us = us.map(|u| format!("{u:.2}")).unwrap_or_else(|| "–".into());
        println!("| {label} | {us} | {rate:.0} | {:.2}× |", rate / direct);
    }
    println!(
        "\n{} connections, {} s per row, keep-alive HTTP/1.1, 2-byte responses; load generator, proxy and upstream share the machine.",
        a.conns, a.secs
    );
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("helios-http-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
