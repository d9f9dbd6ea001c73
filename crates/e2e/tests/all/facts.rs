//! The plugins decide the same with the host's statement facts (PostgreSQL's parser, filled the way
//! helios-proxy fills them) and without any (the guest extracts its own, as in a HeliosProxy host):
//! every corpus statement through each wasm build both ways.

use helios_plugin_e2e::Host;
use helios_plugin_facts::pg;
use helios_plugin_host::Chain;
use helios_plugin_schema::{PreQueryResult, QueryContext};

use crate::support::{corpus, load_demo};

/// `ctx` as helios-proxy sends it: facts, normalized text, tables and read-only flag from pg_query.
fn with_host_facts(ctx: &QueryContext) -> QueryContext {
    let mut c = ctx.clone();
    let f = pg::extract(&c.query);
    c.normalized = f.normalized.clone();
    c.tables = f.tables();
    c.is_read_only = f.is_read_only;
    c.facts = Some(f);
    c
}

/// The decision without the reason's wording (the two parsers word a syntax error differently).
fn decision(r: &PreQueryResult) -> String {
    match r {
        PreQueryResult::Block { .. } => "block".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Runs the corpus through `plugin`'s `pre_query` with host facts on one host and without on
/// another; returns (statements whose decision differs, statements decided other than continue).
fn pre_query_both_ways(plugin: &str) -> (Vec<String>, usize) {
    let (with, without) = (Host::new(1_700_000_000), Host::new(1_700_000_000));
    let (a, b) = (Chain::new(vec![load_demo(&with, plugin)]), Chain::new(vec![load_demo(&without, plugin)]));
    let (mut differ, mut decided) = (Vec::new(), 0);
    for l in corpus() {
        let host = a.pre_query(&with_host_facts(&l.ctx));
        let guest = b.pre_query(&l.ctx);
        assert!(host.skipped.is_empty() && guest.skipped.is_empty(), "{plugin} failed on {:?}", l.ctx.query);
        if decision(&host.result) != decision(&guest.result) {
            differ.push(format!("{:?}: host facts {:?}, guest facts {:?}", l.ctx.query, host.result, guest.result));
        }
        decided += usize::from(host.result != PreQueryResult::Continue);
    }
    (differ, decided)
}

#[test]
fn llm_guardrail_decides_the_same_with_host_facts_and_guest_facts_on_the_corpus() {
    let (differ, blocked) = pre_query_both_ways("llm-guardrail");
    assert!(differ.is_empty(), "{} differences:\n{}", differ.len(), differ.join("\n"));
    assert!(blocked >= 40, "only {blocked} corpus statements were blocked");
}

#[test]
fn column_mask_decides_the_same_with_host_facts_and_guest_facts_on_the_corpus() {
    let (differ, decided) = pre_query_both_ways("column-mask");
    assert!(differ.is_empty(), "{} differences:\n{}", differ.len(), differ.join("\n"));
    assert!(decided >= 20, "only {decided} corpus statements were rewritten or blocked");
}

#[test]
fn ai_classifier_records_the_same_findings_with_host_facts_and_guest_facts_on_the_corpus() {
    let (differ, decided) = pre_query_both_ways("ai-classifier");
    assert!(differ.is_empty() && decided == 0, "ai-classifier never blocks: {differ:?}");
    // Its decision is the finding it records: the same KV, key for key, both ways.
    let (with, without) = (Host::new(1_700_000_000), Host::new(1_700_000_000));
    let (a, b) =
        (Chain::new(vec![load_demo(&with, "ai-classifier")]), Chain::new(vec![load_demo(&without, "ai-classifier")]));
    let lines = corpus();
    for l in &lines {
        a.pre_query(&with_host_facts(&l.ctx));
        b.pre_query(&l.ctx);
    }
    let (ka, kb) = (with.runtime.kv().entries("ai-classifier"), without.runtime.kv().entries("ai-classifier"));
    let ai = ka.iter().filter(|(_, v)| v.windows(9).any(|w| w == b"\"ai\":true")).count();
    assert!(ai >= 20, "only {ai} AI findings in the corpus");
    assert_eq!(ka, kb, "the findings differ between host facts and guest facts");
}

#[test]
fn pgvector_router_routes_the_same_with_host_facts_and_guest_facts_on_the_corpus() {
    let (with, without) = (Host::new(0), Host::new(0));
    let (a, b) = (
        Chain::new(vec![load_demo(&with, "pgvector-router")]),
        Chain::new(vec![load_demo(&without, "pgvector-router")]),
    );
    let (mut differ, mut routed) = (Vec::new(), 0);
    for l in corpus() {
        let host = a.route(&with_host_facts(&l.ctx));
        let guest = b.route(&l.ctx);
        assert!(host.skipped.is_empty() && guest.skipped.is_empty(), "pgvector-router failed on {:?}", l.ctx.query);
        if host.result != guest.result {
            differ.push(format!("{:?}: host facts {:?}, guest facts {:?}", l.ctx.query, host.result, guest.result));
        }
        routed += usize::from(host.result != helios_plugin_schema::RouteResult::Default);
    }
    assert!(differ.is_empty(), "{} differences:\n{}", differ.len(), differ.join("\n"));
    assert!(routed >= 5, "only {routed} corpus statements were routed to the vector node");
}

/// The demo's corpus, judged on the host's facts (as helios-proxy and the demo run it), shows a
/// refusal of every class AI traffic may not use by default; DO, CLUSTER and REINDEX are refused by
/// class (an operator could allow them), not as unparseable.
#[test]
fn the_corpus_shows_a_refusal_of_each_class_ai_traffic_may_not_use() {
    let host = Host::new(1_700_000_000);
    let guard = Chain::new(vec![load_demo(&host, "llm-guardrail")]);
    let mut reasons = Vec::new();
    for l in corpus() {
        if let PreQueryResult::Block { reason } = guard.pre_query(&with_host_facts(&l.ctx)).result {
            reasons.push((l.ctx.query.clone(), reason));
        }
    }
    for class in ["ddl", "dcl", "routine", "maintenance", "session_role", "copy_file", "copy_program"] {
        let needle = format!("statement class {class}");
        assert!(reasons.iter().any(|(_, r)| r.contains(&needle)), "no corpus refusal for {class}");
    }
    for (start, class) in [("DO ", "routine"), ("CLUSTER ", "maintenance"), ("REINDEX ", "maintenance")] {
        let (q, r) = reasons.iter().find(|(q, _)| q.starts_with(start)).unwrap_or_else(|| panic!("no {start}line"));
        assert!(r.contains(&format!("statement class {class}")), "{q}: {r}");
    }
}

#[test]
fn only_the_plugins_that_read_statement_facts_are_sent_them() {
    // The other five declare `facts=none` (`without_statement_facts!`): the chain leaves the facts,
    // most of a context's bytes, out of their input.
    let host = Host::new(1_700_000_000);
    let reads = [
        ("llm-guardrail", true),
        ("column-mask", true),
        ("pgvector-router", true),
        ("ai-classifier", false),
        ("cost-governor", false),
        ("token-budget", false),
        ("audit-chain", false),
        ("residency-router", false),
    ];
    for (name, expected) in reads {
        assert_eq!(load_demo(&host, name).reads_facts(), expected, "{name}");
    }
}
