//! The HTTP host: accepts HTTP/1.1 and HTTP/2 (prior knowledge) clients, fires the hook chain
//! and forwards to the upstream (reverse mode) or to the request's own target (forward mode).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use bytes::Bytes;
use helios_plugin_starlark::{HookContext, Phase, Respond, Scope};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value as Json, json};
use tokio::net::{TcpListener, TcpStream};

use crate::body::{Captured, ProxyBody, capture, full};
use crate::chain::{Chain, Outcome};
use crate::config::{Config, Mode};

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// A running HTTP host's shared parts.
#[derive(Debug)]
pub struct Host {
    config: Config,
    chain: Arc<Chain>,
    client: Client<HttpConnector, ProxyBody>,
    next_conn: AtomicU64,
}

/// Returned by the service to make hyper close the connection (HTTP/1) or reset the stream
/// (HTTP/2) without an answer: the `drop` action.
#[derive(Debug, thiserror::Error)]
#[error("dropped by plugin \"{0}\"")]
pub struct Dropped(String);

impl Host {
    /// A host for `config` running `chain`.
    pub fn new(config: Config, chain: Arc<Chain>) -> Host {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let mut b = Client::builder(TokioExecutor::new());
        b.http2_only(config.upstream_http2);
        let client = b.build(connector);
        Host { config, chain, client, next_conn: AtomicU64::new(1) }
    }

    /// The chain.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// Accepts connections on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let host = self.clone();
            tokio::spawn(async move { host.serve_conn(stream, peer).await });
        }
    }

    async fn serve_conn(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let stream_state = Scope::new();
        let ctx = HookContext {
            transaction_state: Scope::new(),
            stream_state: stream_state.clone(),
            client: peer.to_string(),
            conn_id,
        };
        let local = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
        if self.chain.wants("connection", "on_connect", Phase::None) {
            let mut msg = json!({"client": peer.to_string(), "local": local, "conn_id": conn_id});
            match self.chain.fire("connection", "on_connect", Phase::None, &mut msg, &ctx) {
                Outcome::Continue => {}
                other => {
                    tracing::info!(conn_id, client = %peer, "connection refused by the hook chain: {other:?}");
                    return;
                }
            }
        }
        let requests = Arc::new(AtomicU64::new(0));
        let (host, st, reqs) = (self.clone(), stream_state.clone(), requests.clone());
        let svc = service_fn(move |req: Request<Incoming>| {
            let (host, st) = (host.clone(), st.clone());
            reqs.fetch_add(1, Ordering::Relaxed);
            async move { host.handle(req, peer, conn_id, st).await }
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await {
            tracing::debug!(conn_id, "connection ended: {e}");
        }
        if self.chain.wants("connection", "on_disconnect", Phase::None) {
            let mut msg =
                json!({"client": peer.to_string(), "conn_id": conn_id, "requests": requests.load(Ordering::Relaxed)});
            let _ = self.chain.fire("connection", "on_disconnect", Phase::None, &mut msg, &ctx);
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        conn_id: u64,
        stream_state: Scope,
    ) -> Result<Response<ProxyBody>, Dropped> {
        if req.method() == Method::CONNECT {
            return Ok(self.tunnel(req).await);
        }
        let ctx = HookContext { transaction_state: Scope::new(), stream_state, client: peer.to_string(), conn_id };
        let cap = self.config.body_cap;
        let (mut parts, body) = req.into_parts();
        let target = match self.target(&parts.uri) {
            Ok(t) => t,
            Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, &e)),
        };

        // Request hooks.
        let wants_req = self.chain.wants("http", "on_request", Phase::PrePipeline)
            || self.chain.wants("http", "on_request", Phase::PostPipeline);
        let body = if wants_req {
            let captured = match capture(body, cap).await {
                Ok(c) => c,
                Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, &format!("reading the request body: {e}"))),
            };
            let mut msg = json!({
                "method": parts.method.as_str(),
                "url": target.to_string(),
                "path": parts.uri.path(),
                "query": parts.uri.query().unwrap_or(""),
                "version": format!("{:?}", parts.version),
                "headers": headers_to_json(&parts.headers),
                "client": peer.to_string(),
            });
            put_body(&mut msg, &captured, cap);
            for phase in [Phase::PrePipeline, Phase::PostPipeline] {
                match self.chain.fire("http", "on_request", phase, &mut msg, &ctx) {
                    Outcome::Continue => {}
                    Outcome::Drop { plugin } => return Err(Dropped(plugin)),
                    Outcome::Respond { plugin, response } => return Ok(respond(&plugin, response)),
                    Outcome::Abort { plugin, error } => return Ok(aborted(&plugin, &error)),
                }
            }
            match apply_request(&mut parts, &msg, captured, cap) {
                Ok(b) => b,
                Err(e) => {
                    return Ok(plain(StatusCode::BAD_GATEWAY, &format!("the hook chain left an invalid request: {e}")));
                }
            }
        } else {
            Captured::Streamed(crate::body::prefixed(body)).into_body()
        };

        // Upstream.
        let uri = match rebuild_uri(&target, &parts.uri, self.config.mode) {
            Ok(u) => u,
            Err(e) => return Ok(plain(StatusCode::BAD_GATEWAY, &e)),
        };
        let req_summary = json!({"method": parts.method.as_str(), "path": parts.uri.path(), "url": uri.to_string()});
        strip_hop_by_hop(&mut parts.headers);
        if self.config.upstream_http2 {
            parts.headers.remove(hyper::header::HOST);
        } else if let Some(a) = uri.authority()
            && self.config.mode == Mode::Reverse
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            parts.headers.insert(hyper::header::HOST, v);
        }
        parts.uri = uri;
        parts.version = hyper::Version::HTTP_11;
        if self.config.upstream_http2 {
            parts.version = hyper::Version::HTTP_2;
        }
        let upstream_resp = match self.client.request(Request::from_parts(parts, body)).await {
            Ok(r) => r,
            Err(e) => return Ok(plain(StatusCode::BAD_GATEWAY, &format!("upstream request failed: {e}"))),
        };
        let (mut rparts, rbody) = upstream_resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);

        // Response hooks.
        let wants_resp = self.chain.wants("http", "on_response", Phase::PrePipeline)
            || self.chain.wants("http", "on_response", Phase::PostPipeline);
        if !wants_resp {
            return Ok(Response::from_parts(rparts, crate::body::prefixed(rbody).into_boxed()));
        }
        let captured = match capture(rbody, cap).await {
            Ok(c) => c,
            Err(e) => return Ok(plain(StatusCode::BAD_GATEWAY, &format!("reading the upstream body: {e}"))),
        };
        let mut msg = json!({
            "status": rparts.status.as_u16(),
            "headers": headers_to_json(&rparts.headers),
            "request": req_summary,
            "client": peer.to_string(),
        });
        put_body(&mut msg, &captured, cap);
        for phase in [Phase::PrePipeline, Phase::PostPipeline] {
            match self.chain.fire("http", "on_response", phase, &mut msg, &ctx) {
                Outcome::Continue => {}
                Outcome::Drop { plugin } => return Err(Dropped(plugin)),
                Outcome::Respond { plugin, response } => return Ok(respond(&plugin, response)),
                Outcome::Abort { plugin, error } => return Ok(aborted(&plugin, &error)),
            }
        }
        match apply_response(&mut rparts, &msg, captured, cap) {
            Ok(b) => Ok(Response::from_parts(rparts, b)),
            Err(e) => Ok(plain(StatusCode::BAD_GATEWAY, &format!("the hook chain left an invalid response: {e}"))),
        }
    }

    /// Where a request goes: the upstream (reverse) or its own absolute URI (forward).
    fn target(&self, uri: &Uri) -> Result<Uri, String> {
        match self.config.mode {
            Mode::Reverse => Ok(self.config.upstream.clone().ok_or("no upstream configured")?),
            Mode::Forward => {
                if uri.scheme_str() == Some("http") && uri.authority().is_some() {
                    Ok(uri.clone())
                } else if uri.scheme_str() == Some("https") {
                    Err("forward proxy: use CONNECT for https:// targets".into())
                } else {
                    Err("forward proxy: the request needs an absolute http:// URI (absolute-form)".into())
                }
            }
        }
    }

    // CONNECT host:port (forward mode): a byte tunnel; HTTP hooks do not see inside it.
    async fn tunnel(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        if self.config.mode != Mode::Forward {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is served in forward mode only");
        }
        let Some(authority) = req.uri().authority().map(|a| a.to_string()) else {
            return plain(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let mut upstream = match TcpStream::connect(&authority).await {
            Ok(s) => s,
            Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("CONNECT {authority}: {e}")),
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
            }
        });
        Response::new(full(Bytes::new()))
    }
}

fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn aborted(plugin: &str, error: &str) -> Response<ProxyBody> {
    let mut r =
        plain(StatusCode::BAD_GATEWAY, &format!("refused: plugin \"{plugin}\" failed (on_error = abort): {error}"));
    if let Ok(v) = HeaderValue::from_str(plugin) {
        r.headers_mut().insert("x-helios-aborted-by", v);
    }
    r
}

fn respond(plugin: &str, resp: Respond) -> Response<ProxyBody> {
    let mut r = Response::new(full(resp.body));
    *r.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in resp.headers {
        match (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
            (Ok(k), Ok(v)) => {
                r.headers_mut().append(k, v);
            }
            _ => tracing::warn!(plugin, "action.respond: invalid header {k:?} ignored"),
        }
    }
    r
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
}

/// Headers as the hooks see them: lower-case names; a name sent once maps to a string, a
/// repeated one to a list of strings. Values that are not UTF-8 are shown lossily.
pub fn headers_to_json(h: &HeaderMap) -> Json {
    let mut m = Map::new();
    for name in h.keys() {
        let vals: Vec<Json> =
            h.get_all(name).iter().map(|v| Json::from(String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
        let v = if vals.len() == 1 { vals.into_iter().next().unwrap_or(Json::Null) } else { Json::Array(vals) };
        m.insert(name.as_str().to_string(), v);
    }
    Json::Object(m)
}

fn headers_from_json(v: &Json) -> Result<HeaderMap, String> {
    let obj = v.as_object().ok_or("msg.headers must be a dict")?;
    let mut h = HeaderMap::new();
    for (k, v) in obj {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("invalid header name {k:?}"))?;
        let values: Vec<&Json> = match v {
            Json::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let text = match v {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                Json::Bool(b) => b.to_string(),
                _ => return Err(format!("header {k:?} must be a string or a list of strings")),
            };
            let value = HeaderValue::from_str(&text).map_err(|_| format!("invalid value for header {k:?}"))?;
            h.append(name.clone(), value);
        }
    }
    Ok(h)
}

fn put_body(msg: &mut Json, body: &Captured, cap: usize) {
    let m = msg.as_object_mut().expect("msg is an object");
    match body {
        Captured::Full(b) => {
            m.insert("body_streamed".into(), Json::Bool(false));
            match std::str::from_utf8(b) {
                Ok(s) => {
                    m.insert("body".into(), Json::from(s));
                }
                Err(_) => {
                    m.insert("body".into(), Json::Null);
                    m.insert("body_base64".into(), Json::from(base64::engine::general_purpose::STANDARD.encode(b)));
                }
            }
        }
        Captured::Streamed(_) => {
            // Past the cap: the hook sees no body and is told so; the body passes unchanged.
            m.insert("body".into(), Json::Null);
            m.insert("body_streamed".into(), Json::Bool(true));
            m.insert("body_cap".into(), Json::from(cap));
        }
    }
}

fn take_body(msg: &Json, captured: Captured, cap: usize, headers: &mut HeaderMap) -> Result<ProxyBody, String> {
    match captured {
        Captured::Streamed(p) => Ok(crate::body::boxed(p)),
        Captured::Full(original) => {
            let bytes: Bytes = match (msg.get("body"), msg.get("body_base64")) {
                (Some(Json::String(s)), _) => Bytes::from(s.clone().into_bytes()),
                (_, Some(Json::String(b))) => Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map_err(|e| format!("msg.body_base64 is not base64: {e}"))?,
                ),
                (None | Some(Json::Null), None | Some(Json::Null)) => {
                    if msg.get("body").is_none() {
                        original
                    } else {
                        Bytes::new()
                    }
                }
                _ => return Err("msg.body must be a string or None".into()),
            };
            if bytes.len() > cap {
                return Err(format!("a hook grew the body to {} bytes; the cap is {cap}", bytes.len()));
            }
            headers.remove(hyper::header::CONTENT_LENGTH);
            Ok(full(bytes))
        }
    }
}

fn apply_request(
    parts: &mut hyper::http::request::Parts,
    msg: &Json,
    captured: Captured,
    cap: usize,
) -> Result<ProxyBody, String> {
    if let Some(m) = msg.get("method").and_then(Json::as_str) {
        parts.method = Method::from_bytes(m.as_bytes()).map_err(|_| format!("invalid method {m:?}"))?;
    }
    let path = msg.get("path").and_then(Json::as_str).unwrap_or("/");
    let query = msg.get("query").and_then(Json::as_str).unwrap_or("");
    let pq = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
    let mut up = hyper::http::uri::Parts::default();
    up.path_and_query = Some(pq.parse().map_err(|_| format!("invalid path/query {pq:?}"))?);
    if let (Some(s), Some(a)) = (parts.uri.scheme(), parts.uri.authority()) {
        up.scheme = Some(s.clone());
        up.authority = Some(a.clone());
    }
    parts.uri = Uri::from_parts(up).map_err(|e| e.to_string())?;
    parts.headers = headers_from_json(msg.get("headers").unwrap_or(&Json::Null))?;
    take_body(msg, captured, cap, &mut parts.headers)
}

fn apply_response(
    parts: &mut hyper::http::response::Parts,
    msg: &Json,
    captured: Captured,
    cap: usize,
) -> Result<ProxyBody, String> {
    if let Some(s) = msg.get("status") {
        let code = s.as_u64().and_then(|c| u16::try_from(c).ok()).ok_or("msg.status must be an integer")?;
        parts.status = StatusCode::from_u16(code).map_err(|_| format!("invalid status {code}"))?;
    }
    parts.headers = headers_from_json(msg.get("headers").unwrap_or(&Json::Null))?;
    strip_hop_by_hop(&mut parts.headers);
    take_body(msg, captured, cap, &mut parts.headers)
}

// The URI sent upstream: the target's scheme and authority (and base path, in reverse mode)
// with the request's path and query.
fn rebuild_uri(target: &Uri, req: &Uri, mode: Mode) -> Result<Uri, String> {
    let pq = req.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let joined = match mode {
        Mode::Reverse => format!("{}{pq}", target.path().trim_end_matches('/')),
        Mode::Forward => pq.to_string(),
    };
    let mut up = hyper::http::uri::Parts::default();
    up.scheme = target.scheme().cloned();
    up.authority = target.authority().cloned();
    up.path_and_query = Some(joined.parse().map_err(|_| format!("invalid upstream path {joined:?}"))?);
    Uri::from_parts(up).map_err(|e| format!("upstream URI: {e}"))
}
