//! HeliosProxy's hook convention: one export per hook of the catalogue, `fn(ptr, len) -> i64` over a
//! JSON input the host wrote at `alloc(len)`, returning `(result_ptr << 32) | result_len` of a JSON
//! result; `dealloc` (optional) takes both buffers back.
//!
//! The input buffer comes from `alloc` once per instance and is kept for its life (see
//! [`memory::KeptBuffer`]); the result buffer is the guest's, handed back after every call.

use helios_plugin_schema::{Hook, abi, limits};
use wasmtime::{Instance, Memory, Module, ModuleExport, Store, TypedFunc};

use super::{CallError, bad_result, func_export, memory, sig_of, state::HostState, typed};
use crate::error::{FailureKind, LoadError};

/// The hook exports of a module, resolved and type-checked at load.
pub(crate) struct HookAbi {
    /// Exported hooks in catalogue order, and their exports.
    hooks: Vec<Hook>,
    exports: Vec<ModuleExport>,
    alloc: ModuleExport,
    dealloc: Option<ModuleExport>,
}

/// The typed hook exports of one instance.
pub(crate) struct HookFuncs {
    /// Indexed by `Hook::index()`.
    hooks: Vec<Option<TypedFunc<(i32, i32), i64>>>,
    alloc: TypedFunc<i32, i32>,
    dealloc: Option<TypedFunc<(i32, i32), ()>>,
    /// Where inputs are written (from `alloc`).
    input: Option<memory::KeptBuffer>,
}

impl HookAbi {
    /// `None` when the module exports no hook of the catalogue. A module that exports a hook must
    /// export `alloc`; every export present must have its ABI signature.
    pub(crate) fn resolve(plugin: &str, module: &Module) -> Result<Option<HookAbi>, LoadError> {
        let mut hooks = Vec::new();
        let mut exports = Vec::new();
        for &h in Hook::ALL {
            if let Some(x) = func_export(plugin, module, h.export_name(), &abi::HOOK_SIG)? {
                hooks.push(h);
                exports.push(x);
            }
        }
        let alloc = func_export(plugin, module, abi::ALLOC, sig_of(abi::ALLOC))?;
        let dealloc = func_export(plugin, module, abi::DEALLOC, sig_of(abi::DEALLOC))?;
        if hooks.is_empty() {
            return Ok(None);
        }
        let Some(alloc) = alloc else {
            return Err(LoadError::Export {
                plugin: plugin.into(),
                export: abi::ALLOC.into(),
                problem: "is missing: hook plugins must export it".into(),
            });
        };
        Ok(Some(HookAbi { hooks, exports, alloc, dealloc }))
    }

    pub(crate) fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    pub(crate) fn bind(&self, instance: &Instance, store: &mut Store<HostState>) -> wasmtime::Result<HookFuncs> {
        let mut hooks = vec![None; Hook::ALL.len()];
        for (h, x) in self.hooks.iter().zip(&self.exports) {
            hooks[h.index()] = Some(typed(instance, store, x)?);
        }
        Ok(HookFuncs {
            hooks,
            alloc: typed(instance, store, &self.alloc)?,
            dealloc: self.dealloc.as_ref().map(|x| typed(instance, store, x)).transpose()?,
            input: None,
        })
    }
}

/// One hook call: copy the input into the kept buffer, call, check the result range, hand the result
/// to `out` in place (one copy in, none out), `dealloc` the result (and an input too large to keep).
pub(crate) fn call(
    store: &mut Store<HostState>,
    memory: Memory,
    funcs: &mut HookFuncs,
    hook: Hook,
    input: &[u8],
    out: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), CallError> {
    let export = hook.export_name();
    let Some(func) = funcs.hooks[hook.index()].clone() else {
        return Err(CallError::Failure(FailureKind::NotServed { export: export.into() }));
    };
    let len = i32::try_from(input.len()).map_err(|_| bad_result(export, "input over 2 GiB"))?;
    let placed = match memory::place_input(store, memory, &mut funcs.input, &funcs.alloc, funcs.dealloc.as_ref(), input)
    {
        Ok(p) => p,
        Err(memory::PlaceError::Wasm(e)) => return Err(CallError::Wasm(e)),
        Err(memory::PlaceError::Bad(detail)) => return Err(bad_result(abi::ALLOC, detail)),
    };
    let ptr = placed.ptr();
    let packed = func.call(&mut *store, (ptr, len))?;
    let (rp, rl) = abi::unpack_ptr_len(packed);
    if rl > limits::MAX_RESULT_BYTES {
        return Err(bad_result(
            export,
            format!("result of {rl} bytes is over the {}-byte cap", limits::MAX_RESULT_BYTES),
        ));
    }
    let bytes =
        memory::read(store, memory, rp as i32, rl as i32).map_err(|e| bad_result(export, format!("result {e}")))?;
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { bytes };
    out(bytes).map_err(|e| bad_result(export, format!("malformed JSON result: {e}")))?;
    if let memory::Placed::Once { ptr, .. } = placed {
        memory::zero(&mut *store, memory, ptr, len).map_err(|e| bad_result(export, e))?;
    }
    if let Some(dealloc) = &funcs.dealloc {
        if let memory::Placed::Once { ptr, size } = placed {
            dealloc.call(&mut *store, (ptr, size))?;
        }
        if rl > 0 {
            dealloc.call(&mut *store, (rp as i32, rl as i32))?;
        }
    }
    Ok(())
}
