//! Ordered hook chains: plugins by priority (lower first), then load order, with per-plugin
//! `on_error` policies.

use std::sync::Arc;

use helios_plugin_schema::{
    GuardRequest, GuardVerdict, Hook, PostQueryEnvelope, PreQueryResult, QueryContext, RouteResult,
    hooks::spec,
};

use crate::{OnError, Plugin, PluginError};

/// What a `pre_query` chain decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreQueryOutcome {
    /// `Continue`, `Rewrite { sql }` (the final SQL, after every rewrite), `Block` or `Cached`.
    pub result: PreQueryResult,
    /// The plugin that blocked or answered from cache, if one did.
    pub decided_by: Option<Arc<str>>,
    /// Plugins that rewrote the SQL, in order.
    pub rewritten_by: Vec<Arc<str>>,
    /// Failures of plugins whose policy is `skip` (the chain went on).
    pub skipped: Vec<PluginError>,
}

impl PreQueryOutcome {
    /// The SQL to run: the rewritten one, or the original.
    pub fn query<'a>(&'a self, original: &'a QueryContext) -> &'a str {
        match &self.result {
            PreQueryResult::Rewrite { sql } => sql,
            _ => &original.query,
        }
    }
}

/// What a `route` chain decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOutcome {
    pub result: RouteResult,
    pub decided_by: Option<Arc<str>>,
    pub skipped: Vec<PluginError>,
}

/// Plugins in calling order. `Send + Sync`; cheap to share with `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    plugins: Vec<Arc<Plugin>>,
}

impl Chain {
    /// Orders plugins by priority, then by their position in `plugins` (load order).
    pub fn new(mut plugins: Vec<Arc<Plugin>>) -> Chain {
        plugins.sort_by_key(|p| p.priority());
        Chain { plugins }
    }

    /// The plugins in calling order.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// Finds a plugin by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    fn serving(&self, hook: Hook) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.iter().filter(move |p| p.serves(hook))
    }

    /// Runs `pre_query` through the chain. A rewrite is what later plugins see; a block or a cached
    /// answer stops the chain; a failure skips the plugin or blocks, per its `on_error`.
    pub fn pre_query(&self, ctx: &QueryContext) -> PreQueryOutcome {
        let mut out = PreQueryOutcome { result: PreQueryResult::Continue, decided_by: None, rewritten_by: Vec::new(), skipped: Vec::new() };
        let mut current: Option<QueryContext> = None;
        // The input is encoded once and re-encoded only after a rewrite.
        let mut json: Option<Vec<u8>> = None;
        for p in self.serving(Hook::PreQuery) {
            let c = current.as_ref().unwrap_or(ctx);
            let bytes = match &json {
                Some(b) => b,
                None => json.insert(serde_json::to_vec(c).unwrap_or_default()),
            };
            let r = p.call_with(Hook::PreQuery, bytes, |b| serde_json::from_slice::<PreQueryResult>(b).map_err(|e| e.to_string()));
            match r {
                Ok(PreQueryResult::Continue) => {}
                Ok(PreQueryResult::Rewrite { sql }) => {
                    let mut next = c.clone();
                    next.query = sql;
                    current = Some(next);
                    json = None;
                    out.rewritten_by.push(p.name().into());
                }
                Ok(done @ (PreQueryResult::Block { .. } | PreQueryResult::Cached { .. })) => {
                    out.result = done;
                    out.decided_by = Some(p.name().into());
                    return out;
                }
                Err(e) => match p.on_error() {
                    OnError::Skip => {
                        tracing::warn!(plugin = p.name(), error = %e.kind, "pre_query failed; skipped (on_error = skip)");
                        out.skipped.push(e);
                    }
                    OnError::Abort => {
                        out.result = PreQueryResult::Block { reason: e.to_string() };
                        out.decided_by = Some(p.name().into());
                        return out;
                    }
                },
            }
        }
        if let Some(c) = current {
            out.result = PreQueryResult::Rewrite { sql: c.query };
        }
        out
    }

    /// Runs `route`: the first plugin with an opinion (anything but `Default`) decides.
    pub fn route(&self, ctx: &QueryContext) -> RouteOutcome {
        let mut out = RouteOutcome { result: RouteResult::Default, decided_by: None, skipped: Vec::new() };
        let mut json: Option<Vec<u8>> = None;
        for p in self.serving(Hook::Route) {
            let bytes = json.get_or_insert_with(|| serde_json::to_vec(ctx).unwrap_or_default());
            match p.call_with(Hook::Route, bytes, |b| serde_json::from_slice::<RouteResult>(b).map_err(|e| e.to_string())) {
                Ok(RouteResult::Default) => {}
                Ok(r) => {
                    out.result = r;
                    out.decided_by = Some(p.name().into());
                    return out;
                }
                Err(e) => match p.on_error() {
                    OnError::Skip => {
                        tracing::warn!(plugin = p.name(), error = %e.kind, "route failed; skipped (on_error = skip)");
                        out.skipped.push(e);
                    }
                    OnError::Abort => {
                        out.result = RouteResult::Block { reason: e.to_string() };
                        out.decided_by = Some(p.name().into());
                        return out;
                    }
                },
            }
        }
        out
    }

    /// Runs `post_query` on every plugin that serves it; returns the failures (each also logged).
    pub fn post_query(&self, env: &PostQueryEnvelope) -> Vec<PluginError> {
        let mut failures = Vec::new();
        let mut json: Option<Vec<u8>> = None;
        for p in self.serving(Hook::PostQuery) {
            let bytes = json.get_or_insert_with(|| serde_json::to_vec(env).unwrap_or_default());
            if let Err(e) = p.call_with(Hook::PostQuery, bytes, |_| Ok(())) {
                tracing::warn!(plugin = p.name(), error = %e.kind, "post_query failed");
                failures.push(e);
            }
        }
        failures
    }

    /// Runs every guard in order; the first deny wins.
    pub fn evaluate(&self, request: &GuardRequest) -> GuardVerdict {
        for p in self.plugins.iter().filter(|p| p.is_guard()) {
            let v = p.evaluate(request);
            if !v.is_allow() {
                return v;
            }
        }
        GuardVerdict::Allow
    }

    /// Typed call of any hook on one plugin of the chain, by name.
    pub fn call_pre_query_on(&self, name: &str, ctx: &QueryContext) -> Option<Result<PreQueryResult, PluginError>> {
        self.get(name).map(|p| p.call::<spec::PreQuery>(ctx))
    }
}
