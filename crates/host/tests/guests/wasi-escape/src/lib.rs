//! guest-wasi-escape: a plugin built for `wasm32-wasip1` whose `pre_query` tries to leave the WASI
//! sandbox through Rust's std, as the statement says. Each attempt that fails (as it must in the
//! host's deny-all context) blocks with the error std reported; one that succeeds blocks with what it
//! got, so a test sees exactly what leaked.
//!
//! | statement | does |
//! |---|---|
//! | `open <path>` | `std::fs::read(path)` |
//! | `list <dir>` | `std::fs::read_dir(dir)` |
//! | `write <path>` | `std::fs::write(path, ..)` |
//! | `env` | `std::env::vars()` and `std::env::args()` (blocks with both, empty or not) |
//! | `connect <addr>` | `std::net::TcpStream::connect(addr)` |
//! | `sleep <ms>` | `std::thread::sleep` in a loop (WASI `poll_oneoff`), forever |
//! | `print <n>` | prints `line <i>` n times to stdout, and `err <i>` to stderr, then continues |
//! | `flood <mib>` | writes <mib> MiB to stdout in 1 MiB writes, then continues |
//! | `exit <code>` | `std::process::exit(code)` (WASI `proc_exit`) |
//! | anything else | continues |

use std::io::Write as _;

use helios_plugin_abi::*;

fn block(reason: impl Into<String>) -> PreQueryResult {
    PreQueryResult::Block { reason: reason.into() }
}

#[hook(PreQuery)]
fn escape(ctx: &QueryContext) -> PreQueryResult {
    let (cmd, arg) = ctx.query.split_once(' ').unwrap_or((ctx.query.as_str(), ""));
    match cmd {
        "open" => match std::fs::read(arg) {
            Ok(bytes) => block(format!("LEAKED {} bytes of {arg}", bytes.len())),
            Err(e) => block(format!("open failed: {e}")),
        },
        "list" => match std::fs::read_dir(arg) {
            Ok(entries) => block(format!("LEAKED {} entries of {arg}", entries.count())),
            Err(e) => block(format!("list failed: {e}")),
        },
        "write" => match std::fs::write(arg, b"escaped") {
            Ok(()) => block(format!("LEAKED a write to {arg}")),
            Err(e) => block(format!("write failed: {e}")),
        },
        "env" => {
            let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            let args: Vec<String> = std::env::args().collect();
            block(format!("env {vars:?} args {args:?}"))
        }
        "connect" => match std::net::TcpStream::connect(arg) {
            Ok(_) => block(format!("LEAKED a connection to {arg}")),
            Err(e) => block(format!("connect failed: {e}")),
        },
        "sleep" => {
            let ms = arg.parse().unwrap_or(1000);
            loop {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        "print" => {
            for i in 0..arg.parse().unwrap_or(1) {
                println!("line {i}");
                eprintln!("err {i}");
            }
            PreQueryResult::Continue
        }
        "flood" => {
            let chunk = vec![b'x'; 1 << 20];
            let mut out = std::io::stdout().lock();
            for _ in 0..arg.parse::<u32>().unwrap_or(1) {
                if let Err(e) = out.write_all(&chunk) {
                    return block(format!("stdout write failed: {e}"));
                }
            }
            PreQueryResult::Continue
        }
        "exit" => std::process::exit(arg.parse().unwrap_or(3)),
        _ => PreQueryResult::Continue,
    }
}
