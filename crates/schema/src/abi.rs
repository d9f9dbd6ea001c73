//! Export names, import names and return codes of the two calling conventions.
//!
//! * The **hook convention** (HeliosProxy's): one export per hook, named after it
//!   ([`crate::Hook::export_name`]), `fn(ptr: i32, len: i32) -> i64` over a JSON input the host wrote
//!   at `alloc(len)`, returning `(result_ptr << 32) | result_len` of a JSON result.
//! * The **guard convention** (chio's core ABI): `evaluate(ptr: i32, len: i32) -> i32` returning
//!   [`VERDICT_ALLOW`] or [`VERDICT_DENY`], with the reason read through [`CHIO_DENY_REASON`].
//!
//! Both conventions see the same import surface: [`ENV_MODULE`] and [`CHIO_MODULE`].

/// The linear memory every plugin must export.
pub const MEMORY: &str = "memory";

// ---- hook convention -------------------------------------------------------------------------
/// `alloc(size: i32) -> i32`: the host asks the guest for `size` bytes to write an input into.
pub const ALLOC: &str = "alloc";
/// `dealloc(ptr: i32, size: i32)`: the host hands back an input buffer or a result buffer.
pub const DEALLOC: &str = "dealloc";

// ---- guard convention ------------------------------------------------------------------------
/// `evaluate(ptr: i32, len: i32) -> i32`: judge the JSON [`crate::GuardRequest`] at `ptr..ptr+len`.
pub const EVALUATE: &str = "evaluate";
/// `chio_alloc(size: i32) -> i32` (optional): where the host writes the request. Missing, 0 or out of
/// bounds ⇒ the host writes at offset 0.
pub const CHIO_ALLOC: &str = "chio_alloc";
/// `chio_free(ptr: i32, size: i32)` (optional).
pub const CHIO_FREE: &str = "chio_free";
/// `chio_deny_reason(buf_ptr: i32, buf_len: i32) -> i32` (optional): writes `{"reason": "..."}` (or
/// plain UTF-8) into the host-chosen buffer and returns the bytes written, or [`DENY_REASON_NONE`].
pub const CHIO_DENY_REASON: &str = "chio_deny_reason";

/// `evaluate` result: allow.
pub const VERDICT_ALLOW: i32 = 0;
/// `evaluate` result: deny. Any other value is a malformed verdict and denies too (fail-closed).
pub const VERDICT_DENY: i32 = 1;
/// `chio_deny_reason` result when the guest has no reason to give.
pub const DENY_REASON_NONE: i32 = -1;

// ---- imports ---------------------------------------------------------------------------------
/// Import module of the key-value store and hashing imports (HeliosProxy's).
pub const ENV_MODULE: &str = "env";
/// Import module of the log, config and clock imports (chio's).
pub const CHIO_MODULE: &str = "chio";
/// Import module of the content-bundle imports of a core-module guard (chio's world 0.2.0, see
/// wit/README.md).
pub const GUARD_HOST_MODULE: &str = "chio:guard/host@0.2.0";

/// `env.kv_get(key_ptr, key_len, val_ptr, val_max) -> i32`: bytes written, [`KV_MISSING`] or
/// [`KV_BUFFER_TOO_SMALL`].
pub const KV_GET: &str = "kv_get";
/// `env.kv_set(key_ptr, key_len, val_ptr, val_len) -> i32`: [`KV_OK`], or [`KV_ERROR`] on a cap breach.
pub const KV_SET: &str = "kv_set";
/// `env.kv_delete(key_ptr, key_len) -> i32`: [`KV_OK`] whether or not the key existed.
pub const KV_DELETE: &str = "kv_delete";
/// `env.kv_add(key_ptr, key_len, delta: i64, out_ptr) -> i32`: atomically adds `delta` to the
/// counter under the key (a missing key counts as 0; see [`counter_value`]) and writes the new value
/// as 8 little-endian bytes at `out_ptr`. Returns [`KV_OK`], [`KV_ERROR`] (a size or cap breach),
/// [`KV_NOT_A_COUNTER`], [`KV_OVERFLOW`] or [`KV_UNAVAILABLE`]; nothing is written unless [`KV_OK`].
pub const KV_ADD: &str = "kv_add";
/// `env.kv_cas(key_ptr, key_len, expected_ptr, expected_len, new_ptr, new_len) -> i32`: atomically
/// replaces the value with the new one if it equals the expected one; `expected_len` =
/// [`KV_CAS_EXPECT_MISSING`] expects the key to be missing. Returns [`KV_OK`] (swapped),
/// [`KV_CAS_CONFLICT`] (the value differed; nothing written), [`KV_ERROR`] or [`KV_UNAVAILABLE`].
pub const KV_CAS: &str = "kv_cas";
/// `env.sha256_hex(in_ptr, in_len, out_ptr) -> i32`: writes 64 lowercase hex bytes and returns
/// [`SHA256_HEX_LEN`], or -1.
pub const SHA256_HEX: &str = "sha256_hex";
/// `chio.log(level: i32, ptr: i32, len: i32)`: levels [`LOG_TRACE`]..=[`LOG_ERROR`]; others dropped.
pub const LOG: &str = "log";
/// `chio.get_config(key_ptr, key_len, val_ptr, val_len) -> i32`: the length of the full value (of
/// which at most `val_len` bytes were written), or [`CONFIG_MISSING`].
pub const GET_CONFIG: &str = "get_config";
/// `chio.get_time_unix_secs() -> i64`: the host clock.
pub const GET_TIME_UNIX_SECS: &str = "get_time_unix_secs";
/// `chio:guard/host@0.2.0.bundle-open(id_ptr, id_len) -> i32`: opens the declared bundle whose id
/// (`sha256:<hex>`) is at `id_ptr` for this evaluation and returns its handle (0, 1, ... in the
/// order opened). An undeclared or missing bundle, or a flood of handles, fails the call.
pub const BUNDLE_OPEN: &str = "bundle-open";
/// `chio:guard/host@0.2.0.fetch-blob(handle, offset: i64, len, out_ptr) -> i32`: copies at most `len`
/// bytes at `offset` of the bundle into `out_ptr` and returns how many, or [`BLOB_BAD_HANDLE`], or
/// [`BLOB_OVER_CAP`] when `len` is over `limits::BUNDLE_READ_MAX_BYTES`.
pub const FETCH_BLOB: &str = "fetch-blob";
pub const BLOB_BAD_HANDLE: i32 = -1;
pub const BLOB_OVER_CAP: i32 = -2;

pub const KV_OK: i32 = 0;
pub const KV_MISSING: i32 = -1;
pub const KV_ERROR: i32 = -1;
pub const KV_BUFFER_TOO_SMALL: i32 = -2;
/// `kv_add`: the key holds something other than a counter.
pub const KV_NOT_A_COUNTER: i32 = -3;
/// `kv_add`: the sum does not fit a signed 64-bit integer.
pub const KV_OVERFLOW: i32 = -4;
/// `kv_add`, `kv_cas`: the host's state store cannot be reached; a budget should fail closed.
pub const KV_UNAVAILABLE: i32 = -5;
/// `kv_cas`: the value was not the expected one.
pub const KV_CAS_CONFLICT: i32 = 1;
/// `kv_cas`'s `expected_len` for "the key must be missing".
pub const KV_CAS_EXPECT_MISSING: i32 = -1;
pub const CONFIG_MISSING: i32 = -1;
pub const SHA256_HEX_LEN: i32 = 64;
pub const SHA256_ERROR: i32 = -1;

pub const LOG_TRACE: i32 = 0;
pub const LOG_DEBUG: i32 = 1;
pub const LOG_INFO: i32 = 2;
pub const LOG_WARN: i32 = 3;
pub const LOG_ERROR: i32 = 4;

/// Severity of a log line sent to the host (`chio.log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// The level code on the wire ([`LOG_TRACE`]..=[`LOG_ERROR`]).
    pub const fn code(self) -> i32 {
        match self {
            Level::Trace => LOG_TRACE,
            Level::Debug => LOG_DEBUG,
            Level::Info => LOG_INFO,
            Level::Warn => LOG_WARN,
            Level::Error => LOG_ERROR,
        }
    }

    /// The level of a wire code, or `None` for a code the host drops.
    pub const fn from_code(code: i32) -> Option<Level> {
        match code {
            LOG_TRACE => Some(Level::Trace),
            LOG_DEBUG => Some(Level::Debug),
            LOG_INFO => Some(Level::Info),
            LOG_WARN => Some(Level::Warn),
            LOG_ERROR => Some(Level::Error),
            _ => None,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// The value of a KV counter, as `kv_add` reads and writes it: the canonical decimal text of a
/// signed 64-bit integer (what `i64::to_string` writes and Redis's `HINCRBY` accepts: no `+`, no
/// leading zeros, no `-0`). `None` for anything else.
pub fn counter_value(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let n: i64 = text.parse().ok()?;
    (n.to_string() == text).then_some(n)
}

/// Prefix of the log line the SDK's panic hook sends, so a host can attach it to the trap it causes.
pub const PANIC_LOG_PREFIX: &str = "guest panicked: ";

/// A wasm value type of the ABI (every export and import uses only these two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValType {
    I32,
    I64,
}

impl ValType {
    /// The type's name in WAT and in Rust (`i32`, `i64`).
    pub const fn name(self) -> &'static str {
        match self {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
        }
    }
}

use ValType::{I32, I64};

/// A function signature of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sig {
    pub params: &'static [ValType],
    pub results: &'static [ValType],
}

impl std::fmt::Display for Sig {
    /// `(i32, i32) -> (i64)`, the form load errors print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[ValType]| v.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ");
        write!(f, "({}) -> ({})", list(self.params), list(self.results))
    }
}

/// One import of the host surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSig {
    pub module: &'static str,
    pub name: &'static str,
    pub sig: Sig,
}

/// Every import a plugin may declare. Anything else is refused at load.
pub const IMPORTS: &[ImportSig] = &[
    ImportSig { module: ENV_MODULE, name: KV_GET, sig: Sig { params: &[I32, I32, I32, I32], results: &[I32] } },
    ImportSig { module: ENV_MODULE, name: KV_SET, sig: Sig { params: &[I32, I32, I32, I32], results: &[I32] } },
    ImportSig { module: ENV_MODULE, name: KV_DELETE, sig: Sig { params: &[I32, I32], results: &[I32] } },
    ImportSig { module: ENV_MODULE, name: KV_ADD, sig: Sig { params: &[I32, I32, I64, I32], results: &[I32] } },
    ImportSig {
        module: ENV_MODULE,
        name: KV_CAS,
        sig: Sig { params: &[I32, I32, I32, I32, I32, I32], results: &[I32] },
    },
    ImportSig { module: ENV_MODULE, name: SHA256_HEX, sig: Sig { params: &[I32, I32, I32], results: &[I32] } },
    ImportSig { module: CHIO_MODULE, name: LOG, sig: Sig { params: &[I32, I32, I32], results: &[] } },
    ImportSig { module: CHIO_MODULE, name: GET_CONFIG, sig: Sig { params: &[I32, I32, I32, I32], results: &[I32] } },
    ImportSig { module: CHIO_MODULE, name: GET_TIME_UNIX_SECS, sig: Sig { params: &[], results: &[I64] } },
    ImportSig { module: GUARD_HOST_MODULE, name: BUNDLE_OPEN, sig: Sig { params: &[I32, I32], results: &[I32] } },
    ImportSig {
        module: GUARD_HOST_MODULE,
        name: FETCH_BLOB,
        sig: Sig { params: &[I32, I64, I32, I32], results: &[I32] },
    },
];

/// Which calling convention an export belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Convention {
    /// HeliosProxy's hooks: one export per hook of the catalogue, plus `alloc`/`dealloc`.
    Hook,
    /// chio's guard: `evaluate`, plus the optional `chio_alloc`, `chio_free`, `chio_deny_reason`.
    Guard,
}

/// One export of a calling convention (besides the per-hook exports, which all have [`HOOK_SIG`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSig {
    pub name: &'static str,
    pub convention: Convention,
    pub sig: Sig,
    /// Whether a module speaking the convention must export it.
    pub required: bool,
}

/// The signature of every hook export: `fn(ptr: i32, len: i32) -> i64` (packed result pointer and length).
pub const HOOK_SIG: Sig = Sig { params: &[I32, I32], results: &[I64] };

/// Every fixed-name export of the two conventions, with its signature. Hosts check modules against it
/// and the SDK macros generate exports from it.
pub const EXPORTS: &[ExportSig] = &[
    ExportSig {
        name: ALLOC,
        convention: Convention::Hook,
        sig: Sig { params: &[I32], results: &[I32] },
        required: true,
    },
    ExportSig {
        name: DEALLOC,
        convention: Convention::Hook,
        sig: Sig { params: &[I32, I32], results: &[] },
        required: false,
    },
    ExportSig {
        name: EVALUATE,
        convention: Convention::Guard,
        sig: Sig { params: &[I32, I32], results: &[I32] },
        required: true,
    },
    ExportSig {
        name: CHIO_ALLOC,
        convention: Convention::Guard,
        sig: Sig { params: &[I32], results: &[I32] },
        required: false,
    },
    ExportSig {
        name: CHIO_FREE,
        convention: Convention::Guard,
        sig: Sig { params: &[I32, I32], results: &[] },
        required: false,
    },
    ExportSig {
        name: CHIO_DENY_REASON,
        convention: Convention::Guard,
        sig: Sig { params: &[I32, I32], results: &[I32] },
        required: false,
    },
];

/// Looks up a fixed-name export of either convention.
pub fn export(name: &str) -> Option<&'static ExportSig> {
    EXPORTS.iter().find(|e| e.name == name)
}

/// Looks up an import of the host surface.
pub fn import(module: &str, name: &str) -> Option<&'static ImportSig> {
    IMPORTS.iter().find(|s| s.module == module && s.name == name)
}

/// The import module of WASI preview 1 (modules built for `wasm32-wasip1`).
pub const WASI_PREVIEW1_MODULE: &str = "wasi_snapshot_preview1";

/// Every function of WASI preview 1 (`wasi_snapshot_preview1.witx`). A module may import any of them
/// (the host serves them from a deny-all context); anything else from this module is refused at
/// load, before compilation, like any unknown import.
pub const WASI_PREVIEW1_FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Whether `module.name` is a WASI preview 1 function.
pub fn is_wasi_preview1(module: &str, name: &str) -> bool {
    module == WASI_PREVIEW1_MODULE && WASI_PREVIEW1_FUNCTIONS.contains(&name)
}

/// Packs a hook result pointer and length the way hook exports return them.
pub const fn pack_ptr_len(ptr: u32, len: u32) -> i64 {
    (((ptr as u64) << 32) | len as u64) as i64
}

/// Splits a hook export's return value into (pointer, length).
pub const fn unpack_ptr_len(packed: i64) -> (u32, u32) {
    let v = packed as u64;
    ((v >> 32) as u32, v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_at_the_edges() {
        for (p, l) in [(0, 0), (1, 2), (u32::MAX, u32::MAX), (0x8000_0000, 7)] {
            assert_eq!(unpack_ptr_len(pack_ptr_len(p, l)), (p, l));
        }
    }

    #[test]
    fn every_fixed_export_is_listed_once_with_its_convention() {
        for e in EXPORTS {
            assert_eq!(EXPORTS.iter().filter(|x| x.name == e.name).count(), 1, "{}", e.name);
        }
        assert_eq!(export(EVALUATE).unwrap().convention, Convention::Guard);
        assert_eq!(export(ALLOC).unwrap().sig.to_string(), "(i32) -> (i32)");
        assert_eq!(HOOK_SIG.to_string(), "(i32, i32) -> (i64)");
        assert!(export("pre_query").is_none(), "hook exports are named by the catalogue, typed by HOOK_SIG");
    }

    #[test]
    fn import_surface_is_exactly_the_three_modules() {
        assert!(IMPORTS.iter().all(|s| [ENV_MODULE, CHIO_MODULE, GUARD_HOST_MODULE].contains(&s.module)));
        assert!(import("env", "kv_get").is_some());
        assert!(import("env", "fd_write").is_none());
        assert!(import("wasi_snapshot_preview1", "fd_write").is_none());
    }
}
