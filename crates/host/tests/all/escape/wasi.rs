//! WASI preview 1 guests (built for `wasm32-wasip1`) in the host's deny-all sandbox: no files, no
//! environment, no arguments, no sockets; stdout/stderr end in the plugin's log under its caps; a
//! sleep cannot outlive the call's deadline; `proc_exit` fails the call. The Rust guest
//! `guest-wasi-escape` attacks through std (so through wasi-libc, as a real plugin would); WAT
//! modules pin the import surface.

use std::time::{Duration, Instant};

use helios_plugin_host::{FailureKind, Level, LoadError, Plugin, PluginConfig, Runtime};
use helios_plugin_schema::{PreQueryResult, QueryContext, hooks::spec::PreQuery, limits};

use super::logged;
use crate::support::{data, runtime};

fn wasi_guest() -> Vec<u8> {
    let path = helios_plugin_test_support::wasi_guest_path("guest-wasi-escape");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("cannot read {}: {e} (build the guests with `cargo xtask build-examples`)", path.display())
    })
}

fn load(rt: &Runtime, name: &str, cfg: impl FnOnce(PluginConfig) -> PluginConfig) -> std::sync::Arc<Plugin> {
    rt.load(&wasi_guest(), cfg(PluginConfig::new(name))).unwrap_or_else(|e| panic!("the WASI guest loads: {e}"))
}

fn run(p: &Plugin, statement: &str) -> Result<PreQueryResult, helios_plugin_host::PluginError> {
    p.call::<PreQuery>(&QueryContext { query: statement.into(), ..Default::default() })
}

#[track_caller]
fn blocked(p: &Plugin, statement: &str) -> String {
    match run(p, statement) {
        Ok(PreQueryResult::Block { reason }) => reason,
        other => panic!("{statement}: expected a block, got {other:?}"),
    }
}

#[test]
fn a_wasip1_module_loads_and_serves_its_hook_with_stdout_and_stderr_in_the_plugin_log() {
    let (rt, sink) = runtime();
    let p = load(&rt, "wasi", |c| c);
    assert_eq!(p.hooks(), [helios_plugin_schema::Hook::PreQuery]);
    assert!(p.module_info().unwrap().imports.iter().any(|i| i.module == "wasi_snapshot_preview1"));
    // Tooling (inspect) does not flag preview 1 as outside the host surface: it loads.
    assert_eq!(p.module_info().unwrap().foreign_imports(), Vec::<String>::new());
    assert_eq!(run(&p, "SELECT 1").unwrap(), PreQueryResult::Continue);
    assert_eq!(run(&p, "print 3").unwrap(), PreQueryResult::Continue);
    let lines: Vec<_> = sink.drain().into_iter().filter(|(name, _, _)| name == "wasi").collect();
    let info: Vec<&str> = lines.iter().filter(|l| l.1 == Level::Info).map(|l| l.2.as_str()).collect();
    let warn: Vec<&str> = lines.iter().filter(|l| l.1 == Level::Warn).map(|l| l.2.as_str()).collect();
    assert_eq!(info, ["line 0", "line 1", "line 2"], "stdout, one entry per line: {lines:?}");
    assert_eq!(warn, ["err 0", "err 1", "err 2"], "stderr at warn: {lines:?}");
    // The next call on the same (pooled) instance logs only its own output.
    assert_eq!(run(&p, "print 1").unwrap(), PreQueryResult::Continue);
    assert_eq!(logged(&sink, "wasi"), ["line 0", "err 0"]);
}

#[test]
fn a_wasi_guest_can_open_list_or_write_no_file() {
    let (rt, _sink) = runtime();
    let p = load(&rt, "wasi-fs", |c| c);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "host data").unwrap();
    let target = dir.path().join("escaped");
    for statement in [
        format!("open {}", secret.display()),
        "open /etc/passwd".into(),
        "open secret".into(),
        "list /".into(),
        "list .".into(),
        format!("list {}", dir.path().display()),
        format!("write {}", target.display()),
        "write escaped".into(),
    ] {
        let reason = blocked(&p, &statement);
        assert!(!reason.contains("LEAKED"), "{statement}: {reason}");
        assert!(reason.contains("failed"), "{statement}: the guest's std reports an error: {reason}");
    }
    assert!(!target.exists(), "nothing was written on the host");
    assert!(!std::path::Path::new("escaped").exists());
    // The host is intact and the plugin still answers.
    assert_eq!(run(&p, "SELECT 1").unwrap(), PreQueryResult::Continue);
}

#[test]
fn a_wasi_guest_sees_no_environment_and_no_arguments() {
    let (rt, _sink) = runtime();
    let p = load(&rt, "wasi-env", |c| c);
    // The test process has an environment (PATH, CARGO_*): none of it reaches the guest.
    assert!(std::env::vars().count() > 0);
    assert_eq!(blocked(&p, "env"), "env [] args []");
}

#[test]
fn a_wasi_guest_cannot_open_a_socket() {
    let (rt, _sink) = runtime();
    let p = load(&rt, "wasi-net", |c| c);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let reason = blocked(&p, &format!("connect {addr}"));
    assert!(reason.starts_with("connect failed"), "{reason}");
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no connection reached the listener: {accepted:?}"
    );
}

#[test]
fn sleeping_in_poll_oneoff_is_stopped_by_the_call_deadline() {
    let (rt, _sink) = runtime();
    let deadline = Duration::from_millis(300);
    let p = load(&rt, "wasi-sleep", |c| c.deadline(deadline));
    // One sleep of an hour (wasmtime-wasi's own poll_oneoff would hold the host thread for it), and
    // a loop of short sleeps: both end at the deadline.
    for statement in ["sleep 3600000", "sleep 5"] {
        let t = Instant::now();
        let e = run(&p, statement).unwrap_err();
        let took = t.elapsed();
        assert_eq!(e.kind, FailureKind::DeadlineExceeded { deadline }, "{statement}: {e}");
        assert!(e.to_string().contains("\"wasi-sleep\""), "{e}");
        assert!(took >= deadline && took < Duration::from_secs(3), "{statement}: took {took:?}");
    }
    assert_eq!(run(&p, "SELECT 1").unwrap(), PreQueryResult::Continue, "the next call gets a fresh instance");
}

#[test]
fn a_guest_writing_1_gib_to_stdout_leaves_capped_log_entries_and_the_host_memory_intact() {
    // Resident memory is process-wide: measure in a child process that runs only this test, so the
    // tests running beside it (compilers, guests growing to their caps) do not count.
    const CHILD: &str = "HELIOS_TEST_RSS_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let name = "escape::wasi::a_guest_writing_1_gib_to_stdout_leaves_capped_log_entries_and_the_host_memory_intact";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads", "1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        return;
    }
    let (rt, sink) = runtime();
    let p = load(&rt, "wasi-flood", |c| c.deadline(Duration::from_secs(60)).fuel(None));
    let rss_before = rss_kib();
    assert_eq!(run(&p, "flood 1024").unwrap(), PreQueryResult::Continue);
    let grown = rss_kib().saturating_sub(rss_before);
    let lines: Vec<_> = sink.drain().into_iter().filter(|(name, _, _)| name == "wasi-flood").collect();
    assert!(lines.len() <= limits::LOG_MAX_ENTRIES_PER_CALL as usize, "{} entries", lines.len());
    assert!(lines.iter().all(|l| l.2.len() <= limits::LOG_MAX_MESSAGE_BYTES));
    // One line of x's (the first 64 KiB kept, cut to the entry cap); the rest was dropped.
    assert_eq!(lines.len(), 1, "{:?}", lines.iter().map(|l| &l.2[..l.2.len().min(80)]).collect::<Vec<_>>());
    assert!(lines[0].2.bytes().all(|b| b == b'x') && lines[0].2.len() == limits::LOG_MAX_MESSAGE_BYTES);
    assert_eq!(lines[0].1, Level::Info);
    assert!(grown < 64 * 1024, "the host's resident memory grew by {grown} KiB while the guest wrote 1 GiB");
}

#[test]
fn proc_exit_fails_the_call_naming_the_code_and_the_next_call_gets_a_fresh_instance() {
    let (rt, _sink) = runtime();
    let p = load(&rt, "wasi-exit", |c| c);
    let e = run(&p, "exit 7").unwrap_err();
    assert!(e.to_string().contains("proc_exit(7)") && e.to_string().contains("\"wasi-exit\""), "{e}");
    assert_eq!(run(&p, "SELECT 1").unwrap(), PreQueryResult::Continue);
}

#[test]
fn a_wasi_call_from_inside_an_async_task_fails_cleanly_instead_of_panicking_the_host() {
    let (rt, _sink) = runtime();
    let p = load(&rt, "wasi-async", |c| c);
    // wasmtime-wasi blocks on tokio for I/O and panics when that happens on an async worker: an
    // embedder calling a plugin there gets a failed call naming the reason, not a crashed host.
    let tokio_rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let e = tokio_rt.block_on(async { run(&p, "print 1") }).unwrap_err();
    assert!(e.to_string().contains("\"wasi-async\"") && e.to_string().contains("blocking thread"), "{e}");
    // The same plugin on a plain thread answers (a fresh instance).
    assert_eq!(run(&p, "print 1").unwrap(), PreQueryResult::Continue);
}

/// A hand-written module: `pre_query` writes "hi from wat\n" to stdout with `fd_write`, then continues.
fn wat_fd_write(import: &str) -> String {
    let cont = r#"{"kind":"continue"}"#;
    let packed = helios_plugin_schema::abi::pack_ptr_len(64, cont.len() as u32);
    format!(
        r#"(module
  {import}
  (memory (export "memory") 1)
  {cont_data} {msg}
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "dealloc") (param i32 i32))
  (func (export "pre_query") (param i32 i32) (result i64)
    (i32.store (i32.const 200) (i32.const 300))
    (i32.store (i32.const 204) (i32.const 12))
    (drop (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 208)))
    (i64.const {packed})))"#,
        cont_data = data(64, cont),
        msg = data(300, "hi from wat\n"),
    )
}

#[test]
fn the_wasi_surface_is_preview_1_exactly_and_its_types_are_checked() {
    let (rt, sink) = runtime();
    let good = r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#;
    let p = rt.load(wat_fd_write(good).as_bytes(), PluginConfig::new("wat-wasi")).unwrap();
    assert_eq!(run(&p, "SELECT 1").unwrap(), PreQueryResult::Continue);
    assert_eq!(logged(&sink, "wat-wasi"), ["hi from wat"]);

    // A name preview 1 does not have is refused before compilation, naming it.
    let unknown =
        r#"(import "wasi_snapshot_preview1" "thread_spawn" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#;
    match rt.load(wat_fd_write(unknown).as_bytes(), PluginConfig::new("wat-unknown")) {
        Err(e @ LoadError::ForbiddenImport { .. }) => {
            assert!(e.to_string().contains("wasi_snapshot_preview1.thread_spawn"), "{e}")
        }
        other => panic!("expected a forbidden import, got {other:?}"),
    }
    // So is another WASI version.
    let other = r#"(import "wasi_unstable" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#;
    assert!(matches!(
        rt.load(wat_fd_write(other).as_bytes(), PluginConfig::new("wat-unstable")),
        Err(LoadError::ForbiddenImport { .. })
    ));
    // A preview 1 name with the wrong type fails at load, naming the import.
    let wrong = r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i64)))"#;
    let e = rt.load(wat_fd_write(wrong).as_bytes(), PluginConfig::new("wat-wrong")).unwrap_err().to_string();
    assert!(e.contains("wat-wrong") && e.contains("fd_write"), "{e}");
}

/// This process's resident set size in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
