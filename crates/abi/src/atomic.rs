//! Atomic updates of the plugin's KV namespace: a counter add and a compare-and-swap.
//!
//! `kv_read` then `kv_write` is not atomic: two instances of a plugin (two threads, or two replicas
//! sharing one store) updating the same key can lose an update. These two calls are atomic in every
//! host backend (memory, SQLite, Redis):
//!
//! * [`kv_add`] adds to a **counter** — the canonical decimal text of a signed 64-bit integer (what
//!   `i64::to_string` writes; `kv_read` returns that text) — and returns the new value. A missing key
//!   counts as 0.
//! * [`kv_compare_and_swap`] replaces a value only if it still is what the plugin read (or is still
//!   missing), so a chain's tail advances by exactly one writer at a time; retry on
//!   [`Swap::Conflict`].
//!
//! ```
//! use helios_plugin_abi::{atomic::{kv_add, kv_compare_and_swap, Swap}, testing};
//!
//! testing::reset();
//! assert_eq!(kv_add("tenant:acme:spent", 5)?, 5);
//! assert_eq!(kv_add("tenant:acme:spent", 2)?, 7);
//! assert_eq!(kv_compare_and_swap("tail", None, b"h1")?, Swap::Done);
//! assert_eq!(kv_compare_and_swap("tail", None, b"h2")?, Swap::Conflict);
//! # Ok::<(), helios_plugin_abi::HostError>(())
//! ```

use helios_plugin_schema::abi;
use helios_plugin_schema::limits::KV_MAX_VALUE_BYTES;

use crate::{HostError, check_key, sys};

/// What [`kv_compare_and_swap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Swap {
    /// The value was what the plugin expected and is now the new one.
    Done,
    /// The value was something else (another instance wrote first); nothing was written.
    Conflict,
}

fn refused(import: &'static str, key: &[u8], code: i32) -> HostError {
    match code {
        abi::KV_ERROR => HostError::Rejected { key: String::from_utf8_lossy(key).into_owned() },
        abi::KV_NOT_A_COUNTER => HostError::NotACounter { key: String::from_utf8_lossy(key).into_owned() },
        abi::KV_OVERFLOW => HostError::Overflow { key: String::from_utf8_lossy(key).into_owned() },
        abi::KV_UNAVAILABLE => HostError::StoreUnavailable,
        code => HostError::BadResult { import, code },
    }
}

/// Atomically adds `delta` to the counter under `key` (missing: 0) and returns the new value.
///
/// Fails with [`HostError::NotACounter`] if the key holds something else, [`HostError::Overflow`] if
/// the sum leaves `i64`, [`HostError::Rejected`] at the key or byte cap, and
/// [`HostError::StoreUnavailable`] when the host's store cannot be reached — a plugin that enforces
/// a budget should then refuse (fail closed).
pub fn kv_add(key: impl AsRef<[u8]>, delta: i64) -> Result<i64, HostError> {
    let key = key.as_ref();
    check_key(key)?;
    let mut out = [0u8; 8];
    match sys::kv_add(key, delta, &mut out) {
        abi::KV_OK => Ok(i64::from_le_bytes(out)),
        code => Err(refused(abi::KV_ADD, key, code)),
    }
}

/// Atomically replaces the value under `key` with `new` if it is `expected` (`None`: if the key is
/// missing). [`Swap::Conflict`] means another writer changed it first: read again and retry.
pub fn kv_compare_and_swap(
    key: impl AsRef<[u8]>,
    expected: Option<&[u8]>,
    new: impl AsRef<[u8]>,
) -> Result<Swap, HostError> {
    let (key, new) = (key.as_ref(), new.as_ref());
    check_key(key)?;
    for v in [Some(new), expected].into_iter().flatten() {
        if v.len() > KV_MAX_VALUE_BYTES {
            return Err(HostError::ValueTooLarge { len: v.len(), max: KV_MAX_VALUE_BYTES });
        }
    }
    match sys::kv_cas(key, expected, new) {
        abi::KV_OK => Ok(Swap::Done),
        abi::KV_CAS_CONFLICT => Ok(Swap::Conflict),
        code => Err(refused(abi::KV_CAS, key, code)),
    }
}
