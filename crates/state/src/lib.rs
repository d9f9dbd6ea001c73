//! Plugin state that survives restarts and spans replicas: SQLite and Redis implementations of the
//! host's [`KvBackend`], next to the host's in-memory [`MemoryKv`], chosen by a `[state]` table.
//!
//! ```no_run
//! use helios_plugin_host::{Runtime, RuntimeConfig};
//! use helios_plugin_state::{StateConfig, Store};
//!
//! let cfg: StateConfig = toml::from_str(r#"backend = "sqlite"
//! path = "/var/lib/helios/state.db""#)?;
//! let store = Store::open(&cfg)?;
//! let runtime = Runtime::new(RuntimeConfig::default().kv(store.backend()))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Invariants:** every backend keeps the namespace (the plugin's name, bound by the host) apart from
//! the key bytes by construction — a separate column (SQLite), a separate hash per namespace whose
//! name is the namespace in hex (Redis), a separate map (memory) — so no key can name another
//! plugin's data. The caps (value size, key count, total bytes per namespace) are checked inside the
//! same transaction or script that writes. A store failure is an error naming the store, never a panic
//! and never a silent "missing"; a write that returned `Ok` is committed (SQLite) or acknowledged
//! (Redis).

mod config;
mod counter;
pub mod redis;
pub mod sqlite;

use std::{path::PathBuf, sync::Arc};

pub use helios_plugin_host::MemoryKv;
use helios_plugin_host::{KvBackend, KvCaps, KvError};
use helios_plugin_schema::limits;

pub use config::{BackendKind, StateConfig};
pub use redis::RedisKv;
pub use sqlite::{SqliteKv, Synchronous};

/// Every (key, value) of a namespace, sorted by key.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Per-namespace caps every backend enforces. Defaults: the schema's limits (64 KiB per value, 1024
/// keys, 64 MiB in total).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub max_value_bytes: usize,
    pub max_keys: usize,
    pub max_bytes: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_value_bytes: limits::KV_MAX_VALUE_BYTES,
            max_keys: limits::KV_MAX_KEYS,
            max_bytes: limits::KV_MAX_TOTAL_BYTES,
        }
    }
}

impl Caps {
    /// These caps under a plugin's own (`kv_max_keys`/`kv_max_bytes` of its `[[plugins]]` entry):
    /// the smaller of each, so the store's caps are the ceiling, as in the host's memory backend.
    pub fn within(self, plugin: KvCaps) -> Caps {
        Caps {
            max_value_bytes: self.max_value_bytes,
            max_keys: self.max_keys.min(plugin.max_keys),
            max_bytes: self.max_bytes.min(plugin.max_bytes),
        }
    }

    pub(crate) fn check_value(&self, len: usize) -> Result<(), StateError> {
        if len > self.max_value_bytes {
            return Err(StateError::ValueTooLarge { len, limit: self.max_value_bytes });
        }
        Ok(())
    }
}

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("namespace already holds {limit} keys")]
    TooManyKeys { limit: usize },
    #[error("namespace would hold {would} bytes, over the {limit}-byte cap")]
    TooManyBytes { would: usize, limit: usize },
    #[error("value of {len} bytes is over the {limit}-byte cap")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("value is not a counter (the decimal text of a signed 64-bit integer)")]
    NotACounter,
    #[error("counter would overflow a signed 64-bit integer")]
    Overflow,
    #[error("state store sqlite {path}: {detail}")]
    Sqlite { path: PathBuf, detail: String },
    #[error("state store redis {addr} unavailable: {detail}")]
    Redis { addr: String, detail: String },
    #[error("state config: {0}")]
    Config(String),
}

impl From<StateError> for KvError {
    fn from(e: StateError) -> KvError {
        match e {
            StateError::TooManyKeys { limit } => KvError::TooManyKeys { limit },
            StateError::TooManyBytes { would, limit } => KvError::TooManyBytes { would, limit },
            StateError::NotACounter => KvError::NotACounter,
            StateError::Overflow => KvError::Overflow,
            e @ (StateError::Sqlite { .. } | StateError::Redis { .. }) => KvError::Unavailable(e.to_string()),
            other => KvError::Backend(other.to_string()),
        }
    }
}

/// An opened store: one of the three backends, with the operations an operator needs besides the
/// host's [`KvBackend`] (listing namespaces, health).
#[derive(Debug, Clone)]
pub enum Store {
    Memory(Arc<MemoryKv>),
    Sqlite(Arc<SqliteKv>),
    Redis(Arc<RedisKv>),
}

impl Store {
    /// Opens the backend `cfg` names (creating an SQLite file, connecting to Redis).
    pub fn open(cfg: &StateConfig) -> Result<Store, StateError> {
        cfg.validate()?;
        let caps = cfg.caps();
        Ok(match cfg.backend {
            BackendKind::Memory => Store::Memory(MemoryKv::with_caps(caps.max_keys, caps.max_bytes)),
            BackendKind::Sqlite => {
                let path = cfg.path.as_ref().ok_or_else(|| StateError::Config("sqlite needs `path`".into()))?;
                Store::Sqlite(Arc::new(SqliteKv::open(path, caps, cfg.synchronous.unwrap_or_default())?))
            }
            BackendKind::Redis => {
                let url = cfg.url.as_deref().ok_or_else(|| StateError::Config("redis needs `url`".into()))?;
                Store::Redis(Arc::new(RedisKv::connect(url, caps, cfg.redis_options())?))
            }
        })
    }

    /// The store as the host's backend, for `RuntimeConfig::kv`.
    pub fn backend(&self) -> Arc<dyn KvBackend> {
        match self {
            Store::Memory(m) => m.clone(),
            Store::Sqlite(s) => s.clone(),
            Store::Redis(r) => r.clone(),
        }
    }

    /// One line for logs: the backend and where it keeps the data (no passwords).
    pub fn describe(&self) -> String {
        match self {
            Store::Memory(_) => "memory (lost on restart, per process)".into(),
            Store::Sqlite(s) => s.describe(),
            Store::Redis(r) => r.describe(),
        }
    }

    /// Whether the store answers now.
    pub fn health(&self) -> Result<(), StateError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Sqlite(s) => s.health(),
            Store::Redis(r) => r.health(),
        }
    }

    /// The value under `key` in `ns`.
    pub fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self {
            Store::Memory(m) => {
                let mut out = None;
                m.get(ns, key, &mut |v| out = v.map(<[u8]>::to_vec)).map_err(from_kv)?;
                Ok(out)
            }
            Store::Sqlite(s) => s.read(ns, key),
            Store::Redis(r) => r.read(ns, key),
        }
    }

    /// Stores `value` under `key` in `ns`, within the caps.
    pub fn set(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        match self {
            Store::Memory(m) => m.set(ns, key, value).map_err(from_kv),
            Store::Sqlite(s) => s.write(ns, key, value),
            Store::Redis(r) => r.write(ns, key, value),
        }
    }

    /// Adds `delta` to the counter under `key` in `ns` (missing: 0) and returns the new value.
    pub fn add(&self, ns: &str, key: &[u8], delta: i64) -> Result<i64, StateError> {
        match self {
            Store::Memory(m) => m.add(ns, key, delta).map_err(from_kv),
            Store::Sqlite(s) => s.add(ns, key, delta),
            Store::Redis(r) => r.add(ns, key, delta),
        }
    }

    /// Replaces the value under `key` with `new` if it is `expected` (`None`: missing).
    pub fn compare_and_swap(
        &self,
        ns: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StateError> {
        match self {
            Store::Memory(m) => m.compare_and_swap(ns, key, expected, new).map_err(from_kv),
            Store::Sqlite(s) => s.compare_and_swap(ns, key, expected, new),
            Store::Redis(r) => r.compare_and_swap(ns, key, expected, new),
        }
    }

    /// Removes `key` from `ns`; a missing key is not an error.
    pub fn delete(&self, ns: &str, key: &[u8]) -> Result<(), StateError> {
        match self {
            Store::Memory(m) => m.delete(ns, key).map_err(from_kv),
            Store::Sqlite(s) => s.remove(ns, key),
            Store::Redis(r) => r.remove(ns, key),
        }
    }

    /// Every (key, value) of `ns`, sorted by key.
    pub fn entries(&self, ns: &str) -> Result<Entries, StateError> {
        match self {
            Store::Memory(m) => Ok(m.entries(ns)),
            Store::Sqlite(s) => s.list(ns),
            Store::Redis(r) => r.list(ns),
        }
    }

    /// The namespaces that hold keys, sorted. The memory backend cannot list them (it lives in one
    /// process) and answers empty.
    pub fn namespaces(&self) -> Result<Vec<String>, StateError> {
        match self {
            Store::Memory(_) => Ok(Vec::new()),
            Store::Sqlite(s) => s.namespaces(),
            Store::Redis(r) => r.namespaces(),
        }
    }
}

fn from_kv(e: KvError) -> StateError {
    match e {
        KvError::TooManyKeys { limit } => StateError::TooManyKeys { limit },
        KvError::TooManyBytes { would, limit } => StateError::TooManyBytes { would, limit },
        KvError::NotACounter => StateError::NotACounter,
        KvError::Overflow => StateError::Overflow,
        other => StateError::Config(other.to_string()),
    }
}

/// The host's trait over the inherent methods; a store failure becomes [`KvError::Unavailable`]
/// naming the store.
macro_rules! kv_backend {
    ($ty:ty, $name:literal) => {
        impl KvBackend for $ty {
            fn get(&self, ns: &str, key: &[u8], f: &mut dyn FnMut(Option<&[u8]>)) -> Result<(), KvError> {
                f(self.read(ns, key)?.as_deref());
                Ok(())
            }
            fn add(&self, ns: &str, key: &[u8], delta: i64) -> Result<i64, KvError> {
                Ok(<$ty>::add(self, ns, key, delta)?)
            }
            fn compare_and_swap(
                &self,
                ns: &str,
                key: &[u8],
                expected: Option<&[u8]>,
                new: &[u8],
            ) -> Result<bool, KvError> {
                Ok(<$ty>::compare_and_swap(self, ns, key, expected, new)?)
            }
            fn set(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<(), KvError> {
                self.write(ns, key, value).map_err(KvError::from)
            }
            fn set_within(&self, ns: &str, key: &[u8], value: &[u8], caps: KvCaps) -> Result<(), KvError> {
                self.write_within(ns, key, value, self.caps.within(caps)).map_err(KvError::from)
            }
            fn delete(&self, ns: &str, key: &[u8]) -> Result<(), KvError> {
                self.remove(ns, key).map_err(KvError::from)
            }
            fn entries(&self, ns: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
                self.list(ns).unwrap_or_else(|e| {
                    tracing::error!(plugin = ns, backend = $name, error = %e, "state listing failed");
                    Vec::new()
                })
            }
        }
    };
}

kv_backend!(SqliteKv, "sqlite");
kv_backend!(RedisKv, "redis");
