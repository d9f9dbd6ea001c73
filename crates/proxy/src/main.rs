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
    let origin = args.config.display().to_string();
    let config = match helios_proxy::ProxyConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("helios-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    // With an [admin] section, plugins load through the admin's ops (metrics, /plugins, reload).
    let ops = config.admin.as_ref().map(|a| {
        helios_proxy::ops::ProxyOps::new(
            &args.config,
            std::sync::Arc::new(helios_plugin_admin::Metrics::new(a.metric_cardinality_cap)),
        )
    });
    let loaded = match &ops {
        Some(ops) => ops.load().map(|(_, hooks)| hooks),
        None => helios_proxy::plugins::hooks_from_config(&config, &origin),
    };
    let hooks = match loaded {
        Ok(h) => h,
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
        match (&ops, &config_admin) {
            (Some(ops), Some(admin)) => {
                ops.set_reloader(proxy.reloader());
                let control: std::sync::Arc<dyn helios_plugin_admin::AdminControl> = ops.clone();
                match helios_plugin_admin::AdminServer::spawn(admin, ops.metrics().clone(), control).await {
                    Ok(addr) => eprintln!("helios-proxy: admin listener on http://{addr}"),
                    Err(e) => {
                        eprintln!("helios-proxy: {e}");
                        return ExitCode::from(2);
                    }
                }
                tokio::spawn(reload_ops_on_sighup(ops.clone()));
            }
            _ => {
                tokio::spawn(reload_on_sighup(proxy.reloader(), args.config));
            }
        }
        proxy.serve(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// On every SIGHUP: reads, verifies and loads the configuration file again, then installs it. A
/// file that fails is logged with its error and the running configuration stays.
async fn reload_on_sighup(reloader: helios_proxy::server::Reloader, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: configuration reload disabled");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let origin = path.display().to_string();
        tracing::info!(file = %origin, "SIGHUP: reloading the configuration");
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let config = helios_proxy::ProxyConfig::load(&p)?;
            let hooks = helios_proxy::plugins::hooks_from_config(&config, &p.display().to_string())?;
            Ok::<_, helios_proxy::ConfigError>((config, hooks))
        })
        .await;
        match loaded {
            Ok(Ok((config, hooks))) => {
                let report = match reloader.reload(config, hooks) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed; the running configuration stays");
                        continue;
                    }
                };
                for l in &report.listeners_need_restart {
                    tracing::warn!(listener = %l, "reload: listener changed; it takes effect after a restart");
                }
                tracing::info!(file = %origin, "reload: configuration replaced (new sessions use it)");
            }
            Ok(Err(e)) => tracing::error!(error = %e, "reload failed; the running configuration stays"),
            Err(e) => tracing::error!(error = %e, "reload failed; the running configuration stays"),
        }
    }
}

/// SIGHUP with an admin listener: the same reload as `POST /reload`.
async fn reload_ops_on_sighup(ops: std::sync::Arc<helios_proxy::ops::ProxyOps>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reload only through the admin listener");
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        let ops = ops.clone();
        match tokio::task::spawn_blocking(move || ops.reload()).await {
            Ok(Ok(report)) => {
                for l in &report.listeners_need_restart {
                    tracing::warn!(listener = %l, "reload: listener changed; it takes effect after a restart");
                }
            }
            Ok(Err(_)) => {} // logged by ProxyOps::reload
            Err(e) => tracing::error!(error = %e, "reload did not finish; the running configuration stays"),
        }
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
