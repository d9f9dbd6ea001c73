//! Tiny hand-written modules, keys and artefacts shared by the tests.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use helios_plugin_artefact::keys::public_key_hex;
use helios_plugin_artefact::{Artefact, PackOptions, PackSigning, TrustRoot, VerifyOptions, pack};
use helios_plugin_schema::Hook;

/// A core module exporting the allocator and the given hooks.
pub fn plugin_wasm(hooks: &[&str]) -> Vec<u8> {
    let mut s = String::from(
        r#"(module (memory (export "memory") 1)
             (func (export "alloc") (param i32) (result i32) i32.const 16)
             (func (export "dealloc") (param i32 i32))"#,
    );
    for h in hooks {
        s.push_str(&format!(r#"(func (export "{h}") (param i32 i32) (result i64) i64.const 0)"#));
    }
    s.push(')');
    wat::parse_str(&s).expect("valid wat")
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn root_of(key: &SigningKey) -> TrustRoot {
    TrustRoot::from_keys([(format!("key-{}", &public_key_hex(&key.verifying_key())[..8]), key.verifying_key())])
}

pub fn opts_trusting(key: &SigningKey) -> VerifyOptions {
    VerifyOptions::default().trust_root(root_of(key))
}

/// A small artefact: `tool-denylist` 1.0.0 serving pre_query, with one config entry.
pub fn pack_with(wasm: Vec<u8>, name: &str, version: &str, signing: PackSigning) -> Artefact {
    let opts = PackOptions {
        hooks: Some(vec![Hook::PreQuery]),
        config: BTreeMap::from([("denylist".to_string(), "rm,curl".to_string())]),
        signing,
        packed_at: Some("2026-11-22T03:00:00Z".into()),
        description: "denies tools".into(),
        license: "Apache-2.0".into(),
        ..PackOptions::new(name, version)
    };
    pack(wasm, opts).expect("pack").artefact
}

pub fn signed_artefact(key: &SigningKey) -> Artefact {
    pack_with(plugin_wasm(&["pre_query"]), "tool-denylist", "1.0.0", PackSigning::Key(Box::new(key.clone())))
}

pub fn tar_gz(artefact: &Artefact) -> Vec<u8> {
    let mut out = Vec::new();
    helios_plugin_artefact::archive::write_artefact(artefact, &mut out).unwrap();
    out
}

/// Runs a command and fails the test with its stderr if it fails.
pub fn run(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
