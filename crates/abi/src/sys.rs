//! The raw host surface behind the safe wrappers, with slices instead of pointers.
//!
//! On `wasm32` each function calls one import of the host (`env.*`, `chio.*`, names and codes in
//! `helios_plugin_schema::abi`). Elsewhere it calls the in-process host of [`crate::testing`], which
//! follows the same contract (same return codes, same caps), so the wrappers' buffer handling is the
//! code that runs in both places.

#[cfg(all(target_arch = "wasm32", not(feature = "component")))]
pub(crate) use wasm::*;

#[cfg(all(target_arch = "wasm32", feature = "component"))]
pub(crate) use component::*;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::sys::*;

/// A component guard's host surface: `chio:guard/host@0.2.0` through wit-bindgen. The world has no
/// KV and no hashing import: those wrappers answer with their error codes.
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    use crate::component::chio::guard::host;
    use helios_plugin_schema::abi;

    pub(crate) fn kv_get(_key: &[u8], _buf: &mut [u8]) -> i32 {
        abi::KV_MISSING
    }
    pub(crate) fn kv_set(_key: &[u8], _value: &[u8]) -> i32 {
        abi::KV_ERROR
    }
    pub(crate) fn kv_delete(_key: &[u8]) -> i32 {
        abi::KV_ERROR
    }
    pub(crate) fn kv_add(_key: &[u8], _delta: i64, _out: &mut [u8; 8]) -> i32 {
        abi::KV_UNAVAILABLE
    }
    pub(crate) fn kv_cas(_key: &[u8], _expected: Option<&[u8]>, _new: &[u8]) -> i32 {
        abi::KV_UNAVAILABLE
    }
    pub(crate) fn sha256_hex(_input: &[u8], _out: &mut [u8; abi::SHA256_HEX_LEN as usize]) -> i32 {
        abi::SHA256_ERROR
    }
    pub(crate) fn log(level: i32, msg: &[u8]) {
        host::log(level as u32, &String::from_utf8_lossy(msg));
    }
    pub(crate) fn get_config(key: &[u8], buf: &mut [u8]) -> i32 {
        let Some(value) = std::str::from_utf8(key).ok().and_then(host::get_config) else {
            return abi::CONFIG_MISSING;
        };
        let n = value.len().min(buf.len());
        buf[..n].copy_from_slice(&value.as_bytes()[..n]);
        value.len() as i32
    }
    pub(crate) fn get_time_unix_secs() -> i64 {
        host::get_time_unix_secs() as i64
    }
}

#[cfg(all(target_arch = "wasm32", not(feature = "component")))]
mod wasm {
    // One extern block per import module. Link names must be literals, so they spell the names of
    // `helios_plugin_schema::abi` (KV_GET, ...) once more; the wasm build check in
    // crates/abi/tests (no foreign import) keeps them in step.
    mod env {
        #[link(wasm_import_module = "env")]
        unsafe extern "C" {
            pub fn kv_get(key_ptr: i32, key_len: i32, val_ptr: i32, val_max: i32) -> i32;
            pub fn kv_set(key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32) -> i32;
            pub fn kv_delete(key_ptr: i32, key_len: i32) -> i32;
            pub fn kv_add(key_ptr: i32, key_len: i32, delta: i64, out_ptr: i32) -> i32;
            pub fn kv_cas(key_ptr: i32, key_len: i32, exp_ptr: i32, exp_len: i32, new_ptr: i32, new_len: i32) -> i32;
            pub fn sha256_hex(in_ptr: i32, in_len: i32, out_ptr: i32) -> i32;
        }
    }

    mod chio {
        #[link(wasm_import_module = "chio")]
        unsafe extern "C" {
            pub fn log(level: i32, ptr: i32, len: i32);
            pub fn get_config(key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32) -> i32;
            pub fn get_time_unix_secs() -> i64;
        }
    }

    // Addresses and lengths fit in i32: the wasm32 address space is 32 bits and the host reads them
    // back as u32.
    fn ptr(s: &[u8]) -> i32 {
        s.as_ptr() as usize as i32
    }
    fn ptr_mut(s: &mut [u8]) -> i32 {
        s.as_mut_ptr() as usize as i32
    }
    fn len(s: &[u8]) -> i32 {
        s.len() as i32
    }

    pub(crate) fn kv_get(key: &[u8], buf: &mut [u8]) -> i32 {
        let buf_len = len(buf);
        // SAFETY: `key` and `buf` are live slices of this module's memory for the whole call; the host
        // only reads `key` and writes at most `buf.len()` bytes into `buf`.
        unsafe { env::kv_get(ptr(key), len(key), ptr_mut(buf), buf_len) }
    }

    pub(crate) fn kv_set(key: &[u8], value: &[u8]) -> i32 {
        // SAFETY: the host only reads the two live slices.
        unsafe { env::kv_set(ptr(key), len(key), ptr(value), len(value)) }
    }

    pub(crate) fn kv_delete(key: &[u8]) -> i32 {
        // SAFETY: the host only reads the live slice.
        unsafe { env::kv_delete(ptr(key), len(key)) }
    }

    pub(crate) fn kv_add(key: &[u8], delta: i64, out: &mut [u8; 8]) -> i32 {
        // SAFETY: the host reads `key` and writes exactly 8 bytes into `out`, which has 8.
        unsafe { env::kv_add(ptr(key), len(key), delta, out.as_mut_ptr() as usize as i32) }
    }

    pub(crate) fn kv_cas(key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> i32 {
        let (ep, el) = match expected {
            Some(e) => (ptr(e), len(e)),
            None => (0, helios_plugin_schema::abi::KV_CAS_EXPECT_MISSING),
        };
        // SAFETY: the host only reads the live slices.
        unsafe { env::kv_cas(ptr(key), len(key), ep, el, ptr(new), len(new)) }
    }

    pub(crate) fn sha256_hex(input: &[u8], out: &mut [u8; 64]) -> i32 {
        // SAFETY: the host reads `input` and writes exactly 64 bytes into `out`, which has 64.
        unsafe { env::sha256_hex(ptr(input), len(input), ptr_mut(out)) }
    }

    pub(crate) fn log(level: i32, msg: &[u8]) {
        // SAFETY: the host only reads the live slice.
        unsafe { chio::log(level, ptr(msg), len(msg)) }
    }

    pub(crate) fn get_config(key: &[u8], buf: &mut [u8]) -> i32 {
        let buf_len = len(buf);
        // SAFETY: the host reads `key` and writes at most `buf.len()` bytes into `buf`.
        unsafe { chio::get_config(ptr(key), len(key), ptr_mut(buf), buf_len) }
    }

    pub(crate) fn get_time_unix_secs() -> i64 {
        // SAFETY: no memory is shared.
        unsafe { chio::get_time_unix_secs() }
    }
}
