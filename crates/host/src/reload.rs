//! Hot reload with a canary and a watchdog (chio's contract).
//!
//! A [`HotPlugin`] is one configured plugin whose module can be replaced while calls run:
//!
//! 1. [`HotPlugin::reload`] takes a module by content address from a [`BundleStore`], asks the
//!    [`ReloadGate`] again (digest blocklist, signature), loads it beside the live version with the
//!    same config, and replays the [`CanaryCorpus`] — exactly [`CANARY_FIXTURE_COUNT`] fixtures —
//!    comparing each result byte for byte with the recorded one. A mismatch aborts the swap
//!    (`RELOAD_CANARY_FAILED`); otherwise the candidate goes live with one pointer swap
//!    (`RELOAD_APPLIED`). Each outcome is a `tracing` span of that name.
//! 2. After a swap, a watchdog counts error verdicts (trap, fuel, deadline, bad result) of the new
//!    version: [`WATCHDOG_ERRORS`] within [`WATCHDOG_WINDOW`] put the previous version back
//!    (`RELOAD_ROLLED_BACK`).
//! 3. Every canary failure and rollback writes an incident directory holding `incident.json` and
//!    `last_5_eval_traces.ndjson`.
//!
//! A call takes the live version's `Arc` for its whole length, so a call in flight finishes on the
//! instance it started on and every call is answered by exactly one version. A version nobody
//! holds is dropped, and its compiled module with it (the runtime caches modules weakly).
//! [`DebouncedReload`] coalesces triggers (file change, SIGHUP, admin request) into one attempt.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use helios_plugin_schema::{GuardRequest, GuardVerdict, Hook};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{BundleError, BundleStore, ContentId, LoadError, Plugin, PluginConfig, PluginError, Runtime};

/// Fixtures a canary corpus holds, exactly (chio's `CANARY_FIXTURE_COUNT`).
pub const CANARY_FIXTURE_COUNT: usize = 32;
/// Error verdicts within [`WATCHDOG_WINDOW`] that roll a reload back.
pub const WATCHDOG_ERRORS: usize = 5;
/// The watchdog's window.
pub const WATCHDOG_WINDOW: Duration = Duration::from_secs(60);
/// The file listing a corpus's fixtures (`<sha256>  <file>` lines).
pub const CANARY_MANIFEST: &str = "MANIFEST.sha256";
/// Evaluation traces kept for an incident.
pub const INCIDENT_TRACES: usize = 5;

/// Why a reload did not happen, or a corpus did not load. The old version keeps serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HotReloadError {
    #[error(
        "canary corpus {dir}: {found} fixtures listed in {CANARY_MANIFEST}, exactly {CANARY_FIXTURE_COUNT} required"
    )]
    CanaryFixtureCount { dir: String, found: usize },
    #[error("canary corpus {dir}: {detail}")]
    Corpus { dir: String, detail: String },
    #[error("plugin \"{plugin}\": {source}")]
    Bundle { plugin: String, source: BundleError },
    #[error("plugin \"{plugin}\": bundle {id} is not in the store")]
    Missing { plugin: String, id: ContentId },
    #[error("plugin \"{plugin}\": reload to {id} refused: {reason}")]
    Refused { plugin: String, id: ContentId, reason: String },
    #[error("plugin \"{plugin}\": reload from {path} refused: {reason}")]
    Verify { plugin: String, path: String, reason: String },
    #[error("reload: {0}")]
    Load(#[from] LoadError),
    #[error("{0}")]
    CanaryFailed(Box<CanaryFailure>),
}

/// A candidate whose result differed from the recorded one; it never served.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "plugin \"{plugin}\": canary failed on fixture {fixture}: expected {expected}, candidate {id} gave {actual} (incident {incident})"
)]
pub struct CanaryFailure {
    pub plugin: String,
    pub id: ContentId,
    pub fixture: String,
    pub expected: String,
    pub actual: String,
    pub incident: String,
}

/// One canary fixture: chio's guard form or a hook's input and result.
#[derive(Debug, Clone)]
pub struct CanaryFixture {
    /// The fixture file's name.
    pub file: String,
    pub case: CanaryCase,
}

/// What a fixture replays.
#[derive(Debug, Clone)]
pub enum CanaryCase {
    /// `{"request": GuardRequest, "expected_verdict_bytes": "{\"decision\":\"allow\"}"}`.
    Guard { request: Box<GuardRequest>, expected_verdict_bytes: String },
    /// `{"hook": "pre_query", "input": {...}, "expected": {...}}`; the result's JSON bytes are
    /// compared with `expected`'s (both in serde_json's canonical compact form).
    Hook { hook: Hook, input: serde_json::Value, expected: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardFixtureFile {
    request: GuardRequest,
    expected_verdict_bytes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookFixtureFile {
    hook: String,
    input: serde_json::Value,
    expected: serde_json::Value,
}

/// Exactly [`CANARY_FIXTURE_COUNT`] fixtures, each listed with its SHA-256 in `MANIFEST.sha256`.
#[derive(Debug, Clone)]
pub struct CanaryCorpus {
    pub dir: PathBuf,
    pub fixtures: Vec<CanaryFixture>,
}

impl CanaryCorpus {
    /// Reads `dir/MANIFEST.sha256` and every fixture it lists; each file's SHA-256 must match its
    /// line, the count must be exactly [`CANARY_FIXTURE_COUNT`].
    pub fn load(dir: &Path) -> Result<CanaryCorpus, HotReloadError> {
        let shown = dir.display().to_string();
        let corpus = |detail: String| HotReloadError::Corpus { dir: shown.clone(), detail };
        let manifest = std::fs::read_to_string(dir.join(CANARY_MANIFEST))
            .map_err(|e| corpus(format!("cannot read {CANARY_MANIFEST}: {e}")))?;
        let lines: Vec<&str> = manifest.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() != CANARY_FIXTURE_COUNT {
            return Err(HotReloadError::CanaryFixtureCount { dir: shown, found: lines.len() });
        }
        let mut fixtures = Vec::with_capacity(lines.len());
        for (n, line) in lines.iter().enumerate() {
            let (sha, file) = line
                .split_once("  ")
                .ok_or_else(|| corpus(format!("{CANARY_MANIFEST} line {}: expected `<sha256>  <file>`", n + 1)))?;
            let file = file.trim();
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(corpus(format!("{CANARY_MANIFEST} line {}: {file:?} is not a file of the corpus", n + 1)));
            }
            let bytes = std::fs::read(dir.join(file)).map_err(|e| corpus(format!("{file}: {e}")))?;
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != sha.trim() {
                return Err(corpus(format!("{file}: SHA-256 is {actual}, {CANARY_MANIFEST} says {}", sha.trim())));
            }
            fixtures.push(CanaryFixture {
                file: file.to_string(),
                case: parse_fixture(&bytes).map_err(|e| corpus(format!("{file}: {e}")))?,
            });
        }
        Ok(CanaryCorpus { dir: dir.to_path_buf(), fixtures })
    }
}

/// The first fixture whose result differed.
#[derive(Debug, Clone)]
pub struct CanaryMismatch {
    pub fixture: String,
    pub expected: String,
    pub actual: String,
    /// The last (up to five) evaluations, the diverging one last.
    pub traces: Vec<EvalTrace>,
}

impl CanaryCorpus {
    /// Replays every fixture on `plugin` (whose module is `id`) and compares each result byte for
    /// byte with the recorded one; the first difference is returned with the last five traces.
    pub fn replay(&self, plugin: &Plugin, id: &ContentId, epoch: u64) -> Result<(), CanaryMismatch> {
        let mut traces: VecDeque<EvalTrace> = VecDeque::new();
        for f in &self.fixtures {
            let t = Instant::now();
            let (input, expected, actual, error) = match &f.case {
                CanaryCase::Guard { request, expected_verdict_bytes } => {
                    let (actual, error) = match plugin.try_evaluate(request) {
                        Ok(v) => (serde_json::to_string(&v).unwrap_or_default(), false),
                        Err(e) => (format!("error: {e}"), true),
                    };
                    (serde_json::to_value(request).unwrap_or_default(), expected_verdict_bytes.clone(), actual, error)
                }
                CanaryCase::Hook { hook, input, expected } => {
                    let bytes = serde_json::to_vec(input).unwrap_or_default();
                    let (actual, error) = match plugin.call_json(*hook, &bytes) {
                        Ok(out) => match serde_json::from_slice::<serde_json::Value>(&out) {
                            Ok(v) => (serde_json::to_string(&v).unwrap_or_default(), false),
                            Err(_) => (String::from_utf8_lossy(&out).into_owned(), false),
                        },
                        Err(e) => (format!("error: {e}"), true),
                    };
                    (input.clone(), expected.clone(), actual, error)
                }
            };
            if traces.len() == INCIDENT_TRACES {
                traces.pop_front();
            }
            traces.push_back(EvalTrace {
                unix_ms: unix_ms(),
                digest: id.to_string(),
                epoch,
                input,
                output: actual.clone(),
                error,
                duration_us: t.elapsed().as_micros() as u64,
            });
            if actual.as_bytes() != expected.as_bytes() {
                return Err(CanaryMismatch {
                    fixture: f.file.clone(),
                    expected,
                    actual,
                    traces: traces.into_iter().collect(),
                });
            }
        }
        Ok(())
    }
}

fn parse_fixture(bytes: &[u8]) -> Result<CanaryCase, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("request").is_some() {
        let f: GuardFixtureFile = serde_json::from_value(value).map_err(|e| e.to_string())?;
        return Ok(CanaryCase::Guard {
            request: Box::new(f.request),
            expected_verdict_bytes: f.expected_verdict_bytes,
        });
    }
    let f: HookFixtureFile = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let hook = Hook::from_export_name(&f.hook).ok_or_else(|| format!("hook {:?} is not in the catalogue", f.hook))?;
    Ok(CanaryCase::Hook { hook, input: f.input, expected: serde_json::to_string(&f.expected).unwrap_or_default() })
}

/// Checked again before every reload: the digest blocklist and the signature.
pub trait ReloadGate: Send + Sync + std::fmt::Debug {
    /// `Err` names why `bytes` (whose id is `id`) may not load.
    fn admit(&self, id: &ContentId, bytes: &[u8]) -> Result<(), String>;
}

/// Admits everything (tests, hosts that verify before they `put`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenGate;

impl ReloadGate for OpenGate {
    fn admit(&self, _: &ContentId, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// One version of a plugin: the loaded module, its id and the reload generation that made it live.
#[derive(Debug)]
pub struct Version {
    pub plugin: Arc<Plugin>,
    pub id: ContentId,
    pub epoch: u64,
}

/// What answered a call: the version's id and epoch, beside the result.
#[derive(Debug, Clone)]
pub struct Answered<T> {
    pub result: T,
    pub id: ContentId,
    pub epoch: u64,
}

/// One evaluation, as an incident records it.
#[derive(Debug, Clone, Serialize)]
pub struct EvalTrace {
    pub unix_ms: u128,
    pub digest: String,
    pub epoch: u64,
    pub input: serde_json::Value,
    /// The result bytes, or the failure.
    pub output: String,
    pub error: bool,
    pub duration_us: u64,
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The candidate is live.
    Applied { from: ContentId, to: ContentId, epoch: u64 },
    /// The candidate is the live version already.
    Unchanged { id: ContentId },
}

/// The watchdog of one version that a swap made live: it keeps the last [`INCIDENT_TRACES`]
/// evaluations and trips on [`WATCHDOG_ERRORS`] error verdicts (trap, fuel, memory, deadline, bad
/// result: any failed call) within [`WATCHDOG_WINDOW`]. [`HotPlugin`] uses one; a host that swaps
/// its own plugins (helios-proxy's hook chain) feeds one per replaced plugin and rolls back when
/// [`Watchdog::record`] says so.
#[derive(Debug, Clone, Default)]
pub struct Watchdog {
    errors: VecDeque<Instant>,
    traces: VecDeque<EvalTrace>,
}

impl Watchdog {
    pub fn new() -> Watchdog {
        Watchdog::default()
    }

    /// Records one evaluation; true when it is an error that makes [`WATCHDOG_ERRORS`] within
    /// [`WATCHDOG_WINDOW`] (the caller rolls back).
    pub fn record(&mut self, trace: EvalTrace) -> bool {
        self.record_at(trace, Instant::now())
    }

    fn record_at(&mut self, trace: EvalTrace, now: Instant) -> bool {
        if self.traces.len() == INCIDENT_TRACES {
            self.traces.pop_front();
        }
        let error = trace.error;
        self.traces.push_back(trace);
        if !error {
            return false;
        }
        self.errors.push_back(now);
        self.expire(now);
        self.errors.len() >= WATCHDOG_ERRORS
    }

    fn expire(&mut self, now: Instant) {
        while self.errors.front().is_some_and(|t| now.duration_since(*t) > WATCHDOG_WINDOW) {
            self.errors.pop_front();
        }
    }

    /// Error verdicts within the window now.
    pub fn errors(&mut self) -> usize {
        self.expire(Instant::now());
        self.errors.len()
    }

    /// Forgets the counted errors (after a swap or a rollback); the traces stay.
    pub fn clear_errors(&mut self) {
        self.errors.clear();
    }

    /// The last (up to [`INCIDENT_TRACES`]) evaluations, oldest first.
    pub fn traces(&self) -> Vec<EvalTrace> {
        self.traces.iter().cloned().collect()
    }
}

/// A plugin whose module can be swapped while it serves (see the module docs).
pub struct HotPlugin {
    name: String,
    runtime: Runtime,
    config: PluginConfig,
    store: Arc<dyn BundleStore>,
    gate: Arc<dyn ReloadGate>,
    corpus: CanaryCorpus,
    incidents: PathBuf,
    live: RwLock<Arc<Version>>,
    previous: Mutex<Option<Arc<Version>>>,
    /// Serialises reloads and rollbacks.
    swap: Mutex<()>,
    watch: Mutex<Watchdog>,
    epochs: AtomicU64,
    outcomes: Mutex<Vec<&'static str>>,
    shadow: RwLock<Option<Arc<Shadow>>>,
}

/// A candidate running beside the live version on sampled real traffic; its results are compared,
/// never applied.
struct Shadow {
    version: Arc<Version>,
    every: u64,
    seen: AtomicU64,
    stats: Arc<ShadowCounters>,
    jobs: std::sync::mpsc::SyncSender<ShadowJob>,
}

#[derive(Default)]
struct ShadowCounters {
    compared: AtomicU64,
    divergences: AtomicU64,
    /// Samples dropped because the shadow worker was behind (never delays the live call).
    skipped: AtomicU64,
}

enum ShadowJob {
    Guard { request: Box<GuardRequest>, live: String },
    Hook { hook: Hook, input: Vec<u8>, live: String },
}

/// What a shadow candidate has shown so far.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowStats {
    pub id: ContentId,
    pub compared: u64,
    pub divergences: u64,
    pub skipped: u64,
    /// `(compared - divergences) / compared`; `None` before the first comparison.
    pub agreement_rate: Option<f64>,
}

/// Divergences logged in full; after that one in a hundred.
const SHADOW_LOGGED: u64 = 10;

impl std::fmt::Debug for HotPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotPlugin").field("name", &self.name).field("live", &self.live_id()).finish_non_exhaustive()
    }
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

impl HotPlugin {
    /// Loads `id` from `store` as the first live version (epoch 0). The gate is asked first.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        runtime: Runtime,
        config: PluginConfig,
        store: Arc<dyn BundleStore>,
        gate: Arc<dyn ReloadGate>,
        corpus: CanaryCorpus,
        incidents: impl AsRef<Path>,
        id: ContentId,
    ) -> Result<HotPlugin, HotReloadError> {
        let name = config.name().to_string();
        let bytes = fetch(&name, &*store, &id)?;
        gate.admit(&id, &bytes).map_err(|reason| HotReloadError::Refused { plugin: name.clone(), id, reason })?;
        let plugin = runtime.load(&bytes, config.clone())?;
        Ok(HotPlugin {
            name,
            runtime,
            config,
            store,
            gate,
            corpus,
            incidents: incidents.as_ref().to_path_buf(),
            live: RwLock::new(Arc::new(Version { plugin, id, epoch: 0 })),
            previous: Mutex::new(None),
            swap: Mutex::new(()),
            watch: Mutex::new(Watchdog::new()),
            epochs: AtomicU64::new(0),
            outcomes: Mutex::new(Vec::new()),
            shadow: RwLock::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version serving now; hold it for the length of one call.
    pub fn live(&self) -> Arc<Version> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The live version's id.
    pub fn live_id(&self) -> ContentId {
        self.live().id
    }

    /// The outcome of every reload attempt so far (`applied`, `canary_failed`, `rolled_back`,
    /// `refused`), in order.
    pub fn outcomes(&self) -> Vec<&'static str> {
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs chio's `evaluate` on the live version. A failure is a deny naming the cause (or an
    /// allow for an advisory guard) and counts towards the watchdog.
    pub fn evaluate(&self, request: &GuardRequest) -> Answered<GuardVerdict> {
        let v = self.live();
        let t = Instant::now();
        let r = v.plugin.try_evaluate(request);
        let input = serde_json::to_value(request).unwrap_or_default();
        let (output, err) = match &r {
            Ok(verdict) => (serde_json::to_string(verdict).unwrap_or_default(), None),
            Err(e) => (e.to_string(), Some(e)),
        };
        self.observe(&v, input, output.clone(), t.elapsed(), err.is_some());
        if let Some(shadow) = self.sampled_shadow() {
            shadow.send(ShadowJob::Guard { request: Box::new(request.clone()), live: output });
        }
        let result = match r {
            Ok(verdict) => verdict,
            Err(_) if self.config.advisory => GuardVerdict::Allow,
            Err(e) => GuardVerdict::deny(format!("guard \"{}\" failed closed: {}", self.name, e.kind)),
        };
        Answered { result, id: v.id, epoch: v.epoch }
    }

    /// Calls `hook` on the live version with raw JSON; failures count towards the watchdog.
    pub fn call_json(&self, hook: Hook, input: &[u8]) -> Answered<Result<Vec<u8>, PluginError>> {
        let v = self.live();
        let t = Instant::now();
        let r = v.plugin.call_json(hook, input);
        let shown = serde_json::from_slice(input).unwrap_or(serde_json::Value::Null);
        let output = match &r {
            Ok(b) => String::from_utf8_lossy(b).into_owned(),
            Err(e) => e.to_string(),
        };
        self.observe(&v, shown, output.clone(), t.elapsed(), r.is_err());
        if let Some(shadow) = self.sampled_shadow() {
            let live = match &r {
                Ok(b) => canonical(b),
                Err(_) => output,
            };
            shadow.send(ShadowJob::Hook { hook, input: input.to_vec(), live });
        }
        Answered { result: r, id: v.id, epoch: v.epoch }
    }

    fn sampled_shadow(&self) -> Option<Arc<Shadow>> {
        let shadow = self.shadow.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        let n = shadow.seen.fetch_add(1, Ordering::Relaxed);
        (n % shadow.every == 0).then_some(shadow)
    }

    /// Runs module `id` (from the store, through the gate) as a shadow beside the live version on
    /// one call in `every`: off the caller's thread, its results compared with the live ones and
    /// never applied. Replaces an earlier shadow.
    pub fn set_shadow(&self, id: &ContentId, every: u64) -> Result<(), HotReloadError> {
        let bytes = fetch(&self.name, &*self.store, id)?;
        self.gate.admit(id, &bytes).map_err(|reason| HotReloadError::Refused {
            plugin: self.name.clone(),
            id: *id,
            reason,
        })?;
        let plugin = self.runtime.load(&bytes, self.config.clone())?;
        let version = Arc::new(Version { plugin, id: *id, epoch: 0 });
        let stats = Arc::new(ShadowCounters::default());
        let (jobs, rx) = std::sync::mpsc::sync_channel::<ShadowJob>(256);
        let (worker_version, worker_stats, name) = (version.clone(), stats.clone(), self.name.clone());
        std::thread::Builder::new()
            .name("helios-shadow".into())
            .spawn(move || {
                for job in rx {
                    let (live, shadow, shown) = match job {
                        ShadowJob::Guard { request, live } => {
                            let out = match worker_version.plugin.try_evaluate(&request) {
                                Ok(v) => serde_json::to_string(&v).unwrap_or_default(),
                                Err(e) => e.to_string(),
                            };
                            (live, out, serde_json::to_string(&request).unwrap_or_default())
                        }
                        ShadowJob::Hook { hook, input, live } => {
                            let out = match worker_version.plugin.call_json(hook, &input) {
                                Ok(b) => canonical(&b),
                                Err(e) => e.to_string(),
                            };
                            (live, out, String::from_utf8_lossy(&input).into_owned())
                        }
                    };
                    worker_stats.compared.fetch_add(1, Ordering::Relaxed);
                    if live != shadow {
                        let n = worker_stats.divergences.fetch_add(1, Ordering::Relaxed) + 1;
                        if n <= SHADOW_LOGGED || n % 100 == 0 {
                            tracing::warn!(
                                plugin = %name, shadow = %worker_version.id, divergences = n,
                                input = %shown, live = %live, candidate = %shadow,
                                "shadow candidate diverged from the live version"
                            );
                        }
                    }
                }
            })
            .map_err(|e| HotReloadError::Refused {
                plugin: self.name.clone(),
                id: *id,
                reason: format!("cannot start the shadow worker: {e}"),
            })?;
        let shadow = Shadow { version, every: every.max(1), seen: AtomicU64::new(0), stats, jobs };
        *self.shadow.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(shadow));
        tracing::info!(plugin = %self.name, shadow = %id, every, "shadow candidate running");
        Ok(())
    }

    /// The shadow candidate's counters, if one runs.
    pub fn shadow_stats(&self) -> Option<ShadowStats> {
        let s = self.shadow.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        let compared = s.stats.compared.load(Ordering::Relaxed);
        let divergences = s.stats.divergences.load(Ordering::Relaxed);
        Some(ShadowStats {
            id: s.version.id,
            compared,
            divergences,
            skipped: s.stats.skipped.load(Ordering::Relaxed),
            agreement_rate: (compared > 0).then(|| (compared - divergences) as f64 / compared as f64),
        })
    }

    /// Stops the shadow candidate (its worker ends once its queue is empty).
    pub fn clear_shadow(&self) {
        self.shadow.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Applies the shadow candidate through the canary path ([`HotPlugin::reload`]); the shadow
    /// stops when it goes live.
    pub fn promote(&self) -> Result<ReloadOutcome, HotReloadError> {
        let id = self.shadow_stats().map(|s| s.id).ok_or_else(|| HotReloadError::Corpus {
            dir: self.name.clone(),
            detail: "no shadow candidate to promote".into(),
        })?;
        let outcome = self.reload(&id)?;
        self.clear_shadow();
        Ok(outcome)
    }

    fn observe(&self, v: &Arc<Version>, input: serde_json::Value, output: String, took: Duration, error: bool) {
        let trace = EvalTrace {
            unix_ms: unix_ms(),
            digest: v.id.to_string(),
            epoch: v.epoch,
            input,
            output,
            error,
            duration_us: took.as_micros() as u64,
        };
        let trip = self.watch.lock().unwrap_or_else(|e| e.into_inner()).record(trace);
        if trip {
            self.roll_back(v);
        }
    }

    /// Puts the previous version back if `failing` is still live and there is one.
    fn roll_back(&self, failing: &Arc<Version>) {
        let _one = self.swap.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&self.live(), failing) {
            return;
        }
        let Some(previous) = self.previous.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            // Nothing to go back to (the first version): keep serving, the errors are logged.
            self.watch.lock().unwrap_or_else(|e| e.into_inner()).clear_errors();
            return;
        };
        let traces: Vec<EvalTrace> = {
            let mut w = self.watch.lock().unwrap_or_else(|e| e.into_inner());
            w.clear_errors();
            w.traces()
        };
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = previous.clone();
        let span = tracing::error_span!(
            "RELOAD_ROLLED_BACK",
            plugin = %self.name,
            from = %failing.id,
            to = %previous.id,
            epoch = failing.epoch
        );
        let _in = span.enter();
        let incident = self.write_incident(
            "rolled_back",
            serde_json::json!({
                "from": failing.id.to_string(),
                "to": previous.id.to_string(),
                "epoch": failing.epoch,
                "reason": format!("{WATCHDOG_ERRORS} error verdicts within {} s", WATCHDOG_WINDOW.as_secs()),
            }),
            &traces,
        );
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).push("rolled_back");
        tracing::error!(
            plugin = %self.name,
            from = %failing.id,
            to = %previous.id,
            incident = %incident,
            "chio.guard.reload.rolled_back: {WATCHDOG_ERRORS} error verdicts within {} s; the previous module serves again",
            WATCHDOG_WINDOW.as_secs()
        );
    }

    /// Replaces the live version with `id` from the store, through the gate and the canary.
    pub fn reload(&self, id: &ContentId) -> Result<ReloadOutcome, HotReloadError> {
        let _one = self.swap.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.live();
        if current.id == *id {
            return Ok(ReloadOutcome::Unchanged { id: *id });
        }
        let refused = |reason: String| {
            self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).push("refused");
            tracing::warn!(plugin = %self.name, to = %id, "reload refused: {reason}");
            HotReloadError::Refused { plugin: self.name.clone(), id: *id, reason }
        };
        let bytes = match fetch(&self.name, &*self.store, id) {
            Ok(b) => b,
            Err(e) => return Err(refused(e.to_string())),
        };
        self.gate.admit(id, &bytes).map_err(refused)?;
        let candidate = match self.runtime.load(&bytes, self.config.clone()) {
            Ok(p) => p,
            Err(e) => return Err(refused(e.to_string())),
        };
        let epoch = self.epochs.load(Ordering::Relaxed) + 1;
        let candidate = Arc::new(Version { plugin: candidate, id: *id, epoch });
        if let Err(CanaryMismatch { fixture, expected, actual, traces }) = self.canary(&candidate) {
            let span = tracing::warn_span!("RELOAD_CANARY_FAILED", plugin = %self.name, from = %current.id, to = %id, fixture = %fixture);
            let _in = span.enter();
            let incident = self.write_incident(
                "canary_failed",
                serde_json::json!({
                    "from": current.id.to_string(),
                    "to": id.to_string(),
                    "fixture": fixture,
                    "expected": expected,
                    "actual": actual,
                }),
                &traces,
            );
            self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).push("canary_failed");
            tracing::warn!(plugin = %self.name, to = %id, fixture = %fixture, incident = %incident, "chio.guard.reload.canary_failed: the live module keeps serving");
            return Err(HotReloadError::CanaryFailed(Box::new(CanaryFailure {
                plugin: self.name.clone(),
                id: *id,
                fixture,
                expected,
                actual,
                incident,
            })));
        }
        self.epochs.store(epoch, Ordering::Relaxed);
        *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = Some(current.clone());
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = candidate;
        self.watch.lock().unwrap_or_else(|e| e.into_inner()).clear_errors();
        let span = tracing::info_span!("RELOAD_APPLIED", plugin = %self.name, from = %current.id, to = %id, epoch);
        let _in = span.enter();
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).push("applied");
        tracing::info!(plugin = %self.name, from = %current.id, to = %id, epoch, "reload applied");
        Ok(ReloadOutcome::Applied { from: current.id, to: *id, epoch })
    }

    /// Keeps `bytes` in the store and reloads to them (the gate is asked as for any reload).
    pub fn reload_bytes(&self, bytes: &[u8]) -> Result<ReloadOutcome, HotReloadError> {
        let id =
            self.store.put(bytes).map_err(|source| HotReloadError::Bundle { plugin: self.name.clone(), source })?;
        self.reload(&id)
    }

    fn canary(&self, candidate: &Version) -> Result<(), CanaryMismatch> {
        self.corpus.replay(&candidate.plugin, &candidate.id, candidate.epoch)
    }

    fn write_incident(&self, outcome: &str, detail: serde_json::Value, traces: &[EvalTrace]) -> String {
        write_incident(&self.incidents, &self.name, outcome, detail, traces)
    }
}

impl Shadow {
    fn send(&self, job: ShadowJob) {
        if self.jobs.try_send(job).is_err() {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A hook result in serde_json's compact form (so formatting differences are not divergences).
fn canonical(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => serde_json::to_string(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// `<incidents>/<unix ms>-<plugin>-<outcome>/{incident.json, last_5_eval_traces.ndjson}`;
/// returns the directory (or why it could not be written: the reload outcome stands anyway).
pub fn write_incident(
    root: &Path,
    plugin: &str,
    outcome: &str,
    mut detail: serde_json::Value,
    traces: &[EvalTrace],
) -> String {
    let safe: String =
        plugin.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let dir = root.join(format!("{}-{safe}-{outcome}", unix_ms()));
    if let Some(map) = detail.as_object_mut() {
        map.insert("plugin".into(), plugin.into());
        map.insert("outcome".into(), outcome.into());
        map.insert("unix_ms".into(), serde_json::Value::from(unix_ms() as u64));
    }
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("incident.json"), serde_json::to_vec_pretty(&detail).unwrap_or_default())?;
        let mut nd = Vec::new();
        for t in traces {
            nd.extend(serde_json::to_vec(t).unwrap_or_default());
            nd.push(b'\n');
        }
        std::fs::write(dir.join("last_5_eval_traces.ndjson"), nd)
    };
    match write() {
        Ok(()) => dir.display().to_string(),
        Err(e) => {
            tracing::error!(plugin, dir = %dir.display(), error = %e, "cannot write the incident directory");
            format!("{} (not written: {e})", dir.display())
        }
    }
}

fn fetch(plugin: &str, store: &dyn BundleStore, id: &ContentId) -> Result<Arc<[u8]>, HotReloadError> {
    match store.get(id) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(HotReloadError::Missing { plugin: plugin.into(), id: *id }),
        Err(source) => Err(HotReloadError::Bundle { plugin: plugin.into(), source }),
    }
}

/// Coalesces reload triggers: after the first trigger, further ones within `quiet` are folded in,
/// and `apply` runs once when `quiet` has passed without a new trigger. Runs on its own thread
/// until the `DebouncedReload` is dropped.
#[derive(Debug)]
pub struct DebouncedReload {
    state: Arc<(Mutex<Debounce>, Condvar)>,
}

#[derive(Debug, Default)]
struct Debounce {
    pending: Option<Instant>,
    reasons: Vec<String>,
    stop: bool,
}

impl DebouncedReload {
    /// Starts the worker; `apply` gets the reasons of the triggers it folds together.
    pub fn new(quiet: Duration, apply: impl Fn(Vec<String>) + Send + 'static) -> std::io::Result<DebouncedReload> {
        let state = Arc::new((Mutex::new(Debounce::default()), Condvar::new()));
        let worker = state.clone();
        std::thread::Builder::new().name("helios-reload".into()).spawn(move || {
            let (lock, cv) = &*worker;
            let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if s.stop {
                    return;
                }
                match s.pending {
                    None => s = cv.wait(s).unwrap_or_else(|e| e.into_inner()),
                    Some(last) => {
                        let due = last + quiet;
                        let now = Instant::now();
                        if now < due {
                            s = cv.wait_timeout(s, due - now).unwrap_or_else(|e| e.into_inner()).0;
                            continue;
                        }
                        s.pending = None;
                        let reasons = std::mem::take(&mut s.reasons);
                        drop(s);
                        apply(reasons);
                        s = lock.lock().unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
        })?;
        Ok(DebouncedReload { state })
    }

    /// One trigger (`"sighup"`, `"file changed"`, `"admin"`).
    pub fn trigger(&self, reason: impl Into<String>) {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.pending = Some(Instant::now());
        s.reasons.push(reason.into());
        cv.notify_all();
    }
}

impl Drop for DebouncedReload {
    fn drop(&mut self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(error: bool) -> EvalTrace {
        EvalTrace {
            unix_ms: 0,
            digest: "sha256:00".into(),
            epoch: 1,
            input: serde_json::Value::Null,
            output: if error { "trap".into() } else { "ok".into() },
            error,
            duration_us: 1,
        }
    }

    #[test]
    fn the_watchdog_trips_on_the_fifth_error_within_the_window_only() {
        let start = Instant::now();
        let mut w = Watchdog::new();
        for i in 0..WATCHDOG_ERRORS - 1 {
            assert!(!w.record_at(trace(true), start + Duration::from_secs(i as u64)), "error {i} tripped");
        }
        assert!(!w.record_at(trace(false), start + Duration::from_secs(5)), "a success never trips");
        // The first error is now older than the window: the fifth error makes only four.
        let late = start + WATCHDOG_WINDOW + Duration::from_millis(1);
        assert!(!w.record_at(trace(true), late));
        assert!(w.record_at(trace(true), late), "five errors within the window trip");
        let kept = w.traces();
        assert_eq!(kept.len(), INCIDENT_TRACES);
        assert_eq!(kept.iter().filter(|t| t.error).count(), INCIDENT_TRACES - 1, "the success is among the last five");
        w.clear_errors();
        assert!(!w.record_at(trace(true), late), "counting starts again after a clear");
    }
}
