//! An in-process host for a plugin's native unit tests (not built for `wasm32`).
//!
//! On a native target the SDK's wrappers ([`crate::kv_read`], [`crate::get_config`], ...) talk to
//! this host instead of wasm imports. It keeps its state per thread, and `cargo test` runs every test
//! on its own thread, so tests never see each other's KV, config, logs or clock. It follows the real
//! host's contract: the same return codes, KV caps ([`KV_MAX_KEY_BYTES`], [`KV_MAX_VALUE_BYTES`],
//! [`KV_MAX_KEYS`], [`KV_MAX_TOTAL_BYTES`]), real SHA-256 and log messages truncated at
//! [`LOG_MAX_MESSAGE_BYTES`].
//!
//! ```
//! use helios_plugin_abi::{Level, get_config, log, testing};
//!
//! testing::reset();
//! testing::set_config("denylist", "rm, curl");
//! assert_eq!(get_config("denylist").as_deref(), Some("rm, curl"));
//! log(Level::Warn, "careful");
//! assert_eq!(testing::logs(), vec![(Level::Warn, "careful".to_owned())]);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use helios_plugin_schema::limits::{
    KV_MAX_KEY_BYTES, KV_MAX_KEYS, KV_MAX_TOTAL_BYTES, KV_MAX_VALUE_BYTES, LOG_MAX_MESSAGE_BYTES,
};

use crate::Level;

#[derive(Default)]
struct Host {
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    config: BTreeMap<String, String>,
    logs: Vec<(Level, String)>,
    /// `None`: the system clock.
    time: Option<i64>,
    /// Set by [`set_store_unavailable`]: the KV imports fail as with an unreachable store.
    unavailable: bool,
    /// Content bundles by id, as the plugin's manifest would declare them.
    bundles: std::collections::HashMap<String, std::sync::Arc<[u8]>>,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
    /// Bumped whenever this thread's config may have changed; [`crate::config::InstanceConfig`]
    /// parses again when it moved.
    static CONFIG_GENERATION: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn config_changed() {
    CONFIG_GENERATION.with(|g| g.set(g.get() + 1));
}

/// The config generation of this thread (see [`CONFIG_GENERATION`]).
pub(crate) fn config_generation() -> u64 {
    CONFIG_GENERATION.with(|g| g.get())
}

fn with<R>(f: impl FnOnce(&mut Host) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

/// Clears this thread's KV, config and logs, and puts the clock back on system time.
pub fn reset() {
    config_changed();
    with(|h| *h = Host::default());
}

/// Sets a config value, as a host would from the plugin's configuration.
pub fn set_config(key: &str, value: &str) {
    config_changed();
    with(|h| h.config.insert(key.to_owned(), value.to_owned()));
}

/// Declares content bundle `id` with `bytes` for [`crate::PolicyContext`] (until [`reset`]). The id
/// is used as given: a test may declare any string.
pub fn set_bundle(id: &str, bytes: &[u8]) {
    with(|h| h.bundles.insert(id.to_owned(), std::sync::Arc::from(bytes)));
}

pub(crate) fn bundle(id: &str) -> Option<std::sync::Arc<[u8]>> {
    with(|h| h.bundles.get(id).cloned())
}

/// Pins the clock [`crate::get_time`] reads (until [`reset`]).
pub fn set_time(unix_secs: i64) {
    with(|h| h.time = Some(unix_secs));
}

/// Every line logged on this thread since the last [`reset`], oldest first.
pub fn logs() -> Vec<(Level, String)> {
    with(|h| h.logs.clone())
}

/// Makes this thread's store behave as unreachable (`true`) or reachable again: `kv_add` and
/// `kv_cas` answer "unavailable", so a plugin's fail-closed path can be tested.
pub fn set_store_unavailable(unavailable: bool) {
    with(|h| h.unavailable = unavailable);
}

/// A copy of this thread's KV store.
pub fn kv_snapshot() -> BTreeMap<Vec<u8>, Vec<u8>> {
    with(|h| h.kv.clone())
}

/// The raw host surface of [`crate::sys`], with the real host's return codes.
pub(crate) mod sys {
    use helios_plugin_schema::abi;
    use sha2::{Digest, Sha256};

    use super::*;

    pub(crate) fn kv_get(key: &[u8], buf: &mut [u8]) -> i32 {
        with(|h| match h.kv.get(key) {
            None => abi::KV_MISSING,
            Some(v) if v.len() > buf.len() => abi::KV_BUFFER_TOO_SMALL,
            Some(v) => {
                buf[..v.len()].copy_from_slice(v);
                v.len() as i32
            }
        })
    }

    pub(crate) fn kv_set(key: &[u8], value: &[u8]) -> i32 {
        if key.len() > KV_MAX_KEY_BYTES || value.len() > KV_MAX_VALUE_BYTES {
            return abi::KV_ERROR;
        }
        with(|h| {
            let old = h.kv.get(key).map(|v| key.len() + v.len());
            if old.is_none() && h.kv.len() >= KV_MAX_KEYS {
                return abi::KV_ERROR;
            }
            let total: usize = h.kv.iter().map(|(k, v)| k.len() + v.len()).sum();
            if total - old.unwrap_or(0) + key.len() + value.len() > KV_MAX_TOTAL_BYTES {
                return abi::KV_ERROR;
            }
            h.kv.insert(key.to_vec(), value.to_vec());
            abi::KV_OK
        })
    }

    pub(crate) fn kv_add(key: &[u8], delta: i64, out: &mut [u8; 8]) -> i32 {
        if with(|h| h.unavailable) {
            return abi::KV_UNAVAILABLE;
        }
        let old = match with(|h| h.kv.get(key).cloned()) {
            None => 0,
            Some(v) => match abi::counter_value(&v) {
                Some(n) => n,
                None => return abi::KV_NOT_A_COUNTER,
            },
        };
        let Some(new) = old.checked_add(delta) else { return abi::KV_OVERFLOW };
        match kv_set(key, new.to_string().as_bytes()) {
            abi::KV_OK => {
                *out = new.to_le_bytes();
                abi::KV_OK
            }
            code => code,
        }
    }

    pub(crate) fn kv_cas(key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> i32 {
        if with(|h| h.unavailable) {
            return abi::KV_UNAVAILABLE;
        }
        if with(|h| h.kv.get(key).map(Vec::as_slice) != expected) {
            return abi::KV_CAS_CONFLICT;
        }
        kv_set(key, new)
    }

    pub(crate) fn kv_delete(key: &[u8]) -> i32 {
        with(|h| h.kv.remove(key));
        abi::KV_OK
    }

    pub(crate) fn sha256_hex(input: &[u8], out: &mut [u8; 64]) -> i32 {
        out.copy_from_slice(hex::encode(Sha256::digest(input)).as_bytes());
        abi::SHA256_HEX_LEN
    }

    pub(crate) fn log(level: i32, msg: &[u8]) {
        let Some(level) = Level::from_code(level) else { return };
        let mut end = msg.len().min(LOG_MAX_MESSAGE_BYTES);
        let text = loop {
            // Cut at a UTF-8 boundary at or below the cap (the wrapper only sends `&str`).
            match std::str::from_utf8(&msg[..end]) {
                Ok(s) => break s.to_owned(),
                Err(e) if e.error_len().is_none() => end = e.valid_up_to(),
                Err(_) => break String::from_utf8_lossy(&msg[..end]).into_owned(),
            }
        };
        with(|h| h.logs.push((level, text)));
    }

    pub(crate) fn get_config(key: &[u8], buf: &mut [u8]) -> i32 {
        let Ok(key) = std::str::from_utf8(key) else { return abi::CONFIG_MISSING };
        with(|h| match h.config.get(key) {
            None => abi::CONFIG_MISSING,
            Some(v) => {
                let n = v.len().min(buf.len());
                buf[..n].copy_from_slice(&v.as_bytes()[..n]);
                v.len() as i32
            }
        })
    }

    pub(crate) fn get_time_unix_secs() -> i64 {
        with(|h| h.time).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
        })
    }
}
