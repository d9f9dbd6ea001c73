//! chio.yaml `wasm_guards[]`: manifests found walking up from `path`, signatures and the blocklist
//! checked before any guest code runs, and errors that name the file, the entry and the cause.

use std::path::Path;

use helios_mcp_gateway::{GatewayConfig, Guards};
use helios_plugin_artefact::keys;
use helios_plugin_host::{Runtime, RuntimeConfig};
use helios_plugin_schema::GuardRequest;

use crate::support::*;

fn load(dir: &Path, text: &str) -> Result<Guards, String> {
    let path = dir.join("chio.yaml");
    std::fs::write(&path, text).unwrap();
    let config = GatewayConfig::load(&path).map_err(|e| e.to_string())?;
    Guards::load(Runtime::new(RuntimeConfig::default()).unwrap(), &config).map_err(|e| e.to_string())
}

fn entry(name: &str, path: &Path, extra: &str) -> String {
    format!("wasm_guards:\n  - name: {name}\n    path: {:?}\n{extra}", path.display().to_string())
}

#[test]
fn a_signed_guard_loads_through_a_pinned_key_or_the_trust_root_and_runs_with_the_entrys_limits() {
    let dir = tempfile::tempdir().unwrap();
    let key = keys::generate_signing_key().unwrap();
    let pinned = write_guard(dir.path(), "pinned", &wat_guard(), &[("deny_substring", "rm")], Signing::Pinned(&key));
    let guards = load(
        dir.path(),
        &entry("pinned", &pinned, "    priority: 5\n    fuel_limit: 1000000\n    config: { deny_substring: curl }\n"),
    )
    .unwrap();
    let set = guards.current();
    let g = &set.guards()[0];
    assert_eq!((g.plugin.priority(), g.plugin.limits().fuel), (5, Some(1_000_000)));
    assert_eq!(g.digest, helios_plugin_artefact::signing::sha256_hex(&wat_guard()));
    let v = set.evaluate(&GuardRequest { tool_name: "curl".into(), ..Default::default() });
    assert!(!v.verdict.is_allow(), "the entry's config overrides the manifest's");
    assert!(set.evaluate(&GuardRequest { tool_name: "rm".into(), ..Default::default() }).verdict.is_allow());

    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/ops.pub"), keys::public_key_base64(&key.verifying_key())).unwrap();
    let rooted = write_guard(dir.path(), "rooted", &wat_guard(), &[], Signing::TrustRoot(&key));
    load(dir.path(), &format!("{}gateway:\n  trusted_keys: keys\n", entry("rooted", &rooted, ""))).unwrap();
    let e = load(dir.path(), &entry("rooted", &rooted, "")).err().unwrap();
    assert!(e.contains("wasm_guards[0] (rooted)") && e.contains("E_SIGNER_UNTRUSTED"), "{e}");
}

#[test]
fn a_tampered_module_a_blocklisted_digest_or_a_wrong_key_never_loads() {
    let dir = tempfile::tempdir().unwrap();
    let key = keys::generate_signing_key().unwrap();
    let path = write_guard(dir.path(), "g", &wat_guard(), &[], Signing::Pinned(&key));
    // Blocklisted.
    let sha = helios_plugin_artefact::signing::sha256_hex(&wat_guard());
    std::fs::write(dir.path().join("bl.json"), format!("{{\"digests\":[\"sha256:{sha}\"]}}")).unwrap();
    let e = load(dir.path(), &format!("{}gateway:\n  blocklist: bl.json\n", entry("g", &path, ""))).err().unwrap();
    assert!(e.contains("E_GUARD_DIGEST_BLOCKLISTED") && e.contains("chio.yaml"), "{e}");
    // Another signer's sidecar.
    let other = keys::generate_signing_key().unwrap();
    let sidecar = helios_plugin_artefact::signing::sign_module(&other, &wat_guard(), "g", "1.0.0");
    std::fs::write(format!("{}.sig", path.display()), helios_plugin_artefact::signing::sidecar_bytes(&sidecar))
        .unwrap();
    let e = load(dir.path(), &entry("g", &path, "")).err().unwrap();
    assert!(e.contains("wasm_guards[0] (g)") && e.contains("E_SIGNER_UNTRUSTED"), "{e}");
    // Bytes changed after signing.
    let path = write_guard(dir.path(), "g", &wat_guard(), &[], Signing::Pinned(&key));
    std::fs::write(&path, with_marker(wat_guard(), "evil")).unwrap();
    let e = load(dir.path(), &entry("g", &path, "")).err().unwrap();
    assert!(e.contains("E_HASH_MISMATCH") || e.contains("wasm_sha256"), "{e}");
}

#[test]
fn unsigned_guards_load_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_guard(dir.path(), "g", &wat_guard(), &[], Signing::Unsigned);
    // The manifest's allow_unsigned lets it load (development).
    load(dir.path(), &entry("g", &path, "")).unwrap();
    let manifest = dir.path().join("g/guard-manifest.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("allow_unsigned: true\n", "");
    std::fs::write(&manifest, text).unwrap();
    let e = load(dir.path(), &entry("g", &path, "")).err().unwrap();
    assert!(e.contains("E_SIGNATURE_MISSING"), "{e}");
    load(dir.path(), &format!("{}gateway:\n  allow_unsigned: true\n", entry("g", &path, ""))).unwrap();
}

#[test]
fn the_manifest_is_found_walking_up_and_must_describe_the_same_module_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_guard(dir.path(), "g", &wat_guard(), &[], Signing::Unsigned);
    assert_eq!(helios_mcp_gateway::guards::find_manifest(&path).unwrap(), dir.path().join("g/guard-manifest.yaml"));
    let e = load(dir.path(), &entry("other-name", &path, "")).err().unwrap();
    assert!(e.contains("wasm_guards[0] (other-name)") && e.contains("field name"), "{e}");
    let stray = dir.path().join("g/wasm/stray.wasm");
    std::fs::write(&stray, wat_guard()).unwrap();
    let e = load(dir.path(), &entry("g", &stray, "")).err().unwrap();
    assert!(e.contains("field path") && e.contains("stray.wasm"), "{e}");
    let lonely = tempfile::tempdir().unwrap();
    std::fs::write(lonely.path().join("x.wasm"), wat_guard()).unwrap();
    let e = load(dir.path(), &entry("g", &lonely.path().join("x.wasm"), "")).err().unwrap();
    assert!(e.contains("no guard-manifest.yaml"), "{e}");
}

#[test]
fn a_module_over_max_module_size_is_refused_before_it_is_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_guard(dir.path(), "g", &wat_guard(), &[], Signing::Unsigned);
    let e = load(dir.path(), &entry("g", &path, "    max_module_size: 64\n")).err().unwrap();
    assert!(e.contains("E_MODULE_TOO_LARGE") || e.contains("limit: 64"), "{e}");
}

#[test]
fn unknown_fields_stop_the_gateway_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("chio.yaml");
    std::fs::write(&cfg, "wasm_guards:\n  - name: g\n    path: g.wasm\n    advisroy: true\n").unwrap();
    let out = std::process::Command::new(GATEWAY).arg("--config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chio.yaml") && err.contains("advisroy"), "{err}");
}

#[test]
fn the_toml_form_loads_and_runs_the_same_guard() {
    let dir = tempfile::tempdir().unwrap();
    let key = keys::generate_signing_key().unwrap();
    let path = write_guard(dir.path(), "g", &wat_guard(), &[], Signing::Pinned(&key));
    let toml = dir.path().join("gateway.toml");
    std::fs::write(
        &toml,
        format!(
            "[[wasm_guards]]\nname = \"g\"\npath = {:?}\npriority = 7\nconfig = {{ deny_substring = \"wipe\" }}\n\n[gateway]\nguard_threads = 2\n",
            path.display().to_string()
        ),
    )
    .unwrap();
    let config = GatewayConfig::load(&toml).unwrap();
    assert_eq!(config.guard_threads(), 2);
    let guards = Guards::load(Runtime::new(RuntimeConfig::default()).unwrap(), &config).unwrap();
    let set = guards.current();
    assert_eq!(set.guards()[0].plugin.priority(), 7);
    assert!(
        !set.evaluate(&GuardRequest { tool_name: "wipe_database".into(), ..Default::default() }).verdict.is_allow()
    );
    std::fs::write(
        &toml,
        format!("[[wasm_guards]]\nname = \"g\"\npath = {:?}\nfuel = 5\n", path.display().to_string()),
    )
    .unwrap();
    let e = GatewayConfig::load(&toml).unwrap_err().to_string();
    assert!(e.contains("gateway.toml") && e.contains("fuel"), "{e}");
}
