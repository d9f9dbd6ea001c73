//! chio's guard convention: `evaluate(ptr, len) -> i32` over a JSON `GuardRequest` written where
//! `chio_alloc` points (else at offset 0), returning `VERDICT_ALLOW` or `VERDICT_DENY`; the reason
//! comes from `chio_deny_reason` into a host-chosen buffer; `chio_free` takes buffers back.
//!
//! Both buffers come from `chio_alloc` once per instance and are kept for its life (see
//! [`memory::KeptBuffer`]): a pooled call is one call into the guest (two on a deny), not three.

use helios_plugin_schema::{GuardVerdict, abi, guard::DenyReason, limits};
use wasmtime::{Instance, Memory, Module, ModuleExport, Store, TypedFunc};

use super::{CallError, bad_result, func_export, memory, sig_of, state::HostState, typed};
use crate::error::{FailureKind, LoadError};

/// The reason of a deny whose guard gives none.
const GENERIC_DENY: &str = "denied by guard (no reason given)";

/// The guard exports of a module, resolved and type-checked at load.
pub(crate) struct GuardAbi {
    evaluate: ModuleExport,
    chio_alloc: Option<ModuleExport>,
    chio_free: Option<ModuleExport>,
    deny_reason: Option<ModuleExport>,
}

/// The typed guard exports of one instance, and the buffers it keeps.
pub(crate) struct GuardFuncs {
    evaluate: TypedFunc<(i32, i32), i32>,
    chio_alloc: Option<TypedFunc<i32, i32>>,
    chio_free: Option<TypedFunc<(i32, i32), ()>>,
    deny_reason: Option<TypedFunc<(i32, i32), i32>>,
    /// Where requests are written (from `chio_alloc`).
    input: Option<memory::KeptBuffer>,
    /// The deny-reason buffer of `DENY_REASON_BUFFER_BYTES` (from `chio_alloc`), once a call denied.
    reason: Option<i32>,
}

impl GuardAbi {
    /// `None` when the module does not export `evaluate`.
    pub(crate) fn resolve(plugin: &str, module: &Module) -> Result<Option<GuardAbi>, LoadError> {
        let x = |name| func_export(plugin, module, name, sig_of(name));
        let (chio_alloc, chio_free, deny_reason) = (x(abi::CHIO_ALLOC)?, x(abi::CHIO_FREE)?, x(abi::CHIO_DENY_REASON)?);
        Ok(x(abi::EVALUATE)?.map(|evaluate| GuardAbi { evaluate, chio_alloc, chio_free, deny_reason }))
    }

    pub(crate) fn bind(&self, instance: &Instance, store: &mut Store<HostState>) -> wasmtime::Result<GuardFuncs> {
        Ok(GuardFuncs {
            chio_alloc: self.chio_alloc.as_ref().map(|x| typed(instance, store, x)).transpose()?,
            chio_free: self.chio_free.as_ref().map(|x| typed(instance, store, x)).transpose()?,
            deny_reason: self.deny_reason.as_ref().map(|x| typed(instance, store, x)).transpose()?,
            evaluate: typed(instance, store, &self.evaluate)?,
            input: None,
            reason: None,
        })
    }
}

/// A buffer of `len` bytes for the host to write into: where `chio_alloc` points (`true`: the
/// guest's allocation), else offset 0 (chio's placement rule). `None` if not even offset 0 fits.
fn place(
    store: &mut Store<HostState>,
    memory: Memory,
    funcs: &GuardFuncs,
    len: i32,
) -> Result<Option<(i32, bool)>, CallError> {
    if let Some(a) = &funcs.chio_alloc {
        let p = a.call(&mut *store, len)?;
        if p != 0 && memory::fits(&*store, memory, p, len) {
            return Ok(Some((p, true)));
        }
    }
    Ok(memory::fits(&*store, memory, 0, len).then_some((0, false)))
}

/// Writes the request: into the kept buffer from `chio_alloc` (see [`memory::place_input`]), or at
/// offset 0 when the guard exports no `chio_alloc` or its pointer is null or out of bounds. Returns
/// the pointer and the size of the buffer the host zeroes and frees after the call (0: none).
fn write_request(
    store: &mut Store<HostState>,
    memory: Memory,
    funcs: &mut GuardFuncs,
    request: &[u8],
    len: i32,
) -> Result<(i32, i32), CallError> {
    if let Some(alloc) = &funcs.chio_alloc {
        match memory::place_input(store, memory, &mut funcs.input, alloc, funcs.chio_free.as_ref(), request) {
            Ok(memory::Placed::Kept(p)) => return Ok((p, 0)),
            Ok(memory::Placed::Once { ptr, size }) => return Ok((ptr, size)),
            Err(memory::PlaceError::Wasm(e)) => return Err(CallError::Wasm(e)),
            // chio's rule: a null or out-of-bounds pointer falls back to offset 0.
            Err(memory::PlaceError::Bad(_)) => {}
        }
    }
    if !memory::fits(&*store, memory, 0, len) {
        return Err(bad_result(abi::EVALUATE, format!("the {len}-byte request does not fit guest memory")));
    }
    memory::write(&mut *store, memory, 0, request).map_err(|e| bad_result(abi::EVALUATE, e))?;
    Ok((0, 0))
}

/// One guard call: write the request, call `evaluate`, read the reason of a deny.
pub(crate) fn evaluate(
    store: &mut Store<HostState>,
    memory: Memory,
    funcs: &mut GuardFuncs,
    request: &[u8],
) -> Result<GuardVerdict, CallError> {
    let len = i32::try_from(request.len()).map_err(|_| bad_result(abi::EVALUATE, "request over 2 GiB"))?;
    let (ptr, once) = write_request(store, memory, funcs, request, len)?;
    let code = funcs.evaluate.call(&mut *store, (ptr, len))?;
    let verdict = match code {
        abi::VERDICT_ALLOW => GuardVerdict::Allow,
        abi::VERDICT_DENY => GuardVerdict::Deny { reason: deny_reason(store, memory, funcs)? },
        other => return Err(CallError::Failure(FailureKind::BadVerdict { code: other })),
    };
    if once > 0 {
        memory::zero(&mut *store, memory, ptr, len).map_err(|e| bad_result(abi::EVALUATE, e))?;
        if let Some(free) = &funcs.chio_free {
            free.call(&mut *store, (ptr, once))?;
        }
    }
    Ok(verdict)
}

/// The reason of a deny, through the buffer kept for it (from `chio_alloc` on the first deny; a
/// guard without a usable `chio_alloc` gets offset 0 each time, as chio places it).
fn deny_reason(store: &mut Store<HostState>, memory: Memory, funcs: &mut GuardFuncs) -> Result<String, CallError> {
    if funcs.deny_reason.is_none() {
        return Ok(GENERIC_DENY.into());
    }
    let cap = limits::DENY_REASON_BUFFER_BYTES as i32;
    let buf = match funcs.reason {
        Some(p) => p,
        None => match place(store, memory, funcs, cap)? {
            Some((p, kept)) => {
                if kept {
                    funcs.reason = Some(p);
                }
                p
            }
            None => return Ok(GENERIC_DENY.into()),
        },
    };
    let Some(reason_fn) = &funcs.deny_reason else {
        return Ok(GENERIC_DENY.into());
    };
    let n = reason_fn.call(&mut *store, (buf, cap))?;
    let reason = if n == abi::DENY_REASON_NONE {
        GENERIC_DENY.to_string()
    } else if n < 0 || n > cap {
        return Err(bad_result(abi::CHIO_DENY_REASON, format!("returned {n} bytes for a {cap}-byte buffer")));
    } else {
        let bytes = memory::read(store, memory, buf, n).map_err(|e| bad_result(abi::CHIO_DENY_REASON, e))?;
        match serde_json::from_slice::<DenyReason>(bytes) {
            Ok(r) => r.reason,
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        }
    };
    Ok(reason)
}
