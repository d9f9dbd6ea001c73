//! A `chio:guard/guard@0.2.0` guard written with plain `wit-bindgen` against the repository's
//! `wit/` (deliberately not with our SDK: this is what a third party's component looks like).
//!
//! Built twice by `cargo xtask build-examples`: for `wasm32-unknown-unknown`, turned into a
//! component by `wit-component`, and for `wasm32-wasip2` (a component importing WASI 0.2).
//!
//! What it does depends on the request's `tool_name`:
//! * a tool in config `deny_tools` (comma-separated) is denied, naming it; anything else is allowed
//!   unless one of the cases below applies;
//! * `bundle`: reads the bundle of config `bundle` in 64 KiB reads (through the resource and through
//!   `fetch-blob`) and denies when a line of it occurs in the arguments;
//! * `read-over-cap`: a 65537-byte read; denies with the host's error;
//! * `undeclared`: opens the bundle of config `undeclared` (not declared by the manifest);
//! * `keep-handle` then `stale-handle`: keeps a handle across evaluations and reads it later;
//! * `wasi-probe`: tries a file, a directory, the environment, the arguments and a socket (what a
//!   deny-all WASI context must refuse) and reports what worked;
//! * `spin`, `grow`, `recurse`, `flood`, `huge-deny`, `panic`, `print`: hostile or noisy cases.

use std::cell::RefCell;

wit_bindgen::generate!({
    world: "guard",
    path: "../../../../../wit",
});

use chio::guard::{host, policy_context::BundleHandle};

struct Guard;

thread_local! {
    static KEPT: RefCell<Option<BundleHandle>> = const { RefCell::new(None) };
    static HOARD: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn read_all(h: &BundleHandle) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let chunk = h.read(out.len() as u64, 65536)?;
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
    }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == u64::MAX { 0 } else { recurse(std::hint::black_box(n + 1)) + 1 }
}

impl Guest for Guard {
    fn evaluate(request: GuardRequest) -> Verdict {
        host::log(2, &format!("evaluating {}", request.tool_name));
        let denied = host::get_config("deny_tools").unwrap_or_default();
        if denied.split(',').map(str::trim).any(|t| !t.is_empty() && t == request.tool_name) {
            return Verdict::Deny(format!("tool {} is denied", request.tool_name));
        }
        match request.tool_name.as_str() {
            "bundle" => {
                let id = host::get_config("bundle").unwrap_or_default();
                let h = BundleHandle::new(&id);
                let text = match read_all(&h) {
                    Ok(t) => t,
                    Err(e) => return Verdict::Deny(format!("cannot read bundle: {e}")),
                };
                // The same bytes through fetch-blob: handle 0 is the first bundle opened.
                match host::fetch_blob(0, 0, 65536) {
                    Ok(first) if text.starts_with(&first) => {}
                    Ok(_) => return Verdict::Deny("fetch-blob disagrees with bundle-handle.read".into()),
                    Err(e) => return Verdict::Deny(format!("fetch-blob failed: {e}")),
                }
                h.close();
                let text = String::from_utf8_lossy(&text);
                match text.lines().map(str::trim).find(|l| !l.is_empty() && request.arguments.contains(l)) {
                    Some(line) => Verdict::Deny(format!("arguments match bundle line {line:?}")),
                    None => Verdict::Allow,
                }
            }
            "read-over-cap" => {
                let h = BundleHandle::new(&host::get_config("bundle").unwrap_or_default());
                match h.read(0, 65537) {
                    Ok(b) => Verdict::Deny(format!("read {} bytes over the cap", b.len())),
                    Err(e) => Verdict::Deny(e),
                }
            }
            "undeclared" => {
                let _h = BundleHandle::new(&host::get_config("undeclared").unwrap_or_default());
                Verdict::Allow
            }
            "keep-handle" => {
                let h = BundleHandle::new(&host::get_config("bundle").unwrap_or_default());
                KEPT.with(|k| *k.borrow_mut() = Some(h));
                Verdict::Allow
            }
            "stale-handle" => KEPT.with(|k| match k.borrow().as_ref() {
                Some(h) => match h.read(0, 16) {
                    Ok(b) => Verdict::Deny(format!("a kept handle still reads {} bytes", b.len())),
                    Err(e) => Verdict::Deny(e),
                },
                None => Verdict::Deny("no kept handle".into()),
            }),
            "spin" => {
                let mut i = 0u64;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "grow" => HOARD.with(|h| {
                loop {
                    h.borrow_mut().push(vec![1u8; 1 << 20]);
                }
            }),
            "recurse" => Verdict::Deny(format!("recursed {}", recurse(0))),
            "flood" => {
                let id = host::get_config("bundle").unwrap_or_default();
                let mut kept = Vec::new();
                for _ in 0..10_000 {
                    kept.push(BundleHandle::new(&id));
                }
                Verdict::Deny(format!("opened {} handles", kept.len()))
            }
            "huge-deny" => Verdict::Deny("x".repeat(1 << 20)),
            "panic" => panic!("guard gave up on purpose"),
            "wasi-probe" => Verdict::Deny(format!(
                "file:{} dir:{} env:{} args:{} net:{}",
                std::fs::read("/etc/passwd").is_ok(),
                std::fs::read_dir(".").is_ok(),
                std::env::vars().count(),
                std::env::args().count(),
                std::net::TcpStream::connect("127.0.0.1:9").is_ok(),
            )),
            "print" => {
                println!("hello from stdout");
                eprintln!("hello from stderr");
                Verdict::Allow
            }
            _ => Verdict::Allow,
        }
    }
}

export!(Guard);
