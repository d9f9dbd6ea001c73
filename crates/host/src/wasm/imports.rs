//! The host import surface: `env.kv_get/kv_set/kv_delete/kv_add/kv_cas/sha256_hex` and
//! `chio.log/get_config/get_time_unix_secs`.
//!
//! Ownership: every buffer named by a pointer belongs to the guest; the host only reads or writes
//! inside ranges it has bounds-checked against the guest's memory. A pointer or length outside memory
//! is a guest fault: the import traps with an [`ImportFault`] naming the import and the range, and the
//! call fails. Nothing a guest passes can make the host panic or touch another plugin's data.

use std::ops::Range;
use std::time::Instant;

use helios_plugin_schema::{abi, limits};
use sha2::{Digest, Sha256};
use wasmtime::{Caller, Linker};

use super::{memory::checked_range, state::HostState};
use crate::{
    HostCalls,
    error::ImportFault,
    services::{KvError, Level},
};

const KV_GET: &str = "env.kv_get";
const KV_SET: &str = "env.kv_set";
const KV_DELETE: &str = "env.kv_delete";
const KV_ADD: &str = "env.kv_add";
const KV_CAS: &str = "env.kv_cas";
const SHA256_HEX: &str = "env.sha256_hex";
const LOG: &str = "chio.log";
const GET_CONFIG: &str = "chio.get_config";
const BUNDLE_OPEN: &str = "chio:guard/host@0.2.0.bundle-open";
const FETCH_BLOB: &str = "chio:guard/host@0.2.0.fetch-blob";

pub(crate) fn fault(import: &'static str, detail: String) -> wasmtime::Error {
    wasmtime::Error::new(ImportFault { import, detail })
}

/// The guest's memory and the host state, split-borrowed.
pub(crate) fn memory<'a>(
    caller: &'a mut Caller<'_, HostState>,
    import: &'static str,
) -> wasmtime::Result<(&'a mut [u8], &'a mut HostState)> {
    let Some(mem) = caller.data().memory else {
        return Err(fault(import, "called before the instance was ready (from a start function)".into()));
    };
    Ok(mem.data_and_store_mut(caller))
}

fn range(import: &'static str, what: &str, size: usize, ptr: i32, len: i32) -> wasmtime::Result<Range<usize>> {
    checked_range(size, ptr, len).map_err(|e| fault(import, format!("{what} {e}")))
}

/// Adds the import surface to a linker. Called once per runtime.
///
/// Every import is wrapped (`wrap!`): when the runtime has an observer, the time spent in it is
/// added to its slot of the store's [`HostCalls`] (no allocation); without one the cost is one
/// branch.
pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    macro_rules! wrap {
        ($module:expr, $name:expr, $f:expr, ($($a:ident: $t:ty),*) -> $r:ty) => {{
            const SLOT: usize = HostCalls::slot($name);
            linker.func_wrap($module, $name, move |mut caller: Caller<'_, HostState>, $($a: $t),*| -> $r {
                let since = caller.data().time_host_calls.then(Instant::now);
                let r = $f(&mut caller, $($a),*);
                if let Some(since) = since {
                    caller.data_mut().host_calls.record(SLOT, since);
                }
                r
            })?;
        }};
    }
    wrap!(abi::ENV_MODULE, abi::KV_GET, kv_get, (a: i32, b: i32, c: i32, d: i32) -> wasmtime::Result<i32>);
    wrap!(abi::ENV_MODULE, abi::KV_SET, kv_set, (a: i32, b: i32, c: i32, d: i32) -> wasmtime::Result<i32>);
    wrap!(abi::ENV_MODULE, abi::KV_DELETE, kv_delete, (a: i32, b: i32) -> wasmtime::Result<i32>);
    wrap!(abi::ENV_MODULE, abi::KV_ADD, kv_add, (a: i32, b: i32, c: i64, d: i32) -> wasmtime::Result<i32>);
    wrap!(abi::ENV_MODULE, abi::KV_CAS, kv_cas, (a: i32, b: i32, c: i32, d: i32, e: i32, f: i32) -> wasmtime::Result<i32>);
    wrap!(abi::ENV_MODULE, abi::SHA256_HEX, sha256_hex, (a: i32, b: i32, c: i32) -> wasmtime::Result<i32>);
    wrap!(abi::CHIO_MODULE, abi::LOG, log, (a: i32, b: i32, c: i32) -> wasmtime::Result<()>);
    wrap!(abi::CHIO_MODULE, abi::GET_CONFIG, get_config, (a: i32, b: i32, c: i32, d: i32) -> wasmtime::Result<i32>);
    wrap!(abi::CHIO_MODULE, abi::GET_TIME_UNIX_SECS, get_time_unix_secs, () -> i64);
    wrap!(abi::GUARD_HOST_MODULE, abi::BUNDLE_OPEN, bundle_open, (a: i32, b: i32) -> wasmtime::Result<i32>);
    wrap!(abi::GUARD_HOST_MODULE, abi::FETCH_BLOB, fetch_blob, (a: i32, b: i64, c: i32, d: i32) -> wasmtime::Result<i32>);
    Ok(())
}

fn get_time_unix_secs(caller: &mut Caller<'_, HostState>) -> i64 {
    caller.data().ctx.clock.now_unix_secs()
}

/// `bundle-open`: see [`abi::BUNDLE_OPEN`]. A refusal (undeclared, missing, flood) fails the call.
fn bundle_open(caller: &mut Caller<'_, HostState>, ip: i32, il: i32) -> wasmtime::Result<i32> {
    let (mem, state) = memory(caller, BUNDLE_OPEN)?;
    let r = range(BUNDLE_OPEN, "id", mem.len(), ip, il)?;
    let id = String::from_utf8_lossy(&mem[r]);
    state.bundles.open(&state.ctx, &id).map_err(|e| fault(BUNDLE_OPEN, e))?;
    Ok(state.bundles.opened_count() as i32 - 1)
}

/// `fetch-blob`: see [`abi::FETCH_BLOB`]. The whole `len`-byte output range must lie in memory.
fn fetch_blob(
    caller: &mut Caller<'_, HostState>,
    handle: i32,
    offset: i64,
    len: i32,
    op: i32,
) -> wasmtime::Result<i32> {
    let (mem, state) = memory(caller, FETCH_BLOB)?;
    let or = range(FETCH_BLOB, "output buffer", mem.len(), op, len)?;
    if len as u32 > limits::BUNDLE_READ_MAX_BYTES {
        return Ok(abi::BLOB_OVER_CAP);
    }
    let (Ok(handle), Ok(offset)) = (u32::try_from(handle), u64::try_from(offset)) else {
        return Ok(abi::BLOB_BAD_HANDLE);
    };
    match state.bundles.read_ordinal(handle, offset, len as u32) {
        Ok(bytes) => {
            mem[or.start..or.start + bytes.len()].copy_from_slice(bytes);
            Ok(bytes.len() as i32)
        }
        Err(_) => Ok(abi::BLOB_BAD_HANDLE),
    }
}

fn kv_get(caller: &mut Caller<'_, HostState>, kp: i32, kl: i32, vp: i32, vmax: i32) -> wasmtime::Result<i32> {
    let (mem, state) = memory(caller, KV_GET)?;
    let kr = range(KV_GET, "key", mem.len(), kp, kl)?;
    let vr = range(KV_GET, "value buffer", mem.len(), vp, vmax)?;
    if kr.len() > limits::KV_MAX_KEY_BYTES {
        return Ok(abi::KV_MISSING);
    }
    // The key may overlap the value buffer: copy it out first (at most KV_MAX_KEY_BYTES, on the stack).
    let mut key = [0u8; limits::KV_MAX_KEY_BYTES];
    let key = &mut key[..kr.len()];
    key.copy_from_slice(&mem[kr]);
    let mut rc = abi::KV_MISSING;
    let out = &mut mem[vr];
    let read = state.ctx.kv.get(&state.ctx.name, key, &mut |v| {
        rc = match v {
            None => abi::KV_MISSING,
            Some(v) if v.len() > out.len() => abi::KV_BUFFER_TOO_SMALL,
            Some(v) => {
                out[..v.len()].copy_from_slice(v);
                v.len() as i32
            }
        }
    });
    // kv_get's codes have no "store failed": answering "missing" would let a budget start from zero,
    // so the call fails, naming the store, and the plugin's on_error policy decides.
    if let Err(e) = read {
        return Err(fault(KV_GET, format!("state store failed: {e}")));
    }
    Ok(rc)
}

fn kv_set(caller: &mut Caller<'_, HostState>, kp: i32, kl: i32, vp: i32, vl: i32) -> wasmtime::Result<i32> {
    let (mem, state) = memory(caller, KV_SET)?;
    let kr = range(KV_SET, "key", mem.len(), kp, kl)?;
    let vr = range(KV_SET, "value", mem.len(), vp, vl)?;
    if kr.len() > limits::KV_MAX_KEY_BYTES || vr.len() > limits::KV_MAX_VALUE_BYTES {
        tracing::debug!(plugin = %state.ctx.name, key = kr.len(), value = vr.len(), "kv_set over the size caps");
        return Ok(abi::KV_ERROR);
    }
    match state.ctx.kv.set_within(&state.ctx.name, &mem[kr], &mem[vr], state.ctx.kv_caps) {
        Ok(()) => Ok(abi::KV_OK),
        Err(e) => {
            tracing::debug!(plugin = %state.ctx.name, error = %e, "kv_set refused");
            Ok(abi::KV_ERROR)
        }
    }
}

fn kv_delete(caller: &mut Caller<'_, HostState>, kp: i32, kl: i32) -> wasmtime::Result<i32> {
    let (mem, state) = memory(caller, KV_DELETE)?;
    let kr = range(KV_DELETE, "key", mem.len(), kp, kl)?;
    if kr.len() <= limits::KV_MAX_KEY_BYTES
        && let Err(e) = state.ctx.kv.delete(&state.ctx.name, &mem[kr])
    {
        tracing::debug!(plugin = %state.ctx.name, error = %e, "kv_delete failed");
        return Ok(abi::KV_ERROR);
    }
    Ok(abi::KV_OK)
}

/// The code a guest sees for a refused atomic operation; a store failure is logged with its cause.
fn atomic_refusal(state: &HostState, import: &'static str, e: &KvError) -> i32 {
    match e {
        KvError::NotACounter => abi::KV_NOT_A_COUNTER,
        KvError::Overflow => abi::KV_OVERFLOW,
        KvError::Unavailable(cause) => {
            tracing::warn!(plugin = %state.ctx.name, import, %cause, "state store unavailable");
            abi::KV_UNAVAILABLE
        }
        e => {
            tracing::debug!(plugin = %state.ctx.name, import, error = %e, "refused");
            abi::KV_ERROR
        }
    }
}

/// `env.kv_add`: see [`abi::KV_ADD`]. Reads the key, writes 8 bytes at `out_ptr` only on success.
fn kv_add(caller: &mut Caller<'_, HostState>, kp: i32, kl: i32, delta: i64, op: i32) -> wasmtime::Result<i32> {
    let (mem, state) = memory(caller, KV_ADD)?;
    let kr = range(KV_ADD, "key", mem.len(), kp, kl)?;
    let or = range(KV_ADD, "output", mem.len(), op, 8)?;
    if kr.len() > limits::KV_MAX_KEY_BYTES {
        return Ok(abi::KV_ERROR);
    }
    match state.ctx.kv.add(&state.ctx.name, &mem[kr], delta) {
        Ok(v) => {
            mem[or].copy_from_slice(&v.to_le_bytes());
            Ok(abi::KV_OK)
        }
        Err(e) => Ok(atomic_refusal(state, KV_ADD, &e)),
    }
}

/// `env.kv_cas`: see [`abi::KV_CAS`]. Only reads guest memory.
fn kv_cas(
    caller: &mut Caller<'_, HostState>,
    kp: i32,
    kl: i32,
    ep: i32,
    el: i32,
    np: i32,
    nl: i32,
) -> wasmtime::Result<i32> {
    let (mem, state) = memory(caller, KV_CAS)?;
    let kr = range(KV_CAS, "key", mem.len(), kp, kl)?;
    let er = match el {
        abi::KV_CAS_EXPECT_MISSING => None,
        _ => Some(range(KV_CAS, "expected value", mem.len(), ep, el)?),
    };
    let nr = range(KV_CAS, "new value", mem.len(), np, nl)?;
    if kr.len() > limits::KV_MAX_KEY_BYTES || nr.len() > limits::KV_MAX_VALUE_BYTES {
        return Ok(abi::KV_ERROR);
    }
    let expected = er.map(|r| &mem[r]);
    match state.ctx.kv.compare_and_swap(&state.ctx.name, &mem[kr], expected, &mem[nr]) {
        Ok(true) => Ok(abi::KV_OK),
        Ok(false) => Ok(abi::KV_CAS_CONFLICT),
        Err(e) => Ok(atomic_refusal(state, KV_CAS, &e)),
    }
}

fn sha256_hex(caller: &mut Caller<'_, HostState>, ip: i32, il: i32, op: i32) -> wasmtime::Result<i32> {
    let (mem, _) = memory(caller, SHA256_HEX)?;
    let ir = range(SHA256_HEX, "input", mem.len(), ip, il)?;
    let or = range(SHA256_HEX, "output", mem.len(), op, abi::SHA256_HEX_LEN)?;
    let digest = Sha256::digest(&mem[ir]);
    hex::encode_to_slice(digest, &mut mem[or]).map_err(|e| fault(SHA256_HEX, e.to_string()))?;
    Ok(abi::SHA256_HEX_LEN)
}

fn log(caller: &mut Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let (mem, state) = memory(caller, LOG)?;
    let r = range(LOG, "message", mem.len(), ptr, len)?;
    let Some(level) = Level::from_code(level) else {
        return Ok(());
    };
    state.call.log(&state.ctx, level, &mem[r]);
    Ok(())
}

fn get_config(caller: &mut Caller<'_, HostState>, kp: i32, kl: i32, vp: i32, vl: i32) -> wasmtime::Result<i32> {
    let (mem, state) = memory(caller, GET_CONFIG)?;
    let kr = range(GET_CONFIG, "key", mem.len(), kp, kl)?;
    let vr = range(GET_CONFIG, "value buffer", mem.len(), vp, vl)?;
    let Ok(key) = std::str::from_utf8(&mem[kr]) else {
        return Ok(abi::CONFIG_MISSING);
    };
    let Some(value) = state.ctx.config.get(key) else {
        return Ok(abi::CONFIG_MISSING);
    };
    let Ok(full) = i32::try_from(value.len()) else {
        return Err(fault(GET_CONFIG, format!("config value for {key:?} is too large")));
    };
    let n = value.len().min(vr.len());
    mem[vr.start..vr.start + n].copy_from_slice(&value.as_bytes()[..n]);
    Ok(full)
}
