//! chio's guard convention: placement, verdict codes, deny reasons, the sha256 import.

use helios_plugin_host::PluginConfig;
use helios_plugin_schema::GuardVerdict;

use crate::support::{data, guard, runtime};

const SHA_IMPORT: &str = r#"(import "env" "sha256_hex" (func $sha (param i32 i32 i32) (result i32)))"#;

fn sha_guard() -> String {
    guard(
        SHA_IMPORT,
        "(global.set $reason_len (call $sha (local.get $p) (local.get $l) (i32.const 1024))) (i32.const 1)",
    )
}

fn deny_reason_of(v: GuardVerdict) -> String {
    match v {
        GuardVerdict::Deny { reason } => reason,
        GuardVerdict::Allow => panic!("expected a deny"),
    }
}

#[test]
fn sha256_hex_matches_the_fips_180_2_vectors() {
    let (rt, _) = runtime();
    let p = rt.load(sha_guard().as_bytes(), PluginConfig::new("sha")).unwrap();
    let million_a = vec![b'a'; 1_000_000];
    let vectors: [(&[u8], &str); 4] = [
        (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
        (&million_a, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
    ];
    for (input, want) in vectors {
        let v = p.evaluate_json(input).unwrap();
        assert_eq!(deny_reason_of(v), want, "input of {} bytes", input.len());
    }
}

#[test]
fn allow_and_deny_codes_map_to_verdicts_with_the_guest_reason() {
    let (rt, _) = runtime();
    let allow = rt.load(guard("", "(i32.const 0)").as_bytes(), PluginConfig::new("allow")).unwrap();
    assert_eq!(allow.evaluate_json(b"{}").unwrap(), GuardVerdict::Allow);

    let json = r#"{"reason":"tool rm is on the denylist"}"#;
    let body = format!("{} (global.set $reason_len (i32.const {})) (i32.const 1)", "", json.len());
    let wat = guard("", &body)
        .replace("(memory (export \"memory\") 32)", &format!("(memory (export \"memory\") 32) {}", data(1024, json)));
    let deny = rt.load(wat.as_bytes(), PluginConfig::new("deny")).unwrap();
    assert_eq!(deny.evaluate_json(b"{}").unwrap(), GuardVerdict::deny("tool rm is on the denylist"));
}

#[test]
fn a_deny_without_a_reason_export_gets_a_generic_reason() {
    let (rt, _) = runtime();
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "evaluate") (param i32 i32) (result i32) (i32.const 1)))"#;
    let p = rt.load(wat.as_bytes(), PluginConfig::new("bare")).unwrap();
    let reason = deny_reason_of(p.evaluate_json(b"{}").unwrap());
    assert!(reason.contains("no reason"), "{reason}");
}

#[test]
fn a_return_code_other_than_0_or_1_denies_naming_the_code_and_the_guard() {
    let (rt, _) = runtime();
    let p = rt.load(guard("", "(i32.const 7)").as_bytes(), PluginConfig::new("seven")).unwrap();
    let reason = deny_reason_of(p.evaluate(&Default::default()));
    assert!(reason.contains("\"seven\"") && reason.contains("returned 7"), "{reason}");
}

#[test]
fn an_advisory_guard_that_fails_allows_but_a_real_deny_still_denies() {
    let (rt, _) = runtime();
    let broken = rt.load(guard("", "unreachable").as_bytes(), PluginConfig::new("broken").advisory(true)).unwrap();
    assert_eq!(broken.evaluate(&Default::default()), GuardVerdict::Allow);
    let denier = rt.load(guard("", "(i32.const 1)").as_bytes(), PluginConfig::new("denier").advisory(true)).unwrap();
    assert!(!denier.evaluate(&Default::default()).is_allow());
}
