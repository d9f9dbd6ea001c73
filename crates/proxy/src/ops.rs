//! Operations (issue 15): the admin listener of helios-proxy. With an `[admin]` section the binary
//! loads its plugins through [`ProxyOps`]: the runtime reports every plugin call to one
//! [`Metrics`] registry, the chain's results and statement outcomes are counted, `/plugins` lists
//! the live chain (config values named in a plugin's `redact_keys` hidden), and `POST /reload`
//! runs the same reload as SIGHUP (read, verify, load, then [`Reloader::reload`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use helios_plugin_admin::{AdminControl, Metrics, PluginMeta, PluginView, pre_query_kind};
use helios_plugin_host::Chain;
use helios_plugin_host::schema::{PostQueryEnvelope, PreQueryResult, QueryContext};

use crate::config::ProxyConfig;
use crate::error::ConfigError;
use crate::hooks::{PreQueryDecision, RouteDecision, StatementHooks};
use crate::server::{ReloadReport, Reloader};

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

/// A checkout that waited for a server connection of `node`.
pub fn pool_waited(node: &str, waited: std::time::Duration) {
    if let Some(m) = METRICS.get() {
        m.proxy_pool_wait(node, waited);
    }
}

/// `node`'s pool now: idle connections and open ones (idle + checked out).
pub fn pool_size(node: &str, idle: usize, open: usize) {
    if let Some(m) = METRICS.get() {
        m.proxy_pool_size(node, idle as u64, open.saturating_sub(idle) as u64);
    }
}

/// The chain with per-plugin result counts and statement outcomes.
#[derive(Debug)]
pub struct MeteredChain {
    chain: Chain,
    metrics: Arc<Metrics>,
}

impl StatementHooks for MeteredChain {
    fn is_empty(&self) -> bool {
        StatementHooks::is_empty(&self.chain)
    }
    fn has_pre_query(&self) -> bool {
        StatementHooks::has_pre_query(&self.chain)
    }
    fn pre_query(&self, ctx: &QueryContext) -> PreQueryDecision {
        let o = self.chain.pre_query_observed(ctx, &mut |p, _, r| {
            if let Ok(r) = r {
                self.metrics.plugin_result(p.name(), "pre_query", pre_query_kind(r));
            }
        });
        let outcome = match &o.result {
            PreQueryResult::Continue => "forwarded",
            PreQueryResult::Rewrite { .. } => "rewritten",
            PreQueryResult::Block { .. } => "blocked",
            PreQueryResult::Cached { .. } => "cached",
        };
        self.metrics.proxy_statement(outcome);
        if matches!(o.result, PreQueryResult::Block { .. }) {
            // A refusal reaches the client as SQLSTATE 42000.
            self.metrics.proxy_error("42000");
        }
        PreQueryDecision { result: o.result, decided_by: o.decided_by }
    }
    fn route(&self, ctx: &QueryContext) -> RouteDecision {
        let o = self.chain.route_observed(ctx, &mut |p, _, r| {
            if let Ok(r) = r {
                let kind = serde_json::to_value(r).ok().and_then(|v| v["action"].as_str().map(str::to_string));
                self.metrics.plugin_result(p.name(), "route", kind.as_deref().unwrap_or("unknown"));
            }
        });
        RouteDecision { result: o.result, decided_by: o.decided_by }
    }
    fn post_query(&self, env: &PostQueryEnvelope) {
        let _ = self.chain.post_query_observed(env, &mut |p, _, r| {
            if r.is_ok() {
                self.metrics.plugin_result(p.name(), "post_query", "ok");
            }
        });
    }
}

/// What `/plugins` needs of the live chain.
#[derive(Debug, Default)]
struct Live {
    chain: Chain,
    redact: BTreeMap<String, Vec<String>>,
    versions: BTreeMap<String, String>,
}

/// helios-proxy behind its admin listener.
#[derive(Debug)]
pub struct ProxyOps {
    path: PathBuf,
    metrics: Arc<Metrics>,
    reloader: OnceLock<Reloader>,
    live: RwLock<Live>,
    /// One reload at a time (SIGHUP and admin requests share this path).
    reloading: Mutex<()>,
}

impl ProxyOps {
    pub fn new(path: &Path, metrics: Arc<Metrics>) -> Arc<ProxyOps> {
        let _ = METRICS.set(metrics.clone());
        Arc::new(ProxyOps {
            path: path.to_path_buf(),
            metrics,
            reloader: OnceLock::new(),
            live: RwLock::default(),
            reloading: Mutex::new(()),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reads the config file, verifies and loads its plugins (metered) and remembers the chain for
    /// `/plugins`. `redact_keys` of each `[[plugins]]` entry is taken out here (the host's plugin
    /// parser does not know it).
    pub fn load(&self) -> Result<(ProxyConfig, Arc<dyn StatementHooks>), ConfigError> {
        let mut config = ProxyConfig::load(&self.path)?;
        let origin = self.path.display().to_string();
        let mut redact = BTreeMap::new();
        let mut versions = BTreeMap::new();
        for (i, table) in config.plugins.iter_mut().enumerate() {
            let name = table.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            if let Some(keys) = table.remove("redact_keys") {
                let keys: Vec<String> = keys.try_into().map_err(|e| ConfigError::Plugins {
                    message: format!("{origin}: plugins[{i}] ({name}): field redact_keys: {e} (an array of strings)"),
                })?;
                redact.insert(name.clone(), keys);
            }
            if let Some(v) = table.get("version").and_then(|v| v.as_str()) {
                versions.insert(name, v.to_string());
            }
        }
        let chain = crate::plugins::load_chain_observed(&config, &origin, Some(self.metrics.clone()))?;
        let hooks: Arc<dyn StatementHooks> =
            Arc::new(MeteredChain { chain: chain.clone(), metrics: self.metrics.clone() });
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Live { chain, redact, versions };
        Ok((config, hooks))
    }

    /// The running proxy's reloader (set once, after bind).
    pub fn set_reloader(&self, reloader: Reloader) {
        let _ = self.reloader.set(reloader);
    }

    /// Reads, verifies and loads the file again and installs it; on any failure the running
    /// configuration stays. SIGHUP and `POST /reload` both come here.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let reloader = self.reloader.get().ok_or("the proxy is not serving yet")?;
        let previous = std::mem::take(&mut *self.live.write().unwrap_or_else(|e| e.into_inner()));
        let loaded = self.load();
        let (config, hooks) = match loaded {
            Ok(x) => x,
            Err(e) => {
                *self.live.write().unwrap_or_else(|e| e.into_inner()) = previous;
                tracing::error!(error = %e, "reload failed; the running configuration stays");
                return Err(e.to_string());
            }
        };
        match reloader.reload(config, hooks) {
            Ok(report) => {
                tracing::info!(file = %self.path.display(), "reload: configuration replaced (new sessions use it)");
                Ok(report)
            }
            Err(e) => {
                *self.live.write().unwrap_or_else(|e| e.into_inner()) = previous;
                tracing::error!(error = %e, "reload failed; the running configuration stays");
                Err(e.to_string())
            }
        }
    }
}

impl AdminControl for ProxyOps {
    fn plugins(&self) -> serde_json::Value {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let views: Vec<PluginView> = live
            .chain
            .plugins()
            .iter()
            .map(|p| {
                let meta = PluginMeta {
                    version: live.versions.get(p.name()).cloned(),
                    signer: None,
                    redact_keys: live.redact.get(p.name()).cloned().unwrap_or_default(),
                    shadow: None,
                };
                PluginView::of(p, &meta)
            })
            .collect();
        serde_json::to_value(views).unwrap_or_default()
    }

    fn reload(&self) -> Result<serde_json::Value, String> {
        let report = ProxyOps::reload(self)?;
        Ok(serde_json::json!({
            "reloaded": true,
            "listeners_need_restart": report.listeners_need_restart,
            "plugins": self.live.read().unwrap_or_else(|e| e.into_inner()).chain.plugins().iter().map(|p| p.name().to_string()).collect::<Vec<_>>(),
        }))
    }
}
