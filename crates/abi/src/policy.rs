//! [`PolicyContext`]: the content bundles a guard's manifest declares, read by SHA-256 id
//! (`sha256:<64 hex>`). The same code runs as a core module (imports `bundle-open`/`fetch-blob` of
//! `chio:guard/host@0.2.0`), as a component (the `bundle-handle` resource of
//! `chio:guard/policy-context@0.2.0`, feature `component`) and natively (bundles set with
//! [`crate::testing::set_bundle`]).
//!
//! Opening a bundle the manifest does not declare fails the evaluation (the host denies, naming the
//! bundle): a guard cannot probe for bundles. A handle lives for the current evaluation only.

use helios_plugin_schema::limits::BUNDLE_READ_MAX_BYTES;

/// The bundles of the current evaluation.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyContext;

/// One open bundle.
#[derive(Debug)]
pub struct Bundle {
    inner: imp::Handle,
}

impl PolicyContext {
    /// Opens bundle `id` (`sha256:<64 lowercase hex>`) for this evaluation.
    pub fn open(&self, id: &str) -> Bundle {
        Bundle { inner: imp::open(id) }
    }
}

impl Bundle {
    /// At most `len` bytes (at most 64 KiB) at `offset`; empty at or past the end.
    pub fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        imp::read(&self.inner, offset, len)
    }

    /// The whole bundle, in reads of the largest size the host allows.
    pub fn read_to_end(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        loop {
            let chunk = self.read(out.len() as u64, BUNDLE_READ_MAX_BYTES)?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
        }
    }
}

#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod imp {
    pub(super) type Handle = crate::component::chio::guard::policy_context::BundleHandle;

    pub(super) fn open(id: &str) -> Handle {
        Handle::new(id)
    }

    pub(super) fn read(h: &Handle, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        h.read(offset, len)
    }
}

#[cfg(all(target_arch = "wasm32", not(feature = "component")))]
mod imp {
    use helios_plugin_schema::abi;

    // Link names spell `abi::BUNDLE_OPEN` and `abi::FETCH_BLOB` of `abi::GUARD_HOST_MODULE`.
    #[link(wasm_import_module = "chio:guard/host@0.2.0")]
    unsafe extern "C" {
        #[link_name = "bundle-open"]
        fn bundle_open(id_ptr: i32, id_len: i32) -> i32;
        #[link_name = "fetch-blob"]
        fn fetch_blob(handle: i32, offset: i64, len: i32, out_ptr: i32) -> i32;
    }

    #[derive(Debug)]
    pub(super) struct Handle(i32);

    pub(super) fn open(id: &str) -> Handle {
        // SAFETY: the host only reads the live slice `id`.
        Handle(unsafe { bundle_open(id.as_ptr() as usize as i32, id.len() as i32) })
    }

    pub(super) fn read(h: &Handle, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; len as usize];
        // SAFETY: the host writes at most `len` bytes into `buf`, which has `len`.
        let n = unsafe { fetch_blob(h.0, offset as i64, len as i32, buf.as_mut_ptr() as usize as i32) };
        match n {
            abi::BLOB_BAD_HANDLE => Err(format!("bundle handle {} is not open", h.0)),
            abi::BLOB_OVER_CAP => Err(format!(
                "read of {len} bytes over the {}-byte cap",
                helios_plugin_schema::limits::BUNDLE_READ_MAX_BYTES
            )),
            n if n < 0 || n as u32 > len => Err(format!("fetch-blob returned {n} for a {len}-byte read")),
            n => {
                buf.truncate(n as usize);
                Ok(buf)
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    #[derive(Debug)]
    pub(super) struct Handle(Option<std::sync::Arc<[u8]>>, String);

    pub(super) fn open(id: &str) -> Handle {
        Handle(crate::testing::bundle(id), id.to_owned())
    }

    pub(super) fn read(h: &Handle, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        let cap = helios_plugin_schema::limits::BUNDLE_READ_MAX_BYTES;
        if len > cap {
            return Err(format!("read of {len} bytes over the {cap}-byte cap"));
        }
        // Natively an undeclared bundle panics like the host's refusal fails the call.
        let Some(bytes) = &h.0 else { panic!("bundle {} is not declared (testing::set_bundle)", h.1) };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let end = start.saturating_add(len as usize).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }
}
