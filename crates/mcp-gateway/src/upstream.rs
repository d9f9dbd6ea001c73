//! Upstream MCP servers: a child process over stdio or a streamable HTTP URL, reached with rmcp's
//! client. A connection that died (the child exited, the server went away) is re-established on the
//! next request; a request that outlives its deadline or loses its connection becomes an error that
//! names the upstream and the cause, never a wait without end.

use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService, ServiceError, ServiceExt};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{Peer, model};
use tokio::sync::Mutex;

use crate::config::UpstreamTarget;

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

type Client = RunningService<RoleClient, ()>;

/// One upstream server and its (re-established on demand) connection.
#[derive(Debug)]
pub struct Upstream {
    pub id: String,
    target: UpstreamTarget,
    connect_timeout: Duration,
    call_timeout: Duration,
    conn: Mutex<Option<Client>>,
}

impl Upstream {
    pub fn new(id: String, target: UpstreamTarget, connect_timeout: Duration, call_timeout: Duration) -> Upstream {
        Upstream { id, target, connect_timeout, call_timeout, conn: Mutex::new(None) }
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
                ().serve(transport).await.map_err(|e| fail(format!("MCP handshake with {program:?} failed: {e}")))
            }
            UpstreamTarget::Url(url) => {
                let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                ().serve(transport).await.map_err(|e| fail(format!("MCP handshake with {url} failed: {e}")))
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

    /// Stops the connection (and the child process).
    pub async fn shutdown(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            let _ = c.cancel().await;
        }
    }
}
