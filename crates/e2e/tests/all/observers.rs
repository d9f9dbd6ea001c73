//! ai-classifier and audit-chain: what they record, through the host's KV and log sink.

use audit_chain::chain::{LOG_PREFIX, TAIL_KEY, Tail, ZERO_GENESIS};
use audit_chain::{VerifyOptions, verify_chain, verify_chain_with};
use helios_plugin_e2e::{Host, query};
use helios_plugin_host::{Chain, Level};
use helios_plugin_schema::{PostQueryEnvelope, PreQueryResult, QueryOutcome};

#[test]
fn ai_classifier_records_its_finding_per_request_and_never_blocks() {
    let host = Host::new(1_700_000_000);
    let chain = Chain::new(vec![host.load("ai-classifier", &[("max_findings", "20")])]);
    let ai = query("req-ai", "/* ai: text2sql */ DROP TABLE users", Some("bob"), &[("application_name", "webapp")]);
    let human = query("req-human", "SELECT 1", Some("alice"), &[("application_name", "psql")]);
    assert_eq!(chain.pre_query(&ai).result, PreQueryResult::Continue);
    assert_eq!(chain.pre_query(&human).result, PreQueryResult::Continue);
    let kv = host.runtime.kv().entries("ai-classifier");
    let finding = |id: &str| -> serde_json::Value {
        let key = format!("finding:{id}");
        serde_json::from_slice(&kv.iter().find(|(k, _)| *k == key.as_bytes()).unwrap_or_else(|| panic!("no {key}")).1)
            .unwrap()
    };
    assert_eq!(
        finding("req-ai"),
        serde_json::json!({"request_id": "req-ai", "ai": true, "signals": ["comment:ai:"], "at": 1_700_000_000})
    );
    assert_eq!(finding("req-human")["ai"], false);
    assert!(host.logs.lines().iter().any(|(p, l, m)| p == "ai-classifier"
        && *l == Level::Info
        && m.contains("\"req-ai\" is AI traffic (comment:ai:)")));
    for i in 0..100 {
        chain.pre_query(&query(&format!("bulk-{i}"), "SELECT 1", None, &[]));
    }
    // The ring (O(1) per statement: a counter, 20 slots) keeps exactly the 20 newest findings.
    let kv = host.runtime.kv().entries("ai-classifier");
    let mut findings: Vec<String> =
        kv.iter().filter_map(|(k, _)| String::from_utf8_lossy(k).strip_prefix("finding:").map(str::to_owned)).collect();
    findings.sort();
    let mut newest: Vec<String> = (80..100).map(|i| format!("bulk-{i}")).collect();
    newest.sort();
    assert_eq!(findings, newest, "the 20 newest findings, the older ones evicted");
    assert_eq!(kv.len(), 41, "20 findings, 20 ring slots and the sequence counter");
}

fn envelope(i: u64) -> PostQueryEnvelope {
    let q = query(
        &format!("req-{i}"),
        &format!("UPDATE orders SET status = 'paid' WHERE tenant_id = 'acme' AND id = {i}"),
        Some("alice"),
        &[],
    );
    PostQueryEnvelope {
        query_context: q,
        outcome: QueryOutcome {
            success: !i.is_multiple_of(4),
            elapsed_us: 900 + i,
            response_bytes: 64,
            rows: Some(1),
            ..Default::default()
        },
    }
}

/// Runs `n` statements through audit-chain and returns (exported chain, KV tail).
fn run_audit(host: &Host, n: u64) -> (Vec<String>, Tail) {
    let chain = Chain::new(vec![host.load("audit-chain", &[])]);
    for i in 1..=n {
        host.clock.set(1_700_000_000 + i as i64);
        assert!(chain.post_query(&envelope(i)).is_empty());
    }
    let lines: Vec<String> = host
        .messages("audit-chain")
        .into_iter()
        .filter_map(|m| m.strip_prefix(LOG_PREFIX).map(str::to_owned))
        .collect();
    let (_, tail) =
        host.runtime.kv().entries("audit-chain").into_iter().find(|(k, _)| k == TAIL_KEY.as_bytes()).expect("the tail");
    (lines, serde_json::from_slice(&tail).unwrap())
}

#[test]
fn audit_chain_exports_a_chain_the_verifier_accepts_and_keeps_only_the_tail() {
    let host = Host::new(0);
    let (lines, tail) = run_audit(&host, 12);
    assert_eq!(lines.len(), 12);
    assert_eq!(tail.seq, 12);
    assert_eq!(host.runtime.kv().entries("audit-chain").len(), 1);
    let text = lines.join("\n");
    assert_eq!(verify_chain(&text), Ok(12));
    let opts = VerifyOptions { genesis: Some(ZERO_GENESIS.into()), tail: Some(tail) };
    assert_eq!(verify_chain_with(&text, &opts), Ok(12));
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!((first["seq"].as_u64(), first["timestamp"].as_i64()), (Some(1), Some(1_700_000_001)));
}

#[test]
fn audit_chain_tampering_through_the_host_is_named_at_the_first_broken_link() {
    let host = Host::new(0);
    let (lines, tail) = run_audit(&host, 8);
    // Edit record 5's query.
    let mut edited = lines.clone();
    let mut v: serde_json::Value = serde_json::from_str(&edited[4]).unwrap();
    v["query"] = "SELECT 1".into();
    edited[4] = v.to_string();
    let e = verify_chain(&edited.join("\n")).unwrap_err();
    assert_eq!((e.line, e.seq), (5, Some(5)), "{e}");
    // Delete record 3.
    let mut deleted = lines.clone();
    deleted.remove(2);
    let e = verify_chain(&deleted.join("\n")).unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.to_string().contains("expected seq 3, found 4"), "{e}");
    // Swap records 6 and 7.
    let mut swapped = lines.clone();
    swapped.swap(5, 6);
    assert_eq!(verify_chain(&swapped.join("\n")).unwrap_err().line, 6);
    // Cut the last record: only the KV tail tells.
    let cut = lines[..7].join("\n");
    assert_eq!(verify_chain(&cut), Ok(7));
    assert!(verify_chain_with(&cut, &VerifyOptions { genesis: None, tail: Some(tail) }).is_err());
}
