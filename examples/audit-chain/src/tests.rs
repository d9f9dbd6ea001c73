use super::*;
use chain::{LOG_PREFIX, Record, Tail, ZERO_GENESIS};

fn env(i: usize, query: &str) -> PostQueryEnvelope {
    let mut e = PostQueryEnvelope::default();
    e.query_context.query = query.to_owned();
    e.query_context.hook_context.request_id = format!("req-{i}");
    e.query_context.hook_context.identity = Some(["alice", "bob"][i % 2].to_owned());
    e.query_context.hook_context.database = Some("app".to_owned());
    e.outcome = QueryOutcome {
        success: !i.is_multiple_of(5),
        target_node: Some("pg-eu-1".into()),
        elapsed_us: 100 + i as u64,
        response_bytes: 10 * i as u64,
        rows: Some(i as u64),
        error: i.is_multiple_of(5).then(|| "relation \"nope\" does not exist".to_owned()),
    };
    e
}

/// Runs `n` statements through the hook on the in-process host and returns the exported chain.
fn export(n: usize) -> Vec<String> {
    testing::reset();
    for i in 0..n {
        testing::set_time(1_700_000_000 + i as i64);
        record_query(&env(i, &format!("SELECT * FROM orders WHERE tenant_id = 'acme' AND id = {i}")));
    }
    testing::logs()
        .into_iter()
        .filter(|(l, m)| *l == Level::Info && m.starts_with(LOG_PREFIX))
        .map(|(_, m)| m[LOG_PREFIX.len()..].to_owned())
        .collect()
}

fn tail() -> Tail {
    serde_json::from_slice(&testing::kv_snapshot()[chain::TAIL_KEY.as_bytes()]).unwrap()
}

fn join(lines: &[String]) -> String {
    lines.join("\n") + "\n"
}

#[test]
fn every_statement_becomes_one_linked_record_and_only_the_tail_is_stored() {
    let lines = export(5);
    assert_eq!(lines.len(), 5);
    let records: Vec<Record> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records[0].body.prev_hash, ZERO_GENESIS);
    for w in records.windows(2) {
        assert_eq!(w[1].body.prev_hash, w[0].hash);
        assert_eq!(w[1].body.seq, w[0].body.seq + 1);
    }
    assert_eq!(records[3].body.timestamp, 1_700_000_003);
    assert_eq!(records[0].body.error.as_deref(), Some("relation \"nope\" does not exist"));
    assert_eq!(testing::kv_snapshot().len(), 1, "the KV holds the tail only");
    assert_eq!(tail(), Tail { seq: 5, hash: records[4].hash.clone() });
    assert_eq!(verify_chain(&join(&lines)), Ok(5));
    let opts = VerifyOptions { genesis: Some(ZERO_GENESIS.into()), tail: Some(tail()) };
    assert_eq!(verify_chain_with(&join(&lines), &opts), Ok(5));
}

#[test]
fn log_prefixed_lines_and_blank_lines_verify_too() {
    let lines = export(3);
    let text = lines.iter().map(|l| format!("{LOG_PREFIX}{l}\n\n")).collect::<String>();
    assert_eq!(verify_chain(&text), Ok(3));
}

#[test]
fn editing_any_field_of_any_record_is_caught_at_that_record() {
    let lines = export(6);
    let edits: [(&str, serde_json::Value); 6] = [
        ("query", "DROP TABLE orders".into()),
        ("identity", "mallory".into()),
        ("elapsed_us", 1.into()),
        ("success", true.into()),
        ("timestamp", 0.into()),
        ("error", serde_json::Value::Null),
    ];
    for k in 0..lines.len() {
        for (field, value) in &edits {
            let mut v: serde_json::Value = serde_json::from_str(&lines[k]).unwrap();
            if v[*field] == *value {
                continue;
            }
            v[*field] = value.clone();
            let mut tampered = lines.clone();
            tampered[k] = v.to_string();
            let err = verify_chain(&join(&tampered)).unwrap_err();
            assert_eq!((err.line, err.seq), (k + 1, Some(k as u64 + 1)), "{field} of record {k}: {err}");
            assert!(err.problem.contains("was edited"), "{err}");
        }
    }
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let lines = export(4);
    let mut r: Record = serde_json::from_str(&lines[1]).unwrap();
    r.body.elapsed_us = 1;
    r.hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(chain::hashed_bytes(&r.body)));
    let mut tampered = lines.clone();
    tampered[1] = serde_json::to_string(&r).unwrap();
    let err = verify_chain(&join(&tampered)).unwrap_err();
    assert_eq!((err.line, err.seq), (3, Some(3)));
    assert!(err.problem.contains("does not match the previous record's hash"), "{err}");
}

#[test]
fn deleting_any_record_is_caught() {
    let lines = export(5);
    for k in 0..lines.len() - 1 {
        let mut cut = lines.clone();
        cut.remove(k);
        let err = verify_chain(&join(&cut)).unwrap_err();
        assert_eq!(err.line, k + 1, "deleting record {k}: {err}");
        assert!(err.problem.contains(&format!("expected seq {}", k + 1)), "{err}");
    }
    // Removing the last record leaves a valid prefix: only the KV tail tells.
    let prefix = join(&lines[..4]);
    assert_eq!(verify_chain(&prefix), Ok(4));
    let err = verify_chain_with(&prefix, &VerifyOptions { genesis: None, tail: Some(tail()) }).unwrap_err();
    assert!(err.problem.contains("the plugin's tail is seq 5"), "{err}");
}

#[test]
fn reordering_any_two_records_is_caught() {
    let lines = export(5);
    for a in 0..lines.len() {
        for b in a + 1..lines.len() {
            let mut swapped = lines.clone();
            swapped.swap(a, b);
            let err = verify_chain(&join(&swapped)).unwrap_err();
            assert_eq!(err.line, a + 1, "swapping {a} and {b}: {err}");
        }
    }
}

#[test]
fn an_added_field_or_a_foreign_line_is_caught() {
    let lines = export(3);
    let mut v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    v["approved_by"] = "auditor".into();
    let mut t = lines.clone();
    t[2] = v.to_string();
    let err = verify_chain(&join(&t)).unwrap_err();
    assert!(err.line == 3 && err.problem.contains("approved_by"), "{err}");
    let mut t = lines.clone();
    t.insert(1, "hello".into());
    assert_eq!(verify_chain(&join(&t)).unwrap_err().line, 2);
}

#[test]
fn a_pinned_genesis_must_match_and_a_configured_genesis_starts_the_chain() {
    let g = "ab".repeat(32);
    testing::reset();
    testing::set_config("genesis", &g);
    record_query(&env(1, "SELECT 1"));
    let line = testing::logs()[0].1[LOG_PREFIX.len()..].to_owned();
    assert_eq!(verify_chain(&line), Ok(1), "any well-formed genesis without pinning");
    assert_eq!(verify_chain_with(&line, &VerifyOptions { genesis: Some(g.clone()), tail: None }), Ok(1));
    let err = verify_chain_with(&line, &VerifyOptions { genesis: Some(ZERO_GENESIS.into()), tail: None }).unwrap_err();
    assert!(err.problem.contains("the genesis"), "{err}");
}

#[test]
fn a_bad_genesis_records_nothing_and_says_why() {
    testing::reset();
    testing::set_config("genesis", "zero");
    record_query(&env(1, "SELECT 1"));
    let logs = testing::logs();
    assert_eq!(logs.len(), 1);
    assert!(
        logs[0].0 == Level::Error && logs[0].1.contains("config key genesis") && logs[0].1.contains("\"zero\""),
        "{logs:?}"
    );
    assert!(testing::kv_snapshot().is_empty());
}

#[test]
fn a_huge_query_is_cut_to_fit_one_log_line_and_still_verifies() {
    testing::reset();
    let query = format!("SELECT '{}'", "é\"\n".repeat(5_000));
    record_query(&env(1, &query));
    let (level, line) = testing::logs().remove(0);
    assert_eq!(level, Level::Info);
    assert!(line.len() <= schema::limits::LOG_MAX_MESSAGE_BYTES, "{}", line.len());
    let r: Record = serde_json::from_str(&line[LOG_PREFIX.len()..]).unwrap();
    assert!(r.body.query_truncated && query.starts_with(&r.body.query) && r.body.query.len() > 1_000);
    assert_eq!(r.body.query_sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(query.as_bytes())));
    assert_eq!(verify_chain(&line), Ok(1));
}

#[test]
fn an_empty_chain_verifies_and_must_match_an_empty_tail() {
    assert_eq!(verify_chain(""), Ok(0));
    let t = Tail { seq: 2, hash: ZERO_GENESIS.into() };
    assert!(verify_chain_with("", &VerifyOptions { genesis: None, tail: Some(t) }).is_err());
}

#[test]
fn an_unreachable_store_records_nothing_and_says_why() {
    testing::reset();
    record_query(&env(1, "SELECT 1"));
    testing::set_store_unavailable(true);
    record_query(&env(2, "SELECT 2"));
    testing::set_store_unavailable(false);
    let logs = testing::logs();
    assert_eq!(logs.iter().filter(|(_, m)| m.starts_with(LOG_PREFIX)).count(), 1, "{logs:?}");
    assert!(
        logs.iter().any(|(l, m)| *l == Level::Error && m.contains("req-2") && m.contains("not recorded")),
        "{logs:?}"
    );
    // The chain goes on from the tail the failed call did not move.
    record_query(&env(3, "SELECT 3"));
    assert_eq!(tail().seq, 2);
}
