//! Every fuzz target over its committed seed corpus (`fuzz/corpus/<target>/`), without libFuzzer:
//! what CI runs of the fuzzers. Each corpus must hold inputs that get past the first parser as well
//! as inputs that are refused, so the run exercises both sides of every target.

use helios_plugin_fuzz_smoke::{Outcome, TARGETS, corpus, targets};

fn run(target: &str) {
    let _serial = crate::serial();
    let f = TARGETS.iter().find(|(n, _)| *n == target).map(|(_, f)| *f).expect("a known target");
    let seeds = corpus(target);
    assert!(seeds.len() >= 5, "fuzz/corpus/{target}/ holds {} seeds", seeds.len());
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for (name, bytes) in &seeds {
        match f(bytes) {
            Outcome::Accepted => accepted.push(name.as_str()),
            Outcome::Rejected => rejected.push(name.as_str()),
        }
    }
    assert!(!accepted.is_empty(), "{target}: no seed gets past the first parser (rejected: {rejected:?})");
    assert!(!rejected.is_empty(), "{target}: no seed is refused (accepted: {accepted:?})");
}

#[test]
fn manifest_target_over_its_seed_corpus() {
    run("manifest");
}

#[test]
fn config_target_over_its_seed_corpus() {
    run("config");
}

#[test]
fn unpack_target_over_its_seed_corpus() {
    run("unpack");
}

#[test]
fn abi_target_over_its_seed_corpus() {
    run("abi");
}

#[test]
fn the_good_seeds_are_accepted_and_the_hostile_ones_refused() {
    let _serial = crate::serial();
    let get = |t: &str, n: &str| {
        corpus(t).into_iter().find(|(name, _)| name == n).unwrap_or_else(|| panic!("{t}/{n} missing")).1
    };
    assert_eq!(targets::manifest(&get("manifest", "manifest.json")), Outcome::Accepted);
    assert_eq!(targets::config(&get("config", "proxy.toml")), Outcome::Accepted);
    assert_eq!(targets::config(&get("config", "typo.toml")), Outcome::Rejected);
    assert_eq!(targets::unpack(&get("unpack", "good.tar.gz")), Outcome::Accepted);
    for hostile in
        ["traversal.tar.gz", "symlink.tar.gz", "unknown-entry.tar.gz", "duplicate.tar.gz", "zeros-bomb.tar.gz"]
    {
        assert_eq!(targets::unpack(&get("unpack", hostile)), Outcome::Rejected, "{hostile}");
    }
}

#[test]
fn the_abi_target_runs_hand_written_hostile_modules_without_panicking() {
    let _serial = crate::serial();
    // The same function the fuzzer drives, on modules whose every call fails in a different way.
    let body = |b: &str| {
        format!(
            r#"(module (import "env" "kv_set" (func $set (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "evaluate") (param i32 i32) (result i32) {b})
            (func (export "pre_query") (param i32 i32) (result i64) {b} (drop) (i64.const -1)))"#
        )
    };
    for b in [
        "(loop (br 0)) (i32.const 0)",
        "unreachable",
        "(call $set (i32.const -1) (i32.const 9) (i32.const 0) (i32.const 0))",
        "(i32.const 7)",
    ] {
        assert_eq!(targets::run_module(body(b).as_bytes()), Outcome::Accepted, "{b}");
    }
    assert_eq!(targets::run_module(b"\0asm\x01\0\0\0\x01"), Outcome::Rejected);
}
