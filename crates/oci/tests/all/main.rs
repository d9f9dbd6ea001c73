//! Push and pull against a real registry (Debian's `docker-registry` on loopback, started by each
//! test), and interop with the `oras` Python SDK in both directions.

use std::path::Path;
use std::process::Command;

use helios_plugin_artefact::{PackOptions, PackSigning, UnpackLimits, unpack, verify_artefact};
use helios_plugin_oci::testing::LoopbackRegistry;
use helios_plugin_oci::{Cache, Error, OciRef, Options};

fn artefact_bytes() -> Vec<u8> {
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "alloc") (param i32) (result i32) i32.const 16)
             (func (export "dealloc") (param i32 i32))
             (func (export "pre_query") (param i32 i32) (result i64) i64.const 0))"#,
    )
    .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let opts = PackOptions {
        signing: PackSigning::Key(Box::new(key)),
        packed_at: Some("2026-12-01T00:00:00Z".into()),
        ..PackOptions::new("my-plugin", "1.0.0")
    };
    let a = helios_plugin_artefact::pack(wasm, opts).unwrap().artefact;
    let mut out = Vec::new();
    helios_plugin_artefact::archive::write_artefact(&a, &mut out).unwrap();
    out
}

fn plain() -> Options {
    Options { plain_http: true, ..Options::default() }
}

fn oras(script: &str, args: &[&str]) {
    let out = Command::new("python3").arg("-c").arg(script).args(args).output().expect("python3");
    assert!(
        out.status.success(),
        "oras (python) failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const ORAS_PUSH: &str = r#"
import os, sys, oras.client
host, target, path = sys.argv[1:4]
os.chdir(os.path.dirname(path))
oras.client.OrasClient(hostname=host, insecure=True).push(files=[os.path.basename(path)], target=target)
"#;

const ORAS_PULL: &str = r#"
import sys, oras.client
host, target, outdir = sys.argv[1:4]
print(oras.client.OrasClient(hostname=host, insecure=True).pull(target=target, outdir=outdir))
"#;

fn registry(dir: &Path) -> LoopbackRegistry {
    LoopbackRegistry::start(dir).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn push_then_pull_by_tag_and_by_digest_returns_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let bytes = artefact_bytes();
    let r = OciRef::parse(&format!("oci://{}/my-org/my-plugin:1.0.0", reg.addr)).unwrap();
    let pushed = helios_plugin_oci::push(&bytes, "my-plugin-1.0.0.tar.gz", &r, &plain()).unwrap();
    let pulled = helios_plugin_oci::pull(&r, &plain()).unwrap();
    assert_eq!(pulled.bytes, bytes);
    assert_eq!(pulled.manifest_digest, pushed.manifest_digest);
    assert_eq!(pulled.title.as_deref(), Some("my-plugin-1.0.0.tar.gz"));
    let pinned = OciRef::parse(&format!("oci://{}/my-org/my-plugin@{}", reg.addr, pushed.manifest_digest)).unwrap();
    assert_eq!(helios_plugin_oci::pull(&pinned, &plain()).unwrap().bytes, bytes);
    // HTTPS against a plain-HTTP registry fails and names the registry.
    let e = helios_plugin_oci::pull(&r, &Options::default()).unwrap_err();
    assert!(matches!(e, Error::Registry { .. }) && e.to_string().contains(&reg.addr), "{e}");
}

#[test]
fn a_pinned_digest_loads_offline_from_the_cache_and_a_tag_needs_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = registry(&dir.path().join("registry"));
    let cache = Cache::new(dir.path().join("cache"));
    let bytes = artefact_bytes();
    let tag = OciRef::parse(&format!("oci://{}/my-org/my-plugin:1.0.0", reg.addr)).unwrap();
    let pushed = helios_plugin_oci::push(&bytes, "my-plugin-1.0.0.tar.gz", &tag, &plain()).unwrap();
    let pinned = OciRef::parse(&format!("oci://{}/my-org/my-plugin@{}", reg.addr, pushed.manifest_digest)).unwrap();

    let first = cache.fetch(&pinned, &plain()).unwrap();
    assert!(!first.from_cache);
    assert_eq!(std::fs::read(&first.path).unwrap(), bytes);
    assert!(
        first.path.ends_with(format!("sha256/{}.tar.gz", &pushed.manifest_digest[7..])),
        "{}",
        first.path.display()
    );

    reg.stop();
    let again = cache.fetch(&pinned, &plain()).unwrap();
    assert!(again.from_cache, "the registry is down: the pinned digest must come from the cache");
    assert_eq!(std::fs::read(&again.path).unwrap(), bytes);
    let e = cache.fetch(&tag, &plain()).unwrap_err();
    assert!(matches!(e, Error::Registry { .. }), "{e}");
    assert!(e.to_string().contains(&reg.addr) && e.to_string().contains("my-plugin:1.0.0"), "{e}");
}

#[test]
fn a_pin_that_does_not_match_the_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let r = OciRef::parse(&format!("oci://{}/p:1", reg.addr)).unwrap();
    helios_plugin_oci::push(&artefact_bytes(), "p.tar.gz", &r, &plain()).unwrap();
    let wrong = OciRef::parse(&format!("oci://{}/p@sha256:{}", reg.addr, "0".repeat(64))).unwrap();
    let e = helios_plugin_oci::pull(&wrong, &plain()).unwrap_err();
    assert!(e.to_string().contains(&"0".repeat(64)), "{e}");
}

#[test]
fn an_artefact_pushed_by_oras_pulls_here_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&dir.path().join("registry"));
    let file = dir.path().join("my-plugin-1.0.0.tar.gz");
    let bytes = artefact_bytes();
    std::fs::write(&file, &bytes).unwrap();
    let target = format!("{}/my-org/my-plugin:1.0.0", reg.addr);
    oras(ORAS_PUSH, &[&reg.addr, &target, file.to_str().unwrap()]);

    let pulled = helios_plugin_oci::pull(&OciRef::parse(&format!("oci://{target}")).unwrap(), &plain())
        .unwrap_or_else(|e| panic!("{e}\n{}", reg.log()));
    assert_eq!(pulled.bytes, bytes);
    assert_eq!(pulled.title.as_deref(), Some("my-plugin-1.0.0.tar.gz"));
    let a = unpack(pulled.bytes.as_slice(), "pulled", &UnpackLimits::default()).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let root = helios_plugin_artefact::TrustRoot::from_keys([("release".to_string(), key.verifying_key())]);
    let p = verify_artefact(&a, "pulled", &helios_plugin_artefact::VerifyOptions::default().trust_root(root)).unwrap();
    assert_eq!(p.name, "my-plugin");
}

#[test]
fn an_artefact_pushed_here_pulls_with_oras() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&dir.path().join("registry"));
    let bytes = artefact_bytes();
    let target = format!("{}/my-org/my-plugin:1.0.0", reg.addr);
    helios_plugin_oci::push(&bytes, "my-plugin-1.0.0.tar.gz", &OciRef::parse(&target).unwrap(), &plain()).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    oras(ORAS_PULL, &[&reg.addr, &target, out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("my-plugin-1.0.0.tar.gz")).unwrap(), bytes);
}
