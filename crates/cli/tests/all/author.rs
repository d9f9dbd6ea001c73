//! Author tooling: `helios-plugin new` scaffolds a crate that tests, builds and packs out of the box;
//! `helios-plugin test` runs fixture files (ours and chio's canaries) with a diff per failure.

use helios_plugin_test_support::GUEST_TARGET;
use std::path::Path;
use std::process::Command;

use super::{fails, hp, ok};

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

    // A pre_query result compares by meaning: heliosdb-proxy 2.2.0's `action` form of the same block
    // passes, another reason does not.
    std::fs::write(
        d.join("block-action.json"),
        r#"{"hook": "pre_query", "input": {"query": "DROP TABLE t"}, "expected": {"action": "block", "value": "no"}}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("block-other.json"),
        r#"{"hook": "pre_query", "input": {"query": "DROP TABLE t"}, "expected": {"action": "block", "value": "other"}}"#,
    )
    .unwrap();
    let r = hp(d, &["test", "hook.wat", "block-action.json", "block-other.json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("PASS block-action.json") && r.stdout.contains("FAIL block-other.json"), "{}", r.stdout);
}

/// The target directory scaffolded crates build in: one directory under the workspace's target,
/// kept between runs so a rebuild is incremental. Not the workspace's own target directory: the outer
/// `cargo test` holds its lock while tests run, so a nested cargo there would wait forever.
pub(crate) fn scaffold_target_dir() -> std::path::PathBuf {
    helios_plugin_test_support::target_dir().join("scaffolded")
}

/// Runs cargo offline in `dir` (every dependency is a path into this repository or already in the
/// local registry cache from the workspace's own build).
pub(crate) fn cargo(dir: &Path, args: &[&str], target_dir: &Path) {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .arg("--offline")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap_or_else(|e| panic!("cargo: {e}"));
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn new_scaffolds_a_crate_that_tests_builds_calls_and_packs_out_of_the_box() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let target = scaffold_target_dir();
    let workspace_lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    for (name, extra) in [("my-plugin", &[][..]), ("my-guard", &["--guard"][..])] {
        let mut args = vec!["new", name];
        args.extend_from_slice(extra);
        ok(hp(d, &args));
        let crate_dir = d.join(name);
        // The workspace's lock file pins the same dependency versions (no resolution, shared builds).
        std::fs::copy(&workspace_lock, crate_dir.join("Cargo.lock")).unwrap();
        cargo(&crate_dir, &["test", "--quiet"], &target);
        cargo(&crate_dir, &["build", "--release", "--target", GUEST_TARGET], &target);
        let module = name.replace('-', "_");
        let wasm = target.join(GUEST_TARGET).join(format!("release/{module}.wasm"));
        let wasm = wasm.to_str().unwrap();
        let fixtures: Vec<String> = std::fs::read_dir(crate_dir.join("fixtures"))
            .unwrap()
            .map(|e| e.unwrap().path().to_string_lossy().into_owned())
            .collect();
        let mut test_args = vec!["test", wasm];
        test_args.extend(fixtures.iter().map(String::as_str));
        let t = ok(hp(d, &test_args));
        assert!(t.stdout.contains("2 passed, 0 failed"), "{}", t.stdout);
        ok(hp(d, &["keygen", "--out", &format!("{name}.pem"), "--force"]));
        // pack needs neither --name nor --version: the module declares them.
        let p =
            ok(hp(d, &["pack", "--wasm", wasm, "--key", &format!("{name}.pem"), "--out", &format!("{name}.tar.gz")]));
        assert!(p.stdout.contains(&format!("packed {name} 0.1.0")), "{}", p.stdout);
    }
    // The scaffolded hook blocks a DROP TABLE when called through the host.
    let wasm = target.join(GUEST_TARGET).join("release/my_plugin.wasm");
    std::fs::write(d.join("q.json"), r#"{"query": "drop table users"}"#).unwrap();
    let c = hp(d, &["call", wasm.to_str().unwrap(), "--hook", "pre_query", "--input", "q.json"]);
    assert_eq!(c.code, 1, "{}{}", c.stdout, c.stderr);
    assert!(c.stdout.contains("DROP TABLE is not allowed"), "{}", c.stdout);
    // An existing directory and a bad name are refused.
    fails(hp(d, &["new", "my-plugin"]), 1, "exists");
    fails(hp(d, &["new", "9lives"]), 1, "not a plugin crate name");
    fails(hp(d, &["new", "other", "--hook", "route"]), 1, "knows pre_query");
}
