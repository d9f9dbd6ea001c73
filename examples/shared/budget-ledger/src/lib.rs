//! A bounded ledger of spend per subject (a tenant, an agent and model) over fixed clock windows,
//! charged with the host's atomic add so no charge is lost between concurrent instances (threads of
//! one proxy, or replicas sharing one Redis).
//!
//! A library shared by cost-governor and token-budget, so the window and eviction rules exist once.
//!
//! KV layout, under a prefix `p` chosen by the plugin:
//! * `p:<subject>:<window>:<start>`: a counter (`kv_add`) of what the subject used in the window that
//!   starts at `start` (unix secs). A window that rolled over is another key, so it counts from 0.
//! * `p:index`: JSON `{"<subject>": <start of the minute last charged>, ...}`, changed only by
//!   compare-and-swap (retried on conflict) and only when a subject is new or its minute changed, so
//!   at most once a minute per subject. The instance whose swap moved a subject to a new minute
//!   deletes the subject's counters of the windows that rolled over. A subject not charged since the
//!   start of the current day holds nothing any more (the day is the longest window) and is evicted,
//!   with its counters, when room is needed.
//!
//! So the plugin uses at most `max_subjects × windows + 1` keys, whatever the traffic.
//!
//! [`Ledger::reserve`] is how a budget is enforced exactly: it adds the amount first and takes it back
//! if that passed a limit, so N concurrent statements against a budget of B admit exactly B.

use std::collections::BTreeMap;

use helios_plugin_abi::atomic::{Swap, kv_add, kv_compare_and_swap};
use helios_plugin_abi::kv::{HostKv, KvError};
use serde::{Deserialize, Serialize};

/// An in-memory [`Store`] that enforces the host's key and value caps, for unit tests.
pub use helios_plugin_abi::kv::MemoryStore as MemStore;
/// Reads, writes and deletes of the plugin's key-value store.
pub use helios_plugin_abi::kv::Store as KvStore;

/// The plugin's key-value store with the host's two atomic operations: the host's KV in a plugin
/// ([`HostKv`]), a map in unit tests ([`MemStore`]).
pub trait Store: KvStore {
    /// Adds `delta` to the counter under `key` (missing: 0); the new value.
    fn add(&mut self, key: &str, delta: i64) -> Result<i64, String>;
    /// Replaces the value under `key` with `new` if it still is `expected` (`None`: missing).
    fn compare_and_swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, String>;
}

impl Store for HostKv {
    fn add(&mut self, key: &str, delta: i64) -> Result<i64, String> {
        kv_add(key, delta).map_err(|e| e.to_string())
    }
    fn compare_and_swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, String> {
        kv_compare_and_swap(key, expected, new).map(|s| s == Swap::Done).map_err(|e| e.to_string())
    }
}

impl Store for MemStore {
    fn add(&mut self, key: &str, delta: i64) -> Result<i64, String> {
        let old = match self.map.get(key) {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| "the value is not a counter".to_owned())?,
        };
        let new = old.checked_add(delta).ok_or_else(|| "the counter would overflow".to_owned())?;
        self.set(key, new.to_string().as_bytes())?;
        Ok(new)
    }
    fn compare_and_swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, String> {
        if self.map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        self.set(key, new)?;
        Ok(true)
    }
}

/// How often [`Ledger`] retries a compare-and-swap of the index that lost to another writer.
pub const INDEX_RETRIES: usize = 32;

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

/// The subject index: subject → start of the minute it was last charged in.
type Index = BTreeMap<String, i64>;

/// What [`Ledger::reserve`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The amount is charged; the usage after it.
    Admitted(Usage),
    /// Admitting the amount would pass the limit of `window`, which has `used` already; nothing
    /// was charged.
    Over { window: Window, used: u64 },
}

/// The ledger over a store.
#[derive(Debug)]
pub struct Ledger<'a, S> {
    store: &'a mut S,
    prefix: &'a str,
    max_subjects: usize,
}

fn store_err(key: &str) -> impl Fn(String) -> LedgerError + '_ {
    move |message| LedgerError::Store { key: key.to_owned(), message }
}

impl<'a, S: Store> Ledger<'a, S> {
    pub fn new(store: &'a mut S, prefix: &'a str, max_subjects: usize) -> Self {
        Self { store, prefix, max_subjects }
    }

    /// KV key of a subject's counter for the window `w` that starts at `start`.
    pub fn counter_key(&self, subject: &str, w: Window, start: i64) -> String {
        format!("{}:{subject}:{}:{start}", self.prefix, w.name)
    }

    /// KV key of the subject index.
    pub fn index_key(&self) -> String {
        format!("{}:index", self.prefix)
    }

    fn counter(&mut self, key: &str) -> Result<u64, LedgerError> {
        match self.store.get(key).map_err(store_err(key))? {
            None => Ok(0),
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .map(|n| n.max(0) as u64)
                .ok_or_else(|| LedgerError::Corrupt { key: key.to_owned(), message: "not a counter".into() }),
        }
    }

    /// A subject's usage in `windows` at `now` (0 where nothing was charged).
    pub fn usage(&mut self, subject: &str, windows: &[Window], now: i64) -> Result<Usage, LedgerError> {
        let mut usage = Usage::default();
        for &w in windows {
            let used = self.counter(&self.counter_key(subject, w, w.start(now)))?;
            usage.0.insert(w.name.to_owned(), Slot { start: w.start(now), used });
        }
        Ok(usage)
    }

    /// The index's stored bytes (as read, for the compare-and-swap) and its value.
    fn read_index(&mut self) -> Result<(Option<Vec<u8>>, Index), LedgerError> {
        let key = self.index_key();
        let raw = self.store.get(&key).map_err(store_err(&key))?;
        let index = match &raw {
            None => BTreeMap::new(),
            Some(b) => serde_json::from_slice(b)
                .map_err(|e| LedgerError::from(KvError::Corrupt { key: key.clone(), message: e.to_string() }))?,
        };
        Ok((raw, index))
    }

    /// Whether `subject` is tracked already or there is (or can be made, by eviction) room for it.
    /// Does not modify the store.
    pub fn has_room_for(&mut self, subject: &str, now: i64) -> Result<bool, LedgerError> {
        let (_, index) = self.read_index()?;
        if index.contains_key(subject) || index.len() < self.max_subjects {
            return Ok(true);
        }
        let today = DAY.start(now);
        Ok(index.values().any(|&last| last < today))
    }

    /// Records that `subject` is charged in the minute of `now`: adds it to the index (evicting
    /// subjects not charged today when full) and deletes its counters of windows that rolled over.
    fn touch(&mut self, subject: &str, windows: &[Window], now: i64) -> Result<(), LedgerError> {
        let minute = MINUTE.start(now);
        let index_key = self.index_key();
        for _ in 0..INDEX_RETRIES {
            let (raw, mut index) = self.read_index()?;
            let prev = index.get(subject).copied();
            if prev.is_some_and(|p| p >= minute) {
                return Ok(());
            }
            let mut evicted = Vec::new();
            if prev.is_none() && index.len() >= self.max_subjects {
                let today = DAY.start(now);
                evicted = index.iter().filter(|&(_, &last)| last < today).map(|(s, &l)| (s.clone(), l)).collect();
                if evicted.is_empty() {
                    return Err(LedgerError::Full { max_subjects: self.max_subjects });
                }
                for (s, _) in &evicted {
                    index.remove(s);
                }
            }
            index.insert(subject.to_owned(), minute);
            let bytes = serde_json::to_vec(&index)
                .map_err(|e| LedgerError::Store { key: index_key.clone(), message: e.to_string() })?;
            if !self.store.compare_and_swap(&index_key, raw.as_deref(), &bytes).map_err(store_err(&index_key))? {
                continue; // another instance changed the index first: read it again
            }
            // This instance moved the subject on: it clears what rolled over.
            let mut stale: Vec<String> = Vec::new();
            if let Some(prev) = prev {
                for &w in windows {
                    if w.start(prev) != w.start(now) {
                        stale.push(self.counter_key(subject, w, w.start(prev)));
                    }
                }
            }
            for (s, last) in &evicted {
                for &w in windows {
                    stale.push(self.counter_key(s, w, w.start(*last)));
                }
            }
            for k in stale {
                self.store.remove(&k).map_err(store_err(&k))?;
            }
            return Ok(());
        }
        Err(LedgerError::Store {
            key: index_key,
            message: format!("the index kept changing under {INDEX_RETRIES} compare-and-swap attempts"),
        })
    }

    fn add(&mut self, subject: &str, w: Window, now: i64, delta: i64) -> Result<u64, LedgerError> {
        let key = self.counter_key(subject, w, w.start(now));
        let n = self.store.add(&key, delta).map_err(store_err(&key))?;
        Ok(n.max(0) as u64)
    }

    /// Adds `amount` to `subject` in every window of `windows` (atomically per window); returns the
    /// usage after the charge.
    pub fn charge(&mut self, subject: &str, windows: &[Window], now: i64, amount: u64) -> Result<Usage, LedgerError> {
        self.touch(subject, windows, now)?;
        let delta = i64::try_from(amount).unwrap_or(i64::MAX);
        let mut usage = Usage::default();
        for &w in windows {
            let used = self.add(subject, w, now, delta)?;
            usage.0.insert(w.name.to_owned(), Slot { start: w.start(now), used });
        }
        Ok(usage)
    }

    /// Charges `amount` to `subject` unless that takes a window past its limit (`None`: no limit),
    /// checking `limits` in order: refused when `used + amount > limit`. Exact under concurrency: the amount is added first and taken back when it passed a limit, so
    /// a window's admitted total never exceeds its limit.
    pub fn reserve(
        &mut self,
        subject: &str,
        limits: &[(Window, Option<u64>)],
        now: i64,
        amount: u64,
    ) -> Result<Reservation, LedgerError> {
        let windows: Vec<Window> = limits.iter().map(|(w, _)| *w).collect();
        self.touch(subject, &windows, now)?;
        if amount == 0 {
            let usage = self.usage(subject, &windows, now)?;
            for &(w, limit) in limits {
                let used = usage.used(w, now);
                if limit.is_some_and(|l| used > l) {
                    return Ok(Reservation::Over { window: w, used });
                }
            }
            return Ok(Reservation::Admitted(usage));
        }
        let delta = i64::try_from(amount).unwrap_or(i64::MAX);
        let mut usage = Usage::default();
        let mut added: Vec<Window> = Vec::new();
        for &(w, limit) in limits {
            let used = self.add(subject, w, now, delta)?;
            added.push(w);
            if limit.is_some_and(|l| used > l) {
                for &back in &added {
                    self.add(subject, back, now, -delta)?;
                }
                return Ok(Reservation::Over { window: w, used: used.saturating_sub(amount) });
            }
            usage.0.insert(w.name.to_owned(), Slot { start: w.start(now), used });
        }
        Ok(Reservation::Admitted(usage))
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
        let mut store = MemStore::with_max_keys(8);
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
        let keys: Vec<String> = store.map.keys().cloned().collect();
        assert_eq!(keys, vec![format!("t:d:day:{}", 2 * day), "t:index".to_owned()]);
    }

    #[test]
    fn counters_of_rolled_over_windows_are_deleted_when_the_subject_moves_on() {
        let mut store = MemStore::default();
        let mut l = Ledger::new(&mut store, "t", 4);
        l.charge("a", &[MINUTE, DAY], 120, 3).unwrap();
        l.charge("a", &[MINUTE, DAY], 179, 4).unwrap();
        let u = l.charge("a", &[MINUTE, DAY], 300, 5).unwrap();
        assert_eq!((u.used(MINUTE, 300), u.used(DAY, 300)), (5, 12));
        let keys: Vec<String> = store.map.keys().cloned().collect();
        assert_eq!(keys, vec!["t:a:day:0", "t:a:minute:300", "t:index"]);
    }

    #[test]
    fn a_reservation_admits_exactly_the_limit_and_takes_back_what_it_refuses() {
        let mut store = MemStore::default();
        let mut l = Ledger::new(&mut store, "t", 4);
        let limits = [(DAY, Some(10)), (MINUTE, None)];
        let admitted =
            (0..25).filter(|_| matches!(l.reserve("a", &limits, 60, 1), Ok(Reservation::Admitted(_)))).count();
        assert_eq!(admitted, 10);
        assert_eq!(l.usage("a", &[DAY, MINUTE], 60).unwrap().used(DAY, 60), 10, "refusals were taken back");
        assert_eq!(l.usage("a", &[DAY, MINUTE], 60).unwrap().used(MINUTE, 60), 10);
        assert!(matches!(l.reserve("a", &limits, 60, 0), Ok(Reservation::Admitted(_))), "0 more still fits");
        assert_eq!(l.reserve("a", &[(DAY, Some(12))], 61, 3), Ok(Reservation::Over { window: DAY, used: 10 }));
        assert!(matches!(l.reserve("a", &[(DAY, Some(12))], 61, 2), Ok(Reservation::Admitted(_))));
    }

    #[test]
    fn the_index_changes_by_compare_and_swap_so_a_concurrent_writer_is_not_lost() {
        // A store whose first swap loses to another instance that registered "b" in between.
        struct Racing {
            inner: MemStore,
            raced: bool,
        }
        impl KvStore for Racing {
            fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
                self.inner.get(key)
            }
            fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
                self.inner.set(key, value)
            }
            fn remove(&mut self, key: &str) -> Result<(), String> {
                self.inner.remove(key)
            }
        }
        impl Store for Racing {
            fn add(&mut self, key: &str, delta: i64) -> Result<i64, String> {
                self.inner.add(key, delta)
            }
            fn compare_and_swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, String> {
                if !self.raced {
                    self.raced = true;
                    let mut other = Ledger::new(&mut self.inner, "t", 4);
                    other.charge("b", &[DAY], 0, 1).map_err(|e| e.to_string())?;
                }
                self.inner.compare_and_swap(key, expected, new)
            }
        }
        let mut store = Racing { inner: MemStore::default(), raced: false };
        Ledger::new(&mut store, "t", 4).charge("a", &[DAY], 0, 1).unwrap();
        let index = String::from_utf8(store.inner.map["t:index"].clone()).unwrap();
        assert_eq!(index, r#"{"a":0,"b":0}"#);
    }
}
