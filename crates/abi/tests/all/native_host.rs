//! The SDK's wrappers against the in-process host: what a plugin's unit tests see.

use helios_plugin_abi::*;
use helios_plugin_schema::limits::{KV_MAX_KEY_BYTES, KV_MAX_KEYS, KV_MAX_VALUE_BYTES, LOG_MAX_MESSAGE_BYTES};

#[test]
fn kv_round_trips_small_and_large_values_and_removes_them() {
    testing::reset();
    assert_eq!(kv_read("k").unwrap(), None);
    kv_write("k", b"v").unwrap();
    assert_eq!(kv_read("k").unwrap().as_deref(), Some(&b"v"[..]));
    // Larger than the first 1 KiB buffer: read on the second try.
    let big = vec![0xAB; KV_MAX_VALUE_BYTES];
    kv_write("big", &big).unwrap();
    assert_eq!(kv_read("big").unwrap(), Some(big));
    kv_remove("k").unwrap();
    kv_remove("never-set").unwrap();
    assert_eq!(kv_read("k").unwrap(), None);
    assert_eq!(testing::kv_snapshot().keys().cloned().collect::<Vec<_>>(), vec![b"big".to_vec()]);
}

#[test]
fn kv_caps_are_errors_that_name_the_problem() {
    testing::reset();
    let e = kv_write("k", vec![0; KV_MAX_VALUE_BYTES + 1]).unwrap_err();
    assert_eq!(e, HostError::ValueTooLarge { len: KV_MAX_VALUE_BYTES + 1, max: KV_MAX_VALUE_BYTES });
    let e = kv_read(vec![b'k'; KV_MAX_KEY_BYTES + 1]).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    for i in 0..KV_MAX_KEYS {
        kv_write(format!("key{i}"), b"x").unwrap();
    }
    let e = kv_write("one-more", b"x").unwrap_err();
    assert_eq!(e, HostError::Rejected { key: "one-more".into() });
    assert!(e.to_string().contains("one-more") && e.to_string().contains("quota"), "{e}");
    // Overwriting an existing key is not a new key.
    kv_write("key0", b"y").unwrap();
}

#[test]
fn sha256_is_real_lowercase_hex() {
    assert_eq!(sha256_digest_hex("abc").unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn config_values_of_any_length_are_read_whole() {
    testing::reset();
    assert_eq!(get_config("missing"), None);
    testing::set_config("short", "a,b");
    let long = "x".repeat(10_000);
    testing::set_config("long", &long);
    testing::set_config("empty", "");
    assert_eq!(get_config("short").as_deref(), Some("a,b"));
    assert_eq!(get_config("long"), Some(long));
    assert_eq!(get_config("empty").as_deref(), Some(""));
}

#[test]
fn logs_are_recorded_in_order_and_truncated_like_the_host_does() {
    testing::reset();
    log(Level::Info, "one");
    log(Level::Error, "two");
    let long = "é".repeat(LOG_MAX_MESSAGE_BYTES); // 2 bytes each
    log(Level::Debug, &long);
    let logs = testing::logs();
    assert_eq!(logs[..2], [(Level::Info, "one".to_owned()), (Level::Error, "two".to_owned())]);
    assert_eq!(logs[2].1.len(), LOG_MAX_MESSAGE_BYTES);
    testing::reset();
    assert!(testing::logs().is_empty());
}

#[test]
fn time_is_pinned_by_set_time_and_system_time_after_reset() {
    testing::set_time(1_700_000_000);
    assert_eq!(get_time(), 1_700_000_000);
    testing::reset();
    assert!(get_time() > 1_700_000_000);
}

#[test]
fn each_test_thread_has_its_own_host() {
    testing::reset();
    kv_write("mine", b"1").unwrap();
    testing::set_config("c", "1");
    std::thread::spawn(|| {
        assert_eq!(kv_read("mine").unwrap(), None);
        assert_eq!(get_config("c"), None);
    })
    .join()
    .unwrap();
    assert!(kv_read("mine").unwrap().is_some());
}

#[test]
fn levels_map_to_the_wire_codes() {
    use helios_plugin_schema::abi;
    assert_eq!(Level::Trace.code(), abi::LOG_TRACE);
    assert_eq!(Level::Error.code(), abi::LOG_ERROR);
    assert_eq!(Level::from_code(abi::LOG_WARN), Some(Level::Warn));
    assert_eq!(Level::from_code(99), None);
}
