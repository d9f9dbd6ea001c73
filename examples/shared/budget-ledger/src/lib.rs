//! A bounded ledger of spend per subject (a tenant, an agent and model) over fixed clock windows.
//!
//! A library shared by cost-governor and token-budget, so the window and eviction rules exist once.
//!
//! KV layout, under a prefix `p` chosen by the plugin:
//! * `p:<subject>:usage`: JSON `{"<window>": {"start": <unix secs>, "used": <u64>}, ...}`, one key per
//!   subject holding every window. A window whose `start` is not the current window's start has rolled
//!   over and counts as 0.
//! * `p:index`: JSON `{"<subject>": <unix secs last charged>, ...}`, so subjects can be counted and
//!   evicted. A subject not charged since the start of the current day holds nothing any more (the day
//!   is the longest window) and is evicted when room is needed.
//!
//! So the plugin uses at most `max_subjects + 1` keys, whatever the traffic.

use std::collections::BTreeMap;

use helios_plugin_abi::kv::{self, KvError};
use serde::{Deserialize, Serialize};

/// An in-memory [`Store`] that enforces the host's key and value caps, for unit tests.
pub use helios_plugin_abi::kv::MemoryStore as MemStore;
/// The plugin's key-value store: the host's KV in a plugin, a map in unit tests.
pub use helios_plugin_abi::kv::Store;

/// A fixed clock window, aligned on multiples of its length since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub name: &'static str,
    pub secs: i64,
}

pub const MINUTE: Window = Window { name: "minute", secs: 60 };
pub const HOUR: Window = Window { name: "hour", secs: 3_600 };
pub const DAY: Window = Window { name: "day", secs: 86_400 };

impl Window {
    /// Start of the window containing `now`.
    pub fn start(self, now: i64) -> i64 {
        now - now.rem_euclid(self.secs)
    }
    /// When the window containing `now` ends and the next one begins.
    pub fn resets_at(self, now: i64) -> i64 {
        self.start(now) + self.secs
    }
}

/// One window's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub start: i64,
    pub used: u64,
}

/// What one subject has used, per window name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Usage(pub BTreeMap<String, Slot>);

impl Usage {
    /// Usage in the window containing `now` (0 once the window rolled over).
    pub fn used(&self, w: Window, now: i64) -> u64 {
        match self.0.get(w.name) {
            Some(s) if s.start == w.start(now) => s.used,
            _ => 0,
        }
    }

    /// Adds `amount` to every window, starting a fresh window where the stored one rolled over.
    pub fn charge(&mut self, windows: &[Window], now: i64, amount: u64) {
        for &w in windows {
            let used = self.used(w, now).saturating_add(amount);
            self.0.insert(w.name.to_owned(), Slot { start: w.start(now), used });
        }
    }
}

/// A ledger failure; `String`s carry the store's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerError {
    /// The store refused a read or a write.
    Store { key: String, message: String },
    /// A stored value is not what this plugin writes.
    Corrupt { key: String, message: String },
    /// Every slot holds a subject charged today; a new subject cannot be tracked.
    Full { max_subjects: usize },
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::Store { key, message } => write!(f, "KV key {key:?}: {message}"),
            LedgerError::Corrupt { key, message } => {
                write!(f, "KV key {key:?}: expected this plugin's JSON, found something else ({message})")
            }
            LedgerError::Full { max_subjects } => {
                write!(f, "all {max_subjects} tracked subjects were charged today, no room for a new one")
            }
        }
    }
}

impl std::error::Error for LedgerError {}

impl From<KvError> for LedgerError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Store { key, message } => LedgerError::Store { key, message },
            KvError::Corrupt { key, message } => LedgerError::Corrupt { key, message },
        }
    }
}

/// The ledger over a store.
#[derive(Debug)]
pub struct Ledger<'a, S> {
    store: &'a mut S,
    prefix: &'a str,
    max_subjects: usize,
}

impl<'a, S: Store> Ledger<'a, S> {
    pub fn new(store: &'a mut S, prefix: &'a str, max_subjects: usize) -> Self {
        Self { store, prefix, max_subjects }
    }

    /// KV key of a subject's usage.
    pub fn usage_key(&self, subject: &str) -> String {
        format!("{}:{subject}:usage", self.prefix)
    }

    /// KV key of the subject index.
    pub fn index_key(&self) -> String {
        format!("{}:index", self.prefix)
    }

    fn read_json<T: for<'de> Deserialize<'de> + Default>(&mut self, key: &str) -> Result<T, LedgerError> {
        Ok(kv::read_json(self.store, key)?.unwrap_or_default())
    }

    fn write_json<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), LedgerError> {
        Ok(kv::write_json(self.store, key, value)?)
    }

    /// A subject's usage (empty for a subject never charged).
    pub fn usage(&mut self, subject: &str) -> Result<Usage, LedgerError> {
        let key = self.usage_key(subject);
        self.read_json(&key)
    }

    /// Whether `subject` is tracked already or there is (or can be made, by eviction) room for it.
    /// Does not modify the store.
    pub fn has_room_for(&mut self, subject: &str, now: i64) -> Result<bool, LedgerError> {
        let key = self.index_key();
        let index: BTreeMap<String, i64> = self.read_json(&key)?;
        if index.contains_key(subject) || index.len() < self.max_subjects {
            return Ok(true);
        }
        let today = DAY.start(now);
        Ok(index.values().any(|&last| last < today))
    }

    /// Adds `amount` to `subject` in every window of `windows`; returns the usage after the charge.
    pub fn charge(&mut self, subject: &str, windows: &[Window], now: i64, amount: u64) -> Result<Usage, LedgerError> {
        let index_key = self.index_key();
        let mut index: BTreeMap<String, i64> = self.read_json(&index_key)?;
        if !index.contains_key(subject) && index.len() >= self.max_subjects {
            let today = DAY.start(now);
            let stale: Vec<String> = index.iter().filter(|&(_, &last)| last < today).map(|(s, _)| s.clone()).collect();
            if stale.is_empty() {
                return Err(LedgerError::Full { max_subjects: self.max_subjects });
            }
            for s in stale {
                let k = self.usage_key(&s);
                self.store.remove(&k).map_err(|message| LedgerError::Store { key: k.clone(), message })?;
                index.remove(&s);
            }
        }
        let mut usage = self.usage(subject)?;
        usage.charge(windows, now, amount);
        let key = self.usage_key(subject);
        self.write_json(&key, &usage)?;
        index.insert(subject.to_owned(), now);
        self.write_json(&index_key, &index)?;
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_on_the_utc_clock() {
        let now = 1_700_000_123; // 2023-11-14T22:15:23Z
        assert_eq!(MINUTE.start(now), 1_700_000_100);
        assert_eq!(HOUR.start(now), 1_699_999_200);
        assert_eq!(DAY.start(now), 1_699_920_000);
        assert_eq!(DAY.resets_at(now), 1_700_006_400);
    }

    #[test]
    fn a_rolled_over_window_counts_zero_and_restarts() {
        let mut u = Usage::default();
        u.charge(&[MINUTE, DAY], 120, 7);
        u.charge(&[MINUTE, DAY], 179, 5);
        assert_eq!((u.used(MINUTE, 179), u.used(DAY, 179)), (12, 12));
        assert_eq!(u.used(MINUTE, 180), 0, "the next minute starts empty");
        u.charge(&[MINUTE, DAY], 180, 1);
        assert_eq!((u.used(MINUTE, 180), u.used(DAY, 180)), (1, 13));
    }

    #[test]
    fn stale_subjects_are_evicted_to_make_room_and_keys_stay_bounded() {
        let mut store = MemStore::with_max_keys(4);
        let day = 86_400;
        {
            let mut l = Ledger::new(&mut store, "t", 3);
            for s in ["a", "b", "c"] {
                l.charge(s, &[DAY], day, 1).unwrap();
            }
            assert!(!l.has_room_for("d", day + 10).unwrap());
            assert_eq!(l.charge("d", &[DAY], day + 10, 1), Err(LedgerError::Full { max_subjects: 3 }));
            // The next day every subject is stale: "d" gets in, the others are evicted.
            assert!(l.has_room_for("d", 2 * day).unwrap());
            l.charge("d", &[DAY], 2 * day, 1).unwrap();
        }
        assert_eq!(store.map.keys().cloned().collect::<Vec<_>>(), vec!["t:d:usage", "t:index"]);
    }
}
