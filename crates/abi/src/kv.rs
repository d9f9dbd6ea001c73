//! A plugin's key-value store as a trait, so the logic over it runs against the host's KV in the
//! plugin and against a map in unit tests, plus JSON helpers with errors that name the key.
//!
//! ```
//! use helios_plugin_abi::kv::{self, HostKv, MemoryStore, Store};
//!
//! fn bump(store: &mut impl Store) -> Result<u64, kv::KvError> {
//!     let n: u64 = kv::read_json(store, "count")?.unwrap_or(0) + 1;
//!     kv::write_json(store, "count", &n)?;
//!     Ok(n)
//! }
//!
//! let mut mem = MemoryStore::default();
//! assert_eq!(bump(&mut mem), Ok(1));
//! helios_plugin_abi::testing::reset();
//! assert_eq!(bump(&mut HostKv), Ok(1)); // the test host natively, the real host in wasm
//! assert_eq!(bump(&mut HostKv), Ok(2));
//! ```

use std::collections::BTreeMap;

use helios_plugin_schema::limits::{KV_MAX_KEYS, KV_MAX_VALUE_BYTES};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A key-value store; errors are the store's own message.
pub trait Store {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String>;
    fn remove(&mut self, key: &str) -> Result<(), String>;
}

/// The host's KV (namespaced to the plugin by the host): [`crate::kv_read`], [`crate::kv_write`] and
/// [`crate::kv_remove`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HostKv;

impl Store for HostKv {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        crate::kv_read(key).map_err(|e| e.to_string())
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        crate::kv_write(key, value).map_err(|e| e.to_string())
    }
    fn remove(&mut self, key: &str) -> Result<(), String> {
        crate::kv_remove(key).map_err(|e| e.to_string())
    }
}

/// An in-memory [`Store`] that refuses what the host refuses: values above
/// [`KV_MAX_VALUE_BYTES`] and new keys past `max_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryStore {
    pub map: BTreeMap<String, Vec<u8>>,
    pub max_keys: usize,
}

impl Default for MemoryStore {
    /// The host's default key cap ([`KV_MAX_KEYS`]).
    fn default() -> Self {
        MemoryStore::with_max_keys(KV_MAX_KEYS)
    }
}

impl MemoryStore {
    pub fn with_max_keys(max_keys: usize) -> Self {
        MemoryStore { map: BTreeMap::new(), max_keys }
    }
}

impl Store for MemoryStore {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.map.get(key).cloned())
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        if value.len() > KV_MAX_VALUE_BYTES {
            return Err(format!("value of {} bytes is over the cap", value.len()));
        }
        if !self.map.contains_key(key) && self.map.len() >= self.max_keys {
            return Err(format!("key cap of {} reached", self.max_keys));
        }
        self.map.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn remove(&mut self, key: &str) -> Result<(), String> {
        self.map.remove(key);
        Ok(())
    }
}

/// A JSON read or write that failed, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The store refused the read or the write.
    Store { key: String, message: String },
    /// The stored value is not the JSON the caller expects.
    Corrupt { key: String, message: String },
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::Store { key, message } => write!(f, "KV key {key:?}: {message}"),
            KvError::Corrupt { key, message } => {
                write!(f, "KV key {key:?}: expected this plugin's JSON, found something else ({message})")
            }
        }
    }
}

impl std::error::Error for KvError {}

/// The JSON value under `key`, `None` when the key is not set.
pub fn read_json<T: DeserializeOwned>(store: &mut (impl Store + ?Sized), key: &str) -> Result<Option<T>, KvError> {
    match store.get(key) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KvError::Corrupt { key: key.to_owned(), message: e.to_string() }),
        Err(message) => Err(KvError::Store { key: key.to_owned(), message }),
    }
}

/// Stores `value` as JSON under `key`.
pub fn write_json<T: Serialize + ?Sized>(
    store: &mut (impl Store + ?Sized),
    key: &str,
    value: &T,
) -> Result<(), KvError> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| KvError::Corrupt { key: key.to_owned(), message: e.to_string() })?;
    store.set(key, &bytes).map_err(|message| KvError::Store { key: key.to_owned(), message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_store_refuses_what_the_host_refuses() {
        let mut s = MemoryStore::with_max_keys(1);
        s.set("a", b"1").unwrap();
        assert_eq!(s.set("b", b"2"), Err("key cap of 1 reached".to_owned()));
        s.set("a", b"3").unwrap();
        assert!(s.set("a", &vec![0; KV_MAX_VALUE_BYTES + 1]).unwrap_err().contains("over the cap"));
    }

    #[test]
    fn a_value_that_is_not_the_expected_json_names_the_key() {
        let mut s = MemoryStore::default();
        s.set("k", b"not json").unwrap();
        let err = read_json::<u64>(&mut s, "k").unwrap_err();
        assert!(matches!(&err, KvError::Corrupt { key, .. } if key == "k"), "{err:?}");
        assert!(err.to_string().starts_with("KV key \"k\": expected this plugin's JSON"), "{err}");
        assert_eq!(read_json::<u64>(&mut s, "missing"), Ok(None));
    }
}
