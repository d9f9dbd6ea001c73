//! Per-plugin namespacing and the caps, for every backend: a WAT guard whose request bytes are the key
//! runs in the real host over each store (the same crafted keys as the host's own `kv.rs`).

use std::{sync::Arc, time::Duration};

use helios_plugin_host::{Plugin, PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{GuardVerdict, limits};
use helios_plugin_state::{Caps, StateError, Store};

use crate::support::backends;

fn data(offset: u32, s: &str) -> String {
    let escaped: String = s.bytes().map(|b| format!("\\{b:02x}")).collect();
    format!("(data (i32.const {offset}) \"{escaped}\")")
}

/// config `op` = `s`: set key = request to config `value` (deny if refused); `g`: deny with the value
/// read, or allow when missing; `d`: delete.
pub fn kv_guard(op: &str, value: &str) -> String {
    format!(
        r#"(module
  (import "env" "kv_get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "env" "kv_set" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "env" "kv_delete" (func $del (param i32 i32) (result i32)))
  (memory (export "memory") 32)
  {op} {value}
  (global $heap (mut i32) (i32.const 524288))
  (global $reason_len (mut i32) (i32.const -1))
  (func (export "chio_alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "chio_free") (param i32 i32) (global.set $heap (i32.const 524288)))
  (func (export "chio_deny_reason") (param $b i32) (param $n i32) (result i32)
    (if (i32.lt_s (global.get $reason_len) (i32.const 0)) (then (return (i32.const -1))))
    (memory.copy (local.get $b) (i32.const 1024) (global.get $reason_len))
    (global.get $reason_len))
  (func (export "evaluate") (param $p i32) (param $l i32) (result i32) (local $n i32) (local $op i32)
    (global.set $reason_len (i32.const -1))
    (local.set $op (i32.load8_u (i32.const 16)))
    (if (i32.eq (local.get $op) (i32.const 115))
      (then (return (if (result i32) (i32.eqz (call $set (local.get $p) (local.get $l) (i32.const 65536) (i32.const {vlen})))
        (then (i32.const 0)) (else (i32.const 1))))))
    (if (i32.eq (local.get $op) (i32.const 103))
      (then
        (local.set $n (call $get (local.get $p) (local.get $l) (i32.const 1024) (i32.const 4096)))
        (if (i32.lt_s (local.get $n) (i32.const 0)) (then (return (i32.const 0))))
        (global.set $reason_len (local.get $n))
        (return (i32.const 1))))
    (if (i32.eq (local.get $op) (i32.const 100)) (then (drop (call $del (local.get $p) (local.get $l)))))
    (i32.const 0))
)"#,
        op = data(16, op),
        value = data(65536, value),
        vlen = value.len(),
    )
}

fn plugin(rt: &Runtime, name: &str, op: &str, value: &str) -> Arc<Plugin> {
    rt.load(kv_guard(op, value).as_bytes(), PluginConfig::new(name).deadline(Duration::from_secs(10))).unwrap()
}

fn runtime(store: &Store) -> Runtime {
    Runtime::new(RuntimeConfig::default().kv(store.backend())).unwrap()
}

#[test]
fn on_every_backend_a_plugin_cannot_read_write_or_delete_another_plugins_keys_whatever_its_keys_hold() {
    let b = backends(Caps::default());
    for (backend, store) in &b.stores {
        let rt = runtime(store);
        assert_eq!(plugin(&rt, "b", "s", "secret").evaluate_json(b"k").unwrap(), GuardVerdict::Allow, "{backend}");
        let before = store.entries("b").unwrap();
        assert_eq!(before, vec![(b"k".to_vec(), b"secret".to_vec())], "{backend}");

        let (a_get, a_set, a_del) =
            (plugin(&rt, "a", "g", ""), plugin(&rt, "a", "s", "pwned"), plugin(&rt, "a", "d", ""));
        let mut keys: Vec<Vec<u8>> = [&b"k"[..], b"b/k", b"b:k", b"b\0k", b"../b/k", b"/b/k", b"\0", b"b", b""]
            .iter()
            .map(|k| k.to_vec())
            .collect();
        // What the Redis backend names its keys with: neither a field nor a namespace can reach them.
        keys.extend(
            ["helios:{62}:kv", "{62}", "helios:{62}:bytes", "62", "*", "b'); DROP TABLE helios_kv; --"]
                .map(|k| k.as_bytes().to_vec()),
        );
        keys.push(vec![0xff; limits::KV_MAX_KEY_BYTES]);
        keys.extend((0..=255u8).map(|c| vec![c]));
        keys.extend((0..=255u8).map(|c| vec![b'b', c, b'k']));
        for key in &keys {
            assert_eq!(
                a_get.evaluate_json(key).unwrap(),
                GuardVerdict::Allow,
                "{backend}: a read something under {key:?}"
            );
            a_set.evaluate_json(key).unwrap();
            a_del.evaluate_json(key).unwrap();
        }
        assert_eq!(store.entries("b").unwrap(), before, "{backend}: b's keys changed");
        assert!(store.entries("a").unwrap().is_empty(), "{backend}: a's deletes left keys behind");
        assert_eq!(plugin(&rt, "b", "g", "").evaluate_json(b"k").unwrap(), GuardVerdict::deny("secret"), "{backend}");
        // Namespaces that look alike stay apart too ("a" vs "a\0", a prefix of another).
        for ns in ["", "b\0", "bb", "B", "b:"] {
            assert!(store.get(ns, b"k").unwrap().is_none(), "{backend}: namespace {ns:?} sees b's key");
        }
    }
}

#[test]
fn on_every_backend_the_key_count_and_byte_caps_hold_and_overwrites_do_not_count_twice() {
    let caps = Caps { max_value_bytes: 6, max_keys: 2, max_bytes: 10 };
    let b = backends(caps);
    for (backend, store) in &b.stores {
        store.set("a", b"k1", b"12").unwrap();
        store.set("a", b"k1", b"1234").unwrap();
        store.set("a", b"k2", b"1").unwrap();
        assert_eq!(store.set("a", b"k3", b"1"), Err(StateError::TooManyKeys { limit: 2 }), "{backend}");
        assert_eq!(
            store.set("a", b"k2", b"123456"),
            Err(StateError::TooManyBytes { would: 14, limit: 10 }),
            "{backend}"
        );
        // Another namespace has its own caps.
        store.set("b", b"k3", b"1").unwrap();
        store.delete("a", b"k1").unwrap();
        store.delete("a", b"missing").unwrap();
        store.set("a", b"k3", b"1").unwrap();
        assert_eq!(
            store.entries("a").unwrap(),
            vec![(b"k2".to_vec(), b"1".to_vec()), (b"k3".to_vec(), b"1".to_vec())],
            "{backend}: a refused write changed something"
        );
        // Deleting everything gives the whole budget back.
        store.delete("a", b"k2").unwrap();
        store.delete("a", b"k3").unwrap();
        store.set("a", b"k4", b"123456").unwrap();
    }
}

#[test]
fn on_every_backend_a_guest_is_held_to_1024_keys_and_64_kib_values() {
    let b = backends(Caps::default());
    for (backend, store) in &b.stores {
        let rt = runtime(store);
        let big = "x".repeat(limits::KV_MAX_VALUE_BYTES + 1);
        assert!(!plugin(&rt, "big", "s", &big).evaluate_json(b"k").unwrap().is_allow(), "{backend}");
        assert!(store.entries("big").unwrap().is_empty(), "{backend}");
        let ok = plugin(&rt, "big", "s", &big[..limits::KV_MAX_VALUE_BYTES]);
        assert_eq!(ok.evaluate_json(b"k").unwrap(), GuardVerdict::Allow, "{backend}");

        let p = plugin(&rt, "many", "s", "v");
        for i in 0..limits::KV_MAX_KEYS {
            assert_eq!(
                p.evaluate_json(format!("key-{i}").as_bytes()).unwrap(),
                GuardVerdict::Allow,
                "{backend} key {i}"
            );
        }
        assert!(!p.evaluate_json(b"one-too-many").unwrap().is_allow(), "{backend}");
        assert_eq!(p.evaluate_json(b"key-0").unwrap(), GuardVerdict::Allow, "{backend}: overwrite refused");
        assert_eq!(store.entries("many").unwrap().len(), limits::KV_MAX_KEYS, "{backend}");
    }
}

/// `kv_max_keys`/`kv_max_bytes` of a `[[plugins]]` entry hold in SQLite and Redis as in memory: a
/// plugin's own cap applies to that plugin only, under the store's caps as the ceiling.
#[test]
fn on_every_backend_a_plugins_own_kv_caps_hold_for_that_plugin_under_the_stores() {
    let b = backends(Caps { max_keys: 4, ..Caps::default() });
    for (backend, store) in &b.stores {
        let rt = runtime(store);
        let load = |cfg: PluginConfig| {
            rt.load(kv_guard("s", "value").as_bytes(), cfg.deadline(Duration::from_secs(10))).unwrap()
        };
        let tight = load(PluginConfig::new("tight").kv_max_keys(2));
        let roomy = load(PluginConfig::new("roomy").kv_max_keys(6));
        let plain = load(PluginConfig::new("plain"));
        let stored = |p: &Plugin, n: usize| {
            (0..n).filter(|i| p.evaluate_json(format!("k{i}").as_bytes()).unwrap().is_allow()).count()
        };
        assert_eq!(stored(&tight, 8), 2, "{backend}: kv_max_keys = 2");
        assert_eq!(stored(&roomy, 8), 4, "{backend}: kv_max_keys = 6 is held to the store's 4");
        assert_eq!(stored(&plain, 8), 4, "{backend}: the store's max_keys = 4");
        let bytes = load(PluginConfig::new("bytes").kv_max_bytes(20));
        // Each key costs 2 + 5 bytes: two fit in 20, a third does not.
        assert_eq!(stored(&bytes, 8), 2, "{backend}: kv_max_bytes = 20");
        assert_eq!(store.entries("tight").unwrap().len(), 2, "{backend}");
    }
}
