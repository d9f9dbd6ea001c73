//! Guest memory: the only place the host turns a guest pointer and length into bytes.
//!
//! Every pointer and length is read as an unsigned 32-bit value and checked against the memory's
//! current size, without overflow, before any byte is touched; a range outside memory is an error
//! string the caller turns into a named fault. Nothing here can panic on guest input.

use std::ops::Range;

use wasmtime::{AsContext, AsContextMut, Memory};

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
