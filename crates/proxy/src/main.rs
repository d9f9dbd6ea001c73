//! `helios-proxy --config proxy.toml`: argument parsing and logging only; the proxy is the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A PostgreSQL proxy that runs helios-plugin WebAssembly plugins on every statement.
#[derive(Debug, Parser)]
#[command(name = "helios-proxy", version)]
struct Args {
    /// The configuration file (listeners, nodes, users, plugins).
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HELIOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let config = match helios_proxy::ProxyConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("helios-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    // Plugins load through the ops: reload triggers, canaries, shadows; with an [admin] section
    // also metrics, /plugins and the admin's reload/promote requests.
    let metrics =
        config.admin.as_ref().map(|a| std::sync::Arc::new(helios_plugin_admin::Metrics::new(a.metric_cardinality_cap)));
    let ops = helios_proxy::ops::ProxyOps::new(&args.config, metrics);
    let hooks = match ops.load() {
        Ok((_, hooks)) => hooks,
        Err(e) => {
            eprintln!("helios-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("helios-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config_admin = config.admin.clone();
    rt.block_on(async move {
        let proxy = match helios_proxy::Proxy::bind(config, hooks).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("helios-proxy: {e}");
                return ExitCode::FAILURE;
            }
        };
        ops.set_reloader(proxy.reloader());
        if let Err(e) = ops.start_triggers() {
            eprintln!("helios-proxy: cannot start the reload triggers: {e}");
            return ExitCode::FAILURE;
        }
        if let (Some(admin), Some(metrics)) = (&config_admin, ops.metrics()) {
            let control: std::sync::Arc<dyn helios_plugin_admin::AdminControl> = ops.clone();
            match helios_plugin_admin::AdminServer::spawn(admin, metrics.clone(), control).await {
                Ok(addr) => eprintln!("helios-proxy: admin listener on http://{addr}"),
                Err(e) => {
                    eprintln!("helios-proxy: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        tokio::spawn(reload_on_sighup(ops.clone()));
        proxy.serve(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Every SIGHUP is a reload trigger (folded with others that come within the quiet period). A
/// file that fails is logged with its error and the running configuration stays.
async fn reload_on_sighup(ops: std::sync::Arc<helios_proxy::ops::ProxyOps>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reload only on a file change or through the admin listener");
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reload triggered");
        ops.trigger("SIGHUP");
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown signal received");
}
