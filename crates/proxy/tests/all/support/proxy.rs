//! A helios-proxy running in-process (its own tokio runtime on a background thread) and a scripted
//! native implementation of the statement hooks.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use helios_plugin_schema::{PostQueryEnvelope, PreQueryResult, QueryContext, RouteResult};
use helios_proxy::{PreQueryDecision, Proxy, ProxyConfig, RouteDecision, StatementHooks};

/// A running proxy; shut down gracefully on drop.
pub struct TestProxy {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProxy").field("port", &self.port).finish()
    }
}

/// `proxy.toml` text for a proxy on a free port in front of `nodes` (name, port, role).
pub fn config_text(nodes: &[(&str, u16, &str)], extra: &str) -> String {
    let mut s = String::new();
    s.push_str(extra);
    s.push_str("\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n");
    for (name, port, role) in nodes {
        s.push_str(&format!(
            "\n[[nodes]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\nrole = \"{role}\"\n"
        ));
    }
    s
}

impl TestProxy {
    /// Starts a proxy from `toml` with `hooks`.
    pub fn start(toml: &str, hooks: Arc<dyn StatementHooks>) -> TestProxy {
        let config = ProxyConfig::from_toml(toml, "test-proxy.toml").expect("test config parses");
        Self::start_config(config, hooks)
    }

    pub fn start_config(config: ProxyConfig, hooks: Arc<dyn StatementHooks>) -> TestProxy {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let proxy = Proxy::bind(config, hooks).await.expect("proxy binds");
                port_tx.send(proxy.local_addrs()[0].port()).expect("send port");
                proxy
                    .serve(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let port = port_rx.recv().expect("proxy started");
        TestProxy { port, stop: Some(stop_tx), thread: Some(thread) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Asks for a graceful shutdown and waits until the proxy has stopped.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Native hooks driven by rules, recording what they saw. Matching is on the SQL text.
#[derive(Default)]
pub struct ScriptedHooks {
    /// (substring, reason): block statements containing the substring.
    pub block: Vec<(String, String)>,
    /// (substring, replacement SQL).
    pub rewrite: Vec<(String, String)>,
    /// (substring, backend bytes).
    pub cached: Vec<(String, Vec<u8>)>,
    /// (substring, node): route statements containing the substring to the node.
    pub route: Vec<(String, String)>,
    /// (substring, time): `pre_query` blocks its thread this long, as a plugin spinning to its
    /// deadline does.
    pub spin: Vec<(String, std::time::Duration)>,
    pub seen: Mutex<Vec<QueryContext>>,
    pub outcomes: Mutex<Vec<PostQueryEnvelope>>,
}

impl std::fmt::Debug for ScriptedHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedHooks").finish_non_exhaustive()
    }
}

impl ScriptedHooks {
    pub fn seen(&self) -> Vec<QueryContext> {
        self.seen.lock().unwrap().clone()
    }
    pub fn outcomes(&self) -> Vec<PostQueryEnvelope> {
        self.outcomes.lock().unwrap().clone()
    }
}

impl StatementHooks for ScriptedHooks {
    fn is_empty(&self) -> bool {
        false
    }

    fn pre_query(&self, ctx: &QueryContext) -> PreQueryDecision {
        self.seen.lock().unwrap().push(ctx.clone());
        let q = ctx.query.to_ascii_lowercase();
        let by = Some(Arc::from("scripted"));
        if let Some((_, d)) = self.spin.iter().find(|(s, _)| q.contains(&s.to_ascii_lowercase())) {
            std::thread::sleep(*d);
        }
        if let Some((_, reason)) = self.block.iter().find(|(s, _)| q.contains(&s.to_ascii_lowercase())) {
            return PreQueryDecision { result: PreQueryResult::Block { reason: reason.clone() }, decided_by: by };
        }
        if let Some((_, bytes)) = self.cached.iter().find(|(s, _)| q.contains(&s.to_ascii_lowercase())) {
            return PreQueryDecision { result: PreQueryResult::Cached { bytes: bytes.clone() }, decided_by: by };
        }
        if let Some((_, sql)) = self.rewrite.iter().find(|(s, _)| q.contains(&s.to_ascii_lowercase())) {
            return PreQueryDecision { result: PreQueryResult::Rewrite { sql: sql.clone() }, decided_by: by };
        }
        PreQueryDecision { result: PreQueryResult::Continue, decided_by: None }
    }

    fn route(&self, ctx: &QueryContext) -> RouteDecision {
        let q = ctx.query.to_ascii_lowercase();
        match self.route.iter().find(|(s, _)| q.contains(&s.to_ascii_lowercase())) {
            Some((_, node)) => RouteDecision {
                result: RouteResult::Node { target: node.clone() },
                decided_by: Some(Arc::from("scripted")),
            },
            None => RouteDecision { result: RouteResult::Default, decided_by: None },
        }
    }

    fn post_query(&self, env: &PostQueryEnvelope) {
        self.outcomes.lock().unwrap().push(env.clone());
    }
}
