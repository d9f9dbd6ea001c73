//! Listeners, the state sessions share (nodes, pools, hooks, cancel keys) and graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::{ClientAuth, NodeRole, ProxyConfig};
use crate::error::ProxyError;
use crate::hooks::StatementHooks;
use crate::pool::Pool;
use crate::scram::Verifier;

/// A node as sessions see it.
#[derive(Debug)]
pub struct Node {
    pub name: Arc<str>,
    pub host: String,
    pub port: u16,
    pub role: NodeRole,
    pub tls: crate::config::UpstreamTls,
    pub tls_connector: Option<crate::tls::Connector>,
}

/// Where a session's running statement can be cancelled: (server address, backend pid, secret).
#[derive(Debug, Default)]
pub struct CancelSlot(Mutex<Option<(SocketAddr, i32, i32)>>);

impl CancelSlot {
    pub fn set(&self, v: Option<(SocketAddr, i32, i32)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }
    fn get(&self) -> Option<(SocketAddr, i32, i32)> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How many distinct statement texts, and how many statement shapes (texts up to their literals),
/// keep their facts cached.
const FACTS_CACHE_STATEMENTS: usize = 4096;

/// State shared by every session of a proxy.
pub struct Shared {
    pub config: ProxyConfig,
    pub nodes: Vec<Node>,
    pub default_node: usize,
    pub pool: Pool,
    pub hooks: Arc<dyn StatementHooks>,
    pub verifiers: HashMap<String, Verifier>,
    pub boot_id: u32,
    /// The portal name of refusal fences (see [`crate::pipeline`]), random per process.
    pub fence_portal: String,
    /// TLS for clients, by the `listen` address of the listener that has it.
    pub tls: HashMap<String, crate::tls::ServerTls>,
    /// Places for plugin calls (`plugin_workers`).
    pub plugin_slots: tokio::sync::Semaphore,
    /// Recent cost of a hook call (see [`crate::session::HookCost`]): cheap calls run on the async
    /// worker, slow ones are moved off it.
    pub hook_cost: crate::session::HookCost,
    /// Statement facts by text (PostgreSQL's parser), for the hook context.
    pub facts: helios_plugin_facts::cache::FactsCache,
    pub shutdown: watch::Receiver<bool>,
    next_session: Arc<AtomicU64>,
    /// Client connections being served (bounded by `max_client_conn`), over every generation.
    pub clients: Arc<AtomicUsize>,
    standby_rr: AtomicUsize,
    /// Cancel keys of every session, over every generation (a reload keeps them).
    cancels: Arc<CancelMap>,
}

/// Cancel slots by the (pid, secret) the proxy gave each client.
type CancelMap = Mutex<HashMap<(i32, i32), Arc<CancelSlot>>>;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("nodes", &self.nodes).finish_non_exhaustive()
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // Without OS randomness, fall back to the clock: keys only need to be hard to guess remotely.
    if getrandom::fill(&mut b).is_err() {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        return t;
    }
    u32::from_be_bytes(b)
}

impl Shared {
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| &*n.name == name)
    }

    /// The next standby, round robin; the default node when there is none.
    pub fn pick_standby(&self) -> usize {
        let standbys: Vec<usize> =
            self.nodes.iter().enumerate().filter(|(_, n)| n.role == NodeRole::Standby).map(|(i, _)| i).collect();
        if standbys.is_empty() {
            return self.default_node;
        }
        standbys[self.standby_rr.fetch_add(1, Ordering::Relaxed) % standbys.len()]
    }

    /// A fresh (pid, secret) pair for a client's BackendKeyData.
    pub fn new_backend_key(&self) -> (i32, i32) {
        ((random_u32() & 0x3fff_ffff) as i32 | 1, random_u32() as i32)
    }

    pub fn register_cancel(&self, pid: i32, secret: i32) -> Arc<CancelSlot> {
        let slot = Arc::new(CancelSlot::default());
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).insert((pid, secret), slot.clone());
        slot
    }

    pub fn unregister_cancel(&self, key: (i32, i32)) {
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }

    /// Forwards a client's CancelRequest to the backend its session currently uses.
    pub async fn forward_cancel(&self, pid: i32, secret: i32) {
        let target = self.cancels.lock().unwrap_or_else(|p| p.into_inner()).get(&(pid, secret)).and_then(|s| s.get());
        match target {
            Some((addr, bpid, bsecret)) => {
                info!(%addr, "forwarding a cancel request");
                if let Err(e) = crate::upstream::send_cancel(addr, bpid, bsecret).await {
                    warn!(%addr, error = %e, "cancel request could not be delivered");
                }
            }
            None => debug!("cancel request for an unknown or idle session ignored"),
        }
    }
}

/// What a bound listener hands to its sessions.
#[derive(Debug, Clone)]
struct Listener {
    auth: ClientAuth,
    /// The configured `listen` address (the key of its TLS acceptor).
    listen: Arc<str>,
}

/// A bound proxy, ready to serve.
pub struct Proxy {
    current: Arc<RwLock<Arc<Shared>>>,
    listeners: Vec<(TcpListener, Listener)>,
    shutdown_tx: watch::Sender<bool>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("listeners", &self.local_addrs()).finish_non_exhaustive()
    }
}

impl Shared {
    /// The state for `config`; `prev` (on a reload) passes on what outlives a configuration: cancel
    /// keys, the client count, session ids and the boot id.
    fn build(
        config: ProxyConfig,
        hooks: Arc<dyn StatementHooks>,
        shutdown: watch::Receiver<bool>,
        prev: Option<&Shared>,
    ) -> Result<Shared, crate::error::ConfigError> {
        let origin = config.base_dir.join("proxy.toml").display().to_string();
        let mut tls = HashMap::new();
        for (i, l) in config.listeners.iter().enumerate() {
            if let (Some(cert), Some(key)) = (&l.tls_cert_file, &l.tls_key_file) {
                let (cert, key) = (config.base_dir.join(cert), config.base_dir.join(key));
                let field = format!("listeners[{i}].tls_cert_file");
                tls.insert(l.listen.clone(), crate::tls::acceptor(&cert, &key, &origin, &field)?);
            }
        }
        let mut nodes = Vec::new();
        for (i, n) in config.nodes.iter().enumerate() {
            let tls_connector = match n.tls {
                crate::config::UpstreamTls::Disable => None,
                _ => {
                    let ca = n.tls_ca_file.as_ref().map(|c| config.base_dir.join(c));
                    Some(crate::tls::connector(ca.as_deref(), &origin, &format!("nodes[{i}].tls_ca_file"))?)
                }
            };
            nodes.push(Node {
                name: Arc::from(n.name.as_str()),
                host: n.host.clone(),
                port: n.port,
                role: n.role,
                tls: n.tls,
                tls_connector,
            });
        }
        let default_name = config.default_node().name.clone();
        let default_node = nodes.iter().position(|n| *n.name == default_name).unwrap_or(0);
        let mut verifiers = HashMap::new();
        for u in &config.users {
            let v = match (&u.scram_verifier, &u.password) {
                (Some(v), _) => Verifier::parse(v).ok(),
                (None, Some(pw)) => Some(Verifier::from_password(pw)),
                (None, None) => None,
            };
            if let Some(v) = v {
                verifiers.insert(u.name.clone(), v);
            }
        }
        let pool = Pool::new(config.pool_limits());
        let plugin_slots = tokio::sync::Semaphore::new(config.plugin_workers);
        Ok(Shared {
            config,
            tls,
            nodes,
            default_node,
            pool,
            hooks,
            verifiers,
            boot_id: prev.map_or_else(random_u32, |p| p.boot_id),
            fence_portal: prev.map_or_else(|| crate::pipeline::fence_portal(random_u32()), |p| p.fence_portal.clone()),
            plugin_slots,
            hook_cost: crate::session::HookCost::default(),
            facts: helios_plugin_facts::cache::FactsCache::new(FACTS_CACHE_STATEMENTS),
            shutdown,
            next_session: prev.map_or_else(Default::default, |p| p.next_session.clone()),
            clients: prev.map_or_else(Default::default, |p| p.clients.clone()),
            standby_rr: AtomicUsize::new(0),
            cancels: prev.map_or_else(Default::default, |p| p.cancels.clone()),
        })
    }
}

/// What a reload changed that only a restart applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Listeners (`listen`, with their auth) added, removed or changed: the running ones stay.
    pub listeners_need_restart: Vec<String>,
}

/// Replaces a running proxy's configuration (nodes, users, pools, plugins, limits) atomically:
/// sessions that start afterwards use the new one, running sessions finish on the one they began
/// with. Listeners are bound once; a changed `[[listeners]]` is reported as needing a restart.
#[derive(Clone)]
pub struct Reloader {
    current: Arc<RwLock<Arc<Shared>>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// Installs `config` and `hooks` (already parsed, verified and loaded by the caller).
    /// Fails, changing nothing, when a TLS certificate or key cannot be loaded.
    pub fn reload(
        &self,
        config: ProxyConfig,
        hooks: Arc<dyn StatementHooks>,
    ) -> Result<ReloadReport, crate::error::ConfigError> {
        let old = self.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        let new = Arc::new(Shared::build(config, hooks, old.shutdown.clone(), Some(&old))?);
        let mut w = self.current.write().unwrap_or_else(|p| p.into_inner());
        let old = w.clone();
        let describe = |l: &crate::config::ListenerConfig| format!("{} (auth {:?})", l.listen, l.auth);
        let before: Vec<String> = old.config.listeners.iter().map(describe).collect();
        let after: Vec<String> = new.config.listeners.iter().map(describe).collect();
        let mut listeners_need_restart: Vec<String> =
            after.iter().chain(&before).filter(|l| !(before.contains(l) && after.contains(l))).cloned().collect();
        listeners_need_restart.dedup();
        *w = new;
        drop(w);
        // Idle connections of the old generation close now; checked-out ones when their session
        // ends (the old pool goes with the last session that holds it). The new pool reports to
        // the metrics from now on.
        old.pool.retire();
        old.pool.reap(std::time::Duration::ZERO);
        Ok(ReloadReport { listeners_need_restart })
    }
}

impl Proxy {
    /// Binds every listener of `config`. Plugins come in as `hooks`.
    pub async fn bind(config: ProxyConfig, hooks: Arc<dyn StatementHooks>) -> Result<Proxy, ProxyError> {
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let sock = TcpListener::bind(&l.listen)
                .await
                .map_err(|source| ProxyError::Bind { listen: l.listen.clone(), source })?;
            info!(listen = %sock.local_addr().map(|a| a.to_string()).unwrap_or_default(), auth = ?l.auth, "listening");
            listeners.push((sock, Listener { auth: l.auth, listen: Arc::from(l.listen.as_str()) }));
        }
        let (shutdown_tx, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared::build(config, hooks, shutdown, None)?);
        let current = Arc::new(RwLock::new(shared));
        Ok(Proxy { current, listeners, shutdown_tx })
    }

    /// A handle that replaces the configuration while the proxy serves (SIGHUP in the binary).
    pub fn reloader(&self) -> Reloader {
        Reloader { current: self.current.clone() }
    }

    fn shared(&self) -> Arc<Shared> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The bound addresses, in `[[listeners]]` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|(l, _)| l.local_addr().ok()).collect()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets running transactions finish
    /// (idle sessions get a FATAL 57P01 at their next pause) and returns when every session ended
    /// or `shutdown_timeout_ms` passed.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) {
        let (tx, mut rx) = mpsc::channel::<(TcpStream, SocketAddr, Listener)>(64);
        let mut acceptors = JoinSet::new();
        let reaper = self.reloader();
        for (l, auth) in std::mem::take(&mut self.listeners) {
            let tx = tx.clone();
            acceptors.spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, peer)) => {
                            if tx.send((s, peer, auth.clone())).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        drop(tx);
        acceptors.spawn(async move {
            loop {
                let shared = reaper.current.read().unwrap_or_else(|p| p.into_inner()).clone();
                let idle_timeout = shared.config.server_idle_timeout();
                let period =
                    (idle_timeout / 2).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(10));
                drop(shared);
                tokio::time::sleep(period).await;
                let shared = reaper.current.read().unwrap_or_else(|p| p.into_inner()).clone();
                let closed = shared.pool.reap(idle_timeout);
                if closed > 0 {
                    debug!(closed, "closed idle upstream connections");
                }
            }
        });
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some((s, peer, l)) = rx.recv() => {
                    let session = crate::session::run(self.shared(), s, peer, l.auth, l.listen);
                    sessions.spawn(async move {
                        let _open = crate::ops::SessionGauge::open();
                        session.await
                    });
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        }
        acceptors.abort_all();
        drop(rx);
        let _ = self.shutdown_tx.send(true);
        info!(sessions = sessions.len(), "shutting down: no new connections; draining sessions");
        let grace = self.shared().config.shutdown_timeout();
        let drained = tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(
                sessions = sessions.len(),
                grace_ms = grace.as_millis() as u64,
                "sessions still busy after the grace period; closing them"
            );
            sessions.abort_all();
            while sessions.join_next().await.is_some() {}
        }
        info!("shutdown complete");
    }
}
