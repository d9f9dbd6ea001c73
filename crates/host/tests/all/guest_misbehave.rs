//! The `guest-misbehave` guest (crates/host/tests/guests) in the real host: the parts of the SDK that
//! only exist on wasm32, the panic hook's log line and the deny-reason truncation. (`sdk_guests.rs`
//! uses the same guest for the host's limits.)

use guest_misbehave::{BEHAVIOR_KEY, LONG_REASON_CHAR, PANIC_MESSAGE};
use helios_plugin_host::schema::guard::DenyReason;
use helios_plugin_host::schema::{GuardRequest, GuardVerdict, abi, limits};
use helios_plugin_host::{Level, MemoryLogSink, PluginConfig, Runtime, RuntimeConfig};

/// The guest's wasm32 build (built once by `cargo xtask build-examples`).
fn wasm() -> &'static [u8] {
    static WASM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    WASM.get_or_init(|| helios_plugin_test_support::guest("guest-misbehave"))
}

#[test]
fn a_panic_is_logged_at_error_with_the_prefix_message_and_location() {
    let sink = MemoryLogSink::new();
    let rt = Runtime::new(RuntimeConfig::default().log_sink(sink.clone())).expect("runtime");
    let p = rt.load(wasm(), PluginConfig::new("panicky").config(BEHAVIOR_KEY, "panic")).expect("loads");
    assert!(!p.evaluate(&GuardRequest::default()).is_allow());
    let lines = sink.lines();
    let expected = format!("{}{PANIC_MESSAGE} at ", abi::PANIC_LOG_PREFIX);
    let line = lines.iter().find(|(_, _, m)| m.starts_with(&expected)).unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!((line.0.as_str(), line.1), ("panicky", Level::Error));
    assert!(line.2.contains("src/lib.rs:"), "no location in {:?}", line.2);
}

#[test]
fn a_reason_longer_than_the_host_buffer_arrives_cut_at_a_char_boundary() {
    let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let p = rt.load(wasm(), PluginConfig::new("verbose").config(BEHAVIOR_KEY, "long_reason")).expect("loads");
    let GuardVerdict::Deny { reason } = p.evaluate(&GuardRequest::default()) else { panic!("allowed") };
    // The JSON the guest wrote parsed (a raw cut would have shown up as `{"reason":"é...`).
    assert!(!reason.starts_with('{'), "{reason:.40}");
    assert!(reason.chars().all(|c| c == LONG_REASON_CHAR));
    let written = serde_json::to_vec(&DenyReason { reason: reason.clone() }).unwrap().len();
    let cap = limits::DENY_REASON_BUFFER_BYTES as usize;
    assert!(written <= cap && written + LONG_REASON_CHAR.len_utf8() > cap, "{written} bytes of {cap}");
    // The next allow forgets the reason.
    let p = rt.load(wasm(), PluginConfig::new("quiet").config(BEHAVIOR_KEY, "ok")).expect("loads");
    assert_eq!(p.evaluate(&GuardRequest::default()), GuardVerdict::Allow);
}
