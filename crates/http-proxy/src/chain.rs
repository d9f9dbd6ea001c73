//! One hook chain for the HTTP host: host plugins of any backend (a Starlark script through
//! [`ScriptBackend`], a wasm module, native code through [`NativeBackend`]) in config order, run
//! by the host's [`helios_plugin_host::Chain`] — one failure policy, one set of counters.
//!
//! What this module adds is what the host does not know: each plugin's yorishiro config entry
//! (for `plugin_introspect`), its backend's name and its registered (protocol, event, phase)
//! tuples.

use std::any::Any;
use std::sync::Arc;

use helios_plugin_host::schema::Hook;
use helios_plugin_host::schema::http::HttpHookInput;
use helios_plugin_host::schema::{GuardVerdict, abi};
use helios_plugin_host::{
    Backend, BackendInstance, FailureKind, HttpOutcome, Plugin, PluginConfig, PluginContext, PluginStats, Runtime,
};
use helios_plugin_starlark::{
    HookContext, HookPoint, PluginEntry, Respond, ScriptBackend, ScriptPlugin, Services, Verdict, serve_http_hook,
};
use serde_json::Value as Json;

/// One plugin of the chain: the host's plugin and what the HTTP host knows about it.
#[derive(Debug, Clone)]
pub struct Member {
    plugin: Arc<Plugin>,
    entry: PluginEntry,
    backend: &'static str,
    points: Vec<HookPoint>,
}

impl Member {
    /// A Starlark script: its top level runs here under its budget, then it is loaded into
    /// `runtime` as a plugin of the script backend.
    pub fn script(runtime: &Runtime, entry: &PluginEntry, services: &Services) -> Result<Member, String> {
        let script = Arc::new(ScriptPlugin::load(entry, services).map_err(|e| e.to_string())?);
        let points = script.registrations().iter().map(|r| r.point.clone()).collect();
        let backend = ScriptBackend::new(script).map_err(|e| e.to_string())?;
        let cfg = backend.plugin_config();
        let plugin = runtime.load_backend(Box::new(backend), cfg).map_err(|e| e.to_string())?;
        Ok(Member { plugin, entry: entry.clone(), backend: "starlark", points })
    }

    /// A plugin already loaded into the host (a wasm module; see [`crate::wasm`]). Its
    /// registrations are the `http_*`/`connection_*` hooks it serves, in catalogue order.
    pub fn loaded(plugin: Arc<Plugin>, entry: PluginEntry, backend: &'static str) -> Result<Member, String> {
        let points: Vec<HookPoint> = plugin.hooks().iter().filter_map(|&h| point_of(h)).collect();
        if points.is_empty() {
            return Err(format!(
                "plugin \"{}\": {} serves no HTTP or connection hook (http_on_request, http_on_response, ...)",
                plugin.name(),
                entry.path.display()
            ));
        }
        Ok(Member { plugin, entry, backend, points })
    }

    /// Native code serving `hooks` with `f` (benchmarks' baseline; embedders' own hooks).
    pub fn native(
        runtime: &Runtime,
        name: &str,
        hooks: &[Hook],
        f: impl Fn(Hook, &mut Json, &HookContext) -> Verdict + Send + Sync + 'static,
    ) -> Result<Member, String> {
        let backend = NativeBackend { hooks: hooks.to_vec(), f: Arc::new(f) };
        let plugin = runtime.load_backend(Box::new(backend), PluginConfig::new(name)).map_err(|e| e.to_string())?;
        Member::loaded(plugin, PluginEntry { name: Some(name.into()), ..PluginEntry::new(name) }, "native")
    }

    /// The host's plugin (name, policy, counters).
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
    /// The config entry (path, vars, redact_keys...).
    pub fn entry(&self) -> &PluginEntry {
        &self.entry
    }
    /// `starlark`, `wasm` or `native`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }
    /// Registered (protocol, event, phase) tuples, in registration order.
    pub fn points(&self) -> &[HookPoint] {
        &self.points
    }
    /// Calls and failures since load (the host's counters).
    pub fn stats(&self) -> PluginStats {
        self.plugin.stats()
    }
}

fn point_of(hook: Hook) -> Option<HookPoint> {
    let id = hook.id();
    let protocol = match id.protocol {
        helios_plugin_host::schema::Protocol::Http => "http",
        helios_plugin_host::schema::Protocol::Connection => "connection",
        _ => return None,
    };
    Some(HookPoint::new(protocol, id.event, id.phase))
}

/// What firing a hook point through the chain decided.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Every hook continued (some may have failed and been skipped).
    Continue,
    /// A hook dropped the message.
    Drop { plugin: String },
    /// A hook answered.
    Respond { plugin: String, response: Respond },
    /// A hook of an `on_error = "abort"` plugin failed.
    Abort { plugin: String, error: String },
}

/// The plugins in config order; a script fires its registrations in `register_hook` order.
#[derive(Debug, Default)]
pub struct Chain {
    members: Vec<Member>,
    host: helios_plugin_host::Chain,
}

impl Chain {
    /// An empty chain.
    pub fn new() -> Chain {
        Chain::default()
    }

    /// Appends a plugin (config order). Every member has the host's default priority, so the
    /// host's chain keeps this order.
    pub fn push(&mut self, member: Member) {
        self.members.push(member);
        self.host = helios_plugin_host::Chain::new(self.members.iter().map(|m| m.plugin.clone()).collect());
    }

    /// The plugins, in order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The host's chain underneath.
    pub fn host_chain(&self) -> &helios_plugin_host::Chain {
        &self.host
    }

    /// Number of plugins.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the chain is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether any plugin serves (protocol, event, phase).
    pub fn wants(&self, protocol: &str, event: &str, phase: helios_plugin_starlark::Phase) -> bool {
        Hook::from_identity(protocol, event, phase).is_some_and(|h| self.host.plugins().iter().any(|p| p.serves(h)))
    }

    /// Fires (protocol, event, phase) through every plugin in order. A plugin's changes to `msg`
    /// are what the next one sees. Drop and respond stop the chain; a failure stops it only for
    /// an `abort` plugin, and is logged and counted either way.
    pub fn fire(
        &self,
        protocol: &str,
        event: &str,
        phase: helios_plugin_starlark::Phase,
        msg: &mut Json,
        ctx: &HookContext,
    ) -> Outcome {
        let Some(hook) = Hook::from_identity(protocol, event, phase) else { return Outcome::Continue };
        let mut input = HttpHookInput { msg: std::mem::take(msg), client: ctx.client.clone(), conn_id: ctx.conn_id };
        let outcome = self.host.http(hook, &mut input, ctx);
        *msg = input.msg;
        match outcome {
            HttpOutcome::Continue => Outcome::Continue,
            HttpOutcome::Drop { plugin } => Outcome::Drop { plugin: plugin.to_string() },
            HttpOutcome::Respond { plugin, response } => Outcome::Respond {
                plugin: plugin.to_string(),
                response: Respond {
                    status: response.status,
                    headers: response.headers.into_iter().collect(),
                    body: response.body,
                },
            },
            HttpOutcome::Abort { error } => {
                Outcome::Abort { plugin: error.plugin.to_string(), error: error.to_string() }
            }
        }
    }
}

type NativeFn = dyn Fn(Hook, &mut Json, &HookContext) -> Verdict + Send + Sync;

/// Native Rust code as a host backend: it speaks the same JSON wire as a wasm guest or a script.
struct NativeBackend {
    hooks: Vec<Hook>,
    f: Arc<NativeFn>,
}

impl std::fmt::Debug for NativeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeBackend").field("hooks", &self.hooks).finish_non_exhaustive()
    }
}

impl Backend for NativeBackend {
    fn hooks(&self) -> &[Hook] {
        &self.hooks
    }
    fn is_guard(&self) -> bool {
        false
    }
    fn instantiate(&self, _ctx: &Arc<PluginContext>) -> Result<Box<dyn BackendInstance>, FailureKind> {
        Ok(Box::new(NativeInstance { f: self.f.clone() }))
    }
}

struct NativeInstance {
    f: Arc<NativeFn>,
}

impl BackendInstance for NativeInstance {
    fn arm(&mut self) {}
    fn call_hook(
        &mut self,
        hook: Hook,
        input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), FailureKind> {
        self.call_hook_with_host(hook, input, &(), out)
    }
    fn call_hook_with_host(
        &mut self,
        hook: Hook,
        input: &[u8],
        host: &dyn Any,
        out: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), FailureKind> {
        serve_http_hook(hook, input, host, out, |msg, ctx| Ok((self.f)(hook, msg, ctx)))
    }
    fn evaluate(&mut self, _request: &[u8]) -> Result<GuardVerdict, FailureKind> {
        Err(FailureKind::NotServed { export: abi::EVALUATE.into() })
    }
    fn memory_bytes(&self) -> u64 {
        0
    }
    fn dropped_logs(&self) -> u32 {
        0
    }
}

#[cfg(test)]
mod tests {
    use helios_plugin_host::RuntimeConfig;
    use helios_plugin_starlark::{HostHooks, Phase};
    use serde_json::json;

    use super::*;

    /// A script that marks the request, then takes `action`.
    fn script(dir: &std::path::Path, action: &str) -> PluginEntry {
        let path = dir.join(format!("{}.star", action.replace(['.', '(', ')', '=', ',', ' ', '"'], "_")));
        let source = format!(
            "def h(msg, ctx):\n    msg[\"headers\"][\"x-seen\"] = \"yes\"\n    return {action}\nregister_hook(\"http\", \"on_request\", h)\n"
        );
        std::fs::write(&path, source).unwrap();
        PluginEntry::new(path)
    }

    /// The same hook written natively and as a script gives the same outcome and leaves the same
    /// message, whatever it decides (the one conversion both backends share).
    #[test]
    fn a_native_hook_and_a_script_answer_alike_for_every_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let services = Services::new(HostHooks::http_proxy());
        let respond =
            Respond { status: 403, headers: vec![("x-blocked-by".into(), "policy".into())], body: "blocked\n".into() };
        let cases = [
            ("None", Verdict::Continue, "Continue"),
            ("action.DROP", Verdict::Drop, "drop"),
            (
                "action.respond(status = 403, headers = {\"x-blocked-by\": \"policy\"}, body = \"blocked\\n\")",
                Verdict::Respond(respond),
                "respond Respond { status: 403",
            ),
        ];
        for (script_action, native_verdict, expected) in cases {
            let native = Member::native(&rt, "native", &[Hook::HttpRequest], move |_, msg, _| {
                msg["headers"]["x-seen"] = json!("yes");
                native_verdict.clone()
            })
            .unwrap();
            let scripted = Member::script(&rt, &script(dir.path(), script_action), &services).unwrap();
            let mut answers = Vec::new();
            for member in [native, scripted] {
                let mut chain = Chain::new();
                chain.push(member);
                let mut msg = json!({"method": "GET", "path": "/admin", "headers": {}});
                let outcome = chain.fire("http", "on_request", Phase::PrePipeline, &mut msg, &HookContext::default());
                assert_eq!(msg["headers"]["x-seen"], "yes", "{script_action}: the hook's change is kept");
                let outcome = match outcome {
                    Outcome::Drop { .. } => "drop".to_string(),
                    Outcome::Respond { response, .. } => format!("respond {response:?}"),
                    other => format!("{other:?}"),
                };
                answers.push((outcome, msg));
            }
            assert!(answers[0].0.starts_with(expected), "{script_action}: {}", answers[0].0);
            assert_eq!(answers[0], answers[1], "{script_action}: native and script differ");
        }
    }
}
