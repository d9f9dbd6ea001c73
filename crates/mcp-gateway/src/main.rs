//! `helios-mcp-gateway --config chio.yaml [--listen 127.0.0.1:8080]`: an MCP server for agents
//! (stdio by default, streamable HTTP with `--listen`) that runs chio guards on every tool call
//! before forwarding it to the configured upstream MCP servers.

use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "helios-mcp-gateway", version, about)]
struct Args {
    /// chio.yaml (or the same document as .toml)
    #[arg(long, short)]
    config: PathBuf,
    /// Serve streamable HTTP at http://ADDR/mcp instead of stdio (port 0 picks a free port; the
    /// address is printed on stderr)
    #[arg(long)]
    listen: Option<String>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HELIOS_LOG").unwrap_or_else(|_| "info,rmcp=warn".into()),
        )
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("helios-mcp-gateway: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helios-mcp-gateway: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let built = helios_mcp_gateway::build(&args.config, Vec::new()).await?;
    let max = built.config.max_request_bytes();
    helios_mcp_gateway::run::start_reloaders(
        built.gateway.decider().guards(),
        &built.reloader,
        args.config.clone(),
        built.config.reload_poll(),
    )?;
    match args.listen {
        None => helios_mcp_gateway::run::serve_stdio(built.gateway, max).await,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            eprintln!("helios-mcp-gateway: listening on http://{}/mcp", listener.local_addr()?);
            let stop = CancellationToken::new();
            let s = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                s.cancel();
            });
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let s = stop.clone();
            tokio::spawn(async move {
                term.recv().await;
                s.cancel();
            });
            helios_mcp_gateway::run::serve_http(built.gateway, listener, max, stop).await
        }
    }
}
