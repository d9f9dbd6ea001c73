//! `helios-http-proxy --config proxy.json` runs the proxy; `--mcp-stdio` serves
//! `plugin_introspect` over stdio instead (the same chain is loaded, no traffic is proxied).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "helios-http-proxy", about = "HTTP proxy with a mixed Starlark/WASM hook chain")]
struct Args {
    /// The JSON config (listen, mode, upstream, plugins, ...).
    #[arg(long)]
    config: PathBuf,
    /// Serve the plugin_introspect MCP tool over stdio and do not proxy.
    #[arg(long)]
    mcp_stdio: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("helios-http-proxy: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helios-http-proxy: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let config = helios_http_proxy::Config::load(&args.config)?;
    let services = helios_http_proxy::services(&config)?;
    let chain = Arc::new(helios_http_proxy::build_chain(&config, &services)?);
    if args.mcp_stdio {
        return helios_http_proxy::mcp::serve_stdio(chain).await;
    }
    let running = helios_http_proxy::start(config, chain).await.map_err(|e| format!("cannot listen: {e}"))?;
    // Tests and scripts read these lines to find the ephemeral ports.
    println!("listening on {}", running.addr);
    if let Some(m) = running.mcp_addr {
        println!("mcp listening on http://{m}/mcp");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    running.stop();
    Ok(())
}
