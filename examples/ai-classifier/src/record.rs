//! The per-request record of findings, kept in a bounded ring in the plugin's KV.
//!
//! KV keys:
//! * `finding:<request_id>`: JSON [`Finding`]. A request id longer than [`MAX_ID_BYTES`] is stored
//!   as `finding:#<16 hex digits>` (its 64-bit FNV-1a hash) so keys and the ring stay small.
//! * `findings:order`: JSON array of the finding keys, oldest first. When it holds `max_findings`
//!   keys the oldest finding is deleted before a new one is added, so the plugin never holds more than
//!   `max_findings + 1` keys.

use serde::{Deserialize, Serialize};

/// The plugin's key-value store: the host's KV in the plugin, a map in unit tests.
pub use helios_plugin_abi::kv::Store;

/// Key of the ring's order.
pub const ORDER_KEY: &str = "findings:order";
/// Request ids up to this length are used in keys as they are.
pub const MAX_ID_BYTES: usize = 64;
/// Default ring size (config `max_findings`).
pub const DEFAULT_MAX_FINDINGS: usize = 256;
/// Largest ring size: keeps `findings:order` far below a KV value's cap.
pub const MAX_MAX_FINDINGS: usize = 400;

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

/// Stores `finding`, evicting the oldest findings beyond `max_findings`.
pub fn record<S: Store>(store: &mut S, finding: &Finding, max_findings: usize) -> Result<(), String> {
    let key = finding_key(&finding.request_id);
    let mut order: Vec<String> = match store.get(ORDER_KEY)? {
        None => Vec::new(),
        Some(b) => {
            serde_json::from_slice(&b).map_err(|e| format!("KV key {ORDER_KEY:?} is not a JSON array of keys: {e}"))?
        }
    };
    order.retain(|k| *k != key);
    while order.len() >= max_findings.max(1) {
        let old = order.remove(0);
        store.remove(&old)?;
    }
    let value = serde_json::to_vec(finding).map_err(|e| e.to_string())?;
    store.set(&key, &value)?;
    order.push(key);
    let order = serde_json::to_vec(&order).map_err(|e| e.to_string())?;
    store.set(ORDER_KEY, &order)
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
        assert_eq!(s.0.len(), 11, "10 findings + the order key");
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
        assert_eq!(s.0.len(), 2);
        assert_eq!(lookup(&mut s, "a").unwrap().map(|x| x.ai), Some(false));
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
