//! `source = "oci://…"` in proxy.toml against a real registry (Debian's `docker-registry` on a
//! loopback port): a tag pulls into the content-addressed cache and verifies like any artefact; a
//! pinned digest loads offline from the cache; a tag needs the registry and its failure names it; a
//! cached artefact that was tampered with fails verification.

use std::path::{Path, PathBuf};

use helios_plugin_artefact::{PackOptions, PackSigning, keys, pack, save_artefact};
use helios_plugin_host::{Runtime, RuntimeConfig};
use helios_plugin_loader::PluginsConfig;
use helios_plugin_oci::{OciRef, Options, testing::LoopbackRegistry};
use helios_plugin_schema::{PreQueryResult, QueryContext};

/// Blocks every statement with "blocked from oci".
const BLOCKER: &str = r#"(module
    (@custom "helios.plugin" "sdk=0.1.0\nname=blocker\nversion=1.0.0\nhook=pre_query\n")
    (memory (export "memory") 1)
    (data (i32.const 1024) "{\"kind\":\"block\",\"reason\":\"blocked from oci\"}")
    (func (export "alloc") (param i32) (result i32) i32.const 4096)
    (func (export "dealloc") (param i32 i32))
    (func (export "pre_query") (param i32 i32) (result i64)
        (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 44))))"#;

struct Fixture {
    dir: tempfile::TempDir,
    registry: LoopbackRegistry,
    /// `sha256:…` of the pushed manifest.
    digest: String,
}

impl Fixture {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn tag(&self) -> String {
        format!("oci://{}/plugins/blocker:1.0.0", self.registry.addr)
    }

    fn pinned(&self) -> String {
        format!("oci://{}/plugins/blocker@{}", self.registry.addr, self.digest)
    }

    /// `proxy.toml` with one plugin from `source`, verified with `trusted/`.
    fn config(&self, source: &str) -> PathBuf {
        let path = self.path("proxy.toml");
        std::fs::write(
            &path,
            format!(
                "[[plugins]]\nname = \"blocker\"\nsource = \"{source}\"\nverify_with = \"trusted\"\nhooks = [\"pre_query\"]\n"
            ),
        )
        .unwrap();
        path
    }

    fn cache(&self) -> PathBuf {
        self.path("oci-cache")
    }
}

/// A signed `blocker` 1.0.0 artefact pushed to a fresh loopback registry, its key in `trusted/`.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = keys::generate_signing_key().unwrap();
    std::fs::create_dir(dir.path().join("trusted")).unwrap();
    std::fs::write(dir.path().join("trusted/ops.pub"), keys::public_key_base64(&key.verifying_key())).unwrap();
    let file = dir.path().join("blocker-1.0.0.tar.gz");
    signed_blocker(key, &file);
    let reg_dir = dir.path().join("registry");
    std::fs::create_dir(&reg_dir).unwrap();
    let registry = LoopbackRegistry::start(&reg_dir).unwrap_or_else(|e| panic!("registry: {e}"));
    let r = OciRef::parse(&format!("oci://{}/plugins/blocker:1.0.0", registry.addr)).unwrap();
    let opts = Options { plain_http: true, ..Options::default() };
    let pushed = helios_plugin_oci::push(&std::fs::read(&file).unwrap(), "blocker-1.0.0.tar.gz", &r, &opts).unwrap();
    Fixture { dir, registry, digest: pushed.manifest_digest }
}

/// Packs the blocker signed with `key` into `file`.
fn signed_blocker(key: ed25519_dalek::SigningKey, file: &Path) {
    let opts = PackOptions { signing: PackSigning::Key(Box::new(key)), ..PackOptions::new("blocker", "1.0.0") };
    let packed = pack(wat::parse_str(BLOCKER).unwrap(), opts).unwrap();
    save_artefact(&packed.artefact, file).unwrap();
}

/// Loads `config` with OCI sources pulled into `cache`; on success checks that the plugin blocks.
fn load(config: &Path, cache: &Path) -> Result<(), String> {
    let mut cfg = PluginsConfig::load(config).map_err(|e| e.to_string())?;
    cfg.oci_cache = Some(cache.to_path_buf());
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let chain = cfg.build_chain(&runtime).map_err(|e| e.to_string())?;
    let out = chain.pre_query(&QueryContext { query: "DROP TABLE t".into(), ..Default::default() });
    assert_eq!(out.result, PreQueryResult::Block { reason: "blocked from oci".into() });
    Ok(())
}

#[test]
fn a_tag_pulls_into_the_content_addressed_cache_verifies_and_serves() {
    let f = fixture();
    load(&f.config(&f.tag()), &f.cache()).unwrap_or_else(|e| panic!("{e}\n{}", f.registry.log()));
    let hex = f.digest.strip_prefix("sha256:").unwrap();
    let cached = f.cache().join("sha256").join(format!("{hex}.tar.gz"));
    assert_eq!(std::fs::read(&cached).unwrap(), std::fs::read(f.path("blocker-1.0.0.tar.gz")).unwrap());
    // The pinned digest of the same artefact loads too (from the cache now).
    load(&f.config(&f.pinned()), &f.cache()).unwrap();
}

#[test]
fn a_pinned_digest_loads_offline_from_the_cache_and_a_tag_then_fails_naming_the_registry() {
    let mut f = fixture();
    load(&f.config(&f.pinned()), &f.cache()).unwrap_or_else(|e| panic!("{e}\n{}", f.registry.log()));
    f.registry.stop();
    load(&f.config(&f.pinned()), &f.cache()).expect("a cached pinned digest needs no registry");
    let e = load(&f.config(&f.tag()), &f.cache()).unwrap_err();
    for needle in ["proxy.toml", "plugins[0] (blocker)", "source", "E_OCI_REGISTRY", &f.registry.addr, "pin a digest"] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    // A digest that was never pulled, with the registry down: the registry is named too.
    let other = f.path("empty-cache");
    let e = load(&f.config(&f.pinned()), &other).unwrap_err();
    assert!(e.contains("E_OCI_REGISTRY") && e.contains(&f.registry.addr), "{e}");
}

#[test]
fn a_cached_artefact_that_was_swapped_fails_verification_before_anything_is_compiled() {
    let f = fixture();
    load(&f.config(&f.pinned()), &f.cache()).unwrap_or_else(|e| panic!("{e}\n{}", f.registry.log()));
    // Someone with write access to the cache replaces the entry with the same plugin signed by an
    // untrusted key: the pinned digest still hits the cache, and verification refuses it.
    let hex = f.digest.strip_prefix("sha256:").unwrap();
    let cached = f.cache().join("sha256").join(format!("{hex}.tar.gz"));
    signed_blocker(keys::generate_signing_key().unwrap(), &cached);
    let e = load(&f.config(&f.pinned()), &f.cache()).unwrap_err();
    assert!(e.contains("plugins[0] (blocker)") && e.contains("E_SIGNER_UNTRUSTED"), "{e}");
    // Bytes that are not an artefact at all are refused the same way.
    std::fs::write(&cached, b"not an artefact").unwrap();
    let e = load(&f.config(&f.pinned()), &f.cache()).unwrap_err();
    assert!(e.contains("plugins[0] (blocker)") && e.contains("E_"), "{e}");
}
