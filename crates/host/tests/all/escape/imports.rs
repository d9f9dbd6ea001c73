//! The import surface: undeclared or mistyped imports, pointers and lengths handed to an import, a
//! plugin's config, and modules that are not what they claim (mutated, or signed).

use helios_plugin_artefact::{
    PackOptions, PackSigning, TrustRoot, VerifyOptions, keys, pack, save_artefact, verify_path,
};
use helios_plugin_host::{FailureKind, LoadError, PluginConfig};
use helios_plugin_schema::{GuardRequest, GuardVerdict, abi};

use super::{assert_policies, both, host_intact, hostile};
use crate::support::{data, guard, runtime};

#[test]
fn undeclared_imports_of_every_kind_are_load_errors_naming_them() {
    let (rt, _) = runtime();
    let body = r#"(memory (export "memory") 1) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0))"#;
    let cases = [
        // WASI preview 1 runs in its sandbox (escape/wasi.rs); names it never had, other versions,
        // and non-functions under its module name are refused like any unknown import.
        (
            r#"(import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))"#,
            "wasi_snapshot_preview1.sock_open",
        ),
        (r#"(import "wasi_snapshot_preview1" "fd_write" (memory 1))"#, "wasi_snapshot_preview1.fd_write"),
        (r#"(import "wasi_unstable" "proc_exit" (func (param i32)))"#, "wasi_unstable.proc_exit"),
        (r#"(import "env" "system" (func (param i32 i32) (result i32)))"#, "env.system"),
        (r#"(import "chio" "fetch_blob" (func (param i32 i64 i32) (result i32)))"#, "chio.fetch_blob"),
        (r#"(import "env" "kv_get" (global i32))"#, "env.kv_get"),
        (r#"(import "env" "table" (table 1 funcref))"#, "env.table"),
        (r#"(import "chio" "log" (memory 1))"#, "chio.log"),
        (r#"(import "" "" (func))"#, "."),
        (r#"(import "chio" "get_time_unix_secs" (func (result i32)))"#, "chio.get_time_unix_secs"),
        (r#"(import "env" "kv_set" (func (param i32 i32 i32 i32) (result i64)))"#, "env.kv_set"),
    ];
    for (import, named) in cases {
        let wat = format!("(module {import} {body})");
        let err = rt.load(wat.as_bytes(), PluginConfig::new("importer")).expect_err(import);
        assert!(matches!(err, LoadError::ForbiddenImport { .. } | LoadError::ImportType { .. }), "{import}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("importer") && msg.contains(named), "{import}: {msg}");
    }
    // An imported memory, and a wrong type named with the expected signature.
    let wat = r#"(module (import "env" "memory" (memory 1)) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#;
    let err = rt.load(wat.as_bytes(), PluginConfig::new("mem-import")).unwrap_err();
    assert!(err.to_string().contains("env.memory"), "{err}");

    let wat = r#"(module (import "env" "kv_get" (func (param i32) (result i32)))
      (memory (export "memory") 1) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#;
    let err = rt.load(wat.as_bytes(), PluginConfig::new("bad-type")).unwrap_err();
    assert!(matches!(err, LoadError::ImportType { .. }), "{err}");
    assert!(
        err.to_string().contains("env.kv_get") && err.to_string().contains("expected (i32, i32, i32, i32) -> (i32)"),
        "{err}"
    );
    host_intact(&rt);
}

#[test]
fn lengths_near_4_gib_negative_and_straddling_the_end_to_every_host_import_are_named_errors() {
    let (rt, _) = runtime();
    let wasm = hostile("hostile-raw");
    // (import, argument positions that are pointers or lengths)
    let imports: [(&str, &str, &[usize]); 6] = [
        (abi::KV_GET, "env.kv_get", &[0, 1, 2, 3]),
        (abi::KV_SET, "env.kv_set", &[0, 1, 2, 3]),
        (abi::KV_DELETE, "env.kv_delete", &[0, 1]),
        (abi::SHA256_HEX, "env.sha256_hex", &[0, 1, 2]),
        (abi::GET_CONFIG, "chio.get_config", &[0, 1, 2, 3]),
        ("log", "chio.log", &[1, 2]),
    ];
    let values = ["-1", "-2147483648", "4294967280", "4294967295", "2147483647", "end-4"];
    let mut cases = 0;
    for (import, qualified, args) in imports {
        for arg in args {
            for value in values {
                let name = format!("bad-{import}-{arg}-{value}");
                let cfg = PluginConfig::new(&name)
                    .config("attack", "bad_arg")
                    .config("import", import)
                    .config("arg", arg.to_string())
                    .config("value", value);
                let p = rt.load(&wasm, cfg).unwrap();
                let err = p.try_evaluate(&GuardRequest::default()).expect_err(&name);
                match &err.kind {
                    FailureKind::BadImportCall { import: got, detail } => {
                        assert_eq!(got, qualified, "{name}");
                        assert!(detail.contains("outside guest memory"), "{name}: {detail}");
                    }
                    other => panic!("{name}: expected a bad import call, got {other}"),
                }
                assert!(err.to_string().contains(&name), "{err}");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 19 * values.len());
    // Nothing was written by any of them.
    assert!(rt.kv().entries("bad-kv_set-0--1").is_empty());
    // The same from hand-written WAT: far, negative and straddling ranges, one module each.
    let far = "(i32.const 0x7fff0000)";
    let neg = "(i32.const -1)";
    let z = "(i32.const 0)";
    let n8 = "(i32.const 8)";
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "env.kv_get",
            r#"(import "env" "kv_get" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {far} {n8} {z} {n8}))"),
        ),
        (
            "env.kv_get",
            r#"(import "env" "kv_get" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {n8} {z} {neg}))"),
        ),
        (
            "env.kv_set",
            r#"(import "env" "kv_set" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {neg} {z} {n8}))"),
        ),
        (
            "env.kv_set",
            r#"(import "env" "kv_set" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {n8} {far} {n8}))"),
        ),
        (
            "env.kv_delete",
            r#"(import "env" "kv_delete" (func $f (param i32 i32) (result i32)))"#,
            format!("(drop (call $f {far} {far}))"),
        ),
        (
            "env.sha256_hex",
            r#"(import "env" "sha256_hex" (func $f (param i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {neg} {z}))"),
        ),
        (
            "env.sha256_hex",
            r#"(import "env" "sha256_hex" (func $f (param i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {n8} (i32.const 2097150)))"),
        ),
        (
            "chio.log",
            r#"(import "chio" "log" (func $f (param i32 i32 i32)))"#,
            format!("(call $f (i32.const 2) {far} {n8})"),
        ),
        (
            "chio.log",
            r#"(import "chio" "log" (func $f (param i32 i32 i32)))"#,
            format!("(call $f (i32.const 2) {z} (i32.const -2147483648))"),
        ),
        (
            "chio.get_config",
            r#"(import "chio" "get_config" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {neg} {n8} {z} {n8}))"),
        ),
        (
            "chio.get_config",
            r#"(import "chio" "get_config" (func $f (param i32 i32 i32 i32) (result i32)))"#,
            format!("(drop (call $f {z} {n8} {z} {far}))"),
        ),
    ];
    for (i, (import, decl, call)) in cases.iter().enumerate() {
        let p = rt
            .load(guard(decl, &format!("{call} (i32.const 0)")).as_bytes(), PluginConfig::new(format!("oob-{i}")))
            .unwrap();
        let err = p.try_evaluate(&Default::default()).unwrap_err();
        match &err.kind {
            FailureKind::BadImportCall { import: got, detail } => {
                assert_eq!(got, import, "case {i}");
                assert!(detail.contains("outside guest memory"), "case {i}: {detail}");
            }
            other => panic!("case {i} ({import}): expected a bad import call, got {other}"),
        }
        assert!(err.to_string().contains(&format!("oob-{i}")), "{err}");
    }
    host_intact(&rt);
}

#[test]
fn a_bad_argument_to_an_import_is_skipped_or_blocks_in_a_chain() {
    let (rt, _) = runtime();
    let wasm = hostile("hostile-raw");
    assert_policies(
        &rt,
        &wasm,
        "bad-sha-out",
        |c| c.config("attack", "bad_arg").config("import", abi::SHA256_HEX).config("arg", "2").config("value", "end-4"),
        "bad call to import env.sha256_hex: output range",
    );
}

#[test]
fn a_plugin_reads_only_its_own_config_and_never_past_its_buffer() {
    let (rt, _) = runtime();
    // Denies with whatever `get_config("secret")` wrote into an 8-byte buffer; allows when missing.
    let imports = r#"(import "chio" "get_config" (func $cfg (param i32 i32 i32 i32) (result i32)))"#;
    let extra = format!(
        r#"{} (global $n (mut i32) (i32.const 0))
        (func (export "chio_deny_reason") (param $b i32) (param $l i32) (result i32)
          (memory.copy (local.get $b) (i32.const 2048) (i32.const 8)) (i32.const 8))
        (func (export "probe") (param i32 i32) (result i32)
          (i64.store (i32.const 2048) (i64.const 0x2e2e2e2e2e2e2e2e))
          (i64.store (i32.const 2056) (i64.const 0x2121212121212121))
          (global.set $n (call $cfg (i32.const 1024) (i32.const 6) (i32.const 2048) (i32.const 8)))
          (if (result i32) (i32.lt_s (global.get $n) (i32.const 0)) (then (i32.const 0))
            (else (if (result i32) (i64.ne (i64.load (i32.const 2056)) (i64.const 0x2121212121212121)) (then unreachable) (else (i32.const 1))))))"#,
        data(1024, "secret")
    );
    let wat = both(imports, &extra, "")
        .replace(r#"(func (export "evaluate") (param i32 i32) (result i32) (call $body) (i32.const 0))"#, "");
    let wat = wat.replace(r#"(export "probe")"#, r#"(export "evaluate")"#);
    let b = rt.load(wat.as_bytes(), PluginConfig::new("b").config("secret", "b-secret-longer-than-8-bytes")).unwrap();
    let a = rt.load(wat.as_bytes(), PluginConfig::new("a")).unwrap();
    // b sees the first 8 bytes of its own value, and not a byte more is written.
    assert_eq!(b.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::deny("b-secret"));
    // a, same module, same runtime: nothing.
    assert_eq!(a.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
}

#[test]
fn every_truncation_and_every_byte_flip_of_a_module_is_an_error_or_a_safe_plugin() {
    let (rt, _) = runtime();
    let imports = r#"(import "chio" "log" (func $log (param i32 i32 i32)))"#;
    let good = wat::parse_str(both(imports, "", "(call $log (i32.const 2) (i32.const 64) (i32.const 4))")).unwrap();
    let mut loaded = 0;
    let mut check = |bytes: &[u8], what: &str| match rt.load(bytes, PluginConfig::new("mutant")) {
        Ok(p) => {
            loaded += 1;
            // Whatever the mutant does, a call ends in a verdict or a named error.
            if p.is_guard() {
                let _ = p.evaluate(&GuardRequest::default());
            }
        }
        Err(e) => assert!(e.to_string().contains("mutant"), "{what}: {e}"),
    };
    for cut in 0..good.len() {
        check(&good[..cut], &format!("cut at {cut}"));
    }
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut m = good.clone();
            m[i] ^= flip;
            check(&m, &format!("byte {i} ^ {flip:#x}"));
        }
    }
    assert!(loaded > 0, "no mutant loaded: the check never ran a mutant");
    host_intact(&rt);
}

#[test]
fn a_correctly_signed_module_gets_no_more_than_an_unsigned_one() {
    let (rt, _) = runtime();
    let dir = tempfile::tempdir().unwrap();
    let key = keys::generate_signing_key().unwrap();
    let trust = TrustRoot::from_keys([("test".to_string(), key.verifying_key())]);
    let mut opts = PackOptions::new("signed-evil", "1.0.0");
    opts.signing = PackSigning::Key(Box::new(key.clone()));
    opts.packed_at = Some("2026-01-01T00:00:00Z".into());
    opts.config.insert("attack".into(), "spin".into());
    let packed = pack(hostile("hostile-raw"), opts).unwrap();
    let path = dir.path().join("signed-evil-1.0.0.tar.gz");
    save_artefact(&packed.artefact, &path).unwrap();
    let verified =
        verify_path(&path, &VerifyOptions::default().trust_root(trust.clone())).expect("the artefact verifies");
    assert!(verified.signer.is_some());

    // It verifies, and still runs under the same fuel as anything else.
    let p = rt
        .load(
            &verified.wasm,
            PluginConfig::new(&verified.name).config_map(verified.config.clone()).fuel(Some(1_000_000)),
        )
        .unwrap();
    match p.evaluate(&GuardRequest::default()) {
        GuardVerdict::Deny { reason } => {
            assert!(reason.contains("fuel exhausted (limit 1000000") && reason.contains("signed-evil"), "{reason}")
        }
        GuardVerdict::Allow => panic!("a signed spinning guard was allowed"),
    }
    // A signed guard that denies everything denies; the verdict is its own, limits unchanged.
    let p = rt.load(&verified.wasm, PluginConfig::new("signed-evil").config("attack", "deny_all")).unwrap();
    assert_eq!(p.evaluate(&GuardRequest::default()), GuardVerdict::deny("hostile-raw denies everything"));

    // A signed module importing outside the host surface (a socket call WASI preview 1 never had)
    // verifies (signatures speak to origin, not behaviour) and is still refused by the host.
    let wasi = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))
        (memory (export "memory") 1) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let mut opts = PackOptions::new("signed-wasi", "1.0.0");
    opts.signing = PackSigning::Key(Box::new(key));
    opts.packed_at = Some("2026-01-01T00:00:00Z".into());
    let packed = pack(wasi, opts).expect("packing does not judge imports");
    let path = dir.path().join("signed-wasi-1.0.0.tar.gz");
    save_artefact(&packed.artefact, &path).unwrap();
    let verified =
        verify_path(&path, &VerifyOptions::default().trust_root(trust)).expect("the signed WASI module verifies");
    let err = rt.load(&verified.wasm, PluginConfig::new(&verified.name)).unwrap_err();
    assert!(matches!(err, LoadError::ForbiddenImport { .. }), "{err}");
    assert!(
        err.to_string().contains("signed-wasi") && err.to_string().contains("wasi_snapshot_preview1.sock_open"),
        "{err}"
    );
    host_intact(&rt);
}
