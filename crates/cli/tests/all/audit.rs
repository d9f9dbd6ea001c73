//! `helios-plugin audit verify` on a chain the audit-chain plugin's own code produced.

use std::process::Command;

use helios_plugin_abi::{PostQueryEnvelope, testing};

fn chain_lines(n: usize) -> Vec<String> {
    testing::reset();
    testing::set_time(1_767_603_600);
    for i in 0..n {
        let mut env = PostQueryEnvelope::default();
        env.query_context.query = format!("SELECT {i}");
        env.query_context.hook_context.request_id = format!("r{i}");
        env.outcome.success = true;
        audit_chain::record_query(&env);
    }
    testing::logs().into_iter().map(|(_, m)| m).filter(|m| m.starts_with(audit_chain::chain::LOG_PREFIX)).collect()
}

fn verify(dir: &std::path::Path, lines: &[String]) -> (i32, String) {
    let f = dir.join("chain.ndjson");
    std::fs::write(&f, lines.join("\n")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_helios-plugin")).args(["audit", "verify"]).arg(&f).output().unwrap();
    (o.status.code().unwrap(), String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn an_intact_chain_verifies_and_an_edited_one_names_the_broken_link() {
    let dir = tempfile::tempdir().unwrap();
    let lines = chain_lines(5);
    assert_eq!(lines.len(), 5);
    let (code, out) = verify(dir.path(), &lines);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 records"), "{out}");

    let mut edited = lines.clone();
    edited[2] = edited[2].replace("SELECT 2", "SELECT 9");
    let (code, out) = verify(dir.path(), &edited);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("line 3"), "{out}");

    let mut dropped = lines.clone();
    dropped.remove(1);
    assert_eq!(verify(dir.path(), &dropped).0, 1);
}
