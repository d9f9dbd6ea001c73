//! llm-guardrail and column-mask: bypass attempts through the wasm builds, and agreement with the
//! native logic on the whole corpus.

use helios_plugin_e2e::{Host, query};
use helios_plugin_host::Chain;
use helios_plugin_schema::{PreQueryResult, QueryContext};

use crate::support::{config_of, corpus, load_demo, lookup};

#[test]
fn llm_guardrail_catches_every_bypass_attempt_through_the_host() {
    let host = Host::new(0);
    let chain = Chain::new(vec![host.load(
        "llm-guardrail",
        &[("large_tables", "events"), ("tenant_tables", "orders"), ("tenant_column", "tenant_id")],
    )]);
    let ai = [("application_name", "langchain-agent")];
    for sql in [
        "DROP TABLE users",
        "DrOp TaBlE users",
        "DROP TABLE \"Users\"",
        "DROP/**/TABLE users",
        "DR/**/OP TABLE users",
        "DELETE FROM t -- WHERE x = 1",
        "DELETE FROM t WHERE 1 = 1",
        "SELECT 1; DROP TABLE t",
        "TRUNCATE t",
        "UPDATE t SET a = 1",
        "SELECT * FROM events",
        "SELECT * FROM orders WHERE status = 'open'",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    ] {
        let out = chain.pre_query(&query("r", sql, None, &ai));
        assert!(
            matches!(&out.result, PreQueryResult::Block { reason } if reason.starts_with("llm-guardrail: ")),
            "{sql}: {out:?}"
        );
        assert!(out.skipped.is_empty());
    }
    for sql in
        ["SELECT * FROM events LIMIT 10", "SELECT * FROM orders WHERE tenant_id = $1", "DELETE FROM t WHERE id = 5"]
    {
        assert_eq!(chain.pre_query(&query("r", sql, None, &ai)).result, PreQueryResult::Continue, "{sql}");
    }
    assert_eq!(
        chain.pre_query(&query("r", "DROP TABLE users", None, &[("application_name", "psql")])).result,
        PreQueryResult::Continue
    );
}

#[test]
fn column_mask_rewrites_through_the_host() {
    let host = Host::new(0);
    let chain = Chain::new(vec![load_demo(&host, "column-mask")]);
    let q = |sql: &str, who: &str| chain.pre_query(&query("r", sql, Some(who), &[])).result;
    assert_eq!(
        q("SELECT u.ssn, u.name FROM users u WHERE u.id = 7", "alice"),
        PreQueryResult::Rewrite { sql: "SELECT mask_ssn(u.ssn) AS ssn, u.name FROM users u WHERE u.id = 7".into() }
    );
    assert_eq!(q("SELECT u.ssn FROM users u", "compliance_officer"), PreQueryResult::Continue);
    assert!(matches!(q("SELECT row_to_json(u) FROM users u", "alice"), PreQueryResult::Block { .. }));
}

fn agree(plugin: &str, native: impl Fn(&QueryContext) -> PreQueryResult) -> usize {
    let host = Host::new(1_700_000_000);
    let chain = Chain::new(vec![load_demo(&host, plugin)]);
    let mut decided = 0;
    for l in corpus() {
        let out = chain.pre_query(&l.ctx);
        assert!(out.skipped.is_empty(), "{plugin} failed on {:?}: {:?}", l.ctx.query, out.skipped);
        assert_eq!(out.result, native(&l.ctx), "{plugin} on {:?} ({})", l.ctx.query, l.note);
        decided += usize::from(out.result != PreQueryResult::Continue);
    }
    decided
}

#[test]
fn llm_guardrail_wasm_matches_the_native_logic_on_the_corpus() {
    let cfg = config_of("llm-guardrail");
    let native = llm_guardrail::Config::from_lookup(lookup(&cfg)).unwrap();
    let blocks = agree("llm-guardrail", |ctx| llm_guardrail::decide(&native, ctx));
    assert!(blocks >= 40, "only {blocks} corpus statements were blocked");
}

#[test]
fn column_mask_wasm_matches_the_native_logic_on_the_corpus() {
    let cfg = config_of("column-mask");
    let native = column_mask::mask::Config::from_lookup(lookup(&cfg)).unwrap();
    let decided = agree("column-mask", |ctx| {
        match column_mask::mask::rewrite(&native, ctx.hook_context.identity.as_deref(), &ctx.query) {
            Ok(None) => PreQueryResult::Continue,
            Ok(Some(sql)) => PreQueryResult::Rewrite { sql },
            Err(reason) => PreQueryResult::Block { reason },
        }
    });
    assert!(decided >= 20, "only {decided} corpus statements were rewritten or blocked");
}
