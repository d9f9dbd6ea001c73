//! One call, whatever the backend: check out an instance, arm its budget, run the call, count and
//! log a failure (the failed instance is dropped, never reused), check the instance back in.
//!
//! A call's data crosses three host modules: this one (encode the input, decode the result in
//! place), the convention (`wasm::hook` or `wasm::guard`: write the input, call, read the result)
//! and `wasm::memory` (the bounds-checked copy).

use std::sync::atomic::Ordering;

use helios_plugin_schema::{GuardRequest, GuardVerdict, Hook, HookSpec, abi, limits};

use crate::{
    Plugin,
    backend::BackendInstance,
    bundle::ContentId,
    error::{FailureKind, PluginError},
    observe::CallEvent,
};

/// What one evaluation touched besides its request: the content bundles it opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalTrace {
    /// Digests of the bundles opened, in the order first opened.
    pub bundles: Vec<ContentId>,
}

/// Runs `f` on `value` encoded as JSON into the instance's scratch buffer (no host allocation on
/// a pooled call once the buffer has grown to the input's size).
fn encoded<T: serde::Serialize + ?Sized, R>(
    i: &mut dyn BackendInstance,
    value: &T,
    f: impl FnOnce(&mut dyn BackendInstance, &[u8]) -> Result<R, FailureKind>,
) -> Result<R, FailureKind> {
    let mut buf = i.take_scratch();
    let r = match serde_json::to_writer(&mut buf, value) {
        Ok(()) => f(&mut *i, &buf),
        Err(e) => Err(FailureKind::Trap { message: format!("cannot encode the input: {e}") }),
    };
    i.put_scratch(buf);
    r
}

impl Plugin {
    fn err(&self, kind: FailureKind) -> PluginError {
        PluginError { plugin: self.ctx.name.clone(), kind }
    }

    /// The machinery of one call: check out an instance, arm limits, run, count and log failures,
    /// recycle.
    fn run<R>(
        &self,
        what: &str,
        f: impl FnOnce(&mut dyn BackendInstance) -> Result<R, FailureKind>,
    ) -> Result<R, PluginError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let _span = tracing::debug_span!("plugin_call", plugin = %self.ctx.name, export = what).entered();
        let started = self.ctx.observer.as_ref().map(|_| std::time::Instant::now());
        let mut fuel = None;
        let mut host_calls = crate::HostCalls::default();
        let result = self.pool.checkout(|| self.backend.instantiate(&self.ctx)).and_then(|mut pooled| {
            pooled.instance.arm();
            let r = f(&mut *pooled.instance);
            if started.is_some() {
                fuel = pooled.instance.fuel_consumed();
                if let Some(h) = pooled.instance.host_calls() {
                    host_calls = *h;
                }
            }
            let dropped = pooled.instance.dropped_logs();
            if dropped > 0 {
                tracing::warn!(plugin = %self.ctx.name, dropped, cap = limits::LOG_MAX_ENTRIES_PER_CALL, "guest log lines over the per-call cap were dropped");
            }
            match r {
                Ok(v) => {
                    self.pool.checkin(pooled);
                    Ok(v)
                }
                // The instance that failed is dropped here, never reused.
                Err(kind) => Err(kind),
            }
        });
        if let (Some(observer), Some(started)) = (&self.ctx.observer, started) {
            observer.call_finished(&CallEvent {
                plugin: &self.ctx.name,
                digest: self.info.as_ref().map(|i| i.sha256.as_str()),
                export: what,
                duration: started.elapsed(),
                fuel_consumed: fuel,
                failure: result.as_ref().err(),
                host_calls: &host_calls,
            });
        }
        result.map_err(|kind| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            let err = self.err(kind);
            tracing::warn!(plugin = %self.ctx.name, export = what, error = %err.kind, "plugin call failed");
            err
        })
    }

    // ---- guard ----------------------------------------------------------------------------------

    /// Runs chio's `evaluate` and returns the verdict. Never fails: a trap, fuel or deadline
    /// exhaustion, a bad pointer or a return code other than 0/1 is a deny naming the cause and the
    /// guard (fail-closed) — or, for an advisory guard, a logged allow.
    pub fn evaluate(&self, request: &GuardRequest) -> GuardVerdict {
        match self.try_evaluate(request) {
            Ok(v) => v,
            Err(e) => self.failed_verdict(e),
        }
    }

    /// Like [`Plugin::evaluate`] but returns the failure instead of mapping it to a verdict.
    pub fn try_evaluate(&self, request: &GuardRequest) -> Result<GuardVerdict, PluginError> {
        if !self.is_guard() {
            return Err(self.err(FailureKind::NotServed { export: abi::EVALUATE.into() }));
        }
        self.run(abi::EVALUATE, |i| encoded(i, request, |i, json| i.evaluate(json)))
    }

    /// `evaluate` over raw JSON request bytes.
    pub fn evaluate_json(&self, request: &[u8]) -> Result<GuardVerdict, PluginError> {
        if !self.is_guard() {
            return Err(self.err(FailureKind::NotServed { export: abi::EVALUATE.into() }));
        }
        self.run(abi::EVALUATE, |i| i.evaluate(request))
    }

    /// Like [`Plugin::evaluate`], with the verdict's trace: the digests of the content bundles the
    /// evaluation opened (in the order opened). A failed evaluation has an empty trace.
    pub fn evaluate_traced(&self, request: &GuardRequest) -> (GuardVerdict, EvalTrace) {
        let r = if self.is_guard() {
            self.run(abi::EVALUATE, |i| {
                let v = encoded(i, request, |i, json| i.evaluate(json))?;
                Ok((v, EvalTrace { bundles: i.bundles_opened() }))
            })
        } else {
            Err(self.err(FailureKind::NotServed { export: abi::EVALUATE.into() }))
        };
        match r {
            Ok(vt) => vt,
            Err(e) => (self.failed_verdict(e), EvalTrace::default()),
        }
    }

    /// A failed evaluation's verdict: a deny naming the cause, or an allow for an advisory guard.
    fn failed_verdict(&self, e: PluginError) -> GuardVerdict {
        if self.cfg.advisory {
            tracing::warn!(plugin = %self.ctx.name, error = %e.kind, "advisory guard failed; allowing");
            GuardVerdict::Allow
        } else {
            GuardVerdict::deny(format!("guard \"{}\" failed closed: {}", self.ctx.name, e.kind))
        }
    }

    // ---- hooks ----------------------------------------------------------------------------------

    /// Calls a hook with typed input and output.
    pub fn call<S: HookSpec>(&self, input: &S::Input) -> Result<S::Output, PluginError> {
        let export = S::HOOK.export_name();
        if !self.serves(S::HOOK) {
            return Err(self.err(FailureKind::NotServed { export: export.into() }));
        }
        self.run(export, |i| {
            encoded(i, input, |i, json| {
                let mut parsed = None;
                i.call_hook_with_host(S::HOOK, json, &(), &mut |bytes| {
                    parsed = Some(serde_json::from_slice::<S::Output>(bytes).map_err(|e| e.to_string())?);
                    Ok(())
                })?;
                parsed.ok_or_else(|| FailureKind::BadResult { export: export.into(), detail: "no result".into() })
            })
        })
    }

    /// Calls a hook on raw JSON and returns the raw JSON result.
    pub fn call_json(&self, hook: Hook, input: &[u8]) -> Result<Vec<u8>, PluginError> {
        self.call_with(hook, input, |b| Ok(b.to_vec()))
    }

    /// Calls a hook and parses the result straight out of guest memory (one copy in, none out).
    pub fn call_with<R>(
        &self,
        hook: Hook,
        input: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<R, String>,
    ) -> Result<R, PluginError> {
        self.call_with_host(hook, input, &(), parse)
    }

    /// [`Plugin::call_with`], handing the backend `host` (per-call data of the host that is not
    /// part of the input; see [`BackendInstance::call_hook_with_host`]). Wasm ignores it.
    pub fn call_with_host<R>(
        &self,
        hook: Hook,
        input: &[u8],
        host: &dyn std::any::Any,
        parse: impl FnOnce(&[u8]) -> Result<R, String>,
    ) -> Result<R, PluginError> {
        let export = hook.export_name();
        if !self.serves(hook) {
            return Err(self.err(FailureKind::NotServed { export: export.into() }));
        }
        self.run(export, |i| {
            let mut parse = Some(parse);
            let mut parsed = None;
            i.call_hook_with_host(hook, input, host, &mut |bytes| {
                let parse = parse.take().ok_or("the result was handed over twice")?;
                parsed = Some(parse(bytes)?);
                Ok(())
            })?;
            parsed.ok_or_else(|| FailureKind::BadResult { export: export.into(), detail: "no result".into() })
        })
    }
}
