//! Interop with the tools operators already have: `openssl` (3.x) and `signify-openbsd`.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use helios_plugin_artefact::keys::{self, public_key_hex};
use helios_plugin_artefact::signing::{Anchors, sha256_hex, sidecar_from_signature, sign_module, verify_sidecar};
use helios_plugin_artefact::{ErrorKind, PackSigning, TrustRoot, VerifyOptions, verify_artefact};
use helios_plugin_schema::Hook;
use helios_plugin_schema::manifest::signed_module_message;

use crate::support::*;

fn openssl_key(dir: &Path) -> std::path::PathBuf {
    let k = dir.join("openssl.pem");
    run(Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&k));
    k
}

fn message_for(wasm: &[u8], name: &str, version: &str, key_hex: &str) -> Vec<u8> {
    signed_module_message(&sha256_hex(wasm), name, version, key_hex)
}

#[test]
fn an_openssl_genpkey_key_signs_here_and_verifies_against_openssl_public_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = openssl_key(dir.path());
    let trust = dir.path().join("trust");
    std::fs::create_dir(&trust).unwrap();
    // PEM SPKI as `openssl pkey -pubout` writes it...
    run(Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&key_path).arg("-out").arg(trust.join("ops.pem")));
    // ...and the HeliosProxy `.pub` recipe: the raw 32 bytes, base64.
    let recipe = format!("openssl pkey -in {} -pubout -outform DER | tail -c 32 | base64", key_path.display());
    let b64 = run(Command::new("sh").args(["-c", &recipe]));
    std::fs::write(trust.join("proxy.pub"), &b64).unwrap();

    let key = keys::read_signing_key(&key_path).unwrap();
    let root = TrustRoot::load(&trust).unwrap();
    assert_eq!(root.keys().len(), 2);
    assert!(root.keys().iter().all(|k| k.key == key.verifying_key()), "both files hold the openssl key");

    let a = pack_with(plugin_wasm(&["pre_query"]), "ops-plugin", "2.0.0", PackSigning::Key(Box::new(key)));
    let p = verify_artefact(&a, "ops.tar.gz", &VerifyOptions::default().trust_root(root)).unwrap();
    assert_eq!(p.signer.unwrap().label, "ops");
}

#[test]
fn a_message_signed_by_openssl_pkeyutl_verifies_here() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = openssl_key(dir.path());
    let pub_path = dir.path().join("pub.pem");
    run(Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&key_path).arg("-out").arg(&pub_path));
    let vk = keys::read_public_key(&pub_path).unwrap();

    let wasm = plugin_wasm(&[]);
    let msg_path = dir.path().join("message");
    std::fs::write(&msg_path, message_for(&wasm, "pii-scanner", "1.0.0", &public_key_hex(&vk))).unwrap();
    let sig_path = dir.path().join("sig.bin");
    run(Command::new("openssl")
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(&key_path)
        .arg("-in")
        .arg(&msg_path)
        .arg("-out")
        .arg(&sig_path));
    let sig = std::fs::read(&sig_path).unwrap();
    assert_eq!(sig.len(), 64);

    // Assembled by hand into a sidecar, it verifies against a trust root holding the PEM.
    let sidecar = helios_plugin_schema::manifest::Sidecar {
        module_hash: sha256_hex(&wasm),
        module_name: "pii-scanner".into(),
        version: "1.0.0".into(),
        signer_public_key: public_key_hex(&vk),
        signature: hex::encode(&sig),
    };
    let root = TrustRoot::from_keys([("ops".to_string(), vk)]);
    let anchors = Anchors { pinned: None, trust_root: Some(&root) };
    verify_sidecar(&sidecar, &sha256_hex(&wasm), &anchors, "pii-scanner", "pii.wasm.sig").unwrap();
    // The library's own path for external signatures agrees, in raw and base64 form.
    assert_eq!(sidecar_from_signature(&wasm, "pii-scanner", "1.0.0", &vk, &sig, "sig.bin").unwrap(), sidecar);
    assert_eq!(
        sidecar_from_signature(&wasm, "pii-scanner", "1.0.0", &vk, BASE64.encode(&sig).as_bytes(), "sig.b64").unwrap(),
        sidecar
    );
    // Signed for another version, it does not.
    assert!(sidecar_from_signature(&wasm, "pii-scanner", "1.0.1", &vk, &sig, "sig.bin").is_err());
}

#[test]
fn openssl_reads_our_keys_and_verifies_our_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let key = keys::generate_signing_key().unwrap();
    let key_path = dir.path().join("ours.pem");
    std::fs::write(&key_path, keys::signing_key_pem(&key)).unwrap();
    let derived = run(Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&key_path));
    assert_eq!(String::from_utf8(derived).unwrap(), keys::public_key_pem(&key.verifying_key()));

    let pub_path = dir.path().join("ours.pub.pem");
    std::fs::write(&pub_path, keys::public_key_pem(&key.verifying_key())).unwrap();
    let wasm = plugin_wasm(&[]);
    let sidecar = sign_module(&key, &wasm, "p", "1.0.0");
    let msg_path = dir.path().join("message");
    std::fs::write(&msg_path, message_for(&wasm, "p", "1.0.0", &sidecar.signer_public_key)).unwrap();
    let sig_path = dir.path().join("sig.bin");
    std::fs::write(&sig_path, hex::decode(&sidecar.signature).unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey"])
        .arg(&pub_path)
        .arg("-in")
        .arg(&msg_path)
        .arg("-sigfile")
        .arg(&sig_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl rejected our signature: {}", String::from_utf8_lossy(&out.stdout));
}

fn signify_keys(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (public, secret) = (dir.join("signify.pub"), dir.join("signify.sec"));
    run(Command::new("signify-openbsd").args(["-G", "-n", "-p"]).arg(&public).arg("-s").arg(&secret));
    (public, secret)
}

#[test]
fn a_signify_key_pair_works_as_signer_and_trust_root() {
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("trust");
    std::fs::create_dir(&trust).unwrap();
    let (public, secret) = signify_keys(&trust);
    std::fs::rename(&secret, dir.path().join("signify.sec")).unwrap();
    let secret = dir.path().join("signify.sec");

    // Our signer with signify's secret key; signify's public key as the trust root.
    let key = keys::read_signing_key(&secret).unwrap();
    let a = pack_with(plugin_wasm(&["pre_query"]), "signify-plugin", "1.0.0", PackSigning::Key(Box::new(key.clone())));
    let root = TrustRoot::load(&trust).unwrap();
    let p = verify_artefact(&a, "s.tar.gz", &VerifyOptions::default().trust_root(root.clone())).unwrap();
    assert_eq!(p.signer.unwrap().label, "signify");

    // signify itself signs our message; the signify signature file becomes a sidecar.
    let wasm = plugin_wasm(&[]);
    let vk = keys::read_public_key(&public).unwrap();
    let msg_path = dir.path().join("message");
    std::fs::write(&msg_path, message_for(&wasm, "g", "1.0.0", &public_key_hex(&vk))).unwrap();
    let sig_path = dir.path().join("message.sig");
    run(Command::new("signify-openbsd")
        .args(["-S", "-s"])
        .arg(&secret)
        .arg("-m")
        .arg(&msg_path)
        .arg("-x")
        .arg(&sig_path));
    let sidecar =
        sidecar_from_signature(&wasm, "g", "1.0.0", &vk, &std::fs::read(&sig_path).unwrap(), "message.sig").unwrap();
    verify_sidecar(&sidecar, &sha256_hex(&wasm), &Anchors { pinned: None, trust_root: Some(&root) }, "g", "g.sig")
        .unwrap();

    // And signify verifies what we signed with its key (wrapped in its own signature format).
    let ours = key.sign(&std::fs::read(&msg_path).unwrap());
    let pub_blob = BASE64.decode(std::fs::read_to_string(&public).unwrap().lines().nth(1).unwrap()).unwrap();
    let mut blob = b"Ed".to_vec();
    blob.extend_from_slice(&pub_blob[2..10]); // key number
    blob.extend_from_slice(&ours.to_bytes());
    let ours_path = dir.path().join("ours.sig");
    std::fs::write(&ours_path, format!("untrusted comment: signed by helios-plugin\n{}\n", BASE64.encode(blob)))
        .unwrap();
    run(Command::new("signify-openbsd")
        .args(["-V", "-q", "-p"])
        .arg(&public)
        .arg("-m")
        .arg(&msg_path)
        .arg("-x")
        .arg(&ours_path));
}

#[test]
fn signify_secret_keys_are_not_trust_root_entries() {
    let dir = tempfile::tempdir().unwrap();
    signify_keys(dir.path());
    let e = TrustRoot::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("signify.sec") && e.to_string().contains("secret key"), "{e}");
}

/// HeliosProxy's artefact, made the way its tooling makes one: `plugin.sig` is base64 of a raw
/// Ed25519 signature over the module bytes (`openssl pkeyutl -sign -rawin`), the manifest is
/// HeliosProxy's JSON, the archive comes from `tar`, and the trust root holds base64 `*.pub` files.
#[test]
fn a_heliosproxy_artefact_signed_by_openssl_and_tarred_by_tar_verifies_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key_path = openssl_key(d);
    let wasm = plugin_wasm(&["pre_query"]);
    let stage = d.join("stage");
    std::fs::create_dir(&stage).unwrap();
    std::fs::write(stage.join("plugin.wasm"), &wasm).unwrap();
    let sign = format!(
        "openssl pkeyutl -sign -rawin -inkey {} -in {} | base64 -w0",
        key_path.display(),
        stage.join("plugin.wasm").display()
    );
    let sig_b64 = run(Command::new("sh").args(["-c", &sign]));
    std::fs::write(stage.join("plugin.sig"), &sig_b64).unwrap();
    let manifest = format!(
        r#"{{"schema_version": "1.0", "name": "my-plugin", "version": "1.0.0", "description": "", "license": "MIT",
"hooks": ["pre_query"], "wasm_sha256": "{}", "signature_sha256": "{}", "signature_algorithm": "ed25519",
"packed_at": "2026-12-01T10:00:00Z"}}"#,
        sha256_hex(&wasm),
        sha256_hex(&sig_b64)
    );
    std::fs::write(stage.join("manifest.json"), manifest).unwrap();
    let tarball = d.join("my-plugin-1.0.0.tar.gz");
    run(Command::new("tar").arg("czf").arg(&tarball).arg("-C").arg(&stage).args([
        "manifest.json",
        "plugin.wasm",
        "plugin.sig",
    ]));
    let trust = d.join("plugin-keys");
    std::fs::create_dir(&trust).unwrap();
    let recipe = format!("openssl pkey -in {} -pubout -outform DER | tail -c 32 | base64", key_path.display());
    std::fs::write(trust.join("release.pub"), run(Command::new("sh").args(["-c", &recipe]))).unwrap();

    let opts = VerifyOptions::default().trust_root(TrustRoot::load(&trust).unwrap());
    let p = helios_plugin_artefact::verify_path(&tarball, &opts).unwrap();
    assert_eq!(
        (p.name.as_str(), p.version.as_str(), p.hooks.as_slice()),
        ("my-plugin", "1.0.0", &[Hook::PreQuery][..])
    );
    assert_eq!(p.signer.unwrap().label, "release");

    // One flipped bit of the module and the signature no longer verifies under any trusted key.
    let mut a = helios_plugin_artefact::read_artefact(&tarball, &Default::default()).unwrap();
    a.wasm[20] ^= 1;
    let e = verify_artefact(&a, "x", &opts).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::HashMismatch), "{e}");
}

#[test]
fn pack_writes_the_heliosproxy_format_and_openssl_verifies_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key_path = openssl_key(d);
    let pub_path = d.join("pub.pem");
    run(Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&key_path).arg("-out").arg(&pub_path));
    let key = keys::read_signing_key(&key_path).unwrap();
    let opts = helios_plugin_artefact::PackOptions {
        hooks: Some(vec![Hook::PreQuery]),
        signing: PackSigning::RawKey(Box::new(key.clone())),
        ..helios_plugin_artefact::PackOptions::new("my-plugin", "1.0.0")
    };
    let a = helios_plugin_artefact::pack(plugin_wasm(&["pre_query"]), opts).unwrap().artefact;
    assert!(a.manifest_signature.is_none(), "HeliosProxy's format has no manifest.sig");
    std::fs::write(d.join("plugin.wasm"), &a.wasm).unwrap();
    let raw = BASE64.decode(String::from_utf8(a.sidecar.clone().unwrap()).unwrap().trim()).unwrap();
    std::fs::write(d.join("sig.bin"), &raw).unwrap();
    let out = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey"])
        .arg(&pub_path)
        .arg("-in")
        .arg(d.join("plugin.wasm"))
        .arg("-sigfile")
        .arg(d.join("sig.bin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl rejected pack's plugin.sig: {}", String::from_utf8_lossy(&out.stdout));
    // And the manifest has HeliosProxy's fields.
    let m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
    for field in [
        "schema_version",
        "name",
        "version",
        "hooks",
        "wasm_sha256",
        "signature_sha256",
        "signature_algorithm",
        "packed_at",
    ] {
        assert!(m.get(field).is_some(), "manifest lacks {field}: {m}");
    }
    verify_artefact(&a, "a", &VerifyOptions::default().trust_root(root_of(&key))).unwrap();
}
