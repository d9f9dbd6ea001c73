//! The MCP server agents talk to. `tools/list` lists every upstream's tools (prefixed
//! `<server id>__<tool>` when two upstreams offer the same name); `tools/call` runs the guard chain
//! and forwards an allowed call to its upstream untouched. Everything else is forwarded to the
//! upstream that owns it: prompts, resources and resource templates, completions (by the prompt or
//! resource they complete), `logging/setLevel`, `resources/subscribe`/`unsubscribe`; and what
//! upstreams send unasked (log messages, resource updates, list changes) reaches the agent
//! sessions ([`Sessions`]).
//!
//! `subscriptions/listen` (protocol 2026-07-28): the agent's filter is reduced to what the
//! upstreams advertise — each resource URI goes to the upstream that serves it (as for
//! `resources/read`) if that upstream supports subscriptions, each `*ListChanged` to every
//! upstream that advertises it — and the reduced filter is what the agent's acknowledgment
//! carries. Each agent subscription opens its own listen on each upstream it needs (before the
//! agent's acknowledgment goes out), relays what arrives there to the agent's stream, and cancels
//! them when the agent cancels or disconnects;
//! an upstream that ends its listen ends the agent's (with the upstream's cause if it died).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::task::Poll;

use helios_plugin_schema::GuardVerdict;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult, ContentBlock,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    Reference, ResultType, ServerCapabilities, ServerConfig, SubscribeRequestParams, SubscriptionFilter, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext, SubscriptionSendError};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler};

use crate::decide::Decider;
use crate::request::{CallSite, guard_request};
use crate::upstream::{ListenEvent, Upstream, UpstreamError, UpstreamListen};

/// Separates a server id from a tool name when names collide.
pub const PREFIX_SEPARATOR: &str = "__";

/// What the lists showed last: exposed tool name → (upstream index, the upstream's own name);
/// prompt names, resource URIs and resource templates → upstream index.
#[derive(Debug, Default)]
struct Catalog {
    tools: HashMap<String, (usize, String)>,
    prompts: HashMap<String, usize>,
    resources: HashMap<String, usize>,
    templates: HashMap<String, usize>,
}

#[derive(Debug)]
struct Inner {
    upstreams: Vec<Upstream>,
    decider: Decider,
    agent_scopes: std::collections::BTreeMap<String, Vec<String>>,
    catalog: RwLock<Catalog>,
    sessions: Arc<Sessions>,
    /// Resource URI → (upstream index, sessions subscribed): the upstream is subscribed once.
    subscriptions: tokio::sync::Mutex<HashMap<String, (usize, usize)>>,
}

/// Upstream listens opened for a `subscriptions/listen` before it was acknowledged, by the filter
/// the agent asked for, until the handler's `listen` takes them.
type Opened = Vec<(SubscriptionFilter, Result<Vec<UpstreamListen>, McpError>)>;

/// One agent session: its peer (for what upstreams send unasked), the log level it asked for,
/// the resources it subscribed to, and the upstream listens of a `subscriptions/listen` between
/// its acknowledgment and its relay.
#[derive(Debug, Default)]
pub struct Session {
    peer: OnceLock<Peer<RoleServer>>,
    level: Mutex<Option<u8>>,
    subscribed: Mutex<HashSet<String>>,
    opened: Mutex<Opened>,
}

/// The live agent sessions of a gateway, held weakly (a session that ended is skipped and pruned).
#[derive(Debug, Default)]
pub struct Sessions(Mutex<Vec<Weak<Session>>>);

#[allow(deprecated)] // logging is deprecated by SEP-2577; agents on older revisions still use it
fn severity(level: rmcp::model::LoggingLevel) -> u8 {
    use rmcp::model::LoggingLevel::*;
    match level {
        Debug => 0,
        Info => 1,
        Notice => 2,
        Warning => 3,
        Error => 4,
        Critical => 5,
        Alert => 6,
        Emergency => 7,
    }
}

impl Sessions {
    fn add(&self, s: &Arc<Session>) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(s));
    }

    fn live(&self) -> Vec<Arc<Session>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect()
    }

    /// Every live session's peer.
    pub fn peers(&self) -> Vec<Peer<RoleServer>> {
        self.live().iter().filter_map(|s| s.peer.get().cloned()).collect()
    }

    /// Peers of the sessions that take a log message of `level`: those that asked for this level
    /// or a lower one, and those that never set one.
    #[allow(deprecated)]
    pub fn logging_peers(&self, level: rmcp::model::LoggingLevel) -> Vec<Peer<RoleServer>> {
        let sev = severity(level);
        self.live()
            .iter()
            .filter(|s| s.level.lock().unwrap_or_else(|e| e.into_inner()).is_none_or(|min| sev >= min))
            .filter_map(|s| s.peer.get().cloned())
            .collect()
    }

    /// Peers of the sessions subscribed to `uri`.
    pub fn subscribed_peers(&self, uri: &str) -> Vec<Peer<RoleServer>> {
        self.live()
            .iter()
            .filter(|s| s.subscribed.lock().unwrap_or_else(|e| e.into_inner()).contains(uri))
            .filter_map(|s| s.peer.get().cloned())
            .collect()
    }

    /// The lowest level any session asked for (what the upstreams are set to).
    fn lowest_level(&self) -> Option<u8> {
        self.live().iter().filter_map(|s| *s.level.lock().unwrap_or_else(|e| e.into_inner())).min()
    }
}

/// The gateway's MCP server: cheap to clone; [`Gateway::for_session`] gives each agent session its
/// own state.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
    session: Arc<Session>,
}

impl Gateway {
    pub fn new(
        upstreams: Vec<Upstream>,
        decider: Decider,
        agent_scopes: std::collections::BTreeMap<String, Vec<String>>,
    ) -> Gateway {
        let sessions = Arc::new(Sessions::default());
        for u in &upstreams {
            u.attach(sessions.clone());
        }
        let inner = Inner {
            upstreams,
            decider,
            agent_scopes,
            catalog: RwLock::default(),
            sessions,
            subscriptions: tokio::sync::Mutex::default(),
        };
        Gateway { inner: Arc::new(inner), session: Arc::default() }
    }

    /// The same gateway for a new agent session (one per streamable HTTP session).
    pub fn for_session(&self) -> Gateway {
        Gateway { inner: self.inner.clone(), session: Arc::default() }
    }

    pub fn decider(&self) -> &Decider {
        &self.inner.decider
    }

    /// Connects every upstream and reads its tools; fails naming the first upstream that cannot
    /// be reached, so a gateway never starts half-wired.
    pub async fn connect_all(&self) -> Result<Vec<Tool>, UpstreamError> {
        for u in &self.inner.upstreams {
            u.peer().await?;
            // What agents on 2026-07-28 can listen to is advertised from the start; an upstream
            // without that revision still serves everything else.
            if let Err(e) = u.listen_capabilities().await {
                tracing::info!(upstream = %u.id, error = %e, "no 2026-07-28 connection: subscriptions/listen is not forwarded to it");
            }
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

impl Gateway {
    /// The upstream that serves resource `uri`: a listed resource, else the first upstream with
    /// templates that can read it.
    async fn resource_owner(&self, uri: &str) -> Option<usize> {
        let known = |g: &Gateway| g.inner.catalog.read().unwrap_or_else(|e| e.into_inner()).resources.get(uri).copied();
        if let Some(i) = known(self) {
            return Some(i);
        }
        self.list_all_resources().await;
        if let Some(i) = known(self) {
            return Some(i);
        }
        self.list_all_templates().await;
        let owners: HashSet<usize> =
            self.inner.catalog.read().unwrap_or_else(|e| e.into_inner()).templates.values().copied().collect();
        for i in 0..self.inner.upstreams.len() {
            if owners.contains(&i)
                && self.inner.upstreams[i].read_resource(ReadResourceRequestParams::new(uri)).await.is_ok()
            {
                return Some(i);
            }
        }
        None
    }

    async fn list_all_resources(&self) -> Vec<rmcp::model::Resource> {
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
        all
    }

    async fn list_all_templates(&self) -> Vec<rmcp::model::ResourceTemplate> {
        let mut all = Vec::new();
        let mut routes = HashMap::new();
        for (i, u) in self.inner.upstreams.iter().enumerate() {
            match u.list_resource_templates().await {
                Ok(templates) => {
                    for t in templates {
                        routes.entry(t.uri_template.clone()).or_insert(i);
                        all.push(t);
                    }
                }
                Err(e) => tracing::debug!(upstream = %u.id, error = %e, "resources/templates/list failed"),
            }
        }
        self.inner.catalog.write().unwrap_or_else(|e| e.into_inner()).templates = routes;
        all
    }

    async fn prompt_owner(&self, name: &str) -> Option<usize> {
        let known = |g: &Gateway| g.inner.catalog.read().unwrap_or_else(|e| e.into_inner()).prompts.get(name).copied();
        if let Some(i) = known(self) {
            return Some(i);
        }
        self.list_all_prompts().await;
        known(self)
    }

    async fn list_all_prompts(&self) -> Vec<rmcp::model::Prompt> {
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
        all
    }
}

/// Which upstream serves which part of an agent's `subscriptions/listen` filter.
#[derive(Debug, Clone, Default)]
struct ListenPlan {
    /// (upstream index, the part of the filter it serves); only non-empty parts.
    parts: Vec<(usize, SubscriptionFilter)>,
    /// Everything some upstream serves: what the agent's acknowledgment carries.
    accepted: SubscriptionFilter,
}

fn is_empty(f: &SubscriptionFilter) -> bool {
    f == &SubscriptionFilter::new()
}

/// `a` with everything of `b` added.
fn union(a: &mut SubscriptionFilter, b: &SubscriptionFilter) {
    for (mine, theirs) in [
        (&mut a.tools_list_changed, b.tools_list_changed),
        (&mut a.prompts_list_changed, b.prompts_list_changed),
        (&mut a.resources_list_changed, b.resources_list_changed),
    ] {
        if theirs == Some(true) {
            *mine = Some(true);
        }
    }
    for uri in b.resource_subscriptions.iter().flatten() {
        let uris = a.resource_subscriptions.get_or_insert_default();
        if !uris.contains(uri) {
            uris.push(uri.clone());
        }
    }
}

impl Gateway {
    /// Splits `requested` over the upstreams: list changes to every upstream that advertises
    /// them, each resource URI to its owner if the owner supports subscriptions. What no upstream
    /// serves is left out.
    async fn plan_listen(&self, requested: &SubscriptionFilter) -> ListenPlan {
        let upstreams = &self.inner.upstreams;
        let mut parts = vec![SubscriptionFilter::new(); upstreams.len()];
        let mut caps = Vec::with_capacity(upstreams.len());
        for u in upstreams {
            caps.push(u.listen_capabilities().await.unwrap_or_else(|e| {
                tracing::info!(upstream = %u.id, error = %e, "subscriptions/listen: upstream unreachable; left out");
                ServerCapabilities::default()
            }));
        }
        for (part, caps) in parts.iter_mut().zip(&caps) {
            let offered = requested.supported_by(caps);
            part.tools_list_changed = offered.tools_list_changed;
            part.prompts_list_changed = offered.prompts_list_changed;
            part.resources_list_changed = offered.resources_list_changed;
        }
        for uri in requested.resource_subscriptions.iter().flatten() {
            match self.resource_owner(uri).await {
                Some(i) if caps[i].resources.as_ref().is_some_and(|r| r.subscribe == Some(true)) => {
                    let uris = parts[i].resource_subscriptions.get_or_insert_default();
                    if !uris.contains(uri) {
                        uris.push(uri.clone());
                    }
                }
                Some(i) => {
                    tracing::info!(uri = %uri, upstream = %upstreams[i].id, "subscriptions/listen: the upstream serving this resource does not support subscriptions; left out")
                }
                None => tracing::info!(uri = %uri, "subscriptions/listen: no upstream serves this resource; left out"),
            }
        }
        let mut accepted = SubscriptionFilter::new();
        for p in &parts {
            union(&mut accepted, p);
        }
        let parts = parts.into_iter().enumerate().filter(|(_, p)| !is_empty(p)).collect();
        ListenPlan { parts, accepted }
    }

    /// The notifications the upstreams can send: a `list_changed` or resource subscriptions are
    /// advertised when at least one upstream advertises them, at `initialize` or on the
    /// connection listens go on (all of them before any upstream answered a handshake).
    fn forwardable(&self) -> (bool, bool, bool, bool) {
        let ups = &self.inner.upstreams;
        let caps: Vec<ServerCapabilities> = ups
            .iter()
            .filter_map(Upstream::capabilities)
            .chain(ups.iter().filter_map(Upstream::known_listen_capabilities))
            .collect();
        if caps.is_empty() {
            return (true, true, true, true);
        }
        let any = |f: &dyn Fn(&ServerCapabilities) -> bool| caps.iter().any(f);
        (
            any(&|c| c.tools.as_ref().is_some_and(|t| t.list_changed == Some(true))),
            any(&|c| c.prompts.as_ref().is_some_and(|p| p.list_changed == Some(true))),
            any(&|c| c.resources.as_ref().is_some_and(|r| r.list_changed == Some(true))),
            any(&|c| c.resources.as_ref().is_some_and(|r| r.subscribe == Some(true))),
        )
    }

    /// Opens the planned upstream listens (all or none: a failure closes those already open).
    async fn open_listens(&self, plan: ListenPlan) -> Result<Vec<UpstreamListen>, McpError> {
        let mut open: Vec<UpstreamListen> = Vec::new();
        for (i, part) in plan.parts {
            match self.inner.upstreams[i].listen(part).await {
                Ok(l) => open.push(l),
                Err(e) => {
                    for l in open {
                        l.close().await;
                    }
                    return Err(McpError::internal_error(format!("subscriptions/listen: {e}"), None));
                }
            }
        }
        Ok(open)
    }

    /// Relays one agent subscription: forwards what its upstream listens send to the agent's
    /// stream until the agent cancels or an upstream ends, then closes them all.
    async fn relay_listen(&self, context: SubscriptionContext, mut open: Vec<UpstreamListen>) -> Result<(), McpError> {
        tracing::info!(upstreams = open.len(), accepted = ?context.accepted(), "agent subscription open");
        let sink = context.sink().clone();
        let ended = loop {
            let next = std::future::poll_fn(|cx| {
                for l in open.iter_mut() {
                    if let Poll::Ready(e) = l.poll_event(cx) {
                        return Poll::Ready((l.upstream().to_string(), e));
                    }
                }
                Poll::Pending
            });
            tokio::select! {
                _ = context.cancelled() => break Ok(()),
                (upstream, event) = next => match event {
                    ListenEvent::Notification(n) => match sink.send(n).await {
                        Ok(()) => {}
                        Err(SubscriptionSendError::NotificationNotAccepted(what) | SubscriptionSendError::UnsupportedNotification(what)) => {
                            tracing::debug!(%upstream, what, "an upstream listen sent what the agent did not ask for; dropped");
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "the agent's subscription is gone");
                            break Ok(());
                        }
                    },
                    ListenEvent::Ended(Ok(())) => {
                        tracing::info!(%upstream, "upstream ended its listen; ending the agent's subscription");
                        break Ok(());
                    }
                    ListenEvent::Ended(Err(e)) => {
                        tracing::warn!(%upstream, error = %e, "upstream listen failed; ending the agent's subscription");
                        break Err(McpError::internal_error(format!("subscriptions/listen ended: {e}"), None));
                    }
                },
            }
        };
        for l in open {
            l.close().await;
        }
        tracing::info!("agent subscription closed");
        ended
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
        #[allow(deprecated)] // logging: agents on revisions before 2026-07-28 use it
        let mut capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_list_changed()
            .enable_resources_subscribe()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        // Only the notifications some upstream can send are advertised.
        let (tools, prompts, resources, subscribe) = self.forwardable();
        let flag = |on: bool| on.then_some(true);
        if let Some(t) = capabilities.tools.as_mut() {
            t.list_changed = flag(tools);
        }
        if let Some(p) = capabilities.prompts.as_mut() {
            p.list_changed = flag(prompts);
        }
        if let Some(r) = capabilities.resources.as_mut() {
            r.list_changed = flag(resources);
            r.subscribe = flag(subscribe);
        }
        ServerConfig::new(capabilities)
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
        Ok(ListPromptsResult::with_all_items(self.list_all_prompts().await))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let Some(index) = self.prompt_owner(&request.name).await else {
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
        Ok(ListResourcesResult::with_all_items(self.list_all_resources().await))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(self.list_all_templates().await))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let Some(index) = self.resource_owner(&request.uri).await else {
            return Err(McpError::resource_not_found(format!("no upstream serves resource {:?}", request.uri), None));
        };
        let mut result = self.inner.upstreams[index].read_resource(request).await.map_err(upstream_err)?;
        result.result_type.get_or_insert(ResultType::COMPLETE);
        Ok(result.into())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if self.session.peer.set(context.peer).is_ok() {
            self.inner.sessions.add(&self.session);
        }
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let owner = match &request.r#ref {
            Reference::Prompt(p) => self.prompt_owner(&p.name).await,
            Reference::Resource(r) => {
                let template = |g: &Gateway| {
                    g.inner.catalog.read().unwrap_or_else(|e| e.into_inner()).templates.get(&r.uri).copied()
                };
                match template(self) {
                    Some(i) => Some(i),
                    None => {
                        self.list_all_templates().await;
                        match template(self) {
                            Some(i) => Some(i),
                            None => self.resource_owner(&r.uri).await,
                        }
                    }
                }
            }
            _ => None,
        };
        let Some(index) = owner else {
            return Err(McpError::invalid_params("no upstream serves what this completion refers to", None));
        };
        let mut result = self.inner.upstreams[index].complete(request).await.map_err(upstream_err)?;
        result.result_type.get_or_insert(ResultType::COMPLETE);
        Ok(result)
    }

    #[allow(deprecated)] // logging is deprecated by SEP-2577; agents on older revisions still use it
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        *self.session.level.lock().unwrap_or_else(|e| e.into_inner()) = Some(severity(request.level));
        // One connection per upstream serves every session: it is set to the lowest level any
        // session asked for, and each session gets only what it asked for.
        let lowest = self.inner.sessions.lowest_level().unwrap_or(severity(request.level));
        let level = [
            rmcp::model::LoggingLevel::Debug,
            rmcp::model::LoggingLevel::Info,
            rmcp::model::LoggingLevel::Notice,
            rmcp::model::LoggingLevel::Warning,
            rmcp::model::LoggingLevel::Error,
            rmcp::model::LoggingLevel::Critical,
            rmcp::model::LoggingLevel::Alert,
            rmcp::model::LoggingLevel::Emergency,
        ][lowest as usize];
        for u in &self.inner.upstreams {
            if let Err(e) = u.set_level(level).await {
                tracing::debug!(upstream = %u.id, error = %e, "logging/setLevel not taken");
            }
        }
        Ok(())
    }

    /// A request method the gateway does not interpret goes to the upstreams in config order; the
    /// first one that does not answer "method not found" answers it, untouched.
    async fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CustomResult, McpError> {
        let mut last = None;
        for u in &self.inner.upstreams {
            match u.custom(request.method.clone(), request.params.clone()).await {
                Ok(v) => return Ok(rmcp::model::CustomResult(v)),
                Err(UpstreamError::Mcp { error, .. }) if error.code == rmcp::model::ErrorCode::METHOD_NOT_FOUND => {
                    last = Some(error);
                }
                Err(e) => return Err(upstream_err(e)),
            }
        }
        Err(last.unwrap_or_else(|| {
            McpError::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                format!("{}: no upstream serves this method", request.method),
                None,
            )
        }))
    }

    /// A notification the gateway does not interpret goes to every upstream, untouched.
    async fn on_custom_notification(
        &self,
        notification: rmcp::model::CustomNotification,
        _context: NotificationContext<RoleServer>,
    ) {
        for u in &self.inner.upstreams {
            if let Err(e) = u.notify_custom(notification.method.clone(), notification.params.clone()).await {
                tracing::debug!(upstream = %u.id, method = %notification.method, error = %e, "notification not forwarded");
            }
        }
    }

    /// What some upstream serves of `requested` ([`Gateway::plan_listen`]), with the upstream
    /// listens already open: rmcp acknowledges the agent's subscription right after this returns,
    /// and an event the upstream sends after that must reach the agent. rmcp asks this
    /// synchronously, while planning and opening take upstream requests: they run with the worker
    /// handed off (`block_in_place`), which needs the multi-thread runtime the binary runs; on
    /// another runtime `subscriptions/listen` is not offered.
    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            tracing::warn!("subscriptions/listen needs tokio's multi-thread runtime; refused");
            return None;
        }
        let (accepted, opened) = tokio::task::block_in_place(|| {
            rt.block_on(async {
                let plan = self.plan_listen(requested).await;
                let accepted = plan.accepted.clone();
                (accepted, self.open_listens(plan).await)
            })
        });
        self.session.opened.lock().unwrap_or_else(|e| e.into_inner()).push((requested.clone(), opened));
        Some(accepted)
    }

    /// Relays the upstream listens opened for this subscription (an upstream that could not be
    /// listened to ends it at once, naming the upstream).
    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let opened = {
            let mut all = self.session.opened.lock().unwrap_or_else(|e| e.into_inner());
            all.iter().position(|(r, _)| r == context.requested()).map(|i| all.remove(i).1)
        };
        let open = match opened {
            Some(opened) => opened?,
            None => self.open_listens(self.plan_listen(context.accepted()).await).await?,
        };
        self.relay_listen(context, open).await
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let uri = request.uri;
        let mut subs = self.inner.subscriptions.lock().await;
        let index = match subs.get(&uri) {
            Some(&(i, _)) => i,
            None => {
                let Some(i) = self.resource_owner(&uri).await else {
                    return Err(McpError::resource_not_found(format!("no upstream serves resource {uri:?}"), None));
                };
                self.inner.upstreams[i].subscribe(uri.clone()).await.map_err(upstream_err)?;
                i
            }
        };
        if self.session.subscribed.lock().unwrap_or_else(|e| e.into_inner()).insert(uri.clone()) {
            subs.entry(uri).or_insert((index, 0)).1 += 1;
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let uri = request.uri;
        if !self.session.subscribed.lock().unwrap_or_else(|e| e.into_inner()).remove(&uri) {
            return Ok(());
        }
        let mut subs = self.inner.subscriptions.lock().await;
        if let Some((index, count)) = subs.get_mut(&uri) {
            *count -= 1;
            if *count == 0 {
                let index = *index;
                subs.remove(&uri);
                self.inner.upstreams[index].unsubscribe(uri).await.map_err(upstream_err)?;
            }
        }
        Ok(())
    }
}
