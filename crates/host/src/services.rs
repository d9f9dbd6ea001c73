//! What the host lends a plugin besides memory and CPU: a clock, a log sink and a key-value store.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicI64, Ordering},
    },
};

use helios_plugin_schema::{
    abi::counter_value,
    limits::{KV_MAX_KEYS, KV_MAX_TOTAL_BYTES},
};

/// The source of `chio.get_time_unix_secs`.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_unix_secs(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_secs(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests and replays.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(unix_secs: i64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(unix_secs)))
    }
    pub fn set(&self, unix_secs: i64) {
        self.0.store(unix_secs, Ordering::SeqCst);
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_secs(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Guest log levels (`chio.log` levels 0..=4), as the schema defines them.
pub use helios_plugin_schema::abi::Level;

/// Receives every guest log line (after the per-call caps), besides `tracing`.
pub trait LogSink: Send + Sync + std::fmt::Debug {
    fn log(&self, plugin: &str, level: Level, message: &str);
}

/// A sink that keeps every line in memory; for tests, the demo and exports.
#[derive(Debug, Default)]
pub struct MemoryLogSink(Mutex<Vec<(String, Level, String)>>);

impl MemoryLogSink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Every line so far: (plugin, level, message).
    pub fn lines(&self) -> Vec<(String, Level, String)> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
    /// Takes the lines out.
    pub fn drain(&self) -> Vec<(String, Level, String)> {
        self.0.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default()
    }
}

impl LogSink for MemoryLogSink {
    fn log(&self, plugin: &str, level: Level, message: &str) {
        if let Ok(mut l) = self.0.lock() {
            l.push((plugin.to_owned(), level, message.to_owned()));
        }
    }
}

/// Why a KV write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    #[error("namespace already holds {limit} keys")]
    TooManyKeys { limit: usize },
    #[error("namespace would hold {would} bytes, over the {limit}-byte cap")]
    TooManyBytes { would: usize, limit: usize },
    #[error("backend: {0}")]
    Backend(String),
    /// `add` on a value that is not a counter ([`helios_plugin_schema::abi::counter_value`]).
    #[error("value is not a counter (the decimal text of a signed 64-bit integer)")]
    NotACounter,
    /// `add` past the range of a signed 64-bit integer.
    #[error("counter would overflow a signed 64-bit integer")]
    Overflow,
    /// The store cannot be reached or failed; the message names it (never a password).
    #[error("{0}")]
    Unavailable(String),
}

/// The per-plugin KV caps a backend enforces for a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCaps {
    /// Keys in the namespace. Default: [`KV_MAX_KEYS`].
    pub max_keys: usize,
    /// Bytes (keys + values) in the namespace. Default: [`KV_MAX_TOTAL_BYTES`].
    pub max_bytes: usize,
}

impl Default for KvCaps {
    fn default() -> Self {
        KvCaps { max_keys: KV_MAX_KEYS, max_bytes: KV_MAX_TOTAL_BYTES }
    }
}

/// Per-plugin key-value storage. The host passes the namespace (the plugin's name); a guest never
/// names it, so no key bytes can reach another plugin's keys.
///
/// Key and value sizes are checked by the host before a backend sees them; a backend enforces the
/// per-namespace key count and byte total. `add` and `compare_and_swap` are atomic against every
/// other call on the same key, from any thread (and, for a shared store, any process).
pub trait KvBackend: Send + Sync + std::fmt::Debug {
    /// Calls `f` with the value, or `None`, without copying it out of the backend when possible. A
    /// store failure is an error, never a `None`.
    fn get(&self, ns: &str, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) -> Result<(), KvError>;
    fn set(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<(), KvError>;
    /// Stores `value` under `key`, refusing a write that would take the namespace past `caps` (the
    /// plugin's own caps, bound by the host; guest writes go through this). The default applies only
    /// the backend's caps: a backend that can count a namespace overrides it ([`MemoryKv`] does).
    fn set_within(&self, ns: &str, key: &[u8], value: &[u8], caps: KvCaps) -> Result<(), KvError> {
        let _ = caps;
        self.set(ns, key, value)
    }
    fn delete(&self, ns: &str, key: &[u8]) -> Result<(), KvError>;
    /// Adds `delta` to the counter under `key` (missing: 0) and returns the new value.
    fn add(&self, ns: &str, key: &[u8], delta: i64) -> Result<i64, KvError>;
    /// Replaces the value under `key` with `new` if it is `expected` (`None`: if the key is missing);
    /// returns whether it did.
    fn compare_and_swap(&self, ns: &str, key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> Result<bool, KvError>;
    /// Every (key, value) of a namespace, sorted by key; for inspection and exports.
    fn entries(&self, ns: &str) -> Vec<(Vec<u8>, Vec<u8>)>;
}

#[derive(Debug, Default)]
struct Namespace {
    map: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

/// The in-memory backend: one lock per namespace, so plugins do not contend with each other.
#[derive(Debug)]
pub struct MemoryKv {
    spaces: RwLock<HashMap<String, Arc<Mutex<Namespace>>>>,
    max_keys: usize,
    max_bytes: usize,
}

impl Default for MemoryKv {
    fn default() -> Self {
        MemoryKv { spaces: RwLock::default(), max_keys: KV_MAX_KEYS, max_bytes: KV_MAX_TOTAL_BYTES }
    }
}

impl MemoryKv {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// With other caps than the defaults ([`KV_MAX_KEYS`], [`KV_MAX_TOTAL_BYTES`]).
    pub fn with_caps(max_keys: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(MemoryKv { spaces: RwLock::default(), max_keys, max_bytes })
    }

    fn space(&self, ns: &str) -> Option<Arc<Mutex<Namespace>>> {
        self.spaces.read().ok()?.get(ns).cloned()
    }

    fn space_or_create(&self, ns: &str) -> Result<Arc<Mutex<Namespace>>, KvError> {
        if let Some(s) = self.space(ns) {
            return Ok(s);
        }
        let mut w = self.spaces.write().map_err(|_| KvError::Backend("lock poisoned".into()))?;
        Ok(w.entry(ns.to_owned()).or_default().clone())
    }

    /// Stores `value` under `key` in a locked namespace, within the caps.
    fn put(&self, s: &mut Namespace, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.put_within(s, key, value, KvCaps::default())
    }

    /// [`MemoryKv::put`] within the smaller of `caps` and this backend's ceiling.
    fn put_within(&self, s: &mut Namespace, key: &[u8], value: &[u8], caps: KvCaps) -> Result<(), KvError> {
        let (max_keys, max_bytes) = (caps.max_keys.min(self.max_keys), caps.max_bytes.min(self.max_bytes));
        let old = s.map.get(key).map(|v| key.len() + v.len());
        if old.is_none() && s.map.len() >= max_keys {
            return Err(KvError::TooManyKeys { limit: max_keys });
        }
        let would = s.bytes - old.unwrap_or(0) + key.len() + value.len();
        if would > max_bytes {
            return Err(KvError::TooManyBytes { would, limit: max_bytes });
        }
        s.bytes = would;
        match s.map.get_mut(key) {
            Some(v) => {
                v.clear();
                v.extend_from_slice(value);
            }
            None => {
                s.map.insert(key.to_vec(), value.to_vec());
            }
        }
        Ok(())
    }
}

impl KvBackend for MemoryKv {
    fn get(&self, ns: &str, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) -> Result<(), KvError> {
        match self.space(ns) {
            Some(s) => {
                f(s.lock().map_err(|_| KvError::Backend("lock poisoned".into()))?.map.get(key).map(Vec::as_slice))
            }
            None => f(None),
        }
        Ok(())
    }

    fn set(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        let space = self.space_or_create(ns)?;
        let mut s = space.lock().map_err(|_| KvError::Backend("lock poisoned".into()))?;
        self.put(&mut s, key, value)
    }

    fn set_within(&self, ns: &str, key: &[u8], value: &[u8], caps: KvCaps) -> Result<(), KvError> {
        let space = self.space_or_create(ns)?;
        let mut s = space.lock().map_err(|_| KvError::Backend("lock poisoned".into()))?;
        self.put_within(&mut s, key, value, caps)
    }

    fn add(&self, ns: &str, key: &[u8], delta: i64) -> Result<i64, KvError> {
        let space = self.space_or_create(ns)?;
        let mut s = space.lock().map_err(|_| KvError::Backend("lock poisoned".into()))?;
        let old = match s.map.get(key) {
            Some(v) => counter_value(v).ok_or(KvError::NotACounter)?,
            None => 0,
        };
        let new = old.checked_add(delta).ok_or(KvError::Overflow)?;
        self.put(&mut s, key, new.to_string().as_bytes())?;
        Ok(new)
    }

    fn compare_and_swap(&self, ns: &str, key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> Result<bool, KvError> {
        let space = self.space_or_create(ns)?;
        let mut s = space.lock().map_err(|_| KvError::Backend("lock poisoned".into()))?;
        if s.map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        self.put(&mut s, key, new)?;
        Ok(true)
    }

    fn delete(&self, ns: &str, key: &[u8]) -> Result<(), KvError> {
        if let Some(space) = self.space(ns) {
            let mut s = space.lock().map_err(|_| KvError::Backend("lock poisoned".into()))?;
            if let Some(v) = s.map.remove(key) {
                s.bytes -= key.len() + v.len();
            }
        }
        Ok(())
    }

    fn entries(&self, ns: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<_> = match self.space(ns) {
            Some(s) => match s.lock() {
                Ok(s) => s.map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                Err(_) => Vec::new(),
            },
            None => Vec::new(),
        };
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_do_not_share_keys() {
        let kv = MemoryKv::default();
        kv.set("a", b"k", b"1").unwrap();
        let mut seen = None;
        kv.get("b", b"k", &mut |v| seen = v.map(<[u8]>::to_vec)).unwrap();
        assert_eq!(seen, None);
        kv.delete("b", b"k").unwrap();
        assert_eq!(kv.entries("a"), vec![(b"k".to_vec(), b"1".to_vec())]);
    }

    #[test]
    fn each_write_is_held_to_the_plugins_own_caps_below_the_backend_ceiling() {
        let kv = MemoryKv::default();
        let small = KvCaps { max_keys: 1, max_bytes: 100 };
        kv.set_within("small", b"k1", b"v", small).unwrap();
        assert_eq!(kv.set_within("small", b"k2", b"v", small), Err(KvError::TooManyKeys { limit: 1 }));
        // Another namespace with the defaults is not held to the small plugin's caps.
        kv.set("big", b"k1", b"v").unwrap();
        kv.set("big", b"k2", b"v").unwrap();
        // The backend ceiling wins over a plugin cap above it.
        let ceiling = MemoryKv { max_keys: 1, max_bytes: 10, spaces: RwLock::default() };
        ceiling.set_within("a", b"k1", b"v", KvCaps::default()).unwrap();
        assert_eq!(ceiling.set_within("a", b"k2", b"v", KvCaps::default()), Err(KvError::TooManyKeys { limit: 1 }));
    }

    #[test]
    fn key_count_and_byte_caps_are_enforced_and_overwrites_do_not_count_twice() {
        let kv = MemoryKv { max_keys: 2, max_bytes: 10, spaces: RwLock::default() };
        kv.set("a", b"k1", b"12").unwrap();
        kv.set("a", b"k1", b"1234").unwrap();
        kv.set("a", b"k2", b"1").unwrap();
        assert_eq!(kv.set("a", b"k3", b"1"), Err(KvError::TooManyKeys { limit: 2 }));
        assert!(matches!(kv.set("a", b"k2", b"123456"), Err(KvError::TooManyBytes { .. })));
        kv.delete("a", b"k1").unwrap();
        kv.set("a", b"k3", b"1").unwrap();
    }

    #[test]
    fn add_and_compare_and_swap_are_atomic_and_keep_the_caps() {
        let kv = MemoryKv { max_keys: 2, max_bytes: 30, spaces: RwLock::default() };
        assert_eq!(kv.add("a", b"n", 5), Ok(5));
        assert_eq!(kv.add("a", b"n", -7), Ok(-2));
        kv.set("a", b"t", b"x").unwrap();
        assert_eq!(kv.add("a", b"t", 1), Err(KvError::NotACounter));
        assert_eq!(kv.add("a", b"new", 1), Err(KvError::TooManyKeys { limit: 2 }));
        kv.set("a", b"n", i64::MAX.to_string().as_bytes()).unwrap();
        assert_eq!(kv.add("a", b"n", 1), Err(KvError::Overflow));
        assert_eq!(kv.compare_and_swap("a", b"t", Some(b"y"), b"z"), Ok(false));
        assert_eq!(kv.compare_and_swap("a", b"t", Some(b"x"), b"z"), Ok(true));
        assert_eq!(kv.compare_and_swap("a", b"t", None, b"w"), Ok(false));
        kv.delete("a", b"t").unwrap();
        assert_eq!(kv.compare_and_swap("a", b"t", None, b"w"), Ok(true));
        assert_eq!(
            kv.entries("a"),
            vec![(b"n".to_vec(), i64::MAX.to_string().into_bytes()), (b"t".to_vec(), b"w".to_vec())]
        );

        let kv = std::sync::Arc::new(MemoryKv::default());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || (0..100_000).for_each(|_| assert!(kv.add("c", b"n", 1).is_ok())))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(kv.entries("c"), vec![(b"n".to_vec(), b"200000".to_vec())]);
    }
}
