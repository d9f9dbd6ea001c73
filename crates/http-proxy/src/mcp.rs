//! `plugin_introspect`: a read-only MCP tool listing the loaded plugins, their backend and their
//! registered (protocol, event, phase) tuples. `redact_keys` values are never shown.

use std::sync::Arc;

use rmcp::{tool, tool_router};
use serde_json::{Value as Json, json};

use crate::chain::Chain;

/// The introspection document for a chain (what the tool returns, as JSON).
pub fn introspect(chain: &Chain) -> Json {
    let plugins: Vec<Json> = chain
        .members()
        .iter()
        .enumerate()
        .map(|(order, m)| {
            let e = m.entry();
            let stats = m.stats();
            json!({
                "order": order,
                "name": m.plugin().name(),
                "backend": m.backend(),
                "path": e.path.display().to_string(),
                "on_error": e.on_error,
                "max_steps": e.effective_max_steps(),
                "registrations": m.points(),
                "vars": e.redacted_vars(),
                "redact_keys": e.redact_keys,
                "calls": stats.calls,
                "errors": stats.failures,
            })
        })
        .collect();
    json!({ "plugins": plugins })
}

/// The MCP server: one read-only tool.
#[derive(Debug, Clone)]
pub struct Introspect {
    chain: Arc<Chain>,
}

impl Introspect {
    /// A server over `chain`.
    pub fn new(chain: Arc<Chain>) -> Introspect {
        Introspect { chain }
    }
}

#[tool_router(server_handler)]
impl Introspect {
    /// Lists loaded plugins in chain order with their backend, registrations and (redacted) vars.
    #[tool(
        name = "plugin_introspect",
        description = "Read-only: the loaded plugins in chain order, each with its backend (starlark, wasm, native), path, on_error, max_steps, registered (protocol, event, phase) tuples, vars (redact_keys shown as \"<redacted>\") and call/error counters.",
        annotations(read_only_hint = true)
    )]
    fn plugin_introspect(&self) -> String {
        serde_json::to_string_pretty(&introspect(&self.chain)).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Serves the tool over stdio until the client closes it.
pub async fn serve_stdio(chain: Arc<Chain>) -> Result<(), String> {
    use rmcp::ServiceExt;
    let running =
        Introspect::new(chain).serve(rmcp::transport::stdio()).await.map_err(|e| format!("mcp stdio: {e}"))?;
    running.waiting().await.map_err(|e| format!("mcp stdio: {e}"))?;
    Ok(())
}

/// Serves the tool over streamable HTTP (POST `/mcp`) on `listener`.
pub async fn serve_http(chain: Arc<Chain>, listener: tokio::net::TcpListener) {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    let service = StreamableHttpService::new(
        move || Ok(Introspect::new(chain.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let svc = hyper_util::service::TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(io, svc)
                .await;
        });
    }
}
