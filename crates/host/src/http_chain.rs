//! The HTTP host's hooks (`http_*`, `connection_*`: yorishiro's `http` and `connection`
//! protocols) through a [`Chain`], whatever backend each plugin has (a wasm module, a Starlark
//! script, native code): the same order, `on_error` policy and counters as every other hook.

use std::{any::Any, sync::Arc, time::Instant};

use helios_plugin_schema::{
    Hook, Protocol,
    http::{HttpAction, HttpHookInput, HttpHookOutput, HttpResponse},
};

use crate::{CallObserver, Chain, OnError, PluginError};

/// What an `http_*` / `connection_*` chain decided.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpOutcome {
    /// Every plugin continued (failures of `skip` plugins were logged and counted).
    Continue,
    /// A plugin dropped the message (on `connection_on_connect`: refused the connection).
    Drop { plugin: Arc<str> },
    /// A plugin answered.
    Respond { plugin: Arc<str>, response: HttpResponse },
    /// A plugin whose policy is `abort` failed.
    Abort { error: PluginError },
}

/// The actions an event allows besides continue: any on `http`, drop on `connection_on_connect`.
fn allowed(hook: Hook, action: HttpAction) -> bool {
    action == HttpAction::Continue
        || hook.id().protocol == Protocol::Http
        || (hook == Hook::ConnectionOpen && action == HttpAction::Drop)
}

impl Chain {
    /// Runs an `http_*` or `connection_*` hook through every plugin serving it, in order. Each
    /// plugin sees `input.msg` as the one before left it (the final message is left in `input`);
    /// drop and respond stop the chain; a failure stops it only for an `abort` plugin. `host` is
    /// handed to each backend ([`crate::Plugin::call_with_host`]).
    pub fn http(&self, hook: Hook, input: &mut HttpHookInput, host: &dyn Any) -> HttpOutcome {
        self.http_observed(hook, input, host, &mut |_, _, _| {})
    }

    /// [`Chain::http`] with a per-plugin observer.
    pub fn http_observed(
        &self,
        hook: Hook,
        input: &mut HttpHookInput,
        host: &dyn Any,
        observe: &mut CallObserver<'_, HttpHookOutput>,
    ) -> HttpOutcome {
        for p in self.plugins().iter().filter(|p| p.serves(hook)) {
            let bytes = serde_json::to_vec(&*input).unwrap_or_default();
            let t = Instant::now();
            let r = p.call_with_host(hook, &bytes, host, |b| {
                let out: HttpHookOutput = serde_json::from_slice(b).map_err(|e| e.to_string())?;
                match &out.msg {
                    Some(m) if !m.is_object() => Err("msg must stay a JSON object".to_string()),
                    _ => Ok(out),
                }
            });
            observe(p, t.elapsed(), &r);
            match r {
                Ok(out) => {
                    if let Some(m) = out.msg {
                        input.msg = m;
                    }
                    match out.action {
                        a if !allowed(hook, a) => {
                            tracing::warn!(plugin = p.name(), hook = %hook.export_name(), "action {a:?} is not allowed on this hook; treated as continue");
                        }
                        HttpAction::Continue => {}
                        HttpAction::Drop => return HttpOutcome::Drop { plugin: p.name().into() },
                        HttpAction::Respond => {
                            let response = out.response.unwrap_or_default();
                            return HttpOutcome::Respond { plugin: p.name().into(), response };
                        }
                    }
                }
                // A failed hook's half-done changes to the message are never passed on.
                Err(error) => match p.on_error() {
                    OnError::Skip => {
                        tracing::warn!(plugin = p.name(), hook = %hook.export_name(), error = %error.kind, "hook failed; skipped (on_error = skip)");
                    }
                    OnError::Abort => {
                        tracing::error!(plugin = p.name(), hook = %hook.export_name(), error = %error.kind, "hook failed; chain aborted (on_error = abort)");
                        return HttpOutcome::Abort { error };
                    }
                },
            }
        }
        HttpOutcome::Continue
    }
}
