//! The compiled-module cache on disk: `Module::serialize` output kept under a directory so a restart
//! loads plugins without recompiling them (see `RuntimeConfig::module_cache_dir`).
//!
//! One file per (module bytes, engine settings): its name is the SHA-256 of the engine's
//! `precompile_compatibility_hash` and of the module's own SHA-256, so an entry compiled with other
//! settings (fuel, stack size, wasmtime version, CPU features) is never even opened. A file is
//! `MAGIC`, then the SHA-256 of the payload, then the payload. The digest is checked on the bytes in
//! memory, and exactly those bytes are handed to `Module::deserialize`; an entry that is short, has
//! another magic, or whose digest does not match is ignored (a warning names it), the module is
//! compiled from its wasm, and the entry is rewritten.
//!
//! **Trust:** the digest catches a torn write, a truncated file, bit rot, or a file from another tool;
//! it is not a signature. Whoever can write the cache directory can run code in the host, exactly like
//! whoever can write the host's binary: keep the directory owned by, and writable only by, the host's
//! user (the plugin's signature is checked on the wasm before the cache is consulted).

use std::{
    hash::{Hash, Hasher},
    io::Write,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// First bytes of every cache entry (format version 1).
const MAGIC: &[u8; 8] = b"HPMODC01";
const HEADER: usize = MAGIC.len() + 32;

/// Feeds `Hash` output into SHA-256 so the engine's compatibility hash is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        // Never asked for: only the SHA-256 state is read.
        0
    }
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    Hit(Module),
    Miss,
    /// An entry was there but not usable; the reason is in the warning already logged.
    Rejected,
}

#[derive(Debug)]
pub(crate) struct ModuleCache {
    dir: PathBuf,
    /// SHA-256 of the engine's compatibility hash.
    engine_key: [u8; 32],
}

impl ModuleCache {
    pub fn new(dir: &Path, engine: &Engine) -> ModuleCache {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        ModuleCache { dir: dir.to_path_buf(), engine_key: h.0.finalize().into() }
    }

    /// The entry's path for a module with SHA-256 `module_sha256`.
    pub fn path(&self, module_sha256: &[u8; 32]) -> PathBuf {
        let mut h = Sha256::new();
        h.update(b"helios-plugin module cache v1\0");
        h.update(self.engine_key);
        h.update(module_sha256);
        self.dir.join(format!("{}.cwasm", hex::encode(h.finalize())))
    }

    pub fn get(&self, engine: &Engine, plugin: &str, module_sha256: &[u8; 32]) -> Lookup {
        let path = self.path(module_sha256);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => {
                tracing::warn!(plugin, path = %path.display(), error = %e, "module cache entry unreadable; compiling");
                return Lookup::Rejected;
            }
        };
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            tracing::warn!(plugin, path = %path.display(), "module cache entry ignored: expected the {MAGIC:?} header, found something else; compiling");
            return Lookup::Rejected;
        }
        let (stored, payload) = bytes[MAGIC.len()..].split_at(32);
        let found: [u8; 32] = Sha256::digest(payload).into();
        if stored != found {
            tracing::warn!(
                plugin,
                path = %path.display(),
                expected = %hex::encode(stored),
                found = %hex::encode(found),
                "module cache entry ignored: its SHA-256 does not match; compiling"
            );
            return Lookup::Rejected;
        }
        // SAFETY: `Module::deserialize` trusts its input to be `Module::serialize` output of a
        // compatible engine. `payload` is the very buffer whose SHA-256 was just checked against the
        // digest this cache wrote next to the output of `Module::serialize` (see `put`); it is not
        // re-read from disk, so it cannot change between the check and the use. The file name binds
        // the engine's compatibility hash, and wasmtime checks its own header (version, target,
        // settings) again and returns an error, not UB, on a mismatch. What remains trusted is the
        // directory itself, documented in the module docs and on `RuntimeConfig::module_cache_dir`.
        match unsafe { Module::deserialize(engine, payload) } {
            Ok(m) => Lookup::Hit(m),
            Err(e) => {
                tracing::warn!(plugin, path = %path.display(), error = %format!("{e:#}"), "module cache entry refused by wasmtime; compiling");
                Lookup::Rejected
            }
        }
    }

    /// Writes the entry for `module` (atomically: a temporary file renamed into place). Failures are
    /// logged and otherwise ignored: the cache only ever saves time.
    pub fn put(&self, plugin: &str, module_sha256: &[u8; 32], module: &Module) {
        let path = self.path(module_sha256);
        let result = (|| -> Result<(), String> {
            let payload = module.serialize().map_err(|e| format!("serialize: {e:#}"))?;
            std::fs::create_dir_all(&self.dir).map_err(|e| format!("create {}: {e}", self.dir.display()))?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut f = std::fs::File::create(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
            let digest: [u8; 32] = Sha256::digest(&payload).into();
            f.write_all(MAGIC)
                .and_then(|()| f.write_all(&digest))
                .and_then(|()| f.write_all(&payload))
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("write {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &path).map_err(|e| format!("rename {} to {}: {e}", tmp.display(), path.display()))
        })();
        if let Err(e) = result {
            tracing::warn!(plugin, path = %path.display(), error = %e, "cannot write the module cache entry");
        }
    }
}

#[cfg(test)]
mod tests {
    use helios_plugin_schema::GuardRequest;

    use super::*;
    use crate::{PluginConfig, Runtime, RuntimeConfig};

    /// A guard that denies everything, with a deny reason: enough to see the module really runs.
    const DENY_ALL: &str = r#"(module
        (memory (export "memory") 1)
        (data (i32.const 1024) "{\"reason\":\"cached\"}")
        (func (export "evaluate") (param i32 i32) (result i32) i32.const 1)
        (func (export "chio_deny_reason") (param i32 i32) (result i32)
            (memory.copy (local.get 0) (i32.const 1024) (i32.const 19))
            i32.const 19))"#;

    fn runtime(dir: &Path) -> Runtime {
        Runtime::new(RuntimeConfig::default().module_cache_dir(dir)).expect("runtime")
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(dir).map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
        v.sort();
        v
    }

    fn denies_with_cached_reason(rt: &Runtime) -> bool {
        let p = rt.load(DENY_ALL.as_bytes(), PluginConfig::new("cached-guard")).expect("load");
        let v = p.evaluate(&GuardRequest { tool_name: "ls".into(), ..Default::default() });
        v == helios_plugin_schema::GuardVerdict::deny("cached")
    }

    fn wasm_sha() -> [u8; 32] {
        Sha256::digest(wat::parse_str(DENY_ALL).expect("wat")).into()
    }

    #[test]
    fn a_second_runtime_loads_the_module_from_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(denies_with_cached_reason(&runtime(dir.path())));
        let files = entries(dir.path());
        assert_eq!(files.len(), 1, "one entry per module: {files:?}");
        let rt = runtime(dir.path());
        let cache = ModuleCache::new(dir.path(), &rt.inner.engine);
        assert!(matches!(cache.get(&rt.inner.engine, "cached-guard", &wasm_sha()), Lookup::Hit(_)));
        assert!(denies_with_cached_reason(&rt));
    }

    #[test]
    fn a_tampered_cache_entry_is_ignored_recompiled_and_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(denies_with_cached_reason(&runtime(dir.path())));
        let path = entries(dir.path()).pop().expect("an entry");
        let good = std::fs::read(&path).expect("read");
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        std::fs::write(&path, &bad).expect("write");

        let rt = runtime(dir.path());
        let cache = ModuleCache::new(dir.path(), &rt.inner.engine);
        assert!(matches!(cache.get(&rt.inner.engine, "cached-guard", &wasm_sha()), Lookup::Rejected));
        // The load still works (compiled from the wasm) and the entry is valid again.
        assert!(denies_with_cached_reason(&rt));
        assert_eq!(std::fs::read(&path).expect("read"), good);
        assert!(matches!(cache.get(&rt.inner.engine, "cached-guard", &wasm_sha()), Lookup::Hit(_)));
    }

    #[test]
    fn a_truncated_or_foreign_entry_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(denies_with_cached_reason(&runtime(dir.path())));
        let path = entries(dir.path()).pop().expect("an entry");
        let rt = runtime(dir.path());
        let cache = ModuleCache::new(dir.path(), &rt.inner.engine);
        for junk in [&b"HPMODC01short"[..], &b"not a cache entry at all, but long enough to hold a header"[..]] {
            std::fs::write(&path, junk).expect("write");
            assert!(matches!(cache.get(&rt.inner.engine, "cached-guard", &wasm_sha()), Lookup::Rejected));
        }
        assert!(denies_with_cached_reason(&rt));
    }

    #[test]
    fn an_engine_with_other_settings_uses_its_own_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metered = runtime(dir.path());
        let unmetered =
            Runtime::new(RuntimeConfig::default().fuel(false).module_cache_dir(dir.path())).expect("runtime");
        let a = ModuleCache::new(dir.path(), &metered.inner.engine).path(&wasm_sha());
        let b = ModuleCache::new(dir.path(), &unmetered.inner.engine).path(&wasm_sha());
        assert_ne!(a, b, "fuel metering changes the compiled code, so the key must differ");
        assert!(denies_with_cached_reason(&metered));
        assert!(denies_with_cached_reason(&unmetered));
        assert_eq!(entries(dir.path()).len(), 2);
    }
}
