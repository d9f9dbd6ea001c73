//! The tool-call corpus through the MCP gateway: one upstream MCP server per corpus `server_id`
//! (this program again, started with `--mcp-upstream`), the tool-denylist guard registered in a
//! `chio.yaml` as chio's page shows, and one MCP session per corpus agent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use helios_plugin_artefact::{keys, signing};
use helios_plugin_schema::GuardRequest;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleClient, RunningService, ServiceExt};
use rmcp::{ErrorData, RoleServer, ServerHandler};

/// `helios-demo --mcp-upstream SERVER_ID CORPUS`: serve the corpus tools of one server over stdio.
pub const UPSTREAM_FLAG: &str = "--mcp-upstream";

/// An upstream that answers every tool it lists with `ok: <server>/<tool>`.
#[derive(Debug, Clone)]
struct CorpusServer {
    id: String,
    tools: Arc<Vec<String>>,
}

impl ServerHandler for CorpusServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(self.id.clone(), "1.0.0"))
    }
    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = Arc::new(serde_json::Map::from_iter([("type".to_string(), "object".into())]));
        let tools = self.tools.iter().map(|t| Tool::new(t.clone(), format!("{} on {}", t, self.id), schema.clone()));
        Ok(ListToolsResult::with_all_items(tools.collect()))
    }
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("ok: {}/{}", self.id, request.name))]).into())
    }
}

/// Runs as one upstream server (stdio) until the gateway closes it.
pub fn serve_upstream(id: &str, corpus: &Path) -> Result<()> {
    let calls = crate::corpus::tool_calls(corpus)?;
    let tools: BTreeSet<String> =
        calls.iter().filter(|c| c.server_id == id && !c.tool_name.is_empty()).map(|c| c.tool_name.clone()).collect();
    let server = CorpusServer { id: id.to_string(), tools: Arc::new(tools.into_iter().collect()) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let running = server.serve(rmcp::transport::stdio()).await?;
        running.waiting().await?;
        anyhow::Ok(())
    })
}

/// Writes the guard (signed by a throw-away key its manifest pins) and `chio.yaml`; returns its path.
fn write_config(work: &Path, corpus: &Path, calls: &[GuardRequest]) -> Result<std::path::PathBuf> {
    let wasm_src = helios_plugin_test_support::guest_path("tool-denylist");
    let wasm = std::fs::read(&wasm_src)
        .with_context(|| format!("reading {} (run `cargo xtask build-examples`)", wasm_src.display()))?;
    let key = keys::generate_signing_key()?;
    let dir = work.join("guards/tool-denylist");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("tool_denylist.wasm"), &wasm)?;
    let sidecar = signing::sign_module(&key, &wasm, crate::sign::GUARD_NAME, "1.0.0");
    std::fs::write(dir.join("tool_denylist.wasm.sig"), signing::sidecar_bytes(&sidecar))?;
    std::fs::write(
        dir.join("guard-manifest.yaml"),
        format!(
            "name: {}\nversion: \"1.0.0\"\nabi_version: \"1\"\nwasm_path: tool_denylist.wasm\nwasm_sha256: \"{}\"\nsigner_public_key: \"{}\"\n",
            crate::sign::GUARD_NAME,
            signing::sha256_hex(&wasm),
            keys::public_key_hex(&key.verifying_key())
        ),
    )?;
    let exe = std::env::current_exe()?;
    let servers: BTreeSet<&str> = calls.iter().map(|c| c.server_id.as_str()).collect();
    let mut scopes: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in calls {
        scopes.entry(&c.agent_id).or_default().extend(c.scopes.iter().map(String::as_str));
    }
    let mut text = format!(
        "wasm_guards:\n  - name: {}\n    path: {:?}\n    priority: 1\n    config:\n      denylist: {:?}\nupstreams:\n",
        crate::sign::GUARD_NAME,
        dir.join("tool_denylist.wasm").display().to_string(),
        crate::sign::GUARD_DENYLIST
    );
    for s in servers {
        text.push_str(&format!(
            "  - id: {s}\n    command: {:?}\n    args: [{UPSTREAM_FLAG}, {s}, {:?}]\n",
            exe.display().to_string(),
            corpus.display().to_string()
        ));
    }
    text.push_str(&format!(
        "gateway:\n  reload_poll_ms: 0\n  decision_log: {:?}\n  agent_scopes:\n",
        "decisions.jsonl"
    ));
    for (agent, s) in scopes {
        text.push_str(&format!("    {agent}: {:?}\n", s.into_iter().collect::<Vec<_>>()));
    }
    let path = work.join("chio.yaml");
    std::fs::write(&path, text)?;
    Ok(path)
}

type Agent = RunningService<RoleClient, ClientConfig>;

/// Sends every corpus call through the gateway as its agent and prints what came back.
pub fn tool_calls(work: &Path, corpus: &Path, calls: &[GuardRequest]) -> Result<()> {
    let config = write_config(work, corpus, calls)?;
    println!("  config   {}", config.display());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let built = helios_mcp_gateway::build(&config, Vec::new()).await?;
        let mut agents: BTreeMap<String, (Agent, BTreeSet<String>)> = BTreeMap::new();
        let (mut allowed, mut denied, mut failed) = (0, 0, 0);
        let mut took = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            if !agents.contains_key(&call.agent_id) {
                // One MCP session per agent over an in-process pipe; the client's name is its identity.
                let (client_io, server_io) = tokio::io::duplex(1 << 20);
                let gateway = built.gateway.clone();
                tokio::spawn(async move {
                    if let Ok(s) = gateway.serve(server_io).await {
                        let _ = s.waiting().await;
                    }
                });
                let info = ClientConfig::new(ClientCapabilities::default(), Implementation::new(&call.agent_id, "1.0"));
                let agent = info.serve(client_io).await?;
                let names = agent.list_all_tools().await?.into_iter().map(|t| t.name.to_string()).collect();
                agents.insert(call.agent_id.clone(), (agent, names));
            }
            let (agent, names) = &agents[&call.agent_id];
            let prefixed = format!("{}{}{}", call.server_id, helios_mcp_gateway::server::PREFIX_SEPARATOR, call.tool_name);
            let name = if names.contains(&prefixed) { prefixed } else { call.tool_name.clone() };
            let mut params = CallToolRequestParams::new(name);
            params.arguments = call.arguments.as_object().cloned();
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(30), agent.call_tool(params)).await;
            took.push(t.elapsed());
            let shown = match r {
                Ok(Ok(r)) if r.is_error == Some(true) => {
                    denied += 1;
                    format!("DENY  {}", crate::report::clip(&text(&r), 60))
                }
                Ok(Ok(r)) => {
                    allowed += 1;
                    format!("allow → {}", crate::report::clip(&text(&r), 40))
                }
                Ok(Err(e)) => {
                    failed += 1;
                    format!("error {}", crate::report::clip(&e.to_string(), 60))
                }
                Err(_) => {
                    failed += 1;
                    "error: no answer within 30 s".to_string()
                }
            };
            println!(
                "  {:>3} {:<22} {:<16} {}",
                i + 1,
                crate::report::clip(&format!("{:?}", call.tool_name), 22),
                crate::report::clip(&call.agent_id, 16),
                shown
            );
        }
        took.sort();
        let p50 = took.get(took.len() / 2).copied().unwrap_or_default();
        println!(
            "  → {allowed} allowed (forwarded to their server), {denied} denied, {failed} refused by MCP; median round trip {} µs",
            p50.as_micros()
        );
        for (_, (agent, _)) in agents {
            let _ = agent.cancel().await;
        }
        built.gateway.shutdown().await;
        anyhow::Ok(())
    })
}

fn text(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("")
}
