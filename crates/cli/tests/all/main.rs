//! The `helios-plugin` binary, run for real in a temporary directory.

mod state;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_helios-plugin");
const CARGO_BIN: &str = env!("CARGO_BIN_EXE_cargo-helios-plugin");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_in(dir: &Path, bin: &str, args: &[&str]) -> Run {
    let Output { status, stdout, stderr } = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env_remove("HELIOS_LOG")
        .env("SOURCE_DATE_EPOCH", "1795316400")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into(),
        stderr: String::from_utf8_lossy(&stderr).into(),
    }
}

fn hp(dir: &Path, args: &[&str]) -> Run {
    run_in(dir, BIN, args)
}

#[track_caller]
fn ok(r: Run) -> Run {
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    r
}

#[track_caller]
fn fails(r: Run, code: i32, needle: &str) -> Run {
    assert_eq!(r.code, code, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(needle), "expected {needle:?} in stderr: {}", r.stderr);
    r
}

/// `pack` of `plugin.wasm` in `dir` as plugin `p` version 1 with `hooks`, into `p.tar.gz`.
fn pack_p(dir: &Path, hooks: &str) -> Run {
    hp(dir, &["pack", "--wasm", "plugin.wasm", "--name", "p", "--version", "1", "--hooks", hooks, "--out", "p.tar.gz"])
}

fn write_plugin(dir: &Path, hooks: &[&str]) -> PathBuf {
    let mut s = String::from(
        r#"(module (memory (export "memory") 1)
             (func (export "alloc") (param i32) (result i32) i32.const 16)
             (func (export "dealloc") (param i32 i32))"#,
    );
    for h in hooks {
        s.push_str(&format!(r#"(func (export "{h}") (param i32 i32) (result i64) i64.const 0)"#));
    }
    s.push(')');
    let path = dir.join("plugin.wasm");
    std::fs::write(&path, wat::parse_str(&s).unwrap()).unwrap();
    path
}

fn trust_dir_with(dir: &Path, name: &str, files: &[&str]) -> PathBuf {
    let trust = dir.join(name);
    std::fs::create_dir_all(&trust).unwrap();
    for f in files {
        let p = dir.join(f);
        std::fs::copy(&p, trust.join(p.file_name().unwrap())).unwrap();
    }
    trust
}

mod audit;
mod author;
mod call;
mod oci;
mod page;

#[test]
fn keygen_pack_inspect_sign_verify_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_plugin(d, &["pre_query", "post_query"]);
    let k = ok(hp(d, &["keygen", "--out", "signing.pem"]));
    assert!(k.stdout.contains("signing.pub.pem") && k.stdout.contains("public hex"), "{}", k.stdout);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(d.join("signing.pem")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    fails(hp(d, &["keygen", "--out", "signing.pem"]), 1, "--force");

    let p = ok(hp(
        d,
        &[
            "pack",
            "--wasm",
            "plugin.wasm",
            "--name",
            "tool-denylist",
            "--version",
            "1.0.0",
            "--hooks",
            "pre_query",
            "--config",
            "denylist=rm,curl",
            "--license",
            "Apache-2.0",
            "--out",
            "p.tar.gz",
        ],
    ));
    assert!(p.stderr.contains("not declared") && p.stderr.contains("post_query"), "{}", p.stderr);

    let i = ok(hp(d, &["inspect", "p.tar.gz", "--json"]));
    let j: serde_json::Value = serde_json::from_str(&i.stdout).unwrap();
    assert_eq!(j["name"], "tool-denylist");
    assert_eq!(j["declared_hooks"], serde_json::json!(["pre_query"]));
    assert_eq!(j["exported_hooks"], serde_json::json!(["pre_query", "post_query"]));
    assert_eq!(j["undeclared_exports"], serde_json::json!(["post_query"]));
    assert_eq!(j["config"]["denylist"], "rm,curl");
    assert_eq!(j["packed_at"], "2026-11-22T03:00:00Z");
    assert_eq!(j["signature"], serde_json::Value::Null);
    assert_eq!(j["sha256_matches_manifest"], true);
    let human = ok(hp(d, &["inspect", "p.tar.gz"]));
    assert!(
        human.stdout.contains("unsigned") && human.stdout.contains("exported: pre_query, post_query"),
        "{}",
        human.stdout
    );

    let trust = trust_dir_with(d, "trust", &["signing.pub"]);
    fails(hp(d, &["verify", "p.tar.gz", "--trust-root", "trust"]), 22, "E_SIGNATURE_MISSING");
    let unsigned_ok = ok(hp(d, &["verify", "p.tar.gz", "--allow-unsigned"]));
    assert!(
        unsigned_ok.stdout.contains("UNSIGNED") && unsigned_ok.stderr.contains("WARN"),
        "{}{}",
        unsigned_ok.stdout,
        unsigned_ok.stderr
    );

    ok(hp(d, &["sign", "--key", "signing.pem", "--input", "p.tar.gz"]));
    let i = ok(hp(d, &["inspect", "p.tar.gz", "--json"]));
    let j: serde_json::Value = serde_json::from_str(&i.stdout).unwrap();
    let pub_hex = k.stdout.lines().find_map(|l| l.strip_prefix("public hex")).unwrap().trim().to_string();
    assert_eq!(j["signature"]["signer_public_key"], pub_hex.as_str());
    assert_eq!(j["signature"]["manifest_signed"], true);

    let v = ok(hp(d, &["verify", "p.tar.gz", "--trust-root", trust.to_str().unwrap()]));
    assert!(
        v.stdout.contains("verified tool-denylist 1.0.0") && v.stdout.contains("signed by signing"),
        "{}",
        v.stdout
    );

    // Another key's trust root: untrusted.
    ok(hp(d, &["keygen", "--out", "other.pem"]));
    trust_dir_with(d, "other-trust", &["other.pub.pem"]);
    fails(hp(d, &["verify", "p.tar.gz", "--trust-root", "other-trust"]), 23, "E_SIGNER_UNTRUSTED");
}

#[test]
fn sign_the_module_then_pack_with_its_sidecar_as_the_seed_workflow_does() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_plugin(d, &["pre_query"]);
    ok(hp(d, &["keygen", "--out", "signing.pem"]));
    let s = ok(hp(
        d,
        &["sign", "--key", "signing.pem", "--input", "plugin.wasm", "--name", "my-plugin", "--version", "1.0.0"],
    ));
    assert!(s.stdout.contains("plugin.wasm.sig"), "{}", s.stdout);
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("plugin.wasm.sig")).unwrap()).unwrap();
    assert_eq!(sidecar["module_name"], "my-plugin");
    let p = ok(hp(
        d,
        &[
            "pack",
            "--wasm",
            "plugin.wasm",
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
    assert!(p.stderr.contains("including sidecar"), "{}", p.stderr);
    trust_dir_with(d, "trust", &["signing.pub.pem"]);
    // The manifest repeats what the module signature binds (name, version, hash, its own hooks):
    // verify passes without manifest.sig.
    ok(hp(d, &["verify", "my-plugin-1.0.0.tar.gz", "--trust-root", "trust"]));
    // With policy in it (config), the manifest must be signed, and verify says why.
    let p = ok(hp(
        d,
        &[
            "pack",
            "--wasm",
            "plugin.wasm",
            "--out",
            "cfg.tar.gz",
            "--name",
            "my-plugin",
            "--version",
            "1.0.0",
            "--config",
            "mode=off",
        ],
    ));
    assert!(p.stderr.contains("manifest is not signed"), "{}", p.stderr);
    fails(hp(d, &["verify", "cfg.tar.gz", "--trust-root", "trust"]), 22, "config (mode)");
    ok(hp(d, &["sign", "--key", "signing.pem", "--input", "cfg.tar.gz"]));
    ok(hp(d, &["verify", "cfg.tar.gz", "--trust-root", "trust"]));
    // A sidecar for another version is refused at pack time.
    ok(hp(d, &["sign", "--key", "signing.pem", "--input", "plugin.wasm", "--name", "my-plugin", "--version", "0.9.0"]));
    fails(
        hp(d, &["pack", "--wasm", "plugin.wasm", "--out", "x.tar.gz", "--name", "my-plugin", "--version", "1.0.0"]),
        25,
        "0.9.0",
    );
}

#[test]
fn the_cargo_subcommand_form_works() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_plugin(d, &["route"]);
    ok(run_in(d, CARGO_BIN, &["helios-plugin", "keygen", "--out", "signing.pem"]));
    ok(run_in(
        d,
        CARGO_BIN,
        &["helios-plugin", "sign", "--key", "signing.pem", "--input", "plugin.wasm", "--name", "r", "--version", "1"],
    ));
    assert!(d.join("plugin.wasm.sig").is_file());
    ok(run_in(
        d,
        CARGO_BIN,
        &[
            "helios-plugin",
            "pack",
            "--wasm",
            "plugin.wasm",
            "--name",
            "r",
            "--version",
            "1",
            "--key",
            "signing.pem",
            "--out",
            "r.tar.gz",
        ],
    ));
    trust_dir_with(d, "trust", &["signing.pub"]);
    ok(run_in(d, CARGO_BIN, &["helios-plugin", "verify", "r.tar.gz", "--trust-root", "trust"]));
}

#[test]
fn pack_refuses_a_hook_the_module_does_not_export() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_plugin(d, &["pre_query"]);
    fails(pack_p(d, "pre_query,route"), 14, "route");
    assert!(!d.join("p.tar.gz").exists());
    fails(pack_p(d, "pre_qurey"), 2, "pre_qurey");
}

#[test]
fn an_openssl_key_signs_with_our_cli_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_plugin(d, &["pre_query"]);
    let sh = |script: &str| {
        let out = Command::new("sh").args(["-c", script]).current_dir(d).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh("openssl genpkey -algorithm ed25519 -out signing.pem");
    sh("mkdir trust && openssl pkey -in signing.pem -pubout -outform DER | tail -c 32 | base64 > trust/ops.pub");
    ok(hp(d, &["pack", "--wasm", "plugin.wasm", "--name", "p", "--version", "1.0.0", "--out", "p.tar.gz"]));
    ok(hp(d, &["sign", "--key", "signing.pem", "--input", "p.tar.gz"]));
    let v = ok(hp(d, &["verify", "p.tar.gz", "--trust-root", "trust"]));
    assert!(v.stdout.contains("signed by ops"), "{}", v.stdout);

    // External signing: our CLI writes the message, openssl signs it, our CLI checks and assembles.
    sh("openssl pkey -in signing.pem -pubout -out signing.pub.pem");
    ok(hp(
        d,
        &[
            "sign",
            "--public-key",
            "signing.pub.pem",
            "--message-only",
            "--input",
            "plugin.wasm",
            "--name",
            "p",
            "--version",
            "1.0.0",
            "--out",
            "msg.bin",
        ],
    ));
    sh("openssl pkeyutl -sign -rawin -inkey signing.pem -in msg.bin -out msg.sig");
    ok(hp(
        d,
        &[
            "sign",
            "--public-key",
            "signing.pub.pem",
            "--signature",
            "msg.sig",
            "--input",
            "plugin.wasm",
            "--name",
            "p",
            "--version",
            "1.0.0",
        ],
    ));
    // The external sidecar is byte-for-byte what signing with the key itself writes (Ed25519 is deterministic).
    let external = std::fs::read(d.join("plugin.wasm.sig")).unwrap();
    ok(hp(d, &["sign", "--key", "signing.pem", "--input", "plugin.wasm", "--name", "p", "--version", "1.0.0"]));
    assert_eq!(external, std::fs::read(d.join("plugin.wasm.sig")).unwrap());
    // A signature over other bytes is refused.
    fails(
        hp(
            d,
            &[
                "sign",
                "--public-key",
                "signing.pub.pem",
                "--signature",
                "msg.sig",
                "--input",
                "plugin.wasm",
                "--name",
                "p",
                "--version",
                "2.0.0",
            ],
        ),
        24,
        "does not verify",
    );
}

#[test]
fn a_guard_manifest_directory_signed_with_a_signify_key_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let wasm = write_plugin(d, &[]);
    std::fs::create_dir(d.join("trust")).unwrap();
    let out = Command::new("signify-openbsd")
        .args(["-G", "-n", "-p", "trust/ops.pub", "-s", "ops.sec"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(&wasm).unwrap()))
    };
    std::fs::write(
        d.join("guard-manifest.yaml"),
        format!("name: pii-scanner\nversion: \"1.0.0\"\nabi_version: \"1\"\nwasm_path: plugin.wasm\nwasm_sha256: \"{sha}\"\n"),
    )
    .unwrap();
    // Name and version come from the manifest next to the module.
    ok(hp(d, &["sign", "--key", "ops.sec", "--input", "plugin.wasm"]));
    let v = ok(hp(d, &["verify", ".", "--trust-root", "trust"]));
    assert!(v.stdout.contains("verified pii-scanner 1.0.0") && v.stdout.contains("signed by ops"), "{}", v.stdout);
    // Blocklisted: exit 21 with the stable code.
    std::fs::write(d.join("bl.json"), format!("{{\"digests\":[\"sha256:{sha}\"]}}")).unwrap();
    fails(hp(d, &["verify", ".", "--trust-root", "trust", "--blocklist", "bl.json"]), 21, "E_GUARD_DIGEST_BLOCKLISTED");
    // A bad key file in the trust root is named.
    std::fs::write(d.join("trust/typo.pub"), "nope").unwrap();
    fails(hp(d, &["verify", ".", "--trust-root", "trust"]), 30, "typo.pub");
}

#[test]
fn help_documents_every_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let h = ok(hp(tmp.path(), &["--help"]));
    for code in ["E_GUARD_DIGEST_BLOCKLISTED", "E_SIGNER_UNTRUSTED", "E_ARTEFACT_MALFORMED"] {
        assert!(h.stdout.contains(code), "{}", h.stdout);
    }
}

#[test]
fn a_hostile_artefact_exits_with_the_archive_code() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("evil.tar.gz"), b"\x1f\x8b not really").unwrap();
    fails(hp(d, &["inspect", "evil.tar.gz"]), 10, "E_ARTEFACT_MALFORMED");
}
