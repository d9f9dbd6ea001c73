//! SDK-built guests (`cargo xtask build-examples` builds them for wasm32): the SDK and the host agree.

use helios_plugin_host::{FailureKind, PluginConfig};
use helios_plugin_schema::{GuardRequest, GuardVerdict, PreQueryResult, QueryContext, hooks::spec};
use helios_plugin_test_support::guest;

use crate::support::runtime;

fn misbehave(behavior: &str) -> PluginConfig {
    PluginConfig::new(format!("misbehave-{behavior}")).config("behavior", behavior)
}

fn tool(name: &str) -> GuardRequest {
    GuardRequest { tool_name: name.into(), ..Default::default() }
}

#[test]
fn tool_denylist_denies_listed_tools_and_allows_others() {
    let (rt, _) = runtime();
    let p = rt
        .load(&guest("tool-denylist"), PluginConfig::new("tool-denylist").config("denylist", "rm, curl ,,shell"))
        .unwrap();
    assert!(p.is_guard());
    assert_eq!(p.evaluate(&tool("ls")), GuardVerdict::Allow);
    for t in ["rm", "curl", "shell"] {
        match p.evaluate(&tool(t)) {
            GuardVerdict::Deny { reason } => assert!(reason.contains(t), "{reason}"),
            GuardVerdict::Allow => panic!("{t} allowed"),
        }
    }
}

#[test]
fn sdk_modules_declare_their_hooks_and_import_only_the_host_surface() {
    let (rt, _) = runtime();
    let p = rt.load(&guest("guest-misbehave"), misbehave("ok")).unwrap();
    let info = p.module_info().expect("a wasm plugin has module facts");
    assert!(info.foreign_imports().is_empty(), "{:?}", info.foreign_imports());
    assert!(info.declared_guard);
    for h in ["pre_query", "route", "post_query"] {
        assert!(
            info.declared_hooks.iter().any(|d| d.export_name() == h),
            "{h} not declared: {:?}",
            info.declared_hooks
        );
    }
}

#[test]
fn a_guest_panic_denies_and_its_message_reaches_the_log() {
    let (rt, sink) = runtime();
    let p = rt.load(&guest("guest-misbehave"), misbehave("panic")).unwrap();
    match p.evaluate(&tool("x")) {
        GuardVerdict::Deny { reason } => assert!(reason.contains("misbehave: deliberate panic"), "{reason}"),
        GuardVerdict::Allow => panic!("allowed"),
    }
    assert!(sink.lines().iter().any(|(_, _, m)| m.contains("misbehave: deliberate panic")));
    let err = p.call::<spec::PreQuery>(&QueryContext::default()).unwrap_err();
    assert!(matches!(err.kind, FailureKind::GuestPanic { .. }), "{err}");
}

#[test]
fn sdk_guests_hit_each_limit_with_a_named_cause() {
    let (rt, _) = runtime();
    for (behavior, cause) in [
        ("loop", "fuel exhausted"),
        // Rust guests keep their stack in linear memory, below the data: unbounded recursion runs
        // the stack pointer under address 0 and traps on the first out-of-bounds store.
        ("recurse", "out of bounds memory access"),
        ("grow", "memory limit"),
        ("slow_host_calls", "deadline exceeded"),
    ] {
        let cfg = misbehave(behavior);
        // Metering off for the host-call loop so that only the deadline can stop it.
        // For `grow`, fuel enough to fill 16 MiB, so that the memory cap is what stops it.
        let cfg = match behavior {
            "slow_host_calls" => cfg.fuel(None),
            "grow" => cfg.fuel(Some(1_000_000_000)),
            _ => cfg,
        };
        let p = rt.load(&guest("guest-misbehave"), cfg).unwrap();
        match p.evaluate(&tool("x")) {
            GuardVerdict::Deny { reason } => assert!(reason.contains(cause), "{behavior}: {reason}"),
            GuardVerdict::Allow => panic!("{behavior} allowed"),
        }
    }
}

#[test]
fn kv_state_persists_across_pooled_calls_and_fresh_instances() {
    use helios_plugin_host::InstanceMode;
    let (rt, _) = runtime();
    for mode in [InstanceMode::Pooled, InstanceMode::Fresh] {
        let name = format!("counter-{mode:?}");
        let p = rt
            .load(&guest("guest-misbehave"), PluginConfig::new(&name).config("behavior", "kv_counter").mode(mode))
            .unwrap();
        for _ in 0..10 {
            assert_eq!(p.call::<spec::PreQuery>(&QueryContext::default()).unwrap(), PreQueryResult::Continue);
        }
        let entries = rt.kv().entries(&name);
        let count =
            entries.iter().find(|(k, _)| k == b"count").map(|(_, v)| u64::from_le_bytes(v[..8].try_into().unwrap()));
        assert_eq!(count, Some(10), "{mode:?}");
        if mode == InstanceMode::Fresh {
            assert_eq!(p.stats().instances_created, 10);
        } else {
            assert_eq!(p.stats().instances_created, 1);
        }
    }
}

#[test]
fn an_sdk_rewrite_reaches_the_host() {
    let (rt, _) = runtime();
    let p = rt.load(&guest("guest-misbehave"), misbehave("rewrite")).unwrap();
    let out = p.call::<spec::PreQuery>(&QueryContext { query: "SELECT 1".into(), ..Default::default() }).unwrap();
    assert_eq!(out, PreQueryResult::Rewrite { sql: "/* misbehave */ SELECT 1".into() });
}
