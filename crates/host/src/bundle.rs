//! Content bundles: immutable blobs addressed by their SHA-256 ([`ContentId`]), kept in a
//! [`BundleStore`]. A guard reads the bundles its (signed) manifest declares, through the
//! `chio:guard/policy-context` resource or the `fetch-blob` import (see wit/README.md); hot reload
//! fetches new bundles into the same store.
//!
//! **Invariant:** bytes are only ever handed out under the digest they hash to. [`BundleStore::put`]
//! computes the id from the bytes; [`DirBundleStore::get`] hashes what it read again, and a mismatch
//! (a damaged or replaced file) is an error naming the id, never data.

use std::{
    fmt,
    io::Write,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use sha2::{Digest, Sha256};

/// The SHA-256 of a blob. Written (and parsed) as `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId(pub [u8; 32]);

impl ContentId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> ContentId {
        ContentId(Sha256::digest(bytes).into())
    }
    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

/// Why a string is not a [`ContentId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{found:?} is not a content id (expected \"sha256:\" and 64 lowercase hex digits)")]
pub struct ParseContentIdError {
    pub found: String,
}

impl FromStr for ContentId {
    type Err = ParseContentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseContentIdError { found: s.chars().take(80).collect() };
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        let mut id = [0u8; 32];
        hex::decode_to_slice(hex, &mut id).map_err(|_| bad())?;
        Ok(ContentId(id))
    }
}

impl serde::Serialize for ContentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ContentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a store could not hand out or take in a blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Reading or writing the blob failed.
    #[error("bundle {id}: {source}")]
    Io { id: ContentId, source: std::io::Error },
    /// The bytes stored under `expected` hash to `actual`.
    #[error("bundle {expected}: stored bytes hash to {actual} (damaged or replaced)")]
    DigestMismatch { expected: ContentId, actual: ContentId },
    /// The blob is larger than the store accepts.
    #[error("bundle {id}: {size} bytes, over the store's {limit}-byte cap")]
    TooLarge { id: ContentId, size: u64, limit: u64 },
    /// The store itself cannot be used (its root cannot be created, ...).
    #[error("bundle store {root}: {source}")]
    Store { root: String, source: std::io::Error },
}

/// Blobs by SHA-256. Shared by every plugin of a runtime (and by hot reload, which fills it).
pub trait BundleStore: Send + Sync + fmt::Debug {
    /// The blob `id`, or `None` when the store does not hold it. Implementations hand out only bytes
    /// that hash to `id`.
    fn get(&self, id: &ContentId) -> Result<Option<Arc<[u8]>>, BundleError>;
    /// Stores `bytes` under their digest (computed here, on entry) and returns it.
    fn put(&self, bytes: &[u8]) -> Result<ContentId, BundleError>;
}

/// Largest blob a [`DirBundleStore`] accepts. Default: 64 MiB.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// A directory of blobs: `<root>/sha256/<64 hex>`. Writes go to a temporary file renamed into
/// place, so a reader never sees half a blob; every `get` hashes the file again.
#[derive(Debug, Clone)]
pub struct DirBundleStore {
    root: PathBuf,
    max_bytes: u64,
}

impl DirBundleStore {
    /// A store under `root` (created on first `put`), accepting blobs up to
    /// [`DEFAULT_MAX_BUNDLE_BYTES`].
    pub fn new(root: impl AsRef<Path>) -> DirBundleStore {
        DirBundleStore { root: root.as_ref().to_path_buf(), max_bytes: DEFAULT_MAX_BUNDLE_BYTES }
    }
    /// Largest blob accepted by `put` and read by `get`. Default: [`DEFAULT_MAX_BUNDLE_BYTES`].
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }
    /// Where blob `id` lives.
    pub fn path_of(&self, id: &ContentId) -> PathBuf {
        self.root.join("sha256").join(id.hex())
    }
}

impl BundleStore for DirBundleStore {
    fn get(&self, id: &ContentId) -> Result<Option<Arc<[u8]>>, BundleError> {
        let path = self.path_of(id);
        let io = |source| BundleError::Io { id: *id, source };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if meta.len() > self.max_bytes {
            return Err(BundleError::TooLarge { id: *id, size: meta.len(), limit: self.max_bytes });
        }
        let bytes = std::fs::read(&path).map_err(io)?;
        let actual = ContentId::of(&bytes);
        if actual != *id {
            return Err(BundleError::DigestMismatch { expected: *id, actual });
        }
        Ok(Some(Arc::from(bytes)))
    }

    fn put(&self, bytes: &[u8]) -> Result<ContentId, BundleError> {
        let id = ContentId::of(bytes);
        if bytes.len() as u64 > self.max_bytes {
            return Err(BundleError::TooLarge { id, size: bytes.len() as u64, limit: self.max_bytes });
        }
        let dir = self.root.join("sha256");
        std::fs::create_dir_all(&dir)
            .map_err(|source| BundleError::Store { root: self.root.display().to_string(), source })?;
        let path = self.path_of(&id);
        let io = |source| BundleError::Io { id, source };
        let mut tmp = tempfile_in(&dir, &id).map_err(io)?;
        tmp.1.write_all(bytes).and_then(|_| tmp.1.sync_all()).map_err(io)?;
        std::fs::rename(&tmp.0, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp.0);
            io(e)
        })?;
        Ok(id)
    }
}

/// A new temporary file beside the blobs (same filesystem, so the rename is atomic).
fn tempfile_in(dir: &Path, id: &ContentId) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".{}.{}.{n}.tmp", id.hex(), std::process::id()));
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    Ok((path, file))
}

/// Blobs in memory (tests, embedded hosts).
#[derive(Debug, Default)]
pub struct MemoryBundleStore {
    blobs: std::sync::RwLock<std::collections::HashMap<ContentId, Arc<[u8]>>>,
}

impl MemoryBundleStore {
    pub fn new() -> Arc<MemoryBundleStore> {
        Arc::new(MemoryBundleStore::default())
    }
}

impl BundleStore for MemoryBundleStore {
    fn get(&self, id: &ContentId) -> Result<Option<Arc<[u8]>>, BundleError> {
        Ok(self.blobs.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned())
    }

    fn put(&self, bytes: &[u8]) -> Result<ContentId, BundleError> {
        let id = ContentId::of(bytes);
        self.blobs.write().unwrap_or_else(|p| p.into_inner()).insert(id, Arc::from(bytes));
        Ok(id)
    }
}

/// The bundles one instance opened during the current evaluation (reset before every call): what
/// the `bundle-handle` resource and `fetch-blob` read, and what the verdict trace lists.
///
/// A handle is numbered twice: its ordinal (0, 1, ... in the order opened in this evaluation; what
/// `fetch-blob` takes) and its representation (`base + ordinal`, never reused by a later
/// evaluation of the same instance, so a handle a guest kept from an earlier call reads as closed).
#[derive(Debug, Default)]
pub(crate) struct OpenBundles {
    base: u32,
    /// Every bundle opened in this evaluation, by ordinal; the bytes go when the handle is closed,
    /// the id stays for the trace.
    open: Vec<(ContentId, Option<Arc<[u8]>>)>,
}

impl OpenBundles {
    /// Closes every handle of the previous evaluation.
    pub fn reset(&mut self) {
        self.base = self.base.wrapping_add(self.open.len() as u32);
        self.open.clear();
    }

    /// The digests opened in this evaluation, in order (the verdict trace).
    pub fn opened(&self) -> Vec<ContentId> {
        let mut ids: Vec<ContentId> = Vec::new();
        for (id, _) in &self.open {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        ids
    }

    /// Opens bundle `id` for plugin `ctx`; returns the handle's representation. Refused (an error
    /// naming the cause, which fails the call) when `id` is not a content id, is not declared by
    /// the plugin, is not in the store, or the evaluation already opened its quota.
    pub fn open(&mut self, ctx: &crate::PluginContext, id: &str) -> Result<u32, String> {
        let plugin = ctx.name();
        let id: ContentId = id.parse().map_err(|e| format!("plugin \"{plugin}\": {e}"))?;
        if !ctx.bundles.contains(&id) {
            return Err(format!("bundle {id} is not declared by plugin \"{plugin}\" (its manifest's bundles)"));
        }
        if self.open.len() >= helios_plugin_schema::limits::BUNDLE_OPENS_MAX_PER_CALL {
            return Err(format!(
                "handle flood: plugin \"{plugin}\" opened more than {} bundle handles in one evaluation",
                helios_plugin_schema::limits::BUNDLE_OPENS_MAX_PER_CALL
            ));
        }
        let store = ctx
            .bundle_store
            .as_ref()
            .ok_or_else(|| format!("bundle {id}: the runtime has no bundle store (RuntimeConfig::bundle_store)"))?;
        let bytes =
            store.get(&id).map_err(|e| e.to_string())?.ok_or_else(|| format!("bundle {id} is not in the store"))?;
        self.open.push((id, Some(bytes)));
        Ok(self.base.wrapping_add(self.open.len() as u32 - 1))
    }

    /// Handles opened in this evaluation (closed ones included).
    pub fn opened_count(&self) -> usize {
        self.open.len()
    }

    /// The ordinal of the handle `rep`, if it was opened in this evaluation.
    fn ordinal_of(&self, rep: u32) -> Option<u32> {
        let n = rep.wrapping_sub(self.base);
        ((n as usize) < self.open.len()).then_some(n)
    }

    /// Reads through the handle with representation `rep` (a `bundle-handle` resource).
    pub fn read_rep(&self, rep: u32, offset: u64, len: u32) -> Result<&[u8], String> {
        match self.ordinal_of(rep) {
            Some(n) => self.read_ordinal(n, offset, len),
            None => Err("bundle handle is closed (handles live for one evaluation)".into()),
        }
    }

    /// Reads at most `len` bytes at `offset` of the bundle opened `handle`-th in this evaluation.
    /// Over [`BUNDLE_READ_MAX_BYTES`](helios_plugin_schema::limits::BUNDLE_READ_MAX_BYTES) is an
    /// error; an offset at or past the end reads nothing; a read past the end is cut at the end.
    pub fn read_ordinal(&self, handle: u32, offset: u64, len: u32) -> Result<&[u8], String> {
        let cap = helios_plugin_schema::limits::BUNDLE_READ_MAX_BYTES;
        if len > cap {
            return Err(format!("read of {len} bytes over the {cap}-byte cap"));
        }
        let bytes = match self.open.get(handle as usize) {
            Some((_, Some(bytes))) => bytes,
            Some((_, None)) => return Err(format!("bundle handle {handle} is closed")),
            None => return Err(format!("no bundle handle {handle} is open in this evaluation")),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let end = start.saturating_add(len as usize).min(bytes.len());
        Ok(&bytes[start..end])
    }

    /// Closes the handle `rep` (a no-op for a handle of an earlier evaluation).
    pub fn close_rep(&mut self, rep: u32) {
        if let Some(n) = self.ordinal_of(rep) {
            self.open[n as usize].1 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ids_print_and_parse_as_sha256_hex() {
        let id = ContentId::of(b"abc");
        let s = id.to_string();
        assert_eq!(s, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(s.parse::<ContentId>().unwrap(), id);
        for bad in [
            "",
            "ba7816bf",
            "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            "sha256:ab",
            "md5:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ] {
            let e = bad.parse::<ContentId>().unwrap_err().to_string();
            assert!(e.contains("not a content id"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_dir_store_gives_back_what_it_took_and_refuses_a_damaged_blob_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirBundleStore::new(dir.path());
        let id = store.put(b"deny: rm\n").unwrap();
        assert_eq!(id, ContentId::of(b"deny: rm\n"));
        assert!(store.path_of(&id).ends_with(format!("sha256/{}", id.hex())));
        assert_eq!(&*store.get(&id).unwrap().unwrap(), b"deny: rm\n");
        assert!(store.get(&ContentId::of(b"other")).unwrap().is_none());
        std::fs::write(store.path_of(&id), b"deny: nothing\n").unwrap();
        let e = store.get(&id).unwrap_err();
        assert!(matches!(e, BundleError::DigestMismatch { expected, .. } if expected == id));
        assert!(e.to_string().contains(&id.to_string()), "{e}");
    }

    #[test]
    fn a_dir_store_refuses_blobs_over_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirBundleStore::new(dir.path()).max_bytes(4);
        let e = store.put(b"12345").unwrap_err().to_string();
        assert!(e.contains("5 bytes") && e.contains("4-byte cap"), "{e}");
    }
}
