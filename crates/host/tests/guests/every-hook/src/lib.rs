//! guest-every-hook: one SDK guest serving every hook of the catalogue. Every answer names the
//! hook that produced it, so a host test can tell that each export reaches its own function:
//!
//! * `pre_query`, `rewrite`: `Rewrite { sql: "<hook>:" + query }`
//! * `route`: `Node { target: "route:" + query }`
//! * free-form hooks (`authenticate`, `authorize`, `cache_get`, `cache_set`, `metrics`,
//!   `custom_hook`): `{"hook": "<hook>", "input": <input>}`
//! * HTTP and connection hooks (`http_on_request`, ...): continue with the message
//!   `{"hook": "<hook>", "msg": <msg>}`
//! * hooks without output (`post_query`, `on_connect`, `on_disconnect`): write KV key `<hook>` = the
//!   request id they saw.

use helios_plugin_abi::schema::http::{HttpHookInput, HttpHookOutput};
use helios_plugin_abi::*;
use serde_json::{Value, json};

fn tagged(hook: &str, input: Value) -> Value {
    json!({ "hook": hook, "input": input })
}

fn remember(hook: &str, request_id: &str) {
    if let Err(e) = kv_write(hook, request_id) {
        log(Level::Error, &format!("every-hook: {hook} could not write kv: {e}"));
    }
}

#[hook(PreQuery)]
pub fn pre_query(ctx: &QueryContext) -> PreQueryResult {
    PreQueryResult::Rewrite { sql: format!("pre_query:{}", ctx.query) }
}

#[hook(PostQuery)]
pub fn post_query(env: &PostQueryEnvelope) {
    remember("post_query", &env.query_context.hook_context.request_id);
}

#[hook(Route)]
pub fn route(ctx: &QueryContext) -> RouteResult {
    RouteResult::Node { target: format!("route:{}", ctx.query) }
}

#[hook(Authenticate)]
pub fn authenticate(v: Value) -> Value {
    tagged("authenticate", v)
}

#[hook(Authorize)]
pub fn authorize(v: Value) -> Value {
    tagged("authorize", v)
}

#[hook(CacheGet)]
pub fn cache_get(v: Value) -> Value {
    tagged("cache_get", v)
}

#[hook(CacheSet)]
pub fn cache_set(v: Value) -> Value {
    tagged("cache_set", v)
}

#[hook(Rewrite)]
pub fn rewrite(ctx: QueryContext) -> PreQueryResult {
    PreQueryResult::Rewrite { sql: format!("rewrite:{}", ctx.query) }
}

#[hook(Metrics)]
pub fn metrics(v: Value) -> Value {
    tagged("metrics", v)
}

#[hook(OnConnect)]
pub fn on_connect(ctx: &HookContext) {
    remember("on_connect", &ctx.request_id);
}

#[hook(OnDisconnect)]
pub fn on_disconnect(ctx: HookContext) {
    remember("on_disconnect", &ctx.request_id);
}

#[hook(CustomHook)]
pub fn custom_hook(v: &Value) -> Value {
    tagged("custom_hook", v.clone())
}

fn http_tagged(hook: &str, input: HttpHookInput) -> HttpHookOutput {
    HttpHookOutput::continue_with(json!({ "hook": hook, "msg": input.msg }))
}

#[hook(HttpRequest)]
pub fn http_on_request(input: HttpHookInput) -> HttpHookOutput {
    http_tagged("http_on_request", input)
}

#[hook(HttpRequestPost)]
pub fn http_on_request_post(input: HttpHookInput) -> HttpHookOutput {
    http_tagged("http_on_request_post", input)
}

#[hook(HttpResponse)]
pub fn http_on_response(input: HttpHookInput) -> HttpHookOutput {
    http_tagged("http_on_response", input)
}

#[hook(HttpResponsePost)]
pub fn http_on_response_post(input: HttpHookInput) -> HttpHookOutput {
    http_tagged("http_on_response_post", input)
}

#[hook(ConnectionOpen)]
pub fn connection_on_connect(input: HttpHookInput) -> HttpHookOutput {
    http_tagged("connection_on_connect", input)
}

#[hook(ConnectionClose)]
pub fn connection_on_disconnect(input: HttpHookInput) -> HttpHookOutput {
    http_tagged("connection_on_disconnect", input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_their_hook() {
        testing::reset();
        let q = QueryContext { query: "select 1".into(), ..Default::default() };
        assert_eq!(pre_query(&q), PreQueryResult::Rewrite { sql: "pre_query:select 1".into() });
        assert_eq!(metrics(json!(1)), json!({"hook": "metrics", "input": 1}));
        on_connect(&HookContext { request_id: "r1".into(), ..Default::default() });
        assert_eq!(testing::kv_snapshot()[&b"on_connect".to_vec()], b"r1");
    }
}
