//! The allocator a host writes inputs through and hands results back to.
//!
//! On `wasm32` this module exports `alloc`/`dealloc` (the hook convention) and
//! `chio_alloc`/`chio_free` (the guard convention). They live in the SDK rather than in the code
//! `#[hook]` generates, so a plugin serving several hooks exports them exactly once; rustc exports the
//! `#[no_mangle]` functions of an rlib from the final cdylib, which the wasm build check in
//! `crates/abi/tests` confirms.
//!
//! Buffers are plain bytes (align 1). A size of 0 returns a dangling, non-null pointer that is never
//! dereferenced, and freeing it does nothing; a negative size returns 0. An allocation the heap cannot
//! satisfy aborts (a trap for the host), never returns a pointer to someone else's bytes.

use std::alloc::Layout;

/// Allocates `size` bytes with align 1; see the module docs for sizes 0 and below.
pub fn alloc_bytes(size: i32) -> *mut u8 {
    if size < 0 {
        return std::ptr::null_mut();
    }
    if size == 0 {
        return std::ptr::NonNull::<u8>::dangling().as_ptr();
    }
    let Ok(layout) = Layout::from_size_align(size as usize, 1) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    p
}

/// Frees a buffer of [`alloc_bytes`] (or a leaked `Box<[u8]>` of the same length).
///
/// # Safety
/// `ptr` must come from `alloc_bytes(size)` (or be a `Box<[u8]>` of length `size` turned into a raw
/// pointer) and not have been freed yet. Null pointers and sizes of 0 or below are ignored.
pub unsafe fn dealloc_bytes(ptr: *mut u8, size: i32) {
    if ptr.is_null() || size <= 0 {
        return;
    }
    // SAFETY: size > 0 and align 1 always form a valid layout below isize::MAX on wasm32.
    let layout = unsafe { Layout::from_size_align_unchecked(size as usize, 1) };
    // SAFETY: per this function's contract, `ptr` was allocated with exactly this layout.
    unsafe { std::alloc::dealloc(ptr, layout) }
}

// A component's allocator is wit-bindgen's `cabi_realloc`; these core-convention exports would be
// exports outside the world.
#[cfg(all(target_arch = "wasm32", not(feature = "component")))]
mod exports {
    use super::{alloc_bytes, dealloc_bytes};

    /// `alloc(size) -> ptr`: where the host writes a hook's JSON input.
    #[unsafe(no_mangle)]
    pub extern "C" fn alloc(size: i32) -> i32 {
        alloc_bytes(size) as usize as i32
    }

    /// `dealloc(ptr, size)`: the host hands back an input or a result buffer.
    #[unsafe(no_mangle)]
    pub extern "C" fn dealloc(ptr: i32, size: i32) {
        // SAFETY: the host only hands back buffers it got from `alloc` or from a hook result, with
        // the size it asked for or was told.
        unsafe { dealloc_bytes(ptr as u32 as usize as *mut u8, size) }
    }

    /// `chio_alloc(size) -> ptr`: where the host writes a guard request.
    #[unsafe(no_mangle)]
    pub extern "C" fn chio_alloc(size: i32) -> i32 {
        alloc_bytes(size) as usize as i32
    }

    /// `chio_free(ptr, size)`: the host hands back a request buffer.
    #[unsafe(no_mangle)]
    pub extern "C" fn chio_free(ptr: i32, size: i32) {
        // SAFETY: as for `dealloc`.
        unsafe { dealloc_bytes(ptr as u32 as usize as *mut u8, size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_negative_sizes_never_touch_the_heap() {
        let p = alloc_bytes(0);
        assert!(!p.is_null());
        // SAFETY: size 0 is ignored.
        unsafe { dealloc_bytes(p, 0) };
        assert!(alloc_bytes(-5).is_null());
    }

    #[test]
    fn allocated_bytes_are_writable_and_freed_by_size() {
        let p = alloc_bytes(100);
        // SAFETY: 100 bytes were just allocated at `p`.
        unsafe {
            std::ptr::write_bytes(p, 7, 100);
            assert_eq!(*p.add(99), 7);
            dealloc_bytes(p, 100);
        }
    }
}
