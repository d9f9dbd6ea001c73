//! Prometheus metrics of a helios host, on the Prometheus project's `prometheus-client`.
//!
//! Three groups of families, all in one [`Metrics`] registry:
//! - `helios_plugin_*`: every call of every plugin, fed by the host's one observation point
//!   ([`PluginObserver`]) plus the results a host's chain saw ([`Metrics::plugin_result`]);
//! - `chio_guard_*`: chio's seven guard families (label `guard` = 16-char digest prefix, `epoch` =
//!   the reload generation that made the module live);
//! - `helios_proxy_*`: what helios-proxy does with sessions, its pool and statements.
//!
//! Every family holds at most [`Metrics::cardinality_cap`] label sets. A new label set over the cap
//! is dropped with a warning carrying `E_GUARD_METRIC_CARDINALITY_EXCEEDED` and counted in
//! `helios_metric_label_sets_dropped_total{family}`; existing series keep counting.
//!
//! [`Metrics::render`] writes the classic Prometheus text format (0.0.4), which every Prometheus
//! server and `promtool check metrics` read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use helios_plugin_host::{CallEvent, HOST_FUNCTIONS, PluginObserver, failure_cause};
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

/// The warning code of a label set dropped over a family's cap (chio's name).
pub const E_GUARD_METRIC_CARDINALITY_EXCEEDED: &str = "E_GUARD_METRIC_CARDINALITY_EXCEEDED";

/// Label sets each family may hold. Default: 1000.
pub const DEFAULT_METRIC_CARDINALITY_CAP: usize = 1000;

type Labels = Vec<(&'static str, String)>;

/// Upper bounds of the duration buckets in nanoseconds: 10 µs × 4^i, 10 µs to ~2.6 s (then `+Inf`).
const BUCKET_BOUNDS_NS: [u64; 10] = {
    let mut b = [10_000u64; 10];
    let mut i = 1;
    while i < b.len() {
        b[i] = b[i - 1] * 4;
        i += 1;
    }
    b
};

/// A duration histogram fed with atomics: an observation is two relaxed `fetch_add`s (its bucket
/// and the nanosecond sum), no lock. prometheus-client's `Histogram` takes a mutex and scans its
/// buckets per observation; a pooled call feeds two histograms, and those locks were most of what
/// metrics cost per call. The count is the sum of the buckets, so `_count` and the `+Inf` bucket
/// always agree; a scrape concurrent with calls may see `_sum` one observation apart from them.
#[derive(Debug, Clone, Default)]
struct Durations(Arc<DurationsInner>);

#[derive(Debug, Default)]
struct DurationsInner {
    /// Observations per bucket, not cumulative; the last is `+Inf`.
    buckets: [AtomicU64; BUCKET_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Durations {
    fn observe(&self, d: Duration) {
        self.observe_many(d, 1);
    }

    /// `n` observations that took `total` together, each counted in the bucket of their mean.
    fn observe_many(&self, total: Duration, n: u64) {
        let total_ns = u64::try_from(total.as_nanos()).unwrap_or(u64::MAX);
        let mean = total_ns / n.max(1);
        let i = BUCKET_BOUNDS_NS.iter().position(|&b| mean <= b).unwrap_or(BUCKET_BOUNDS_NS.len());
        self.0.buckets[i].fetch_add(n, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(total_ns, Ordering::Relaxed);
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0u64); BUCKET_BOUNDS_NS.len() + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            if let Some(&b) = BUCKET_BOUNDS_NS.get(i) {
                slot.0 = b as f64 / 1e9;
            }
            slot.1 = self.0.buckets[i].load(Ordering::Relaxed);
        }
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Builds every duration series.
#[derive(Debug, Clone, Copy)]
struct Buckets;

impl MetricConstructor<Durations> for Buckets {
    fn new_metric(&self) -> Durations {
        Durations::default()
    }
}

/// One family with a cap on its label sets.
#[derive(Debug)]
struct Capped<M, C = fn() -> M> {
    name: &'static str,
    family: Family<Labels, M, C>,
    /// Label sets held; changed only under the lock.
    len: Mutex<usize>,
}

impl<M: Metric + TypedMetric + Default> Capped<M> {
    fn new(reg: &mut Registry, name: &'static str, help: &str) -> Self {
        let family = Family::<Labels, M>::default();
        reg.register(name, help, family.clone());
        Capped { name, family, len: Mutex::new(0) }
    }
}

impl Capped<Durations, Buckets> {
    fn histogram(reg: &mut Registry, name: &'static str, help: &str) -> Self {
        let family = Family::new_with_constructor(Buckets);
        reg.register(name, help, family.clone());
        Capped { name, family, len: Mutex::new(0) }
    }
}

impl<M: Metric, C: MetricConstructor<M> + Clone + Send + Sync + std::fmt::Debug + 'static> Capped<M, C> {
    /// Runs `f` on the series of `labels`, creating it if the family is under the cap.
    fn with(&self, shared: &Shared, labels: Labels, f: impl FnOnce(&M)) {
        if let Some(m) = self.family.get(&labels) {
            f(&m);
            return;
        }
        let mut len = self.len.lock().unwrap_or_else(|e| e.into_inner());
        let known = self.family.get(&labels).is_some();
        if !known && *len >= shared.cap {
            shared.dropped.get_or_create(&vec![("family", self.name.to_string())]).inc();
            if shared.warned_once(self.name) {
                tracing::warn!(
                    code = E_GUARD_METRIC_CARDINALITY_EXCEEDED,
                    family = self.name,
                    cap = shared.cap,
                    labels = ?labels,
                    "{E_GUARD_METRIC_CARDINALITY_EXCEEDED}: metric family {} holds {} label sets, its cap; the new label set is dropped",
                    self.name,
                    shared.cap
                );
            }
            return;
        }
        if !known {
            *len += 1;
        }
        f(&self.family.get_or_create(&labels));
    }

    /// The series of `labels` as a handle that shares its value (prometheus-client's metrics are
    /// `Arc`s inside), created if the family is under the cap; `None` when it is at the cap.
    fn get(&self, shared: &Shared, labels: Labels) -> Option<M>
    where
        M: Clone,
    {
        let mut out = None;
        self.with(shared, labels, |m| out = Some(m.clone()));
        out
    }

    /// Drops one label set (a series that no longer exists).
    fn remove(&self, labels: &Labels) {
        let mut len = self.len.lock().unwrap_or_else(|e| e.into_inner());
        if self.family.remove(labels) {
            *len = len.saturating_sub(1);
        }
    }
}

#[derive(Debug)]
struct Shared {
    cap: usize,
    dropped: Family<Labels, Counter>,
    /// Families that warned already (one warning per family and minute is enough).
    warned: Mutex<HashMap<&'static str, std::time::Instant>>,
}

impl Shared {
    fn warned_once(&self, family: &'static str) -> bool {
        let mut w = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match w.get(family) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(60) => false,
            _ => {
                w.insert(family, now);
                true
            }
        }
    }
}

/// How a guard decided, as chio's `verdict` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardOutcome {
    Allow,
    Deny,
    /// The guard failed and denied (fail-closed).
    Error,
    /// The guard failed but is advisory: the call went on.
    AdvisoryError,
}

impl GuardOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardOutcome::Allow => "allow",
            GuardOutcome::Deny => "deny",
            GuardOutcome::Error => "error",
            GuardOutcome::AdvisoryError => "advisory_error",
        }
    }
}

/// Every family a helios host exports. `Send + Sync`; share it with `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    shared: Shared,
    // helios_plugin_*
    plugin_calls: Capped<Counter>,
    plugin_results: Capped<Counter>,
    plugin_failures: Capped<Counter>,
    plugin_duration: Capped<Durations, Buckets>,
    plugin_fuel: Capped<Counter>,
    // chio_guard_*
    guard_verdict: Capped<Counter>,
    guard_deny: Capped<Counter>,
    guard_eval_duration: Capped<Durations, Buckets>,
    guard_fuel: Capped<Counter>,
    guard_host_call_duration: Capped<Durations, Buckets>,
    guard_module_bytes: Capped<Gauge>,
    guard_reload: Capped<Counter>,
    /// Reload generation of each live guard digest prefix (chio's `epoch` label).
    epochs: RwLock<HashMap<String, u64>>,
    /// Bumped whenever a guard's epoch changes: cached series resolved under an older value are
    /// resolved again (their `epoch` label may be stale).
    generation: AtomicU64,
    /// Per plugin name, the series its calls feed, resolved once (see [`CallSeries`]).
    call_series: RwLock<HashMap<String, Vec<Arc<CallSeries>>>>,
    /// Per guard digest prefix, the verdict series (see [`VerdictSeries`]).
    verdict_series: RwLock<HashMap<String, VerdictSeries>>,
    // helios_proxy_*
    proxy_sessions: Capped<Gauge>,
    proxy_sessions_total: Capped<Counter>,
    proxy_pool_waits: Capped<Counter>,
    proxy_pool_wait_duration: Capped<Durations, Buckets>,
    proxy_pool_connections: Capped<Gauge>,
    proxy_statements: Capped<Counter>,
    proxy_errors: Capped<Counter>,
    renders: AtomicU64,
    /// This registry among the process's, for the per-thread caches ([`RECENT_CALLS`]).
    id: u64,
}

/// Ids of [`Metrics`] registries: a thread's recent series never mix two registries, even one
/// dropped and another allocated at its address.
static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(1);

/// Entries per thread in [`RECENT_CALLS`] and [`RECENT_VERDICTS`]; the registry's own caches are
/// behind them.
const RECENT_PER_THREAD: usize = 8;

/// A series set this thread fed recently.
struct RecentCall {
    metrics: u64,
    plugin: Box<str>,
    series: Arc<CallSeries>,
}

/// A verdict's counters this thread fed recently.
struct RecentVerdict {
    metrics: u64,
    guard: Box<str>,
    generation: u64,
    outcome: usize,
    verdict: Option<Counter>,
    deny: Option<Counter>,
}

thread_local! {
    /// The hot path of every call without a lock or a hash: a host calls the same few plugins
    /// from each worker thread, so a short list compared by name finds them. A stale entry (a new
    /// epoch) fails the generation check and is replaced.
    static RECENT_CALLS: RefCell<Vec<RecentCall>> = const { RefCell::new(Vec::new()) };
    static RECENT_VERDICTS: RefCell<Vec<RecentVerdict>> = const { RefCell::new(Vec::new()) };
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(DEFAULT_METRIC_CARDINALITY_CAP)
    }
}

impl Metrics {
    /// Every family registered and empty; each holds at most `cap` label sets.
    pub fn new(cap: usize) -> Metrics {
        let mut r = Registry::default();
        let dropped = Family::<Labels, Counter>::default();
        r.register(
            "helios_metric_label_sets_dropped",
            "New label sets dropped because their family was at its cardinality cap (E_GUARD_METRIC_CARDINALITY_EXCEEDED)",
            dropped.clone(),
        );
        let c = Capped::<Counter>::new;
        let g = Capped::<Gauge>::new;
        let h = Capped::histogram;
        Metrics {
            plugin_calls: c(&mut r, "helios_plugin_calls", "Plugin calls by plugin and export"),
            plugin_results: c(&mut r, "helios_plugin_results", "Plugin results by plugin, hook and result kind"),
            plugin_failures: c(&mut r, "helios_plugin_failures", "Failed plugin calls by plugin and cause"),
            plugin_duration: h(
                &mut r,
                "helios_plugin_call_duration_seconds",
                "Plugin call duration by plugin and export",
            ),
            plugin_fuel: c(&mut r, "helios_plugin_fuel_consumed", "Fuel consumed by plugin calls"),
            guard_verdict: c(&mut r, "chio_guard_verdict", "Guard verdicts by guard digest prefix, epoch and verdict"),
            guard_deny: c(
                &mut r,
                "chio_guard_deny",
                "Guard denies (verdict deny or fail-closed error) by guard and epoch",
            ),
            guard_eval_duration: h(&mut r, "chio_guard_eval_duration_seconds", "Guard evaluation duration"),
            guard_fuel: c(&mut r, "chio_guard_fuel_consumed", "Fuel consumed by guard evaluations"),
            guard_host_call_duration: h(
                &mut r,
                "chio_guard_host_call_duration_seconds",
                "Duration of host functions called by guards, by guard, epoch and host function",
            ),
            guard_module_bytes: g(&mut r, "chio_guard_module_bytes", "Size of each live guard module"),
            guard_reload: c(&mut r, "chio_guard_reload", "Guard reloads by guard and outcome"),
            epochs: RwLock::default(),
            generation: AtomicU64::new(0),
            call_series: RwLock::default(),
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            verdict_series: RwLock::default(),
            proxy_sessions: g(&mut r, "helios_proxy_sessions", "Client sessions open now"),
            proxy_sessions_total: c(&mut r, "helios_proxy_sessions_opened", "Client sessions opened"),
            proxy_pool_waits: c(&mut r, "helios_proxy_pool_waits", "Checkouts that waited for a server connection"),
            proxy_pool_wait_duration: h(
                &mut r,
                "helios_proxy_pool_wait_duration_seconds",
                "Time spent waiting for a server connection",
            ),
            proxy_pool_connections: g(&mut r, "helios_proxy_pool_connections", "Server connections by node and state"),
            proxy_statements: c(&mut r, "helios_proxy_statements", "Statements by outcome"),
            proxy_errors: c(&mut r, "helios_proxy_errors", "Errors sent to clients by SQLSTATE class"),
            shared: Shared { cap, dropped, warned: Mutex::default() },
            registry: r,
            renders: AtomicU64::new(0),
        }
    }

    /// The cap on label sets per family.
    pub fn cardinality_cap(&self) -> usize {
        self.shared.cap
    }

    /// The scrape: classic Prometheus text format (`text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        self.renders.fetch_add(1, Ordering::Relaxed);
        let mut open = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut open, &self.registry);
        openmetrics_to_classic(&open)
    }

    // ---- helios_plugin_* ------------------------------------------------------------------------

    /// A result kind a chain saw (`continue`, `rewrite`, `block`, `cached`, `allow`, `deny`, ...).
    pub fn plugin_result(&self, plugin: &str, hook: &str, kind: &str) {
        let labels = vec![("plugin", plugin.to_string()), ("hook", hook.to_string()), ("kind", kind.to_string())];
        self.plugin_results.with(&self.shared, labels, |c| {
            c.inc();
        });
    }

    // ---- chio_guard_* ---------------------------------------------------------------------------

    /// A guard module went live (first load or reload): its digest, reload generation and size.
    pub fn guard_live(&self, digest: &str, epoch: u64, module_bytes: u64) {
        let guard = prefix(digest).to_string();
        self.epochs.write().unwrap_or_else(|e| e.into_inner()).insert(guard.clone(), epoch);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.guard_module_bytes.with(&self.shared, vec![("guard", guard)], |g| {
            g.set(module_bytes as i64);
        });
    }

    /// A guard module stopped serving (replaced or rolled back): its size gauge goes.
    pub fn guard_retired(&self, digest: &str) {
        let guard = prefix(digest).to_string();
        self.epochs.write().unwrap_or_else(|e| e.into_inner()).remove(&guard);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.guard_module_bytes.remove(&vec![("guard", guard)]);
    }

    fn epoch(&self, guard: &str) -> String {
        self.epochs.read().unwrap_or_else(|e| e.into_inner()).get(guard).copied().unwrap_or(0).to_string()
    }

    /// One guard's verdict on one call. The series are resolved once per guard, epoch and
    /// verdict; after that a verdict is a look at this thread's recent verdicts (no lock, no hash)
    /// and one or two atomic increments.
    pub fn guard_verdict(&self, digest: &str, outcome: GuardOutcome) {
        let guard = prefix(digest);
        let generation = self.generation.load(Ordering::Acquire);
        let i = outcome as usize;
        let hit = RECENT_VERDICTS.with_borrow(|recent| {
            let r = recent
                .iter()
                .find(|r| r.metrics == self.id && r.generation == generation && r.outcome == i && *r.guard == *guard);
            if let Some(r) = r {
                for c in [&r.verdict, &r.deny].into_iter().flatten() {
                    c.inc();
                }
            }
            r.is_some()
        });
        if hit {
            return;
        }
        let (verdict, deny) = self.verdict_counters(guard, outcome, generation);
        for c in [&verdict, &deny].into_iter().flatten() {
            c.inc();
        }
        RECENT_VERDICTS.with_borrow_mut(|recent| {
            recent.retain(|r| !(r.metrics == self.id && r.outcome == i && *r.guard == *guard));
            if recent.len() >= RECENT_PER_THREAD {
                recent.remove(0);
            }
            recent.push(RecentVerdict { metrics: self.id, guard: guard.into(), generation, outcome: i, verdict, deny });
        });
    }

    /// The verdict counter and, for a deny or a fail-closed error, the deny counter of one guard,
    /// from the registry's cache or resolved (label strings, family lookups, the cap).
    fn verdict_counters(
        &self,
        guard: &str,
        outcome: GuardOutcome,
        generation: u64,
    ) -> (Option<Counter>, Option<Counter>) {
        let deny = matches!(outcome, GuardOutcome::Deny | GuardOutcome::Error);
        let i = outcome as usize;
        {
            let cache = self.verdict_series.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = cache.get(guard)
                && s.generation == generation
                && let Some(verdict) = &s.verdict[i]
                && (!deny || s.deny.is_some())
            {
                return (verdict.clone(), if deny { s.deny.clone().flatten() } else { None });
            }
        }
        let epoch = self.epoch(guard);
        let labels = vec![("guard", guard.to_string()), ("epoch", epoch.clone()), ("verdict", outcome.as_str().into())];
        let verdict = self.guard_verdict.get(&self.shared, labels);
        let deny_series =
            deny.then(|| self.guard_deny.get(&self.shared, vec![("guard", guard.to_string()), ("epoch", epoch)]));
        let out = (verdict.clone(), deny_series.clone().flatten());
        let mut cache = self.verdict_series.write().unwrap_or_else(|e| e.into_inner());
        // Bounded like the families: past the cap, verdicts of new guards take this slow path.
        if !cache.contains_key(guard) && cache.len() >= self.shared.cap {
            return out;
        }
        let s = cache.entry(guard.to_string()).or_insert_with(|| VerdictSeries::new(generation));
        if s.generation != generation {
            *s = VerdictSeries::new(generation);
        }
        s.verdict[i] = Some(verdict);
        if let Some(d) = deny_series {
            s.deny = Some(d);
        }
        out
    }

    /// The series of `chio_guard_host_call_duration_seconds` for one guard, epoch and host function.
    fn host_call_series(&self, guard: &str, epoch: &str, function: &str) -> Option<Durations> {
        let labels =
            vec![("guard", guard.to_string()), ("epoch", epoch.to_string()), ("host_function", function.to_string())];
        self.guard_host_call_duration.get(&self.shared, labels)
    }

    /// A reload attempt of a guard: `applied`, `canary_failed`, `rolled_back` or `refused`.
    pub fn guard_reload(&self, name: &str, outcome: &str) {
        let labels = vec![("guard", name.to_string()), ("outcome", outcome.to_string())];
        self.guard_reload.with(&self.shared, labels, |c| {
            c.inc();
        });
    }

    // ---- helios_proxy_* -------------------------------------------------------------------------

    /// A client session opened (`+1`) or closed (`-1`).
    pub fn proxy_session(&self, opened: bool) {
        self.proxy_sessions.with(&self.shared, Vec::new(), |g| {
            if opened {
                g.inc()
            } else {
                g.dec()
            };
        });
        if opened {
            self.proxy_sessions_total.with(&self.shared, Vec::new(), |c| {
                c.inc();
            });
        }
    }

    /// A checkout from `node`'s pool that had to wait `waited`.
    pub fn proxy_pool_wait(&self, node: &str, waited: Duration) {
        self.proxy_pool_waits.with(&self.shared, vec![("node", node.to_string())], |c| {
            c.inc();
        });
        self.proxy_pool_wait_duration.with(&self.shared, vec![("node", node.to_string())], |h| h.observe(waited));
    }

    /// The server connections of `node`'s pool: `idle` and `busy`.
    pub fn proxy_pool_size(&self, node: &str, idle: u64, busy: u64) {
        for (state, n) in [("idle", idle), ("busy", busy)] {
            let labels = vec![("node", node.to_string()), ("state", state.to_string())];
            self.proxy_pool_connections.with(&self.shared, labels, |g| {
                g.set(n as i64);
            });
        }
    }

    /// A statement the proxy handled: `forwarded`, `rewritten`, `blocked`, `cached`.
    pub fn proxy_statement(&self, outcome: &str) {
        self.proxy_statements.with(&self.shared, vec![("outcome", outcome.to_string())], |c| {
            c.inc();
        });
    }

    /// An error sent to a client; the label is the SQLSTATE class (its first two characters).
    pub fn proxy_error(&self, sqlstate: &str) {
        let class: String = sqlstate.chars().take(2).collect();
        self.proxy_errors.with(&self.shared, vec![("class", class)], |c| {
            c.inc();
        });
    }
}

impl PluginObserver for Metrics {
    /// Every call of every plugin: a look at the series this thread fed recently (a few string
    /// comparisons, no lock, no hash) and a few atomic updates. A miss takes the registry's cache (a
    /// read lock and a hash lookup); the first call of each export resolves its series there (label
    /// strings, family lookups, the cardinality cap).
    fn call_finished(&self, e: &CallEvent<'_>) {
        let generation = self.generation.load(Ordering::Acquire);
        let fresh = |s: &CallSeries| {
            s.export == e.export
                && s.digest.as_deref() == e.digest
                && s.generation == generation
                && (s.fuel_resolved || e.fuel_consumed.is_none())
        };
        let fed = RECENT_CALLS.with_borrow(|recent| {
            let r = recent.iter().find(|r| r.metrics == self.id && *r.plugin == *e.plugin && fresh(&r.series));
            if let Some(r) = r {
                r.series.feed(self, e);
            }
            r.is_some()
        });
        if !fed {
            let cached = {
                let cache = self.call_series.read().unwrap_or_else(|e| e.into_inner());
                cache.get(e.plugin).and_then(|v| v.iter().find(|s| fresh(s)).cloned())
            };
            let s = match cached {
                Some(s) => s,
                None => {
                    let s = Arc::new(self.resolve_call_series(e, generation));
                    let mut cache = self.call_series.write().unwrap_or_else(|e| e.into_inner());
                    // Bounded like the families: past the cap, calls of new plugins resolve every time.
                    if cache.contains_key(e.plugin) || cache.len() < self.shared.cap {
                        let v = cache.entry(e.plugin.to_string()).or_default();
                        v.retain(|old| !(old.export == e.export && old.digest.as_deref() == e.digest));
                        if v.len() < 64 {
                            v.push(s.clone());
                        }
                    }
                    s
                }
            };
            s.feed(self, e);
            RECENT_CALLS.with_borrow_mut(|recent| {
                recent.retain(|r| {
                    !(r.metrics == self.id
                        && *r.plugin == *e.plugin
                        && r.series.export == e.export
                        && r.series.digest.as_deref() == e.digest)
                });
                if recent.len() >= RECENT_PER_THREAD {
                    recent.remove(0);
                }
                recent.push(RecentCall { metrics: self.id, plugin: e.plugin.into(), series: s });
            });
        }
        if let Some(kind) = e.failure {
            let labels = vec![("plugin", e.plugin.to_string()), ("cause", failure_cause(kind).to_string())];
            self.plugin_failures.with(&self.shared, labels, |c| {
                c.inc();
            });
        }
    }
}

impl Metrics {
    fn resolve_call_series(&self, e: &CallEvent<'_>, generation: u64) -> CallSeries {
        let plugin = e.plugin.to_string();
        let pe = vec![("plugin", plugin.clone()), ("export", e.export.to_string())];
        let mut s = CallSeries {
            export: e.export.to_string(),
            digest: e.digest.map(str::to_string),
            generation,
            fuel_resolved: e.fuel_consumed.is_some(),
            calls: self.plugin_calls.get(&self.shared, pe.clone()),
            duration: self.plugin_duration.get(&self.shared, pe),
            fuel: None,
            guard_duration: None,
            guard_fuel: None,
            guard: None,
            host_calls: Default::default(),
        };
        if e.fuel_consumed.is_some() {
            s.fuel = self.plugin_fuel.get(&self.shared, vec![("plugin", plugin)]);
        }
        if e.export == helios_plugin_schema::abi::EVALUATE
            && let Some(digest) = e.digest
        {
            let guard = prefix(digest).to_string();
            let epoch = self.epoch(&guard);
            let labels = vec![("guard", guard.clone()), ("epoch", epoch.clone())];
            s.guard_duration = self.guard_eval_duration.get(&self.shared, labels.clone());
            if e.fuel_consumed.is_some() {
                s.guard_fuel = self.guard_fuel.get(&self.shared, labels);
            }
            s.guard = Some((guard, epoch));
        }
        s
    }
}

/// The series one export of one plugin feeds, as handles sharing the registry's values. A `None`
/// is a label set its family dropped at the cap (or fuel never metered when it was resolved).
#[derive(Debug)]
struct CallSeries {
    export: String,
    digest: Option<String>,
    /// [`Metrics::generation`] when resolved: the guard series carry an `epoch` label.
    generation: u64,
    /// Whether the fuel series were resolved (only once a call reported fuel).
    fuel_resolved: bool,
    calls: Option<Counter>,
    duration: Option<Durations>,
    fuel: Option<Counter>,
    guard_duration: Option<Durations>,
    guard_fuel: Option<Counter>,
    /// A guard's `(guard, epoch)` labels (an `evaluate` export of a module with a digest).
    guard: Option<(String, String)>,
    /// Per [`HOST_FUNCTIONS`] slot, `chio_guard_host_call_duration_seconds`, resolved on the
    /// function's first call.
    host_calls: [OnceLock<Option<Durations>>; HOST_FUNCTIONS.len()],
}

impl CallSeries {
    fn feed(&self, metrics: &Metrics, e: &CallEvent<'_>) {
        if let Some(c) = &self.calls {
            c.inc();
        }
        if let Some(h) = &self.duration {
            h.observe(e.duration);
        }
        if let Some(h) = &self.guard_duration {
            h.observe(e.duration);
        }
        if let Some(fuel) = e.fuel_consumed {
            for c in [&self.fuel, &self.guard_fuel].into_iter().flatten() {
                c.inc_by(fuel);
            }
        }
        // Host functions are timed per call: `calls` observations whose sum is the time spent in
        // the function. The host accumulates count and total per call (no per-import allocation),
        // so each observation is that call's mean: `_count` and `_sum` are exact, the buckets see
        // per-call means. Only guards that call host functions pay this.
        if let Some((guard, epoch)) = &self.guard
            && !e.host_calls.is_empty()
        {
            for (function, t) in e.host_calls.iter() {
                let Some(slot) = HOST_FUNCTIONS.iter().position(|f| *f == function) else { continue };
                let series = self.host_calls[slot].get_or_init(|| metrics.host_call_series(guard, epoch, function));
                if let Some(h) = series {
                    h.observe_many(t.total, u64::from(t.calls));
                }
            }
        }
    }
}

/// One guard's verdict series: per [`GuardOutcome`], `None` until first needed, then the counter
/// (or `None` when its family was at the cap); the deny counter likewise.
#[derive(Debug)]
struct VerdictSeries {
    generation: u64,
    verdict: [Option<Option<Counter>>; 4],
    deny: Option<Option<Counter>>,
}

impl VerdictSeries {
    fn new(generation: u64) -> Self {
        VerdictSeries { generation, verdict: [None, None, None, None], deny: None }
    }
}

/// The `kind` label of a `pre_query` result.
pub fn pre_query_kind(r: &helios_plugin_schema::PreQueryResult) -> &'static str {
    use helios_plugin_schema::PreQueryResult as R;
    match r {
        R::Continue => "continue",
        R::Rewrite { .. } => "rewrite",
        R::Block { .. } => "block",
        R::Cached { .. } => "cached",
    }
}

/// chio's guard label: the first 16 hex digits of the digest (any `sha256:` prefix dropped).
pub fn prefix(digest: &str) -> &str {
    let d = digest.strip_prefix("sha256:").unwrap_or(digest);
    &d[..d.len().min(16)]
}

/// `prometheus-client` writes OpenMetrics: a counter family `x` is described as `x` and sampled
/// as `x_total`, with `# UNIT` lines and a final `# EOF`. The classic format (what Prometheus 2.x
/// and `promtool check metrics` parse as text) names the family `x_total` and has neither.
fn openmetrics_to_classic(open: &str) -> String {
    let mut out = String::with_capacity(open.len());
    let mut counters = std::collections::HashSet::new();
    for line in open.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        for tag in ["# HELP ", "# TYPE "] {
            if let Some(rest) = line.strip_prefix(tag) {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{tag}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
                break;
            }
        }
        if !line.starts_with("# ") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use helios_plugin_host::HostCalls;

    use super::*;

    #[test]
    fn counters_are_described_under_their_sample_name_and_openmetrics_lines_go() {
        let m = Metrics::new(10);
        m.guard_verdict("sha256:0123456789abcdef0123", GuardOutcome::Deny);
        let text = m.render();
        assert!(text.contains("# TYPE chio_guard_verdict_total counter\n"), "{text}");
        assert!(text.contains("# HELP chio_guard_verdict_total Guard verdicts"), "{text}");
        assert!(
            text.contains("chio_guard_verdict_total{guard=\"0123456789abcdef\",epoch=\"0\",verdict=\"deny\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("chio_guard_deny_total{guard=\"0123456789abcdef\",epoch=\"0\"} 1\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    }

    /// The lock-free duration histogram renders what prometheus-client's would: cumulative buckets
    /// ending in `+Inf`, `_count` equal to it, `_sum` exact to the nanosecond.
    #[test]
    fn durations_land_in_their_bucket_and_render_cumulatively() {
        let m = Metrics::new(10);
        m.proxy_pool_wait("primary", Duration::from_micros(10)); // on the first bound: le 1e-5
        m.proxy_pool_wait("primary", Duration::from_micros(11)); // le 4e-5
        m.proxy_pool_wait("primary", Duration::from_millis(1)); // le 0.00256
        m.proxy_pool_wait("primary", Duration::from_secs(10)); // over the last bound: +Inf only
        let text = m.render();
        for line in [
            "helios_proxy_pool_wait_duration_seconds_bucket{le=\"0.00001\",node=\"primary\"} 1\n",
            "helios_proxy_pool_wait_duration_seconds_bucket{le=\"0.00004\",node=\"primary\"} 2\n",
            "helios_proxy_pool_wait_duration_seconds_bucket{le=\"0.00064\",node=\"primary\"} 2\n",
            "helios_proxy_pool_wait_duration_seconds_bucket{le=\"0.00256\",node=\"primary\"} 3\n",
            "helios_proxy_pool_wait_duration_seconds_bucket{le=\"2.62144\",node=\"primary\"} 3\n",
            "helios_proxy_pool_wait_duration_seconds_bucket{le=\"+Inf\",node=\"primary\"} 4\n",
            "helios_proxy_pool_wait_duration_seconds_count{node=\"primary\"} 4\n",
            "helios_proxy_pool_wait_duration_seconds_sum{node=\"primary\"} 10.001021\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    /// The per-thread caches never mix two registries (same plugin, same thread) and lose no
    /// count when several threads feed the same series.
    #[test]
    fn per_thread_caches_keep_registries_apart_and_counts_exact() {
        let digest = "sha256:fedcba9876543210fedc";
        let no_host_calls = HostCalls::default();
        let call = CallEvent {
            plugin: "shared-name",
            digest: Some(digest),
            export: helios_plugin_schema::abi::EVALUATE,
            duration: Duration::from_micros(2),
            fuel_consumed: Some(3),
            failure: None,
            host_calls: &no_host_calls,
        };
        let (a, b) = (Metrics::new(10), Metrics::new(10));
        for _ in 0..5 {
            a.call_finished(&call);
            a.guard_verdict(digest, GuardOutcome::Deny);
        }
        b.call_finished(&call);
        b.guard_verdict(digest, GuardOutcome::Deny);
        assert!(a.render().contains("helios_plugin_calls_total{plugin=\"shared-name\",export=\"evaluate\"} 5\n"));
        assert!(a.render().contains("chio_guard_deny_total{guard=\"fedcba9876543210\",epoch=\"0\"} 5\n"));
        assert!(b.render().contains("helios_plugin_calls_total{plugin=\"shared-name\",export=\"evaluate\"} 1\n"));
        assert!(b.render().contains("chio_guard_deny_total{guard=\"fedcba9876543210\",epoch=\"0\"} 1\n"));

        let m = Metrics::new(10);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        m.call_finished(&call);
                        m.guard_verdict(digest, GuardOutcome::Allow);
                    }
                });
            }
        });
        let text = m.render();
        for line in [
            "helios_plugin_calls_total{plugin=\"shared-name\",export=\"evaluate\"} 4000\n",
            "helios_plugin_fuel_consumed_total{plugin=\"shared-name\"} 12000\n",
            "chio_guard_verdict_total{guard=\"fedcba9876543210\",epoch=\"0\",verdict=\"allow\"} 4000\n",
            "chio_guard_eval_duration_seconds_count{guard=\"fedcba9876543210\",epoch=\"0\"} 4000\n",
            "chio_guard_eval_duration_seconds_sum{guard=\"fedcba9876543210\",epoch=\"0\"} 0.008\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    /// Series are resolved once and then fed through cached handles: the counts stay exact, and a
    /// reload (a new epoch) starts new series instead of feeding the old epoch's.
    #[test]
    fn cached_series_count_exactly_and_follow_a_new_epoch() {
        let m = Metrics::new(10);
        let digest = "sha256:0123456789abcdef0123";
        let no_host_calls = HostCalls::default();
        let call = |fuel| CallEvent {
            plugin: "deny-list",
            digest: Some(digest),
            export: helios_plugin_schema::abi::EVALUATE,
            duration: Duration::from_micros(3),
            fuel_consumed: fuel,
            failure: None,
            host_calls: &no_host_calls,
        };
        m.guard_live(digest, 1, 100);
        for _ in 0..3 {
            m.guard_verdict(digest, GuardOutcome::Allow);
            m.call_finished(&call(None));
        }
        m.guard_verdict(digest, GuardOutcome::Deny);
        // The first call that reports fuel adds the fuel series.
        m.call_finished(&call(Some(7)));
        m.guard_live(digest, 2, 100);
        m.guard_verdict(digest, GuardOutcome::Allow);
        m.call_finished(&call(Some(5)));
        let text = m.render();
        for line in [
            "chio_guard_verdict_total{guard=\"0123456789abcdef\",epoch=\"1\",verdict=\"allow\"} 3\n",
            "chio_guard_verdict_total{guard=\"0123456789abcdef\",epoch=\"1\",verdict=\"deny\"} 1\n",
            "chio_guard_deny_total{guard=\"0123456789abcdef\",epoch=\"1\"} 1\n",
            "chio_guard_verdict_total{guard=\"0123456789abcdef\",epoch=\"2\",verdict=\"allow\"} 1\n",
            "helios_plugin_calls_total{plugin=\"deny-list\",export=\"evaluate\"} 5\n",
            "helios_plugin_fuel_consumed_total{plugin=\"deny-list\"} 12\n",
            "chio_guard_fuel_consumed_total{guard=\"0123456789abcdef\",epoch=\"1\"} 7\n",
            "chio_guard_fuel_consumed_total{guard=\"0123456789abcdef\",epoch=\"2\"} 5\n",
            "chio_guard_eval_duration_seconds_count{guard=\"0123456789abcdef\",epoch=\"1\"} 4\n",
            "chio_guard_eval_duration_seconds_count{guard=\"0123456789abcdef\",epoch=\"2\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
