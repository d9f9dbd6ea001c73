//! An HTTP/1.1 and HTTP/2 proxy (reverse or forward) whose hook chain runs yorishiro-style
//! Starlark scripts and helios WASM plugins side by side, in config order.
//!
//! Hooks: `http` `on_request` and `on_response` in `pre_pipeline` and `post_pipeline`, and
//! `connection` `on_connect` / `on_disconnect`. Actions: continue, respond, drop. Bodies up to the
//! configured cap are given to hooks and may be rewritten; larger ones stream through unchanged
//! and the hook sees `body_streamed = True`.

pub mod body;
pub mod chain;
pub mod config;
pub mod mcp;
pub mod proxy;
pub mod wasm;

use std::net::SocketAddr;
use std::sync::Arc;

pub use chain::{Chain, Member, Outcome};
pub use config::{Config, Mode};
use helios_plugin_starlark::{HostHooks, Services, SqliteStore};
pub use proxy::Host;

/// Builds the chain a config describes, in order: `.wasm` entries verified (signature, blocklist)
/// and loaded as wasm plugins, every other path as a Starlark script; both become plugins of one
/// host runtime. Every failure names the plugin.
pub fn build_chain(config: &Config, services: &Services) -> Result<Chain, String> {
    let runtime = helios_plugin_host::Runtime::new(helios_plugin_host::RuntimeConfig::default())
        .map_err(|e| format!("cannot start the plugin runtime: {e}"))?;
    let trust = wasm::Trust::load(config)?;
    let mut chain = Chain::new();
    for entry in &config.plugins {
        let member = if entry.is_wasm() {
            wasm::load(&runtime, &trust, entry)?
        } else {
            Member::script(&runtime, entry, services)?
        };
        chain.push(member);
    }
    Ok(chain)
}

/// The services for a config: the HTTP host's hook list and the SQLite store if configured.
pub fn services(config: &Config) -> Result<Services, String> {
    let mut s = Services::new(HostHooks::http_proxy());
    if let Some(path) = &config.store_path {
        s.store = Some(Arc::new(SqliteStore::open(path).map_err(|e| e.to_string())?));
    }
    Ok(s)
}

/// A started proxy.
#[derive(Debug)]
pub struct Running {
    /// The proxy's address.
    pub addr: SocketAddr,
    /// The MCP endpoint's address, if configured.
    pub mcp_addr: Option<SocketAddr>,
    /// The chain it runs.
    pub chain: Arc<Chain>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting.
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Binds the listeners and starts serving `chain`.
pub async fn start(config: Config, chain: Arc<Chain>) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let mut tasks = Vec::new();
    let mut mcp_addr = None;
    if let Some(m) = config.mcp_listen {
        let l = tokio::net::TcpListener::bind(m).await?;
        mcp_addr = Some(l.local_addr()?);
        tasks.push(tokio::spawn(mcp::serve_http(chain.clone(), l)));
    }
    let host = Arc::new(Host::new(config, chain.clone()));
    tasks.push(tokio::spawn(host.serve(listener)));
    Ok(Running { addr, mcp_addr, chain, tasks })
}
