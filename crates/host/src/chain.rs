//! Ordered hook chains: plugins by priority (lower first), then load order, with per-plugin
//! `on_error` policies.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use helios_plugin_schema::{
    GuardRequest, GuardVerdict, Hook, PostQueryEnvelope, PreQueryResult, QueryContext, RouteResult, WithoutFacts,
};

use crate::{OnError, Plugin, PluginError};

/// One hook input, encoded at most twice per chain run: with the statement facts for plugins that
/// read them, without for plugins that declared `facts=none` ([`Plugin::reads_facts`]). Each form is
/// encoded the first time a plugin needs it.
#[derive(Default)]
struct Inputs {
    full: Option<Vec<u8>>,
    without_facts: Option<Vec<u8>>,
}

impl Inputs {
    fn for_plugin(
        &mut self,
        p: &Plugin,
        has_facts: bool,
        full: impl FnOnce() -> serde_json::Result<Vec<u8>>,
        without_facts: impl FnOnce() -> serde_json::Result<Vec<u8>>,
    ) -> &[u8] {
        // Without facts to leave out, both forms are the same bytes: encode one.
        if !has_facts || p.reads_facts() {
            self.full.get_or_insert_with(|| full().unwrap_or_default())
        } else {
            self.without_facts.get_or_insert_with(|| without_facts().unwrap_or_default())
        }
    }
}

/// Told each plugin's result and how long its call took (for logs and per-call metrics).
pub type CallObserver<'a, R> = dyn FnMut(&Plugin, Duration, &Result<R, PluginError>) + 'a;

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
        self.pre_query_observed(ctx, &mut |_, _, _| {})
    }

    /// [`Chain::pre_query`], telling `observe` each plugin's result and how long its call took.
    pub fn pre_query_observed(
        &self,
        ctx: &QueryContext,
        observe: &mut CallObserver<'_, PreQueryResult>,
    ) -> PreQueryOutcome {
        let mut out = PreQueryOutcome {
            result: PreQueryResult::Continue,
            decided_by: None,
            rewritten_by: Vec::new(),
            skipped: Vec::new(),
        };
        let mut current: Option<QueryContext> = None;
        // The input is encoded once (twice when some plugins read the facts and others do not) and
        // re-encoded only after a rewrite.
        let mut inputs = Inputs::default();
        for p in self.serving(Hook::PreQuery) {
            let c = current.as_ref().unwrap_or(ctx);
            let bytes = inputs.for_plugin(
                p,
                c.facts.is_some(),
                || serde_json::to_vec(c),
                || serde_json::to_vec(&WithoutFacts(c)),
            );
            let t = Instant::now();
            let r = p.call_with(Hook::PreQuery, bytes, |b| {
                serde_json::from_slice::<PreQueryResult>(b).map_err(|e| e.to_string())
            });
            observe(p, t.elapsed(), &r);
            match r {
                Ok(PreQueryResult::Continue) => {}
                Ok(PreQueryResult::Rewrite { sql }) => {
                    let mut next = c.clone();
                    next.query = sql;
                    current = Some(next);
                    inputs = Inputs::default();
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
        self.route_observed(ctx, &mut |_, _, _| {})
    }

    /// [`Chain::route`] with a per-plugin observer.
    pub fn route_observed(&self, ctx: &QueryContext, observe: &mut CallObserver<'_, RouteResult>) -> RouteOutcome {
        let mut out = RouteOutcome { result: RouteResult::Default, decided_by: None, skipped: Vec::new() };
        let mut inputs = Inputs::default();
        for p in self.serving(Hook::Route) {
            let bytes = inputs.for_plugin(
                p,
                ctx.facts.is_some(),
                || serde_json::to_vec(ctx),
                || serde_json::to_vec(&WithoutFacts(ctx)),
            );
            let t = Instant::now();
            let r = p
                .call_with(Hook::Route, bytes, |b| serde_json::from_slice::<RouteResult>(b).map_err(|e| e.to_string()));
            observe(p, t.elapsed(), &r);
            match r {
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
        self.post_query_observed(env, &mut |_, _, _| {})
    }

    /// [`Chain::post_query`] with a per-plugin observer.
    pub fn post_query_observed(&self, env: &PostQueryEnvelope, observe: &mut CallObserver<'_, ()>) -> Vec<PluginError> {
        let mut failures = Vec::new();
        let mut inputs = Inputs::default();
        let has_facts = env.query_context.facts.is_some();
        for p in self.serving(Hook::PostQuery) {
            let bytes =
                inputs.for_plugin(p, has_facts, || serde_json::to_vec(env), || serde_json::to_vec(&WithoutFacts(env)));
            let t = Instant::now();
            let r = p.call_with(Hook::PostQuery, bytes, |_| Ok(()));
            observe(p, t.elapsed(), &r);
            if let Err(e) = r {
                tracing::warn!(plugin = p.name(), error = %e.kind, "post_query failed");
                failures.push(e);
            }
        }
        failures
    }

    /// Runs every guard in order; the first deny wins.
    pub fn evaluate(&self, request: &GuardRequest) -> GuardVerdict {
        self.evaluate_observed(request, &mut |_, _, _| {})
    }

    /// [`Chain::evaluate`] with a per-guard observer.
    pub fn evaluate_observed(
        &self,
        request: &GuardRequest,
        observe: &mut dyn FnMut(&Plugin, Duration, &GuardVerdict),
    ) -> GuardVerdict {
        for p in self.plugins.iter().filter(|p| p.is_guard()) {
            let t = Instant::now();
            let v = p.evaluate(request);
            observe(p, t.elapsed(), &v);
            if !v.is_allow() {
                return v;
            }
        }
        GuardVerdict::Allow
    }
}
