//! What is refused at load, before any guest code runs.

use helios_plugin_host::{LoadError, PluginConfig};
use helios_plugin_schema::Hook;
use helios_plugin_schema::limits;

use crate::support::runtime;

#[test]
fn an_oversized_module_is_rejected_before_it_is_parsed_or_compiled() {
    let (rt, _) = runtime();
    // Not even wasm: if the size check were not first, this would be a parse error.
    let junk = vec![0xAB; limits::DEFAULT_MAX_MODULE_BYTES as usize + 1];
    let err = rt.load(&junk, PluginConfig::new("huge")).unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("huge") && err.to_string().contains("10485760"), "{err}");
    // And the cap is per plugin.
    let small = r#"(module (memory (export "memory") 1) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#;
    let err = rt.load(small.as_bytes(), PluginConfig::new("tiny-cap").max_module_bytes(10)).unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err}");
}

#[test]
fn malformed_and_truncated_modules_are_clear_errors() {
    let (rt, _) = runtime();
    let good = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#).unwrap();
    for cut in [4, 9, good.len() / 2, good.len() - 1] {
        let err = rt.load(&good[..cut], PluginConfig::new("cut")).unwrap_err();
        assert!(matches!(err, LoadError::Malformed { .. } | LoadError::Compile { .. }), "cut at {cut}: {err}");
        assert!(err.to_string().contains("cut"), "{err}");
    }
    // The 8-byte header alone is a valid, empty module: it exports nothing.
    let err = rt.load(&good[..8], PluginConfig::new("empty")).unwrap_err();
    assert!(err.to_string().contains("export memory is missing"), "{err}");
    let err = rt.load(b"definitely not wasm", PluginConfig::new("text")).unwrap_err();
    assert!(matches!(err, LoadError::Malformed { .. }), "{err}");
}

#[test]
fn exports_are_checked_memory_signatures_and_what_is_served() {
    let (rt, _) = runtime();
    let no_memory = r#"(module (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#;
    assert!(rt.load(no_memory.as_bytes(), PluginConfig::new("m")).unwrap_err().to_string().contains("export memory"));
    let nothing = r#"(module (memory (export "memory") 1))"#;
    assert!(matches!(
        rt.load(nothing.as_bytes(), PluginConfig::new("n")).unwrap_err(),
        LoadError::NothingServed { .. }
    ));
    let wrong = r#"(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) (i32.const 0))
      (func (export "pre_query") (param i32 i32) (result i32) (i32.const 0)))"#;
    let err = rt.load(wrong.as_bytes(), PluginConfig::new("w")).unwrap_err();
    assert!(err.to_string().contains("pre_query") && err.to_string().contains("expected (i32, i32) -> (i64)"), "{err}");
    let no_alloc = r#"(module (memory (export "memory") 1) (func (export "pre_query") (param i32 i32) (result i64) (i64.const 0)))"#;
    assert!(rt.load(no_alloc.as_bytes(), PluginConfig::new("a")).unwrap_err().to_string().contains("export alloc"));
}

#[test]
fn a_hook_declared_in_the_section_but_not_exported_is_refused() {
    let (rt, _) = runtime();
    let wat = r#"(module (@custom "helios.plugin" "hook=route\n") (memory (export "memory") 1)
      (func (export "alloc") (param i32) (result i32) (i32.const 0))
      (func (export "pre_query") (param i32 i32) (result i64) (i64.const 0)))"#;
    let err = rt.load(wat.as_bytes(), PluginConfig::new("liar")).unwrap_err();
    assert!(err.to_string().contains("route") && err.to_string().contains("not exported"), "{err}");
}

#[test]
fn a_plugin_declaring_several_hooks_loads_when_configured_for_a_subset_and_serves_only_it() {
    let (rt, _) = runtime();
    let wat = r#"(module (@custom "helios.plugin" "hook=pre_query\nhook=route\nhook=post_query\n")
      (memory (export "memory") 1)
      (data (i32.const 1024) "{\"kind\":\"continue\"}")
      (func (export "alloc") (param i32) (result i32) (i32.const 4096))
      (func (export "pre_query") (param i32 i32) (result i64) (i64.const 0x0000040000000013))
      (func (export "route") (param i32 i32) (result i64) (i64.const 0))
      (func (export "post_query") (param i32 i32) (result i64) (i64.const 0)))"#;
    let p = rt.load(wat.as_bytes(), PluginConfig::new("multi").hooks([Hook::PreQuery])).unwrap();
    assert_eq!(p.hooks(), [Hook::PreQuery]);
    assert!(!p.serves(Hook::Route));
    assert_eq!(p.call_json(Hook::PreQuery, b"{}").unwrap(), br#"{"kind":"continue"}"#);
    let e = p.call_json(Hook::Route, b"{}").unwrap_err().to_string();
    assert!(e.contains("multi") && e.contains("route"), "{e}");
}

#[test]
fn a_memory_cap_over_the_runtime_maximum_is_refused() {
    let (rt, _) = runtime();
    let wat = r#"(module (memory (export "memory") 1) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#;
    let err = rt.load(wat.as_bytes(), PluginConfig::new("greedy").max_memory_bytes(1 << 40)).unwrap_err();
    assert!(matches!(err, LoadError::LimitOverRuntime { .. }), "{err}");
}
