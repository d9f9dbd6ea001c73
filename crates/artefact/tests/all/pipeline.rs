//! The verification pipeline: what loads, what does not, and in which order the checks run.

use std::sync::{Arc, Mutex};

use helios_plugin_artefact::archive::write_artefact;
use helios_plugin_artefact::keys::public_key_hex;
use helios_plugin_artefact::signing::{sidecar_bytes, sign_module};
use helios_plugin_artefact::{
    Artefact, Blocklist, ErrorKind, PackOptions, PackSigning, TrustRoot, VerifyOptions, pack, sign_artefact,
    verify_artefact, verify_path,
};
use helios_plugin_schema::Hook;

use crate::support::*;

fn blocklist_of(sha: &str) -> Blocklist {
    Blocklist::parse(format!(r#"{{"digests":["sha256:{sha}"]}}"#).as_bytes(), "blocklist.json").unwrap()
}

fn kind(r: Result<helios_plugin_artefact::VerifiedPlugin, helios_plugin_artefact::Error>) -> ErrorKind {
    r.expect_err("verification should fail").kind()
}

#[test]
fn a_signed_artefact_yields_everything_the_host_loads() {
    let k = key(1);
    let a = signed_artefact(&k);
    let p = verify_artefact(&a, "t.tar.gz", &opts_trusting(&k)).unwrap();
    assert_eq!((p.name.as_str(), p.version.as_str()), ("tool-denylist", "1.0.0"));
    assert_eq!(p.hooks, vec![Hook::PreQuery]);
    assert_eq!(p.config["denylist"], "rm,curl");
    assert_eq!(p.wasm, plugin_wasm(&["pre_query"]));
    assert_eq!(p.sha256, helios_plugin_artefact::signing::sha256_hex(&p.wasm));
    let signer = p.signer.unwrap();
    assert_eq!(signer.public_key, public_key_hex(&k.verifying_key()));
    assert!(signer.label.starts_with("key-"));
}

#[test]
fn a_key_outside_the_trust_root_is_rejected() {
    let a = signed_artefact(&key(1));
    let e = verify_artefact(&a, "t.tar.gz", &opts_trusting(&key(2))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignerUntrusted);
    assert!(
        e.to_string().contains("tool-denylist") && e.to_string().contains(&public_key_hex(&key(1).verifying_key())),
        "{e}"
    );
}

#[test]
fn a_signature_moved_to_another_module_is_rejected() {
    let k = key(1);
    let good = signed_artefact(&k);
    // Same name and version, other code: the sidecar and manifest signature of `good` carried over.
    let other = pack_with(plugin_wasm(&["pre_query", "route"]), "tool-denylist", "1.0.0", PackSigning::Unsigned);
    let mut forged_manifest: serde_json::Value = serde_json::from_slice(&other.manifest).unwrap();
    forged_manifest["signature_sha256"] =
        serde_json::from_slice::<serde_json::Value>(&good.manifest).unwrap()["signature_sha256"].clone();
    let forged = Artefact {
        manifest: serde_json::to_vec_pretty(&forged_manifest).unwrap(),
        wasm: other.wasm,
        sidecar: good.sidecar.clone(),
        manifest_signature: good.manifest_signature.clone(),
    };
    assert_eq!(kind(verify_artefact(&forged, "t", &opts_trusting(&k))), ErrorKind::HashMismatch);
}

#[test]
fn a_signature_moved_to_another_name_or_version_is_rejected() {
    let k = key(1);
    let good = signed_artefact(&k);
    for (name, version) in [("other-plugin", "1.0.0"), ("tool-denylist", "0.9.0")] {
        let mut m: serde_json::Value = serde_json::from_slice(&good.manifest).unwrap();
        m["name"] = name.into();
        m["version"] = version.into();
        let moved = Artefact { manifest: serde_json::to_vec_pretty(&m).unwrap(), ..good.clone() };
        // The manifest signature no longer matches: the rename is caught before the name check.
        assert_eq!(
            kind(verify_artefact(&moved, "t", &opts_trusting(&k))),
            ErrorKind::SignatureInvalid,
            "{name} {version}"
        );
    }
    // A key holder who re-signs the manifest but keeps the old sidecar is caught by the name check.
    let wasm = plugin_wasm(&["pre_query"]);
    let old_sidecar = sidecar_bytes(&sign_module(&k, &wasm, "tool-denylist", "0.9.0"));
    let e = pack(
        wasm,
        PackOptions { signing: PackSigning::Sidecar(old_sidecar), ..PackOptions::new("tool-denylist", "1.0.0") },
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SidecarMismatch, "{e}");
}

#[test]
fn guard_manifest_sidecar_for_another_name_is_rejected() {
    let k = key(3);
    let dir = tempfile::tempdir().unwrap();
    let wasm = plugin_wasm(&[]);
    write_guard_dir(dir.path(), &wasm, "pii-scanner", Some(&public_key_hex(&k.verifying_key())), false);
    std::fs::write(dir.path().join("pii.wasm.sig"), sidecar_bytes(&sign_module(&k, &wasm, "other", "1.0.0"))).unwrap();
    let e = verify_path(dir.path(), &VerifyOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SidecarMismatch);
    assert!(e.to_string().contains("module_name") && e.to_string().contains("pii.wasm.sig"), "{e}");
}

pub fn write_guard_dir(dir: &std::path::Path, wasm: &[u8], name: &str, pinned: Option<&str>, allow_unsigned: bool) {
    std::fs::write(dir.join("pii.wasm"), wasm).unwrap();
    let mut m = format!(
        "name: {name}\nversion: \"1.0.0\"\nabi_version: \"1\"\nwasm_path: pii.wasm\nwasm_sha256: \"{}\"\nconfig:\n  mode: strict\nallow_unsigned: {allow_unsigned}\n",
        helios_plugin_artefact::signing::sha256_hex(wasm)
    );
    if let Some(k) = pinned {
        m.push_str(&format!("signer_public_key: \"{k}\"\n"));
    }
    std::fs::write(dir.join("guard-manifest.yaml"), m).unwrap();
}

#[test]
fn a_guard_manifest_directory_with_a_pinned_key_verifies() {
    let k = key(3);
    let dir = tempfile::tempdir().unwrap();
    let wasm = plugin_wasm(&[]);
    write_guard_dir(dir.path(), &wasm, "pii-scanner", Some(&public_key_hex(&k.verifying_key())), false);
    std::fs::write(dir.path().join("pii.wasm.sig"), sidecar_bytes(&sign_module(&k, &wasm, "pii-scanner", "1.0.0")))
        .unwrap();
    let p = verify_path(dir.path(), &VerifyOptions::default()).unwrap();
    assert_eq!(p.signer.unwrap().label, "pinned");
    assert_eq!(p.config["mode"], "strict");
    // With a trust root too, the key must also be in it.
    let e = verify_path(dir.path(), &opts_trusting(&key(4))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignerUntrusted);
    assert!(verify_path(&dir.path().join("guard-manifest.yaml"), &opts_trusting(&k)).is_ok());
}

#[test]
fn a_pinned_key_without_a_sidecar_is_rejected_even_with_allow_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    write_guard_dir(dir.path(), &plugin_wasm(&[]), "pii-scanner", Some(&public_key_hex(&key(3).verifying_key())), true);
    let e = verify_path(dir.path(), &VerifyOptions::default().allow_unsigned(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureMissing);
    assert!(e.to_string().contains("allow_unsigned cannot override"), "{e}");
}

/// Collects formatted tracing events.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn unsigned_loads_only_when_allowed_explicitly_and_warns_on_every_load() {
    let dir = tempfile::tempdir().unwrap();
    write_guard_dir(dir.path(), &plugin_wasm(&[]), "dev-guard", None, false);
    assert_eq!(kind(verify_path(dir.path(), &VerifyOptions::default())), ErrorKind::SignatureMissing);

    let unsigned = pack_with(plugin_wasm(&["pre_query"]), "dev-hook", "0.1.0", PackSigning::Unsigned);
    assert_eq!(kind(verify_artefact(&unsigned, "dev.tar.gz", &opts_trusting(&key(1)))), ErrorKind::SignatureMissing);

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..2 {
            let p = verify_artefact(&unsigned, "dev.tar.gz", &VerifyOptions::default().allow_unsigned(true)).unwrap();
            assert!(p.signer.is_none());
        }
        write_guard_dir(dir.path(), &plugin_wasm(&[]), "dev-guard", None, true);
        assert!(verify_path(dir.path(), &VerifyOptions::default()).unwrap().signer.is_none());
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(log.matches("WARN").count(), 3, "{log}");
    assert_eq!(log.matches("loading unsigned plugin dev-hook").count(), 2, "{log}");
    assert!(log.contains("loading unsigned plugin dev-guard"), "{log}");
}

#[test]
fn stripping_the_signature_does_not_downgrade_to_unsigned() {
    let a = signed_artefact(&key(1));
    let stripped = Artefact { sidecar: None, manifest_signature: None, ..a };
    let e = verify_artefact(&stripped, "t", &VerifyOptions::default().allow_unsigned(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureMissing);
    assert!(e.to_string().contains("signature_sha256"), "{e}");
}

#[test]
fn a_sidecar_without_a_manifest_signature_is_not_enough_for_a_manifest_with_config() {
    let k = key(1);
    let wasm = plugin_wasm(&["pre_query"]);
    let sidecar = sidecar_bytes(&sign_module(&k, &wasm, "tool-denylist", "1.0.0"));
    let a = pack_with(wasm, "tool-denylist", "1.0.0", PackSigning::Sidecar(sidecar));
    let e = verify_artefact(&a, "t.tar.gz", &opts_trusting(&k)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureMissing);
    assert!(e.to_string().contains("helios-plugin sign"), "{e}");
    // Signing the artefact afterwards completes it.
    let signed = sign_artefact(&a, &k).unwrap();
    assert!(verify_artefact(&signed, "t.tar.gz", &opts_trusting(&k)).is_ok());
}

#[test]
fn a_blocklisted_module_never_loads_whatever_else_passes() {
    let k = key(1);
    let a = signed_artefact(&k);
    let sha = helios_plugin_artefact::signing::sha256_hex(&a.wasm);
    let e = verify_artefact(&a, "t", &opts_trusting(&k).blocklist(blocklist_of(&sha))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestBlocklisted);
    assert!(e.to_string().starts_with("E_GUARD_DIGEST_BLOCKLISTED: plugin tool-denylist"), "{e}");
    assert!(verify_artefact(&a, "t", &opts_trusting(&k).blocklist(blocklist_of(&"0".repeat(64)))).is_ok());
}

#[test]
fn checks_run_in_order_size_hash_blocklist_signature() {
    let k = key(1);
    let a = signed_artefact(&k);
    let sha = helios_plugin_artefact::signing::sha256_hex(&a.wasm);
    // Blocklisted and untrusted: the blocklist is reported (it runs before the signature).
    let e = verify_artefact(&a, "t", &opts_trusting(&key(9)).blocklist(blocklist_of(&sha))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestBlocklisted);
    // Over the size cap and blocklisted: the size is reported, before any hashing.
    let small = opts_trusting(&k).blocklist(blocklist_of(&sha)).max_module_bytes(8);
    assert_eq!(kind(verify_artefact(&a, "t", &small)), ErrorKind::ModuleTooLarge);
    // Modified module and blocklisted original digest: the hash mismatch comes first.
    let mut wasm = a.wasm.clone();
    wasm.push(0);
    let modified = Artefact { wasm, ..a.clone() };
    assert_eq!(
        kind(verify_artefact(&modified, "t", &opts_trusting(&k).blocklist(blocklist_of(&sha)))),
        ErrorKind::HashMismatch
    );
}

#[test]
fn an_oversized_module_is_refused_before_it_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = plugin_wasm(&[]);
    write_guard_dir(dir.path(), &wasm, "big", None, true);
    let e = verify_path(dir.path(), &VerifyOptions::default().max_module_bytes(wasm.len() as u64 - 1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModuleTooLarge);
    assert!(e.to_string().contains(&format!("limit: {}", wasm.len() - 1)), "{e}");
}

#[test]
fn pack_refuses_hooks_the_module_does_not_export_and_reports_undeclared_ones() {
    let wasm = plugin_wasm(&["pre_query", "post_query"]);
    let e = pack(
        wasm.clone(),
        PackOptions { hooks: Some(vec![Hook::PreQuery, Hook::Route]), ..PackOptions::new("p", "1") },
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HookNotExported);
    assert!(e.to_string().contains("route") && e.to_string().contains("pre_query, post_query"), "{e}");
    let packed = pack(wasm, PackOptions { hooks: Some(vec![Hook::PreQuery]), ..PackOptions::new("p", "1") }).unwrap();
    assert_eq!(packed.undeclared_exports, vec![Hook::PostQuery]);
}

#[test]
fn a_manifest_declaring_an_unexported_hook_does_not_verify() {
    let k = key(1);
    let a = signed_artefact(&k);
    let mut m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
    m["hooks"] = serde_json::json!(["pre_query", "route"]);
    let lying = Artefact { manifest: serde_json::to_vec_pretty(&m).unwrap(), ..a };
    // Re-sign it (a key holder's mistake, not an attack): the hook check still refuses it.
    let resigned = sign_artefact(&lying, &k).unwrap();
    assert_eq!(kind(verify_artefact(&resigned, "t", &opts_trusting(&k))), ErrorKind::HookNotExported);
}

#[test]
fn packing_is_deterministic() {
    let a = signed_artefact(&key(1));
    let b = signed_artefact(&key(1));
    assert_eq!(tar_gz(&a), tar_gz(&b));
}

#[test]
fn an_artefact_round_trips_through_a_file() {
    let k = key(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.tar.gz");
    let a = signed_artefact(&k);
    let mut f = std::fs::File::create(&path).unwrap();
    write_artefact(&a, &mut f).unwrap();
    drop(f);
    let p = verify_path(&path, &opts_trusting(&k)).unwrap();
    assert_eq!(p.source, path);
}

#[test]
fn a_trust_root_directory_reads_every_format_and_names_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(5);
    let vk = k.verifying_key();
    std::fs::write(dir.path().join("ops.pem"), helios_plugin_artefact::keys::public_key_pem(&vk)).unwrap();
    std::fs::write(
        dir.path().join("proxy.pub"),
        helios_plugin_artefact::keys::public_key_base64(&key(6).verifying_key()),
    )
    .unwrap();
    std::fs::write(dir.path().join("chio.hex"), public_key_hex(&key(7).verifying_key())).unwrap();
    std::fs::write(dir.path().join(".editor-backup"), "junk").unwrap();
    let root = TrustRoot::load(dir.path()).unwrap();
    let labels: Vec<_> = root.keys().iter().map(|k| k.label.as_str()).collect();
    assert_eq!(labels, ["chio", "ops", "proxy"]);
    assert_eq!(root.find(&vk).unwrap().label, "ops");

    std::fs::write(dir.path().join("typo.pub"), "not a key").unwrap();
    let e = TrustRoot::load(dir.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyInvalid);
    assert!(e.to_string().contains("typo.pub"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    assert_eq!(TrustRoot::load(empty.path()).unwrap_err().kind(), ErrorKind::TrustRootInvalid);
    assert_eq!(TrustRoot::load(&empty.path().join("missing")).unwrap_err().kind(), ErrorKind::TrustRootInvalid);
}

#[test]
fn a_bare_module_with_its_sidecar_verifies_under_the_signed_name() {
    let k = key(8);
    let dir = tempfile::tempdir().unwrap();
    let wasm = plugin_wasm(&["route"]);
    let path = dir.path().join("router.wasm");
    std::fs::write(&path, &wasm).unwrap();
    assert_eq!(verify_path(&path, &opts_trusting(&k)).unwrap_err().kind(), ErrorKind::SignatureMissing);
    std::fs::write(dir.path().join("router.wasm.sig"), sidecar_bytes(&sign_module(&k, &wasm, "geo-router", "2.1.0")))
        .unwrap();
    let p = verify_path(&path, &opts_trusting(&k)).unwrap();
    assert_eq!((p.name.as_str(), p.version.as_str(), p.hooks.as_slice()), ("geo-router", "2.1.0", &[Hook::Route][..]));
    assert_eq!(kind(verify_path(&path, &opts_trusting(&key(9)))), ErrorKind::SignerUntrusted);
    // Another module under the same sidecar.
    std::fs::write(&path, plugin_wasm(&["route", "pre_query"])).unwrap();
    assert_eq!(kind(verify_path(&path, &opts_trusting(&k))), ErrorKind::HashMismatch);
    // Without any trust root, only an explicit allow_unsigned loads it.
    assert_eq!(kind(verify_path(&path, &VerifyOptions::default())), ErrorKind::SignerUntrusted);
    assert!(verify_path(&path, &VerifyOptions::default().allow_unsigned(true)).unwrap().signer.is_none());
}
