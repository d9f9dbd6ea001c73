//! The compiled-module cache on disk: `Module::serialize` output kept under a directory so a restart
//! loads plugins without recompiling them (see `RuntimeConfig::module_cache_dir`).
//!
//! One entry per (module bytes, engine settings), named by the SHA-256 of the engine's
//! `precompile_compatibility_hash` and of the module's own SHA-256, so an entry compiled with other
//! settings (fuel, stack size, wasmtime version, CPU features) is never even opened. An entry is two
//! files:
//!
//! - `<key>.cwasm`: exactly the bytes `Module::serialize` returned (wasmtime's ELF image), so that
//!   wasmtime can **map** it (`Module::deserialize_open_file`: the code pages come from the page
//!   cache, nothing is copied, and data segments are mapped copy-on-write from the file);
//! - `<key>.blake3`: its integrity record, [`MAGIC`] then the `.cwasm`'s length (u64, little
//!   endian) then its BLAKE3 digest (48 bytes).
//!
//! A lookup opens the `.cwasm` once, checks its length against the record, hashes its bytes with
//! BLAKE3 (SIMD, ~4× the speed of SHA-256 here) and hands **that open file** to wasmtime, which maps
//! the same inode it just hashed (a rename of another entry into place meanwhile does not change
//! what is mapped). A missing or foreign record (an entry written by the format before this one,
//! which kept a SHA-256 header inside the file, or a write that stopped between its two renames), a
//! length or digest that does not match, or an image wasmtime refuses, is ignored with a warning
//! naming the plugin and the file; the module is compiled from its wasm and the entry rewritten
//! (both files written to temporary names, synced, then renamed: `.cwasm` first, record last).
//!
//! **What the check catches:** a torn or unfinished write, a truncated or extended file, bit rot
//! anywhere in the file, a file from another tool or another module, an entry of the old format.
//! **What it does not:** it is not a signature — whoever can write the cache directory can run code
//! in the host, exactly like whoever can write the host's binary: keep the directory owned by, and
//! writable only by, the host's user (the plugin's signature is checked on the wasm before the cache
//! is consulted). And since the file is mapped, not copied, a change made *in place* to a `.cwasm`
//! after the check (not a rename, which is how this cache and ordinary tools replace files) is
//! seen by the loaded module: pages not yet read come from the changed file, and a truncation
//! faults the process (SIGBUS) when it touches a page past the new end. The old format's
//! copy-and-check gave a snapshot; mapping trades that for not copying ~41 MiB of machine code on
//! every start of the first-party plugins (see BENCHMARKS.md).

use std::{
    fs::File,
    hash::{Hash, Hasher},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// First bytes of every integrity record (format version 2: the `.cwasm` is wasmtime's image
/// alone, mapped; version 1 kept a SHA-256 header in front of the image and was copied).
pub(crate) const MAGIC: &[u8; 8] = b"HPMODC02";
/// A record: `MAGIC`, the image's length (u64 LE), its BLAKE3 digest.
const RECORD_LEN: usize = MAGIC.len() + 8 + 32;
/// Bytes hashed per read: large enough for BLAKE3's widest SIMD path, small enough for L2.
const HASH_CHUNK: usize = 256 << 10;

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

/// The integrity record of an image of `len` bytes with BLAKE3 `digest`.
fn record(len: u64, digest: &blake3::Hash) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[..MAGIC.len()].copy_from_slice(MAGIC);
    r[MAGIC.len()..MAGIC.len() + 8].copy_from_slice(&len.to_le_bytes());
    r[MAGIC.len() + 8..].copy_from_slice(digest.as_bytes());
    r
}

/// Temporary files of concurrent writers (threads of one process loading in parallel, or other
/// processes) never share a name.
fn temporary(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}-{n}", std::process::id()));
    path.with_file_name(name)
}

impl ModuleCache {
    pub fn new(dir: &Path, engine: &Engine) -> ModuleCache {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        ModuleCache { dir: dir.to_path_buf(), engine_key: h.0.finalize().into() }
    }

    /// The entry's image path for a module with SHA-256 `module_sha256`.
    pub fn path(&self, module_sha256: &[u8; 32]) -> PathBuf {
        let mut h = Sha256::new();
        h.update(b"helios-plugin module cache v1\0");
        h.update(self.engine_key);
        h.update(module_sha256);
        self.dir.join(format!("{}.cwasm", hex::encode(h.finalize())))
    }

    /// The entry's integrity record path, next to its image.
    pub fn record_path(&self, module_sha256: &[u8; 32]) -> PathBuf {
        self.path(module_sha256).with_extension("blake3")
    }

    pub fn get(&self, engine: &Engine, plugin: &str, module_sha256: &[u8; 32]) -> Lookup {
        let path = self.path(module_sha256);
        let record_path = self.record_path(module_sha256);
        let shown = path.display();
        let ignored = |why: std::fmt::Arguments<'_>| {
            tracing::warn!(plugin, path = %shown, "module cache entry ignored: {why}; compiling");
            Lookup::Rejected
        };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return ignored(format_args!("cannot open it: {e}")),
        };
        let stored = match std::fs::read(&record_path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return ignored(format_args!(
                    "its integrity record {} is missing (an entry of an older format, or a write that did not finish)",
                    record_path.display()
                ));
            }
            Err(e) => return ignored(format_args!("cannot read its integrity record {}: {e}", record_path.display())),
        };
        if stored.len() != RECORD_LEN || &stored[..MAGIC.len()] != MAGIC {
            return ignored(format_args!(
                "its integrity record {} is not a {RECORD_LEN}-byte {MAGIC:?} record",
                record_path.display()
            ));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&stored[MAGIC.len()..MAGIC.len() + 8]);
        let expected_len = u64::from_le_bytes(len_bytes);
        match file.metadata() {
            Ok(m) if m.len() == expected_len => {}
            Ok(m) => {
                return ignored(format_args!(
                    "it is {} bytes, its integrity record says {expected_len} (truncated, extended or replaced)",
                    m.len()
                ));
            }
            Err(e) => return ignored(format_args!("cannot stat it: {e}")),
        }
        let (found, hashed) = match blake3_of(&mut file) {
            Ok(v) => v,
            Err(e) => return ignored(format_args!("cannot read it: {e}")),
        };
        if hashed != expected_len || found.as_bytes()[..] != stored[MAGIC.len() + 8..] {
            tracing::warn!(
                plugin,
                path = %shown,
                expected = %hex::encode(&stored[MAGIC.len() + 8..]),
                found = %found.to_hex(),
                "module cache entry ignored: its BLAKE3 digest does not match its integrity record; compiling"
            );
            return Lookup::Rejected;
        }
        // SAFETY: `Module::deserialize_open_file` trusts the file to be `Module::serialize` output of
        // a compatible engine, and to stay unchanged while the module lives (it is mapped). `file`
        // is the open file whose every byte was just hashed and matched the BLAKE3 digest this cache
        // wrote next to the output of `Module::serialize` (see `put`); wasmtime maps this same
        // inode, so a rename of another file into place does not change what is mapped, and this
        // cache never writes into an existing entry (it writes a new file and renames it). The file
        // name binds the engine's compatibility hash, and wasmtime checks its own header (version,
        // target, settings) again and returns an error, not UB, on a mismatch. What remains trusted
        // is the directory itself: nobody but the host's user may change a file in place (module
        // docs, and `RuntimeConfig::module_cache_dir`).
        match unsafe { Module::deserialize_open_file(engine, file) } {
            Ok(m) => Lookup::Hit(m),
            Err(e) => {
                tracing::warn!(plugin, path = %shown, error = %format!("{e:#}"), "module cache entry refused by wasmtime; compiling");
                Lookup::Rejected
            }
        }
    }

    /// Writes the entry for `module`: the image and then its integrity record, each to a temporary
    /// file that is synced and renamed into place. A reader between the two renames sees a record
    /// that does not match and compiles. Failures are logged and otherwise ignored: the cache only
    /// ever saves time.
    pub fn put(&self, plugin: &str, module_sha256: &[u8; 32], module: &Module) {
        let path = self.path(module_sha256);
        let record_path = self.record_path(module_sha256);
        let write = |to: &Path, bytes: &[u8]| -> Result<PathBuf, String> {
            let tmp = temporary(to);
            let mut f = File::create(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
            f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("write {}: {e}", tmp.display())
            })?;
            Ok(tmp)
        };
        let rename = |tmp: &Path, to: &Path| {
            std::fs::rename(tmp, to).map_err(|e| {
                let _ = std::fs::remove_file(tmp);
                format!("rename {} to {}: {e}", tmp.display(), to.display())
            })
        };
        let result = (|| -> Result<(), String> {
            let image = module.serialize().map_err(|e| format!("serialize: {e:#}"))?;
            std::fs::create_dir_all(&self.dir).map_err(|e| format!("create {}: {e}", self.dir.display()))?;
            let rec = record(image.len() as u64, &blake3::hash(&image));
            let image_tmp = write(&path, &image)?;
            let record_tmp = write(&record_path, &rec).inspect_err(|_| {
                let _ = std::fs::remove_file(&image_tmp);
            })?;
            rename(&image_tmp, &path).inspect_err(|_| {
                let _ = std::fs::remove_file(&record_tmp);
            })?;
            rename(&record_tmp, &record_path)
        })();
        if let Err(e) = result {
            tracing::warn!(plugin, path = %path.display(), error = %e, "cannot write the module cache entry");
        }
    }
}

/// BLAKE3 of everything `file` holds from its current position, and how many bytes that was.
fn blake3_of(file: &mut File) -> std::io::Result<(blake3::Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize(), total))
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

    /// Another module of the same shape (another deny reason of the same length): its image is a
    /// well-formed wasmtime file of the same engine and, here, of the same length, just not the
    /// one an entry's record describes.
    fn other_module() -> String {
        DENY_ALL.replace("cached", "second")
    }

    fn runtime(dir: &Path) -> Runtime {
        Runtime::new(RuntimeConfig::default().module_cache_dir(dir)).expect("runtime")
    }

    fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == ext)))
            .map(Iterator::collect)
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The one image in `dir` (after one module was cached).
    fn image(dir: &Path) -> PathBuf {
        let mut v = files(dir, "cwasm");
        assert_eq!(v.len(), 1, "one image: {v:?}");
        v.pop().expect("an image")
    }

    fn denies_with_cached_reason(rt: &Runtime) -> bool {
        let p = rt.load(DENY_ALL.as_bytes(), PluginConfig::new("cached-guard")).expect("load");
        let v = p.evaluate(&GuardRequest { tool_name: "ls".into(), ..Default::default() });
        v == helios_plugin_schema::GuardVerdict::deny("cached")
    }

    fn sha(wat: &str) -> [u8; 32] {
        Sha256::digest(wat::parse_str(wat).expect("wat")).into()
    }

    fn wasm_sha() -> [u8; 32] {
        sha(DENY_ALL)
    }

    fn lookup(rt: &Runtime, dir: &Path) -> Lookup {
        ModuleCache::new(dir, &rt.inner.engine).get(&rt.inner.engine, "cached-guard", &wasm_sha())
    }

    #[test]
    fn a_second_runtime_loads_the_module_from_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(denies_with_cached_reason(&runtime(dir.path())));
        let img = image(dir.path());
        let records = files(dir.path(), "blake3");
        assert_eq!(records, vec![img.with_extension("blake3")], "one record next to the image");
        let rt = runtime(dir.path());
        assert!(matches!(lookup(&rt, dir.path()), Lookup::Hit(_)));
        assert!(denies_with_cached_reason(&rt));
        // The image is wasmtime's own file, nothing in front of it: plain wasmtime maps it too.
        // SAFETY: the file was written by `put` from `Module::serialize` of this engine's settings.
        let m = unsafe { Module::deserialize_file(&rt.inner.engine, &img) }.expect("wasmtime reads the image as is");
        assert!(m.get_export(helios_plugin_schema::abi::EVALUATE).is_some());
        let rec = std::fs::read(img.with_extension("blake3")).expect("record");
        let bytes = std::fs::read(&img).expect("image");
        assert_eq!(rec, record(bytes.len() as u64, &blake3::hash(&bytes)));
    }

    #[test]
    fn a_tampered_cache_entry_is_ignored_recompiled_and_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(denies_with_cached_reason(&runtime(dir.path())));
        let path = image(dir.path());
        let good = std::fs::read(&path).expect("read");
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        std::fs::write(&path, &bad).expect("write");

        let rt = runtime(dir.path());
        assert!(matches!(lookup(&rt, dir.path()), Lookup::Rejected));
        // The load still works (compiled from the wasm) and the entry is valid again.
        assert!(denies_with_cached_reason(&rt));
        assert_eq!(std::fs::read(&path).expect("read"), good);
        assert!(matches!(lookup(&rt, dir.path()), Lookup::Hit(_)));
    }

    #[test]
    fn a_truncated_or_foreign_entry_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(denies_with_cached_reason(&runtime(dir.path())));
        let path = image(dir.path());
        let record_path = path.with_extension("blake3");
        let good_record = std::fs::read(&record_path).expect("record");
        let rt = runtime(dir.path());
        for junk in [&b"HPMODC02short"[..], &b"not a cache entry at all, but long enough to hold a header"[..]] {
            std::fs::write(&path, junk).expect("write");
            assert!(matches!(lookup(&rt, dir.path()), Lookup::Rejected));
        }
        // A record that is not one (another tool's file, or cut short) is refused before the image
        // is read.
        assert!(denies_with_cached_reason(&rt));
        for junk in [&good_record[..20], &b"HPMODC99-and-forty-more-bytes-of-something-else"[..]] {
            std::fs::write(&record_path, junk).expect("write");
            assert!(matches!(lookup(&rt, dir.path()), Lookup::Rejected));
        }
        assert!(denies_with_cached_reason(&rt));
        assert!(matches!(lookup(&rt, dir.path()), Lookup::Hit(_)), "rewritten");
    }

    /// The format before this one kept a SHA-256 header inside the `.cwasm` and had no record: such
    /// an entry is never handed to wasmtime, and the load rewrites it in the new format.
    #[test]
    fn an_entry_of_the_old_format_is_ignored_and_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(denies_with_cached_reason(&runtime(dir.path())));
        let path = image(dir.path());
        let record_path = path.with_extension("blake3");
        let payload = std::fs::read(&path).expect("image");
        let mut old = b"HPMODC01".to_vec();
        old.extend_from_slice(&Sha256::digest(&payload));
        old.extend_from_slice(&payload);
        std::fs::write(&path, &old).expect("write");
        std::fs::remove_file(&record_path).expect("remove the record");

        let rt = runtime(dir.path());
        assert!(matches!(lookup(&rt, dir.path()), Lookup::Rejected));
        assert!(denies_with_cached_reason(&rt));
        assert_eq!(std::fs::read(&path).expect("image"), payload, "rewritten as wasmtime's image alone");
        assert!(record_path.exists());
        assert!(matches!(lookup(&rt, dir.path()), Lookup::Hit(_)));
    }

    /// A write that stopped between its two renames leaves a valid wasmtime image of another
    /// module (or another build of it) beside the old record: the record does not match, so the
    /// image is never used for this module.
    #[test]
    fn a_valid_image_that_its_record_does_not_describe_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime(dir.path());
        assert!(denies_with_cached_reason(&rt));
        let path = image(dir.path());
        let other = other_module();
        rt.load(other.as_bytes(), PluginConfig::new("other-guard")).expect("load");
        let other_image = ModuleCache::new(dir.path(), &rt.inner.engine).path(&sha(&other));
        assert_ne!(other_image, path);
        std::fs::copy(&other_image, &path).expect("copy the other image over this one");

        let rt = runtime(dir.path());
        assert!(matches!(lookup(&rt, dir.path()), Lookup::Rejected), "another module's code must not run");
        assert!(denies_with_cached_reason(&rt));
        assert!(matches!(lookup(&rt, dir.path()), Lookup::Hit(_)));
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
        assert_eq!(files(dir.path(), "cwasm").len(), 2);
        assert_eq!(files(dir.path(), "blake3").len(), 2);
    }
}
