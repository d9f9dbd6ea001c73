//! pgvector-router and residency-router: the wasm builds route as the native logic does.

use helios_plugin_e2e::{Host, query};
use helios_plugin_host::Chain;
use helios_plugin_schema::{QueryContext, RouteResult};

use crate::support::{config_of, corpus, load_demo, lookup};

fn node(t: &str) -> RouteResult {
    RouteResult::Node { target: t.into() }
}

#[test]
fn pgvector_router_sends_top_k_searches_to_the_vector_node() {
    let host = Host::new(0);
    let chain = Chain::new(vec![host.load("pgvector-router", &[("vector_node", "pg-vector-1")])]);
    let route = |sql: &str| chain.route(&query("r", sql, None, &[])).result;
    for op in ["<->", "<#>", "<=>"] {
        assert_eq!(
            route(&format!("SELECT id FROM items ORDER BY embedding {op} '[1,2,3]' LIMIT 5")),
            node("pg-vector-1"),
            "{op}"
        );
    }
    assert_eq!(route("SELECT id FROM items ORDER BY embedding <-> '[1,2,3]'"), RouteResult::Default, "no LIMIT");
    assert_eq!(route("SELECT '<->' FROM items ORDER BY id LIMIT 1"), RouteResult::Default, "a literal");
    assert_eq!(
        route("SELECT id FROM items WHERE kind IS OF (text) ORDER BY embedding <=> $1 LIMIT 5"),
        node("pg-vector-1"),
        "token fallback"
    );
}

#[test]
fn pgvector_router_takes_the_node_from_the_attribute_when_unconfigured() {
    let host = Host::new(0);
    let chain = Chain::new(vec![host.load("pgvector-router", &[])]);
    let q =
        query("r", "SELECT id FROM items ORDER BY embedding <=> $1 LIMIT 3", None, &[("helios.vector_node", "vec-b")]);
    assert_eq!(chain.route(&q).result, node("vec-b"));
}

#[test]
fn residency_router_keeps_users_in_region_and_enforce_blocks() {
    let host = Host::new(0);
    let chain = Chain::new(vec![host.load(
        "residency-router",
        &[
            ("region_map", r#"{"eu": "pg-eu-1", "us": "pg-us-1"}"#),
            ("user_regions", r#"{"alice": "eu"}"#),
            ("enforce", "true"),
        ],
    )]);
    let route = |who: &str, attrs: &[(&str, &str)]| chain.route(&query("r", "SELECT 1", Some(who), attrs)).result;
    assert_eq!(route("alice", &[]), node("pg-eu-1"));
    assert_eq!(route("erin", &[("helios.region", "us")]), node("pg-us-1"));
    for (who, attrs, why) in [
        ("frank", vec![], "no region known"),
        ("gia", vec![("helios.region", "sa")], "no node serves region sa"),
        ("alice", vec![("helios.region", "us")], "registered in region eu"),
    ] {
        match route(who, &attrs) {
            RouteResult::Block { reason } => assert!(reason.contains(why), "{reason}"),
            other => panic!("{who}: expected a block, got {other:?}"),
        }
    }
}

/// The wasm build and the native crate agree on every corpus statement.
fn agree(plugin: &str, native: impl Fn(&QueryContext) -> RouteResult) {
    let host = Host::new(1_700_000_000);
    let chain = Chain::new(vec![load_demo(&host, plugin)]);
    let lines = corpus();
    for l in &lines {
        let out = chain.route(&l.ctx);
        assert!(out.skipped.is_empty(), "{plugin} failed on {:?}: {:?}", l.ctx.query, out.skipped);
        assert_eq!(out.result, native(&l.ctx), "{plugin} on {:?} ({})", l.ctx.query, l.note);
    }
}

#[test]
fn pgvector_router_wasm_matches_the_native_logic_on_the_corpus() {
    let cfg = config_of("pgvector-router");
    agree("pgvector-router", |ctx| pgvector_router::decide(cfg.get("vector_node").map(String::as_str), ctx).0);
}

#[test]
fn residency_router_wasm_matches_the_native_logic_on_the_corpus() {
    let cfg = config_of("residency-router");
    let native = residency_router::Config::from_lookup(lookup(&cfg)).unwrap();
    agree("residency-router", |ctx| residency_router::decide(&native, &ctx.hook_context).0);
}
