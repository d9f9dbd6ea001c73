//! The escape suite: hostile guests (hand-written WAT, a raw-ABI Rust guest `hostile-raw` and an
//! SDK guest `hostile-sdk`) attack the host one way each, grouped by the property they attack:
//! [`cpu`] (fuel, deadlines, stack), [`memory`] (growth, tables, pointers and lengths an export hands
//! back), [`imports`] (the import surface, pointers handed to it, modules that are not what they
//! claim), [`kv`] (namespaces and caps), [`start`] (start functions, re-entry, failed instances) and
//! [`logs`] (floods, levels, panics), and [`wasi`] (WASI preview 1 guests in the deny-all sandbox). Each property is tested once. Most tests check the three things
//! a host operator relies on: the host keeps running (a healthy plugin still answers afterwards), the
//! verdict is the one the plugin's policy says (a guard denies, an advisory guard allows, a hook in a
//! chain is skipped under `on_error = skip` and blocks the statement under `abort`), and the error
//! names the plugin and the cause. SECURITY.md links each claim of the security model to a test here.

mod cpu;
mod imports;
mod kv;
mod logs;
mod memory;
mod start;
mod wasi;

use helios_plugin_host::{Chain, MemoryLogSink, OnError, Plugin, PluginConfig, Runtime};
use helios_plugin_schema::{GuardRequest, GuardVerdict, PreQueryResult, QueryContext, abi};

use crate::support::{data, scripted_hook};

/// The wasm32 build of a hostile guest crate (built once by `cargo xtask build-examples`).
fn hostile(package: &str) -> Vec<u8> {
    helios_plugin_test_support::guest(package)
}

fn raw(attack: &str) -> PluginConfig {
    PluginConfig::new(format!("raw-{attack}")).config("attack", attack)
}

const CONTINUE: &str = r#"{"kind":"continue"}"#;

/// A module serving both conventions: `evaluate` and `pre_query` each run `body` (WAT instructions
/// with no result), then allow / continue. `extra` holds more module fields (functions, a start
/// function, tables, data); `imports` the import declarations.
fn both(imports: &str, extra: &str, body: &str) -> String {
    let packed = abi::pack_ptr_len(64, CONTINUE.len() as u32);
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 2)
  {cont}
  (global $heap (mut i32) (i32.const 4096))
  (func $alloc (export "alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "dealloc") (param i32 i32) (global.set $heap (i32.const 4096)))
  (func (export "chio_alloc") (param $n i32) (result i32) (call $alloc (local.get $n)))
  (func $body {body})
  {extra}
  (func (export "evaluate") (param i32 i32) (result i32) (call $body) (i32.const 0))
  (func (export "pre_query") (param i32 i32) (result i64) (call $body) (i64.const {packed}))
)"#,
        cont = data(64, CONTINUE),
    )
}

/// A healthy plugin still loads and answers in the same runtime.
fn host_intact(rt: &Runtime) {
    let ok = rt.load(both("", "", "").as_bytes(), PluginConfig::new("healthy")).expect("a healthy plugin loads");
    assert_eq!(ok.evaluate(&GuardRequest::default()), GuardVerdict::Allow);
    assert_eq!(
        ok.call::<helios_plugin_schema::hooks::spec::PreQuery>(&QueryContext::default()).unwrap(),
        PreQueryResult::Continue
    );
}

fn q() -> QueryContext {
    QueryContext { query: "SELECT 1".into(), ..Default::default() }
}

/// Checks every policy for one hostile module: guard (deny naming cause and guard), advisory guard
/// (allow), hook in a chain under `skip` (the next plugin still runs, the failure is reported) and
/// under `abort` (the statement is blocked naming plugin and cause; nothing after it runs).
fn assert_policies(rt: &Runtime, wasm: &[u8], name: &str, cfg: impl Fn(PluginConfig) -> PluginConfig, cause: &str) {
    let guard = rt.load(wasm, cfg(PluginConfig::new(name))).unwrap_or_else(|e| panic!("{name} does not load: {e}"));
    match guard.evaluate(&GuardRequest::default()) {
        GuardVerdict::Deny { reason } => {
            assert!(reason.contains(cause), "{name}: deny reason {reason:?} does not name the cause {cause:?}");
            assert!(reason.contains(&format!("\"{name}\"")), "{name}: deny reason {reason:?} does not name the guard");
        }
        GuardVerdict::Allow => panic!("{name}: a failing guard was allowed"),
    }
    let advisory = rt.load(wasm, cfg(PluginConfig::new(format!("{name}-advisory"))).advisory(true)).unwrap();
    assert_eq!(
        advisory.evaluate(&GuardRequest::default()),
        GuardVerdict::Allow,
        "{name}: an advisory guard fails open"
    );

    let after = rt
        .load(
            scripted_hook().as_bytes(),
            PluginConfig::new("after").config("action", "r").config("text", "SELECT 'after'").priority(2),
        )
        .unwrap();
    let skip =
        rt.load(wasm, cfg(PluginConfig::new(format!("{name}-skip"))).on_error(OnError::Skip).priority(1)).unwrap();
    let out = Chain::new(vec![after.clone(), skip]).pre_query(&q());
    assert_eq!(
        out.result,
        PreQueryResult::Rewrite { sql: "SELECT 'after'".into() },
        "{name}: skip must let the chain go on"
    );
    assert_eq!(out.skipped.len(), 1, "{name}: {:?}", out.skipped);
    let skipped = out.skipped[0].to_string();
    assert!(skipped.contains(cause) && skipped.contains(&format!("{name}-skip")), "{name}: skipped error {skipped:?}");

    let abort =
        rt.load(wasm, cfg(PluginConfig::new(format!("{name}-abort"))).on_error(OnError::Abort).priority(1)).unwrap();
    let out = Chain::new(vec![after, abort]).pre_query(&q());
    match &out.result {
        PreQueryResult::Block { reason } => {
            assert!(
                reason.contains(cause) && reason.contains(&format!("{name}-abort")),
                "{name}: block reason {reason:?}"
            );
        }
        other => panic!("{name}: abort must block, got {other:?}"),
    }
    assert_eq!(out.decided_by.as_deref(), Some(format!("{name}-abort").as_str()));
    assert!(out.rewritten_by.is_empty(), "{name}: a plugin after the aborting one ran");
    host_intact(rt);
}

pub(super) fn denied_because(p: &Plugin, needle: &str) -> String {
    match p.evaluate(&GuardRequest::default()) {
        GuardVerdict::Deny { reason } => {
            assert!(reason.contains(needle), "reason {reason:?} does not mention {needle:?}");
            assert!(reason.contains(&format!("\"{}\"", p.name())), "reason {reason:?} does not name the guard");
            reason
        }
        GuardVerdict::Allow => panic!("{} was allowed", p.name()),
    }
}

fn same<T>(c: T) -> T {
    c
}

fn logged(sink: &MemoryLogSink, plugin: &str) -> Vec<String> {
    sink.lines().into_iter().filter(|(p, _, _)| p == plugin).map(|(_, _, m)| m).collect()
}
