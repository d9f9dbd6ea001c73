//! `helios-mcp-gateway-bench`: tool calls per second and added latency through the gateway with 0,
//! 1 and 4 guards, beside calling the upstream directly. Everything runs in this process over
//! streamable HTTP on 127.0.0.1: an rmcp upstream with one `echo` tool, the gateway (its library,
//! as the binary wires it), and rmcp clients.
//!
//! ```sh
//! cargo run --release -p helios-mcp-gateway --bin helios-mcp-gateway-bench [-- --calls 2000 --secs 3 --agents 8 --rounds 5]
//! ```
//!
//! Each row is the best of `--rounds` runs (the lowest mean latency, the highest rate): the machine
//! is shared, and the best run is the one least disturbed by others.

use axum::serve::ListenerExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleClient, RunningService, ServiceExt};
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpClientTransport, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = serde_json::json!({"type": "object", "properties": {"text": {"type": "string"}}});
        let schema = Arc::new(schema.as_object().cloned().unwrap_or_default());
        Ok(ListToolsResult::with_all_items(vec![Tool::new("echo", "returns its text", schema)]))
    }
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = request.arguments.as_ref().and_then(|a| a.get("text")).and_then(|t| t.as_str()).unwrap_or("");
        Ok(CallToolResult::success(vec![ContentBlock::text(text.to_string())]).into())
    }
}

fn http_config(stop: &CancellationToken) -> StreamableHttpServerConfig {
    StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token()).disable_allowed_hosts()
}

async fn serve_echo(stop: CancellationToken) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = StreamableHttpService::new(|| Ok(Echo), LocalSessionManager::default().into(), http_config(&stop));
    let app = axum::Router::new().nest_service("/mcp", service);
    // The upstream sets TCP_NODELAY like the gateway does, so neither side waits on delayed ACKs.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    });
    Ok(format!("http://{addr}/mcp"))
}

/// Writes `n` wat-guard guards (none of which matches the calls) and a chio.yaml; returns its path.
fn write_config(dir: &Path, n: usize, upstream: &str) -> anyhow::Result<PathBuf> {
    let guard = wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wat-guard/guard.wat"))?;
    let sha = helios_plugin_artefact::signing::sha256_hex(&guard);
    let mut guards = String::new();
    for i in 0..n {
        let gdir = dir.join(format!("g{n}-{i}"));
        std::fs::create_dir_all(&gdir)?;
        std::fs::write(gdir.join("guard.wasm"), &guard)?;
        std::fs::write(
            gdir.join("guard-manifest.yaml"),
            format!(
                "name: g{i}\nversion: \"1.0.0\"\nabi_version: \"1\"\nwasm_path: guard.wasm\nwasm_sha256: \"{sha}\"\nconfig:\n  deny_substring: never-sent\nallow_unsigned: true\n"
            ),
        )?;
        guards.push_str(&format!("  - name: g{i}\n    path: {:?}\n", gdir.join("guard.wasm").display().to_string()));
    }
    let path = dir.join(format!("chio-{n}.yaml"));
    std::fs::write(
        &path,
        format!(
            "wasm_guards:\n{guards}upstreams:\n  - id: bench\n    url: {upstream}\ngateway:\n  reload_poll_ms: 0\n  guard_threads: 8\n"
        ),
    )?;
    Ok(path)
}

type Agent = RunningService<RoleClient, ClientConfig>;

async fn agent(url: &str) -> anyhow::Result<Agent> {
    let info = ClientConfig::new(ClientCapabilities::default(), Implementation::new("bench-agent", "1"));
    Ok(info.serve(StreamableHttpClientTransport::from_uri(url)).await?)
}

async fn echo(a: &Agent, i: u64) -> anyhow::Result<()> {
    let mut p = CallToolRequestParams::new("echo");
    p.arguments = serde_json::json!({"text": format!("call {i}")}).as_object().cloned();
    let r = a.call_tool(p).await?;
    anyhow::ensure!(r.is_error != Some(true), "call {i} failed: {r:?}");
    Ok(())
}

struct Row {
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    rate: f64,
}

async fn measure(url: &str, calls: usize, secs: u64, agents: usize) -> anyhow::Result<Row> {
    let a = agent(url).await?;
    for i in 0..50 {
        echo(&a, i).await?;
    }
    let mut lat = Vec::with_capacity(calls);
    for i in 0..calls as u64 {
        let t = Instant::now();
        echo(&a, i).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(|x, y| x.total_cmp(y));
    let mean_us = lat.iter().sum::<f64>() / lat.len() as f64;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..agents {
        let a = agent(url).await?;
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                echo(&a, i).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / t.elapsed().as_secs_f64();
    for t in tasks {
        t.await??;
    }
    Ok(Row { p50_us: lat[lat.len() / 2], p99_us: lat[lat.len() * 99 / 100], mean_us, rate })
}

/// The best of `rounds` measurements.
async fn best(url: &str, calls: usize, secs: u64, agents: usize, rounds: u64) -> anyhow::Result<Row> {
    let mut best: Option<Row> = None;
    for _ in 0..rounds.max(1) {
        let r = measure(url, calls, secs, agents).await?;
        best = Some(match best {
            None => r,
            Some(b) => {
                let rate = b.rate.max(r.rate);
                let mut keep = if r.mean_us < b.mean_us { r } else { b };
                keep.rate = rate;
                keep
            }
        });
    }
    best.ok_or_else(|| anyhow::anyhow!("no round ran"))
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (calls, secs, agents) = (arg("--calls", 2000) as usize, arg("--secs", 3), arg("--agents", 8) as usize);
    let rounds = arg("--rounds", 5);
    let stop = CancellationToken::new();
    let upstream = serve_echo(stop.clone()).await?;
    let dir = std::env::temp_dir().join(format!("helios-mcp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("| path | p50 latency | p99 latency | mean | added (mean) | calls/s, {agents} agents |");
    println!("|---|---|---|---|---|---|");
    let direct = best(&upstream, calls, secs, agents, rounds).await?;
    println!(
        "| upstream directly | {:.0} µs | {:.0} µs | {:.0} µs | — | {:.0} |",
        direct.p50_us, direct.p99_us, direct.mean_us, direct.rate
    );
    for n in [0, 1, 4] {
        let cfg = write_config(&dir, n, &upstream)?;
        let built = helios_mcp_gateway::build(&cfg, Vec::new()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/mcp", listener.local_addr()?);
        let gw_stop = stop.child_token();
        let server =
            tokio::spawn(helios_mcp_gateway::run::serve_http(built.gateway, listener, 1 << 20, gw_stop.clone()));
        let row = best(&url, calls, secs, agents, rounds).await?;
        println!(
            "| gateway, {n} guard{} | {:.0} µs | {:.0} µs | {:.0} µs | +{:.0} µs | {:.0} |",
            if n == 1 { "" } else { "s" },
            row.p50_us,
            row.p99_us,
            row.mean_us,
            row.mean_us - direct.mean_us,
            row.rate
        );
        gw_stop.cancel();
        let _ = server.await;
    }
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
