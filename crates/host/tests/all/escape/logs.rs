//! Guest logs and panics: floods over the per-call caps, levels outside the range, panics with and
//! without a message, and a panic after a flood.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use helios_plugin_host::{FailureKind, Level, PluginConfig};
use helios_plugin_schema::{GuardRequest, GuardVerdict, abi, limits};

use super::{assert_policies, denied_because, hostile, logged, raw};
use crate::support::{guard, runtime};

/// What the host itself logs through `tracing` at WARN and above, from every thread of this test
/// binary (a global subscriber, installed once; a scoped one misses events while other tests run).
fn host_warnings() -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static CAPTURE: OnceLock<Buf> = OnceLock::new();
    let buf = CAPTURE.get_or_init(|| {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other test installs a global subscriber");
        buf
    });
    String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned()
}

#[test]
fn a_log_flood_reaches_the_sink_as_256_capped_lines_per_call_and_the_host_warns_about_the_rest() {
    let (rt, sink) = runtime();
    let p = rt.load(&hostile("hostile-raw"), raw("log_flood").deadline(Duration::from_secs(5))).unwrap();
    host_warnings();
    for call in 1..=2 {
        assert_eq!(p.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
        let lines = sink.drain();
        assert_eq!(lines.len(), limits::LOG_MAX_ENTRIES_PER_CALL as usize, "call {call}");
        assert!(
            lines
                .iter()
                .all(|(p, l, m)| p == "raw-log_flood" && *l == Level::Info && m.len() == limits::LOG_MAX_MESSAGE_BYTES)
        );
        let dropped = 1000 - limits::LOG_MAX_ENTRIES_PER_CALL;
        let warnings = host_warnings();
        let warned = warnings
            .lines()
            .filter(|l| {
                l.contains("WARN")
                    && l.split_whitespace().any(|t| t == "plugin=raw-log_flood")
                    && l.contains(&format!("dropped={dropped}"))
            })
            .count();
        assert_eq!(warned, call, "call {call}: the host did not warn about {dropped} dropped lines: {warnings}");
    }
}

#[test]
fn a_panic_after_a_log_flood_is_still_reported_as_the_cause() {
    let (rt, sink) = runtime();
    let p = rt.load(&hostile("hostile-raw"), raw("log_flood_then_panic").deadline(Duration::from_secs(5))).unwrap();
    let err = p.try_evaluate(&GuardRequest::default()).unwrap_err();
    assert_eq!(err.kind, FailureKind::GuestPanic { message: "hostile-raw: flooded, then died".into() }, "{err}");
    let lines = sink.lines();
    assert_eq!(lines.len(), limits::LOG_MAX_ENTRIES_PER_CALL as usize + 1);
    assert!(lines.last().unwrap().2.contains("flooded, then died"));
}

#[test]
fn log_lines_with_levels_outside_0_to_4_are_dropped() {
    let (rt, sink) = runtime();
    let p = rt.load(&hostile("hostile-raw"), raw("log_bad_levels")).unwrap();
    assert_eq!(p.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
    assert_eq!(logged(&sink, "raw-log_bad_levels"), ["hostile-raw: levels done"]);
}

#[test]
fn a_raw_rust_panic_without_a_message_is_a_named_trap_under_every_policy() {
    let (rt, _) = runtime();
    assert_policies(
        &rt,
        &hostile("hostile-raw"),
        "raw-panic",
        |c| c.config("attack", "panic"),
        "wasm `unreachable` instruction executed",
    );
}

#[test]
fn an_sdk_panic_with_a_10_kb_message_is_named_capped_and_logged_under_every_policy() {
    let (rt, sink) = runtime();
    let wasm = hostile("hostile-sdk");
    assert_policies(&rt, &wasm, "long-panic", |c| c.config("behavior", "panic_long"), "guest panicked: ppppp");
    let lines = sink.lines();
    let panics: Vec<_> = lines
        .iter()
        .filter(|(p, l, m)| p == "long-panic" && *l == Level::Error && m.starts_with(abi::PANIC_LOG_PREFIX))
        .collect();
    assert_eq!(panics.len(), 1, "{lines:?}");
    assert!(panics[0].2.len() <= limits::LOG_MAX_MESSAGE_BYTES, "a log line of {} bytes", panics[0].2.len());
    let p = rt.load(&wasm, PluginConfig::new("long-panic-kind").config("behavior", "panic_long")).unwrap();
    let err = p.try_evaluate(&GuardRequest::default()).unwrap_err();
    let FailureKind::GuestPanic { message } = &err.kind else { panic!("{err}") };
    assert!(message.len() < limits::LOG_MAX_MESSAGE_BYTES && message.starts_with("ppp"), "{} bytes", message.len());
}

#[test]
fn a_panic_reported_through_the_log_is_the_named_cause_and_reaches_the_log() {
    let (rt, sink) = runtime();
    let msg = "guest panicked: boom at src/lib.rs:3:5";
    let imports = r#"(import "chio" "log" (func $log (param i32 i32 i32)))"#;
    let body = format!("(call $log (i32.const 4) (i32.const 1024) (i32.const {})) unreachable", msg.len());
    let wat = guard(imports, &body).replace(
        "(memory (export \"memory\") 32)",
        &format!("(memory (export \"memory\") 32) {}", crate::support::data(1024, msg)),
    );
    let p = rt.load(wat.as_bytes(), PluginConfig::new("panicky")).unwrap();
    let reason = denied_because(&p, "boom at src/lib.rs:3:5");
    assert!(reason.contains("guest panicked"), "{reason}");
    assert!(
        sink.lines().iter().any(|(plugin, _, m)| plugin == "panicky" && m.contains("boom")),
        "log: {:?}",
        sink.lines()
    );
}
