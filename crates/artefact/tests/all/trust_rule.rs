//! The trust rule of SIGNING.md: a module signature (`sign`) → `pack` → `verify` passes while the
//! manifest adds nothing the module signature does not bind; anything more needs `manifest.sig`.
//! One test per attack the rule stops.

use std::collections::BTreeMap;

use helios_plugin_artefact::signing::{sidecar_bytes, sign_module, sign_module_raw};
use helios_plugin_artefact::{Artefact, ErrorKind, PackOptions, PackSigning, pack, sign_artefact, verify_artefact};
use helios_plugin_schema::Hook;

use crate::support::*;

/// A module built the way the SDK builds one: it exports `hooks` and declares `declared` (and its
/// name and version) in its `helios.plugin` section.
fn sdk_module(hooks: &[&str], declared: &[&str], name: &str, version: &str) -> Vec<u8> {
    let mut section = String::from("sdk=0.1.0\\n");
    for h in declared {
        section.push_str(&format!("name={name}\\nversion={version}\\nhook={h}\\n"));
    }
    let mut s = format!(
        r#"(module (@custom "helios.plugin" "{section}") (memory (export "memory") 1)
             (func (export "alloc") (param i32) (result i32) i32.const 16)
             (func (export "dealloc") (param i32 i32))"#
    );
    for h in hooks {
        s.push_str(&format!(r#"(func (export "{h}") (param i32 i32) (result i64) i64.const 0)"#));
    }
    s.push(')');
    wat::parse_str(&s).expect("valid wat")
}

/// The page's three steps: the module signed alone (its sidecar), then packed with the sidecar and
/// the given manifest contents; no `manifest.sig`.
fn sign_then_pack(wasm: Vec<u8>, hooks: Option<Vec<Hook>>, config: &[(&str, &str)]) -> Artefact {
    let sidecar = sidecar_bytes(&sign_module(&key(1), &wasm, "my-plugin", "1.0.0"));
    let opts = PackOptions {
        hooks,
        config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        signing: PackSigning::Sidecar(sidecar),
        packed_at: Some("2026-12-01T00:00:00Z".into()),
        ..PackOptions::new("my-plugin", "1.0.0")
    };
    let a = pack(wasm, opts).expect("pack").artefact;
    assert!(a.manifest_signature.is_none());
    a
}

fn refused(a: &Artefact, needle: &str) {
    let e = verify_artefact(a, "my-plugin.tar.gz", &opts_trusting(&key(1))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureMissing, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(needle) && msg.contains("manifest.sig") && msg.contains("helios-plugin sign"), "{msg}");
}

#[test]
fn sign_pack_verify_passes_when_the_manifest_repeats_what_the_module_declares() {
    let wasm = sdk_module(&["pre_query", "post_query"], &["pre_query", "post_query"], "my-plugin", "1.0.0");
    // Hooks in another order are the same set.
    let a = sign_then_pack(wasm, Some(vec![Hook::PostQuery, Hook::PreQuery]), &[]);
    let p = verify_artefact(&a, "my-plugin.tar.gz", &opts_trusting(&key(1))).unwrap();
    assert_eq!((p.name.as_str(), p.version.as_str()), ("my-plugin", "1.0.0"));
    assert!(p.signer.is_some());
}

#[test]
fn a_module_without_a_section_is_held_to_the_hooks_it_exports() {
    let a = sign_then_pack(plugin_wasm(&["pre_query"]), Some(vec![Hook::PreQuery]), &[]);
    verify_artefact(&a, "my-plugin.tar.gz", &opts_trusting(&key(1))).unwrap();
}

#[test]
fn attack_narrowing_the_hooks_to_switch_a_guard_hook_off_is_refused() {
    // The module guards pre_query and audits post_query; a swapped manifest keeps only post_query.
    let wasm = sdk_module(&["pre_query", "post_query"], &["pre_query", "post_query"], "my-plugin", "1.0.0");
    let a = sign_then_pack(wasm, Some(vec![Hook::PostQuery]), &[]);
    refused(&a, "hooks [post_query] differ from the hooks the module declares [pre_query, post_query]");
}

#[test]
fn attack_widening_the_hooks_to_an_export_the_module_does_not_declare_is_refused() {
    // `route` is exported (a helper the author never meant as a hook) but not declared.
    let wasm = sdk_module(&["pre_query", "route"], &["pre_query"], "my-plugin", "1.0.0");
    let a = sign_then_pack(wasm, Some(vec![Hook::PreQuery, Hook::Route]), &[]);
    refused(&a, "hooks [pre_query, route] differ");
}

#[test]
fn attack_adding_config_to_an_unsigned_manifest_is_refused() {
    let wasm = sdk_module(&["pre_query"], &["pre_query"], "my-plugin", "1.0.0");
    let a = sign_then_pack(wasm, Some(vec![Hook::PreQuery]), &[("apply_to_all", "false"), ("mode", "off")]);
    refused(&a, "config (apply_to_all, mode)");
}

#[test]
fn attack_renaming_or_relabelling_the_version_in_an_unsigned_manifest_is_refused() {
    let wasm = sdk_module(&["pre_query"], &["pre_query"], "my-plugin", "1.0.0");
    let a = sign_then_pack(wasm, Some(vec![Hook::PreQuery]), &[]);
    for (from, to) in [("\"my-plugin\"", "\"other-plugin\""), ("\"1.0.0\"", "\"1.0.1\"")] {
        let forged = Artefact {
            manifest: String::from_utf8(a.manifest.clone()).unwrap().replace(from, to).into_bytes(),
            ..a.clone()
        };
        let e = verify_artefact(&forged, "my-plugin.tar.gz", &opts_trusting(&key(1))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SidecarMismatch, "{e}");
    }
}

#[test]
fn a_signed_manifest_may_carry_policy() {
    let wasm = sdk_module(&["pre_query", "post_query"], &["pre_query", "post_query"], "my-plugin", "1.0.0");
    let a = sign_then_pack(wasm, Some(vec![Hook::PostQuery]), &[("mode", "strict")]);
    refused(&a, "config (mode)");
    let signed = sign_artefact(&a, &key(1)).unwrap();
    let p = verify_artefact(&signed, "my-plugin.tar.gz", &opts_trusting(&key(1))).unwrap();
    assert_eq!(p.hooks, vec![Hook::PostQuery]);
    assert_eq!(p.config["mode"], "strict");
}

#[test]
fn bundles_a_guard_may_read_are_only_declared_by_a_signed_manifest() {
    let wasm = sdk_module(&["pre_query"], &["pre_query"], "my-plugin", "1.0.0");
    let bundle = format!("sha256:{}", "ab".repeat(32));
    let sidecar = sidecar_bytes(&sign_module(&key(1), &wasm, "my-plugin", "1.0.0"));
    let opts = PackOptions {
        hooks: Some(vec![Hook::PreQuery]),
        bundles: vec![bundle.clone()],
        signing: PackSigning::Sidecar(sidecar),
        packed_at: Some("2026-12-01T00:00:00Z".into()),
        ..PackOptions::new("my-plugin", "1.0.0")
    };
    let a = pack(wasm, opts).expect("pack").artefact;
    // Unsigned, the list could point a guard at any blob in the store.
    refused(&a, &format!("bundles ({bundle})"));
    let signed = sign_artefact(&a, &key(1)).unwrap();
    let p = verify_artefact(&signed, "my-plugin.tar.gz", &opts_trusting(&key(1))).unwrap();
    assert_eq!(p.bundles, vec![bundle]);
}

#[test]
fn attack_a_raw_signature_cannot_move_a_module_to_another_declared_name_or_version() {
    // A raw (HeliosProxy) signature binds only the bytes; the module's own declaration of its name
    // and version is inside those bytes, so a manifest that contradicts it is refused.
    let wasm = sdk_module(&["pre_query"], &["pre_query"], "my-plugin", "1.0.0");
    for (name, version, needle) in [
        ("other-plugin", "1.0.0", "name \"other-plugin\" differs from the \"my-plugin\""),
        ("my-plugin", "9.9.9", "version \"9.9.9\" differs from the \"1.0.0\""),
    ] {
        let opts = PackOptions {
            hooks: Some(vec![Hook::PreQuery]),
            signing: PackSigning::RawKey(Box::new(key(1))),
            ..PackOptions::new(name, version)
        };
        let a = pack(wasm.clone(), opts).unwrap().artefact;
        let e = verify_artefact(&a, "a.tar.gz", &opts_trusting(&key(1))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SignatureMissing, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn a_raw_signature_by_an_untrusted_key_or_over_other_bytes_is_refused() {
    let wasm = plugin_wasm(&["pre_query"]);
    let opts = |k| PackOptions {
        hooks: Some(vec![Hook::PreQuery]),
        signing: PackSigning::RawKey(Box::new(k)),
        ..PackOptions::new("my-plugin", "1.0.0")
    };
    let a = pack(wasm.clone(), opts(key(2))).unwrap().artefact;
    let e = verify_artefact(&a, "a.tar.gz", &opts_trusting(&key(1))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignerUntrusted, "{e}");
    assert!(e.to_string().contains("verifies under none of the 1 key(s)"), "{e}");
    // The signature of another module, with the manifest's signature_sha256 fixed up to match it.
    let good = pack(wasm, opts(key(1))).unwrap().artefact;
    let other_sig = sign_module_raw(&key(1), &plugin_wasm(&["route"]));
    let m = String::from_utf8(good.manifest.clone()).unwrap().replace(
        &helios_plugin_artefact::signing::sha256_hex(good.sidecar.as_ref().unwrap()),
        &helios_plugin_artefact::signing::sha256_hex(&other_sig),
    );
    let swapped = Artefact { manifest: m.into_bytes(), sidecar: Some(other_sig), ..good };
    let e = verify_artefact(&swapped, "a.tar.gz", &opts_trusting(&key(1))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignerUntrusted, "{e}");
}

#[test]
fn a_guard_artefact_declares_evaluate_and_verifies() {
    let guard = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "evaluate") (param i32 i32) (result i32) i32.const 0))"#,
    )
    .unwrap();
    let sidecar = sidecar_bytes(&sign_module(&key(1), &guard, "g", "1.0.0"));
    let opts = PackOptions {
        hooks: Some(vec![]),
        guard: Some(true),
        signing: PackSigning::Sidecar(sidecar),
        ..PackOptions::new("g", "1.0.0")
    };
    let a = pack(guard.clone(), opts).unwrap().artefact;
    assert!(String::from_utf8_lossy(&a.manifest).contains("\"evaluate\""));
    let p = verify_artefact(&a, "g.tar.gz", &opts_trusting(&key(1))).unwrap();
    assert!(p.guard && p.hooks.is_empty());
    // Packing a hook plugin as a guard names the missing export.
    let e =
        pack(plugin_wasm(&["pre_query"]), PackOptions { guard: Some(true), ..PackOptions::new("g", "1") }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HookNotExported, "{e}");
    assert!(e.to_string().contains(helios_plugin_schema::abi::EVALUATE), "{e}");
}
