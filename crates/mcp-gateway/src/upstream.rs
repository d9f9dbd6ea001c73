//! Upstream MCP servers: a child process over stdio or a streamable HTTP URL (`https://` with the
//! system roots plus an optional `ca_file`), reached with rmcp's client. What an upstream sends on
//! its own — log messages, `resources/updated`, tools/prompts/resources `list_changed` — is relayed
//! to the agent sessions that should see it ([`crate::server::Sessions`]). A connection that died (the child exited, the server went away) is re-established on the
//! next request; a request that outlives its deadline or loses its connection becomes an error that
//! names the upstream and the cause, never a wait without end.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use rmcp::service::{NotificationContext, RoleClient, RunningService, ServiceError, ServiceExt};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, model};
use tokio::sync::Mutex;

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

/// The client side of one upstream connection: relays what the server sends unasked to the agent
/// sessions (log messages by their level, `resources/updated` to the sessions subscribed to the
/// URI, list changes to every session).
#[derive(Debug, Clone)]
pub struct Relay {
    upstream: Arc<str>,
    sessions: Arc<Sessions>,
}

impl ClientHandler for Relay {
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
        _context: NotificationContext<RoleClient>,
    ) {
        for peer in self.sessions.subscribed_peers(&params.uri) {
            let _ = peer.notify_resource_updated(params.clone()).await;
        }
    }
    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        for peer in self.sessions.peers() {
            let _ = peer.notify_resource_list_changed().await;
        }
    }
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        for peer in self.sessions.peers() {
            let _ = peer.notify_tool_list_changed().await;
        }
    }
    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
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
}

impl Upstream {
    pub fn new(id: String, target: UpstreamTarget, connect_timeout: Duration, call_timeout: Duration) -> Upstream {
        Upstream { id, target, connect_timeout, call_timeout, sessions: OnceLock::new(), conn: Mutex::new(None) }
    }

    /// Where this upstream's notifications go (set once, by the gateway that owns it).
    pub(crate) fn attach(&self, sessions: Arc<Sessions>) {
        let _ = self.sessions.set(sessions);
    }

    fn relay(&self) -> Relay {
        Relay { upstream: self.id.as_str().into(), sessions: self.sessions.get().cloned().unwrap_or_default() }
    }

    /// A live peer, connecting (or reconnecting after a death) first if needed.
    pub async fn peer(&self) -> Result<Peer<RoleClient>, UpstreamError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref()
            && !c.is_closed()
            && !c.peer().is_transport_closed()
        {
            return Ok(c.peer().clone());
        }
        if let Some(old) = conn.take() {
            tracing::warn!(upstream = %self.id, "upstream connection is gone; reconnecting");
            drop(old);
        }
        let client = tokio::time::timeout(self.connect_timeout, self.connect()).await.map_err(|_| {
            UpstreamError::Connect {
                id: self.id.clone(),
                detail: format!("no MCP handshake within {} ms", self.connect_timeout.as_millis()),
            }
        })??;
        let peer = client.peer().clone();
        *conn = Some(client);
        Ok(peer)
    }

    async fn connect(&self) -> Result<Client, UpstreamError> {
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
                self.relay().serve(transport).await.map_err(|e| fail(format!("MCP handshake with {url} failed: {e:#}")))
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

    /// Stops the connection (and the child process).
    pub async fn shutdown(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            let _ = c.cancel().await;
        }
    }
}
