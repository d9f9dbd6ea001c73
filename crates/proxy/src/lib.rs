//! helios-proxy: a PostgreSQL wire-protocol (v3) proxy that runs helios-plugin hooks on every
//! statement, simple or extended protocol alike.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use helios_proxy::{Proxy, ProxyConfig, plugins};
//! let config = ProxyConfig::load("proxy.toml".as_ref())?;
//! let hooks = plugins::hooks_from_config(&config, "proxy.toml")?;
//! let proxy = Proxy::bind(config, hooks).await?;
//! proxy.serve(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! A client connects and authenticates to the proxy (trust or SCRAM-SHA-256); the proxy opens (or
//! reuses, per pool mode) authenticated connections to the nodes. Each statement (a simple Query or
//! an extended-protocol Parse) goes through `pre_query` (continue, rewrite, block with SQLSTATE
//! 42000, or answer from cache), then `route` (outside a transaction), and its outcome goes to
//! `post_query`.
//!
//! **Invariants:** responses reach the client in the order of its messages; a transaction never
//! straddles nodes; a failure of a plugin, a node or the configuration reaches the client as an
//! ErrorResponse, and a protocol violation closes only the offending connection. The proxy never
//! parses SQL beyond recognising `SET helios.*`: plugins do.

pub mod attrs;
pub mod codec;
pub mod config;
pub mod error;
pub mod hooks;
pub mod ops;
pub mod pipeline;
pub mod plugins;
pub mod pool;
pub mod scram;
pub mod server;
pub mod session;
pub mod sqlstate;
pub mod startup;
pub mod tls;
pub mod upstream;

pub use config::{ClientAuth, NodeRole, PoolMode, ProxyConfig};
pub use error::{ConfigError, ProtocolError, ProxyError, UpstreamError};
pub use hooks::{NoHooks, PreQueryDecision, RouteDecision, StatementHooks};
pub use server::{Proxy, ReloadReport, Reloader};
