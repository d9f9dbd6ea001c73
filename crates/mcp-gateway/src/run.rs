//! Putting a gateway together from a config file and serving it over stdio or streamable HTTP.

use axum::serve::ListenerExt as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use helios_plugin_host::{Runtime, RuntimeConfig};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpService;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::decide::{Decider, JsonLinesLog};
use crate::guards::{DecisionObserver, Guards};
use crate::server::Gateway;
use crate::upstream::Upstream;

/// A gateway ready to serve, with the config it came from.
#[derive(Debug)]
pub struct Built {
    pub gateway: Gateway,
    pub config: GatewayConfig,
    /// The metrics registry, when `gateway.admin` is configured.
    pub metrics: Option<Arc<helios_plugin_admin::Metrics>>,
    /// Where the admin listener listens, when `gateway.admin` is configured.
    pub admin_addr: Option<SocketAddr>,
    /// Every reload goes through it (file change, SIGHUP, admin request): see [`start_reloaders`].
    pub reloader: crate::ops::Reloader,
}

/// Reads the config, verifies and loads every guard, and connects every upstream. Each failure
/// names the file, the entry and the cause.
pub async fn build(config_path: &Path, extra_observers: Vec<Arc<dyn DecisionObserver>>) -> anyhow::Result<Built> {
    let config = GatewayConfig::load(config_path)?;
    let metrics =
        config.gateway.admin.as_ref().map(|a| Arc::new(helios_plugin_admin::Metrics::new(a.metric_cardinality_cap)));
    let mut runtime_config = RuntimeConfig::default();
    if let Some(m) = &metrics {
        runtime_config = runtime_config.observer(m.clone());
    }
    let runtime = Runtime::new(runtime_config)?;
    let guards = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Guards::load(runtime, &config)).await??
    };
    let mut observers = extra_observers;
    let incidents = config.gateway.incident_dir.clone().unwrap_or_else(|| PathBuf::from("incidents"));
    let safety = crate::ops::ReloadSafety::new(guards.clone(), incidents, metrics.clone());
    guards.listen(safety.clone());
    observers.push(safety);
    if let Some(m) = &metrics {
        let gm = crate::ops::GuardMetrics(m.clone());
        gm.started(&guards.current());
        guards.listen(Arc::new(gm.clone()));
        observers.push(Arc::new(gm));
    }
    if let Some(path) = &config.gateway.decision_log {
        let log = JsonLinesLog::open(path).map_err(|e| {
            anyhow::anyhow!(
                "{}: gateway field decision_log: cannot open {}: {e}",
                config.file.display(),
                path.display()
            )
        })?;
        observers.push(Arc::new(log));
    }
    let decider = Decider::new(guards, config.guard_threads(), config.guard_queue_timeout(), observers);
    let upstreams = config
        .upstreams
        .iter()
        .map(|(id, target)| Upstream::new(id.clone(), target.clone(), config.connect_timeout(), config.call_timeout()))
        .collect();
    let gateway = Gateway::new(upstreams, decider, config.gateway.agent_scopes.clone());
    let reloader =
        crate::ops::Reloader::new(gateway.decider().guards().clone(), config_path.into(), config.reload_debounce())
            .map_err(|e| anyhow::anyhow!("cannot start the reload worker: {e}"))?;
    let admin_addr = match (&config.gateway.admin, &metrics) {
        (Some(admin), Some(m)) => {
            let control =
                crate::ops::GatewayAdmin { guards: gateway.decider().guards().clone(), reloader: reloader.clone() };
            let addr = helios_plugin_admin::AdminServer::spawn(admin, m.clone(), Arc::new(control))
                .await
                .map_err(|e| anyhow::anyhow!("{}: gateway.admin: {e}", config.file.display()))?;
            eprintln!("helios-mcp-gateway: admin listener on http://{addr}");
            Some(addr)
        }
        _ => None,
    };
    let tools = gateway.connect_all().await?;
    tracing::info!(
        guards = gateway.decider().guards().current().guards().len(),
        upstreams = config.upstreams.len(),
        tools = tools.len(),
        "gateway ready"
    );
    Ok(Built { gateway, config, metrics, admin_addr, reloader })
}

/// Triggers a reload on SIGHUP and, unless `reload_poll_ms` is 0, when a guard file or the config
/// changes. Both go through `reloader`, so they coalesce with each other and with admin requests.
pub fn start_reloaders(
    guards: &Guards,
    reloader: &crate::ops::Reloader,
    config_path: PathBuf,
    poll: std::time::Duration,
) -> anyhow::Result<()> {
    if !poll.is_zero() {
        let r = reloader.clone();
        guards.watch(config_path, poll, move || {
            r.trigger("file changed");
        });
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let reloader = reloader.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: guard reload requested");
            reloader.trigger("sighup");
        }
    });
    Ok(())
}

/// Serves one agent on stdin/stdout until it disconnects. A line longer than `max_request_bytes`
/// is dropped (and logged) without ending the session.
pub async fn serve_stdio(gateway: Gateway, max_request_bytes: usize) -> anyhow::Result<()> {
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let transport = AsyncRwTransport::new_server(stdin, stdout).with_max_line_length(max_request_bytes);
    let running = gateway.clone().serve(transport).await?;
    let reason = running.waiting().await;
    tracing::info!(?reason, "agent session ended");
    gateway.shutdown().await;
    Ok(())
}

/// Serves agents over streamable HTTP at `http://<addr>/mcp` until `stop` is cancelled. Bodies over
/// `max_request_bytes` get `413`. On a loopback address only loopback `Host` headers are accepted
/// (DNS-rebinding protection); on any other address every `Host` is.
pub async fn serve_http(
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    max_request_bytes: usize,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let config = StreamableHttpServerConfig::default()
        .with_max_request_body_bytes(max_request_bytes)
        .with_cancellation_token(stop.child_token());
    // Host checks guard a loopback server against DNS rebinding; a gateway listening on a routable
    // address is reached by whatever names its operators give it.
    let config = if addr.ip().is_loopback() {
        config.with_allowed_hosts([
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            addr.to_string(),
        ])
    } else {
        config.disable_allowed_hosts()
    };
    let gw = gateway.clone();
    let service =
        StreamableHttpService::new(move || Ok(gw.for_session()), LocalSessionManager::default().into(), config);
    let app = axum::Router::new().nest_service("/mcp", service);
    let stop2 = stop.clone();
    // TCP_NODELAY on every agent connection: a streamable-HTTP answer is several small writes
    // (headers, then SSE events); with Nagle's algorithm each write after the first waits for the
    // agent's delayed ACK, ~40 ms per tool call (measured: 44 ms p50 through the gateway without it).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on an agent connection: {e}");
        }
    });
    axum::serve(listener, app).with_graceful_shutdown(async move { stop2.cancelled().await }).await?;
    gateway.shutdown().await;
    Ok(())
}
