//! hostile-raw: a test guest for the host's escape suite, written against the raw ABI (no SDK, no
//! panic hook, no allocator discipline). Config key `attack` selects what `evaluate` and
//! `pre_query` do before answering; `alloc`, `result` and `reason` select how the allocator exports,
//! the hook result and `chio_deny_reason` lie. Every import call's return code is logged as
//! `<attack> rc=<code>` (or `stored=<n> rc=<code>`) so the host test can read what the guest saw.
//!
//! | key | value | effect |
//! |---|---|---|
//! | `attack` | `log_flood` | 1000 info lines of 5000 bytes |
//! | | `log_flood_then_panic` | the flood, then a panic line at error, then `unreachable` |
//! | | `log_bad_levels` | lines at levels -1, 5 and `i32::MAX` (the host drops them) |
//! | | `kv_key_too_long` / `kv_value_too_long` | one `kv_set` one byte over the key / value cap |
//! | | `kv_fill` | 64 KiB values under new keys until `kv_set` refuses (the byte-total cap) |
//! | | `kv_many_keys` | 1-byte values under new keys until `kv_set` refuses (the key-count cap) |
//! | | `bad_arg` | calls import `import` with argument number `arg` set to `value` (see below) |
//! | | `panic` | a Rust panic (`panic = "abort"`: a bare `unreachable` trap, no message) |
//! | | `spin` | loops forever |
//! | | `deny_all` | `evaluate` denies (reason from `chio_deny_reason`) |
//! | `alloc` | `oob` / `zero` / `wrap` / `overlap` | `alloc`/`chio_alloc` return 0x7fff_fff0, 0, -16, or the address of the static result JSON |
//! | `result` | `past_end` / `max` / `huge_len` / `echo` | `pre_query` returns (memory end - 1, 2), (u32::MAX, u32::MAX), (0, 4 MiB + 1), or its own input |
//! | `reason` | `over` / `negative` | `chio_deny_reason` returns buffer length + 1, or -7 |
//!
//! `value` is a decimal i32 or u32, `end` (the memory size) or `end-4`. The other arguments of a
//! `bad_arg` call are valid: pointers into a scratch buffer, lengths of 8 (64 for the digest output).
//!
//! Everything is gated on `wasm32`: natively the crate is only this documentation.

#[cfg(target_arch = "wasm32")]
mod guest {
    use helios_plugin_schema::{abi, limits};

    #[link(wasm_import_module = "chio")]
    unsafe extern "C" {
        #[link_name = "log"]
        fn host_log(level: i32, ptr: i32, len: i32);
        #[link_name = "get_config"]
        fn host_get_config(kp: i32, kl: i32, vp: i32, vl: i32) -> i32;
    }

    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        #[link_name = "kv_get"]
        fn host_kv_get(kp: i32, kl: i32, vp: i32, vmax: i32) -> i32;
        #[link_name = "kv_set"]
        fn host_kv_set(kp: i32, kl: i32, vp: i32, vl: i32) -> i32;
        #[link_name = "kv_delete"]
        fn host_kv_delete(kp: i32, kl: i32) -> i32;
        #[link_name = "sha256_hex"]
        fn host_sha256_hex(ip: i32, il: i32, op: i32) -> i32;
    }

    static CONTINUE: &[u8] = br#"{"kind":"continue"}"#;
    static REASON: &[u8] = br#"{"reason":"hostile-raw denies everything"}"#;
    static mut SCRATCH: [u8; 256] = [0; 256];

    fn addr<T: ?Sized>(p: *const T) -> i32 {
        p as *const u8 as usize as i32
    }

    fn scratch() -> i32 {
        addr(&raw const SCRATCH)
    }

    fn memory_end() -> i64 {
        core::arch::wasm32::memory_size(0) as i64 * 65536
    }

    fn config(key: &str) -> Option<String> {
        let mut buf = vec![0u8; 256];
        // SAFETY: the key and the buffer are live slices of this instance's memory.
        let n = unsafe { host_get_config(addr(key.as_ptr()), key.len() as i32, addr(buf.as_ptr()), buf.len() as i32) };
        if n < 0 {
            return None;
        }
        buf.truncate((n as usize).min(256));
        String::from_utf8(buf).ok()
    }

    fn log(level: i32, msg: &str) {
        // SAFETY: a live slice of this instance's memory.
        unsafe { host_log(level, addr(msg.as_ptr()), msg.len() as i32) }
    }

    fn kv_set(key: &[u8], value: &[u8]) -> i32 {
        // SAFETY: live slices of this instance's memory.
        unsafe { host_kv_set(addr(key.as_ptr()), key.len() as i32, addr(value.as_ptr()), value.len() as i32) }
    }

    fn value_arg(s: &str) -> i32 {
        match s {
            "end" => memory_end() as i32,
            "end-4" => (memory_end() - 4) as i32,
            _ => s.parse::<i32>().or_else(|_| s.parse::<u32>().map(|v| v as i32)).unwrap_or(0),
        }
    }

    fn bad_arg() {
        let import = config("import").unwrap_or_default();
        let arg: usize = config("arg").and_then(|a| a.parse().ok()).unwrap_or(0);
        let value = value_arg(&config("value").unwrap_or_default());
        let s = scratch();
        let mut a = [s, 8, s + 64, 8];
        if import == "sha256_hex" {
            a[2] = 64;
        }
        if import == "log" {
            a = [abi::LOG_INFO, s, 8, 0];
        }
        a[arg.min(3)] = value;
        // SAFETY: deliberately unchecked arguments: the host must refuse them without harm.
        let rc = unsafe {
            match import.as_str() {
                "kv_get" => host_kv_get(a[0], a[1], a[2], a[3]),
                "kv_set" => host_kv_set(a[0], a[1], a[2], a[3]),
                "kv_delete" => host_kv_delete(a[0], a[1]),
                "sha256_hex" => host_sha256_hex(a[0], a[1], a[2]),
                "get_config" => host_get_config(a[0], a[1], a[2], a[3]),
                "log" => {
                    host_log(a[0], a[1], a[2]);
                    0
                }
                _ => -100,
            }
        };
        log(abi::LOG_INFO, &format!("bad_arg rc={rc}"));
    }

    fn fill(value_len: usize) {
        let value = vec![0x5a_u8; value_len];
        let mut i = 0u32;
        loop {
            let rc = kv_set(format!("k{i}").as_bytes(), &value);
            if rc != abi::KV_OK {
                log(abi::LOG_INFO, &format!("stored={i} rc={rc}"));
                return;
            }
            i += 1;
        }
    }

    /// Runs the configured attack; returns only for attacks that finish.
    fn attack() -> Option<String> {
        let attack = config("attack").unwrap_or_default();
        match attack.as_str() {
            "log_flood" | "log_flood_then_panic" => {
                let line = "x".repeat(5000);
                for _ in 0..1000 {
                    log(abi::LOG_INFO, &line);
                }
                if attack == "log_flood_then_panic" {
                    log(abi::LOG_ERROR, &format!("{}hostile-raw: flooded, then died", abi::PANIC_LOG_PREFIX));
                    core::arch::wasm32::unreachable();
                }
            }
            "log_bad_levels" => {
                for level in [-1, 5, i32::MAX] {
                    log(level, "hostile-raw: this line has no level");
                }
                log(abi::LOG_INFO, "hostile-raw: levels done");
            }
            "kv_key_too_long" => {
                let rc = kv_set(&vec![b'k'; limits::KV_MAX_KEY_BYTES + 1], b"v");
                log(abi::LOG_INFO, &format!("kv_key_too_long rc={rc}"));
                let mut out = [0u8; 8];
                let key = vec![b'k'; limits::KV_MAX_KEY_BYTES + 1];
                // SAFETY: live slices of this instance's memory.
                let rc = unsafe { host_kv_get(addr(key.as_ptr()), key.len() as i32, addr(out.as_mut_ptr()), 8) };
                log(abi::LOG_INFO, &format!("kv_get_key_too_long rc={rc}"));
            }
            "kv_value_too_long" => {
                let rc = kv_set(b"k", &vec![0u8; limits::KV_MAX_VALUE_BYTES + 1]);
                log(abi::LOG_INFO, &format!("kv_value_too_long rc={rc}"));
            }
            "kv_fill" => fill(limits::KV_MAX_VALUE_BYTES),
            "kv_many_keys" => fill(1),
            "bad_arg" => bad_arg(),
            "panic" => panic!("hostile-raw: a panic nobody reports"),
            "spin" => loop {
                core::hint::black_box(());
            },
            "deny_all" => return Some("deny".into()),
            _ => {}
        }
        None
    }

    fn garbage_alloc(size: i32) -> Option<i32> {
        match config("alloc").as_deref() {
            Some("oob") => Some(0x7fff_fff0),
            Some("zero") => Some(0),
            Some("wrap") => Some(-16),
            Some("overlap") => Some(addr(CONTINUE.as_ptr())),
            _ => {
                let _ = size;
                None
            }
        }
    }

    fn real_alloc(size: i32) -> i32 {
        let v = vec![0u8; size.max(1) as usize];
        addr(Box::leak(v.into_boxed_slice()).as_ptr())
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn alloc(size: i32) -> i32 {
        garbage_alloc(size).unwrap_or_else(|| real_alloc(size))
    }

    /// Never frees: the instance is short-lived and the point is to lie, not to be tidy.
    #[unsafe(no_mangle)]
    pub extern "C" fn dealloc(_ptr: i32, _size: i32) {}

    #[unsafe(no_mangle)]
    pub extern "C" fn chio_alloc(size: i32) -> i32 {
        alloc(size)
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn chio_free(_ptr: i32, _size: i32) {}

    #[unsafe(no_mangle)]
    pub extern "C" fn evaluate(_ptr: i32, _len: i32) -> i32 {
        match attack() {
            Some(_) => abi::VERDICT_DENY,
            None => abi::VERDICT_ALLOW,
        }
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn chio_deny_reason(buf: i32, len: i32) -> i32 {
        match config("reason").as_deref() {
            Some("over") => len + 1,
            Some("negative") => -7,
            _ => {
                let n = REASON.len().min(len.max(0) as usize);
                // SAFETY: the host hands a buffer of `len` bytes inside this memory; a lying host would
                // only make this guest trap.
                unsafe { core::ptr::copy_nonoverlapping(REASON.as_ptr(), buf as usize as *mut u8, n) };
                n as i32
            }
        }
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn pre_query(ptr: i32, len: i32) -> i64 {
        attack();
        let ok = abi::pack_ptr_len(addr(CONTINUE.as_ptr()) as u32, CONTINUE.len() as u32);
        match config("result").as_deref() {
            Some("past_end") => abi::pack_ptr_len((memory_end() - 1) as u32, 2),
            Some("max") => abi::pack_ptr_len(u32::MAX, u32::MAX),
            Some("huge_len") => abi::pack_ptr_len(0, limits::MAX_RESULT_BYTES + 1),
            Some("echo") => abi::pack_ptr_len(ptr as u32, len as u32),
            _ => ok,
        }
    }
}
