//! What the proxy asks of its plugins per statement. Production uses a
//! [`helios_plugin_host::Chain`]; tests may plug in a native implementation of the same trait.

use std::sync::Arc;

use helios_plugin_host::Chain;
use helios_plugin_schema::{Hook, PostQueryEnvelope, PreQueryResult, QueryContext, RouteResult};

/// A `pre_query` decision and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreQueryDecision {
    /// `Continue`, `Rewrite` (final SQL), `Block` or `Cached`.
    pub result: PreQueryResult,
    /// The plugin that blocked or answered, for the client's error detail and the log.
    pub decided_by: Option<Arc<str>>,
}

/// A `route` decision and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision {
    pub result: RouteResult,
    pub decided_by: Option<Arc<str>>,
}

/// The statement hooks. Calls are synchronous: a plugin call takes microseconds and carries its own
/// deadline. Implementations never fail: a plugin failure is already mapped by its `on_error`.
pub trait StatementHooks: Send + Sync + 'static {
    /// True when no hook would do anything; the proxy then skips building contexts.
    fn is_empty(&self) -> bool;
    /// True when some `pre_query` hook judges statements; then messages no plugin can inspect
    /// (FunctionCall) are refused. Defaults to `!is_empty()`.
    fn has_pre_query(&self) -> bool {
        !self.is_empty()
    }
    fn pre_query(&self, ctx: &QueryContext) -> PreQueryDecision;
    fn route(&self, ctx: &QueryContext) -> RouteDecision;
    fn post_query(&self, env: &PostQueryEnvelope);
    /// The longest one hook call can take, when something enforces it (the plugins' deadlines);
    /// `None` = unbounded, so calls always run off the async workers. Defaults to `None`.
    fn bounded_call_time(&self) -> Option<std::time::Duration> {
        None
    }
}

impl StatementHooks for Chain {
    fn is_empty(&self) -> bool {
        self.plugins().is_empty()
    }

    /// Every plugin call is stopped at its deadline: a chain call ends within their sum.
    fn bounded_call_time(&self) -> Option<std::time::Duration> {
        Some(self.plugins().iter().map(|p| p.limits().deadline).sum())
    }

    fn has_pre_query(&self) -> bool {
        self.plugins().iter().any(|p| p.serves(Hook::PreQuery))
    }

    fn pre_query(&self, ctx: &QueryContext) -> PreQueryDecision {
        let o = Chain::pre_query(self, ctx);
        PreQueryDecision { result: o.result, decided_by: o.decided_by }
    }

    fn route(&self, ctx: &QueryContext) -> RouteDecision {
        let o = Chain::route(self, ctx);
        RouteDecision { result: o.result, decided_by: o.decided_by }
    }

    fn post_query(&self, env: &PostQueryEnvelope) {
        let _failures = Chain::post_query(self, env);
    }
}

/// No plugins: every statement continues to the default node.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl StatementHooks for NoHooks {
    fn is_empty(&self) -> bool {
        true
    }
    fn pre_query(&self, _: &QueryContext) -> PreQueryDecision {
        PreQueryDecision { result: PreQueryResult::Continue, decided_by: None }
    }
    fn route(&self, _: &QueryContext) -> RouteDecision {
        RouteDecision { result: RouteResult::Default, decided_by: None }
    }
    fn post_query(&self, _: &PostQueryEnvelope) {}
}
