//! The guard set: every `wasm_guards[]` entry verified (signature, digest blocklist, size, SHA-256)
//! before any of its code runs, loaded into the host, and run in priority order on each tool call.
//!
//! A [`Guards`] handle holds the live set behind an `Arc` swap: a reload builds a whole new set off
//! to the side and replaces the pointer, so a call in flight finishes on the set it started with and
//! no call ever sees a half-loaded guard. A reload that fails leaves the old set serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use helios_plugin_artefact::{Blocklist, TrustRoot, VerifyOptions};
use helios_plugin_host::{Chain, Plugin, PluginConfig, Runtime};
use helios_plugin_loader::{VerifyError, load_verified, merged_config, verify_named};
use helios_plugin_schema::manifest::GUARD_MANIFEST_FILE;
use helios_plugin_schema::{GuardRequest, GuardVerdict};
use serde::Serialize;

use crate::config::{GatewayConfig, WasmGuardEntry};

/// A guard that could not be loaded; the message names the config file, the entry and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{file}: wasm_guards[{index}] ({name}): {message}")]
pub struct GuardLoadError {
    pub file: String,
    pub index: usize,
    pub name: String,
    pub message: String,
}

/// One loaded guard and what it was loaded from.
#[derive(Debug, Clone)]
pub struct LoadedGuard {
    pub plugin: Arc<Plugin>,
    pub advisory: bool,
    /// Lowercase hex SHA-256 of the module.
    pub digest: String,
    pub version: String,
    /// The label of the trusted key that signed it, or `None` when unsigned.
    pub signer: Option<String>,
    /// Config keys introspection hides.
    pub redact_keys: Vec<String>,
    pub manifest: PathBuf,
    /// The canary corpus a new version of this guard must pass: `canary/` beside the manifest
    /// (for a promoted shadow candidate: the corpus of the guard it replaced).
    pub canary: PathBuf,
    /// The shadow candidate running beside it, if its entry names one.
    pub shadow: Option<Arc<ShadowGuard>>,
    /// Files whose change triggers a reload: the manifest, the module, its sidecar (and the
    /// shadow candidate's).
    watched: Vec<PathBuf>,
}

/// A guard entry's `shadow` candidate: verified and loaded exactly like the live guard, run on a
/// sample of the live guard's real tool calls on its own thread (never on the call's path), its
/// verdicts compared with the live ones and never applied. Counters start at zero with each set
/// a reload builds.
pub struct ShadowGuard {
    pub plugin: Arc<Plugin>,
    /// Lowercase hex SHA-256 of the candidate module.
    pub digest: String,
    pub version: String,
    pub signer: Option<String>,
    pub manifest: PathBuf,
    /// Compare one call in `every`.
    every: u64,
    seen: AtomicU64,
    compared: Arc<AtomicU64>,
    divergences: Arc<AtomicU64>,
    skipped: AtomicU64,
    jobs: std::sync::mpsc::SyncSender<(Box<GuardRequest>, String)>,
}

impl std::fmt::Debug for ShadowGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowGuard").field("digest", &self.digest).field("every", &self.every).finish_non_exhaustive()
    }
}

/// A shadow candidate's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShadowCounts {
    /// Live calls the candidate was run on and compared.
    pub compared: u64,
    /// Of those, calls where its verdict (or failure) differed from the live guard's.
    pub divergences: u64,
    /// Sampled calls dropped because the candidate's worker was behind.
    pub skipped: u64,
    /// `(compared - divergences) / compared`; `None` before the first comparison.
    pub agreement_rate: Option<f64>,
}

/// Divergences logged in full; after that one in a hundred.
const SHADOW_LOGGED: u64 = 10;

impl ShadowGuard {
    fn start(guard: &str, loaded: LoadedGuard, sample_rate: f64) -> Result<ShadowGuard, String> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<(Box<GuardRequest>, String)>(256);
        let compared = Arc::new(AtomicU64::new(0));
        let divergences = Arc::new(AtomicU64::new(0));
        let (plugin, c, d, name, digest) =
            (loaded.plugin.clone(), compared.clone(), divergences.clone(), guard.to_string(), loaded.digest.clone());
        // Ends when the set holding the candidate is dropped (the sender goes with it).
        std::thread::Builder::new()
            .name(format!("shadow-{guard}"))
            .spawn(move || {
                for (request, live) in rx {
                    let candidate = shadow_outcome(plugin.try_evaluate(&request));
                    c.fetch_add(1, Ordering::Relaxed);
                    if candidate != live {
                        let n = d.fetch_add(1, Ordering::Relaxed) + 1;
                        if n <= SHADOW_LOGGED || n % 100 == 0 {
                            tracing::warn!(
                                guard = %name, shadow = &digest[..16], divergences = n, tool = %request.tool_name,
                                agent = %request.agent_id, live = %live, candidate = %candidate,
                                "shadow candidate diverged from the live guard"
                            );
                        }
                    }
                }
            })
            .map_err(|e| format!("field shadow: cannot start the shadow worker: {e}"))?;
        let every = (1.0 / sample_rate).round().max(1.0) as u64;
        tracing::info!(guard, shadow = &loaded.digest[..16], every, "shadow candidate running");
        Ok(ShadowGuard {
            plugin: loaded.plugin,
            digest: loaded.digest,
            version: loaded.version,
            signer: loaded.signer,
            manifest: loaded.manifest,
            every,
            seen: AtomicU64::new(0),
            compared,
            divergences,
            skipped: AtomicU64::new(0),
            jobs,
        })
    }

    /// Hands a sampled call to the candidate's worker; never blocks the caller.
    fn offer(&self, request: &GuardRequest, live: &Result<GuardVerdict, helios_plugin_host::PluginError>) {
        if !self.seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.every) {
            return;
        }
        let live = shadow_outcome(live.clone());
        if self.jobs.try_send((Box::new(request.clone()), live)).is_err() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> ShadowCounts {
        let compared = self.compared.load(Ordering::Relaxed);
        let divergences = self.divergences.load(Ordering::Relaxed);
        ShadowCounts {
            compared,
            divergences,
            skipped: self.skipped.load(Ordering::Relaxed),
            agreement_rate: (compared > 0).then(|| (compared - divergences) as f64 / compared as f64),
        }
    }
}

/// What a guard did on one call, in the form live and shadow are compared in.
fn shadow_outcome(r: Result<GuardVerdict, helios_plugin_host::PluginError>) -> String {
    match r {
        Ok(v) => serde_json::to_string(&v).unwrap_or_default(),
        Err(e) => format!("error: {}", e.kind),
    }
}

/// How one guard decided on one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    /// The guard failed (trap, fuel, deadline, bad result) and denied because it is not advisory.
    Error,
    /// The guard failed but is advisory: logged, and the call went on.
    AdvisoryError,
}

impl Outcome {
    /// The name the logs use: `allow`, `deny`, `error`, `advisory_error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
            Outcome::AdvisoryError => "advisory_error",
        }
    }
}

/// One guard's decision on one tool call: what the decision log records.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub guard: String,
    /// The first 16 hex digits of the module's SHA-256 (chio's metric label).
    pub digest: String,
    pub verdict: Outcome,
    /// The deny reason, or the failure of an erroring guard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_us: u64,
    pub tool: String,
    pub server: String,
    pub agent: String,
}

/// Where decisions go besides the `tracing` log: the seam for metrics and introspection.
pub trait DecisionObserver: Send + Sync + std::fmt::Debug {
    fn decided(&self, decision: &Decision);
}

/// The chain's verdict on one call and the decisions that led to it.
#[derive(Debug, Clone)]
pub struct ChainVerdict {
    pub verdict: GuardVerdict,
    pub decisions: Vec<Decision>,
}

/// An immutable set of loaded guards in calling order.
#[derive(Debug)]
pub struct GuardSet {
    guards: Vec<LoadedGuard>,
    fingerprint: Fingerprint,
}

impl GuardSet {
    /// The guards in calling order (priority, then config order).
    pub fn guards(&self) -> &[LoadedGuard] {
        &self.guards
    }

    /// Runs every guard in order; the first deny wins. Blocking: call it off the async workers.
    pub fn evaluate(&self, request: &GuardRequest) -> ChainVerdict {
        let mut decisions = Vec::with_capacity(self.guards.len());
        for g in &self.guards {
            let t = Instant::now();
            let result = g.plugin.try_evaluate(request);
            let duration_us = t.elapsed().as_micros() as u64;
            if let Some(shadow) = &g.shadow {
                shadow.offer(request, &result);
            }
            let (verdict, reason, stop) = match result {
                Ok(GuardVerdict::Allow) => (Outcome::Allow, None, None),
                Ok(GuardVerdict::Deny { reason }) => (Outcome::Deny, Some(reason.clone()), Some(reason)),
                Err(e) if g.advisory => (Outcome::AdvisoryError, Some(e.kind.to_string()), None),
                Err(e) => {
                    let reason = format!("guard \"{}\" failed closed: {}", g.plugin.name(), e.kind);
                    (Outcome::Error, Some(e.kind.to_string()), Some(reason))
                }
            };
            decisions.push(Decision {
                guard: g.plugin.name().to_string(),
                digest: g.digest[..16].to_string(),
                verdict,
                reason,
                duration_us,
                tool: request.tool_name.clone(),
                server: request.server_id.clone(),
                agent: request.agent_id.clone(),
            });
            if let Some(reason) = stop {
                return ChainVerdict { verdict: GuardVerdict::Deny { reason }, decisions };
            }
        }
        ChainVerdict { verdict: GuardVerdict::Allow, decisions }
    }
}

/// Told about every reload of a [`Guards`] (SIGHUP, file change, admin request): the seam for
/// reload metrics.
pub trait ReloadListener: Send + Sync + std::fmt::Debug {
    /// `new` replaced `old`; `epoch` counts successful reloads (the first load is epoch 0).
    fn swapped(&self, old: &GuardSet, new: &GuardSet, epoch: u64);
    /// A reload was refused; the old set keeps serving.
    fn refused(&self, error: &ReloadError);
    /// Asked before a new set goes live (the canary); an `Err` refuses the reload.
    fn check(&self, _old: &GuardSet, _new: &GuardSet) -> Result<(), ReloadError> {
        Ok(())
    }
    /// The watchdog put `restored` back in place of `failed`.
    fn rolled_back(&self, _failed: &GuardSet, _restored: &GuardSet) {}
}

/// The live guard set, swappable while calls run.
#[derive(Debug, Clone)]
pub struct Guards {
    runtime: Runtime,
    live: Arc<RwLock<Arc<GuardSet>>>,
    reloads: Arc<std::sync::atomic::AtomicU64>,
    listeners: Arc<RwLock<Vec<Arc<dyn ReloadListener>>>>,
    /// The set the last reload replaced, for a rollback.
    previous: Arc<RwLock<Option<Arc<GuardSet>>>>,
    /// Serialises reloads and promotions.
    swap: Arc<Mutex<()>>,
}

impl Guards {
    /// Verifies and loads every guard of `config`. Fails on the first guard that cannot load.
    pub fn load(runtime: Runtime, config: &GatewayConfig) -> Result<Guards, GuardLoadError> {
        let set = build_set(&runtime, config)?;
        Ok(Guards {
            runtime,
            live: Arc::new(RwLock::new(Arc::new(set))),
            reloads: Arc::default(),
            listeners: Arc::default(),
            previous: Arc::default(),
            swap: Arc::default(),
        })
    }

    /// Adds a listener told about every later reload.
    pub fn listen(&self, listener: Arc<dyn ReloadListener>) {
        self.listeners.write().unwrap_or_else(|e| e.into_inner()).push(listener);
    }

    /// The runtime the guards run in.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The set serving now. Hold the `Arc` for the length of one call.
    pub fn current(&self) -> Arc<GuardSet> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the config file's `wasm_guards` and swaps in the new set if every guard verifies
    /// and loads; otherwise the old set keeps serving and the error is returned.
    pub fn reload(&self, config_path: &Path) -> Result<Arc<GuardSet>, ReloadError> {
        let _swap = self.swap.lock().unwrap_or_else(|e| e.into_inner());
        let built = GatewayConfig::load(config_path)
            .map_err(|e| ReloadError(e.to_string()))
            .and_then(|config| build_set(&self.runtime, &config).map_err(|e| ReloadError(e.to_string())));
        self.install(built)
    }

    /// Makes guard `name`'s shadow candidate its live version, through the same path as a reload
    /// (the canary of the guard's corpus, then the swap and the watchdog). The other guards, and
    /// their shadows, stay as they are. chio.yaml is not changed: the next reload reads it again,
    /// so point the entry's `path` at the candidate to keep it.
    pub fn promote(&self, name: &str) -> Result<Arc<GuardSet>, ReloadError> {
        let _swap = self.swap.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current();
        let promoted = old
            .guards
            .iter()
            .find(|g| g.plugin.name() == name)
            .ok_or_else(|| ReloadError(format!("promote: no guard named \"{name}\"")))
            .and_then(|g| {
                g.shadow.clone().map(|s| (g, s)).ok_or_else(|| {
                    ReloadError(format!("promote: guard \"{name}\" has no shadow candidate (its entry names none)"))
                })
            })
            .map(|(g, s)| {
                let counts = s.counts();
                tracing::info!(
                    guard = name,
                    from = &g.digest[..16],
                    to = &s.digest[..16],
                    compared = counts.compared,
                    divergences = counts.divergences,
                    "promoting the shadow candidate"
                );
                let guards = old
                    .guards
                    .iter()
                    .map(|o| {
                        if o.plugin.name() != name {
                            return o.clone();
                        }
                        LoadedGuard {
                            plugin: s.plugin.clone(),
                            advisory: o.advisory,
                            digest: s.digest.clone(),
                            version: s.version.clone(),
                            signer: s.signer.clone(),
                            redact_keys: o.redact_keys.clone(),
                            manifest: s.manifest.clone(),
                            canary: o.canary.clone(),
                            shadow: None,
                            watched: o.watched.clone(),
                        }
                    })
                    .collect();
                GuardSet { guards, fingerprint: old.fingerprint.clone() }
            });
        let set = self.install(promoted)?;
        tracing::warn!(
            guard = name,
            "shadow candidate promoted; the next reload reads chio.yaml again: point the entry's path at the candidate to keep it"
        );
        Ok(set)
    }

    /// Asks every listener (the canary) about `built`, then swaps it in and tells them. On any
    /// error the old set keeps serving.
    fn install(&self, built: Result<GuardSet, ReloadError>) -> Result<Arc<GuardSet>, ReloadError> {
        let checked = built.and_then(|set| {
            let old = self.current();
            for l in self.listeners.read().unwrap_or_else(|e| e.into_inner()).iter() {
                l.check(&old, &set)?;
            }
            Ok(set)
        });
        let set = match checked {
            Ok(set) => Arc::new(set),
            Err(e) => {
                for l in self.listeners.read().unwrap_or_else(|e| e.into_inner()).iter() {
                    l.refused(&e);
                }
                return Err(e);
            }
        };
        let old = std::mem::replace(&mut *self.live.write().unwrap_or_else(|e| e.into_inner()), set.clone());
        *self.previous.write().unwrap_or_else(|e| e.into_inner()) = Some(old.clone());
        let epoch = self.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        for l in self.listeners.read().unwrap_or_else(|e| e.into_inner()).iter() {
            l.swapped(&old, &set, epoch);
        }
        for g in &set.guards {
            let was = old.guards.iter().find(|o| o.plugin.name() == g.plugin.name()).map(|o| &o.digest[..16]);
            tracing::info!(
                guard = g.plugin.name(),
                digest = &g.digest[..16],
                previous = was.unwrap_or("-"),
                "guard reloaded"
            );
        }
        Ok(set)
    }

    /// Puts the set the last reload replaced back, if `failed` is still the live one. Returns
    /// whether it did.
    pub fn roll_back(&self, failed: &Arc<GuardSet>) -> bool {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&live, failed) {
            return false;
        }
        let Some(previous) = self.previous.write().unwrap_or_else(|e| e.into_inner()).take() else {
            return false;
        };
        *live = previous.clone();
        drop(live);
        for l in self.listeners.read().unwrap_or_else(|e| e.into_inner()).iter() {
            l.rolled_back(failed, &previous);
        }
        true
    }

    /// Successful reloads since start.
    pub fn reload_count(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks the config file and every guard file every `poll`; when something changed and then
    /// stayed unchanged for one more poll (a writer finished), calls `changed` (the gateway's
    /// [`Reloader`](crate::ops::Reloader) trigger). Runs until the process ends.
    pub fn watch(&self, config_path: PathBuf, poll: Duration, changed: impl Fn() + Send + 'static) {
        let guards = self.clone();
        let spawned = std::thread::Builder::new().name("guard-watch".into()).spawn(move || {
            let mut seen = guards.current().fingerprint.clone().with_config(&config_path);
            let mut pending = false;
            loop {
                std::thread::sleep(poll);
                let set = guards.current();
                let now = set.fingerprint.rescan().with_config(&config_path);
                if now != seen {
                    seen = now;
                    pending = true;
                    continue;
                }
                if pending {
                    pending = false;
                    changed();
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the guard file watcher; reload with SIGHUP");
        }
    }
}

/// A reload that did not happen; the old guards keep serving.
#[derive(Debug, thiserror::Error)]
#[error("reload refused: {0}")]
pub struct ReloadError(pub String);

/// Size and modification time of every watched file (absent files included).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Fingerprint(BTreeMap<PathBuf, Option<(u64, SystemTime)>>);

impl Fingerprint {
    fn of(paths: impl IntoIterator<Item = PathBuf>) -> Fingerprint {
        Fingerprint(
            paths
                .into_iter()
                .map(|p| {
                    let meta =
                        std::fs::metadata(&p).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
                    (p, meta)
                })
                .collect(),
        )
    }
    fn rescan(&self) -> Fingerprint {
        Fingerprint::of(self.0.keys().cloned())
    }
    fn with_config(mut self, config: &Path) -> Fingerprint {
        let meta = std::fs::metadata(config).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        self.0.insert(config.to_path_buf(), meta);
        self
    }
}

fn build_set(runtime: &Runtime, config: &GatewayConfig) -> Result<GuardSet, GuardLoadError> {
    let file = config.file.display().to_string();
    let trust_root = match &config.gateway.trusted_keys {
        Some(dir) => Some(TrustRoot::load(dir).map_err(|e| GuardLoadError {
            file: file.clone(),
            index: 0,
            name: "gateway.trusted_keys".into(),
            message: e.to_string(),
        })?),
        None => None,
    };
    let blocklist = match &config.gateway.blocklist {
        Some(path) => Some(Blocklist::load(path).map_err(|e| GuardLoadError {
            file: file.clone(),
            index: 0,
            name: "gateway.blocklist".into(),
            message: e.to_string(),
        })?),
        None => None,
    };
    let mut loaded = Vec::with_capacity(config.wasm_guards.len());
    for (index, entry) in config.wasm_guards.iter().enumerate() {
        let err = |message: String| GuardLoadError { file: file.clone(), index, name: entry.name.clone(), message };
        let opts = VerifyOptions {
            trust_root: trust_root.clone(),
            blocklist: blocklist.clone(),
            max_module_bytes: entry.max_module_size,
            allow_unsigned: config.gateway.allow_unsigned,
        };
        let mut guard = load_guard(runtime, entry, &entry.path, &opts).map_err(err)?;
        if let Some(shadow) = &entry.shadow {
            // The candidate passes every check the live guard passed: manifest, signature,
            // blocklist, size, SHA-256, name; it runs under the entry's limits and config.
            let candidate = load_guard(runtime, entry, &shadow.path, &opts)
                .map_err(|m| err(format!("shadow {}: {m}", shadow.path.display())))?;
            guard.watched.extend(candidate.watched.iter().cloned());
            guard.shadow = Some(Arc::new(ShadowGuard::start(&entry.name, candidate, shadow.sample_rate).map_err(err)?));
        }
        loaded.push(guard);
    }
    // Chain orders by priority, then by position (config order); keep our metadata in that order.
    let chain = Chain::new(loaded.iter().map(|g| g.plugin.clone()).collect());
    let mut ordered = Vec::with_capacity(loaded.len());
    for p in chain.plugins() {
        let i = loaded.iter().position(|g| Arc::ptr_eq(&g.plugin, p)).expect("every plugin came from loaded");
        ordered.push(loaded.swap_remove(i));
    }
    let fingerprint = Fingerprint::of(ordered.iter().flat_map(|g| g.watched.iter().cloned()));
    Ok(GuardSet { guards: ordered, fingerprint })
}

/// chio: "The kernel discovers the manifest by walking up from path to the parent directory and
/// reading guard-manifest.yaml."
pub fn find_manifest(wasm: &Path) -> Option<PathBuf> {
    let start = wasm.parent()?;
    start.ancestors().map(|d| d.join(GUARD_MANIFEST_FILE)).find(|m| m.is_file())
}

fn load_guard(
    runtime: &Runtime,
    entry: &WasmGuardEntry,
    path: &Path,
    opts: &VerifyOptions,
) -> Result<LoadedGuard, String> {
    let manifest = find_manifest(path).ok_or_else(|| {
        format!(
            "no {GUARD_MANIFEST_FILE} in {} or any directory above it (field path)",
            path.parent().unwrap_or(path).display()
        )
    })?;
    // Signature, blocklist, size cap, SHA-256 and name: all before a byte of the module is compiled.
    let verified = verify_named(&manifest, &entry.name, opts).map_err(|e| match e {
        VerifyError::Name(m) => format!("field name: {m} in {}", manifest.display()),
        e => e.to_string(),
    })?;
    let named = manifest_wasm_path(&manifest)?;
    let same = match (std::fs::canonicalize(&named), std::fs::canonicalize(path)) {
        (Ok(a), Ok(b)) => a == b,
        (_, Err(e)) => return Err(format!("field path: cannot read {}: {e}", path.display())),
        (Err(_), _) => false,
    };
    if !same {
        return Err(format!(
            "field path: {} is not the module {} describes (its wasm_path is {})",
            path.display(),
            manifest.display(),
            named.display()
        ));
    }
    let cfg = PluginConfig::new(&entry.name)
        .config_map(merged_config(&verified, &entry.config))
        .fuel(Some(entry.fuel_limit))
        .priority(entry.priority)
        .advisory(entry.advisory)
        .max_memory_bytes(entry.max_memory_bytes)
        .max_module_bytes(entry.max_module_size);
    let plugin = load_verified(runtime, &verified, cfg).map_err(|e| e.to_string())?;
    if !plugin.is_guard() {
        return Err(format!("module {} does not export evaluate: it is not a chio guard", path.display()));
    }
    let sidecar = PathBuf::from(format!("{}{}", named.display(), helios_plugin_schema::manifest::SIDECAR_SUFFIX));
    // load_verified logged its version, digest and signer.
    tracing::info!(guard = %entry.name, priority = entry.priority, advisory = entry.advisory, "guard loaded");
    Ok(LoadedGuard {
        plugin,
        advisory: entry.advisory,
        digest: verified.sha256,
        version: verified.version,
        signer: verified.signer.as_ref().map(|s| s.label.clone()),
        redact_keys: entry.redact_keys.clone(),
        watched: vec![manifest.clone(), named, sidecar],
        canary: manifest.parent().unwrap_or(Path::new(".")).join("canary"),
        shadow: None,
        manifest,
    })
}

/// The module a manifest names (its `wasm_path`, relative to the manifest).
fn manifest_wasm_path(manifest: &Path) -> Result<PathBuf, String> {
    let bytes = std::fs::read(manifest).map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let parsed = helios_plugin_artefact::manifests::parse_guard_manifest(&bytes, &manifest.display().to_string())
        .map_err(|e| e.to_string())?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    Ok(dir.join(parsed.wasm_path))
}
