//! Linear memory and tables: growth past the caps, and the pointers and lengths an export hands back to
//! the host (results, allocator answers, deny reasons).

use helios_plugin_host::{Chain, FailureKind, OnError, PluginConfig};
use helios_plugin_schema::{GuardRequest, GuardVerdict, PreQueryResult, QueryContext, abi, hooks::spec, limits};

use super::{CONTINUE, assert_policies, both, denied_because, host_intact, hostile, q, same};
use crate::support::{data, runtime};

#[test]
fn memory_growth_past_the_cap_is_named_under_every_policy() {
    let (rt, _) = runtime();
    let wat = both("", "", "(drop (memory.grow (i32.const 1000)))");
    assert_policies(
        &rt,
        wat.as_bytes(),
        "grow",
        same,
        "memory limit: grow to 65667072 bytes refused (cap 16777216 bytes)",
    );
    let small =
        rt.load(both("", "", "(drop (memory.grow (i32.const 16)))").as_bytes(), PluginConfig::new("grow-ok")).unwrap();
    assert_eq!(small.evaluate(&GuardRequest::default()), GuardVerdict::Allow, "growing under the cap is fine");
}

#[test]
fn asking_for_4_gib_of_memory_is_never_granted() {
    let (rt, _) = runtime();
    // memory.grow by 0xffff_ffff pages: wasm says it returns -1; a trap naming the cap is also safe.
    // Growing would reach `unreachable`, and that deny reason would fail the test.
    let wat = both("", "", "(if (i32.ne (memory.grow (i32.const -1)) (i32.const -1)) (then unreachable))");
    let p = rt.load(wat.as_bytes(), PluginConfig::new("four-gib")).unwrap();
    match p.try_evaluate(&GuardRequest::default()) {
        Ok(GuardVerdict::Allow) => {}
        Err(e) => assert!(matches!(e.kind, FailureKind::MemoryLimit { .. }), "{e}"),
        Ok(other) => panic!("{other:?}"),
    }
    host_intact(&rt);
}

#[test]
fn an_sdk_guest_asking_its_allocator_for_1_gib_hits_the_memory_cap_under_every_policy() {
    let (rt, _) = runtime();
    assert_policies(&rt, &hostile("hostile-sdk"), "alloc-bomb", |c| c.config("behavior", "alloc_bomb"), "memory limit");
}

#[test]
fn table_growth_past_the_cap_is_named_under_every_policy() {
    let (rt, _) = runtime();
    let wat = both("", "(table 1 funcref)", "(drop (table.grow (ref.null func) (i32.const 100000)))");
    assert_policies(&rt, wat.as_bytes(), "tables", same, "table limit: grow to 100001 elements refused (cap 10000)");
}

#[test]
fn an_initial_memory_over_the_cap_fails_to_instantiate_naming_the_limit() {
    let (rt, _) = runtime();
    let wat = r#"(module (memory (export "memory") 512) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#;
    let p = rt.load(wat.as_bytes(), PluginConfig::new("fat")).unwrap();
    denied_because(&p, "memory limit");
}

#[test]
fn hook_results_pointing_past_memory_or_over_the_cap_are_named_errors_under_every_policy() {
    let (rt, _) = runtime();
    let wasm = hostile("hostile-raw");
    for (result, cause) in [
        ("past_end", "bad result from export pre_query: result range"),
        ("max", "bad result from export pre_query: result of 4294967295 bytes is over the 4194304-byte cap"),
        ("huge_len", "bad result from export pre_query: result of 4194305 bytes is over the 4194304-byte cap"),
        ("echo", "bad result from export pre_query: malformed JSON result"),
    ] {
        let name = format!("result-{result}");
        let skip = rt.load(&wasm, PluginConfig::new(format!("{name}-skip")).config("result", result)).unwrap();
        let abort = rt
            .load(&wasm, PluginConfig::new(format!("{name}-abort")).config("result", result).on_error(OnError::Abort))
            .unwrap();
        let out = Chain::new(vec![skip]).pre_query(&q());
        assert_eq!(out.result, PreQueryResult::Continue, "{name}");
        assert!(out.skipped[0].to_string().contains(cause), "{name}: {}", out.skipped[0]);
        let out = Chain::new(vec![abort]).pre_query(&q());
        let PreQueryResult::Block { reason } = out.result else { panic!("{name}: not blocked") };
        assert!(reason.contains(cause) && reason.contains(&format!("{name}-abort")), "{name}: {reason}");
    }
    // Hand-written hooks: an allocator past memory, results past the end or 4 GiB long, malformed
    // JSON, and an empty result (read as `null`, which is no `PreQueryResult`).
    let hook = |alloc_ret: &str, result: &str, data: &str| {
        format!(
            r#"(module (memory (export "memory") 1) {data}
            (func (export "alloc") (param i32) (result i32) {alloc_ret})
            (func (export "pre_query") (param i32 i32) (result i64) {result}))"#
        )
    };
    let cases = [
        (abi::ALLOC, hook("(i32.const 0x7ffffff0)", "(i64.const 0)", "")),
        ("pre_query", hook("(i32.const 1024)", "(i64.const 0x00fffff000000010)", "")),
        ("pre_query", hook("(i32.const 1024)", "(i64.const 0x00000000ffffffff)", "")),
        ("pre_query", hook("(i32.const 1024)", "(i64.const 0x0000000000000005)", r#"(data (i32.const 0) "{bad}")"#)),
        ("pre_query", hook("(i32.const 1024)", "(i64.const 0)", "")),
    ];
    for (i, (export, wat)) in cases.iter().enumerate() {
        let p = rt.load(wat.as_bytes(), PluginConfig::new(format!("bad-result-{i}"))).unwrap();
        let err = p.call::<spec::PreQuery>(&QueryContext::default()).unwrap_err();
        match &err.kind {
            FailureKind::BadResult { export: got, .. } => assert_eq!(got, export, "case {i}: {err}"),
            other => panic!("case {i}: expected a bad result, got {other}"),
        }
    }
    host_intact(&rt);
}

#[test]
fn hook_allocators_returning_garbage_are_named_errors_under_every_policy() {
    let (rt, _) = runtime();
    let wasm = hostile("hostile-raw");
    for (alloc, cause) in [
        ("oob", "bad result from export alloc: returned a buffer that does not fit the input"),
        ("wrap", "bad result from export alloc: returned a buffer that does not fit the input"),
        ("zero", "bad result from export alloc: returned a null pointer"),
        // The input lands on the guest's own result JSON: the guest only corrupts itself.
        ("overlap", "bad result from export pre_query: malformed JSON result"),
    ] {
        let name = format!("alloc-{alloc}");
        let skip = rt.load(&wasm, PluginConfig::new(format!("{name}-skip")).config(abi::ALLOC, alloc)).unwrap();
        let abort = rt
            .load(&wasm, PluginConfig::new(format!("{name}-abort")).config(abi::ALLOC, alloc).on_error(OnError::Abort))
            .unwrap();
        let out = Chain::new(vec![skip]).pre_query(&q());
        assert_eq!(out.result, PreQueryResult::Continue, "{name}");
        assert!(out.skipped[0].to_string().contains(cause), "{name}: {}", out.skipped[0]);
        let PreQueryResult::Block { reason } = Chain::new(vec![abort]).pre_query(&q()).result else {
            panic!("{name}: not blocked")
        };
        assert!(reason.contains(cause), "{name}: {reason}");
    }
    host_intact(&rt);
}

#[test]
fn guard_allocators_returning_garbage_fall_back_to_offset_zero_as_chio_does() {
    let (rt, _) = runtime();
    let wasm = hostile("hostile-raw");
    for alloc in ["oob", "wrap", "zero"] {
        // The request and the deny-reason buffer go to offset 0 of the guest's own memory.
        let allow = rt.load(&wasm, PluginConfig::new(format!("chio-alloc-{alloc}")).config(abi::ALLOC, alloc)).unwrap();
        assert_eq!(allow.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow, "{alloc}");
        let deny = rt
            .load(
                &wasm,
                PluginConfig::new(format!("chio-alloc-{alloc}-deny"))
                    .config(abi::ALLOC, alloc)
                    .config("attack", "deny_all"),
            )
            .unwrap();
        assert_eq!(
            deny.try_evaluate(&GuardRequest::default()).unwrap(),
            GuardVerdict::deny("hostile-raw denies everything"),
            "{alloc}"
        );
    }
    // The request lands at offset 0: evaluate checks the first byte is '{'.
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "chio_alloc") (param i32) (result i32) (i32.const -16))
        (func (export "evaluate") (param $p i32) (param $l i32) (result i32)
          (if (result i32) (i32.and (i32.eqz (local.get $p)) (i32.eq (i32.load8_u (i32.const 0)) (i32.const 123)))
            (then (i32.const 0)) (else (i32.const 1)))))"#;
    let p = rt.load(wat.as_bytes(), PluginConfig::new("garbage-alloc")).unwrap();
    assert_eq!(p.evaluate_json(br#"{"tool_name":"x"}"#).unwrap(), GuardVerdict::Allow);
    host_intact(&rt);
}

#[test]
fn deny_reasons_longer_than_the_buffer_or_negative_are_named_errors_and_still_deny() {
    let (rt, _) = runtime();
    let wasm = hostile("hostile-raw");
    for (reason, n) in [("over", limits::DENY_REASON_BUFFER_BYTES as i32 + 1), ("negative", -7)] {
        let name = format!("reason-{reason}");
        let p = rt.load(&wasm, PluginConfig::new(&name).config("attack", "deny_all").config("reason", reason)).unwrap();
        let err = p.try_evaluate(&GuardRequest::default()).unwrap_err();
        assert!(matches!(&err.kind, FailureKind::BadResult { export, .. } if export == abi::CHIO_DENY_REASON), "{err}");
        assert!(err.to_string().contains(&format!("returned {n} bytes")), "{err}");
        let GuardVerdict::Deny { reason } = p.evaluate(&GuardRequest::default()) else { panic!("{name} allowed") };
        assert!(reason.contains(abi::CHIO_DENY_REASON) && reason.contains(&name), "{reason}");
    }
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "chio_deny_reason") (param i32 i32) (result i32) (i32.const 99999))
        (func (export "evaluate") (param i32 i32) (result i32) (i32.const 1)))"#;
    let p = rt.load(wat.as_bytes(), PluginConfig::new("long-reason")).unwrap();
    let reason = match p.evaluate(&GuardRequest::default()) {
        GuardVerdict::Deny { reason } => reason,
        GuardVerdict::Allow => panic!("long-reason allowed"),
    };
    assert!(reason.contains(abi::CHIO_DENY_REASON) && reason.contains("99999"), "{reason}");
}

/// A guest serving both conventions that inspects what the host left in its memory: the 8 KiB after
/// its input must all be zero (else it denies / blocks naming "stale bytes"), and its allocator may
/// have run at most `max_allocs` times (else "allocated again"). Its allocator hands a freed buffer
/// out again, as real ones do.
fn inspector(max_allocs: u32) -> String {
    let stale = "stale bytes past the input";
    let again = "the input was allocated again";
    let block = |reason: &str| format!(r#"{{"kind":"block","reason":"{reason}"}}"#);
    let (block_stale, block_again) = (block(stale), block(again));
    let packed = |at: u32, s: &str| abi::pack_ptr_len(at, s.len() as u32);
    format!(
        r#"(module
  (memory (export "memory") 4)
  {cont} {stale_data} {again_data} {block_stale_data} {block_again_data}
  (global $heap (mut i32) (i32.const 4096))
  (global $allocs (mut i32) (i32.const 0))
  (global $why (mut i32) (i32.const 0))
  (func $alloc (export "alloc") (param $n i32) (result i32) (local $p i32)
    (global.set $allocs (i32.add (global.get $allocs) (i32.const 1)))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  ;; Frees the topmost buffer (a stack allocator): a freed buffer is the next one handed out.
  (func $free (export "dealloc") (param $p i32) (param $n i32)
    (if (i32.eq (i32.add (local.get $p) (local.get $n)) (global.get $heap)) (then (global.set $heap (local.get $p)))))
  (func (export "chio_alloc") (param $n i32) (result i32) (call $alloc (local.get $n)))
  (func (export "chio_free") (param $p i32) (param $n i32) (call $free (local.get $p) (local.get $n)))
  ;; 0: clean; 1: a non-zero byte in the 8 KiB after the input; 2: the allocator ran too often
  (func $inspect (param $p i32) (param $l i32) (result i32) (local $i i32) (local $end i32)
    (if (i32.gt_u (global.get $allocs) (i32.const {max_allocs})) (then (return (i32.const 2))))
    (local.set $i (i32.add (local.get $p) (local.get $l)))
    (local.set $end (i32.add (local.get $i) (i32.const 8192)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
      (if (i32.load8_u (local.get $i)) (then (return (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.const 0))
  (func (export "evaluate") (param $p i32) (param $l i32) (result i32)
    (global.set $why (call $inspect (local.get $p) (local.get $l)))
    (i32.ne (global.get $why) (i32.const 0)))
  (func (export "chio_deny_reason") (param $b i32) (param $n i32) (result i32)
    (if (i32.eq (global.get $why) (i32.const 1))
      (then (memory.copy (local.get $b) (i32.const 128) (i32.const {stale_len})) (return (i32.const {stale_len}))))
    (memory.copy (local.get $b) (i32.const 256) (i32.const {again_len}))
    (i32.const {again_len}))
  (func (export "pre_query") (param $p i32) (param $l i32) (result i64) (local $w i32)
    (local.set $w (call $inspect (local.get $p) (local.get $l)))
    (if (result i64) (i32.eqz (local.get $w))
      (then (i64.const {cont_packed}))
      (else (if (result i64) (i32.eq (local.get $w) (i32.const 1))
        (then (i64.const {stale_packed}))
        (else (i64.const {again_packed}))))))
)"#,
        cont = data(64, CONTINUE),
        stale_data = data(128, stale),
        again_data = data(256, again),
        block_stale_data = data(512, &block_stale),
        block_again_data = data(768, &block_again),
        stale_len = stale.len(),
        again_len = again.len(),
        cont_packed = packed(64, CONTINUE),
        stale_packed = packed(512, &block_stale),
        again_packed = packed(768, &block_again),
    )
}

/// An input of exactly `len` bytes, none of them zero.
fn input_of(len: usize) -> Vec<u8> {
    let mut v = b"{\"tool_name\":\"".to_vec();
    v.resize(len - 2, b'S');
    v.extend_from_slice(b"\"}");
    v
}

/// The host keeps each instance's input buffer across calls (no allocator round trip per call):
/// that must never let a guest see an earlier call's input. Inputs shrink (the tail of the longer
/// one is zeroed), grow past the kept buffer (the old buffer is zeroed before it is handed back) and
/// pass the kept size (their one-call buffer is zeroed before it is freed); after each, the guest
/// reads 8 KiB past its input — reaching the earlier buffers — and finds only zeros.
#[test]
fn a_guest_never_sees_an_earlier_input_past_its_own() {
    let (rt, _) = runtime();
    let guard = rt.load(inspector(u32::MAX).as_bytes(), PluginConfig::new("inspector-guard")).unwrap();
    let hook = rt.load(inspector(u32::MAX).as_bytes(), PluginConfig::new("inspector-hook")).unwrap();
    for len in [900, 20, 3000, 20, 70_000, 20, 900, 20] {
        let input = input_of(len);
        assert_eq!(guard.evaluate_json(&input).unwrap(), GuardVerdict::Allow, "guard, input of {len} bytes");
        let out = hook.call_json(helios_plugin_schema::Hook::PreQuery, &input).unwrap();
        assert_eq!(String::from_utf8_lossy(&out), CONTINUE, "pre_query, input of {len} bytes");
    }
    assert_eq!(guard.stats().instances_created, 1, "one instance served every call");
    assert_eq!(hook.stats().instances_created, 1, "one instance served every call");
}

/// The same guest allowing one allocation: a pooled instance writes every input up to the kept
/// size into the buffer it got on its first call.
#[test]
fn a_pooled_instance_allocates_its_input_buffer_once() {
    let (rt, _) = runtime();
    let guard = rt.load(inspector(1).as_bytes(), PluginConfig::new("once-guard")).unwrap();
    let hook = rt.load(inspector(1).as_bytes(), PluginConfig::new("once-hook")).unwrap();
    for len in (0..100).map(|i| 16 + (i * 37) % 1000) {
        let input = input_of(len);
        assert_eq!(guard.evaluate_json(&input).unwrap(), GuardVerdict::Allow, "guard, input of {len} bytes");
        let out = hook.call_json(helios_plugin_schema::Hook::PreQuery, &input).unwrap();
        assert_eq!(String::from_utf8_lossy(&out), CONTINUE, "pre_query, input of {len} bytes");
    }
    // The check itself works: a second buffer (an input larger than the kept one) is reported.
    assert_eq!(
        guard.evaluate_json(&input_of(5000)).unwrap(),
        GuardVerdict::deny("the input was allocated again"),
        "the guest counts allocations"
    );
}
