//! KV namespacing and caps, driven by a WAT guard whose request bytes are the key.

use helios_plugin_host::{Plugin, PluginConfig, Runtime};
use helios_plugin_schema::{GuardVerdict, limits};
use std::sync::Arc;

use crate::support::{data, guard, runtime};

/// op `s`: set key = request to config `value` (deny if refused); `g`: deny with the value read, or
/// allow when missing; `d`: delete.
fn kv_guard() -> String {
    let imports = r#"(import "env" "kv_get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "env" "kv_set" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "env" "kv_delete" (func $del (param i32 i32) (result i32)))
  (import "chio" "get_config" (func $cfg (param i32 i32 i32 i32) (result i32)))"#;
    let body = r#"(local $vl i32) (local $n i32) (local $op i32)
    (i32.store8 (i32.const 0) (i32.const 0))
    (drop (call $cfg (i32.const 16) (i32.const 2) (i32.const 0) (i32.const 1)))
    (local.set $op (i32.load8_u (i32.const 0)))
    (local.set $vl (call $cfg (i32.const 32) (i32.const 5) (i32.const 1048576) (i32.const 200000)))
    (if (i32.lt_s (local.get $vl) (i32.const 0)) (then (local.set $vl (i32.const 0))))
    (if (i32.eq (local.get $op) (i32.const 115))
      (then (return (if (result i32) (i32.eqz (call $set (local.get $p) (local.get $l) (i32.const 1048576) (local.get $vl)))
        (then (i32.const 0)) (else (i32.const 1))))))
    (if (i32.eq (local.get $op) (i32.const 103))
      (then
        (local.set $n (call $get (local.get $p) (local.get $l) (i32.const 1024) (i32.const 4096)))
        (if (i32.lt_s (local.get $n) (i32.const 0)) (then (return (i32.const 0))))
        (global.set $reason_len (local.get $n))
        (return (i32.const 1))))
    (if (i32.eq (local.get $op) (i32.const 100)) (then (drop (call $del (local.get $p) (local.get $l)))))
    (i32.const 0)"#;
    guard(imports, body).replace(
        "(memory (export \"memory\") 32)",
        &format!("(memory (export \"memory\") 32) {} {}", data(16, "op"), data(32, "value")),
    )
}

pub(crate) fn kv_plugin(rt: &Runtime, name: &str, op: &str, value: &str) -> Arc<Plugin> {
    // A generous deadline: this test is about namespaces, and runs hundreds of calls on loaded CI machines.
    rt.load(
        kv_guard().as_bytes(),
        PluginConfig::new(name).config("op", op).config("value", value).deadline(std::time::Duration::from_secs(10)),
    )
    .unwrap()
}

#[test]
fn a_plugin_cannot_read_write_or_delete_another_plugins_keys_whatever_bytes_its_keys_hold() {
    let (rt, _) = runtime();
    let b_set = kv_plugin(&rt, "b", "s", "secret");
    assert_eq!(b_set.evaluate_json(b"k").unwrap(), GuardVerdict::Allow);
    let before = rt.kv().entries("b");
    assert_eq!(before, vec![(b"k".to_vec(), b"secret".to_vec())]);

    let a_get = kv_plugin(&rt, "a", "g", "");
    let a_set = kv_plugin(&rt, "a", "s", "pwned");
    let a_del = kv_plugin(&rt, "a", "d", "");
    let mut keys: Vec<Vec<u8>> = vec![
        b"k".to_vec(),
        b"b/k".to_vec(),
        b"b:k".to_vec(),
        b"b\0k".to_vec(),
        b"../b/k".to_vec(),
        b"/b/k".to_vec(),
        b"\0".to_vec(),
        b"b".to_vec(),
        b"".to_vec(),
        vec![0xff; limits::KV_MAX_KEY_BYTES],
    ];
    keys.extend((0..=255u8).map(|b| vec![b]));
    keys.extend((0..=255u8).map(|b| vec![b'b', b, b'k']));
    for key in &keys {
        assert_eq!(a_get.evaluate_json(key).unwrap(), GuardVerdict::Allow, "a read something under key {key:?}");
        a_set.evaluate_json(key).unwrap();
        a_del.evaluate_json(key).unwrap();
    }
    assert_eq!(rt.kv().entries("b"), before, "b's keys changed");
    let b_get = kv_plugin(&rt, "b", "g", "");
    assert_eq!(b_get.evaluate_json(b"k").unwrap(), GuardVerdict::deny("secret"));
}

#[test]
fn each_plugin_is_held_to_its_own_kv_caps_not_a_runtime_wide_one() {
    let (rt, _) = runtime();
    let cfg = PluginConfig::new("small").config("op", "s").config("value", "v");
    let small =
        rt.load(kv_guard().as_bytes(), cfg.kv_max_keys(2).deadline(std::time::Duration::from_secs(10))).unwrap();
    let big = kv_plugin(&rt, "big", "s", "v");
    for key in [&b"k1"[..], b"k2", b"k3"] {
        assert_eq!(big.evaluate_json(key).unwrap(), GuardVerdict::Allow, "big stores {key:?}");
    }
    assert_eq!(small.evaluate_json(b"k1").unwrap(), GuardVerdict::Allow);
    assert_eq!(small.evaluate_json(b"k2").unwrap(), GuardVerdict::Allow);
    assert!(!small.evaluate_json(b"k3").unwrap().is_allow(), "a third key is over small's cap of 2");
    assert_eq!(small.evaluate_json(b"k1").unwrap(), GuardVerdict::Allow, "overwriting a key stays within the cap");
    assert_eq!(rt.kv().entries("small").len(), 2);
    assert_eq!(rt.kv().entries("big").len(), 3);
}
