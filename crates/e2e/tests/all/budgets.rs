//! cost-governor and token-budget: exact accounting and window rollover on the host's clock.

use helios_plugin_e2e::{Host, query};
use helios_plugin_host::Chain;
use helios_plugin_schema::{PostQueryEnvelope, PreQueryResult, QueryContext, QueryOutcome};

fn done(ctx: &QueryContext, elapsed_us: u64, response_bytes: u64) -> PostQueryEnvelope {
    PostQueryEnvelope {
        query_context: ctx.clone(),
        outcome: QueryOutcome { success: true, elapsed_us, response_bytes, ..Default::default() },
    }
}

fn kv_keys(host: &Host, ns: &str) -> Vec<String> {
    host.runtime.kv().entries(ns).into_iter().map(|(k, _)| String::from_utf8_lossy(&k).into_owned()).collect()
}

/// A budget counter (milli-units, the decimal text `kv_add` keeps).
fn kv_counter(host: &Host, ns: &str, key: &str) -> u64 {
    let (_, v) = host
        .runtime
        .kv()
        .entries(ns)
        .into_iter()
        .find(|(k, _)| k == key.as_bytes())
        .unwrap_or_else(|| panic!("no KV key {key} in {:?}", kv_keys(host, ns)));
    String::from_utf8_lossy(&v).parse().unwrap_or_else(|e| panic!("{key}: not a counter ({e})"))
}

#[test]
fn cost_governor_blocks_a_spent_tenant_until_the_minute_rolls_over() {
    let t0 = 1_700_000_100; // the start of a minute
    let host = Host::new(t0);
    let chain = Chain::new(vec![host.load("cost-governor", &[("budget_minute", "3"), ("cost_per_kb", "0")])]);
    let q = query("r1", "SELECT * FROM orders WHERE id = 1", Some("alice"), &[("helios.tenant", "acme")]);
    for _ in 0..3 {
        assert_eq!(chain.pre_query(&q).result, PreQueryResult::Continue);
        assert!(chain.post_query(&done(&q, 1_000, 4_096)).is_empty());
    }
    host.clock.set(t0 + 20);
    let out = chain.pre_query(&q);
    let PreQueryResult::Block { reason } = &out.result else { panic!("expected a block, got {out:?}") };
    assert!(reason.contains("\"acme\" has used its minute budget (3.000 of 3 units)"), "{reason}");
    assert!(reason.contains(&format!("resets at {} (unix time, in 40 s)", t0 + 60)), "{reason}");
    assert_eq!(out.decided_by.as_deref(), Some("cost-governor"));
    let other = query("r2", "SELECT 1", Some("bob"), &[("helios.tenant", "globex")]);
    assert_eq!(chain.pre_query(&other).result, PreQueryResult::Continue, "another tenant is not affected");
    host.clock.set(t0 + 60);
    assert_eq!(chain.pre_query(&q).result, PreQueryResult::Continue, "the next minute starts empty");
    // One counter per (tenant, window, window start); the spent minute's counter is gone, the hour and
    // day keep the 3 units, and nothing is stored for a tenant that was never charged.
    let (hour, day) = (t0 - t0 % 3_600, t0 - t0 % 86_400);
    assert_eq!(
        kv_keys(&host, "cost-governor"),
        vec![format!("tenant:acme:day:{day}"), format!("tenant:acme:hour:{hour}"), "tenant:index".to_owned()]
    );
    assert_eq!(kv_counter(&host, "cost-governor", &format!("tenant:acme:hour:{hour}")), 3_000);
}

#[test]
fn cost_governor_accounts_exactly_over_many_calls() {
    let now = 1_700_000_000;
    let host = Host::new(now);
    let chain = Chain::new(vec![
        host.load("cost-governor", &[("cost_per_ms", "3"), ("cost_per_kb", "2"), ("cost_per_query", "1")]),
    ]);
    let q = query("r", "SELECT 1", None, &[("helios.tenant", "acme")]);
    let mut expected_milli = 0u64;
    for i in 0..200u64 {
        // cost_per_query is charged when the statement is admitted, time and size when it is done.
        assert_eq!(chain.pre_query(&q).result, PreQueryResult::Continue);
        let (elapsed, bytes) = (17 * i + 5, 1_003 * (i % 11));
        assert!(chain.post_query(&done(&q, elapsed, bytes)).is_empty());
        expected_milli += elapsed * 3 + bytes * 2 + 1_000;
    }
    for (w, len) in [("minute", 60), ("hour", 3_600), ("day", 86_400)] {
        let key = format!("tenant:acme:{w}:{}", now - now % len);
        assert_eq!(kv_counter(&host, "cost-governor", &key), expected_milli, "{w}");
    }
}

#[test]
fn token_budget_gates_each_agent_and_model_and_rolls_over_at_midnight() {
    let day = 1_699_920_000; // 00:00 UTC
    let host = Host::new(day + 86_000);
    let chain = Chain::new(vec![
        host.load("token-budget", &[("budget_day", "1000"), ("budgets", r#"{"bot/big": {"day": 5000}}"#)]),
    ]);
    let q = |model: &str, tokens: &str| {
        query(
            "r",
            "SELECT 1",
            Some("agent_svc"),
            &[("helios.agent", "bot"), ("helios.model", model), ("helios.tokens", tokens)],
        )
    };
    for _ in 0..4 {
        let s = q("small", "250");
        assert_eq!(chain.pre_query(&s).result, PreQueryResult::Continue);
        chain.post_query(&done(&s, 1, 1));
    }
    let PreQueryResult::Block { reason } = chain.pre_query(&q("small", "1")).result else { panic!("expected a block") };
    assert!(
        reason
            .contains("\"bot\" on model \"small\" would exceed its day budget (1000 used + 1 requested > 1000 tokens)"),
        "{reason}"
    );
    assert!(reason.contains(&format!("resets at {} (unix time, in 400 s)", day + 86_400)), "{reason}");
    assert_eq!(chain.pre_query(&q("big", "4000")).result, PreQueryResult::Continue, "another model has its own budget");
    assert!(
        matches!(chain.pre_query(&q("small", "x")).result, PreQueryResult::Block { reason } if reason.contains("helios.tokens"))
    );
    host.clock.set(day + 86_400);
    assert_eq!(chain.pre_query(&q("small", "1000")).result, PreQueryResult::Continue);
}
