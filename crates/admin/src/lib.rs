//! The admin side of a helios host: Prometheus metrics ([`Metrics`]), the introspection view of
//! loaded plugins ([`PluginView`]), and the admin listener that serves both and takes reload and
//! promote requests ([`AdminServer`]). helios-proxy and the MCP gateway share it.
//!
//! ```text
//! host call path ──CallEvent──▶ Metrics ◀── chain results, guard verdicts, proxy events
//!                                  │
//!  AdminServer: GET /metrics ──────┘   GET /plugins ──▶ AdminControl::plugins ──▶ [PluginView]
//!               POST /reload ──▶ AdminControl::reload   POST /plugins/{name}/promote
//! ```
//!
//! **Invariants:** a redacted config value never appears in any response; a write request without
//! the right bearer token is refused; a listener on a non-loopback address without a token never
//! starts; every metric family holds at most its cap of label sets.

pub mod introspect;
pub mod metrics;
pub mod server;
pub mod status;

pub use introspect::{PluginMeta, PluginView, REDACTED, ShadowView};
pub use metrics::{
    DEFAULT_METRIC_CARDINALITY_CAP, E_GUARD_METRIC_CARDINALITY_EXCEEDED, GuardOutcome, Metrics, pre_query_kind,
};
pub use server::{AdminConfig, AdminControl, AdminError, AdminServer, read_token};
