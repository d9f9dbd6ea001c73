//! The HeliosProxy page's author steps, as its reader types them, and the tooling around them.

use std::path::Path;

use super::{fails, hp, ok, trust_dir_with};

/// A module built the way the SDK builds `my-plugin` 1.0.0: it exports `pre_query` and declares it,
/// with its crate's name and version, in its `helios.plugin` section.
fn write_sdk_module(dir: &Path, file: &str) {
    let wat = r#"(module
        (@custom "helios.plugin" "sdk=0.1.0\nname=my-plugin\nversion=1.0.0\nhook=pre_query\n")
        (memory (export "memory") 1)
        (func (export "alloc") (param i32) (result i32) i32.const 16)
        (func (export "dealloc") (param i32 i32))
        (func (export "pre_query") (param i32 i32) (result i64) i64.const 0))"#;
    std::fs::write(dir.join(file), wat::parse_str(wat).unwrap()).unwrap();
}

#[test]
fn the_pages_sign_pack_verify_steps_pass_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_sdk_module(d, "my_plugin.wasm");
    ok(hp(d, &["keygen", "--out", "signing.pem"]));
    // cargo helios-plugin sign --key signing.pem --input target/wasm32-wasi/release/my_plugin.wasm
    let s = ok(hp(d, &["sign", "--key", "signing.pem", "--input", "my_plugin.wasm"]));
    assert!(s.stdout.contains("signed my-plugin 1.0.0"), "{}", s.stdout);
    // helios-plugin pack --wasm ... --out my-plugin-1.0.0.tar.gz --name my-plugin --version 1.0.0 --hooks pre_query
    ok(hp(
        d,
        &[
            "pack",
            "--wasm",
            "my_plugin.wasm",
            "--out",
            "my-plugin-1.0.0.tar.gz",
            "--name",
            "my-plugin",
            "--version",
            "1.0.0",
            "--hooks",
            "pre_query",
        ],
    ));
    trust_dir_with(d, "plugin-keys", &["signing.pub"]);
    let v = ok(hp(d, &["verify", "my-plugin-1.0.0.tar.gz", "--trust-root", "plugin-keys"]));
    assert!(v.stdout.contains("verified my-plugin 1.0.0") && v.stdout.contains("signed by signing"), "{}", v.stdout);
    // pack without --name/--version takes them from the module too.
    ok(hp(d, &["pack", "--wasm", "my_plugin.wasm", "--out", "again.tar.gz"]));
    ok(hp(d, &["verify", "again.tar.gz", "--trust-root", "plugin-keys"]));
}

#[test]
fn sign_flags_override_the_declared_name_and_a_module_without_one_names_the_flags_to_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_sdk_module(d, "my_plugin.wasm");
    ok(hp(d, &["keygen", "--out", "signing.pem"]));
    ok(hp(d, &["sign", "--key", "signing.pem", "--input", "my_plugin.wasm", "--version", "1.0.1"]));
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("my_plugin.wasm.sig")).unwrap()).unwrap();
    assert_eq!((sidecar["module_name"].as_str(), sidecar["version"].as_str()), (Some("my-plugin"), Some("1.0.1")));

    super::write_plugin(d, &["pre_query"]); // plugin.wasm: no helios.plugin section
    let e = fails(hp(d, &["sign", "--key", "signing.pem", "--input", "plugin.wasm"]), 1, "--name and --version");
    assert!(e.stderr.contains("declares no name and version"), "{}", e.stderr);
    fails(hp(d, &["pack", "--wasm", "plugin.wasm", "--out", "x.tar.gz"]), 1, "pack needs --name and --version");
}

#[test]
fn pack_hooks_evaluate_packs_a_chio_guard() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let guard = r#"(module (memory (export "memory") 1)
        (func (export "evaluate") (param i32 i32) (result i32) i32.const 0))"#;
    std::fs::write(d.join("guard.wasm"), wat::parse_str(guard).unwrap()).unwrap();
    ok(hp(d, &["keygen", "--out", "signing.pem"]));
    ok(hp(d, &["sign", "--key", "signing.pem", "--input", "guard.wasm", "--name", "g", "--version", "1.0.0"]));
    let p = ok(hp(
        d,
        &[
            "pack",
            "--wasm",
            "guard.wasm",
            "--name",
            "g",
            "--version",
            "1.0.0",
            "--hooks",
            helios_plugin_schema::abi::EVALUATE,
            "--out",
            "g.tar.gz",
        ],
    ));
    assert!(p.stdout.contains("[evaluate]"), "{}", p.stdout);
    let i = ok(hp(d, &["inspect", "g.tar.gz", "--json"]));
    let j: serde_json::Value = serde_json::from_str(&i.stdout).unwrap();
    assert_eq!(j["guard"], true);
    trust_dir_with(d, "trust", &["signing.pub"]);
    let v = ok(hp(d, &["verify", "g.tar.gz", "--trust-root", "trust", "--json"]));
    let j: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    assert_eq!((j["ok"].as_bool(), j["guard"].as_bool()), (Some(true), Some(true)), "{j}");
    // `guard` is an alias; a hook plugin is not a guard.
    super::write_plugin(d, &["pre_query"]);
    fails(super::pack_p(d, "guard"), 14, helios_plugin_schema::abi::EVALUATE);
    fails(super::pack_p(d, "evalute"), 2, "unknown hook \"evalute\"");
}

#[test]
fn pack_format_heliosproxy_writes_a_raw_signature_that_verifies_against_base64_pub_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_sdk_module(d, "my_plugin.wasm");
    ok(hp(d, &["keygen", "--out", "signing.pem"]));
    ok(hp(
        d,
        &["pack", "--wasm", "my_plugin.wasm", "--format", "heliosproxy", "--key", "signing.pem", "--out", "hp.tar.gz"],
    ));
    let i = ok(hp(d, &["inspect", "hp.tar.gz", "--json"]));
    let j: serde_json::Value = serde_json::from_str(&i.stdout).unwrap();
    assert_eq!(
        (j["signature"]["format"].as_str(), j["signature"]["manifest_signed"].as_bool()),
        (Some("raw"), Some(false))
    );
    trust_dir_with(d, "plugin-keys", &["signing.pub"]);
    ok(hp(d, &["verify", "hp.tar.gz", "--trust-root", "plugin-keys"]));
    fails(hp(d, &["pack", "--wasm", "my_plugin.wasm", "--format", "heliosproxy", "--out", "x.tar.gz"]), 1, "--key");
}

#[test]
fn verify_and_inspect_report_failures_as_json_on_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    super::write_plugin(d, &["pre_query"]);
    ok(hp(d, &["pack", "--wasm", "plugin.wasm", "--name", "p", "--version", "1.0.0", "--out", "p.tar.gz"]));
    ok(hp(d, &["keygen", "--out", "signing.pem"]));
    trust_dir_with(d, "trust", &["signing.pub"]);
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_else(|e| panic!("{e}: {s:?}"));

    let r = hp(d, &["verify", "p.tar.gz", "--trust-root", "trust", "--json"]);
    assert_eq!(r.code, 22, "{}", r.stderr);
    let j = parse(&r.stdout);
    assert_eq!(
        (j["ok"].as_bool(), j["code"].as_str(), j["exit_code"].as_i64()),
        (Some(false), Some("E_SIGNATURE_MISSING"), Some(22))
    );
    assert!(j["message"].as_str().unwrap().contains("unsigned"), "{j}");

    let r = hp(d, &["verify", "p.tar.gz", "--trust-root", "no-such-dir", "--json"]);
    assert_eq!((r.code, parse(&r.stdout)["code"].as_str()), (31, Some("E_TRUST_ROOT_INVALID")));

    std::fs::write(d.join("junk.tar.gz"), b"not gzip").unwrap();
    let r = hp(d, &["inspect", "junk.tar.gz", "--json"]);
    assert_eq!(r.code, 10, "{}", r.stderr);
    let j = parse(&r.stdout);
    assert_eq!((j["ok"].as_bool(), j["code"].as_str()), (Some(false), Some("E_ARTEFACT_MALFORMED")));

    let r = ok(hp(d, &["inspect", "p.tar.gz", "--json"]));
    assert_eq!(parse(&r.stdout)["ok"], true);
    let r = ok(hp(d, &["verify", "p.tar.gz", "--allow-unsigned", "--json"]));
    assert_eq!(parse(&r.stdout)["ok"], true);
}
