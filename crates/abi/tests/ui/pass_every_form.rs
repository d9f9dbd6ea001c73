// Every hook of the catalogue, by reference and by value, and guards in both forms.
use helios_plugin_abi::*;
use serde_json::Value;

#[hook(PreQuery)]
fn pre_query(ctx: &QueryContext) -> PreQueryResult {
    PreQueryResult::Rewrite { sql: ctx.query.clone() }
}
#[hook(PostQuery)]
fn post_query(_env: PostQueryEnvelope) {}
#[hook(Route)]
fn route<'a>(_ctx: &'a QueryContext) -> RouteResult {
    RouteResult::Primary
}
#[hook(Authenticate)]
fn authenticate(v: Value) -> Value {
    v
}
#[hook(Authorize)]
fn authorize(v: &Value) -> Value {
    v.clone()
}
#[hook(CacheGet)]
fn cache_get(v: Value) -> Value {
    v
}
#[hook(CacheSet)]
fn cache_set(v: Value) -> Value {
    v
}
#[hook(Rewrite)]
fn rewrite(_ctx: QueryContext) -> PreQueryResult {
    PreQueryResult::Continue
}
#[hook(Metrics)]
fn metrics(v: Value) -> Value {
    v
}
#[hook(OnConnect)]
fn on_connect(_ctx: &HookContext) -> () {}
#[hook(OnDisconnect)]
fn on_disconnect(_ctx: HookContext) {}
#[hook(CustomHook)]
pub(crate) fn custom(v: Value) -> Value {
    v
}

#[chio_guard]
fn evaluate(req: GuardRequest) -> GuardVerdict {
    if req.tool_name == "rm" { GuardVerdict::deny("no rm") } else { GuardVerdict::Allow }
}

mod by_ref {
    use helios_plugin_abi::*;
    #[chio_guard]
    pub fn evaluate(req: &GuardRequest) -> GuardVerdict {
        super::evaluate(req.clone())
    }
}

fn main() {
    // The functions stay ordinary functions.
    let q = QueryContext { query: "select 1".into(), ..Default::default() };
    assert_eq!(pre_query(&q), PreQueryResult::Rewrite { sql: "select 1".into() });
    assert_eq!(by_ref::evaluate(&GuardRequest { tool_name: "rm".into(), ..Default::default() }), GuardVerdict::deny("no rm"));
    let _ = (post_query, route, authenticate, authorize, cache_get, cache_set, rewrite, metrics);
    let _ = (on_connect, on_disconnect, custom);
}
