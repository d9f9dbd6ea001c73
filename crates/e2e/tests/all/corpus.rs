//! The whole demo: every corpus statement through the eight plugins, configured by
//! `examples/corpus/proxy.toml`, within the host's default limits; each line's note holds.

use std::time::Instant;

use helios_plugin_e2e::{Host, PLUGINS, wasm, wasm_path};
use helios_plugin_host::{Chain, PluginConfig};
use helios_plugin_schema::{PostQueryEnvelope, PreQueryResult, QueryOutcome, RouteResult};

use crate::support::{corpus, demo_config, load_demo};

#[test]
fn a_missing_module_fails_with_the_command_that_builds_it() {
    let err = wasm("no-such-plugin").unwrap_err();
    assert!(err.contains("no_such_plugin.wasm") && err.contains("cargo xtask build-examples"), "{err}");
    for p in PLUGINS {
        assert!(wasm_path(p).exists(), "{}: missing; run `cargo xtask build-examples`", wasm_path(p).display());
    }
}

#[test]
fn every_plugin_declares_the_hooks_the_demo_config_uses() {
    let host = Host::new(0);
    for e in demo_config() {
        let p = host.try_load(&e.name, PluginConfig::new(&e.name)).unwrap_or_else(|err| panic!("{err}"));
        assert!(!p.hooks().is_empty(), "{} declares no hook", e.name);
    }
}

#[test]
fn the_corpus_runs_through_all_eight_plugins_within_the_default_limits() {
    let host = Host::new(1_700_000_000);
    let chain = Chain::new(demo_config().iter().map(|e| load_demo(&host, &e.name)).collect());
    assert_eq!(chain.plugins().len(), 8);
    let lines = corpus();
    let start = Instant::now();
    let (mut blocked, mut rewritten, mut routed) = (0, 0, 0);
    for (i, l) in lines.iter().enumerate() {
        host.clock.set(1_700_000_000 + i as i64 * 7);
        let pre = chain.pre_query(&l.ctx);
        assert!(pre.skipped.is_empty(), "line {}: {:?}", i + 1, pre.skipped);
        if let PreQueryResult::Block { reason } = &pre.result {
            // A plugin's own decision, never a plugin failure turned into a block.
            assert!(!reason.contains("trap") && !reason.contains("fuel"), "line {}: {reason}", i + 1);
            blocked += 1;
            continue;
        }
        rewritten += usize::from(matches!(pre.result, PreQueryResult::Rewrite { .. }));
        let route = chain.route(&l.ctx);
        assert!(route.skipped.is_empty(), "line {}: {:?}", i + 1, route.skipped);
        let target_node = match &route.result {
            RouteResult::Block { .. } => {
                blocked += 1;
                continue;
            }
            RouteResult::Node { target } => {
                routed += 1;
                Some(target.clone())
            }
            _ => None,
        };
        let mut ctx = l.ctx.clone();
        ctx.query = pre.query(&l.ctx).to_owned();
        let env = PostQueryEnvelope {
            query_context: ctx,
            outcome: QueryOutcome {
                success: true,
                target_node,
                elapsed_us: 2_000,
                response_bytes: 500,
                rows: Some(1),
                error: None,
            },
        };
        let failures = chain.post_query(&env);
        assert!(failures.is_empty(), "line {}: {failures:?}", i + 1);
    }
    let per_statement = start.elapsed() / lines.len() as u32;
    eprintln!(
        "corpus: {} statements, {blocked} blocked, {rewritten} rewritten, {routed} routed; {per_statement:?} per statement through the chain (debug host)",
        lines.len()
    );
    assert!(blocked > 0 && rewritten > 0 && routed > 0);
    let audit = host
        .messages("audit-chain")
        .into_iter()
        .filter_map(|m| m.strip_prefix(audit_chain::chain::LOG_PREFIX).map(str::to_owned))
        .collect::<Vec<_>>();
    assert_eq!(audit_chain::verify_chain(&audit.join("\n")), Ok(audit.len()));
}

#[test]
fn each_plugin_alone_decides_as_the_corpus_notes_say() {
    let host = Host::new(1_700_000_000);
    let guard = Chain::new(vec![load_demo(&host, "llm-guardrail")]);
    let mask = Chain::new(vec![load_demo(&host, "column-mask")]);
    let residency = Chain::new(vec![load_demo(&host, "residency-router")]);
    let vector = Chain::new(vec![load_demo(&host, "pgvector-router")]);
    let mut checked = 0;
    for l in corpus() {
        let n = l.note.as_str();
        let what = format!("{:?} ({n})", l.ctx.query);
        if let Some(rest) = n.strip_prefix("llm-guardrail: ") {
            let r = guard.pre_query(&l.ctx).result;
            if rest.starts_with("block") {
                assert!(matches!(r, PreQueryResult::Block { .. }), "{what}: {r:?}");
            } else if rest.starts_with("continue") {
                assert_eq!(r, PreQueryResult::Continue, "{what}");
            }
            checked += 1;
        } else if let Some(rest) = n.strip_prefix("column-mask: ") {
            let r = mask.pre_query(&l.ctx).result;
            if rest.starts_with("block") {
                assert!(matches!(r, PreQueryResult::Block { .. }), "{what}: {r:?}");
            } else if rest.contains("no rewrite") {
                assert_eq!(r, PreQueryResult::Continue, "{what}");
            } else {
                assert!(matches!(r, PreQueryResult::Rewrite { .. }), "{what}: {r:?}");
            }
            checked += 1;
        } else if n.starts_with("residency-router: ") {
            let r = residency.route(&l.ctx).result;
            if n.contains("block (enforce)") {
                assert!(matches!(r, RouteResult::Block { .. }), "{what}: {r:?}");
            } else {
                let node = n.rsplit("route to ").next().unwrap().trim();
                assert_eq!(r, RouteResult::Node { target: node.into() }, "{what}");
            }
            checked += 1;
        } else if n.starts_with("pgvector-router: ") {
            let r = vector.route(&l.ctx).result;
            if n.contains("vector node") {
                assert_eq!(r, RouteResult::Node { target: "pg-vector-1".into() }, "{what}");
            } else {
                assert_eq!(r, RouteResult::Default, "{what}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} notes checked");
}
