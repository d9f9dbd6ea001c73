//! The escape suite: hostile guests (hand-written WAT, a raw-ABI Rust guest `hostile-raw` and an
//! SDK guest `hostile-sdk`) attack the host one way each. Every test checks the three things a
//! host operator relies on: the host keeps running (a healthy plugin still answers afterwards), the
//! verdict is the one the plugin's policy says (a guard denies, an advisory guard allows, a hook in a
//! chain is skipped under `on_error = skip` and blocks the statement under `abort`), and the error
//! names the plugin and the cause. SECURITY.md links each claim of the security model to a test here
//! or in `hostile.rs`, `kv.rs` and `load.rs`.

use std::{
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use helios_plugin_artefact::{
    PackOptions, PackSigning, TrustRoot, VerifyOptions, keys, pack, save_artefact, verify_path,
};
use helios_plugin_host::{
    Chain, FailureKind, Level, LoadError, LogSink, MemoryKv, MemoryLogSink, OnError, Plugin, PluginConfig, Runtime,
    RuntimeConfig,
};
use helios_plugin_schema::{GuardRequest, GuardVerdict, PreQueryResult, QueryContext, abi, limits};

use crate::support::{data, runtime, scripted_hook};

// ---- helpers ------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The wasm32 build of a hostile guest crate. Both are built once per test binary (a no-op when
/// `cargo xtask build-examples` already built them).
fn hostile(package: &str) -> Vec<u8> {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .current_dir(workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "hostile-raw",
                "-p",
                "hostile-sdk",
                "--target",
                "wasm32-unknown-unknown",
                "--profile",
                "guest",
            ])
            .status()
            .expect("cargo could not be started");
        assert!(status.success(), "building the hostile guests for wasm32 failed: {status}");
    });
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("wasm32-unknown-unknown/guest").join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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

fn same<T>(c: T) -> T {
    c
}

// ---- CPU, stack, time ---------------------------------------------------------------------------

#[test]
fn deep_recursion_is_a_named_stack_overflow_under_every_policy() {
    let (rt, _) = runtime();
    let extra =
        "(func $r (param i32) (result i32) (i32.add (call $r (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))";
    let wat = both("", extra, "(drop (call $r (i32.const 0)))");
    assert_policies(&rt, wat.as_bytes(), "recursion", same, "call stack exhausted");
}

#[test]
fn fuel_exhaustion_is_named_under_every_policy() {
    let (rt, _) = runtime();
    let wat = both("", "", "(loop (br 0))");
    assert_policies(&rt, wat.as_bytes(), "spin", |c| c.fuel(Some(100_000)), "fuel exhausted (limit 100000 per call)");
}

#[test]
fn an_unmetered_busy_loop_of_host_calls_is_stopped_by_the_deadline_under_every_policy() {
    let (rt, _) = runtime();
    let imports = r#"(import "env" "sha256_hex" (func $sha (param i32 i32 i32) (result i32)))"#;
    let wat = both(imports, "", "(loop (drop (call $sha (i32.const 0) (i32.const 65536) (i32.const 1024))) (br 0))");
    let started = std::time::Instant::now();
    assert_policies(
        &rt,
        wat.as_bytes(),
        "stall",
        |c| c.fuel(None).deadline(Duration::from_millis(20)),
        "deadline exceeded (limit 20 ms per call)",
    );
    // Four calls hit the deadline; none may run much past it.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deadline did not stop the guest: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_rust_guest_that_spins_is_stopped_by_fuel_under_every_policy() {
    let (rt, _) = runtime();
    // The deadline is generous so that only fuel can stop it, however loaded the machine.
    let cfg = |c: PluginConfig| c.config("attack", "spin").fuel(Some(1_000_000)).deadline(Duration::from_secs(10));
    assert_policies(&rt, &hostile("hostile-raw"), "raw-spin", cfg, "fuel exhausted (limit 1000000 per call)");
}

// ---- memory and tables --------------------------------------------------------------------------

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

// ---- start functions and re-entry ---------------------------------------------------------------

#[test]
fn a_start_function_that_loops_is_stopped_by_fuel_under_every_policy() {
    let (rt, _) = runtime();
    let wat = both("", "(func $start (loop (br 0))) (start $start)", "");
    let cfg = |c: PluginConfig| c.fuel(Some(1_000_000)).deadline(Duration::from_secs(10));
    assert_policies(&rt, wat.as_bytes(), "start-loop", cfg, "fuel exhausted (limit 1000000 per call)");
}

#[test]
fn a_start_function_that_calls_a_host_import_is_a_clean_error_under_every_policy() {
    let (rt, sink) = runtime();
    let imports = r#"(import "chio" "log" (func $log (param i32 i32 i32)))"#;
    let wat = both(imports, "(func $start (call $log (i32.const 2) (i32.const 64) (i32.const 4))) (start $start)", "");
    assert_policies(
        &rt,
        wat.as_bytes(),
        "start-import",
        same,
        "bad call to import chio.log: called before the instance was ready",
    );
    assert!(
        sink.lines().iter().all(|(p, _, _)| !p.starts_with("start-import")),
        "a start function logged: {:?}",
        sink.lines()
    );
}

#[test]
fn a_start_function_that_calls_the_guests_own_export_cannot_reach_the_host() {
    let (rt, _) = runtime();
    // The start function calls the function behind `evaluate`, which writes KV: the import refuses.
    let imports = r#"(import "env" "kv_set" (func $set (param i32 i32 i32 i32) (result i32)))"#;
    let extra = r#"(func $export_body (export "helper") (param i32 i32) (result i32)
        (call $set (i32.const 64) (i32.const 4) (i32.const 64) (i32.const 4)))
      (func $start (drop (call $export_body (i32.const 0) (i32.const 0)))) (start $start)"#;
    let wat = both(imports, extra, "");
    assert_policies(
        &rt,
        wat.as_bytes(),
        "start-export",
        same,
        "bad call to import env.kv_set: called before the instance was ready",
    );
    for name in ["start-export", "start-export-skip", "start-export-abort"] {
        assert!(rt.kv().entries(name).is_empty(), "{name} wrote KV from its start function");
    }
}

#[test]
fn a_start_function_that_traps_is_a_named_instantiation_failure_under_every_policy() {
    let (rt, _) = runtime();
    let wat = both("", "(func $start unreachable) (start $start)", "");
    assert_policies(&rt, wat.as_bytes(), "start-trap", same, "cannot instantiate");
}

/// A log sink that calls back into the plugin that is logging, once: host code reached from inside
/// a guest call re-enters the plugin.
#[derive(Debug, Default)]
struct ReenteringSink {
    plugin: OnceLock<Arc<Plugin>>,
    inner: Mutex<Option<GuardVerdict>>,
    lines: Mutex<Vec<String>>,
}

impl LogSink for ReenteringSink {
    fn log(&self, _plugin: &str, _level: Level, message: &str) {
        self.lines.lock().unwrap().push(message.to_owned());
        let Some(p) = self.plugin.get() else { return };
        let first = self.inner.lock().unwrap().is_none();
        if first {
            *self.inner.lock().unwrap() = Some(GuardVerdict::deny("placeholder"));
            let v = p.evaluate(&GuardRequest::default());
            *self.inner.lock().unwrap() = Some(v);
        }
    }
}

#[test]
fn a_host_call_reentering_a_plugin_from_inside_its_own_call_gets_another_instance_never_the_same_store() {
    let sink = Arc::new(ReenteringSink::default());
    let rt = Runtime::new(RuntimeConfig::default().log_sink(sink.clone())).unwrap();
    // The guest counts its calls in a global of its instance and logs from a nested call path.
    let imports = r#"(import "chio" "log" (func $log (param i32 i32 i32)))"#;
    let extra = r#"(global $calls (mut i32) (i32.const 0))
      (func $deep (param i32) (if (local.get 0) (then (call $deep (i32.sub (local.get 0) (i32.const 1))))
                                               (else (call $log (i32.const 2) (i32.const 64) (i32.const 8)))))"#;
    let body = "(global.set $calls (i32.add (global.get $calls) (i32.const 1))) (call $deep (i32.const 50))
      (if (i32.gt_u (global.get $calls) (i32.const 1)) (then unreachable))";
    let p = rt.load(both(imports, extra, body).as_bytes(), PluginConfig::new("reentrant")).unwrap();
    sink.plugin.set(p.clone()).unwrap();
    // Outer call: logs, the sink re-enters; the inner call must not see the outer instance's global.
    assert_eq!(p.evaluate(&GuardRequest::default()), GuardVerdict::Allow);
    assert_eq!(*sink.inner.lock().unwrap(), Some(GuardVerdict::Allow), "the re-entered call shared the outer store");
    assert_eq!(sink.lines.lock().unwrap().len(), 2);
    let s = p.stats();
    assert_eq!((s.calls, s.failures, s.instances_created), (2, 0, 2), "{s:?}");
    // Both instances served one call each and went back to the pool.
    assert_eq!(p.idle_instances(), 2);
}

// ---- modules that are not what they claim -------------------------------------------------------

#[test]
fn undeclared_imports_of_every_kind_are_load_errors_naming_them() {
    let (rt, _) = runtime();
    let body = r#"(memory (export "memory") 1) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0))"#;
    let cases = [
        (r#"(import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))"#, "wasi_snapshot_preview1.proc_exit"),
        (r#"(import "env" "system" (func (param i32 i32) (result i32)))"#, "env.system"),
        (r#"(import "chio" "fetch_blob" (func (param i32 i64 i32) (result i32)))"#, "chio.fetch_blob"),
        (r#"(import "env" "kv_get" (global i32))"#, "env.kv_get"),
        (r#"(import "env" "table" (table 1 funcref))"#, "env.table"),
        (r#"(import "chio" "log" (memory 1))"#, "chio.log"),
        (r#"(import "" "" (func))"#, "."),
        (r#"(import "chio" "get_time_unix_secs" (func (result i32)))"#, "chio.get_time_unix_secs"),
        (r#"(import "env" "kv_set" (func (param i32 i32 i32 i32) (result i64)))"#, "env.kv_set"),
    ];
    for (import, named) in cases {
        let wat = format!("(module {import} {body})");
        let err = rt.load(wat.as_bytes(), PluginConfig::new("importer")).expect_err(import);
        assert!(matches!(err, LoadError::ForbiddenImport { .. } | LoadError::ImportType { .. }), "{import}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("importer") && msg.contains(named), "{import}: {msg}");
    }
    host_intact(&rt);
}

#[test]
fn every_truncation_and_every_byte_flip_of_a_module_is_an_error_or_a_safe_plugin() {
    let (rt, _) = runtime();
    let imports = r#"(import "chio" "log" (func $log (param i32 i32 i32)))"#;
    let good = wat::parse_str(both(imports, "", "(call $log (i32.const 2) (i32.const 64) (i32.const 4))")).unwrap();
    let mut loaded = 0;
    let mut check = |bytes: &[u8], what: &str| match rt.load(bytes, PluginConfig::new("mutant")) {
        Ok(p) => {
            loaded += 1;
            // Whatever the mutant does, a call ends in a verdict or a named error.
            if p.is_guard() {
                let _ = p.evaluate(&GuardRequest::default());
            }
        }
        Err(e) => assert!(e.to_string().contains("mutant"), "{what}: {e}"),
    };
    for cut in 0..good.len() {
        check(&good[..cut], &format!("cut at {cut}"));
    }
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut m = good.clone();
            m[i] ^= flip;
            check(&m, &format!("byte {i} ^ {flip:#x}"));
        }
    }
    assert!(loaded > 0, "no mutant loaded: the check never ran a mutant");
    host_intact(&rt);
}

#[test]
fn a_correctly_signed_module_gets_no_more_than_an_unsigned_one() {
    let (rt, _) = runtime();
    let dir = tempfile::tempdir().unwrap();
    let key = keys::generate_signing_key().unwrap();
    let trust = TrustRoot::from_keys([("test".to_string(), key.verifying_key())]);
    let mut opts = PackOptions::new("signed-evil", "1.0.0");
    opts.signing = PackSigning::Key(Box::new(key.clone()));
    opts.packed_at = Some("2026-01-01T00:00:00Z".into());
    opts.config.insert("attack".into(), "spin".into());
    let packed = pack(hostile("hostile-raw"), opts).unwrap();
    let path = dir.path().join("signed-evil-1.0.0.tar.gz");
    save_artefact(&packed.artefact, &path).unwrap();
    let verified =
        verify_path(&path, &VerifyOptions::default().trust_root(trust.clone())).expect("the artefact verifies");
    assert!(verified.signer.is_some());

    // It verifies, and still runs under the same fuel as anything else.
    let p = rt
        .load(
            &verified.wasm,
            PluginConfig::new(&verified.name).config_map(verified.config.clone()).fuel(Some(1_000_000)),
        )
        .unwrap();
    match p.evaluate(&GuardRequest::default()) {
        GuardVerdict::Deny { reason } => {
            assert!(reason.contains("fuel exhausted (limit 1000000") && reason.contains("signed-evil"), "{reason}")
        }
        GuardVerdict::Allow => panic!("a signed spinning guard was allowed"),
    }
    // A signed guard that denies everything denies; the verdict is its own, limits unchanged.
    let p = rt.load(&verified.wasm, PluginConfig::new("signed-evil").config("attack", "deny_all")).unwrap();
    assert_eq!(p.evaluate(&GuardRequest::default()), GuardVerdict::deny("hostile-raw denies everything"));

    // A signed module importing outside the host surface verifies (signatures speak to origin,
    // not behaviour) and is still refused by the host.
    let wasi = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let mut opts = PackOptions::new("signed-wasi", "1.0.0");
    opts.signing = PackSigning::Key(Box::new(key));
    opts.packed_at = Some("2026-01-01T00:00:00Z".into());
    let packed = pack(wasi, opts).expect("packing does not judge imports");
    let path = dir.path().join("signed-wasi-1.0.0.tar.gz");
    save_artefact(&packed.artefact, &path).unwrap();
    let verified =
        verify_path(&path, &VerifyOptions::default().trust_root(trust)).expect("the signed WASI module verifies");
    let err = rt.load(&verified.wasm, PluginConfig::new(&verified.name)).unwrap_err();
    assert!(matches!(err, LoadError::ForbiddenImport { .. }), "{err}");
    assert!(
        err.to_string().contains("signed-wasi") && err.to_string().contains("wasi_snapshot_preview1.fd_write"),
        "{err}"
    );
    host_intact(&rt);
}

// ---- pointers, lengths, results, allocators -----------------------------------------------------

#[test]
fn lengths_near_4_gib_negative_and_straddling_the_end_to_every_host_import_are_named_errors() {
    let (rt, _) = runtime();
    let wasm = hostile("hostile-raw");
    // (import, argument positions that are pointers or lengths)
    let imports: [(&str, &str, &[usize]); 6] = [
        ("kv_get", "env.kv_get", &[0, 1, 2, 3]),
        ("kv_set", "env.kv_set", &[0, 1, 2, 3]),
        ("kv_delete", "env.kv_delete", &[0, 1]),
        ("sha256_hex", "env.sha256_hex", &[0, 1, 2]),
        ("get_config", "chio.get_config", &[0, 1, 2, 3]),
        ("log", "chio.log", &[1, 2]),
    ];
    let values = ["-1", "-2147483648", "4294967280", "4294967295", "2147483647", "end-4"];
    let mut cases = 0;
    for (import, qualified, args) in imports {
        for arg in args {
            for value in values {
                let name = format!("bad-{import}-{arg}-{value}");
                let cfg = PluginConfig::new(&name)
                    .config("attack", "bad_arg")
                    .config("import", import)
                    .config("arg", arg.to_string())
                    .config("value", value);
                let p = rt.load(&wasm, cfg).unwrap();
                let err = p.try_evaluate(&GuardRequest::default()).expect_err(&name);
                match &err.kind {
                    FailureKind::BadImportCall { import: got, detail } => {
                        assert_eq!(got, qualified, "{name}");
                        assert!(detail.contains("outside guest memory"), "{name}: {detail}");
                    }
                    other => panic!("{name}: expected a bad import call, got {other}"),
                }
                assert!(err.to_string().contains(&name), "{err}");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 19 * values.len());
    // Nothing was written by any of them.
    assert!(rt.kv().entries("bad-kv_set-0--1").is_empty());
    host_intact(&rt);
}

#[test]
fn a_bad_argument_to_an_import_is_skipped_or_blocks_in_a_chain() {
    let (rt, _) = runtime();
    let wasm = hostile("hostile-raw");
    assert_policies(
        &rt,
        &wasm,
        "bad-sha-out",
        |c| c.config("attack", "bad_arg").config("import", "sha256_hex").config("arg", "2").config("value", "end-4"),
        "bad call to import env.sha256_hex: output range",
    );
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
        let skip = rt.load(&wasm, PluginConfig::new(format!("{name}-skip")).config("alloc", alloc)).unwrap();
        let abort = rt
            .load(&wasm, PluginConfig::new(format!("{name}-abort")).config("alloc", alloc).on_error(OnError::Abort))
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
        let allow = rt.load(&wasm, PluginConfig::new(format!("chio-alloc-{alloc}")).config("alloc", alloc)).unwrap();
        assert_eq!(allow.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow, "{alloc}");
        let deny = rt
            .load(
                &wasm,
                PluginConfig::new(format!("chio-alloc-{alloc}-deny"))
                    .config("alloc", alloc)
                    .config("attack", "deny_all"),
            )
            .unwrap();
        assert_eq!(
            deny.try_evaluate(&GuardRequest::default()).unwrap(),
            GuardVerdict::deny("hostile-raw denies everything"),
            "{alloc}"
        );
    }
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
        assert!(reason.contains("chio_deny_reason") && reason.contains(&name), "{reason}");
    }
}

// ---- panics ---------------------------------------------------------------------------------------

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

// ---- KV caps --------------------------------------------------------------------------------------

fn logged(sink: &MemoryLogSink, plugin: &str) -> Vec<String> {
    sink.lines().into_iter().filter(|(p, _, _)| p == plugin).map(|(_, _, m)| m).collect()
}

#[test]
fn kv_keys_and_values_over_their_caps_are_refused_and_nothing_is_stored() {
    let (rt, sink) = runtime();
    let wasm = hostile("hostile-raw");
    for attack in ["kv_key_too_long", "kv_value_too_long"] {
        let p = rt.load(&wasm, raw(attack)).unwrap();
        assert_eq!(p.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
        assert!(rt.kv().entries(&format!("raw-{attack}")).is_empty(), "{attack} stored something");
    }
    assert_eq!(logged(&sink, "raw-kv_key_too_long"), ["kv_key_too_long rc=-1", "kv_get_key_too_long rc=-1"]);
    assert_eq!(logged(&sink, "raw-kv_value_too_long"), ["kv_value_too_long rc=-1"]);
}

#[test]
fn kv_key_count_cap_stops_a_flood_at_1024_keys() {
    let (rt, sink) = runtime();
    let p = rt.load(&hostile("hostile-raw"), raw("kv_many_keys").deadline(Duration::from_secs(10))).unwrap();
    assert_eq!(p.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
    assert_eq!(logged(&sink, "raw-kv_many_keys"), [format!("stored={} rc=-1", limits::KV_MAX_KEYS)]);
    assert_eq!(rt.kv().entries("raw-kv_many_keys").len(), limits::KV_MAX_KEYS);
}

#[test]
fn kv_byte_total_cap_stops_a_flood_of_64_kib_values_before_64_mib() {
    let (rt, sink) = runtime();
    let p = rt.load(&hostile("hostile-raw"), raw("kv_fill").deadline(Duration::from_secs(20)).fuel(None)).unwrap();
    assert_eq!(p.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
    let entries = rt.kv().entries("raw-kv_fill");
    let total: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(total <= limits::KV_MAX_TOTAL_BYTES, "{total} bytes stored");
    // The byte total, not the key count, is what refused the write.
    assert!(entries.len() < limits::KV_MAX_KEYS, "{} keys", entries.len());
    assert_eq!(logged(&sink, "raw-kv_fill"), [format!("stored={} rc=-1", entries.len())]);
    // A smaller cap on the backend is enforced the same way.
    let sink = MemoryLogSink::new();
    let rt =
        Runtime::new(RuntimeConfig::default().kv(MemoryKv::with_caps(10_000, 200_000)).log_sink(sink.clone())).unwrap();
    let p = rt.load(&hostile("hostile-raw"), raw("kv_fill")).unwrap();
    assert_eq!(p.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
    assert_eq!(logged(&sink, "raw-kv_fill"), ["stored=3 rc=-1"]);
}

// ---- log floods -----------------------------------------------------------------------------------

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

// ---- config ---------------------------------------------------------------------------------------

#[test]
fn a_plugin_reads_only_its_own_config_and_never_past_its_buffer() {
    let (rt, _) = runtime();
    // Denies with whatever `get_config("secret")` wrote into an 8-byte buffer; allows when missing.
    let imports = r#"(import "chio" "get_config" (func $cfg (param i32 i32 i32 i32) (result i32)))"#;
    let extra = format!(
        r#"{} (global $n (mut i32) (i32.const 0))
        (func (export "chio_deny_reason") (param $b i32) (param $l i32) (result i32)
          (memory.copy (local.get $b) (i32.const 2048) (i32.const 8)) (i32.const 8))
        (func (export "probe") (param i32 i32) (result i32)
          (i64.store (i32.const 2048) (i64.const 0x2e2e2e2e2e2e2e2e))
          (i64.store (i32.const 2056) (i64.const 0x2121212121212121))
          (global.set $n (call $cfg (i32.const 1024) (i32.const 6) (i32.const 2048) (i32.const 8)))
          (if (result i32) (i32.lt_s (global.get $n) (i32.const 0)) (then (i32.const 0))
            (else (if (result i32) (i64.ne (i64.load (i32.const 2056)) (i64.const 0x2121212121212121)) (then unreachable) (else (i32.const 1))))))"#,
        data(1024, "secret")
    );
    let wat = both(imports, &extra, "")
        .replace(r#"(func (export "evaluate") (param i32 i32) (result i32) (call $body) (i32.const 0))"#, "");
    let wat = wat.replace(r#"(export "probe")"#, r#"(export "evaluate")"#);
    let b = rt.load(wat.as_bytes(), PluginConfig::new("b").config("secret", "b-secret-longer-than-8-bytes")).unwrap();
    let a = rt.load(wat.as_bytes(), PluginConfig::new("a")).unwrap();
    // b sees the first 8 bytes of its own value, and not a byte more is written.
    assert_eq!(b.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::deny("b-secret"));
    // a, same module, same runtime: nothing.
    assert_eq!(a.try_evaluate(&GuardRequest::default()).unwrap(), GuardVerdict::Allow);
}
