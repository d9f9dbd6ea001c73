//! The SQLite backend: one database file in WAL mode, one row per (namespace, key).
//!
//! The namespace is its own column of the primary key, so no key bytes can name another plugin's row.
//! Every write is one `BEGIN IMMEDIATE` transaction that checks the caps against a per-namespace usage
//! row and updates it, so the caps hold across threads and across processes sharing the file; a write
//! that returned `Ok` is committed (with `synchronous = "full"`, the default, also on power loss).

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{Caps, Entries, StateError, counter};

/// How hard SQLite pushes a commit to the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit is on disk before it returns: survives a process crash and a power loss (default).
    #[default]
    Full,
    /// A commit survives a process crash; the last commits may be lost on a power loss (WAL mode).
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS helios_kv (
    ns    TEXT NOT NULL,
    key   BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS helios_kv_usage (
    ns    TEXT PRIMARY KEY,
    keys  INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
";

/// How long a writer waits for another process's write lock before the call fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Plugin state in a SQLite file.
#[derive(Debug)]
pub struct SqliteKv {
    conn: Mutex<Connection>,
    path: PathBuf,
    pub(crate) caps: Caps,
    synchronous: Synchronous,
}

/// What a write found and decided, inside its transaction.
enum Outcome<T> {
    /// Write the value and return `T`.
    Write(Vec<u8>, T),
    /// Change nothing and return `T`.
    Keep(T),
}

impl SqliteKv {
    /// Opens (creating if needed) the database at `path`. The parent directory must exist.
    pub fn open(path: impl AsRef<Path>, caps: Caps, synchronous: Synchronous) -> Result<SqliteKv, StateError> {
        let path = path.as_ref().to_path_buf();
        let err = |e: rusqlite::Error| StateError::Sqlite { path: path.clone(), detail: e.to_string() };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Sqlite { path, detail: format!("journal_mode is {mode:?}, expected \"wal\"") });
        }
        conn.pragma_update(None, "synchronous", synchronous.pragma()).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(SqliteKv { conn: Mutex::new(conn), path, caps, synchronous })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `sqlite <path> (WAL, synchronous=full)`, for logs.
    pub fn describe(&self) -> String {
        format!("sqlite {} (WAL, synchronous={})", self.path.display(), self.synchronous.pragma().to_lowercase())
    }

    fn err(&self, e: rusqlite::Error) -> StateError {
        StateError::Sqlite { path: self.path.clone(), detail: e.to_string() }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StateError> {
        self.conn.lock().map_err(|_| StateError::Sqlite { path: self.path.clone(), detail: "lock poisoned".into() })
    }

    /// A cheap query that proves the file is readable.
    pub fn health(&self) -> Result<(), StateError> {
        self.lock()?
            .query_row("SELECT count(*) FROM helios_kv_usage", [], |r| r.get::<_, i64>(0))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The value under `key` in `ns`.
    pub fn read(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let conn = self.lock()?;
        let mut st =
            conn.prepare_cached("SELECT value FROM helios_kv WHERE ns = ?1 AND key = ?2").map_err(|e| self.err(e))?;
        st.query_row(params![ns, key], |r| r.get(0)).optional().map_err(|e| self.err(e))
    }

    /// One read-decide-write transaction on `key`: `decide` sees the current value and says what to
    /// store; the caps are checked against the namespace's usage before anything is written.
    fn update<T>(
        &self,
        ns: &str,
        key: &[u8],
        caps: Caps,
        decide: impl FnOnce(Option<&[u8]>) -> Result<Outcome<T>, StateError>,
    ) -> Result<T, StateError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        let old: Option<Vec<u8>> = tx
            .prepare_cached("SELECT value FROM helios_kv WHERE ns = ?1 AND key = ?2")
            .and_then(|mut st| st.query_row(params![ns, key], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))?;
        let (value, out) = match decide(old.as_deref())? {
            Outcome::Keep(out) => return Ok(out),
            Outcome::Write(value, out) => (value, out),
        };
        caps.check_value(value.len())?;
        let (keys, bytes): (i64, i64) = tx
            .prepare_cached("SELECT keys, bytes FROM helios_kv_usage WHERE ns = ?1")
            .and_then(|mut st| st.query_row(params![ns], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(|e| self.err(e))?
            .unwrap_or((0, 0));
        let (keys, bytes) = (keys as usize, bytes as usize);
        let old_bytes = old.as_ref().map(|v| key.len() + v.len());
        let new_keys = if old.is_some() { keys } else { keys + 1 };
        if old.is_none() && keys >= caps.max_keys {
            return Err(StateError::TooManyKeys { limit: caps.max_keys });
        }
        let would = bytes - old_bytes.unwrap_or(0).min(bytes) + key.len() + value.len();
        if would > caps.max_bytes {
            return Err(StateError::TooManyBytes { would, limit: caps.max_bytes });
        }
        tx.prepare_cached(
            "INSERT INTO helios_kv (ns, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut st| st.execute(params![ns, key, value]))
        .map_err(|e| self.err(e))?;
        self.set_usage(&tx, ns, new_keys, would)?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn set_usage(&self, tx: &rusqlite::Transaction<'_>, ns: &str, keys: usize, bytes: usize) -> Result<(), StateError> {
        tx.prepare_cached(
            "INSERT INTO helios_kv_usage (ns, keys, bytes) VALUES (?1, ?2, ?3)
             ON CONFLICT (ns) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes",
        )
        .and_then(|mut st| st.execute(params![ns, keys as i64, bytes as i64]))
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Stores `value` under `key`, within the caps.
    pub fn write(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.write_within(ns, key, value, self.caps)
    }

    /// Stores `value` under `key` within `caps` (a plugin's own caps) instead of the store's.
    pub fn write_within(&self, ns: &str, key: &[u8], value: &[u8], caps: Caps) -> Result<(), StateError> {
        self.update(ns, key, caps, |_| Ok(Outcome::Write(value.to_vec(), ())))
    }

    /// Adds `delta` to the counter under `key` (missing counts as 0) and returns the new value.
    pub fn add(&self, ns: &str, key: &[u8], delta: i64) -> Result<i64, StateError> {
        self.update(ns, key, self.caps, |old| {
            let new = counter::add(old, delta)?;
            Ok(Outcome::Write(new.to_string().into_bytes(), new))
        })
    }

    /// Replaces the value under `key` with `new` if it is `expected` (`None`: if the key is missing).
    /// Returns whether it swapped.
    pub fn compare_and_swap(
        &self,
        ns: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StateError> {
        self.update(ns, key, self.caps, |old| {
            Ok(if old == expected { Outcome::Write(new.to_vec(), true) } else { Outcome::Keep(false) })
        })
    }

    /// Removes `key`; a missing key is not an error.
    pub fn remove(&self, ns: &str, key: &[u8]) -> Result<(), StateError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        let old: Option<usize> = tx
            .prepare_cached("DELETE FROM helios_kv WHERE ns = ?1 AND key = ?2 RETURNING length(value)")
            .and_then(|mut st| st.query_row(params![ns, key], |r| r.get::<_, i64>(0)).optional())
            .map_err(|e| self.err(e))?
            .map(|n| n as usize);
        if let Some(vlen) = old {
            let (keys, bytes): (i64, i64) = tx
                .query_row("SELECT keys, bytes FROM helios_kv_usage WHERE ns = ?1", params![ns], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(|e| self.err(e))?
                .unwrap_or((1, 0));
            let (keys, bytes) = ((keys as usize).saturating_sub(1), (bytes as usize).saturating_sub(key.len() + vlen));
            self.set_usage(&tx, ns, keys, bytes)?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every (key, value) of `ns`, sorted by key.
    pub fn list(&self, ns: &str) -> Result<Entries, StateError> {
        let conn = self.lock()?;
        let mut st = conn
            .prepare_cached("SELECT key, value FROM helios_kv WHERE ns = ?1 ORDER BY key")
            .map_err(|e| self.err(e))?;
        let rows = st.query_map(params![ns], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Every namespace that holds at least one key, sorted.
    pub fn namespaces(&self) -> Result<Vec<String>, StateError> {
        let conn = self.lock()?;
        let mut st = conn.prepare_cached("SELECT DISTINCT ns FROM helios_kv ORDER BY ns").map_err(|e| self.err(e))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}
