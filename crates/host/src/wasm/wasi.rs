//! WASI preview 1 for modules built for `wasm32-wasip1`, in a deny-all sandbox.
//!
//! The implementation is wasmtime's own (`wasmtime-wasi`'s preview 1, the release of our wasmtime),
//! run with an empty context built per instance: no preopened directories (every path call fails with
//! `EBADF`/`ENOTCAPABLE`), no environment, no arguments, no sockets, an empty stdin. What it cannot
//! reach it cannot leak. Two things are ours:
//!
//! * **stdout and stderr** go to the plugin's log (the same path as `chio.log`, under the same caps:
//!   at most `LOG_MAX_ENTRIES_PER_CALL` entries of at most `LOG_MAX_MESSAGE_BYTES` per call), through
//!   the capture the component backend uses for WASI 0.2 (`component::wasi`): at most 64 KiB per
//!   stream per call is kept and the rest dropped (counted as a dropped log line), so a guest writing
//!   a gigabyte costs the host a 64 KiB buffer, not a gigabyte. The context is that backend's
//!   deny-all one, built for preview 1.
//! * **`poll_oneoff`** is shadowed: wasmtime-wasi's sleeps on the host thread, outside wasm, where the
//!   epoch deadline cannot interrupt it (a guest asking to sleep an hour would hold a host thread for
//!   an hour). Ours sleeps at most until the call's deadline and then fails the call with
//!   `DeadlineExceeded`; fd subscriptions answer at once (stdin is at its end, stdout/stderr are
//!   always writable, no other descriptor exists).
//!
//! `proc_exit` ends the call with an error naming the exit code (wasmtime-wasi unwinds the guest with
//! an `I32Exit`); the instance is then discarded like after any failure.

use std::time::{Duration, SystemTime};

use helios_plugin_schema::abi;
use wasmtime::{Caller, Linker, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::{imports, memory::checked_range, state::HostState};
use crate::component::wasi::{CAPTURE_MAX_BYTES, Capture};

/// The import module of WASI preview 1.
pub(crate) const MODULE: &str = abi::WASI_PREVIEW1_MODULE;

/// The export a WASI reactor runs once after instantiation (wasi-libc's constructors).
pub(crate) const INITIALIZE: &str = "_initialize";

/// Whether `module.name` is a WASI preview 1 function (the schema's table).
pub(crate) fn is_import(module: &str, name: &str) -> bool {
    abi::is_wasi_preview1(module, name)
}

/// The WASI side of one instance: its preview 1 context and the two captured streams.
pub(crate) struct WasiState {
    ctx: WasiP1Ctx,
    stdout: Capture,
    stderr: Capture,
}

impl std::fmt::Debug for WasiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiState").finish_non_exhaustive()
    }
}

impl WasiState {
    /// An empty context: nothing preopened, no env, no args, no network, stdin at its end, stdout
    /// and stderr captured.
    pub(crate) fn new() -> Self {
        let (stdout, stderr) = (Capture::default(), Capture::default());
        let ctx = crate::component::wasi::deny_all_builder(&stdout, &stderr).build_p1();
        WasiState { ctx, stdout, stderr }
    }
}

/// Adds WASI preview 1 to a linker that already has the host surface. The context is the store's
/// own, made with the instance (see `HostState::wasi`).
pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_sync(linker, |s: &mut HostState| {
        &mut s.wasi.get_or_insert_with(|| Box::new(WasiState::new())).ctx
    })?;
    linker.allow_shadowing(true);
    linker.func_wrap(MODULE, "poll_oneoff", poll_oneoff)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Moves what the guest wrote to stdout/stderr during a call into the plugin's log (stdout at info,
/// stderr at warn), one entry per line, under the per-call log caps.
pub(crate) fn flush_streams(state: &mut HostState) {
    if let Some(wasi) = &state.wasi {
        crate::component::wasi::forward(&wasi.stdout, &wasi.stderr, &mut state.call, &state.ctx);
    }
}

// ---- poll_oneoff --------------------------------------------------------------------------------

const POLL_ONEOFF: &str = "wasi_snapshot_preview1.poll_oneoff";
const SUBSCRIPTION_BYTES: usize = 48;
const EVENT_BYTES: usize = 32;
/// More subscriptions than any real program waits on at once.
const MAX_SUBSCRIPTIONS: i32 = 1024;

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: u16 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: u16 = 58;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;
const FDFLAGS_HANGUP: u16 = 1;

struct Event {
    userdata: u64,
    error: u16,
    kind: u8,
    nbytes: u64,
    flags: u16,
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap_or_default())
}

/// `poll_oneoff(in, out, nsubscriptions, nevents_out) -> errno`, bounded by the call's deadline.
fn poll_oneoff(mut caller: Caller<'_, HostState>, inp: i32, outp: i32, n: i32, nevents: i32) -> wasmtime::Result<i32> {
    if n <= 0 || n > MAX_SUBSCRIPTIONS {
        return Ok(ERRNO_INVAL);
    }
    let count = n as usize;
    let (mem, state) = imports::memory(&mut caller, POLL_ONEOFF)?;
    let fault = |what: &str, e: String| imports::fault(POLL_ONEOFF, format!("{what} {e}"));
    let ir =
        checked_range(mem.len(), inp, (count * SUBSCRIPTION_BYTES) as i32).map_err(|e| fault("subscriptions", e))?;
    let or = checked_range(mem.len(), outp, (count * EVENT_BYTES) as i32).map_err(|e| fault("events", e))?;
    let nr = checked_range(mem.len(), nevents, 4).map_err(|e| fault("event count", e))?;

    let mut ready = Vec::new();
    // The earliest clock: how long to wait, and the subscriptions that fire then.
    let mut wait: Option<Duration> = None;
    let mut clocks: Vec<(u64, Duration)> = Vec::new();
    for sub in mem[ir].chunks_exact(SUBSCRIPTION_BYTES) {
        let userdata = le_u64(sub, 0);
        let event = |kind, error, nbytes, flags| Event { userdata, error, kind, nbytes, flags };
        match sub[8] {
            EVENTTYPE_CLOCK => {
                let (id, timeout, flags) = (le_u32(sub, 16), le_u64(sub, 24), le_u16(sub, 40));
                let after = if flags & SUBCLOCKFLAGS_ABSTIME == 0 {
                    Ok(Duration::from_nanos(timeout))
                } else if id == CLOCK_REALTIME {
                    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    Ok(Duration::from_nanos(timeout).saturating_sub(now))
                } else {
                    // An absolute monotonic time is relative to wasmtime-wasi's clock origin: not ours.
                    Err(ERRNO_NOTSUP)
                };
                match after {
                    Ok(d) if id == CLOCK_REALTIME || id == CLOCK_MONOTONIC => {
                        wait = Some(wait.map_or(d, |w| w.min(d)));
                        clocks.push((userdata, d));
                    }
                    Ok(_) => ready.push(event(EVENTTYPE_CLOCK, ERRNO_INVAL as u16, 0, 0)),
                    Err(errno) => ready.push(event(EVENTTYPE_CLOCK, errno, 0, 0)),
                }
            }
            EVENTTYPE_FD_READ => ready.push(match le_u32(sub, 16) {
                // stdin is empty: at its end at once.
                0 => event(EVENTTYPE_FD_READ, 0, 0, FDFLAGS_HANGUP),
                _ => event(EVENTTYPE_FD_READ, ERRNO_BADF, 0, 0),
            }),
            EVENTTYPE_FD_WRITE => ready.push(match le_u32(sub, 16) {
                1 | 2 => event(EVENTTYPE_FD_WRITE, 0, CAPTURE_MAX_BYTES as u64, 0),
                _ => event(EVENTTYPE_FD_WRITE, ERRNO_BADF, 0, 0),
            }),
            _ => return Ok(ERRNO_INVAL),
        }
    }
    if ready.is_empty()
        && let Some(wait) = wait
    {
        let left = state.call.deadline_left(state.ctx.limits.deadline);
        if wait > left {
            std::thread::sleep(left);
            return Err(wasmtime::Error::new(Trap::Interrupt));
        }
        std::thread::sleep(wait);
        ready.extend(clocks.iter().filter(|(_, d)| *d <= wait).map(|&(userdata, _)| Event {
            userdata,
            error: 0,
            kind: EVENTTYPE_CLOCK,
            nbytes: 0,
            flags: 0,
        }));
    }
    let out = &mut mem[or];
    for (slot, e) in out.chunks_exact_mut(EVENT_BYTES).zip(&ready) {
        slot.fill(0);
        slot[0..8].copy_from_slice(&e.userdata.to_le_bytes());
        slot[8..10].copy_from_slice(&e.error.to_le_bytes());
        slot[10] = e.kind;
        slot[16..24].copy_from_slice(&e.nbytes.to_le_bytes());
        slot[24..26].copy_from_slice(&e.flags.to_le_bytes());
    }
    mem[nr].copy_from_slice(&(ready.len() as u32).to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preview1_surface_is_the_whole_witx_and_nothing_else() {
        assert_eq!(abi::WASI_PREVIEW1_FUNCTIONS.len(), 46);
        assert!(is_import(MODULE, "environ_get") && is_import(MODULE, "proc_exit"));
        assert!(!is_import(MODULE, "thread-spawn") && !is_import("wasi_unstable", "fd_write"));
    }
}
