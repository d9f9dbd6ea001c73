//! Author tooling: `helios-plugin test` runs fixture files (ours and chio's canaries) with a diff per
//! failure.

use super::{hp, ok};

const GUARD: &str = r#"(module (memory (export "memory") 1)
  (func (export "evaluate") (param $p i32) (param $l i32) (result i32)
    ;; deny when the request's 15th byte is 'r' ({"tool_name":"rm"...)
    (if (result i32) (i32.eq (i32.load8_u (i32.add (local.get $p) (i32.const 14))) (i32.const 114))
      (then (i32.const 1)) (else (i32.const 0)))))"#;

const HOOK: &str = r#"(module (memory (export "memory") 1)
  (data (i32.const 0) "{\"kind\":\"block\",\"reason\":\"no\"}")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "pre_query") (param i32 i32) (result i64) (i64.const 30)))"#;

#[test]
fn test_runs_canary_and_hook_fixtures_and_shows_a_diff_for_each_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("guard.wat"), GUARD).unwrap();
    std::fs::write(d.join("hook.wat"), HOOK).unwrap();
    // chio's canary format, byte for byte.
    std::fs::write(
        d.join("rm.json"),
        r#"{"request": {"tool_name": "rm"}, "expected_verdict_bytes": "{\"decision\":\"deny\",\"reason\":\"guard denied the request\"}"}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("ls.json"),
        r#"{"request": {"tool_name": "ls"}, "expected_verdict_bytes": "{\"decision\":\"allow\"}"}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("ls-wrong.json"),
        r#"{"request": {"tool_name": "ls"}, "expected_verdict_bytes": "{\"decision\":\"deny\"}"}"#,
    )
    .unwrap();
    let r = hp(d, &["test", "guard.wat", "ls.json", "ls-wrong.json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("PASS ls.json") && r.stdout.contains("FAIL ls-wrong.json"), "{}", r.stdout);
    assert!(
        r.stdout.contains(r#"- expected {"decision":"deny"}"#)
            && r.stdout.contains(r#"+ actual   {"decision":"allow"}"#),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("1 passed, 1 failed"), "{}", r.stdout);

    std::fs::write(
        d.join("block.json"),
        r#"{"hook": "pre_query", "input": {"query": "DROP TABLE t"}, "expected": {"kind": "block", "reason": "no"}}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("cont.json"),
        r#"{"hook": "pre_query", "input": {"query": "SELECT 1"}, "expected": {"kind": "continue"}}"#,
    )
    .unwrap();
    std::fs::write(d.join("junk.json"), "{}").unwrap();
    let r = hp(d, &["test", "hook.wat", "block.json", "cont.json", "junk.json"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("PASS block.json") && r.stdout.contains("FAIL cont.json"), "{}", r.stdout);
    assert!(r.stdout.contains(r#"+ actual   {"kind":"block","reason":"no"}"#), "{}", r.stdout);
    assert!(r.stdout.contains("FAIL junk.json") && r.stdout.contains("expected a hook fixture"), "{}", r.stdout);
    ok(hp(d, &["test", "hook.wat", "block.json"]));
}
