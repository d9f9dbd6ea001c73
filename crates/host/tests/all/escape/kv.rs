//! KV: keys and values over their caps, key floods, byte floods (namespacing is in `tests/all/kv.rs`).

use std::time::Duration;

use helios_plugin_host::{MemoryKv, MemoryLogSink, Runtime, RuntimeConfig};
use helios_plugin_schema::{GuardRequest, GuardVerdict, limits};

use super::{hostile, logged, raw};
use crate::kv::kv_plugin;
use crate::support::runtime;

#[test]
fn kv_keys_and_values_over_their_caps_are_refused_and_nothing_is_stored() {
    let (rt, sink) = runtime();
    let wasm = hostile("hostile-raw");
    for attack in ["kv_key_too_long", "kv_value_too_long"] {
        let p = rt.load(&wasm, raw(attack)).unwrap();
        assert_eq!(p.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
        assert!(rt.kv().entries(&format!("raw-{attack}")).is_empty(), "{attack} stored something");
    }
    assert_eq!(logged(&sink, "raw-kv_key_too_long"), ["kv_key_too_long rc=-1", "kv_get_key_too_long rc=-1"]);
    assert_eq!(logged(&sink, "raw-kv_value_too_long"), ["kv_value_too_long rc=-1"]);
    // From a WAT guard: one byte over is refused, exactly the cap is stored.
    let big = "x".repeat(limits::KV_MAX_VALUE_BYTES + 1);
    let p = kv_plugin(&rt, "big", "s", &big);
    assert!(!p.evaluate_json(b"k").unwrap().is_allow());
    assert!(rt.kv().entries("big").is_empty());
    let ok = kv_plugin(&rt, "big", "s", &big[..limits::KV_MAX_VALUE_BYTES]);
    assert_eq!(ok.evaluate_json(b"k").unwrap(), GuardVerdict::Allow);
}

#[test]
fn kv_key_count_cap_stops_a_flood_at_1024_keys() {
    let (rt, sink) = runtime();
    let p = rt.load(&hostile("hostile-raw"), raw("kv_many_keys").deadline(Duration::from_secs(10))).unwrap();
    assert_eq!(p.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
    assert_eq!(logged(&sink, "raw-kv_many_keys"), [format!("stored={} rc=-1", limits::KV_MAX_KEYS)]);
    assert_eq!(rt.kv().entries("raw-kv_many_keys").len(), limits::KV_MAX_KEYS);
    // From a WAT guard, one key at a time: the 1025th is refused, overwriting is still fine.
    let p = kv_plugin(&rt, "many", "s", "v");
    for i in 0..limits::KV_MAX_KEYS {
        assert_eq!(p.evaluate_json(format!("key-{i}").as_bytes()).unwrap(), GuardVerdict::Allow, "key {i}");
    }
    assert!(!p.evaluate_json(b"one-too-many").unwrap().is_allow());
    // Overwriting an existing key is still fine.
    assert_eq!(p.evaluate_json(b"key-0").unwrap(), GuardVerdict::Allow);
    assert_eq!(rt.kv().entries("many").len(), limits::KV_MAX_KEYS);
}

#[test]
fn kv_byte_total_cap_stops_a_flood_of_64_kib_values_before_64_mib() {
    let (rt, sink) = runtime();
    let p = rt.load(&hostile("hostile-raw"), raw("kv_fill").deadline(Duration::from_secs(20)).fuel(None)).unwrap();
    assert_eq!(p.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
    let entries = rt.kv().entries("raw-kv_fill");
    let total: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(total <= limits::KV_MAX_TOTAL_BYTES, "{total} bytes stored");
    // The byte total, not the key count, is what refused the write.
    assert!(entries.len() < limits::KV_MAX_KEYS, "{} keys", entries.len());
    assert_eq!(logged(&sink, "raw-kv_fill"), [format!("stored={} rc=-1", entries.len())]);
    // A smaller cap on the backend is enforced the same way.
    let sink = MemoryLogSink::new();
    let rt =
        Runtime::new(RuntimeConfig::default().kv(MemoryKv::with_caps(10_000, 200_000)).log_sink(sink.clone())).unwrap();
    let p = rt.load(&hostile("hostile-raw"), raw("kv_fill")).unwrap();
    assert_eq!(p.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
    assert_eq!(logged(&sink, "raw-kv_fill"), ["stored=3 rc=-1"]);
}
