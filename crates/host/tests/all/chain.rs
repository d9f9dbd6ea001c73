//! Hook chains: order, rewrites, blocks, failure policies, routing, concurrency.

use std::sync::Arc;

use helios_plugin_host::{Chain, OnError, Plugin, PluginConfig, Runtime};
use helios_plugin_schema::{PreQueryResult, QueryContext, RouteResult};

use crate::support::{runtime, scripted_hook};

fn hook(rt: &Runtime, name: &str, action: &str, needle: &str, text: &str) -> PluginConfig {
    let _ = rt;
    PluginConfig::new(name).config("action", action).config("needle", needle).config("text", text)
}

fn load(rt: &Runtime, cfg: PluginConfig) -> Arc<Plugin> {
    rt.load(scripted_hook().as_bytes(), cfg).unwrap()
}

fn q(sql: &str) -> QueryContext {
    QueryContext { query: sql.into(), ..Default::default() }
}

#[test]
fn a_rewrite_is_what_later_plugins_see() {
    let (rt, _) = runtime();
    let rewriter = load(&rt, hook(&rt, "rewriter", "r", "", "SELECT 'rewritten'").priority(1));
    let watcher = load(&rt, hook(&rt, "watcher", "b", "rewritten", "saw the rewrite").priority(2));
    let alone = Chain::new(vec![watcher.clone()]);
    assert_eq!(alone.pre_query(&q("SELECT 1")).result, PreQueryResult::Continue);
    let chain = Chain::new(vec![watcher, rewriter]);
    let out = chain.pre_query(&q("SELECT 1"));
    assert_eq!(out.result, PreQueryResult::Block { reason: "saw the rewrite".into() });
    assert_eq!(out.decided_by.as_deref(), Some("watcher"));
    assert_eq!(out.rewritten_by, vec![Arc::<str>::from("rewriter")]);
}

#[test]
fn the_final_rewrite_is_returned_when_nobody_blocks() {
    let (rt, _) = runtime();
    let a = load(&rt, hook(&rt, "a", "r", "", "SELECT 2").priority(1));
    let b = load(&rt, hook(&rt, "b", "r", "SELECT 2", "SELECT 3").priority(2));
    let out = Chain::new(vec![b, a]).pre_query(&q("SELECT 1"));
    assert_eq!(out.result, PreQueryResult::Rewrite { sql: "SELECT 3".into() });
    assert_eq!(out.query(&q("SELECT 1")), "SELECT 3");
}

#[test]
fn plugins_run_by_priority_then_load_order() {
    let (rt, _) = runtime();
    let late = load(&rt, hook(&rt, "late", "b", "", "late").priority(50));
    let first_loaded = load(&rt, hook(&rt, "first-loaded", "b", "", "first-loaded").priority(10));
    let second_loaded = load(&rt, hook(&rt, "second-loaded", "b", "", "second-loaded").priority(10));
    let chain = Chain::new(vec![late.clone(), first_loaded.clone(), second_loaded.clone()]);
    assert_eq!(chain.pre_query(&q("x")).decided_by.as_deref(), Some("first-loaded"));
    let names: Vec<_> = chain.plugins().iter().map(|p| p.name().to_owned()).collect();
    assert_eq!(names, ["first-loaded", "second-loaded", "late"]);
    let chain = Chain::new(vec![late, second_loaded, first_loaded]);
    assert_eq!(chain.pre_query(&q("x")).decided_by.as_deref(), Some("second-loaded"));
}

#[test]
fn on_error_skip_goes_on_and_abort_blocks_with_the_cause() {
    let (rt, _) = runtime();
    let trapper = |name: &str, on_error| load(&rt, hook(&rt, name, "t", "", "").priority(1).on_error(on_error));
    let blocker = load(&rt, hook(&rt, "blocker", "b", "DROP", "no drops").priority(2));

    let skip = Chain::new(vec![trapper("skipper", OnError::Skip), blocker.clone()]);
    let out = skip.pre_query(&q("SELECT 1"));
    assert_eq!(out.result, PreQueryResult::Continue);
    assert_eq!(out.skipped.len(), 1);
    assert_eq!(&*out.skipped[0].plugin, "skipper");
    assert_eq!(skip.pre_query(&q("DROP TABLE t")).result, PreQueryResult::Block { reason: "no drops".into() });

    let abort = Chain::new(vec![trapper("aborter", OnError::Abort), blocker]);
    let out = abort.pre_query(&q("SELECT 1"));
    match out.result {
        PreQueryResult::Block { reason } => {
            assert!(reason.contains("aborter") && reason.contains("unreachable"), "{reason}")
        }
        other => panic!("expected a block, got {other:?}"),
    }
    assert_eq!(out.decided_by.as_deref(), Some("aborter"));
}

#[test]
fn route_takes_the_first_opinion_in_priority_order() {
    let (rt, _) = runtime();
    let silent = load(&rt, hook(&rt, "silent", "c", "", "").priority(1));
    let vec_router = load(&rt, hook(&rt, "vector", "n", "<->", "replica-1").priority(2));
    let catch_all = load(&rt, hook(&rt, "catch-all", "n", "", "primary-ish").priority(3));
    let chain = Chain::new(vec![catch_all, vec_router, silent]);
    let out = chain.route(&q("SELECT * FROM items ORDER BY v <-> point(1,2) LIMIT 5"));
    assert_eq!(out.result, RouteResult::Node { target: "replica-1".into() });
    assert_eq!(chain.route(&q("SELECT 1")).result, RouteResult::Node { target: "primary-ish".into() });
}

#[test]
fn two_threads_give_the_same_decisions_as_one() {
    let (rt, _) = runtime();
    let chain = Arc::new(Chain::new(vec![
        load(&rt, hook(&rt, "r", "r", "legacy_", "SELECT 'modern'").priority(1)),
        load(&rt, hook(&rt, "drop", "b", "DROP", "drop refused").priority(2)),
        load(&rt, hook(&rt, "trunc", "b", "TRUNCATE", "truncate refused").priority(3)),
    ]));
    let inputs: Vec<String> = (0..400)
        .map(|i| match i % 4 {
            0 => format!("SELECT {i}"),
            1 => format!("DROP TABLE t{i}"),
            2 => format!("SELECT * FROM legacy_{i}"),
            _ => format!("TRUNCATE t{i}"),
        })
        .collect();
    let one: Vec<_> = inputs.iter().map(|s| chain.pre_query(&q(s)).result).collect();
    let halves: Vec<Vec<PreQueryResult>> = std::thread::scope(|s| {
        let hs: Vec<_> = [0, 1]
            .map(|t| {
                let chain = chain.clone();
                let inputs = &inputs;
                s.spawn(move || {
                    inputs.iter().skip(t).step_by(2).map(|x| chain.pre_query(&q(x)).result).collect::<Vec<_>>()
                })
            })
            .into_iter()
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut two = Vec::new();
    for i in 0..inputs.len() {
        two.push(halves[i % 2][i / 2].clone());
    }
    assert_eq!(one, two);
    assert!(one.iter().any(|r| matches!(r, PreQueryResult::Block { .. })));
    assert!(one.iter().any(|r| matches!(r, PreQueryResult::Rewrite { .. })));
}

#[test]
fn only_configured_hooks_are_served() {
    let (rt, _) = runtime();
    // The scripted module exports pre_query and route; serve pre_query only.
    let p = rt
        .load(
            scripted_hook().as_bytes(),
            hook(&rt, "pre-only", "n", "", "elsewhere").hooks([helios_plugin_schema::Hook::PreQuery]),
        )
        .unwrap();
    assert_eq!(p.hooks(), [helios_plugin_schema::Hook::PreQuery]);
    assert_eq!(Chain::new(vec![p]).route(&q("SELECT 1")).result, RouteResult::Default, "an unserved export was called");
    let err = rt
        .load(scripted_hook().as_bytes(), PluginConfig::new("post").hooks([helios_plugin_schema::Hook::PostQuery]))
        .unwrap_err();
    assert!(err.to_string().contains("post_query") && err.to_string().contains("does not export"), "{err}");
}

/// `scripted_hook` whose `helios.plugin` section says it reads no statement facts.
fn scripted_hook_without_facts() -> String {
    scripted_hook().replacen("(module", r#"(module (@custom "helios.plugin" "facts=none\n")"#, 1)
}

#[test]
fn a_plugin_that_declares_facts_none_is_sent_the_context_without_them_and_the_others_with() {
    let (rt, _) = runtime();
    // Each acts when its input carries the facts' field.
    let cfg = |name: &str, action: &str| hook(&rt, name, action, r#""facts":"#, &format!("{name} was sent facts"));
    let lean = rt.load(scripted_hook_without_facts().as_bytes(), cfg("lean", "b").priority(1)).unwrap();
    let full = load(&rt, cfg("full", "b").priority(2));
    assert!(!lean.reads_facts() && full.reads_facts());
    let facts = helios_plugin_schema::facts::StatementFacts { statement_count: 1, ..Default::default() };
    let ctx = QueryContext { facts: Some(facts), ..q("SELECT 1") };
    let out = Chain::new(vec![lean.clone(), full.clone()]).pre_query(&ctx);
    assert_eq!(out.result, PreQueryResult::Block { reason: "full was sent facts".into() }, "{out:?}");
    assert_eq!(Chain::new(vec![lean.clone()]).pre_query(&ctx).result, PreQueryResult::Continue);
    // After a rewrite the lean form is encoded again from the rewritten statement, still without facts.
    let rewriter = load(&rt, hook(&rt, "rewriter", "r", "", "SELECT 2").priority(0));
    let watcher = rt.load(scripted_hook_without_facts().as_bytes(), hook(&rt, "w", "b", "SELECT 2", "saw it")).unwrap();
    let out = Chain::new(vec![rewriter, watcher, lean.clone()]).pre_query(&ctx);
    assert_eq!(out.result, PreQueryResult::Block { reason: "saw it".into() }, "{out:?}");
    // route: the same rule.
    let lean_route = rt.load(scripted_hook_without_facts().as_bytes(), cfg("lean-route", "n")).unwrap();
    let full_route = load(&rt, cfg("full-route", "n").priority(1));
    assert_eq!(Chain::new(vec![lean_route.clone()]).route(&ctx).result, RouteResult::Default);
    let out = Chain::new(vec![lean_route, full_route]).route(&ctx);
    assert_eq!(out.decided_by.as_deref(), Some("full-route"), "{out:?}");
}
