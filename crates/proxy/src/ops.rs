//! Operations (issue 15): reload, canary, shadow and the admin listener of helios-proxy.
//!
//! The binary loads its plugins through [`ProxyOps`]. With an `[admin]` section the runtime reports
//! every plugin call to one [`Metrics`] registry, the chain's results and statement outcomes are
//! counted, and `/plugins` lists the live chain (config values named in a plugin's `redact_keys`
//! hidden, a shadow candidate's agreement rate shown).
//!
//! **Reload.** SIGHUP, `POST /reload` and a change of `proxy.toml` or of a local plugin source are
//! triggers; [`DebouncedReload`] folds triggers that come within [`RELOAD_QUIET`] of each other into
//! one reload (read, verify, load, then [`Reloader::reload`]). A plugin whose module changed and
//! whose entry names a `canary` corpus replays it first ([`CanaryCorpus::replay`]); on a mismatch
//! the old version stays in the new chain (it keeps answering), an incident directory is written
//! and the span `RELOAD_CANARY_FAILED` logged, else `RELOAD_APPLIED`.
//!
//! **Watchdog.** A plugin whose module a reload or a promotion replaced is watched by the host
//! library's [`Watchdog`] until a later reload replaces it: [`WATCHDOG_ERRORS`] failed calls
//! (trap, fuel, memory, deadline, bad result — any failure) within [`WATCHDOG_WINDOW`] put the
//! previous version back for every statement that starts afterwards (calls in flight finish on
//! the version they started on), log the span `RELOAD_ROLLED_BACK` and write an incident directory
//! with the last five calls. `/plugins` shows each plugin's last reload outcome and, while it is
//! watched, its error count; `chio_guard_reload_total{guard=<plugin>,outcome}` counts outcomes.
//!
//! **Shadow.** An entry's `shadow` candidate sees one `pre_query` call in `every`, with the input
//! the live plugin got, on a worker thread (a full queue skips the sample, never delays the
//! client); its decision is compared with the live one and never applied. `POST
//! /plugins/<name>/promote` replaces the live plugin with the candidate after the canary passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, SystemTime};

use helios_plugin_admin::{AdminControl, Metrics, PluginMeta, PluginView, ShadowView, pre_query_kind};
use helios_plugin_host::reload::{EvalTrace, WATCHDOG_ERRORS, WATCHDOG_WINDOW, Watchdog, write_incident};
use helios_plugin_host::schema::{Hook, PostQueryEnvelope, PreQueryResult, QueryContext};
use helios_plugin_host::{
    CanaryCorpus, CanaryMismatch, Chain, ContentId, DebouncedReload, Plugin, PluginError, failure_cause,
};
use helios_plugin_loader::{LoadedEntry, Resolver, Source};

use crate::config::ProxyConfig;
use crate::error::ConfigError;
use crate::hooks::{PreQueryDecision, RouteDecision, StatementHooks};
use crate::server::{ReloadReport, Reloader};

/// Triggers within this long of each other make one reload.
pub const RELOAD_QUIET: Duration = Duration::from_millis(300);
/// How often the watched files are checked for a change.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// Samples a shadow worker may have queued; more are skipped (and counted).
const SHADOW_QUEUE: usize = 1024;
/// Divergences logged in full; after that one in a hundred.
const SHADOW_LOGGED: u64 = 10;
/// Characters of a statement an incident trace keeps.
const TRACE_EXCERPT: usize = 200;

/// The process's metrics, once an admin listener is configured (sessions and the pool report here).
static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();

/// Counts a client session while it lives (`helios_proxy_sessions`).
#[derive(Debug)]
pub struct SessionGauge(());

impl SessionGauge {
    pub fn open() -> SessionGauge {
        if let Some(m) = METRICS.get() {
            m.proxy_session(true);
        }
        SessionGauge(())
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        if let Some(m) = METRICS.get() {
            m.proxy_session(false);
        }
    }
}

/// Whether an admin listener's metrics are on (callers skip work otherwise).
pub fn metering() -> bool {
    METRICS.get().is_some()
}

/// An ErrorResponse that reaches a client (from the server or the proxy), by SQLSTATE.
pub fn client_error(sqlstate: &str) {
    if let Some(m) = METRICS.get() {
        m.proxy_error(sqlstate);
    }
}

/// A checkout that waited (handed a connection or timed out) for a server connection of `node`.
pub fn pool_waited(node: &str, waited: Duration) {
    if let Some(m) = METRICS.get() {
        m.proxy_pool_wait(node, waited);
    }
}

/// `node`'s pool now: idle connections and open ones (idle + checked out or being opened).
pub fn pool_size(node: &str, idle: usize, open: usize) {
    if let Some(m) = METRICS.get() {
        m.proxy_pool_size(node, idle as u64, open.saturating_sub(idle) as u64);
    }
}

fn digest_of(p: &Plugin) -> String {
    p.module_info().map(|m| format!("sha256:{}", m.sha256)).unwrap_or_else(|| "unknown".into())
}

/// A decision as the shadow comparison sees it: the result's JSON, or the failure.
fn decision_text(r: &Result<PreQueryResult, PluginError>) -> String {
    match r {
        Ok(r) => serde_json::to_string(r).unwrap_or_default(),
        Err(e) => format!("error: {}", e.kind),
    }
}

// ---------------------------------------------------------------------------------- shadow

#[derive(Debug, Default)]
struct ShadowCounters {
    compared: AtomicU64,
    divergences: AtomicU64,
    skipped: AtomicU64,
}

struct ShadowJob {
    input: Vec<u8>,
    live: String,
}

/// One entry's shadow candidate and its worker (which ends when this is dropped).
#[derive(Debug)]
pub struct ShadowRun {
    candidate: Arc<Plugin>,
    every: u64,
    seen: AtomicU64,
    counters: Arc<ShadowCounters>,
    jobs: std::sync::mpsc::SyncSender<ShadowJob>,
}

impl std::fmt::Debug for ShadowJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowJob").finish_non_exhaustive()
    }
}

impl ShadowRun {
    fn start(candidate: Arc<Plugin>, live_digest: &str, every: u64) -> std::io::Result<Arc<ShadowRun>> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<ShadowJob>(SHADOW_QUEUE);
        let counters = Arc::new(ShadowCounters::default());
        let (worker, stats) = (candidate.clone(), counters.clone());
        let live_digest = live_digest.to_string();
        std::thread::Builder::new().name("helios-shadow".into()).spawn(move || {
            for job in rx {
                let r = worker.call_with(Hook::PreQuery, &job.input, |b| {
                    serde_json::from_slice::<PreQueryResult>(b).map_err(|e| e.to_string())
                });
                let shadow = decision_text(&r);
                stats.compared.fetch_add(1, Ordering::Relaxed);
                if shadow != job.live {
                    let n = stats.divergences.fetch_add(1, Ordering::Relaxed) + 1;
                    if n <= SHADOW_LOGGED || n.is_multiple_of(100) {
                        tracing::warn!(
                            plugin = worker.name(),
                            live = %live_digest,
                            shadow = %digest_of(&worker),
                            divergences = n,
                            input = %String::from_utf8_lossy(&job.input),
                            live_decision = %job.live,
                            shadow_decision = %shadow,
                            "shadow candidate diverged from the live plugin"
                        );
                    }
                }
            }
        })?;
        tracing::info!(plugin = candidate.name(), shadow = %digest_of(&candidate), every, "shadow candidate running");
        Ok(Arc::new(ShadowRun { candidate, every: every.max(1), seen: AtomicU64::new(0), counters, jobs }))
    }

    /// Queues the live plugin's input and decision when this call is sampled.
    fn offer(&self, ctx: &QueryContext, rewritten: Option<&str>, live: &Result<PreQueryResult, PluginError>) {
        if !self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.every) {
            return;
        }
        let input = match rewritten {
            None => serde_json::to_vec(ctx),
            Some(sql) => serde_json::to_vec(&QueryContext { query: sql.to_string(), ..ctx.clone() }),
        }
        .unwrap_or_default();
        if self.jobs.try_send(ShadowJob { input, live: decision_text(live) }).is_err() {
            self.counters.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn view(&self) -> ShadowView {
        let compared = self.counters.compared.load(Ordering::Relaxed);
        let divergences = self.counters.divergences.load(Ordering::Relaxed);
        ShadowView {
            digest: digest_of(&self.candidate),
            compared,
            divergences,
            agreement_rate: (compared > 0).then(|| (compared - divergences) as f64 / compared as f64),
        }
    }
}

// ---------------------------------------------------------------------------------- chain

/// The plugins sessions call, the shadows beside them and the watched plugins among them.
#[derive(Debug, Default)]
struct ChainState {
    chain: Chain,
    shadows: BTreeMap<String, Arc<ShadowRun>>,
    watched: BTreeMap<String, Arc<Watched>>,
}

// ---------------------------------------------------------------------------------- watchdog

/// Each plugin's last reload outcome, for `/plugins` (shared by every chain of the process).
type Outcomes = Arc<Mutex<BTreeMap<String, serde_json::Value>>>;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A plugin whose module a reload or promotion replaced (`fresh`, live in the chain), and the
/// version it replaced. Its calls feed the host library's [`Watchdog`]; when it trips, `previous`
/// goes back into the chain.
#[derive(Debug)]
struct Watched {
    fresh: Arc<Plugin>,
    /// `fresh`'s digest (each trace names it).
    digest: String,
    previous: Arc<Plugin>,
    incidents: PathBuf,
    /// The reload or promotion that made `fresh` live (the process's count).
    epoch: u64,
    dog: Mutex<Watchdog>,
}

impl Watched {
    fn new(fresh: Arc<Plugin>, previous: Arc<Plugin>, incidents: PathBuf, epoch: u64) -> Arc<Watched> {
        let digest = digest_of(&fresh);
        Arc::new(Watched { fresh, digest, previous, incidents, epoch, dog: Mutex::new(Watchdog::new()) })
    }

    /// The same watch over a new load of the same module (a reload that left it unchanged).
    fn carried(&self, fresh: Arc<Plugin>, incidents: PathBuf) -> Arc<Watched> {
        let dog = self.dog.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Arc::new(Watched {
            fresh,
            digest: self.digest.clone(),
            previous: self.previous.clone(),
            incidents,
            epoch: self.epoch,
            dog: Mutex::new(dog),
        })
    }

    fn view(&self) -> serde_json::Value {
        let errors = self.dog.lock().unwrap_or_else(|e| e.into_inner()).errors();
        serde_json::json!({
            "previous": digest_of(&self.previous),
            "errors": errors,
            "rolls_back_at": WATCHDOG_ERRORS,
            "window_s": WATCHDOG_WINDOW.as_secs(),
        })
    }
}

/// At most [`TRACE_EXCERPT`] characters of `query`.
fn excerpt(query: &str) -> String {
    match query.char_indices().nth(TRACE_EXCERPT) {
        Some((at, _)) => format!("{}…", &query[..at]),
        None => query.to_string(),
    }
}

/// The chain with per-plugin result counts, statement outcomes and shadow sampling. A promotion
/// swaps its state: statements that start afterwards, in every session, use the new plugin.
#[derive(Debug)]
pub struct MeteredChain {
    state: RwLock<Arc<ChainState>>,
    metrics: Option<Arc<Metrics>>,
    outcomes: Outcomes,
}

impl MeteredChain {
    fn state(&self) -> Arc<ChainState> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the state with what `next` makes of the current one (nothing when it says `None`);
    /// true when it did. Promotions and rollbacks never overwrite each other's change.
    fn update(&self, next: impl FnOnce(&ChainState) -> Option<ChainState>) -> bool {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        match next(&state) {
            Some(n) => {
                *state = Arc::new(n);
                true
            }
            None => false,
        }
    }

    /// Feeds one call of a watched plugin to its watchdog; rolls back when it trips.
    fn watch<R: serde::Serialize>(
        &self,
        w: &Watched,
        p: &Plugin,
        hook: Hook,
        query: &str,
        took: Duration,
        r: &Result<R, PluginError>,
    ) {
        if !std::ptr::eq(p, &*w.fresh) {
            return;
        }
        let (output, error) = match r {
            Ok(v) => (serde_json::to_string(v).unwrap_or_default(), false),
            Err(e) => (format!("{}: {e}", failure_cause(&e.kind)), true),
        };
        let trace = EvalTrace {
            unix_ms: u128::from(unix_ms()),
            digest: w.digest.clone(),
            epoch: w.epoch,
            input: serde_json::json!({"hook": hook.export_name(), "query": excerpt(query), "query_chars": query.chars().count()}),
            output,
            error,
            duration_us: took.as_micros() as u64,
        };
        if w.dog.lock().unwrap_or_else(|e| e.into_inner()).record(trace) {
            self.roll_back(w);
        }
    }

    /// Puts `w.previous` back in place of `w.fresh` (if `w.fresh` still answers): new statements
    /// use it, calls in flight finish on the state they took. Span `RELOAD_ROLLED_BACK`, an
    /// incident directory, the reload metric and `/plugins`' last outcome.
    fn roll_back(&self, w: &Watched) {
        let name = w.fresh.name();
        let rolled = self.update(|s| {
            if !s.chain.get(name).is_some_and(|live| Arc::ptr_eq(live, &w.fresh)) {
                return None;
            }
            let plugins =
                s.chain.plugins().iter().map(|p| if Arc::ptr_eq(p, &w.fresh) { w.previous.clone() } else { p.clone() });
            let mut watched = s.watched.clone();
            watched.remove(name);
            Some(ChainState { chain: Chain::new(plugins.collect()), shadows: s.shadows.clone(), watched })
        });
        if !rolled {
            return;
        }
        let traces = {
            let mut dog = w.dog.lock().unwrap_or_else(|e| e.into_inner());
            dog.clear_errors();
            dog.traces()
        };
        let (from, to) = (w.digest.clone(), digest_of(&w.previous));
        let reason = format!("{WATCHDOG_ERRORS} failed calls within {} s", WATCHDOG_WINDOW.as_secs());
        let span = tracing::error_span!("RELOAD_ROLLED_BACK", plugin = %name, from = %from, to = %to, epoch = w.epoch);
        let _in = span.enter();
        let incident = write_incident(
            &w.incidents,
            name,
            "rolled_back",
            serde_json::json!({"from": from, "to": to, "epoch": w.epoch, "reason": reason}),
            &traces,
        );
        if let Some(m) = &self.metrics {
            m.guard_reload(name, "rolled_back");
        }
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).insert(
            name.to_string(),
            serde_json::json!({
                "outcome": "rolled_back", "from": from, "to": to, "reason": reason,
                "incident": incident, "unix_ms": unix_ms(),
            }),
        );
        tracing::error!(
            plugin = %name, from = %from, to = %to, incident = %incident,
            "watchdog: {reason}; the previous version answers again"
        );
    }

    /// The plugins in calling order now.
    pub fn chain(&self) -> Chain {
        self.state().chain.clone()
    }
}

impl StatementHooks for MeteredChain {
    fn is_empty(&self) -> bool {
        StatementHooks::is_empty(&self.state().chain)
    }
    fn bounded_call_time(&self) -> Option<std::time::Duration> {
        StatementHooks::bounded_call_time(&self.state().chain)
    }
    fn has_pre_query(&self) -> bool {
        StatementHooks::has_pre_query(&self.state().chain)
    }
    fn pre_query(&self, ctx: &QueryContext) -> PreQueryDecision {
        let state = self.state();
        let mut rewritten: Option<String> = None;
        let o = state.chain.pre_query_observed(ctx, &mut |p, took, r| {
            if let (Some(m), Ok(r)) = (&self.metrics, r) {
                m.plugin_result(p.name(), "pre_query", pre_query_kind(r));
            }
            if let Some(shadow) = state.shadows.get(p.name()) {
                shadow.offer(ctx, rewritten.as_deref(), r);
            }
            if let Some(w) = state.watched.get(p.name()) {
                self.watch(w, p, Hook::PreQuery, rewritten.as_deref().unwrap_or(&ctx.query), took, r);
            }
            if let Ok(PreQueryResult::Rewrite { sql }) = r {
                rewritten = Some(sql.clone());
            }
        });
        if let Some(m) = &self.metrics {
            // A refusal's ErrorResponse is counted where it is sent (helios_proxy_errors).
            m.proxy_statement(match &o.result {
                PreQueryResult::Continue => "forwarded",
                PreQueryResult::Rewrite { .. } => "rewritten",
                PreQueryResult::Block { .. } => "blocked",
                PreQueryResult::Cached { .. } => "cached",
            });
        }
        PreQueryDecision { result: o.result, decided_by: o.decided_by }
    }
    fn route(&self, ctx: &QueryContext) -> RouteDecision {
        let state = self.state();
        let o = state.chain.route_observed(ctx, &mut |p, took, r| {
            if let (Some(m), Ok(r)) = (&self.metrics, r) {
                let kind = serde_json::to_value(r).ok().and_then(|v| v["action"].as_str().map(str::to_string));
                m.plugin_result(p.name(), "route", kind.as_deref().unwrap_or("unknown"));
            }
            if let Some(w) = state.watched.get(p.name()) {
                self.watch(w, p, Hook::Route, &ctx.query, took, r);
            }
        });
        RouteDecision { result: o.result, decided_by: o.decided_by }
    }
    fn post_query(&self, env: &PostQueryEnvelope) {
        let state = self.state();
        let _ = state.chain.post_query_observed(env, &mut |p, took, r| {
            if let (Some(m), true) = (&self.metrics, r.is_ok()) {
                m.plugin_result(p.name(), "post_query", "ok");
            }
            if let Some(w) = state.watched.get(p.name()) {
                self.watch(w, p, Hook::PostQuery, &env.query_context.query, took, r);
            }
        });
    }
}

// ---------------------------------------------------------------------------------- canary

/// An entry's canary: the corpus directory and where incidents go.
#[derive(Debug, Clone)]
struct CanarySetup {
    corpus: PathBuf,
    incidents: PathBuf,
}

/// Why a candidate did not go live.
#[derive(Debug)]
struct CanaryRefusal {
    message: String,
    fixture: Option<String>,
    incident: Option<String>,
}

/// Replays `setup`'s corpus on `candidate` (replacing `from`); on a mismatch writes the incident
/// directory. The spans are chio's `RELOAD_APPLIED` / `RELOAD_CANARY_FAILED`.
fn run_canary(name: &str, from: &str, candidate: &Plugin, setup: &CanarySetup) -> Result<usize, CanaryRefusal> {
    let to = digest_of(candidate);
    let corpus = CanaryCorpus::load(&setup.corpus).map_err(|e| CanaryRefusal {
        message: format!("plugin \"{name}\": canary corpus: {e}; the live version keeps answering"),
        fixture: None,
        incident: None,
    })?;
    let id: ContentId = to.parse().unwrap_or(ContentId([0; 32]));
    match corpus.replay(candidate, &id, 0) {
        Ok(()) => {
            let span = tracing::info_span!("RELOAD_APPLIED", plugin = %name, from = %from, to = %to);
            let _in = span.enter();
            tracing::info!(plugin = %name, from = %from, to = %to, fixtures = corpus.fixtures.len(), "canary passed; the new version answers");
            Ok(corpus.fixtures.len())
        }
        Err(CanaryMismatch { fixture, expected, actual, traces }) => {
            let span =
                tracing::warn_span!("RELOAD_CANARY_FAILED", plugin = %name, from = %from, to = %to, fixture = %fixture);
            let _in = span.enter();
            let incident = helios_plugin_host::reload::write_incident(
                &setup.incidents,
                name,
                "canary_failed",
                serde_json::json!({
                    "from": from, "to": to, "fixture": fixture, "expected": expected, "actual": actual,
                    "corpus": setup.corpus.display().to_string(),
                }),
                &traces,
            );
            tracing::warn!(plugin = %name, to = %to, fixture = %fixture, incident = %incident, "canary failed; the live version keeps answering");
            Err(CanaryRefusal {
                message: format!(
                    "plugin \"{name}\": canary failed at fixture {fixture} (expected {expected}, got {actual}); the live version {from} keeps answering; incident: {incident}"
                ),
                fixture: Some(fixture),
                incident: Some(incident),
            })
        }
    }
}

// ---------------------------------------------------------------------------------- ops

/// A watched file's modification time and size (`None` while it is missing).
type Stamp = Option<(SystemTime, u64)>;

/// What `/plugins` and reloads need of the live configuration.
#[derive(Debug)]
struct Live {
    hooks: Arc<MeteredChain>,
    redact: BTreeMap<String, Vec<String>>,
    canaries: BTreeMap<String, CanarySetup>,
    /// Each entry's incident directory (canary failures and watchdog rollbacks).
    incidents: BTreeMap<String, PathBuf>,
    /// proxy.toml and the local plugin sources (a change is a reload trigger).
    watched: Vec<PathBuf>,
}

/// A configuration read, verified and loaded, not yet serving.
struct Prepared {
    config: ProxyConfig,
    entries: Vec<LoadedEntry>,
    redact: BTreeMap<String, Vec<String>>,
    canaries: BTreeMap<String, CanarySetup>,
    incidents: BTreeMap<String, PathBuf>,
    watched: Vec<PathBuf>,
}

#[derive(Debug)]
struct Tickets {
    requested: u64,
    done: u64,
    reloads: u64,
    last: Result<serde_json::Value, String>,
}

/// helios-proxy's plugins, reloads and admin requests.
#[derive(Debug)]
pub struct ProxyOps {
    path: PathBuf,
    metrics: Option<Arc<Metrics>>,
    reloader: OnceLock<Reloader>,
    live: RwLock<Option<Live>>,
    /// One reload or promotion at a time.
    reloading: Mutex<()>,
    tickets: Mutex<Tickets>,
    finished: Condvar,
    debounce: OnceLock<DebouncedReload>,
    /// Each plugin's last reload outcome (reload, promotion or rollback).
    outcomes: Outcomes,
    /// Reloads and promotions so far (a watched version's epoch).
    epochs: AtomicU64,
}

impl ProxyOps {
    /// `metrics` when an admin listener serves them (the process's metrics are set once).
    pub fn new(path: &Path, metrics: Option<Arc<Metrics>>) -> Arc<ProxyOps> {
        if let Some(m) = &metrics {
            let _ = METRICS.set(m.clone());
        }
        Arc::new(ProxyOps {
            path: path.to_path_buf(),
            metrics,
            reloader: OnceLock::new(),
            live: RwLock::new(None),
            reloading: Mutex::new(()),
            tickets: Mutex::new(Tickets { requested: 0, done: 0, reloads: 0, last: Ok(serde_json::Value::Null) }),
            finished: Condvar::new(),
            debounce: OnceLock::new(),
            outcomes: Outcomes::default(),
            epochs: AtomicU64::new(0),
        })
    }

    /// The metrics of the admin listener, if one is configured.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Reads the config file, verifies and loads its plugins (and shadow candidates). `redact_keys`
    /// of each `[[plugins]]` entry is taken out here (the loader does not know it).
    fn prepare(&self) -> Result<Prepared, ConfigError> {
        let mut config = ProxyConfig::load(&self.path)?;
        let origin = self.path.display().to_string();
        let mut redact = BTreeMap::new();
        for (i, table) in config.plugins.iter_mut().enumerate() {
            let name = table.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            if let Some(keys) = table.remove("redact_keys") {
                let keys: Vec<String> = keys.try_into().map_err(|e| ConfigError::Plugins {
                    message: format!("{origin}: plugins[{i}] ({name}): field redact_keys: {e} (an array of strings)"),
                })?;
                redact.insert(name.clone(), keys);
            }
        }
        let observer = self.metrics.clone().map(|m| m as Arc<dyn helios_plugin_host::PluginObserver>);
        let entries = crate::plugins::load_entries_observed(&config, &origin, observer)?;
        let resolver = Resolver::new(config.base_dir.clone());
        let mut canaries = BTreeMap::new();
        let mut incident_dirs = BTreeMap::new();
        let mut watched = vec![self.path.clone()];
        for e in &entries {
            let incidents = resolver.path(e.entry.incident_dir.as_deref().unwrap_or(Path::new("incidents")));
            incident_dirs.insert(e.entry.name.clone(), incidents.clone());
            if let Some(corpus) = &e.entry.canary {
                canaries.insert(e.entry.name.clone(), CanarySetup { corpus: resolver.path(corpus), incidents });
            }
            for source in std::iter::once(&e.entry.source).chain(e.entry.shadow.as_ref().map(|s| &s.source)) {
                if let Source::Path(p) = source {
                    watched.push(resolver.path(p));
                }
            }
        }
        Ok(Prepared { config, entries, redact, canaries, incidents: incident_dirs, watched })
    }

    /// The chain of `entries` (with `plugins` in place of each entry's own, same order), its
    /// shadows and the plugins the watchdog watches.
    fn chain_state(
        entries: &[LoadedEntry],
        plugins: Vec<Arc<Plugin>>,
        watched: BTreeMap<String, Arc<Watched>>,
    ) -> ChainState {
        let mut shadows = BTreeMap::new();
        for (e, live) in entries.iter().zip(&plugins) {
            if let (Some(candidate), Some(s)) = (&e.shadow, &e.entry.shadow) {
                match ShadowRun::start(candidate.clone(), &digest_of(live), s.every) {
                    Ok(run) => {
                        shadows.insert(e.entry.name.clone(), run);
                    }
                    Err(err) => {
                        tracing::error!(plugin = %e.entry.name, error = %err, "cannot start the shadow worker; no shadow")
                    }
                }
            }
        }
        ChainState { chain: Chain::new(plugins), shadows, watched }
    }

    /// A chain over `state` reporting to this process's metrics and outcomes.
    fn metered(&self, state: ChainState) -> Arc<MeteredChain> {
        Arc::new(MeteredChain {
            state: RwLock::new(Arc::new(state)),
            metrics: self.metrics.clone(),
            outcomes: self.outcomes.clone(),
        })
    }

    /// Records plugin `name`'s reload outcome for `/plugins` and the reload metric.
    fn outcome(&self, name: &str, outcome: &str, detail: serde_json::Value) {
        if let Some(m) = &self.metrics {
            m.guard_reload(name, outcome);
        }
        let mut v = detail;
        v["outcome"] = outcome.into();
        v["unix_ms"] = unix_ms().into();
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), v);
    }

    /// The first load, before the proxy serves.
    pub fn load(&self) -> Result<(ProxyConfig, Arc<dyn StatementHooks>), ConfigError> {
        let p = self.prepare()?;
        let plugins = p.entries.iter().map(|e| e.plugin.clone()).collect();
        let hooks = self.metered(Self::chain_state(&p.entries, plugins, BTreeMap::new()));
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Some(Live {
            hooks: hooks.clone(),
            redact: p.redact,
            canaries: p.canaries,
            incidents: p.incidents,
            watched: p.watched,
        });
        let hooks: Arc<dyn StatementHooks> = hooks;
        Ok((p.config, hooks))
    }

    /// The running proxy's reloader (set once, after bind).
    pub fn set_reloader(&self, reloader: Reloader) {
        let _ = self.reloader.set(reloader);
    }

    /// Starts the reload triggers: a [`DebouncedReload`] (folding triggers within [`RELOAD_QUIET`])
    /// and a watcher of proxy.toml and the local plugin sources. Without it, reloads run at once.
    pub fn start_triggers(self: &Arc<Self>) -> std::io::Result<()> {
        let weak: Weak<ProxyOps> = Arc::downgrade(self);
        let debounce = DebouncedReload::new(RELOAD_QUIET, move |reasons| {
            if let Some(ops) = weak.upgrade() {
                ops.reload_folded(&reasons);
            }
        })?;
        let _ = self.debounce.set(debounce);
        let weak = Arc::downgrade(self);
        std::thread::Builder::new().name("helios-watch".into()).spawn(move || {
            let mut seen: Option<(Vec<PathBuf>, Vec<Stamp>)> = None;
            loop {
                std::thread::sleep(WATCH_EVERY);
                let Some(ops) = weak.upgrade() else { return };
                let files = ops.live.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|l| l.watched.clone());
                let files = files.unwrap_or_default();
                let stamps: Vec<_> = files
                    .iter()
                    .map(|f| {
                        std::fs::metadata(f).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
                    })
                    .collect();
                if let Some((before, old)) = &seen
                    && before == &files
                {
                    for (f, (a, b)) in files.iter().zip(old.iter().zip(&stamps)) {
                        if a != b {
                            ops.trigger(format!("file changed: {}", f.display()));
                        }
                    }
                }
                seen = Some((files, stamps));
            }
        })?;
        Ok(())
    }

    /// One reload trigger (`"SIGHUP"`, `"admin"`, `"file changed: …"`); returns its ticket. Runs
    /// the reload at once when the triggers were not started.
    pub fn trigger(&self, reason: impl Into<String>) -> u64 {
        let reason = reason.into();
        let ticket = {
            let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
            t.requested += 1;
            t.requested
        };
        match self.debounce.get() {
            Some(d) => d.trigger(reason),
            None => self.reload_folded(&[reason]),
        }
        ticket
    }

    /// Waits until the reload that covers `ticket` finished; its result.
    pub fn wait(&self, ticket: u64) -> Result<serde_json::Value, String> {
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        while t.done < ticket {
            let (next, timeout) =
                self.finished.wait_timeout(t, Duration::from_secs(120)).unwrap_or_else(|e| e.into_inner());
            t = next;
            if timeout.timed_out() && t.done < ticket {
                return Err("the reload did not finish within 120 s".into());
            }
        }
        t.last.clone()
    }

    fn reload_folded(&self, reasons: &[String]) {
        let upto = self.tickets.lock().unwrap_or_else(|e| e.into_inner()).requested;
        tracing::info!(file = %self.path.display(), triggers = reasons.len(), reasons = ?reasons, "reloading the configuration");
        let r = self.reload().map(|mut v| {
            v["triggers"] = serde_json::Value::from(reasons.len());
            v
        });
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        t.done = t.done.max(upto);
        t.reloads += 1;
        let n = t.reloads;
        t.last = r.map(|mut v| {
            v["reload"] = serde_json::Value::from(n);
            v
        });
        self.finished.notify_all();
    }

    /// Reads, verifies and loads the file again and installs it; on any failure the running
    /// configuration stays. A changed module with a `canary` corpus goes live only if it
    /// reproduces the corpus; otherwise its old version stays in the new chain.
    pub fn reload(&self) -> Result<serde_json::Value, String> {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let fail = |e: String| {
            tracing::error!(error = %e, "reload failed; the running configuration stays");
            e
        };
        let reloader = self.reloader.get().ok_or("the proxy is not serving yet")?;
        let p = self.prepare().map_err(|e| fail(e.to_string()))?;
        let before = self.live.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|l| l.hooks.state());
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        let mut canary = Vec::new();
        let mut watched = BTreeMap::new();
        // Recorded once the new configuration is installed.
        let mut applied = Vec::new();
        let plugins: Vec<Arc<Plugin>> = p
            .entries
            .iter()
            .map(|e| {
                let name = e.plugin.name();
                let incidents = p.incidents.get(name).cloned().unwrap_or_else(|| PathBuf::from("incidents"));
                let old = before.as_ref().and_then(|s| s.chain.get(name));
                let Some(old) = old else { return e.plugin.clone() };
                let (from, to) = (digest_of(old), digest_of(&e.plugin));
                if from == to {
                    // Unchanged: a watch over this module goes on over its new load.
                    if let Some(w) = before.as_ref().and_then(|s| s.watched.get(name))
                        && w.digest == to
                    {
                        watched.insert(name.to_string(), w.carried(e.plugin.clone(), incidents));
                    }
                    return e.plugin.clone();
                }
                let mut detail = serde_json::json!({"from": from, "to": to});
                if let Some(setup) = p.canaries.get(name) {
                    match run_canary(name, &from, &e.plugin, setup) {
                        Ok(n) => {
                            canary.push(serde_json::json!({"plugin": name, "outcome": "applied", "from": from, "to": to, "fixtures": n}));
                            detail["fixtures"] = n.into();
                        }
                        Err(r) => {
                            canary.push(serde_json::json!({
                                "plugin": name, "outcome": "canary_failed", "from": from, "to": to,
                                "fixture": r.fixture, "incident": r.incident, "message": r.message,
                            }));
                            self.outcome(
                                name,
                                "canary_failed",
                                serde_json::json!({"from": from, "to": to, "fixture": r.fixture, "incident": r.incident}),
                            );
                            // The old version stays, and so does a watch over it.
                            if let Some(w) = before.as_ref().and_then(|s| s.watched.get(name))
                                && Arc::ptr_eq(&w.fresh, old)
                            {
                                watched.insert(name.to_string(), w.clone());
                            }
                            return old.clone();
                        }
                    }
                }
                applied.push((name.to_string(), detail));
                watched.insert(name.to_string(), Watched::new(e.plugin.clone(), old.clone(), incidents, epoch));
                e.plugin.clone()
            })
            .collect();
        let hooks = self.metered(Self::chain_state(&p.entries, plugins, watched));
        let report: ReloadReport = reloader.reload(p.config, hooks.clone()).map_err(|e| fail(e.to_string()))?;
        for l in &report.listeners_need_restart {
            tracing::warn!(listener = %l, "reload: listener changed; it takes effect after a restart");
        }
        for (name, detail) in applied {
            self.outcome(&name, "applied", detail);
        }
        let names: Vec<String> = hooks.chain().plugins().iter().map(|p| p.name().to_string()).collect();
        *self.live.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Live { hooks, redact: p.redact, canaries: p.canaries, incidents: p.incidents, watched: p.watched });
        tracing::info!(file = %self.path.display(), "reload: configuration replaced (new sessions use it)");
        Ok(serde_json::json!({
            "reloaded": true,
            "listeners_need_restart": report.listeners_need_restart,
            "plugins": names,
            "canary": canary,
        }))
    }

    /// Replaces plugin `name` with its shadow candidate, after the candidate reproduced the
    /// entry's canary corpus (when it has one). Lasts until the next reload reads the file again.
    pub fn promote(&self, name: &str) -> Result<serde_json::Value, String> {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let live = live.as_ref().ok_or("the proxy has not loaded its plugins yet")?;
        let state = live.hooks.state();
        let current = state.chain.get(name).ok_or_else(|| format!("no plugin \"{name}\" in the chain"))?;
        let shadow = state.shadows.get(name).ok_or_else(|| {
            format!("plugin \"{name}\" has no shadow candidate (its [[plugins]] entry needs `shadow = {{ source = \"…\" }}`)")
        })?;
        let (from, to) = (digest_of(current), digest_of(&shadow.candidate));
        let canary = match live.canaries.get(name) {
            Some(setup) => {
                let n = run_canary(name, &from, &shadow.candidate, setup).map_err(|r| {
                    let detail = serde_json::json!({"from": from, "to": to, "fixture": r.fixture, "incident": r.incident, "promoted": true});
                    self.outcome(name, "canary_failed", detail);
                    r.message
                })?;
                serde_json::json!({"outcome": "applied", "fixtures": n})
            }
            None => {
                tracing::warn!(plugin = %name, "promote without a canary corpus (the entry has no `canary`)");
                serde_json::json!({"outcome": "no corpus configured"})
            }
        };
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        let incidents = live.incidents.get(name).cloned().unwrap_or_else(|| PathBuf::from("incidents"));
        let candidate = shadow.candidate.clone();
        let promoted = live.hooks.update(|s| {
            // The version answering now (a rollback may have replaced it since `state` was read).
            let previous = s.chain.get(name)?.clone();
            let plugins =
                s.chain.plugins().iter().map(|p| if p.name() == name { candidate.clone() } else { p.clone() });
            let mut shadows = s.shadows.clone();
            shadows.remove(name);
            let mut watched = s.watched.clone();
            watched.insert(name.to_string(), Watched::new(candidate.clone(), previous, incidents, epoch));
            Some(ChainState { chain: Chain::new(plugins.collect()), shadows, watched })
        });
        if !promoted {
            return Err(format!("no plugin \"{name}\" in the chain"));
        }
        self.outcome(name, "applied", serde_json::json!({"from": from, "to": to, "promoted": true}));
        tracing::info!(plugin = %name, from = %from, to = %to, "shadow candidate promoted; it answers from now on");
        Ok(serde_json::json!({"promoted": name, "from": from, "to": to, "canary": canary}))
    }
}

impl AdminControl for ProxyOps {
    fn plugins(&self) -> serde_json::Value {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let Some(live) = live.as_ref() else { return serde_json::Value::Array(Vec::new()) };
        let state = live.hooks.state();
        let outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let views: Vec<serde_json::Value> = state
            .chain
            .plugins()
            .iter()
            .map(|p| {
                let meta = PluginMeta {
                    version: None,
                    signer: None,
                    redact_keys: live.redact.get(p.name()).cloned().unwrap_or_default(),
                    shadow: state.shadows.get(p.name()).map(|s| s.view()),
                };
                let mut view = serde_json::to_value(PluginView::of(p, &meta)).unwrap_or_default();
                if let Some(last) = outcomes.get(p.name()) {
                    view["last_reload"] = last.clone();
                }
                if let Some(w) = state.watched.get(p.name()) {
                    view["watchdog"] = w.view();
                }
                view
            })
            .collect();
        serde_json::Value::Array(views)
    }

    fn reload(&self) -> Result<serde_json::Value, String> {
        let ticket = self.trigger("admin");
        self.wait(ticket)
    }

    fn promote(&self, name: &str) -> Result<serde_json::Value, String> {
        ProxyOps::promote(self, name)
    }
}
