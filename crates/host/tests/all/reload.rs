//! Hot reload (chio's contract): canary, watchdog rollback, incidents, gate checks, reloads under
//! load, and nothing accumulating over many reloads.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use helios_plugin_host::schema::{GuardRequest, GuardVerdict};
use helios_plugin_host::{
    BundleStore, CANARY_FIXTURE_COUNT, CanaryCorpus, ContentId, DebouncedReload, DirBundleStore, HotPlugin,
    HotReloadError, OpenGate, PluginConfig, ReloadGate, ReloadOutcome, Runtime, RuntimeConfig,
};
use sha2::{Digest, Sha256};

const DENY_BYTES: &str = r#"{"decision":"deny","reason":"denied by guard (no reason given)"}"#;
const ALLOW_BYTES: &str = r#"{"decision":"allow"}"#;

/// A guard that denies requests longer than `deny_over` bytes and traps on those longer than
/// `trap_over`; `tag` makes otherwise equal modules differ.
fn guard(tag: u32, deny_over: u32, trap_over: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1) (global i32 (i32.const {tag}))
            (func (export "evaluate") (param $p i32) (param $l i32) (result i32)
                (if (i32.gt_u (local.get $l) (i32.const {trap_over})) (then unreachable))
                (if (result i32) (i32.gt_u (local.get $l) (i32.const {deny_over}))
                    (then (i32.const 1)) (else (i32.const 0)))))"#
    ))
    .unwrap()
}

/// The baseline: denies requests over 500 bytes.
fn v1() -> Vec<u8> {
    guard(1, 500, 1_000_000)
}

/// Passes the canary (denies the 1,100-byte fixture) but allows 700-byte requests that v1 denies.
fn v2() -> Vec<u8> {
    guard(2, 900, 1_000_000)
}

fn request(blob: usize) -> GuardRequest {
    GuardRequest {
        tool_name: "write_file".into(),
        arguments: serde_json::json!({ "blob": "x".repeat(blob) }),
        ..Default::default()
    }
}

/// 31 small requests (allowed) and one of ~1,100 bytes (denied), as recorded from v1.
fn write_corpus(dir: &Path, count: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut manifest = String::new();
    for i in 0..count {
        let (req, expected) = if i == count - 1 {
            (request(1000), DENY_BYTES)
        } else {
            (GuardRequest { tool_name: format!("tool_{i}"), ..Default::default() }, ALLOW_BYTES)
        };
        let file = format!("fixture_{i:02}.json");
        let body =
            serde_json::to_vec(&serde_json::json!({"request": req, "expected_verdict_bytes": expected})).unwrap();
        std::fs::write(dir.join(&file), &body).unwrap();
        manifest.push_str(&format!("{}  {file}\n", hex::encode(Sha256::digest(&body))));
    }
    std::fs::write(dir.join("MANIFEST.sha256"), manifest).unwrap();
}

/// The digest blocklist file, read again on every reload (what a host's gate does).
#[derive(Debug)]
struct BlocklistGate {
    file: std::path::PathBuf,
    plugin: String,
}

impl ReloadGate for BlocklistGate {
    fn admit(&self, id: &ContentId, _: &[u8]) -> Result<(), String> {
        let list = helios_plugin_artefact::Blocklist::load(&self.file).map_err(|e| e.to_string())?;
        list.check(&id.hex(), &self.plugin).map_err(|e| e.to_string())
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    store: Arc<DirBundleStore>,
    hot: HotPlugin,
    v1: ContentId,
}

fn setup_with(gate: Arc<dyn ReloadGate>, runtime: Runtime) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    write_corpus(&root.join("canary"), CANARY_FIXTURE_COUNT);
    let store = Arc::new(DirBundleStore::new(root.join("bundles")));
    let v1 = store.put(&v1()).unwrap();
    let corpus = CanaryCorpus::load(&root.join("canary")).unwrap();
    // A generous deadline: these tests are about versions, not time, and run on loaded machines.
    let config = PluginConfig::new("g").deadline(Duration::from_secs(10));
    let hot = HotPlugin::new(runtime, config, store.clone(), gate, corpus, root.join("incidents"), v1).unwrap();
    Setup { _dir: dir, root, store, hot, v1 }
}

fn setup() -> Setup {
    setup_with(Arc::new(OpenGate), Runtime::new(RuntimeConfig::default()).unwrap())
}

fn incidents(root: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> =
        std::fs::read_dir(root.join("incidents")).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// Records the names of spans opened on this thread.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.lock().unwrap().push(attrs.metadata().name().to_string());
    }
}

fn recording() -> (Spans, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    (spans, guard)
}

fn reload_spans(spans: &Spans) -> Vec<String> {
    spans.0.lock().unwrap().iter().filter(|n| n.starts_with("RELOAD_")).cloned().collect()
}

#[test]
fn a_reload_that_passes_the_canary_is_applied_and_the_new_version_answers() {
    let s = setup();
    let (spans, _g) = recording();
    let before = s.hot.evaluate(&request(600));
    assert_eq!((before.id, before.epoch), (s.v1, 0));
    assert!(!before.result.is_allow(), "v1 denies 700-byte requests");

    let v2 = s.store.put(&v2()).unwrap();
    assert_eq!(s.hot.reload(&v2).unwrap(), ReloadOutcome::Applied { from: s.v1, to: v2, epoch: 1 });
    let after = s.hot.evaluate(&request(600));
    assert_eq!((after.id, after.epoch, after.result), (v2, 1, GuardVerdict::Allow));
    assert_eq!(reload_spans(&spans), ["RELOAD_APPLIED"]);
    assert!(incidents(&s.root).is_empty(), "an applied reload writes no incident");
    assert_eq!(s.hot.reload(&v2).unwrap(), ReloadOutcome::Unchanged { id: v2 });
}

#[test]
fn a_candidate_that_diverges_on_a_fixture_never_serves_and_leaves_an_incident() {
    let s = setup();
    let (spans, _g) = recording();
    let allows_all = s.store.put(&guard(3, 1_000_000, 1_000_000)).unwrap();
    let e = s.hot.reload(&allows_all).unwrap_err();
    let HotReloadError::CanaryFailed(f) = &e else { panic!("{e}") };
    assert_eq!(
        (f.fixture.as_str(), f.expected.as_str(), f.actual.as_str()),
        ("fixture_31.json", DENY_BYTES, ALLOW_BYTES)
    );
    let incident = &f.incident;
    assert!(e.to_string().contains("plugin \"g\"") && e.to_string().contains(&allows_all.to_string()), "{e}");
    assert_eq!(reload_spans(&spans), ["RELOAD_CANARY_FAILED"]);

    let answered = s.hot.evaluate(&request(600));
    assert_eq!(answered.id, s.v1, "the old module keeps serving");
    assert!(!answered.result.is_allow());

    let dirs = incidents(&s.root);
    assert_eq!(dirs.len(), 1);
    assert_eq!(dirs[0].display().to_string(), *incident);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dirs[0].join("incident.json")).unwrap()).unwrap();
    assert_eq!(json["outcome"], "canary_failed");
    assert_eq!(json["fixture"], "fixture_31.json");
    assert_eq!(json["to"], allows_all.to_string());
    assert_eq!(json["from"], s.v1.to_string());
    let traces = std::fs::read_to_string(dirs[0].join("last_5_eval_traces.ndjson")).unwrap();
    let lines: Vec<serde_json::Value> = traces.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|t| t["digest"] == allows_all.to_string()));
    assert_eq!(lines[4]["output"], ALLOW_BYTES, "the last trace is the diverging fixture");
}

#[test]
fn five_error_verdicts_within_a_minute_roll_back_to_the_previous_module() {
    let s = setup();
    let (spans, _g) = recording();
    // Passes the canary (its fixtures are under 2,000 bytes) and traps on longer live requests.
    let trapper = s.store.put(&guard(4, 500, 2000)).unwrap();
    s.hot.reload(&trapper).unwrap();
    for i in 0..4 {
        let a = s.hot.evaluate(&request(3000));
        assert_eq!(a.id, trapper, "call {i}");
        let GuardVerdict::Deny { reason } = &a.result else { panic!("a trap denies (fail-closed)") };
        assert!(reason.contains("failed closed") && reason.contains("\"g\""), "{reason}");
    }
    assert_eq!(s.hot.live_id(), trapper, "four errors do not trip the watchdog");
    let fifth = s.hot.evaluate(&request(3000));
    assert_eq!(fifth.id, trapper, "the fifth error is answered by the failing version");
    assert_eq!(s.hot.live_id(), s.v1);
    let next = s.hot.evaluate(&request(10));
    assert_eq!((next.id, next.result), (s.v1, GuardVerdict::Allow), "the next request is served by the prior module");
    assert_eq!(reload_spans(&spans), ["RELOAD_APPLIED", "RELOAD_ROLLED_BACK"]);
    assert_eq!(s.hot.outcomes(), ["applied", "rolled_back"]);

    let dirs = incidents(&s.root);
    assert_eq!(dirs.len(), 1);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dirs[0].join("incident.json")).unwrap()).unwrap();
    assert_eq!((json["outcome"].as_str(), json["from"].as_str()), (Some("rolled_back"), Some(&*trapper.to_string())));
    assert_eq!(json["to"], s.v1.to_string());
    let traces = std::fs::read_to_string(dirs[0].join("last_5_eval_traces.ndjson")).unwrap();
    let lines: Vec<serde_json::Value> = traces.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|t| t["error"] == true && t["digest"] == trapper.to_string()), "{traces}");
    assert!(lines[0]["output"].as_str().unwrap().contains("trapped"), "{traces}");
}

#[test]
fn a_corpus_must_hold_exactly_32_fixtures_each_matching_its_manifest_line() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("short"), 31);
    let e = CanaryCorpus::load(&dir.path().join("short")).unwrap_err();
    assert!(matches!(e, HotReloadError::CanaryFixtureCount { found: 31, .. }), "{e}");
    assert!(e.to_string().contains("31 fixtures") && e.to_string().contains("exactly 32"), "{e}");

    write_corpus(&dir.path().join("edited"), 32);
    std::fs::write(
        dir.path().join("edited/fixture_05.json"),
        br#"{"request":{"tool_name":"x"},"expected_verdict_bytes":"{}"}"#,
    )
    .unwrap();
    let e = CanaryCorpus::load(&dir.path().join("edited")).unwrap_err().to_string();
    assert!(e.contains("fixture_05.json") && e.contains("MANIFEST.sha256 says"), "{e}");
}

#[test]
fn a_digest_blocklisted_after_start_is_refused_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("blocklist.json");
    std::fs::write(&list, r#"{"digests": []}"#).unwrap();
    let gate = Arc::new(BlocklistGate { file: list.clone(), plugin: "g".into() });
    let s = setup_with(gate, Runtime::new(RuntimeConfig::default()).unwrap());
    let v2 = s.store.put(&v2()).unwrap();
    std::fs::write(&list, format!(r#"{{"digests": ["{v2}"]}}"#)).unwrap();
    let e = s.hot.reload(&v2).unwrap_err().to_string();
    assert!(e.contains("E_GUARD_DIGEST_BLOCKLISTED") && e.contains(&v2.to_string()) && e.contains("\"g\""), "{e}");
    assert_eq!(s.hot.live_id(), s.v1);
    assert_eq!(s.hot.outcomes(), ["refused"]);
}

#[test]
fn a_module_whose_signature_no_longer_verifies_is_refused_on_reload() {
    use helios_plugin_artefact::{TrustRoot, VerifyOptions, keys, signing, verify_path};
    let s = setup();
    let key = keys::generate_signing_key().unwrap();
    let keydir = s.root.join("keys");
    std::fs::create_dir_all(&keydir).unwrap();
    std::fs::write(keydir.join("ops.pem"), keys::public_key_pem(&key.verifying_key())).unwrap();
    let opts = VerifyOptions::default().trust_root(TrustRoot::load(&keydir).unwrap());
    let wasm = s.root.join("g.wasm");
    std::fs::write(&wasm, v2()).unwrap();
    let sidecar = signing::sign_module(&key, &v2(), "g", "1.0.0");
    std::fs::write(s.root.join("g.wasm.sig"), signing::sidecar_bytes(&sidecar)).unwrap();
    // The host verifies the file as it is now before every reload, then reloads its bytes.
    let verified = verify_path(&wasm, &opts).unwrap();
    let v2_id = ContentId::of(&v2());
    assert_eq!(s.hot.reload_bytes(&verified.wasm).unwrap(), ReloadOutcome::Applied { from: s.v1, to: v2_id, epoch: 1 });
    // The module changes on disk; the sidecar still signs the old bytes: nothing is reloaded.
    std::fs::write(&wasm, guard(5, 500, 1_000_000)).unwrap();
    let e = verify_path(&wasm, &opts).unwrap_err().to_string();
    assert!(e.contains("g.wasm"), "{e}");
    assert_eq!(s.hot.live_id(), v2_id, "the verified version keeps serving");
}

#[test]
fn a_hundred_reloads_under_four_calling_threads_fail_no_call_and_each_call_has_one_version() {
    let s = Arc::new(setup());
    let v2 = s.store.put(&v2()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (s, stop, calls, v1) = (s.clone(), stop.clone(), calls.clone(), s.v1);
            std::thread::spawn(move || {
                let mut seen = [0u64; 2];
                while !stop.load(Ordering::Relaxed) {
                    let a = s.hot.evaluate(&request(600));
                    // v1 denies 700-byte requests (generic reason), v2 allows them: the verdict
                    // must be the one of the version that says it answered.
                    if a.id == v1 {
                        assert_eq!(serde_json::to_string(&a.result).unwrap(), DENY_BYTES);
                        seen[0] += 1;
                    } else {
                        assert_eq!(a.id, v2);
                        assert_eq!(a.result, GuardVerdict::Allow);
                        seen[1] += 1;
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    for i in 0..100 {
        let to = if i % 2 == 0 { v2 } else { s.v1 };
        assert!(matches!(s.hot.reload(&to).unwrap(), ReloadOutcome::Applied { .. }), "reload {i}");
    }
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<[u64; 2]> = threads.into_iter().map(|t| t.join().expect("no call failed")).collect();
    let (by_v1, by_v2): (u64, u64) = seen.iter().fold((0, 0), |(a, b), s| (a + s[0], b + s[1]));
    assert_eq!(by_v1 + by_v2, calls.load(Ordering::Relaxed));
    assert!(by_v1 > 0 && by_v2 > 0, "both versions answered: {by_v1} / {by_v2}");
    assert_eq!(s.hot.outcomes().iter().filter(|o| **o == "applied").count(), 100);
    assert_eq!(s.hot.live().plugin.stats().failures, 0);
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The runtime caches compiled modules weakly: a module no version uses any more is freed, so a
/// thousand reloads of changing modules keep the resident set flat.
#[test]
fn nothing_accumulates_over_a_thousand_reloads_of_changing_modules() {
    let s = setup();
    let reload = |tag: u32| {
        let id = s.store.put(&guard(tag, 500, 1_000_000)).unwrap();
        s.hot.reload(&id).unwrap();
        assert_eq!(s.hot.evaluate(&request(10)).id, id);
    };
    for tag in 10..110 {
        reload(tag);
    }
    let warm = rss_bytes();
    for tag in 110..1010 {
        reload(tag);
    }
    let grown = rss_bytes().saturating_sub(warm);
    assert!(grown < 24 << 20, "RSS grew {} KiB over 900 reloads after warm-up", grown >> 10);
}

#[test]
fn triggers_within_the_quiet_window_fold_into_one_reload() {
    let applied = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let sink = applied.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let d = DebouncedReload::new(Duration::from_millis(100), move |reasons| {
        sink.lock().unwrap().push(reasons);
        let _ = tx.send(());
    })
    .unwrap();
    for reason in ["file changed", "sighup", "admin", "file changed"] {
        d.trigger(reason);
    }
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(*applied.lock().unwrap(), [vec!["file changed", "sighup", "admin", "file changed"]]);
    d.trigger("admin");
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(applied.lock().unwrap().len(), 2);
}

#[test]
fn a_shadow_candidate_counts_a_known_divergence_exactly_and_is_promoted_through_the_canary() {
    let s = setup();
    let v2 = s.store.put(&v2()).unwrap();
    s.hot.set_shadow(&v2, 1).unwrap();
    // 700-byte requests: v1 denies, v2 would allow (10 divergences); small ones: both allow.
    for i in 0..30 {
        let a = if i % 3 == 0 { s.hot.evaluate(&request(600)) } else { s.hot.evaluate(&request(10)) };
        assert_eq!(a.id, s.v1, "the shadow never answers");
        if i % 3 == 0 {
            assert!(!a.result.is_allow(), "the live decision is applied, not the shadow's");
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.hot.shadow_stats().unwrap().compared < 30 {
        assert!(std::time::Instant::now() < deadline, "{:?}", s.hot.shadow_stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = s.hot.shadow_stats().unwrap();
    assert_eq!((stats.id, stats.compared, stats.divergences, stats.skipped), (v2, 30, 10, 0));
    assert_eq!(stats.agreement_rate, Some(20.0 / 30.0));

    assert_eq!(s.hot.promote().unwrap(), ReloadOutcome::Applied { from: s.v1, to: v2, epoch: 1 });
    assert_eq!(s.hot.live_id(), v2);
    assert!(s.hot.shadow_stats().is_none(), "a promoted shadow stops shadowing");

    // A shadow that fails the canary is not promoted.
    let allows_all = s.store.put(&guard(6, 1_000_000, 1_000_000)).unwrap();
    s.hot.set_shadow(&allows_all, 1).unwrap();
    assert!(matches!(s.hot.promote().unwrap_err(), HotReloadError::CanaryFailed(_)));
    assert_eq!(s.hot.live_id(), v2);
}
