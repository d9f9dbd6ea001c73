//! Component guards (`chio:guard/guard@0.2.0`): loading by header, the declared world, the import
//! surface, content bundles, WASI deny-all, and hostile components. The guest is
//! crates/host/tests/guests/component-guard, written with plain wit-bindgen against wit/ and built
//! by `cargo xtask build-examples` two ways: wasm32-unknown-unknown + wit-component, and
//! wasm32-wasip2.

use std::{sync::Arc, time::Duration};

use helios_plugin_host::{
    BundleStore, ContentId, FailureKind, Level, LoadError, MemoryBundleStore, MemoryLogSink, PluginConfig, Runtime,
    RuntimeConfig,
};
use helios_plugin_schema::{GuardRequest, GuardVerdict, abi, manifest::GUARD_WIT_WORLD};
use helios_plugin_test_support::{guest_component, guest_wasip2};

const GUEST: &str = "guest-component-guard";
const DENYLIST: &[u8] = b"rm -rf\nDROP TABLE\n";

struct Fixture {
    rt: Runtime,
    sink: Arc<MemoryLogSink>,
    store: Arc<MemoryBundleStore>,
    bundle: ContentId,
}

fn fixture() -> Fixture {
    let sink = MemoryLogSink::new();
    let store = MemoryBundleStore::new();
    let bundle = store.put(DENYLIST).unwrap();
    let rt = Runtime::new(RuntimeConfig::default().log_sink(sink.clone()).bundle_store(store.clone())).unwrap();
    Fixture { rt, sink, store, bundle }
}

impl Fixture {
    fn cfg(&self, name: &str) -> PluginConfig {
        PluginConfig::new(name)
            .wit_world(GUARD_WIT_WORLD)
            .config("deny_tools", "shell, rm")
            .config("bundle", self.bundle.to_string())
            .bundles([self.bundle])
    }
}

fn req(tool: &str) -> GuardRequest {
    GuardRequest { tool_name: tool.into(), ..Default::default() }
}

fn reason(v: &GuardVerdict) -> &str {
    match v {
        GuardVerdict::Deny { reason } => reason,
        GuardVerdict::Allow => panic!("expected a deny, got allow"),
    }
}

/// Both builds of the guest: wit-component over wasm32-unknown-unknown, and wasm32-wasip2.
fn builds() -> [(&'static str, Vec<u8>); 2] {
    [("unknown", guest_component(GUEST)), ("wasip2", guest_wasip2(GUEST))]
}

#[test]
fn a_component_guard_loads_by_its_header_and_decides_like_its_source_says() {
    let f = fixture();
    for (build, wasm) in builds() {
        // Same API as a core module: the caller never says which backend.
        let p = f.rt.load(&wasm, f.cfg(build)).unwrap_or_else(|e| panic!("{build}: {e}"));
        assert!(p.is_guard(), "{build}");
        assert_eq!(p.evaluate(&req("read_file")), GuardVerdict::Allow, "{build}");
        assert_eq!(reason(&p.evaluate(&req("shell"))), "tool shell is denied", "{build}");
        // Its log line went through host.log to the plugin log.
        assert!(
            f.sink.lines().iter().any(|(pl, lvl, m)| pl == build && *lvl == Level::Info && m == "evaluating shell"),
            "{build}: {:?}",
            f.sink.lines()
        );
        // Pooled: the second call reused the first call's instance.
        assert_eq!(p.stats().instances_created, 1, "{build}");
    }
}

#[test]
fn a_component_without_the_guard_world_in_its_manifest_is_refused_naming_both() {
    let f = fixture();
    let wasm = guest_component(GUEST);
    let e = f.rt.load(&wasm, PluginConfig::new("no-world")).unwrap_err();
    assert!(matches!(e, LoadError::WitWorld { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("no-world") && e.contains(GUARD_WIT_WORLD) && e.contains("wit_world missing"), "{e}");
    let e = f.rt.load(&wasm, PluginConfig::new("old-world").wit_world("chio:guard/guard@0.1.0")).unwrap_err();
    let e = e.to_string();
    assert!(e.contains(GUARD_WIT_WORLD) && e.contains("\"chio:guard/guard@0.1.0\""), "{e}");
}

#[test]
fn a_component_importing_an_interface_outside_the_world_is_refused_naming_it() {
    let f = fixture();
    for import in ["evil:net/socket@1.0.0", "chio:guard/host@0.1.0", "wasi:http/outgoing-handler@0.2.0"] {
        let wat = format!(r#"(component (import "{import}" (instance)))"#);
        let e = f.rt.load(wat.as_bytes(), PluginConfig::new("importer").wit_world(GUARD_WIT_WORLD)).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("importer") && s.contains(import), "{import}: {s}");
        assert!(matches!(e, LoadError::ComponentImport { .. }), "{import}: {s}");
    }
    // A component that imports nothing but exports no `evaluate` is refused naming the export.
    let e = f.rt.load(b"(component)", PluginConfig::new("empty").wit_world(GUARD_WIT_WORLD)).unwrap_err().to_string();
    assert!(e.contains("empty") && e.contains(abi::EVALUATE), "{e}");
}

#[test]
fn a_malformed_component_is_refused_at_load_naming_the_plugin() {
    let f = fixture();
    let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
    bytes.extend_from_slice(&[0xff; 32]);
    let e = f.rt.load(&bytes, PluginConfig::new("garbage").wit_world(GUARD_WIT_WORLD)).unwrap_err();
    assert!(matches!(e, LoadError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("garbage") && e.to_string().contains("invalid component"), "{e}");
    // A truncated real component too.
    let wasm = guest_component(GUEST);
    let e = f.rt.load(&wasm[..wasm.len() / 2], PluginConfig::new("half").wit_world(GUARD_WIT_WORLD)).unwrap_err();
    assert!(e.to_string().contains("half"), "{e}");
}

#[test]
fn a_component_reads_its_declared_bundle_and_the_verdict_trace_names_the_digest() {
    let f = fixture();
    for (build, wasm) in builds() {
        let p = f.rt.load(&wasm, f.cfg(build)).unwrap();
        let hit = GuardRequest { arguments: serde_json::json!({"cmd": "rm -rf /"}), ..req("bundle") };
        let (v, trace) = p.evaluate_traced(&hit);
        assert_eq!(reason(&v), "arguments match bundle line \"rm -rf\"", "{build}");
        assert_eq!(trace.bundles, vec![f.bundle], "{build}");
        let miss = GuardRequest { arguments: serde_json::json!({"cmd": "ls"}), ..req("bundle") };
        assert_eq!(
            p.evaluate_traced(&miss),
            (GuardVerdict::Allow, helios_plugin_host::EvalTrace { bundles: vec![f.bundle] })
        );
        // An evaluation that opens nothing has an empty trace.
        assert!(p.evaluate_traced(&req("read_file")).1.bundles.is_empty(), "{build}");
    }
}

#[test]
fn a_bundle_read_over_64_kib_is_an_error_the_guard_sees() {
    let f = fixture();
    let p = f.rt.load(&guest_component(GUEST), f.cfg("cap")).unwrap();
    assert_eq!(reason(&p.evaluate(&req("read-over-cap"))), "read of 65537 bytes over the 65536-byte cap");
}

#[test]
fn a_guard_cannot_open_a_bundle_it_did_not_declare_even_if_the_store_holds_it() {
    let f = fixture();
    let other = f.store.put(b"secret policy").unwrap();
    let p = f.rt.load(&guest_component(GUEST), f.cfg("sneaky").config("undeclared", other.to_string())).unwrap();
    let v = p.evaluate(&req("undeclared"));
    let r = reason(&v);
    assert!(r.contains("sneaky") && r.contains(&other.to_string()) && r.contains("not declared"), "{r}");
    // An advisory guard logs and allows instead.
    let p =
        f.rt.load(&guest_component(GUEST), f.cfg("adv").config("undeclared", other.to_string()).advisory(true))
            .unwrap();
    assert_eq!(p.evaluate(&req("undeclared")), GuardVerdict::Allow);
    // Declared but absent from the store: refused naming the id.
    let absent = ContentId::of(b"never stored");
    let p =
        f.rt.load(&guest_component(GUEST), f.cfg("absent").config("bundle", absent.to_string()).bundles([absent]))
            .unwrap();
    let v = p.evaluate(&req("bundle"));
    assert!(reason(&v).contains(&absent.to_string()) && reason(&v).contains("not in the store"), "{v:?}");
}

#[test]
fn a_bundle_handle_lives_for_one_evaluation() {
    let f = fixture();
    let p = f.rt.load(&guest_component(GUEST), f.cfg("keeper")).unwrap();
    assert_eq!(p.evaluate(&req("keep-handle")), GuardVerdict::Allow);
    // Same pooled instance, next evaluation: the kept handle is closed.
    let v = p.evaluate(&req("stale-handle"));
    assert!(reason(&v).contains("closed"), "{v:?}");
    assert_eq!(p.stats().instances_created, 1);
}

#[test]
fn wasip2_guests_get_a_deny_all_wasi_and_their_output_goes_to_the_plugin_log() {
    let f = fixture();
    let p = f.rt.load(&guest_wasip2(GUEST), f.cfg("wasi")).unwrap();
    assert_eq!(reason(&p.evaluate(&req("wasi-probe"))), "file:false dir:false env:0 args:0 net:false");
    assert_eq!(p.evaluate(&req("print")), GuardVerdict::Allow);
    let lines = f.sink.lines();
    assert!(lines.iter().any(|(pl, l, m)| pl == "wasi" && *l == Level::Info && m == "hello from stdout"), "{lines:?}");
    assert!(lines.iter().any(|(pl, l, m)| pl == "wasi" && *l == Level::Warn && m == "hello from stderr"), "{lines:?}");
}

// ---- hostile components ------------------------------------------------------------------------

/// Runs `tool` on a fresh plugin from each build, expects the failure `kind` to match and its text
/// to contain `cause`, then checks the host is intact: the same plugin still answers.
fn hostile(tool: &str, cfg: impl Fn(PluginConfig) -> PluginConfig, check: impl Fn(&FailureKind) -> bool, cause: &str) {
    let f = fixture();
    for (build, wasm) in builds() {
        let name = format!("{tool}-{build}");
        let p = f.rt.load(&wasm, cfg(f.cfg(&name))).unwrap();
        let e = p.try_evaluate(&req(tool)).unwrap_err();
        assert!(check(&e.kind), "{build} {tool}: {e}");
        assert!(e.to_string().contains(cause) && e.to_string().contains(&name), "{build} {tool}: {e}");
        // Fail-closed: the verdict is a deny naming the guard and the cause.
        let v = p.evaluate(&req(tool));
        assert!(reason(&v).contains(&name) && reason(&v).contains(cause), "{v:?}");
        // Host intact: a new instance answers.
        assert_eq!(p.evaluate(&req("read_file")), GuardVerdict::Allow, "{build} {tool}");
        assert_eq!(p.idle_instances(), 1, "{build} {tool}: only the healthy instance is pooled");
    }
}

#[test]
fn a_spinning_component_is_stopped_by_fuel() {
    hostile(
        "spin",
        |c| c.fuel(Some(2_000_000)).deadline(Duration::from_secs(20)),
        |k| matches!(k, FailureKind::FuelExhausted { .. }),
        "fuel exhausted (limit 2000000 per call)",
    );
}

#[test]
fn an_unmetered_spinning_component_is_stopped_by_the_deadline() {
    hostile(
        "spin",
        |c| c.fuel(None).deadline(Duration::from_millis(30)),
        |k| matches!(k, FailureKind::DeadlineExceeded { .. }),
        "deadline exceeded (limit 30 ms per call)",
    );
}

#[test]
fn a_component_growing_its_memory_hits_the_cap() {
    hostile(
        "grow",
        |c| c.max_memory_bytes(8 << 20),
        |k| matches!(k, FailureKind::MemoryLimit { limit, .. } if *limit == 8 << 20),
        "memory limit",
    );
}

#[test]
fn a_deeply_recursing_component_is_a_named_stack_overflow() {
    // Wasm frames overflow the native stack (a named stack overflow); a Rust guest's shadow stack
    // running below address 0 is an out-of-bounds trap (see ARCHITECTURE.md, design decisions).
    hostile(
        "recurse",
        |c| c,
        |k| match k {
            FailureKind::StackOverflow => true,
            FailureKind::Trap { message } => message.contains("out of bounds"),
            _ => false,
        },
        "",
    );
}

#[test]
fn a_component_flooding_bundle_handles_is_stopped_at_the_quota() {
    hostile("flood", |c| c, |k| matches!(k, FailureKind::BadImportCall { .. }), "handle flood: plugin");
}

#[test]
fn a_component_panicking_fails_closed() {
    hostile("panic", |c| c, |k| matches!(k, FailureKind::Trap { .. }), "unreachable");
}

#[test]
fn a_huge_deny_reason_is_cut_and_the_host_goes_on() {
    let f = fixture();
    for (build, wasm) in builds() {
        let p = f.rt.load(&wasm, f.cfg(build)).unwrap();
        let v = p.evaluate(&req("huge-deny"));
        let r = reason(&v);
        assert_eq!(r.len(), helios_plugin_schema::limits::DENY_REASON_BUFFER_BYTES as usize, "{build}");
        assert!(r.bytes().all(|b| b == b'x'), "{build}");
        assert_eq!(p.evaluate(&req("read_file")), GuardVerdict::Allow, "{build}");
    }
}

// ---- core modules read bundles too -------------------------------------------------------------

/// A core-module guard that opens `id` through `chio:guard/host@0.2.0.bundle-open`, reads 6 bytes
/// at offset 0 into `out`, and denies when they are "rm -rf".
fn core_bundle_guard(id: &str, out: u32) -> String {
    format!(
        r#"(module
  (import "chio:guard/host@0.2.0" "bundle-open" (func $open (param i32 i32) (result i32)))
  (import "chio:guard/host@0.2.0" "fetch-blob" (func $fetch (param i32 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 4096) "{id}")
  (func (export "evaluate") (param i32 i32) (result i32) (local $h i32) (local $n i32)
    (local.set $h (call $open (i32.const 4096) (i32.const {len})))
    (local.set $n (call $fetch (local.get $h) (i64.const 0) (i32.const 6) (i32.const {out})))
    (if (result i32)
      (i32.and (i32.eq (local.get $n) (i32.const 6)) (i32.eq (i32.load8_u (i32.const {out})) (i32.const 114)))
      (then (i32.const 1)) (else (i32.const 0)))))"#,
        len = id.len()
    )
}

#[test]
fn a_core_module_guard_reads_its_declared_bundle_through_the_guard_host_import() {
    let f = fixture();
    let id = f.bundle.to_string();
    let p = f.rt.load(core_bundle_guard(&id, 8192).as_bytes(), PluginConfig::new("core").bundles([f.bundle])).unwrap();
    let (v, trace) = p.evaluate_traced(&req("anything"));
    assert!(!v.is_allow(), "the bundle starts with rm -rf: {v:?}");
    assert_eq!(trace.bundles, vec![f.bundle]);
    // Undeclared: the call fails closed naming the bundle and the import.
    let p = f.rt.load(core_bundle_guard(&id, 8192).as_bytes(), PluginConfig::new("core-undeclared")).unwrap();
    let e = p.try_evaluate(&req("anything")).unwrap_err().to_string();
    assert!(e.contains(abi::BUNDLE_OPEN) && e.contains(&id) && e.contains("not declared"), "{e}");
    // An output range outside memory is a named fault, not a host crash.
    let p =
        f.rt.load(core_bundle_guard(&id, 65534).as_bytes(), PluginConfig::new("core-oob").bundles([f.bundle])).unwrap();
    let e = p.try_evaluate(&req("anything")).unwrap_err();
    assert!(matches!(e.kind, FailureKind::BadImportCall { ref import, .. } if import.contains(abi::FETCH_BLOB)), "{e}");
}

// ---- the SDK: one #[chio_guard] source, two builds -----------------------------------------------

fn corpus() -> Vec<GuardRequest> {
    let path = helios_plugin_test_support::workspace_root().join("examples/corpus/tool_calls.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Evaluates the whole corpus with the core and the component build of an SDK guard and asserts
/// the verdicts are identical, and that the corpus exercised both answers.
fn same_verdicts(package: &str, cfg: impl Fn(PluginConfig) -> PluginConfig) -> (usize, usize) {
    let f = fixture();
    let core = f.rt.load(&helios_plugin_test_support::guest(package), cfg(PluginConfig::new("core"))).unwrap();
    let component =
        f.rt.load(&guest_component(package), cfg(PluginConfig::new("component").wit_world(GUARD_WIT_WORLD))).unwrap();
    let (mut allows, mut denies) = (0, 0);
    for (i, call) in corpus().iter().enumerate() {
        let (a, b) = (core.try_evaluate(call).unwrap(), component.try_evaluate(call).unwrap());
        assert_eq!(a, b, "{package}: corpus line {} ({:?})", i + 1, call.tool_name);
        if a.is_allow() { allows += 1 } else { denies += 1 }
    }
    (allows, denies)
}

#[test]
fn the_sdk_builds_tool_denylist_as_a_component_with_identical_verdicts_over_the_corpus() {
    let (allows, denies) = same_verdicts("tool-denylist", |c| c.config("denylist", "rm, shell_exec, sudo, curl, wget"));
    assert!(allows > 20 && denies >= 8, "the corpus must exercise both: {allows} allows, {denies} denies");
}

#[test]
fn the_bundle_reading_example_gives_identical_verdicts_as_core_module_and_component() {
    let store_bytes: &[u8] = b"/etc/shadow\nDROP TABLE\nrm -rf\n";
    let id = ContentId::of(store_bytes);
    let f = fixture();
    f.store.put(store_bytes).unwrap();
    let cfg = |c: PluginConfig| c.config("bundle", id.to_string()).bundles([id]);
    let core =
        f.rt.load(&helios_plugin_test_support::guest("bundle-denylist"), cfg(PluginConfig::new("core"))).unwrap();
    let component =
        f.rt.load(&guest_component("bundle-denylist"), cfg(PluginConfig::new("component").wit_world(GUARD_WIT_WORLD)))
            .unwrap();
    let (mut allows, mut denies) = (0, 0);
    for (i, call) in corpus().iter().enumerate() {
        let (a, ta) = core.evaluate_traced(call);
        let (b, tb) = component.evaluate_traced(call);
        assert_eq!(a, b, "corpus line {}", i + 1);
        assert_eq!((&ta.bundles, &tb.bundles), (&vec![id], &vec![id]), "corpus line {}", i + 1);
        if a.is_allow() { allows += 1 } else { denies += 1 }
    }
    assert!(allows > 0 && denies > 0, "{allows} allows, {denies} denies");
}
