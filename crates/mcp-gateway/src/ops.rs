//! Operations for the gateway (issue 15): chio's `chio_guard_*` metrics from every decision and
//! reload, and the admin listener's `/plugins` and `POST /reload` over the live guard set.
//!
//! With a `gateway.admin` section, [`crate::build`] creates one [`Metrics`], makes it the host
//! runtime's call observer (eval duration, fuel) and a decision observer (verdicts, denies), and
//! listens to reloads (module sizes, epochs, `chio_guard_reload_total`).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use helios_plugin_admin::{AdminControl, GuardOutcome, Metrics, PluginMeta, PluginView, ShadowView};
use helios_plugin_host::DebouncedReload;

use crate::guards::{Decision, DecisionObserver, GuardSet, Guards, Outcome, ReloadError, ReloadListener};

/// Feeds chio's guard families from decisions and reloads.
#[derive(Debug, Clone)]
pub struct GuardMetrics(pub Arc<Metrics>);

impl GuardMetrics {
    /// Records the set serving at start (epoch 0).
    pub fn started(&self, set: &GuardSet) {
        for g in set.guards() {
            self.0.guard_live(&g.digest, 0, module_bytes(g));
        }
    }
}

fn module_bytes(g: &crate::guards::LoadedGuard) -> u64 {
    g.plugin.module_info().map(|i| i.size).unwrap_or(0)
}

impl DecisionObserver for GuardMetrics {
    fn decided(&self, d: &Decision) {
        let outcome = match d.verdict {
            Outcome::Allow => GuardOutcome::Allow,
            Outcome::Deny => GuardOutcome::Deny,
            Outcome::Error => GuardOutcome::Error,
            Outcome::AdvisoryError => GuardOutcome::AdvisoryError,
        };
        self.0.guard_verdict(&d.digest, outcome);
    }
}

impl ReloadListener for GuardMetrics {
    fn swapped(&self, old: &GuardSet, new: &GuardSet, epoch: u64) {
        for g in old.guards() {
            if !new.guards().iter().any(|n| n.digest == g.digest) {
                self.0.guard_retired(&g.digest);
            }
        }
        for g in new.guards() {
            let changed = !old.guards().iter().any(|o| o.digest == g.digest);
            if changed {
                self.0.guard_live(&g.digest, epoch, module_bytes(g));
                self.0.guard_reload(g.plugin.name(), "applied");
            }
        }
    }

    fn refused(&self, _error: &ReloadError) {
        self.0.guard_reload("*", "refused");
    }
}

/// How long an admin reload request waits for the reload that covers it.
const ADMIN_RELOAD_WAIT: Duration = Duration::from_secs(120);

/// The gateway's one way to reload its guards. A change of a guard file or the config, SIGHUP and
/// the admin's `POST /reload` are all triggers of one [`DebouncedReload`]: triggers that arrive
/// within the quiet period of each other become one [`Guards::reload`] (which runs the canary and
/// the other reload listeners). An admin request waits for the reload that covers it and answers
/// with its result.
#[derive(Debug, Clone)]
pub struct Reloader {
    shared: Arc<ReloadShared>,
    debounce: Arc<DebouncedReload>,
}

#[derive(Debug, Default)]
struct ReloadShared {
    state: Mutex<ReloadState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct ReloadState {
    /// Triggers so far (each gets this number as its ticket).
    triggered: u64,
    /// The highest ticket the last finished reload covered.
    covered: u64,
    /// Reloads attempted (applied or refused).
    attempts: u64,
    last: Option<Result<serde_json::Value, String>>,
}

impl Reloader {
    /// Starts the reload worker; triggers coalesce when less than `quiet` apart.
    pub fn new(guards: Guards, config_path: PathBuf, quiet: Duration) -> std::io::Result<Reloader> {
        let shared = Arc::new(ReloadShared::default());
        let worker = shared.clone();
        let debounce = DebouncedReload::new(quiet, move |reasons| {
            let covers = worker.state.lock().unwrap_or_else(|e| e.into_inner()).triggered;
            let span = tracing::info_span!("guard_reload", triggers = reasons.len());
            let _in = span.enter();
            let result = guards.reload(&config_path).map(|set| summary(&guards, &set)).map_err(|e| e.to_string());
            match &result {
                Ok(_) => tracing::info!(
                    triggers = reasons.len(),
                    reasons = %reasons.join(","),
                    epoch = guards.reload_count(),
                    "guard reload attempt: {} triggers coalesced into one reload; applied",
                    reasons.len()
                ),
                Err(e) => tracing::error!(
                    triggers = reasons.len(),
                    reasons = %reasons.join(","),
                    error = %e,
                    "guard reload attempt: {} triggers coalesced into one reload; guard reload failed, the previous guards keep serving",
                    reasons.len()
                ),
            }
            let mut st = worker.state.lock().unwrap_or_else(|e| e.into_inner());
            st.covered = st.covered.max(covers);
            st.attempts += 1;
            st.last = Some(result);
            worker.done.notify_all();
        })?;
        Ok(Reloader { shared, debounce: Arc::new(debounce) })
    }

    /// One trigger (`"file changed"`, `"sighup"`, `"admin"`); returns its ticket.
    pub fn trigger(&self, reason: &str) -> u64 {
        let ticket = {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.triggered += 1;
            st.triggered
        };
        self.debounce.trigger(reason);
        ticket
    }

    /// Triggers and waits (blocking) for the reload that covers this trigger; its result.
    pub fn request(&self, reason: &str) -> Result<serde_json::Value, String> {
        let ticket = self.trigger(reason);
        let deadline = std::time::Instant::now() + ADMIN_RELOAD_WAIT;
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.covered < ticket {
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(format!("the reload did not finish within {} s", ADMIN_RELOAD_WAIT.as_secs()));
            }
            st = self.shared.done.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        st.last.clone().unwrap_or_else(|| Err("no reload ran".into()))
    }

    /// Reloads attempted so far (each may have coalesced many triggers).
    pub fn attempts(&self) -> u64 {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).attempts
    }
}

fn summary(guards: &Guards, set: &GuardSet) -> serde_json::Value {
    let list: Vec<_> = set
        .guards()
        .iter()
        .map(|g| serde_json::json!({"name": g.plugin.name(), "digest": format!("sha256:{}", g.digest)}))
        .collect();
    serde_json::json!({"reloaded": true, "epoch": guards.reload_count(), "guards": list})
}

/// The gateway behind the admin listener.
#[derive(Debug, Clone)]
pub struct GatewayAdmin {
    pub guards: Guards,
    pub reloader: Reloader,
}

impl AdminControl for GatewayAdmin {
    fn plugins(&self) -> serde_json::Value {
        let set = self.guards.current();
        let views: Vec<PluginView> = set
            .guards()
            .iter()
            .map(|g| {
                let meta = PluginMeta {
                    version: Some(g.version.clone()),
                    signer: g.signer.clone(),
                    redact_keys: g.redact_keys.clone(),
                    shadow: g.shadow.as_ref().map(|s| {
                        let c = s.counts();
                        ShadowView {
                            digest: format!("sha256:{}", s.digest),
                            compared: c.compared,
                            divergences: c.divergences,
                            agreement_rate: c.agreement_rate,
                        }
                    }),
                };
                PluginView::of(&g.plugin, &meta)
            })
            .collect();
        serde_json::to_value(views).unwrap_or_default()
    }

    fn reload(&self) -> Result<serde_json::Value, String> {
        self.reloader.request("admin")
    }

    fn promote(&self, name: &str) -> Result<serde_json::Value, String> {
        let set = self.guards.promote(name).map_err(|e| e.to_string())?;
        let mut answer = summary(&self.guards, &set);
        answer["promoted"] = serde_json::Value::String(name.to_string());
        Ok(answer)
    }
}

/// chio's reload contract for the gateway's guard sets: a guard whose module changed replays its
/// canary corpus (`canary/` beside its `guard-manifest.yaml`: exactly 32 fixtures listed in
/// `MANIFEST.sha256`) before the new set goes live; a mismatch refuses the reload
/// (`RELOAD_CANARY_FAILED`, the old set keeps serving). After a swap, 5 error verdicts of a changed
/// guard within 60 s put the previous set back (`RELOAD_ROLLED_BACK`). Both write an incident
/// directory (`incident.json`, `last_5_eval_traces.ndjson`) under `gateway.incident_dir`.
#[derive(Debug)]
pub struct ReloadSafety {
    guards: Guards,
    incidents: PathBuf,
    metrics: Option<Arc<Metrics>>,
    watch: std::sync::Mutex<Watch>,
}

#[derive(Debug, Default)]
struct Watch {
    /// The set the last reload made live, and the digest prefixes it changed.
    set: Option<Arc<GuardSet>>,
    fresh: std::collections::HashSet<String>,
    /// The host's watchdog: the error count in the window and the last evaluations.
    dog: helios_plugin_host::reload::Watchdog,
}

/// Where a guard's canary corpus lives: `canary/` beside its manifest (a promoted shadow
/// candidate keeps the corpus of the guard it replaces).
pub fn canary_dir(g: &crate::guards::LoadedGuard) -> PathBuf {
    g.canary.clone()
}

impl ReloadSafety {
    pub fn new(guards: Guards, incidents: PathBuf, metrics: Option<Arc<Metrics>>) -> Arc<ReloadSafety> {
        Arc::new(ReloadSafety { guards, incidents, metrics, watch: Default::default() })
    }

    fn count(&self, guard: &str, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.guard_reload(guard, outcome);
        }
    }
}

impl ReloadListener for ReloadSafety {
    fn check(&self, old: &GuardSet, new: &GuardSet) -> Result<(), ReloadError> {
        use helios_plugin_host::{CanaryCorpus, CanaryMismatch, ContentId};
        for g in new.guards() {
            if old.guards().iter().any(|o| o.digest == g.digest) {
                continue;
            }
            let dir = canary_dir(g);
            if !dir.join(helios_plugin_host::reload::CANARY_MANIFEST).is_file() {
                continue;
            }
            let refuse = |message: String| {
                self.count(g.plugin.name(), "canary_failed");
                ReloadError(message)
            };
            let corpus = CanaryCorpus::load(&dir).map_err(|e| refuse(format!("guard \"{}\": {e}", g.plugin.name())))?;
            let id = format!("sha256:{}", g.digest).parse::<ContentId>().unwrap_or_else(|_| ContentId::of(&[]));
            if let Err(CanaryMismatch { fixture, expected, actual, traces }) = corpus.replay(&g.plugin, &id, 0) {
                let from = old.guards().iter().find(|o| o.plugin.name() == g.plugin.name()).map(|o| o.digest.clone());
                let span =
                    tracing::warn_span!("RELOAD_CANARY_FAILED", guard = g.plugin.name(), to = %id, fixture = %fixture);
                let _in = span.enter();
                let incident = helios_plugin_host::reload::write_incident(
                    &self.incidents,
                    g.plugin.name(),
                    "canary_failed",
                    serde_json::json!({
                        "from": from.map(|d| format!("sha256:{d}")),
                        "to": id.to_string(),
                        "fixture": fixture,
                        "expected": expected,
                        "actual": actual,
                    }),
                    &traces,
                );
                tracing::warn!(guard = g.plugin.name(), fixture = %fixture, incident = %incident, "chio.guard.reload.canary_failed: the live guards keep serving");
                return Err(refuse(format!(
                    "guard \"{}\": canary failed on fixture {fixture}: expected {expected}, candidate {id} gave {actual} (incident {incident})",
                    g.plugin.name()
                )));
            }
        }
        Ok(())
    }

    fn swapped(&self, old: &GuardSet, new: &GuardSet, epoch: u64) {
        let fresh: std::collections::HashSet<String> = new
            .guards()
            .iter()
            .filter(|g| !old.guards().iter().any(|o| o.digest == g.digest))
            .map(|g| g.digest[..16].to_string())
            .collect();
        for g in new.guards().iter().filter(|g| fresh.contains(&g.digest[..16])) {
            let span = tracing::info_span!("RELOAD_APPLIED", guard = g.plugin.name(), to = %g.digest, epoch);
            let _in = span.enter();
            tracing::info!(guard = g.plugin.name(), epoch, "reload applied");
        }
        let mut w = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        *w = Watch { set: Some(self.guards.current()), fresh, ..Default::default() };
    }

    fn refused(&self, _error: &ReloadError) {}

    fn rolled_back(&self, failed: &GuardSet, restored: &GuardSet) {
        let traces: Vec<_> = {
            let mut w = self.watch.lock().unwrap_or_else(|e| e.into_inner());
            let t = w.dog.traces();
            *w = Watch::default();
            t
        };
        for g in failed.guards().iter().filter(|g| !restored.guards().iter().any(|r| r.digest == g.digest)) {
            let to = restored.guards().iter().find(|r| r.plugin.name() == g.plugin.name()).map(|r| r.digest.clone());
            let span = tracing::error_span!("RELOAD_ROLLED_BACK", guard = g.plugin.name(), from = %g.digest);
            let _in = span.enter();
            let incident = helios_plugin_host::reload::write_incident(
                &self.incidents,
                g.plugin.name(),
                "rolled_back",
                serde_json::json!({
                    "from": format!("sha256:{}", g.digest),
                    "to": to.map(|d| format!("sha256:{d}")),
                    "reason": "5 error verdicts within 60 s",
                }),
                &traces,
            );
            self.count(g.plugin.name(), "rolled_back");
            tracing::error!(guard = g.plugin.name(), incident = %incident, "chio.guard.reload.rolled_back: the previous guards serve again");
        }
    }
}

impl DecisionObserver for ReloadSafety {
    fn decided(&self, d: &Decision) {
        use helios_plugin_host::reload::EvalTrace;
        let trip = {
            let mut w = self.watch.lock().unwrap_or_else(|e| e.into_inner());
            if w.set.is_none() || !w.fresh.contains(&d.digest) {
                return;
            }
            let trace = EvalTrace {
                unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|t| t.as_millis())
                    .unwrap_or(0),
                digest: d.digest.clone(),
                epoch: self.guards.reload_count(),
                input: serde_json::json!({"tool_name": d.tool, "server_id": d.server, "agent_id": d.agent}),
                output: d.reason.clone().unwrap_or_else(|| d.verdict.as_str().to_string()),
                error: d.verdict == Outcome::Error,
                duration_us: d.duration_us,
            };
            if !w.dog.record(trace) {
                return;
            }
            w.set.clone()
        };
        if let Some(set) = trip {
            self.guards.roll_back(&set);
        }
    }
}
