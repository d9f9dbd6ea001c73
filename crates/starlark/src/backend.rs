//! A Starlark script as a plugin of the host: an implementation of the host's
//! [`Backend`]/[`BackendInstance`] traits, so a script loads with [`Runtime::load_backend`] and is
//! called, counted, pooled and failed exactly like a wasm module (one `Plugin`, one failure policy,
//! one set of counters).
//!
//! A script's registrations map to the catalogue's hooks by their (protocol, event, phase)
//! identity (`http`/`on_request`/`pre_pipeline` is `http_on_request`). One call of a hook runs the
//! script's functions registered for it in `register_hook` order, each seeing the `msg` the one
//! before left; the first that does not continue decides. The wire is the one a wasm guest speaks
//! ([`HttpHookInput`] in, [`HttpHookOutput`] out), so the host cannot tell the two apart.
//!
//! The host may hand a [`HookContext`] as the call's host data
//! ([`helios_plugin_host::Plugin::call_with_host`]): its scopes become `ctx.transaction_state` and
//! `ctx.stream_state`. Without one the script sees empty scopes for that call.
//!
//! [`Runtime::load_backend`]: helios_plugin_host::Runtime::load_backend

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use helios_plugin_host::schema::Hook;
use helios_plugin_host::schema::http::{HttpAction, HttpHookInput, HttpHookOutput, HttpResponse};
use helios_plugin_host::schema::{GuardVerdict, abi};
use helios_plugin_host::{Backend, BackendInstance, FailureKind, PluginConfig, PluginContext};
use serde_json::Value as Json;

use crate::engine::{CALL_DEADLINE, Cause, HookContext, MAX_HEAP_BYTES, ScriptError, ScriptPlugin, Verdict};

/// A loaded script, serving the catalogue hooks it registered.
#[derive(Debug, Clone)]
pub struct ScriptBackend {
    script: Arc<ScriptPlugin>,
    /// Distinct hooks, in catalogue order.
    hooks: Vec<Hook>,
    /// For each hook of `hooks`, the registration indexes in `register_hook` order.
    registrations: Arc<Vec<(Hook, Vec<usize>)>>,
}

impl ScriptBackend {
    /// Wraps a loaded script. A registration whose (protocol, event, phase) is not a hook of the
    /// catalogue is refused naming it (the host could never call it).
    pub fn new(script: Arc<ScriptPlugin>) -> Result<ScriptBackend, ScriptError> {
        let mut by_hook: BTreeMap<Hook, Vec<usize>> = BTreeMap::new();
        for (i, r) in script.registrations().iter().enumerate() {
            let p = &r.point;
            let hook = Hook::from_identity(&p.protocol, &p.event, p.phase).ok_or_else(|| ScriptError {
                plugin: script.name().to_string(),
                hook: Some(p.to_string()),
                cause: Cause::Load,
                message: format!("{p} is not a hook of the host's catalogue"),
            })?;
            by_hook.entry(hook).or_default().push(i);
        }
        let hooks = by_hook.keys().copied().collect();
        Ok(ScriptBackend { script, hooks, registrations: Arc::new(by_hook.into_iter().collect()) })
    }

    /// The script behind it.
    pub fn script(&self) -> &Arc<ScriptPlugin> {
        &self.script
    }

    /// The host plugin config a script entry implies: its name and its `on_error` policy. `vars`
    /// stay the script's frozen `config` (the host's string config map is for wasm guests).
    pub fn plugin_config(&self) -> PluginConfig {
        let on_error = match self.script.on_error() {
            crate::OnError::Skip => helios_plugin_host::OnError::Skip,
            crate::OnError::Abort => helios_plugin_host::OnError::Abort,
        };
        PluginConfig::new(self.script.name()).on_error(on_error)
    }
}

impl Backend for ScriptBackend {
    fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    fn is_guard(&self) -> bool {
        false
    }

    fn instantiate(&self, _ctx: &Arc<PluginContext>) -> Result<Box<dyn BackendInstance>, FailureKind> {
        // The top level already ran at load; an instance is a handle on the frozen module (its
        // volatile `state` lives in the plugin's scope, shared by every instance).
        Ok(Box::new(ScriptInstance { backend: self.clone() }))
    }
}

struct ScriptInstance {
    backend: ScriptBackend,
}

/// How the host reports a script's failure: the cause as the host's kinds name them, the message
/// naming the hook.
fn failure(e: ScriptError) -> FailureKind {
    let message = match &e.hook {
        Some(h) => format!("{h}: {}", e.message),
        None => e.message.clone(),
    };
    match e.cause {
        Cause::Deadline => FailureKind::DeadlineExceeded { deadline: CALL_DEADLINE },
        Cause::Memory => {
            FailureKind::MemoryLimit { requested: MAX_HEAP_BYTES as u64 + 1, limit: MAX_HEAP_BYTES as u64 }
        }
        Cause::Stack => FailureKind::StackOverflow,
        Cause::BadResult => FailureKind::BadResult { export: e.hook.unwrap_or_default(), detail: e.message },
        Cause::Steps | Cause::Runtime | Cause::Load => FailureKind::Trap { message },
    }
}

impl Verdict {
    /// The wire answer of a hook that returned this verdict and left the message as `msg`. The
    /// message travels with every action: where the host treats an action the hook may not take as
    /// continue, later plugins see the message as this hook left it.
    pub fn into_http_output(self, msg: Json) -> HttpHookOutput {
        let (action, response) = match self {
            Verdict::Continue => (HttpAction::Continue, None),
            Verdict::Drop => (HttpAction::Drop, None),
            Verdict::Respond(r) => (
                HttpAction::Respond,
                Some(HttpResponse { status: r.status, headers: r.headers.into_iter().collect(), body: r.body }),
            ),
        };
        HttpHookOutput { action, msg: Some(msg), response }
    }
}

/// One `http_*`/`connection_*` hook call on the wire a wasm guest speaks, for a backend whose hook
/// is Rust code (a script's registrations, the HTTP proxy's native hooks): decodes the host's
/// [`HttpHookInput`], runs `f` on its message with the call's [`HookContext`] (the one the host
/// handed as `host`, else a fresh one for the input's client and connection) and writes `f`'s
/// verdict with the message as `f` left it ([`Verdict::into_http_output`]).
pub fn serve_http_hook(
    hook: Hook,
    input: &[u8],
    host: &dyn Any,
    out: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    f: impl FnOnce(&mut Json, &HookContext) -> Result<Verdict, FailureKind>,
) -> Result<(), FailureKind> {
    let export = hook.export_name();
    let input: HttpHookInput = serde_json::from_slice(input)
        .map_err(|e| FailureKind::Trap { message: format!("{export}: the host's input is not a hook input: {e}") })?;
    let mut msg = input.msg;
    let fresh;
    let ctx = match host.downcast_ref::<HookContext>() {
        Some(c) => c,
        None => {
            fresh = HookContext { client: input.client, conn_id: input.conn_id, ..HookContext::default() };
            &fresh
        }
    };
    let output = f(&mut msg, ctx)?.into_http_output(msg);
    let bytes = serde_json::to_vec(&output)
        .map_err(|e| FailureKind::BadResult { export: export.into(), detail: e.to_string() })?;
    out(&bytes).map_err(|detail| FailureKind::BadResult { export: export.into(), detail })
}

impl BackendInstance for ScriptInstance {
    fn arm(&mut self) {
        // Every script call arms its own step budget, heap cap and deadline.
    }

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
        let export = hook.export_name();
        let Some((_, indexes)) = self.backend.registrations.iter().find(|(h, _)| *h == hook) else {
            return Err(FailureKind::NotServed { export: export.into() });
        };
        serve_http_hook(hook, input, host, out, |msg, ctx| {
            let mut verdict = Verdict::Continue;
            for &i in indexes {
                verdict = self.backend.script.call(i, msg, ctx).map_err(failure)?;
                if verdict != Verdict::Continue {
                    break;
                }
            }
            Ok(verdict)
        })
    }

    fn evaluate(&mut self, _request: &[u8]) -> Result<GuardVerdict, FailureKind> {
        Err(FailureKind::NotServed { export: abi::EVALUATE.into() })
    }

    fn memory_bytes(&self) -> u64 {
        // Each call runs on its own temporary heap, freed when the call returns.
        0
    }

    fn dropped_logs(&self) -> u32 {
        0
    }
}
