//! Guest memory: the only place the host turns a guest pointer and length into bytes.
//!
//! Every pointer and length is read as an unsigned 32-bit value and checked against the memory's
//! current size, without overflow, before any byte is touched; a range outside memory is an error
//! string the caller turns into a named fault. Nothing here can panic on guest input.

use std::ops::Range;

use wasmtime::{AsContext, AsContextMut, Memory, Store, TypedFunc};

use super::state::HostState;

/// Checks that `ptr..ptr+len` (both read as unsigned 32-bit) lies inside a memory of `size` bytes.
pub(crate) fn checked_range(size: usize, ptr: i32, len: i32) -> Result<Range<usize>, String> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    match p.checked_add(l) {
        Some(end) if end <= size => Ok(p..end),
        _ => Err(format!("range {p:#x}+{l} is outside guest memory of {size} bytes")),
    }
}

/// Whether `len` bytes fit at `ptr` now.
pub(crate) fn fits(store: impl AsContext, memory: Memory, ptr: i32, len: i32) -> bool {
    checked_range(memory.data_size(&store), ptr, len).is_ok()
}

/// Copies `bytes` into guest memory at `ptr`.
pub(crate) fn write(mut store: impl AsContextMut, memory: Memory, ptr: i32, bytes: &[u8]) -> Result<(), String> {
    let len = i32::try_from(bytes.len()).map_err(|_| format!("{} bytes do not fit a 32-bit length", bytes.len()))?;
    let r = checked_range(memory.data_size(&store), ptr, len)?;
    memory.data_mut(&mut store)[r].copy_from_slice(bytes);
    Ok(())
}

/// Borrows `len` bytes of guest memory at `ptr`.
pub(crate) fn read<T: 'static>(
    store: &wasmtime::Store<T>,
    memory: Memory,
    ptr: i32,
    len: i32,
) -> Result<&[u8], String> {
    let r = checked_range(memory.data_size(store), ptr, len)?;
    Ok(&memory.data(store)[r])
}

/// Inputs up to this size go into a buffer the instance keeps across calls; larger ones get a
/// buffer of their own for one call (allocated before it and freed after it).
pub(crate) const KEPT_INPUT_MAX_BYTES: i32 = 64 << 10;

/// The smallest buffer kept: most inputs (a guard request, a statement's context) fit at once.
const KEPT_INPUT_MIN_BYTES: i32 = 1 << 10;

/// A buffer in guest memory that the host got from the guest's allocator (`alloc`/`chio_alloc`)
/// and keeps for the instance's life: each call's input is written at its start, with no allocator
/// round trip (two calls into the guest) per call. It is never freed except when a larger input
/// needs a larger one; the instance's memory goes with the instance.
///
/// **No input outlives its call:** each write zeroes the bytes the previous, longer input left past
/// the new end; a kept buffer given up for a larger one, and an input's own buffer
/// ([`Placed::Once`]), are zeroed before they are handed back. So a guest that reads past its input,
/// or reads memory its allocator hands out again, sees zeros, never an earlier call's input
/// (`escape::memory::a_guest_never_sees_an_earlier_input_past_its_own`).
#[derive(Debug)]
pub(crate) struct KeptBuffer {
    ptr: i32,
    cap: i32,
    /// Bytes written by the last input (the prefix that may hold non-zero host bytes).
    used: i32,
}

/// Where one call's input was written.
pub(crate) enum Placed {
    /// At the start of the instance's kept buffer.
    Kept(i32),
    /// At `ptr`, in a buffer of `size` bytes the allocator returned for this call only: the host
    /// zeroes the input and frees `(ptr, size)` after the call.
    Once { ptr: i32, size: i32 },
}

impl Placed {
    pub fn ptr(&self) -> i32 {
        match self {
            Placed::Kept(p) | Placed::Once { ptr: p, .. } => *p,
        }
    }
}

/// Why the input could not be written.
pub(crate) enum PlaceError {
    /// The guest trapped (or ran out of fuel) in its allocator.
    Wasm(wasmtime::Error),
    /// The allocator returned a null pointer for a non-empty input, or a range outside memory.
    Bad(String),
}

impl From<wasmtime::Error> for PlaceError {
    fn from(e: wasmtime::Error) -> Self {
        PlaceError::Wasm(e)
    }
}

/// Writes one call's `input` into guest memory: into the kept buffer `kept` when it fits; else one
/// call of the guest's allocator `alloc`, for an input up to [`KEPT_INPUT_MAX_BYTES`] asking for a
/// new kept buffer (the old one zeroed and handed back with `free`), for a larger one asking for
/// exactly its size ([`Placed::Once`]).
///
/// A pointer is only kept if the whole capacity asked for lies inside memory (else, if the input
/// fits there, it serves this call only); every write is bounds-checked whatever the allocator
/// returned.
pub(crate) fn place_input(
    store: &mut Store<HostState>,
    memory: Memory,
    kept: &mut Option<KeptBuffer>,
    alloc: &TypedFunc<i32, i32>,
    free: Option<&TypedFunc<(i32, i32), ()>>,
    input: &[u8],
) -> Result<Placed, PlaceError> {
    let len = i32::try_from(input.len()).map_err(|_| PlaceError::Bad("input over 2 GiB".into()))?;
    if let Some(k) = kept.as_mut().filter(|k| len <= k.cap) {
        write(&mut *store, memory, k.ptr, input).map_err(PlaceError::Bad)?;
        if k.used > len {
            zero(&mut *store, memory, k.ptr + len, k.used - len).map_err(PlaceError::Bad)?;
        }
        k.used = len;
        return Ok(Placed::Kept(k.ptr));
    }
    let keep = len <= KEPT_INPUT_MAX_BYTES;
    if keep && let Some(old) = kept.take() {
        zero(&mut *store, memory, old.ptr, old.used).map_err(PlaceError::Bad)?;
        if let Some(free) = free {
            free.call(&mut *store, (old.ptr, old.cap))?;
        }
    }
    let size = if keep { (len.max(KEPT_INPUT_MIN_BYTES) as u32).next_power_of_two() as i32 } else { len };
    let ptr = alloc.call(&mut *store, size)?;
    if ptr == 0 && len > 0 {
        return Err(PlaceError::Bad(format!("returned a null pointer for {size} bytes")));
    }
    write(&mut *store, memory, ptr, input)
        .map_err(|e| PlaceError::Bad(format!("returned a buffer that does not fit the input: {e}")))?;
    if keep && ptr != 0 && fits(&*store, memory, ptr, size) {
        *kept = Some(KeptBuffer { ptr, cap: size, used: len });
        return Ok(Placed::Kept(ptr));
    }
    Ok(Placed::Once { ptr, size })
}

/// Zeroes `len` bytes of guest memory at `ptr`: an input buffer before the host hands it back, so
/// no input stays behind in memory the guest's allocator gives out again.
pub(crate) fn zero(mut store: impl AsContextMut, memory: Memory, ptr: i32, len: i32) -> Result<(), String> {
    let r = checked_range(memory.data_size(&store), ptr, len)?;
    memory.data_mut(&mut store)[r].fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use wasmtime::{Engine, MemoryType, Store};

    use super::*;

    #[test]
    fn ranges_are_checked_as_unsigned_and_without_overflow() {
        assert_eq!(checked_range(100, 10, 90), Ok(10..100));
        assert!(checked_range(100, 10, 91).is_err());
        assert!(checked_range(100, -1, 1).is_err());
        assert!(checked_range(100, 0, -1).is_err());
        assert!(checked_range(usize::MAX, i32::MAX, i32::MAX).is_ok(), "no overflow on a huge memory");
        assert_eq!(checked_range(0, 0, 0), Ok(0..0));
    }

    #[test]
    fn writes_and_reads_stay_inside_memory_and_name_the_range_otherwise() {
        let engine = Engine::default();
        let mut store = Store::new(&engine, ());
        let memory = Memory::new(&mut store, MemoryType::new(1, Some(1))).unwrap();
        write(&mut store, memory, 65_530, b"hello!").unwrap();
        assert_eq!(read(&store, memory, 65_530, 6).unwrap(), b"hello!");
        assert!(fits(&store, memory, 65_530, 6));
        assert!(!fits(&store, memory, 65_531, 6));
        let e = write(&mut store, memory, 65_531, b"hello!").unwrap_err();
        assert!(e.contains("0xfffb+6") && e.contains("65536 bytes"), "{e}");
        assert!(read(&store, memory, -1, 1).is_err());
        assert!(read(&store, memory, 0, -1).is_err());
    }
}
