//! The hand-written WAT guard under the real host: what an operator who loads it would see.

use std::sync::Arc;

use helios_plugin_artefact::ModuleInfo;
use helios_plugin_host::{Level, MemoryLogSink, PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{GuardRequest, GuardVerdict, abi};
use wat_guard::{DENY_SUBSTRING_KEY, GUARD_WAT};

fn runtime() -> (Runtime, Arc<MemoryLogSink>) {
    let sink = MemoryLogSink::new();
    (Runtime::new(RuntimeConfig::default().log_sink(sink.clone())).expect("runtime"), sink)
}

fn request(tool: &str, command: &str) -> GuardRequest {
    GuardRequest { tool_name: tool.into(), arguments: serde_json::json!({ "command": command }), ..Default::default() }
}

fn guard(rt: &Runtime, deny: Option<&str>) -> Arc<helios_plugin_host::Plugin> {
    let mut cfg = PluginConfig::new("wat-guard");
    if let Some(d) = deny {
        cfg = cfg.config(DENY_SUBSTRING_KEY, d);
    }
    rt.load(GUARD_WAT.as_bytes(), cfg).expect("the WAT guard loads")
}

#[test]
fn the_module_speaks_only_the_core_abi() {
    let wasm = wat::parse_str(GUARD_WAT).expect("guard.wat is valid WAT");
    let info = ModuleInfo::parse(&wasm).unwrap();
    let imports: Vec<_> = info.imports.iter().map(|i| format!("{}.{}", i.module, i.name)).collect();
    assert_eq!(imports, ["chio.get_config", "chio.log"]);
    assert!(info.foreign_imports().is_empty());
    for f in [abi::EVALUATE, abi::CHIO_ALLOC, abi::CHIO_DENY_REASON] {
        assert!(info.exports_func(f), "missing {f}");
    }
    assert!(info.exports.iter().any(|e| e.name == abi::MEMORY && e.kind == "memory"));
    // Not built with the SDK: no self-description, and no hook-convention exports.
    assert!(info.is_guard() && !info.declared_guard && info.sdk.is_none() && info.exported_hooks().is_empty());
}

#[test]
fn a_request_containing_the_substring_is_denied_naming_it_and_logged() {
    let (rt, sink) = runtime();
    let g = guard(&rt, Some("rm -rf"));
    let v = g.evaluate(&request("shell", "rm -rf /"));
    assert_eq!(v, GuardVerdict::deny("request contains denied substring \"rm -rf\""));
    let lines = sink.lines();
    assert!(lines.iter().any(|(p, l, m)| p == "wat-guard" && *l == Level::Warn && m.contains("rm -rf")), "{lines:?}");
}

#[test]
fn other_requests_are_allowed_and_the_reason_does_not_stick() {
    let (rt, _) = runtime();
    let g = guard(&rt, Some("rm -rf"));
    assert_eq!(g.evaluate(&request("shell", "ls -la")), GuardVerdict::Allow);
    assert!(!g.evaluate(&request("shell", "rm -rf ~")).is_allow());
    assert_eq!(g.evaluate(&request("shell", "echo hi")), GuardVerdict::Allow);
}

#[test]
fn without_the_config_key_or_with_an_empty_value_everything_is_allowed() {
    let (rt, _) = runtime();
    assert_eq!(guard(&rt, None).evaluate(&request("shell", "rm -rf /")), GuardVerdict::Allow);
    assert_eq!(guard(&rt, Some("")).evaluate(&request("shell", "rm -rf /")), GuardVerdict::Allow);
}

#[test]
fn the_tool_name_is_part_of_the_request_bytes() {
    let (rt, _) = runtime();
    let g = guard(&rt, Some("\"tool_name\":\"curl\""));
    assert!(!g.evaluate(&request("curl", "https://example.invalid")).is_allow());
    assert_eq!(g.evaluate(&request("wget", "https://example.invalid")), GuardVerdict::Allow);
}

#[test]
fn a_substring_longer_than_the_guard_buffer_denies_and_says_why() {
    let (rt, _) = runtime();
    let g = guard(&rt, Some(&"x".repeat(1025)));
    assert_eq!(g.evaluate(&request("shell", "ls")), GuardVerdict::deny("deny_substring is longer than 1024 bytes"));
    // 1024 bytes still fit, and match.
    let g = guard(&rt, Some(&"é".repeat(512)));
    let v = g.evaluate(&request("shell", &"é".repeat(600)));
    assert_eq!(v, GuardVerdict::deny(format!("request contains denied substring \"{}\"", "é".repeat(512))));
}

#[test]
fn large_requests_in_many_calls_reuse_the_same_heap() {
    let (rt, _) = runtime();
    let g = guard(&rt, Some("needle"));
    let hay = "h".repeat(200_000);
    for i in 0..200 {
        let cmd = if i % 2 == 0 { format!("{hay}needle") } else { hay.clone() };
        assert_eq!(g.evaluate(&request("shell", &cmd)).is_allow(), i % 2 == 1, "call {i}");
    }
    // The bump heap is reset by every evaluate: one warm instance served every call.
    assert_eq!(g.stats().instances_created, 1);
    assert_eq!(g.stats().failures, 0);
}
