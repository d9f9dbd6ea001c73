//! Shared helpers: a runtime with a log sink, and WAT module builders.

use std::sync::Arc;

use helios_plugin_host::{MemoryLogSink, Runtime, RuntimeConfig};

pub fn runtime() -> (Runtime, Arc<MemoryLogSink>) {
    let sink = MemoryLogSink::new();
    let rt = Runtime::new(RuntimeConfig::default().log_sink(sink.clone())).expect("runtime");
    (rt, sink)
}

/// A WAT data segment holding `s` at `offset`.
pub fn data(offset: u32, s: &str) -> String {
    let escaped: String = s.bytes().map(|b| format!("\\{b:02x}")).collect();
    format!("(data (i32.const {offset}) \"{escaped}\")")
}

/// A hook plugin (pre_query and route) scripted by config:
/// `action` = `b`lock / `r`ewrite / `n`ode / `t`rap / anything else: no opinion;
/// it acts only when the input JSON contains `needle` (empty: always); `text` is the block reason,
/// the rewritten SQL or the node.
pub fn scripted_hook() -> String {
    let cont = r#"{"kind":"continue"}"#;
    let block = r#"{"kind":"block","reason":""#;
    let rewrite = r#"{"kind":"rewrite","sql":""#;
    let node = r#"{"action":"node","target":""#;
    let default = r#"{"action":"default"}"#;
    format!(
        r#"(module
  (import "chio" "get_config" (func $cfg (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  {d_action} {d_needle} {d_text} {d_cont} {d_block} {d_rewrite} {d_end} {d_node} {d_default}
  (global $heap (mut i32) (i32.const 8192))
  (func (export "alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "dealloc") (param i32 i32) (global.set $heap (i32.const 8192)))
  (func $contains (param $h i32) (param $hl i32) (param $n i32) (param $nl i32) (result i32) (local $i i32) (local $j i32)
    (if (i32.eqz (local.get $nl)) (then (return (i32.const 1))))
    (block $done
      (loop $outer
        (br_if $done (i32.gt_u (i32.add (local.get $i) (local.get $nl)) (local.get $hl)))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $inner
            (br_if $mismatch (i32.ne (i32.load8_u (i32.add (local.get $h) (i32.add (local.get $i) (local.get $j))))
                                     (i32.load8_u (i32.add (local.get $n) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br_if $inner (i32.lt_u (local.get $j) (local.get $nl)))
            (return (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (i32.const 0))
  (func $respond (param $pp i32) (param $pl i32) (result i64) (local $tl i32) (local $o i32)
    (memory.copy (i32.const 4096) (local.get $pp) (local.get $pl))
    (local.set $o (i32.add (i32.const 4096) (local.get $pl)))
    (local.set $tl (call $cfg (i32.const 48) (i32.const 4) (local.get $o) (i32.const 1024)))
    (if (i32.lt_s (local.get $tl) (i32.const 0)) (then (local.set $tl (i32.const 0))))
    (local.set $o (i32.add (local.get $o) (local.get $tl)))
    (memory.copy (local.get $o) (i32.const 400) (i32.const 2))
    (i64.or (i64.shl (i64.const 4096) (i64.const 32))
            (i64.extend_i32_u (i32.sub (i32.add (local.get $o) (i32.const 2)) (i32.const 4096)))))
  (func $run (param $p i32) (param $l i32) (param $dp i32) (param $dl i32) (result i64) (local $nl i32) (local $act i32)
    (i32.store8 (i32.const 0) (i32.const 0))
    (drop (call $cfg (i32.const 16) (i32.const 6) (i32.const 0) (i32.const 1)))
    (local.set $act (i32.load8_u (i32.const 0)))
    (local.set $nl (call $cfg (i32.const 32) (i32.const 6) (i32.const 2048) (i32.const 1024)))
    (if (i32.lt_s (local.get $nl) (i32.const 0)) (then (local.set $nl (i32.const 0))))
    (if (i32.eqz (call $contains (local.get $p) (local.get $l) (i32.const 2048) (local.get $nl)))
      (then (return (i64.or (i64.shl (i64.extend_i32_u (local.get $dp)) (i64.const 32)) (i64.extend_i32_u (local.get $dl))))))
    (if (i32.eq (local.get $act) (i32.const 98)) (then (return (call $respond (i32.const 128) (i32.const {block_len})))))
    (if (i32.eq (local.get $act) (i32.const 114)) (then (return (call $respond (i32.const 256) (i32.const {rewrite_len})))))
    (if (i32.eq (local.get $act) (i32.const 110)) (then (return (call $respond (i32.const 512) (i32.const {node_len})))))
    (if (i32.eq (local.get $act) (i32.const 116)) (then unreachable))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $dp)) (i64.const 32)) (i64.extend_i32_u (local.get $dl))))
  (func (export "pre_query") (param i32 i32) (result i64)
    (call $run (local.get 0) (local.get 1) (i32.const 64) (i32.const {cont_len})))
  (func (export "route") (param i32 i32) (result i64)
    (call $run (local.get 0) (local.get 1) (i32.const 640) (i32.const {default_len})))
)"#,
        d_action = data(16, "action"),
        d_needle = data(32, "needle"),
        d_text = data(48, "text"),
        d_cont = data(64, cont),
        d_block = data(128, block),
        d_rewrite = data(256, rewrite),
        d_end = data(400, "\"}"),
        d_node = data(512, node),
        d_default = data(640, default),
        cont_len = cont.len(),
        block_len = block.len(),
        rewrite_len = rewrite.len(),
        node_len = node.len(),
        default_len = default.len(),
    )
}

/// A guard whose `evaluate` runs `body` (WAT instructions leaving an i32 verdict) with the request at
/// `$p`/`$l`; a bump `chio_alloc` from 64 KiB; `chio_deny_reason` copies `$reason_len` bytes from
/// offset 1024. `imports` are extra import declarations.
pub fn guard(imports: &str, body: &str) -> String {
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 32)
  (global $heap (mut i32) (i32.const 65536))
  (global $reason_len (mut i32) (i32.const -1))
  (func (export "chio_alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "chio_free") (param i32 i32) (global.set $heap (i32.const 65536)))
  (func (export "chio_deny_reason") (param $b i32) (param $n i32) (result i32)
    (if (i32.lt_s (global.get $reason_len) (i32.const 0)) (then (return (i32.const -1))))
    (memory.copy (local.get $b) (i32.const 1024) (global.get $reason_len))
    (global.get $reason_len))
  (func (export "evaluate") (param $p i32) (param $l i32) (result i32)
    {body})
)"#
    )
}
