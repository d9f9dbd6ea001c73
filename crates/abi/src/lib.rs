//! The guest SDK of helios-plugin: what a plugin compiled to `wasm32-unknown-unknown` links against.
//!
//! `use helios_plugin_abi::*;` is all a plugin needs:
//!
//! * the wire types of both calling conventions (re-exported from `helios-plugin-schema`),
//! * the attribute macros [`hook`] (HeliosProxy's hook convention) and [`chio_guard`] (chio's guard
//!   convention), which turn an ordinary Rust function into a wasm export,
//! * safe wrappers over the host imports: [`kv_read`], [`kv_write`], [`kv_remove`],
//!   [`sha256_digest_hex`], [`log`], [`get_config`] and [`get_time`]; atomic updates
//!   ([`atomic::kv_add`], [`atomic::kv_compare_and_swap`]) in [`atomic`].
//!
//! ```
//! use helios_plugin_abi::*;
//!
//! #[hook(PreQuery)]
//! fn check(ctx: &QueryContext) -> PreQueryResult {
//!     if ctx.query.to_ascii_lowercase().contains("drop table") {
//!         return PreQueryResult::Block { reason: "DROP TABLE is not allowed".into() };
//!     }
//!     PreQueryResult::Continue
//! }
//!
//! // The function stays an ordinary function: test it natively.
//! let ctx = QueryContext { query: "DROP TABLE users".into(), ..Default::default() };
//! assert!(matches!(check(&ctx), PreQueryResult::Block { .. }));
//! ```
//!
//! On `wasm32` the wrappers call the host's imports (modules `env` and `chio`) and the crate exports
//! the allocator the host writes inputs through ([`alloc_exports`]). On every other target the same
//! wrappers talk to an in-process host kept per thread, so a plugin's unit tests run with a plain
//! `cargo test`; the [`testing`] module sets its config and clock and reads back its logs and KV.
//!
//! **Invariant:** the SDK never allocates on the host's behalf except through the exported allocator,
//! and every name, number and wire type it speaks comes from `helios-plugin-schema`.

use std::fmt;

// The component bindings (wit-bindgen) and the macros name this crate by its absolute path, also
// from inside it.
extern crate self as helios_plugin_abi;

use helios_plugin_schema::abi;
use helios_plugin_schema::limits::{KV_MAX_KEY_BYTES, KV_MAX_VALUE_BYTES};

/// The shared schema (ABI names, limits, wire types), for what the prelude above does not name.
pub use helios_plugin_schema as schema;
pub use helios_plugin_schema::{
    GuardRequest, GuardVerdict, Hook, HookContext, PostQueryEnvelope, PreQueryResult, QueryContext, QueryOutcome,
    RouteResult,
};
pub use helios_plugin_sdk_macros::{chio_guard, hook};
pub use policy::{Bundle, PolicyContext};

pub mod alloc_exports;
pub mod atomic;
#[cfg(all(target_arch = "wasm32", feature = "component"))]
#[doc(hidden)]
pub mod component;
pub mod config;
pub mod facts;
pub mod kv;
pub mod policy;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[doc(hidden)]
pub mod __private;

/// Severity of a log line sent to the host (`chio.log`); defined once, in the schema.
pub use helios_plugin_schema::abi::Level;

/// A host import refused a request or answered outside its contract.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostError {
    /// A KV key is longer than the host accepts (checked before calling the host).
    KeyTooLarge { len: usize, max: usize },
    /// A KV value is longer than the host accepts (checked before calling the host).
    ValueTooLarge { len: usize, max: usize },
    /// The host refused a KV write: the plugin's key count or byte quota is reached.
    Rejected { key: String },
    /// An import returned a code its contract does not allow.
    BadResult { import: &'static str, code: i32 },
    /// `kv_add` on a key that holds something other than a counter.
    NotACounter { key: String },
    /// `kv_add` past the range of `i64`.
    Overflow { key: String },
    /// The host's state store cannot be reached (the host logs which and why). A plugin that enforces
    /// a budget should refuse the request.
    StoreUnavailable,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::KeyTooLarge { len, max } => {
                write!(f, "kv key of {len} bytes is too large (max {max} bytes)")
            }
            HostError::ValueTooLarge { len, max } => {
                write!(f, "kv value of {len} bytes is too large (max {max} bytes)")
            }
            HostError::Rejected { key } => {
                write!(f, "host refused to store kv key {key:?} (the plugin's key or byte quota is reached)")
            }
            HostError::BadResult { import, code } => {
                write!(f, "host import {import} returned {code}, which its contract does not allow")
            }
            HostError::NotACounter { key } => write!(f, "kv key {key:?} does not hold a counter"),
            HostError::Overflow { key } => write!(f, "kv counter {key:?} would overflow"),
            HostError::StoreUnavailable => f.write_str("the host's state store is unavailable"),
        }
    }
}

impl std::error::Error for HostError {}

fn check_key(key: &[u8]) -> Result<(), HostError> {
    if key.len() > KV_MAX_KEY_BYTES {
        return Err(HostError::KeyTooLarge { len: key.len(), max: KV_MAX_KEY_BYTES });
    }
    Ok(())
}

/// Size of the first buffer [`kv_read`] offers the host; larger values cost a second call.
const KV_READ_FIRST_BUFFER: usize = 1024;

/// Reads a key of the plugin's KV namespace. `Ok(None)` when the key is not set.
///
/// Values up to 1 KiB cost one host call, larger ones two. A value above
/// `helios_plugin_schema::limits::KV_MAX_VALUE_BYTES` (possible only on a host that raised its caps)
/// fails with [`HostError::BadResult`].
pub fn kv_read(key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, HostError> {
    let key = key.as_ref();
    check_key(key)?;
    let mut small = [0u8; KV_READ_FIRST_BUFFER];
    match sys::kv_get(key, &mut small) {
        n if n >= 0 => return Ok(Some(small[..n as usize].to_vec())),
        abi::KV_MISSING => return Ok(None),
        abi::KV_BUFFER_TOO_SMALL => {}
        code => return Err(HostError::BadResult { import: abi::KV_GET, code }),
    }
    let mut big = vec![0u8; KV_MAX_VALUE_BYTES];
    match sys::kv_get(key, &mut big) {
        n if n >= 0 && n as usize <= big.len() => {
            big.truncate(n as usize);
            Ok(Some(big))
        }
        // The key was removed between the two calls (another instance of the plugin).
        abi::KV_MISSING => Ok(None),
        code => Err(HostError::BadResult { import: abi::KV_GET, code }),
    }
}

/// Sets a key of the plugin's KV namespace.
pub fn kv_write(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), HostError> {
    let (key, value) = (key.as_ref(), value.as_ref());
    check_key(key)?;
    if value.len() > KV_MAX_VALUE_BYTES {
        return Err(HostError::ValueTooLarge { len: value.len(), max: KV_MAX_VALUE_BYTES });
    }
    match sys::kv_set(key, value) {
        abi::KV_OK => Ok(()),
        abi::KV_ERROR => Err(HostError::Rejected { key: String::from_utf8_lossy(key).into_owned() }),
        code => Err(HostError::BadResult { import: abi::KV_SET, code }),
    }
}

/// Removes a key of the plugin's KV namespace; removing a missing key succeeds.
pub fn kv_remove(key: impl AsRef<[u8]>) -> Result<(), HostError> {
    let key = key.as_ref();
    check_key(key)?;
    match sys::kv_delete(key) {
        abi::KV_OK => Ok(()),
        code => Err(HostError::BadResult { import: abi::KV_DELETE, code }),
    }
}

/// The SHA-256 of `input` as 64 lowercase hex characters, computed by the host.
pub fn sha256_digest_hex(input: impl AsRef<[u8]>) -> Result<String, HostError> {
    let mut out = [0u8; abi::SHA256_HEX_LEN as usize];
    match sys::sha256_hex(input.as_ref(), &mut out) {
        abi::SHA256_HEX_LEN => match std::str::from_utf8(&out) {
            Ok(s) if s.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(s.to_owned()),
            _ => Err(HostError::BadResult { import: abi::SHA256_HEX, code: abi::SHA256_HEX_LEN }),
        },
        code => Err(HostError::BadResult { import: abi::SHA256_HEX, code }),
    }
}

/// Sends a log line to the host. The host truncates long messages and drops lines past its per-call
/// budget (see `helios_plugin_schema::limits`).
pub fn log(level: Level, msg: &str) {
    sys::log(level.code(), msg.as_bytes());
}

/// Size of the first buffer [`get_config`] offers the host; a longer value costs a second call.
const CONFIG_FIRST_BUFFER: usize = 256;

/// A value of the plugin's configuration, bound by the host when it loaded the plugin. Bytes that are
/// not UTF-8 are replaced with U+FFFD.
pub fn get_config(key: &str) -> Option<String> {
    let mut buf = vec![0u8; CONFIG_FIRST_BUFFER];
    // The second call asks for the full length the first one reported. The value can only change in
    // between if the host swaps the plugin's config, hence a few tries rather than exactly two.
    let mut tries = 1;
    loop {
        let n = sys::get_config(key.as_bytes(), &mut buf);
        if n < 0 {
            // CONFIG_MISSING, or a code outside the contract: either way there is no value.
            return None;
        }
        let n = n as usize;
        if n <= buf.len() || tries == CONFIG_TRIES {
            // Fits, or kept growing: keep what this call wrote.
            buf.truncate(n.min(buf.len()));
            return Some(into_string(buf));
        }
        buf = vec![0u8; n];
        tries += 1;
    }
}

const CONFIG_TRIES: usize = 4;

fn into_string(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The host clock, in seconds since the Unix epoch.
pub fn get_time() -> i64 {
    sys::get_time_unix_secs()
}
