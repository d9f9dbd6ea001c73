//! Upstream MCP servers: a child process over stdio or a streamable HTTP URL (`https://` with the
//! system roots plus an optional `ca_file`), reached with rmcp's client. What an upstream sends on
//! its own — log messages, `resources/updated`, tools/prompts/resources `list_changed` — is relayed
//! to the agent sessions that should see it ([`crate::server::Sessions`]). A connection that died
//! (the child exited, the server went away) is re-established on the next request; a request that
//! outlives its deadline or loses its connection becomes an error that names the upstream and the
//! cause, never a wait without end.
//!
//! `subscriptions/listen` (protocol 2026-07-28) is opened with [`Upstream::listen`]; every other
//! forwarded method stays on the `initialize` connection (agents on older revisions use them).
//! Over HTTP the listens go on a second connection opened on 2026-07-28 (`server/discover`), whose
//! capabilities decide what can be listened to, with rmcp's own `Peer::listen` (the upstream's
//! order is kept). Over stdio there is one process, hence one connection: the listen request
//! carries the 2026-07-28 request metadata itself (rmcp servers accept that on an `initialize`d
//! connection; the Python SDK refuses it, and advertises no subscriptions there anyway), and the
//! [`Relay`] routes what arrives tagged with its id to it — rmcp hands each notification to its
//! own task, so their order is not kept on that path (one overtaking the acknowledgment is held
//! until it arrives).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use rmcp::model::{RequestId, ServerNotification, SubscriptionFilter};
use rmcp::service::{
    NotificationContext, PeerRequestOptions, RequestHandle, RoleClient, RunningService, ServiceError, ServiceExt,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, Peer, model};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::config::UpstreamTarget;
use crate::server::Sessions;

/// Why an upstream could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream \"{id}\" is unreachable: {detail}")]
    Connect { id: String, detail: String },
    #[error("upstream \"{id}\" did not answer {method} within {} ms", timeout.as_millis())]
    Timeout { id: String, method: String, timeout: Duration },
    #[error(
        "upstream \"{id}\" closed the connection during {method} (the server exited or crashed); it is reconnected on the next call"
    )]
    Closed { id: String, method: String },
    /// The upstream answered with a JSON-RPC error: forwarded as it is.
    #[error("upstream \"{id}\": {error}")]
    Mcp { id: String, error: rmcp::ErrorData },
    #[error("upstream \"{id}\": {method} failed: {detail}")]
    Other { id: String, method: String, detail: String },
}

type Client = RunningService<RoleClient, Relay>;

/// Notifications an upstream tags with a `subscriptions/listen` request's id go to that listen.
type ListenRoutes = Arc<Mutex<HashMap<RequestId, mpsc::Sender<ServerNotification>>>>;

/// How many notifications one upstream listen buffers before the gateway relays them; a listen
/// whose agent does not keep up is ended rather than left to grow.
const LISTEN_BUFFER: usize = 64;

/// The client side of one upstream connection: relays what the server sends unasked to the agent
/// sessions (log messages by their level, `resources/updated` to the sessions subscribed to the
/// URI, list changes to every session), and what it sends on a `subscriptions/listen` to that
/// listen alone.
#[derive(Debug, Clone)]
pub struct Relay {
    upstream: Arc<str>,
    sessions: Arc<Sessions>,
    listens: ListenRoutes,
}

impl Relay {
    /// Hands a notification tagged with a listen's id to that listen; `false` if it is untagged
    /// (the sessions get it). A listen whose buffer is full loses its route, which ends it
    /// ([`UpstreamListen::poll_event`]); one tagged for a closed listen is dropped.
    async fn to_listen(
        &self,
        context: &NotificationContext<RoleClient>,
        n: impl FnOnce() -> ServerNotification,
    ) -> bool {
        // rmcp 3.11's service loop moves a notification's extensions into the context before
        // its meta (service.rs, "avoid clone"), so the `_meta` lands in `context.extensions`.
        let id = context
            .meta
            .subscription_id()
            .or_else(|| context.extensions.get::<model::NotificationMetaObject>().and_then(|m| m.subscription_id()));
        let Some(id) = id else { return false };
        let mut routes = self.listens.lock().await;
        match routes.get(&id) {
            Some(tx) => {
                if tx.try_send(n()).is_err() {
                    tracing::warn!(upstream = %self.upstream, %id, "listen fell {LISTEN_BUFFER} notifications behind; ending it");
                    routes.remove(&id);
                }
            }
            None => tracing::debug!(upstream = %self.upstream, %id, "notification for a listen that is closed"),
        }
        true
    }
}

impl ClientHandler for Relay {
    async fn on_subscriptions_acknowledged(
        &self,
        params: model::SubscriptionsAcknowledgedNotificationParams,
        context: NotificationContext<RoleClient>,
    ) {
        let n = || ServerNotification::SubscriptionsAcknowledgedNotification(model::Notification::new(params));
        self.to_listen(&context, n).await;
    }
    #[allow(deprecated)] // logging is deprecated by SEP-2577; agents on older revisions still use it
    async fn on_logging_message(
        &self,
        mut params: model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        // The agent sees which upstream logged.
        params.logger = Some(match params.logger.take() {
            Some(l) => format!("{}/{l}", self.upstream),
            None => self.upstream.to_string(),
        });
        for peer in self.sessions.logging_peers(params.level) {
            let _ = peer.notify_logging_message(params.clone()).await;
        }
    }
    async fn on_resource_updated(
        &self,
        params: model::ResourceUpdatedNotificationParam,
        context: NotificationContext<RoleClient>,
    ) {
        let tagged = || ServerNotification::ResourceUpdatedNotification(model::Notification::new(params.clone()));
        if self.to_listen(&context, tagged).await {
            return;
        }
        for peer in self.sessions.subscribed_peers(&params.uri) {
            let _ = peer.notify_resource_updated(params.clone()).await;
        }
    }
    async fn on_resource_list_changed(&self, context: NotificationContext<RoleClient>) {
        if self.to_listen(&context, || ServerNotification::ResourceListChangedNotification(Default::default())).await {
            return;
        }
        for peer in self.sessions.peers() {
            let _ = peer.notify_resource_list_changed().await;
        }
    }
    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        if self.to_listen(&context, || ServerNotification::ToolListChangedNotification(Default::default())).await {
            return;
        }
        for peer in self.sessions.peers() {
            let _ = peer.notify_tool_list_changed().await;
        }
    }
    async fn on_prompt_list_changed(&self, context: NotificationContext<RoleClient>) {
        if self.to_listen(&context, || ServerNotification::PromptListChangedNotification(Default::default())).await {
            return;
        }
        for peer in self.sessions.peers() {
            let _ = peer.notify_prompt_list_changed().await;
        }
    }
    /// A notification the gateway does not interpret reaches every agent session untouched.
    async fn on_custom_notification(
        &self,
        notification: model::CustomNotification,
        _context: NotificationContext<RoleClient>,
    ) {
        for peer in self.sessions.peers() {
            let n = model::CustomNotification::new(notification.method.clone(), notification.params.clone());
            let _ = peer.send_notification(model::ServerNotification::CustomNotification(n)).await;
        }
    }
}

/// One upstream server and its (re-established on demand) connection.
#[derive(Debug)]
pub struct Upstream {
    pub id: String,
    target: UpstreamTarget,
    connect_timeout: Duration,
    call_timeout: Duration,
    sessions: OnceLock<Arc<Sessions>>,
    conn: Mutex<Option<Client>>,
    /// HTTP only: the 2026-07-28 connection `subscriptions/listen` requests go on.
    listen_conn: Mutex<Option<Client>>,
    /// What the upstream advertised at its last `initialize`.
    capabilities: std::sync::Mutex<Option<model::ServerCapabilities>>,
    /// HTTP only: what it advertised at its last `server/discover` (on `listen_conn`).
    listen_capabilities: std::sync::Mutex<Option<model::ServerCapabilities>>,
}

impl Upstream {
    pub fn new(id: String, target: UpstreamTarget, connect_timeout: Duration, call_timeout: Duration) -> Upstream {
        Upstream {
            id,
            target,
            connect_timeout,
            call_timeout,
            sessions: OnceLock::new(),
            conn: Mutex::new(None),
            listen_conn: Mutex::new(None),
            capabilities: std::sync::Mutex::new(None),
            listen_capabilities: std::sync::Mutex::new(None),
        }
    }

    /// Where this upstream's notifications go (set once, by the gateway that owns it).
    pub(crate) fn attach(&self, sessions: Arc<Sessions>) {
        let _ = self.sessions.set(sessions);
    }

    fn relay(&self) -> Relay {
        Relay {
            upstream: self.id.as_str().into(),
            sessions: self.sessions.get().cloned().unwrap_or_default(),
            listens: ListenRoutes::default(),
        }
    }

    /// What the upstream advertised at its last `initialize` (`None` before the first one).
    pub fn capabilities(&self) -> Option<model::ServerCapabilities> {
        self.capabilities.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the upstream advertised on the connection listens go on, as far as known (`None`
    /// before that connection's first handshake).
    pub fn known_listen_capabilities(&self) -> Option<model::ServerCapabilities> {
        match self.target {
            UpstreamTarget::Command { .. } => self.capabilities(),
            UpstreamTarget::Url { .. } => self.listen_capabilities.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// What the upstream advertises on the connection listens go on, connecting it if needed.
    pub async fn listen_capabilities(&self) -> Result<model::ServerCapabilities, UpstreamError> {
        self.live(self.listen_slot()).await?;
        Ok(self.known_listen_capabilities().unwrap_or_default())
    }

    fn listen_slot(&self) -> &Mutex<Option<Client>> {
        match self.target {
            UpstreamTarget::Command { .. } => &self.conn,
            UpstreamTarget::Url { .. } => &self.listen_conn,
        }
    }

    /// A live peer, connecting (or reconnecting after a death) first if needed.
    pub async fn peer(&self) -> Result<Peer<RoleClient>, UpstreamError> {
        Ok(self.live(&self.conn).await?.0)
    }

    /// The live client in `slot` (its peer and listen routes), connecting first if needed.
    async fn live(&self, slot: &Mutex<Option<Client>>) -> Result<(Peer<RoleClient>, ListenRoutes), UpstreamError> {
        let modern = std::ptr::eq(slot, &self.listen_conn);
        let mut conn = slot.lock().await;
        if let Some(c) = conn.as_ref()
            && !c.is_closed()
            && !c.peer().is_transport_closed()
        {
            return Ok((c.peer().clone(), c.service().listens.clone()));
        }
        if let Some(old) = conn.take() {
            tracing::warn!(upstream = %self.id, "upstream connection is gone; reconnecting");
            drop(old);
        }
        let client = tokio::time::timeout(self.connect_timeout, self.connect(modern)).await.map_err(|_| {
            UpstreamError::Connect {
                id: self.id.clone(),
                detail: format!("no MCP handshake within {} ms", self.connect_timeout.as_millis()),
            }
        })??;
        if let Some(info) = client.peer().peer_info() {
            let caps = if modern { &self.listen_capabilities } else { &self.capabilities };
            *caps.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.capabilities.clone());
        }
        let live = (client.peer().clone(), client.service().listens.clone());
        *conn = Some(client);
        Ok(live)
    }

    /// Connects with `initialize`, or (`modern`, HTTP only) on 2026-07-28 with `server/discover`.
    async fn connect(&self, modern: bool) -> Result<Client, UpstreamError> {
        let fail = |detail: String| UpstreamError::Connect { id: self.id.clone(), detail };
        match &self.target {
            UpstreamTarget::Command { program, args, env, cwd } => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args).envs(env).current_dir(cwd).kill_on_drop(true);
                let (transport, _) = TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::inherit())
                    .spawn()
                    .map_err(|e| fail(format!("cannot start {program:?}: {e}")))?;
                self.relay()
                    .serve(transport)
                    .await
                    .map_err(|e| fail(format!("MCP handshake with {program:?} failed: {e}")))
            }
            UpstreamTarget::Url { url, ca_pem } => {
                let mut http = reqwest::Client::builder();
                if let Some(pem) = ca_pem {
                    let ca = reqwest::Certificate::from_pem(pem)
                        .map_err(|e| fail(format!("ca_file is not a PEM certificate: {e}")))?;
                    http = http.add_root_certificate(ca);
                }
                let http = http.build().map_err(|e| fail(format!("cannot set up the HTTP client: {e}")))?;
                let transport = StreamableHttpClientTransport::with_client(
                    http,
                    StreamableHttpClientTransportConfig::with_uri(url.as_str()),
                );
                let client = if modern {
                    let lifecycle = ClientLifecycleMode::Discover {
                        preferred_versions: vec![model::ProtocolVersion::V_2026_07_28],
                    };
                    self.relay().serve_with_lifecycle(transport, lifecycle).await
                } else {
                    self.relay().serve(transport).await
                };
                client.map_err(|e| fail(format!("MCP handshake with {url} failed: {e:#}")))
            }
        }
    }

    /// Runs `f` against the peer under the call deadline, mapping transport failures to errors
    /// that name this upstream.
    async fn request<T, F, Fut>(&self, method: &str, f: F) -> Result<T, UpstreamError>
    where
        F: FnOnce(Peer<RoleClient>) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let peer = self.peer().await?;
        match tokio::time::timeout(self.call_timeout, f(peer)).await {
            Err(_) => {
                Err(UpstreamError::Timeout { id: self.id.clone(), method: method.into(), timeout: self.call_timeout })
            }
            Ok(Ok(v)) => Ok(v),
            Ok(Err(ServiceError::McpError(error))) => Err(UpstreamError::Mcp { id: self.id.clone(), error }),
            Ok(Err(ServiceError::TransportClosed | ServiceError::TransportSend(_))) => {
                Err(UpstreamError::Closed { id: self.id.clone(), method: method.into() })
            }
            Ok(Err(ServiceError::Cancelled { .. })) => {
                Err(UpstreamError::Closed { id: self.id.clone(), method: method.into() })
            }
            Ok(Err(e)) => {
                Err(UpstreamError::Other { id: self.id.clone(), method: method.into(), detail: e.to_string() })
            }
        }
    }

    pub async fn list_tools(&self) -> Result<Vec<model::Tool>, UpstreamError> {
        self.request("tools/list", |p| async move { p.list_all_tools().await }).await
    }

    pub async fn call_tool(&self, params: CallToolRequestParams) -> Result<model::CallToolResponse, UpstreamError> {
        let method = format!("tools/call {:?}", params.name);
        self.request(&method, |p| async move { p.call_tool_once(params).await }).await
    }

    pub async fn list_prompts(&self) -> Result<Vec<model::Prompt>, UpstreamError> {
        self.request("prompts/list", |p| async move { p.list_all_prompts().await }).await
    }

    pub async fn get_prompt(
        &self,
        params: model::GetPromptRequestParams,
    ) -> Result<model::GetPromptResult, UpstreamError> {
        self.request("prompts/get", |p| async move { p.get_prompt(params).await }).await
    }

    pub async fn list_resources(&self) -> Result<Vec<model::Resource>, UpstreamError> {
        self.request("resources/list", |p| async move { p.list_all_resources().await }).await
    }

    pub async fn read_resource(
        &self,
        params: model::ReadResourceRequestParams,
    ) -> Result<model::ReadResourceResult, UpstreamError> {
        self.request("resources/read", |p| async move { p.read_resource(params).await }).await
    }

    pub async fn list_resource_templates(&self) -> Result<Vec<model::ResourceTemplate>, UpstreamError> {
        self.request("resources/templates/list", |p| async move { p.list_all_resource_templates().await }).await
    }

    pub async fn complete(&self, params: model::CompleteRequestParams) -> Result<model::CompleteResult, UpstreamError> {
        self.request("completion/complete", |p| async move { p.complete(params).await }).await
    }

    #[allow(deprecated)] // logging is deprecated by SEP-2577; agents on older revisions still use it
    pub async fn set_level(&self, level: model::LoggingLevel) -> Result<(), UpstreamError> {
        self.request("logging/setLevel", |p| async move { p.set_level(model::SetLevelRequestParams::new(level)).await })
            .await
    }

    #[allow(deprecated)] // resources/subscribe is the pre-2026-07-28 way; agents on older revisions use it
    pub async fn subscribe(&self, uri: String) -> Result<(), UpstreamError> {
        self.request(
            "resources/subscribe",
            |p| async move { p.subscribe(model::SubscribeRequestParams::new(uri)).await },
        )
        .await
    }

    #[allow(deprecated)]
    pub async fn unsubscribe(&self, uri: String) -> Result<(), UpstreamError> {
        self.request("resources/unsubscribe", |p| async move {
            p.unsubscribe(model::UnsubscribeRequestParams::new(uri)).await
        })
        .await
    }

    /// A request the gateway does not interpret, sent as it came (method and params); the result as
    /// the upstream sent it (a result rmcp reads as one of its typed results is written back
    /// from that type).
    pub async fn custom(
        &self,
        method: String,
        params: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, UpstreamError> {
        let request = model::ClientRequest::CustomRequest(model::CustomRequest::new(method.clone(), params));
        let result = self.request(&method, |p| async move { p.send_request(request).await }).await?;
        Ok(match result {
            model::ServerResult::CustomResult(model::CustomResult(v)) => v,
            other => serde_json::to_value(other).unwrap_or_default(),
        })
    }

    /// A notification the gateway does not interpret, sent as it came (if connected).
    pub async fn notify_custom(&self, method: String, params: Option<serde_json::Value>) -> Result<(), UpstreamError> {
        let n = model::ClientNotification::CustomNotification(model::CustomNotification::new(method.clone(), params));
        self.request(&method, |p| async move { p.send_notification(n).await }).await
    }

    /// Opens `subscriptions/listen` with `filter` on this upstream and waits (under the call
    /// deadline) for its acknowledgment. The listen stays open until [`UpstreamListen::close`]
    /// (or drop), the upstream ends it, or the connection dies.
    pub async fn listen(&self, filter: SubscriptionFilter) -> Result<UpstreamListen, UpstreamError> {
        let (peer, routes) = self.live(self.listen_slot()).await?;
        let (tx, rx) = mpsc::channel(LISTEN_BUFFER);
        let (end_tx, end) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel();
        let timeout =
            || UpstreamError::Timeout { id: self.id.clone(), method: LISTEN.into(), timeout: self.call_timeout };
        let (acknowledged, pump) = match self.target {
            // A 2026-07-28 connection: rmcp's own listen, which keeps the upstream's order.
            UpstreamTarget::Url { .. } => {
                let sub = tokio::time::timeout(self.call_timeout, peer.listen(filter))
                    .await
                    .map_err(|_| timeout())?
                    .map_err(|e| service_error(&self.id, e))?;
                let acknowledged = sub.acknowledged().clone();
                let pump = tokio::spawn(pump_subscription(sub, self.id.clone(), tx, end_tx, stop_rx));
                (acknowledged, pump)
            }
            UpstreamTarget::Command { .. } => {
                let (inner_tx, mut inner) = mpsc::channel(LISTEN_BUFFER);
                // The 2026-07-28 request metadata, so an upstream that negotiated an older revision
                // at `initialize` serves this one request on 2026-07-28.
                let mut meta = model::RequestMetaObject::new();
                meta.set_protocol_version(model::ProtocolVersion::V_2026_07_28);
                meta.set_client_info(model::Implementation::new("helios-mcp-gateway", env!("CARGO_PKG_VERSION")));
                meta.set_client_capabilities(model::ClientCapabilities::default());
                let request = model::ClientRequest::SubscriptionsListenRequest(model::SubscriptionsListenRequest::new(
                    model::SubscriptionsListenRequestParams::new(filter.clone()),
                ));
                // The route is in place before the request can be answered: the relay waits for
                // this lock.
                let mut handle = {
                    let mut r = routes.lock().await;
                    let handle = peer
                        .send_request_with_option(request, PeerRequestOptions::no_options().with_meta(meta))
                        .await
                        .map_err(|e| service_error(&self.id, e))?;
                    r.insert(handle.id.clone(), inner_tx);
                    handle
                };
                // The relay hands each notification to its own task, so one sent right after the
                // acknowledgment may overtake it: kept and relayed after it.
                let mut early = Vec::new();
                let deadline = tokio::time::Instant::now() + self.call_timeout;
                let acked = loop {
                    tokio::select! {
                        n = inner.recv() => match n {
                            Some(ServerNotification::SubscriptionsAcknowledgedNotification(ack)) => {
                                break Ok(ack.params.notifications);
                            }
                            Some(n) if early.len() < LISTEN_BUFFER => early.push(n),
                            _ => break Err(self.other("sent too much before acknowledging the subscription".into())),
                        },
                        answer = &mut handle.rx => {
                            break Err(listen_end(&self.id, answer).err().unwrap_or_else(|| {
                                self.other("ended the subscription before acknowledging it".into())
                            }));
                        }
                        _ = tokio::time::sleep_until(deadline) => break Err(timeout()),
                    }
                };
                let acked = match acked {
                    Ok(a) if !a.is_subset_of(&filter) => {
                        Err(self.other(format!("acknowledged {a:?}, which was not asked for ({filter:?})")))
                    }
                    other => other,
                };
                let acknowledged = match acked {
                    Ok(a) => a,
                    Err(e) => {
                        routes.lock().await.remove(&handle.id);
                        let _ = handle.cancel(Some(CANCEL_REASON.into())).await;
                        return Err(e);
                    }
                };
                let pump =
                    tokio::spawn(pump_request(handle, inner, early, routes, self.id.clone(), tx, end_tx, stop_rx));
                (acknowledged, pump)
            }
        };
        Ok(UpstreamListen {
            upstream: self.id.clone(),
            acknowledged,
            rx,
            end: Some(end),
            stop: Some(stop),
            pump: Some(pump),
        })
    }

    fn other(&self, detail: String) -> UpstreamError {
        UpstreamError::Other { id: self.id.clone(), method: LISTEN.into(), detail }
    }

    /// Stops the connections (and the child process).
    pub async fn shutdown(&self) {
        for slot in [&self.conn, &self.listen_conn] {
            if let Some(c) = slot.lock().await.take() {
                let _ = c.cancel().await;
            }
        }
    }
}

const LISTEN: &str = "subscriptions/listen";
const CANCEL_REASON: &str = "the agent's subscription ended";

/// A failed request on a listen, as an error naming the upstream.
fn service_error(id: &str, e: ServiceError) -> UpstreamError {
    let id = id.to_string();
    match e {
        ServiceError::McpError(error) => UpstreamError::Mcp { id, error },
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
            UpstreamError::Closed { id, method: LISTEN.into() }
        }
        other => UpstreamError::Other { id, method: LISTEN.into(), detail: other.to_string() },
    }
}

/// How a listen request ended, from its answer: `Ok` for the final result (a graceful end).
fn listen_end(
    id: &str,
    answer: Result<Result<model::ServerResult, ServiceError>, oneshot::error::RecvError>,
) -> Result<(), UpstreamError> {
    match answer {
        Ok(Ok(model::ServerResult::SubscriptionsListenResult(_))) => Ok(()),
        Ok(Ok(other)) => Err(UpstreamError::Other {
            id: id.into(),
            method: LISTEN.into(),
            detail: format!("ended the subscription with an unexpected result: {other:?}"),
        }),
        Ok(Err(e)) => Err(service_error(id, e)),
        Err(_) => Err(UpstreamError::Closed { id: id.into(), method: LISTEN.into() }),
    }
}

/// What an open upstream listen produced.
#[derive(Debug)]
pub enum ListenEvent {
    /// A notification the upstream sent on this listen.
    Notification(ServerNotification),
    /// The listen is over: `Ok` when the upstream ended it gracefully (its final result), else
    /// why it ended (the connection died, the upstream answered with an error, the agent fell
    /// behind).
    Ended(Result<(), UpstreamError>),
}

/// One open `subscriptions/listen` on an upstream: a task moves what arrives on it to `rx` and
/// reports its end on `end`. Closing or dropping it cancels the request on the upstream
/// (`notifications/cancelled`), so no upstream listen outlives its agent's.
#[derive(Debug)]
pub struct UpstreamListen {
    upstream: String,
    acknowledged: SubscriptionFilter,
    rx: mpsc::Receiver<ServerNotification>,
    end: Option<oneshot::Receiver<Result<(), UpstreamError>>>,
    /// Sent (or dropped) to make the task cancel the listen.
    stop: Option<oneshot::Sender<()>>,
    pump: Option<tokio::task::JoinHandle<()>>,
}

impl UpstreamListen {
    /// The upstream's id.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The filter the upstream acknowledged.
    pub fn acknowledged(&self) -> &SubscriptionFilter {
        &self.acknowledged
    }

    /// The next notification, or the end of the listen (after every notification before it;
    /// reported once, pending after that).
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<ListenEvent> {
        if let Poll::Ready(Some(n)) = self.rx.poll_recv(cx) {
            return Poll::Ready(ListenEvent::Notification(n));
        }
        let Some(end) = self.end.as_mut() else { return Poll::Pending };
        let Poll::Ready(end) = Pin::new(end).poll(cx) else { return Poll::Pending };
        self.end = None;
        let closed = || UpstreamError::Closed { id: self.upstream.clone(), method: LISTEN.into() };
        Poll::Ready(ListenEvent::Ended(end.unwrap_or_else(|_| Err(closed()))))
    }

    /// Cancels the listen on the upstream (if it is still open) and waits until that is sent.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(pump) = self.pump.take() {
            let _ = pump.await;
        }
    }
}

/// Forwards `n` unless `stop` comes first; `false` when the listen is to end.
async fn forward(
    tx: &mpsc::Sender<ServerNotification>,
    n: ServerNotification,
    stop: &mut oneshot::Receiver<()>,
) -> bool {
    tokio::select! {
        _ = stop => false,
        sent = tx.send(n) => sent.is_ok(),
    }
}

/// Runs a listen opened with rmcp's [`Peer::listen`] (a 2026-07-28 connection).
async fn pump_subscription(
    mut sub: rmcp::service::Subscription,
    upstream: String,
    tx: mpsc::Sender<ServerNotification>,
    end_tx: oneshot::Sender<Result<(), UpstreamError>>,
    mut stop: oneshot::Receiver<()>,
) {
    let end = loop {
        let next = tokio::select! {
            _ = &mut stop => None,
            n = sub.next() => Some(n),
        };
        match next {
            None => break None,
            Some(Ok(Some(n))) => {
                if !forward(&tx, n, &mut stop).await {
                    break None;
                }
            }
            Some(Ok(None)) => {
                let (id, method) = (upstream.clone(), LISTEN.to_string());
                break Some(match sub.end() {
                    Some(rmcp::service::SubscriptionEnd::Graceful(_)) => Ok(()),
                    Some(rmcp::service::SubscriptionEnd::Lagged { capacity }) => Err(UpstreamError::Other {
                        id,
                        method,
                        detail: format!("the agent fell {capacity} notifications behind; listen again to resume"),
                    }),
                    Some(rmcp::service::SubscriptionEnd::Cancelled) => {
                        Err(UpstreamError::Other { id, method, detail: "cancelled the subscription".into() })
                    }
                    _ => Err(UpstreamError::Closed { id, method }),
                });
            }
            Some(Err(e)) => break Some(Err(service_error(&upstream, e))),
        }
    };
    match end {
        Some(end) => {
            let _ = end_tx.send(end);
        }
        None => {
            let _ = sub.cancel_with_reason(Some(CANCEL_REASON.into())).await;
        }
    }
}

/// Runs a listen sent with 2026-07-28 request metadata on an `initialize`d connection, whose
/// notifications the [`Relay`] routes to `inner`.
#[allow(clippy::too_many_arguments)]
async fn pump_request(
    mut handle: RequestHandle<RoleClient>,
    mut inner: mpsc::Receiver<ServerNotification>,
    early: Vec<ServerNotification>,
    routes: ListenRoutes,
    upstream: String,
    tx: mpsc::Sender<ServerNotification>,
    end_tx: oneshot::Sender<Result<(), UpstreamError>>,
    mut stop: oneshot::Receiver<()>,
) {
    // (what to report as the end, whether to cancel the request on the upstream)
    let mut outcome = None;
    for n in early {
        if !forward(&tx, n, &mut stop).await {
            outcome = Some((None, true));
            break;
        }
    }
    let (report, cancel) = match outcome {
        Some(o) => o,
        None => loop {
            tokio::select! {
                _ = &mut stop => break (None, true),
                n = inner.recv() => match n {
                    Some(n) => {
                        if !forward(&tx, n, &mut stop).await {
                            break (None, true);
                        }
                    }
                    // The relay dropped the route: the buffer was full.
                    None => {
                        let lagged = UpstreamError::Other {
                            id: upstream.clone(),
                            method: LISTEN.into(),
                            detail: format!("the agent fell {LISTEN_BUFFER} notifications behind; listen again to resume"),
                        };
                        break (Some(Err(lagged)), true);
                    }
                },
                answer = &mut handle.rx => break (Some(listen_end(&upstream, answer)), false),
            }
        },
    };
    routes.lock().await.remove(&handle.id);
    if cancel {
        let _ = handle.cancel(Some(CANCEL_REASON.into())).await;
    }
    if let Some(end) = report {
        let _ = end_tx.send(end);
    }
}
