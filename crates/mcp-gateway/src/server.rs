//! The MCP server agents talk to. `tools/list` lists every upstream's tools (prefixed
//! `<server id>__<tool>` when two upstreams offer the same name); `tools/call` runs the guard chain
//! and forwards an allowed call to its upstream untouched; prompts and resources are forwarded.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use helios_plugin_schema::GuardVerdict;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams, GetPromptResponse,
    Implementation, ListPromptsResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ResultType, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use crate::decide::Decider;
use crate::request::{CallSite, guard_request};
use crate::upstream::{Upstream, UpstreamError};

/// Separates a server id from a tool name when names collide.
pub const PREFIX_SEPARATOR: &str = "__";

/// What `tools/list` showed last: exposed name → (upstream index, the upstream's own name).
#[derive(Debug, Default)]
struct Catalog {
    tools: HashMap<String, (usize, String)>,
    prompts: HashMap<String, usize>,
    resources: HashMap<String, usize>,
}

#[derive(Debug)]
struct Inner {
    upstreams: Vec<Upstream>,
    decider: Decider,
    agent_scopes: std::collections::BTreeMap<String, Vec<String>>,
    catalog: RwLock<Catalog>,
}

/// The gateway's MCP server: cheap to clone, one per agent session over HTTP.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    pub fn new(
        upstreams: Vec<Upstream>,
        decider: Decider,
        agent_scopes: std::collections::BTreeMap<String, Vec<String>>,
    ) -> Gateway {
        Gateway { inner: Arc::new(Inner { upstreams, decider, agent_scopes, catalog: RwLock::default() }) }
    }

    pub fn decider(&self) -> &Decider {
        &self.inner.decider
    }

    /// Connects every upstream and reads its tools; fails naming the first upstream that cannot
    /// be reached, so a gateway never starts half-wired.
    pub async fn connect_all(&self) -> Result<Vec<Tool>, UpstreamError> {
        for u in &self.inner.upstreams {
            u.peer().await?;
        }
        self.refresh_tools(true).await
    }

    /// Stops every upstream connection (and child process).
    pub async fn shutdown(&self) {
        for u in &self.inner.upstreams {
            u.shutdown().await;
        }
    }

    /// Lists every upstream's tools and rebuilds the routing table. An unreachable upstream is
    /// left out (and logged) unless `strict`.
    async fn refresh_tools(&self, strict: bool) -> Result<Vec<Tool>, UpstreamError> {
        let mut per_upstream = Vec::with_capacity(self.inner.upstreams.len());
        for (i, u) in self.inner.upstreams.iter().enumerate() {
            match u.list_tools().await {
                Ok(tools) => per_upstream.push((i, tools)),
                Err(e) if !strict => {
                    tracing::warn!(upstream = %u.id, error = %e, "tools/list failed; its tools are not listed")
                }
                Err(e) => return Err(e),
            }
        }
        let mut count: HashMap<String, usize> = HashMap::new();
        for (_, tools) in &per_upstream {
            for t in tools {
                *count.entry(t.name.to_string()).or_default() += 1;
            }
        }
        let mut routes = HashMap::new();
        let mut listed = Vec::new();
        for (i, tools) in per_upstream {
            for mut t in tools {
                let own = t.name.to_string();
                let exposed = if count[&own] > 1 {
                    format!("{}{PREFIX_SEPARATOR}{own}", self.inner.upstreams[i].id)
                } else {
                    own.clone()
                };
                t.name = exposed.clone().into();
                routes.insert(exposed, (i, own));
                listed.push(t);
            }
        }
        self.inner.catalog.write().unwrap_or_else(|e| e.into_inner()).tools = routes;
        Ok(listed)
    }

    fn route(&self, name: &str) -> Option<(usize, String)> {
        self.inner.catalog.read().unwrap_or_else(|e| e.into_inner()).tools.get(name).cloned()
    }

    async fn call(&self, request: CallToolRequestParams, agent: String) -> Result<CallToolResponse, McpError> {
        let route = match self.route(&request.name) {
            Some(r) => Some(r),
            None => {
                let _ = self.refresh_tools(false).await;
                self.route(&request.name)
            }
        };
        let Some((index, own_name)) = route else {
            return Err(McpError::invalid_params(format!("unknown tool {:?}", request.name), None));
        };
        let upstream = &self.inner.upstreams[index];
        let scopes = self.inner.agent_scopes.get(&agent).cloned().unwrap_or_default();
        let site = CallSite { tool: &own_name, server_id: &upstream.id, agent_id: &agent, scopes: &scopes };
        let guard_req = guard_request(&site, request.arguments.as_ref());
        if let GuardVerdict::Deny { reason } = self.inner.decider.decide(guard_req).await {
            tracing::info!(tool = %own_name, server = %upstream.id, agent = %agent, reason = %reason, "tool call denied");
            return Ok(tool_error(format!("tool call denied: {reason}")));
        }
        let mut forwarded = CallToolRequestParams::new(own_name);
        forwarded.arguments = request.arguments;
        match upstream.call_tool(forwarded).await {
            Ok(CallToolResponse::Complete(mut result)) => {
                // An upstream on an older protocol revision sends no resultType; agents on 2026-07-28
                // require it (rmcp strips it again for agents on older revisions).
                result.result_type.get_or_insert(ResultType::COMPLETE);
                Ok(CallToolResponse::Complete(result))
            }
            Ok(other) => Ok(other),
            Err(UpstreamError::Mcp { error, .. }) => Err(error),
            Err(e) => {
                tracing::warn!(error = %e, "forwarded tool call failed");
                Ok(tool_error(e.to_string()))
            }
        }
    }
}

fn tool_error(text: String) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(text)]))
}

fn upstream_err(e: UpstreamError) -> McpError {
    match e {
        UpstreamError::Mcp { error, .. } => error,
        other => McpError::internal_error(other.to_string(), None),
    }
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_prompts().enable_resources().build())
            .with_server_info(Implementation::new("helios-mcp-gateway", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tool calls pass through WebAssembly guards; a denied call answers with the guard's reason.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools = self.refresh_tools(false).await.map_err(upstream_err)?;
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let agent = context.client_info().map(|i| i.name).unwrap_or_else(|| "unknown".into());
        self.call(request, agent).await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let mut all = Vec::new();
        let mut routes = HashMap::new();
        for (i, u) in self.inner.upstreams.iter().enumerate() {
            match u.list_prompts().await {
                Ok(prompts) => {
                    for p in prompts {
                        routes.entry(p.name.clone()).or_insert(i);
                        all.push(p);
                    }
                }
                Err(e) => tracing::debug!(upstream = %u.id, error = %e, "prompts/list failed"),
            }
        }
        self.inner.catalog.write().unwrap_or_else(|e| e.into_inner()).prompts = routes;
        Ok(ListPromptsResult::with_all_items(all))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let index = self.inner.catalog.read().unwrap_or_else(|e| e.into_inner()).prompts.get(&request.name).copied();
        let Some(index) = index else {
            return Err(McpError::invalid_params(
                format!("unknown prompt {:?} (list prompts first)", request.name),
                None,
            ));
        };
        let mut result = self.inner.upstreams[index].get_prompt(request).await.map_err(upstream_err)?;
        result.result_type.get_or_insert(ResultType::COMPLETE);
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let mut all = Vec::new();
        let mut routes = HashMap::new();
        for (i, u) in self.inner.upstreams.iter().enumerate() {
            match u.list_resources().await {
                Ok(resources) => {
                    for r in resources {
                        routes.entry(r.uri.clone()).or_insert(i);
                        all.push(r);
                    }
                }
                Err(e) => tracing::debug!(upstream = %u.id, error = %e, "resources/list failed"),
            }
        }
        self.inner.catalog.write().unwrap_or_else(|e| e.into_inner()).resources = routes;
        Ok(ListResourcesResult::with_all_items(all))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let index = self.inner.catalog.read().unwrap_or_else(|e| e.into_inner()).resources.get(&request.uri).copied();
        let Some(index) = index else {
            return Err(McpError::resource_not_found(
                format!("unknown resource {:?} (list resources first)", request.uri),
                None,
            ));
        };
        let mut result = self.inner.upstreams[index].read_resource(request).await.map_err(upstream_err)?;
        result.result_type.get_or_insert(ResultType::COMPLETE);
        Ok(result.into())
    }
}
