//! What `/plugins` shows of one loaded plugin: identity (name, version, digest, signer), hooks as
//! (protocol, event, phase), limits, counters, and its config with every `redact_keys` value
//! replaced by `"<redacted>"` (yorishiro's rule) — the secret never leaves the process.

use std::collections::BTreeMap;

use helios_plugin_host::Plugin;
use helios_plugin_host::schema::{Hook, Phase, Protocol};
use serde::{Deserialize, Serialize};

/// What introspection shows in place of a redacted value.
pub const REDACTED: &str = "<redacted>";

/// What the host knows about a plugin beyond the loaded module.
#[derive(Debug, Clone, Default)]
pub struct PluginMeta {
    pub version: Option<String>,
    /// Who signed it (the trusted key's label), or `None` for an unsigned plugin.
    pub signer: Option<String>,
    /// Config keys whose values are never shown.
    pub redact_keys: Vec<String>,
    /// The shadow candidate's state, if the entry has one.
    pub shadow: Option<ShadowView>,
}

/// One hook's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookView {
    pub protocol: String,
    pub event: String,
    pub phase: String,
}

/// Per-call limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsView {
    pub fuel: Option<u64>,
    pub deadline_ms: u64,
    pub max_memory_bytes: u64,
    pub max_module_bytes: u64,
}

/// Counters since load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersView {
    pub calls: u64,
    pub failures: u64,
    pub instances_created: u64,
    pub instances_recycled: u64,
}

/// A shadow candidate running beside the live version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowView {
    pub digest: String,
    pub compared: u64,
    pub divergences: u64,
    /// `agreed / compared`; `null` before the first comparison.
    pub agreement_rate: Option<f64>,
}

/// One entry of `/plugins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginView {
    pub name: String,
    pub version: Option<String>,
    /// `sha256:<hex>` of the module, or `null` for a plugin of another backend.
    pub digest: Option<String>,
    pub signer: Option<String>,
    /// `guard` (chio's `evaluate`) or `hooks`.
    pub kind: String,
    pub hooks: Vec<HookView>,
    pub limits: LimitsView,
    pub counters: CountersView,
    pub config: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowView>,
    /// The plugin's last reload attempt, where the host records one (helios-proxy): `outcome`
    /// (`applied`, `canary_failed`, `rolled_back`) with `from`, `to` and, for a failure, `incident`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<serde_json::Value>,
    /// While a reloaded module is watched: `previous` (the digest a rollback restores) and `errors`
    /// counted in the watchdog's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<serde_json::Value>,
}

impl PluginView {
    /// The view of `plugin`; values of `meta.redact_keys` are replaced by [`REDACTED`].
    pub fn of(plugin: &Plugin, meta: &PluginMeta) -> PluginView {
        let limits = plugin.limits();
        let stats = plugin.stats();
        PluginView {
            name: plugin.name().to_string(),
            version: meta.version.clone(),
            digest: plugin.module_info().map(|i| format!("sha256:{}", i.sha256)),
            signer: meta.signer.clone(),
            kind: if plugin.is_guard() { "guard" } else { "hooks" }.into(),
            hooks: plugin.hooks().iter().map(|h| hook_view(*h)).collect(),
            limits: LimitsView {
                fuel: limits.fuel,
                deadline_ms: limits.deadline.as_millis() as u64,
                max_memory_bytes: limits.max_memory_bytes,
                max_module_bytes: limits.max_module_bytes,
            },
            counters: CountersView {
                calls: stats.calls,
                failures: stats.failures,
                instances_created: stats.instances_created,
                instances_recycled: stats.instances_recycled,
            },
            config: redact(plugin.config(), &meta.redact_keys),
            shadow: meta.shadow.clone(),
            last_reload: None,
            watchdog: None,
        }
    }
}

/// `config` with the value of every key in `redact_keys` replaced by [`REDACTED`].
pub fn redact(config: &BTreeMap<String, String>, redact_keys: &[String]) -> BTreeMap<String, String> {
    config
        .iter()
        .map(|(k, v)| {
            let shown = if redact_keys.iter().any(|r| r == k) { REDACTED.to_string() } else { v.clone() };
            (k.clone(), shown)
        })
        .collect()
}

/// A hook's (protocol, event, phase) as yorishiro names them.
pub fn hook_view(hook: Hook) -> HookView {
    let id = hook.id();
    let protocol = match id.protocol {
        Protocol::Postgres => "postgres",
        Protocol::ToolCall => "tool_call",
        Protocol::Custom => "custom",
        Protocol::Http => "http",
        Protocol::Connection => "connection",
    };
    let phase = match id.phase {
        Phase::PrePipeline => "pre_pipeline",
        Phase::PostPipeline => "post_pipeline",
        Phase::None => "none",
    };
    HookView { protocol: protocol.into(), event: id.event.into(), phase: phase.into() }
}
