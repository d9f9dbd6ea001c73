//! The state surfaces a script sees: per-plugin volatile `state`, persistent `store`, and the
//! per-transaction / per-stream scopes behind `ctx.transaction_state` and `ctx.stream_state`.
//!
//! Every surface has the same caps: at most [`MAX_KEYS`] keys and [`MAX_VALUE_BYTES`] bytes per
//! value (measured as JSON text). Values are JSON-shaped (None, bools, numbers, strings, lists,
//! dicts with string keys).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Keys per scope.
pub const MAX_KEYS: usize = 10_000;
/// Bytes per value, as JSON text.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// A failure of a state operation, shown to the script as an error of its call.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("value for key \"{key}\" is {size} bytes as JSON; the cap is {MAX_VALUE_BYTES}")]
    ValueTooLarge { key: String, size: usize },
    #[error("scope already holds {MAX_KEYS} keys; delete some before adding \"{key}\"")]
    TooManyKeys { key: String },
    #[error("store backend: {0}")]
    Backend(String),
}

/// One in-memory key/value scope (volatile `state`, `ctx.transaction_state`, `ctx.stream_state`).
#[derive(Debug, Clone, Default)]
pub struct Scope(Arc<Mutex<BTreeMap<String, Value>>>);

impl Scope {
    /// An empty scope.
    pub fn new() -> Scope {
        Scope::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.map().get(key).cloned()
    }

    /// Sets `key`, enforcing the caps.
    pub fn set(&self, key: &str, value: Value) -> Result<(), StateError> {
        let size = serde_json::to_string(&value).map(|s| s.len()).unwrap_or(usize::MAX);
        if size > MAX_VALUE_BYTES {
            return Err(StateError::ValueTooLarge { key: key.into(), size });
        }
        let mut m = self.map();
        if !m.contains_key(key) && m.len() >= MAX_KEYS {
            return Err(StateError::TooManyKeys { key: key.into() });
        }
        m.insert(key.into(), value);
        Ok(())
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&self, key: &str) -> bool {
        self.map().remove(key).is_some()
    }

    /// The keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    /// Removes every key.
    pub fn clear(&self) {
        self.map().clear()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether the scope is empty.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

/// Volatile per-plugin state, keyed by plugin name. It lives as long as the registry, so a
/// plugin loaded again (a reload) under the same name finds its state, and another plugin never
/// sees it. Nothing is written to disk: a restart starts empty.
#[derive(Debug, Clone, Default)]
pub struct StateRegistry(Arc<Mutex<HashMap<String, Scope>>>);

impl StateRegistry {
    /// An empty registry.
    pub fn new() -> StateRegistry {
        StateRegistry::default()
    }

    /// The scope of `plugin`, created on first use.
    pub fn scope(&self, plugin: &str) -> Scope {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(plugin.to_string()).or_default().clone()
    }
}

/// A persistent key/value store partitioned by plugin. [`SqliteStore`] is the one backend here;
/// another (Redis, the state crate's) fits by implementing this trait.
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// The JSON text under (`plugin`, `key`).
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, StateError>;
    /// Stores JSON text under (`plugin`, `key`).
    fn set(&self, plugin: &str, key: &str, json: &str) -> Result<(), StateError>;
    /// Removes (`plugin`, `key`); whether it was there.
    fn delete(&self, plugin: &str, key: &str) -> Result<bool, StateError>;
    /// The plugin's keys, sorted.
    fn keys(&self, plugin: &str) -> Result<Vec<String>, StateError>;
    /// Removes every key of the plugin.
    fn clear(&self, plugin: &str) -> Result<(), StateError>;
}

/// A view of one plugin's partition of a [`KvStore`], with the caps applied.
#[derive(Debug, Clone)]
pub struct PluginStore {
    kv: Arc<dyn KvStore>,
    plugin: Arc<str>,
}

impl PluginStore {
    /// `plugin`'s partition of `kv`.
    pub fn new(kv: Arc<dyn KvStore>, plugin: &str) -> PluginStore {
        PluginStore { kv, plugin: plugin.into() }
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Result<Option<Value>, StateError> {
        match self.kv.get(&self.plugin, key)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StateError::Backend(format!("stored value for \"{key}\" is not JSON: {e}"))),
        }
    }

    /// Sets `key`, enforcing the caps.
    pub fn set(&self, key: &str, value: &Value) -> Result<(), StateError> {
        let text = serde_json::to_string(value).map_err(|e| StateError::Backend(e.to_string()))?;
        if text.len() > MAX_VALUE_BYTES {
            return Err(StateError::ValueTooLarge { key: key.into(), size: text.len() });
        }
        if self.kv.get(&self.plugin, key)?.is_none() && self.kv.keys(&self.plugin)?.len() >= MAX_KEYS {
            return Err(StateError::TooManyKeys { key: key.into() });
        }
        self.kv.set(&self.plugin, key, &text)
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) -> Result<bool, StateError> {
        self.kv.delete(&self.plugin, key)
    }

    /// The keys, sorted.
    pub fn keys(&self) -> Result<Vec<String>, StateError> {
        self.kv.keys(&self.plugin)
    }

    /// Removes every key.
    pub fn clear(&self) -> Result<(), StateError> {
        self.kv.clear(&self.plugin)
    }
}

/// An in-memory [`KvStore`], used when no database path is configured (not persistent).
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<BTreeMap<(String, String), String>>);

impl KvStore for MemoryStore {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, StateError> {
        Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&(plugin.into(), key.into())).cloned())
    }
    fn set(&self, plugin: &str, key: &str, json: &str) -> Result<(), StateError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert((plugin.into(), key.into()), json.into());
        Ok(())
    }
    fn delete(&self, plugin: &str, key: &str) -> Result<bool, StateError> {
        Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&(plugin.into(), key.into())).is_some())
    }
    fn keys(&self, plugin: &str) -> Result<Vec<String>, StateError> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.keys().filter(|(p, _)| p == plugin).map(|(_, k)| k.clone()).collect())
    }
    fn clear(&self, plugin: &str) -> Result<(), StateError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|(p, _), _| p != plugin);
        Ok(())
    }
}

/// A [`KvStore`] in one SQLite table `plugin_store(plugin, key, value)`.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<rusqlite::Connection>,
}

fn db(e: rusqlite::Error) -> StateError {
    StateError::Backend(format!("sqlite: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        let conn = rusqlite::Connection::open(path)
            .map_err(|e| StateError::Backend(format!("sqlite: cannot open {}: {e}", path.display())))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS plugin_store (
                 plugin TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                 PRIMARY KEY (plugin, key));",
        )
        .map_err(db)?;
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KvStore for SqliteStore {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, StateError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row("SELECT value FROM plugin_store WHERE plugin = ?1 AND key = ?2", [plugin, key], |r| r.get(0))
            .optional()
            .map_err(db)
    }
    fn set(&self, plugin: &str, key: &str, json: &str) -> Result<(), StateError> {
        self.conn()
            .execute(
                "INSERT INTO plugin_store (plugin, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
                [plugin, key, json],
            )
            .map(|_| ())
            .map_err(db)
    }
    fn delete(&self, plugin: &str, key: &str) -> Result<bool, StateError> {
        self.conn()
            .execute("DELETE FROM plugin_store WHERE plugin = ?1 AND key = ?2", [plugin, key])
            .map(|n| n > 0)
            .map_err(db)
    }
    fn keys(&self, plugin: &str) -> Result<Vec<String>, StateError> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT key FROM plugin_store WHERE plugin = ?1 ORDER BY key").map_err(db)?;
        let rows = st.query_map([plugin], |r| r.get::<_, String>(0)).map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }
    fn clear(&self, plugin: &str) -> Result<(), StateError> {
        self.conn().execute("DELETE FROM plugin_store WHERE plugin = ?1", [plugin]).map(|_| ()).map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn caps_are_enforced() {
        let s = Scope::new();
        let big = Value::from("x".repeat(MAX_VALUE_BYTES));
        assert!(matches!(s.set("k", big), Err(StateError::ValueTooLarge { .. })));
        for i in 0..MAX_KEYS {
            s.set(&i.to_string(), json!(i)).unwrap();
        }
        assert!(matches!(s.set("one-more", json!(1)), Err(StateError::TooManyKeys { .. })));
        s.set("0", json!("overwrite is fine")).unwrap();
    }

    #[test]
    fn sqlite_partitions_by_plugin_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(&path).unwrap());
            let a = PluginStore::new(kv.clone(), "a");
            let b = PluginStore::new(kv, "b");
            a.set("n", &json!({"count": 3})).unwrap();
            b.set("n", &json!(7)).unwrap();
            assert_eq!(a.keys().unwrap(), vec!["n"]);
        }
        let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(&path).unwrap());
        assert_eq!(PluginStore::new(kv.clone(), "a").get("n").unwrap(), Some(json!({"count": 3})));
        assert_eq!(PluginStore::new(kv.clone(), "b").get("n").unwrap(), Some(json!(7)));
        PluginStore::new(kv.clone(), "a").clear().unwrap();
        assert_eq!(PluginStore::new(kv.clone(), "a").get("n").unwrap(), None);
        assert_eq!(PluginStore::new(kv, "b").get("n").unwrap(), Some(json!(7)));
    }
}
