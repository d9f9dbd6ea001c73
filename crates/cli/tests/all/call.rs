//! `helios-plugin call` as a real binary: JSON out, exit 0 allow/continue, 1 deny/block, 2 error.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_helios-plugin"))
}

const GUARD: &str = r#"(module (memory (export "memory") 1)
  (func (export "evaluate") (param $p i32) (param $l i32) (result i32)
    ;; deny when the request's 15th byte is 'r' ({"tool_name":"rm"...)
    (if (result i32) (i32.eq (i32.load8_u (i32.add (local.get $p) (i32.const 14))) (i32.const 114))
      (then (i32.const 1)) (else (i32.const 0)))))"#;

const HOOK: &str = r#"(module (memory (export "memory") 1)
  (data (i32.const 0) "{\"kind\":\"block\",\"reason\":\"no\"}")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "pre_query") (param i32 i32) (result i64) (i64.const 30))
  (func (export "route") (param i32 i32) (result i64) (unreachable)))"#;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Out {
    let o = bin().args(args).output().unwrap();
    Out {
        code: o.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

#[test]
fn call_prints_json_and_exits_by_decision() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    std::fs::write(p("guard.wat"), GUARD).unwrap();
    std::fs::write(p("hook.wat"), HOOK).unwrap();
    std::fs::write(p("rm.json"), r#"{"tool_name":"rm"}"#).unwrap();
    std::fs::write(p("ls.json"), r#"{"tool_name":"ls"}"#).unwrap();
    std::fs::write(p("q.json"), r#"{"query":"DROP TABLE t"}"#).unwrap();
    std::fs::write(p("bad.json"), "{not json").unwrap();

    let o = run(&["call", &p("guard.wat"), "--guard", "--input", &p("ls.json")]);
    assert_eq!((o.code, o.stdout.trim()), (0, r#"{"decision":"allow"}"#), "{}", o.stderr);
    let o = run(&["call", &p("guard.wat"), "--guard", "--input", &p("rm.json")]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stdout.contains(r#""decision":"deny""#), "{}", o.stdout);

    let o = run(&["call", &p("hook.wat"), "--hook", "pre_query", "--input", &p("q.json")]);
    assert_eq!((o.code, o.stdout.trim()), (1, r#"{"kind":"block","reason":"no"}"#), "{}", o.stderr);

    // A trapping hook, a missing hook, bad JSON and a missing file are errors (2) naming the cause.
    let o = run(&["call", &p("hook.wat"), "--hook", "route", "--input", &p("q.json")]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("hook") && o.stderr.contains("unreachable"), "{}", o.stderr);
    let o = run(&["call", &p("hook.wat"), "--hook", "post_query", "--input", &p("q.json")]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("does not export post_query"), "{}", o.stderr);
    let o = run(&["call", &p("hook.wat"), "--hook", "pre_query", "--input", &p("bad.json")]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("bad.json is not JSON"), "{}", o.stderr);
    let o = run(&["call", &p("missing.wasm"), "--guard", "--input", &p("ls.json")]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("missing.wasm"), "{}", o.stderr);
}

/// A guard that never returns (fuel) and one that grows its memory past the cap.
const SPIN: &str = r#"(module (memory (export "memory") 1)
  (func (export "evaluate") (param i32 i32) (result i32) (loop $l (br $l)) (i32.const 0)))"#;
const GROW: &str = r#"(module (memory (export "memory") 1)
  (func (export "evaluate") (param i32 i32) (result i32)
    (drop (memory.grow (i32.const 1024))) (i32.const 0)))"#;

#[test]
fn call_guard_prints_the_verdict_the_runtime_enforces_for_a_failing_guard() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    std::fs::write(p("spin.wat"), SPIN).unwrap();
    std::fs::write(p("grow.wat"), GROW).unwrap();
    std::fs::write(p("ls.json"), r#"{"tool_name":"ls"}"#).unwrap();

    // Fuel exhausted: a deny that names the guard and the cause, exit 1 (not "error", exit 2).
    let o = run(&["call", &p("spin.wat"), "--guard", "--fuel", "100000", "--input", &p("ls.json")]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["decision"], "deny");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("\"spin\" failed closed") && reason.contains("fuel"), "{reason}");

    // Memory cap: 1024 pages (64 MiB) refused under a 1 MiB cap, also a deny naming it.
    let o = run(&["call", &p("grow.wat"), "--guard", "--memory", "1048576", "--input", &p("ls.json")]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stdout.contains("memory"), "{}", o.stdout);

    // Advisory: the runtime allows and warns.
    let o = run(&["call", &p("spin.wat"), "--guard", "--advisory", "--fuel", "100000", "--input", &p("ls.json")]);
    assert_eq!((o.code, o.stdout.trim()), (0, r#"{"decision":"allow"}"#), "{}", o.stderr);
    assert!(o.stderr.contains("advisory guard failed"), "{}", o.stderr);
}
