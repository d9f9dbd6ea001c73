//! The `guest-every-hook` guest (crates/host/tests/guests) in the real host: each of its
//! exports through the host's typed calls; every hook's input reaches its own function and its output
//! comes back.

use std::sync::Arc;

use helios_plugin_host::schema::hooks::{HookSpec, spec};
use helios_plugin_host::schema::{Hook, HookContext, PostQueryEnvelope, PreQueryResult, QueryContext, RouteResult};
use helios_plugin_host::{Plugin, PluginConfig, Runtime, RuntimeConfig};
use serde_json::json;

/// The guest's wasm32 build (built once by `cargo xtask build-examples`).
fn wasm() -> &'static [u8] {
    static WASM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    WASM.get_or_init(|| helios_plugin_test_support::guest("guest-every-hook"))
}

fn call<S: HookSpec>(p: &Plugin, input: &S::Input) -> S::Output {
    p.call::<S>(input).unwrap_or_else(|e| panic!("{}: {e}", S::HOOK))
}

#[test]
fn each_export_reaches_its_own_function_and_answers_through_the_host() {
    let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let p: Arc<Plugin> = rt.load(wasm(), PluginConfig::new("every-hook")).expect("the guest loads");
    for h in Hook::ALL {
        assert!(p.serves(*h), "{h} not served");
    }

    let q = QueryContext { query: "select 1".into(), ..Default::default() };
    assert_eq!(call::<spec::PreQuery>(&p, &q), PreQueryResult::Rewrite { sql: "pre_query:select 1".into() });
    assert_eq!(call::<spec::Rewrite>(&p, &q), PreQueryResult::Rewrite { sql: "rewrite:select 1".into() });
    assert_eq!(call::<spec::Route>(&p, &q), RouteResult::Node { target: "route:select 1".into() });

    let input = json!({"user": "ann", "n": [1, 2.5, null], "s": "é\"\n"});
    let tagged = |hook: &str| json!({"hook": hook, "input": input.clone()});
    assert_eq!(call::<spec::Authenticate>(&p, &input), tagged("authenticate"));
    assert_eq!(call::<spec::Authorize>(&p, &input), tagged("authorize"));
    assert_eq!(call::<spec::CacheGet>(&p, &input), tagged("cache_get"));
    assert_eq!(call::<spec::CacheSet>(&p, &input), tagged("cache_set"));
    assert_eq!(call::<spec::Metrics>(&p, &input), tagged("metrics"));
    assert_eq!(call::<spec::CustomHook>(&p, &input), tagged("custom_hook"));

    let ctx = |id: &str| HookContext { request_id: id.into(), ..Default::default() };
    call::<spec::OnConnect>(&p, &ctx("c-1"));
    call::<spec::OnDisconnect>(&p, &ctx("d-2"));
    let env = PostQueryEnvelope {
        query_context: QueryContext { hook_context: ctx("q-3"), ..q.clone() },
        ..Default::default()
    };
    call::<spec::PostQuery>(&p, &env);
    let http = helios_plugin_host::schema::http::HttpHookInput { msg: json!({"path": "/x"}), ..Default::default() };
    let tagged_http = |hook: &str| Some(json!({"hook": hook, "msg": {"path": "/x"}}));
    assert_eq!(call::<spec::HttpRequest>(&p, &http).msg, tagged_http("http_on_request"));
    assert_eq!(call::<spec::HttpRequestPost>(&p, &http).msg, tagged_http("http_on_request_post"));
    assert_eq!(call::<spec::HttpResponse>(&p, &http).msg, tagged_http("http_on_response"));
    assert_eq!(call::<spec::HttpResponsePost>(&p, &http).msg, tagged_http("http_on_response_post"));
    assert_eq!(call::<spec::ConnectionOpen>(&p, &http).msg, tagged_http("connection_on_connect"));
    assert_eq!(call::<spec::ConnectionClose>(&p, &http).msg, tagged_http("connection_on_disconnect"));
    let kv = rt.kv().entries("every-hook");
    let get = |k: &str| kv.iter().find(|(key, _)| key == k.as_bytes()).map(|(_, v)| v.clone());
    assert_eq!(get("on_connect").as_deref(), Some(&b"c-1"[..]));
    assert_eq!(get("on_disconnect").as_deref(), Some(&b"d-2"[..]));
    assert_eq!(get("post_query").as_deref(), Some(&b"q-3"[..]));
    assert_eq!(p.stats().failures, 0);
}

#[test]
fn a_large_input_and_output_cross_the_boundary_intact() {
    let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
    // Parsing and writing 1 MiB of JSON costs more than the default fuel; this test is about buffers.
    let p = rt.load(wasm(), PluginConfig::new("every-hook-large").fuel(None)).expect("the guest loads");
    let big = "x".repeat(1 << 20);
    let q = QueryContext { query: big.clone(), ..Default::default() };
    for _ in 0..20 {
        assert_eq!(call::<spec::PreQuery>(&p, &q), PreQueryResult::Rewrite { sql: format!("pre_query:{big}") });
    }
    // Inputs and results are freed: twenty 1 MiB round trips fit one warm instance.
    assert_eq!(p.stats().instances_created, 1);
}

#[test]
fn an_sdk_hook_call_costs_a_small_fraction_of_the_default_fuel() {
    // Measured: about 11,400 fuel for this call (JSON in, user fn, JSON out, allocator), i.e. ~0.1% of
    // the default 10,000,000. A budget of 100,000 catches the SDK growing a per-call cost.
    let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let p = rt.load(wasm(), PluginConfig::new("every-hook-cheap").fuel(Some(100_000))).expect("the guest loads");
    let q = QueryContext { query: "select * from users where id = 1".into(), ..Default::default() };
    for _ in 0..3 {
        assert!(matches!(call::<spec::PreQuery>(&p, &q), PreQueryResult::Rewrite { .. }));
    }
}
