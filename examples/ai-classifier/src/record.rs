//! The per-request record of findings, kept in a bounded ring in the plugin's KV. Recording costs
//! the same whatever the ring's size: five KV calls of a few bytes each, no list rewritten.
//!
//! KV keys:
//! * `finding:<request_id>`: JSON [`Finding`]. A request id longer than [`MAX_ID_BYTES`] is stored
//!   as `finding:#<16 hex digits>` (its 64-bit FNV-1a hash) so keys and the ring stay small.
//! * `findings:seq`: a counter (atomic `kv_add`), how many findings were ever recorded.
//! * `findings:slot:<i>` for `i` in `0..max_findings`: the finding key recorded in ring slot `i`.
//!   The `n`-th finding takes slot `(n - 1) % max_findings`; the finding it replaces there (the one
//!   recorded `max_findings` findings earlier) is deleted. The slot is updated with compare-and-swap,
//!   so two instances recording at once never both delete, or both keep, the same old finding.
//!
//! The plugin holds at most `2 × max_findings + 1` keys. A request id recorded twice keeps its
//! newest finding (one key) in two slots, and is evicted when the older slot comes round.

use helios_plugin_abi::atomic::{Swap, kv_add, kv_compare_and_swap};
use serde::{Deserialize, Serialize};

/// The plugin's key-value store: the host's KV in the plugin, a map in unit tests.
pub use helios_plugin_abi::kv::{HostKv, Store};

/// Key of the counter of findings recorded.
pub const SEQ_KEY: &str = "findings:seq";
/// Prefix of the ring's slot keys.
pub const SLOT_PREFIX: &str = "findings:slot:";
/// Request ids up to this length are used in keys as they are.
pub const MAX_ID_BYTES: usize = 64;
/// Default ring size (config `max_findings`).
pub const DEFAULT_MAX_FINDINGS: usize = 256;
/// Largest ring size: keeps the plugin's keys (`2 × max_findings + 1`) far below the host's key cap.
pub const MAX_MAX_FINDINGS: usize = 400;

/// The atomic operations the ring needs besides [`Store`]: the host's `kv_add` and `kv_cas`.
pub trait Atomic {
    /// Adds `delta` to the counter under `key` (missing: 0) and returns the new value.
    fn add(&mut self, key: &str, delta: i64) -> Result<i64, String>;
    /// Replaces the value under `key` with `new` if it is `expected` (`None`: missing); false when
    /// another writer changed it first.
    fn compare_and_swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, String>;
}

impl Atomic for HostKv {
    fn add(&mut self, key: &str, delta: i64) -> Result<i64, String> {
        kv_add(key, delta).map_err(|e| e.to_string())
    }
    fn compare_and_swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, String> {
        kv_compare_and_swap(key, expected, new).map(|s| s == Swap::Done).map_err(|e| e.to_string())
    }
}

/// What the classifier decided about one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub request_id: String,
    pub ai: bool,
    /// The signals, as `application_name:<keyword>`, `attribute:helios.ai_traffic`, `comment:<marker>`.
    pub signals: Vec<String>,
    /// Host clock when classified (unix seconds).
    pub at: i64,
}

/// 64-bit FNV-1a: stable across builds and targets, good enough to shorten long ids.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The KV key of a request's finding.
pub fn finding_key(request_id: &str) -> String {
    if request_id.len() <= MAX_ID_BYTES {
        format!("finding:{request_id}")
    } else {
        format!("finding:#{:016x}", fnv1a64(request_id.as_bytes()))
    }
}

/// Stores `finding` in the next ring slot, deleting the finding that slot held.
pub fn record<S: Store + Atomic>(store: &mut S, finding: &Finding, max_findings: usize) -> Result<(), String> {
    let key = finding_key(&finding.request_id);
    let n = store.add(SEQ_KEY, 1)?;
    let slot = format!("{SLOT_PREFIX}{}", (n - 1).rem_euclid(max_findings.max(1) as i64));
    let value = serde_json::to_vec(finding).map_err(|e| e.to_string())?;
    store.set(&key, &value)?;
    // Another instance can only race for this slot when it is a whole ring ahead: retry a few times.
    for _ in 0..8 {
        let old = store.get(&slot)?;
        if store.compare_and_swap(&slot, old.as_deref(), key.as_bytes())? {
            if let Some(old) = old.filter(|o| *o != key.as_bytes()) {
                store.remove(&String::from_utf8_lossy(&old))?;
            }
            return Ok(());
        }
    }
    Err(format!("ring slot {slot:?} kept changing under concurrent writers; finding kept, slot not updated"))
}

/// The finding recorded for `request_id`, if it is still in the ring.
pub fn lookup<S: Store>(store: &mut S, request_id: &str) -> Result<Option<Finding>, String> {
    let Some(bytes) = store.get(&finding_key(request_id))? else { return Ok(None) };
    let f: Finding = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    // A hashed key could in principle collide: only answer for the request that was recorded.
    Ok((f.request_id == request_id).then_some(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Mem(BTreeMap<String, Vec<u8>>);
    impl Atomic for Mem {
        fn add(&mut self, key: &str, delta: i64) -> Result<i64, String> {
            let n = self.0.get(key).map_or(0, |v| String::from_utf8_lossy(v).parse::<i64>().unwrap()) + delta;
            self.0.insert(key.into(), n.to_string().into_bytes());
            Ok(n)
        }
        fn compare_and_swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, String> {
            if self.0.get(key).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            self.0.insert(key.into(), new.into());
            Ok(true)
        }
    }

    fn findings(s: &Mem) -> usize {
        s.0.keys().filter(|k| k.starts_with("finding:")).count()
    }
    impl Store for Mem {
        fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.get(key).cloned())
        }
        fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
            self.0.insert(key.into(), value.into());
            Ok(())
        }
        fn remove(&mut self, key: &str) -> Result<(), String> {
            self.0.remove(key);
            Ok(())
        }
    }

    fn f(id: &str) -> Finding {
        Finding { request_id: id.into(), ai: true, signals: vec!["attribute:helios.ai_traffic".into()], at: 1 }
    }

    #[test]
    fn the_ring_keeps_the_newest_findings_and_a_bounded_key_count() {
        let mut s = Mem::default();
        for i in 0..1000 {
            record(&mut s, &f(&format!("req-{i}")), 10).unwrap();
        }
        assert_eq!(findings(&s), 10);
        assert_eq!(s.0.len(), 21, "10 findings, 10 slots, the counter");
        assert_eq!(lookup(&mut s, "req-999").unwrap(), Some(f("req-999")));
        assert_eq!(lookup(&mut s, "req-990").unwrap(), Some(f("req-990")));
        assert_eq!(lookup(&mut s, "req-989").unwrap(), None, "evicted");
    }

    #[test]
    fn re_recording_a_request_overwrites_without_growing() {
        let mut s = Mem::default();
        record(&mut s, &f("a"), 3).unwrap();
        let mut again = f("a");
        again.ai = false;
        record(&mut s, &again, 3).unwrap();
        assert_eq!(findings(&s), 1);
        assert_eq!(lookup(&mut s, "a").unwrap().map(|x| x.ai), Some(false));
        // The same id recorded over and over (a host reusing one id) never evicts itself.
        for _ in 0..10 {
            record(&mut s, &f("a"), 3).unwrap();
        }
        assert_eq!(lookup(&mut s, "a").unwrap(), Some(f("a")));
        assert_eq!(s.0.len(), 5, "one finding, three slots, the counter");
    }

    #[test]
    fn a_slot_changed_by_another_writer_is_read_again() {
        struct Racy {
            mem: Mem,
            races: usize,
        }
        impl Store for Racy {
            fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
                self.mem.get(key)
            }
            fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
                self.mem.set(key, value)
            }
            fn remove(&mut self, key: &str) -> Result<(), String> {
                self.mem.remove(key)
            }
        }
        impl Atomic for Racy {
            fn add(&mut self, key: &str, delta: i64) -> Result<i64, String> {
                self.mem.add(key, delta)
            }
            fn compare_and_swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, String> {
                if self.races > 0 {
                    // Another instance records into this slot between our read and our swap.
                    self.races -= 1;
                    let other = format!("finding:other-{}", self.races);
                    self.mem.0.insert(key.into(), other.clone().into_bytes());
                    self.mem.0.insert(other, b"{}".to_vec());
                }
                self.mem.compare_and_swap(key, expected, new)
            }
        }
        let mut s = Racy { mem: Mem::default(), races: 1 };
        record(&mut s, &f("a"), 1).unwrap();
        assert_eq!(s.mem.0.get("findings:slot:0").map(Vec::as_slice), Some(&b"finding:a"[..]));
        assert!(!s.mem.0.contains_key("finding:other-0"), "the racing writer's finding was evicted exactly once");
        let mut stuck = Racy { mem: Mem::default(), races: 100 };
        let e = record(&mut stuck, &f("b"), 1).unwrap_err();
        assert!(e.contains("findings:slot:0") && e.contains("concurrent"), "{e}");
    }

    #[test]
    fn long_request_ids_are_hashed_into_short_keys() {
        let long = "r".repeat(5000);
        let key = finding_key(&long);
        assert!(key.len() < 32 && key.starts_with("finding:#"), "{key}");
        let mut s = Mem::default();
        record(&mut s, &f(&long), 3).unwrap();
        assert_eq!(lookup(&mut s, &long).unwrap().map(|x| x.request_id.len()), Some(5000));
    }
}
