//! One hook chain for the HTTP host: plugins of any backend, in config order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use helios_plugin_starlark::{HookContext, HookPoint, OnError, Phase, PluginEntry, ScriptPlugin, Verdict};
use serde_json::Value as Json;

/// A plugin the HTTP host can call: a Starlark script, a WASM module or native code.
pub trait HttpPlugin: Send + Sync + std::fmt::Debug {
    /// The plugin's name.
    fn name(&self) -> &str;
    /// `starlark`, `wasm` or `native`.
    fn backend(&self) -> &'static str;
    /// The config entry (path, vars, redact_keys...).
    fn entry(&self) -> &PluginEntry;
    /// The hook points it registered, in registration order (index = registration).
    fn points(&self) -> Vec<HookPoint>;
    /// Runs registration `index`; `msg` is mutated in place.
    fn call(&self, index: usize, msg: &mut Json, ctx: &HookContext) -> Result<Verdict, String>;
}

impl HttpPlugin for ScriptPlugin {
    fn name(&self) -> &str {
        ScriptPlugin::name(self)
    }
    fn backend(&self) -> &'static str {
        "starlark"
    }
    fn entry(&self) -> &PluginEntry {
        ScriptPlugin::entry(self)
    }
    fn points(&self) -> Vec<HookPoint> {
        self.registrations().iter().map(|r| r.point.clone()).collect()
    }
    fn call(&self, index: usize, msg: &mut Json, ctx: &HookContext) -> Result<Verdict, String> {
        ScriptPlugin::call(self, index, msg, ctx).map_err(|e| e.to_string())
    }
}

/// Per-plugin counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug)]
struct Member {
    plugin: Arc<dyn HttpPlugin>,
    points: Vec<HookPoint>,
    counters: Counters,
}

/// What firing a hook point through the chain decided.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Every hook continued (some may have failed and been skipped).
    Continue,
    /// A hook dropped the message.
    Drop { plugin: String },
    /// A hook answered.
    Respond { plugin: String, response: helios_plugin_starlark::Respond },
    /// A hook of an `on_error = "abort"` plugin failed.
    Abort { plugin: String, error: String },
}

/// The plugins in config order; each fires its registrations in `register_hook` order.
#[derive(Debug, Default)]
pub struct Chain {
    members: Vec<Member>,
}

/// The actions an event allows; anything else is treated as continue with a warning.
fn allows(point: &HookPoint, verdict: &Verdict) -> bool {
    matches!(
        (point.protocol.as_str(), point.event.as_str(), verdict),
        (_, _, Verdict::Continue) | ("http", _, _) | ("connection", "on_connect", Verdict::Drop)
    )
}

impl Chain {
    /// An empty chain.
    pub fn new() -> Chain {
        Chain::default()
    }

    /// Appends a plugin (config order).
    pub fn push(&mut self, plugin: Arc<dyn HttpPlugin>) {
        let points = plugin.points();
        self.members.push(Member { plugin, points, counters: Counters::default() });
    }

    /// The plugins, in order.
    pub fn plugins(&self) -> impl Iterator<Item = (&Arc<dyn HttpPlugin>, &Counters)> {
        self.members.iter().map(|m| (&m.plugin, &m.counters))
    }

    /// Number of plugins.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the chain is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether any plugin registered (protocol, event, phase).
    pub fn wants(&self, protocol: &str, event: &str, phase: Phase) -> bool {
        self.members
            .iter()
            .any(|m| m.points.iter().any(|p| p.protocol == protocol && p.event == event && p.phase == phase))
    }

    /// Fires (protocol, event, phase) through every plugin in order. A plugin's changes to `msg`
    /// are what the next one sees. Drop and respond stop the chain; a failure stops it only for
    /// an `abort` plugin, and is logged and counted either way.
    pub fn fire(&self, protocol: &str, event: &str, phase: Phase, msg: &mut Json, ctx: &HookContext) -> Outcome {
        for m in &self.members {
            for (i, p) in m.points.iter().enumerate() {
                if p.protocol != protocol || p.event != event || p.phase != phase {
                    continue;
                }
                m.counters.calls.fetch_add(1, Ordering::Relaxed);
                match m.plugin.call(i, msg, ctx) {
                    Ok(v) if !allows(p, &v) => {
                        tracing::warn!(plugin = m.plugin.name(), hook = %p, "action {v:?} is not allowed for this event; treated as continue");
                    }
                    Ok(Verdict::Continue) => {}
                    Ok(Verdict::Drop) => return Outcome::Drop { plugin: m.plugin.name().to_string() },
                    Ok(Verdict::Respond(response)) => {
                        return Outcome::Respond { plugin: m.plugin.name().to_string(), response };
                    }
                    Err(error) => {
                        // Backends write `msg` back only when a hook succeeds, so a failed
                        // hook's half-done mutations are never passed on.
                        m.counters.errors.fetch_add(1, Ordering::Relaxed);
                        match m.plugin.entry().on_error {
                            OnError::Skip => {
                                tracing::warn!(plugin = m.plugin.name(), hook = %p, "hook failed, skipped: {error}")
                            }
                            OnError::Abort => {
                                tracing::error!(plugin = m.plugin.name(), hook = %p, "hook failed, chain aborted: {error}");
                                return Outcome::Abort { plugin: m.plugin.name().to_string(), error };
                            }
                        }
                    }
                }
            }
        }
        Outcome::Continue
    }
}
