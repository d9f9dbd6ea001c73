//! The atomic host imports (`env.kv_add`, `env.kv_cas`) from a guest, over every backend: two
//! threads of guest calls lose no add, compare-and-swap reports conflicts, and a dead store gives
//! `KV_UNAVAILABLE` (atomic imports) or a call failure naming the store (`kv_get`), never "missing".

use std::{sync::Arc, thread, time::Duration};

use helios_plugin_host::{Plugin, PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{GuardVerdict, abi};
use helios_plugin_state::{Caps, RedisKv, Store};

use crate::support::{RedisServer, backends, redis_options};

/// config-free guard: the request bytes are `<op><key>`; op `a` = kv_add(key, 1), `c` =
/// kv_cas(key, expect missing, "v"), `g` = kv_get(key). Allows on KV_OK / a value read; otherwise
/// denies with the return code as reason (`-5`, `1`, ...).
fn atomic_guard() -> String {
    r#"(module
  (import "env" "kv_add" (func $add (param i32 i32 i64 i32) (result i32)))
  (import "env" "kv_cas" (func $cas (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "kv_get" (func $get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "v")
  (global $heap (mut i32) (i32.const 8192))
  (global $reason_len (mut i32) (i32.const -1))
  (func (export "chio_alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "chio_free") (param i32 i32) (global.set $heap (i32.const 8192)))
  (func (export "chio_deny_reason") (param $b i32) (param $n i32) (result i32)
    (if (i32.lt_s (global.get $reason_len) (i32.const 0)) (then (return (i32.const -1))))
    (memory.copy (local.get $b) (i32.const 1024) (global.get $reason_len))
    (global.get $reason_len))
  (func $code (param $rc i32) (result i32)
    (if (i32.eqz (local.get $rc)) (then (return (i32.const 0))))
    (if (i32.lt_s (local.get $rc) (i32.const 0))
      (then (i32.store8 (i32.const 1024) (i32.const 45))
            (i32.store8 (i32.const 1025) (i32.sub (i32.const 48) (local.get $rc)))
            (global.set $reason_len (i32.const 2)))
      (else (i32.store8 (i32.const 1024) (i32.add (i32.const 48) (local.get $rc)))
            (global.set $reason_len (i32.const 1))))
    (i32.const 1))
  (func (export "evaluate") (param $p i32) (param $l i32) (result i32) (local $op i32) (local $k i32) (local $kl i32)
    (global.set $reason_len (i32.const -1))
    (local.set $op (i32.load8_u (local.get $p)))
    (local.set $k (i32.add (local.get $p) (i32.const 1)))
    (local.set $kl (i32.sub (local.get $l) (i32.const 1)))
    (if (i32.eq (local.get $op) (i32.const 97))
      (then (return (call $code (call $add (local.get $k) (local.get $kl) (i64.const 1) (i32.const 128))))))
    (if (i32.eq (local.get $op) (i32.const 99))
      (then (return (call $code (call $cas (local.get $k) (local.get $kl) (i32.const 0) (i32.const -1) (i32.const 64) (i32.const 1))))))
    (if (i32.lt_s (call $get (local.get $k) (local.get $kl) (i32.const 2048) (i32.const 64)) (i32.const 0))
      (then (return (call $code (i32.const -1)))))
    (i32.const 0))
)"#
    .into()
}

fn load(store: &Store, name: &str) -> Arc<Plugin> {
    let rt = Runtime::new(RuntimeConfig::default().kv(store.backend())).unwrap();
    rt.load(atomic_guard().as_bytes(), PluginConfig::new(name).deadline(Duration::from_secs(10))).unwrap()
}

#[test]
fn on_every_backend_two_threads_of_guest_kv_add_lose_no_update_and_kv_cas_reports_conflicts() {
    let b = backends(Caps::default());
    let n = 5_000;
    for (backend, store) in &b.stores {
        let p = load(store, "counter");
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let p = p.clone();
                thread::spawn(move || {
                    (0..n).for_each(|_| assert_eq!(p.evaluate_json(b"an").unwrap(), GuardVerdict::Allow))
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(store.get("counter", b"n").unwrap(), Some((2 * n).to_string().into_bytes()), "{backend}");

        assert_eq!(p.evaluate_json(b"ctail").unwrap(), GuardVerdict::Allow, "{backend}: first swap");
        let conflict = abi::KV_CAS_CONFLICT.to_string();
        assert_eq!(p.evaluate_json(b"ctail").unwrap(), GuardVerdict::deny(conflict.as_str()), "{backend}");
        store.set("counter", b"text", b"abc").unwrap();
        let not_a_counter = abi::KV_NOT_A_COUNTER.to_string();
        assert_eq!(p.evaluate_json(b"atext").unwrap(), GuardVerdict::deny(not_a_counter.as_str()), "{backend}");
        assert_eq!(store.get("counter", b"text").unwrap(), Some(b"abc".to_vec()), "{backend}");
    }
}

#[test]
fn a_dead_redis_is_kv_unavailable_for_atomic_imports_and_a_failed_call_naming_it_for_kv_get() {
    let mut server = RedisServer::start();
    let store = Store::Redis(RedisKv::connect(&server.url(), Caps::default(), redis_options()).unwrap().into());
    let p = load(&store, "budget");
    assert_eq!(p.evaluate_json(b"aspent").unwrap(), GuardVerdict::Allow);
    server.kill();
    let unavailable = abi::KV_UNAVAILABLE.to_string();
    assert_eq!(p.evaluate_json(b"aspent").unwrap(), GuardVerdict::deny(unavailable.as_str()));
    assert_eq!(p.evaluate_json(b"ctail").unwrap(), GuardVerdict::deny(unavailable.as_str()));
    // kv_get has no code for it: the call fails, naming the plugin and the store.
    let e = p.evaluate_json(b"gspent").unwrap_err().to_string();
    assert!(e.starts_with("plugin \"budget\": bad call to import env.kv_get: state store failed"), "{e}");
    assert!(e.contains(&format!("redis 127.0.0.1:{}/0 unavailable", server.port)), "{e}");
    server.restart();
    assert_eq!(p.evaluate_json(b"aspent").unwrap(), GuardVerdict::Allow, "no recovery after the restart");
}
