//! The admin listener: `GET /metrics`, `GET /plugins`, `POST /reload`, `POST /plugins/{name}/promote`.
//!
//! It binds loopback unless told otherwise. On any other address every request needs the bearer
//! token (read from a file, never from the command line); a write request (reload, promote) needs
//! it on every address, so with no token configured writes are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::metrics::Metrics;

/// Where the admin listener binds and how it authenticates. `[admin]` in a host's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Default: `127.0.0.1:9187`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A file holding the bearer token (surrounding whitespace ignored). Required on a
    /// non-loopback address and for write requests.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Label sets per metric family. Default: [`crate::DEFAULT_METRIC_CARDINALITY_CAP`].
    #[serde(default = "default_cap")]
    pub metric_cardinality_cap: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9187))
}

fn default_cap() -> usize {
    crate::DEFAULT_METRIC_CARDINALITY_CAP
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: default_listen(), token_file: None, metric_cardinality_cap: default_cap() }
    }
}

/// An admin listener that cannot start; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "admin listener on {addr} is not loopback: set admin.token_file (a bearer token file) or listen on 127.0.0.1"
    )]
    TokenRequired { addr: SocketAddr },
    #[error("admin.token_file {path}: {detail}")]
    Token { path: String, detail: String },
    #[error("admin listener cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// What a host exposes to its operators besides metrics. Implemented by each host (helios-proxy,
/// the MCP gateway); called off the async workers, so an implementation may block.
pub trait AdminControl: Send + Sync + std::fmt::Debug {
    /// The loaded plugins as a JSON array of [`crate::PluginView`]s.
    fn plugins(&self) -> serde_json::Value;
    /// Reloads the plugins (the same path as SIGHUP). `Ok` carries a JSON report.
    fn reload(&self) -> Result<serde_json::Value, String>;
    /// Promotes plugin `name`'s shadow candidate through the canary path.
    fn promote(&self, name: &str) -> Result<serde_json::Value, String> {
        Err(format!("plugin \"{name}\": this host has no shadow candidates to promote"))
    }
}

/// Reads a bearer token file: one line, surrounding whitespace ignored, never empty.
pub fn read_token(path: &Path) -> Result<String, AdminError> {
    let err = |detail: String| AdminError::Token { path: path.display().to_string(), detail };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("the file is empty".into()));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("the token must be one word of printable characters".into()));
    }
    Ok(token.to_string())
}

#[derive(Debug, Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    control: Arc<dyn AdminControl>,
    token: Option<Arc<str>>,
    /// Reads need the token too (a non-loopback listener).
    reads_need_token: bool,
}

/// A bound admin listener, ready to serve.
#[derive(Debug)]
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl AdminServer {
    /// Binds `cfg.listen` after checking the token rules.
    pub async fn bind(
        cfg: &AdminConfig,
        metrics: Arc<Metrics>,
        control: Arc<dyn AdminControl>,
    ) -> Result<AdminServer, AdminError> {
        let token = cfg.token_file.as_deref().map(read_token).transpose()?;
        let loopback = cfg.listen.ip().is_loopback();
        if !loopback && token.is_none() {
            return Err(AdminError::TokenRequired { addr: cfg.listen });
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| AdminError::Bind { addr: cfg.listen, source })?;
        let state = AppState { metrics, control, token: token.map(Arc::from), reads_need_token: !loopback };
        Ok(AdminServer { listener, state })
    }

    /// The bound address (the port, when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `stop` resolves.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let addr = self.local_addr();
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/plugins", get(plugins))
            .route("/reload", post(reload))
            .route("/plugins/{name}/promote", post(promote))
            .layer(middleware::from_fn_with_state(self.state.clone(), auth))
            .with_state(self.state);
        tracing::info!(%addr, "admin listener ready");
        axum::serve(self.listener, app).with_graceful_shutdown(stop).await
    }

    /// Binds and serves on a task of the current runtime; returns the bound address.
    pub async fn spawn(
        cfg: &AdminConfig,
        metrics: Arc<Metrics>,
        control: Arc<dyn AdminControl>,
    ) -> Result<SocketAddr, AdminError> {
        let server = AdminServer::bind(cfg, metrics, control).await?;
        let addr = server.local_addr();
        tokio::spawn(async move {
            if let Err(e) = server.serve(std::future::pending()).await {
                tracing::error!(%addr, error = %e, "admin listener stopped");
            }
        });
        Ok(addr)
    }
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut r = (status, Body::from(body)).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Constant-time comparison (the token must not leak through timing).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let write = req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD;
    if !write && !s.reads_need_token {
        return next.run(req).await;
    }
    let Some(token) = &s.token else {
        return plain(
            StatusCode::FORBIDDEN,
            "write requests need a bearer token: set admin.token_file in the host's config\n",
        );
    };
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let challenge = |msg: &str| {
        let mut r = plain(StatusCode::UNAUTHORIZED, msg);
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"helios-admin\""));
        r
    };
    match given.and_then(|v| v.strip_prefix("Bearer ")) {
        None => challenge("missing bearer token (Authorization: Bearer <token from admin.token_file>)\n"),
        Some(t) if same(t.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => {
            tracing::warn!(path = %req.uri().path(), "admin request with a wrong bearer token refused");
            challenge("wrong bearer token\n")
        }
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut r = s.metrics.render().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

async fn plugins(State(s): State<AppState>) -> Response {
    let control = s.control.clone();
    match tokio::task::spawn_blocking(move || control.plugins()).await {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("introspection failed: {e}\n")),
    }
}

async fn reload(State(s): State<AppState>) -> Response {
    let control = s.control.clone();
    match tokio::task::spawn_blocking(move || control.reload()).await {
        Ok(Ok(v)) => json(StatusCode::OK, &v),
        Ok(Err(e)) => json(StatusCode::CONFLICT, &serde_json::json!({ "error": e })),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("reload did not finish: {e}\n")),
    }
}

async fn promote(State(s): State<AppState>, UrlPath(name): UrlPath<String>) -> Response {
    let control = s.control.clone();
    match tokio::task::spawn_blocking(move || control.promote(&name)).await {
        Ok(Ok(v)) => json(StatusCode::OK, &v),
        Ok(Err(e)) => json(StatusCode::CONFLICT, &serde_json::json!({ "error": e })),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("promote did not finish: {e}\n")),
    }
}
