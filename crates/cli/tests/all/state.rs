//! `helios-plugin state dump|get|delete|plugins`: offline on a SQLite file the state backend wrote,
//! online on a real `redis-server`, and a named error when the store cannot be reached.

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use helios_plugin_state::{BackendKind, StateConfig, Store};

use super::hp;

fn seed(store: &Store) {
    store.set("cost-governor", b"tenant:acme:spent", b"1200").unwrap();
    store.set("cost-governor", b"tenant:beta:spent", b"7").unwrap();
    store.set("audit-chain", b"tail", b"{\"seq\":3}\n\x01").unwrap();
}

fn exercise<'a>(dir: &std::path::Path, store_args: &[&'a str]) {
    let args = |a: &[&'a str]| [a, store_args].concat();
    let r = hp(dir, &args(&["state", "dump", "--plugin", "cost-governor"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "tenant:acme:spent\t1200\ntenant:beta:spent\t7\n");
    assert!(r.stderr.contains("cost-governor: 2 keys in"), "{}", r.stderr);
    // Non-printable bytes are escaped, so a dump is one line per key.
    let r = hp(dir, &args(&["state", "dump", "--plugin", "audit-chain"]));
    assert_eq!(r.stdout, "tail\t{\\\"seq\\\":3}\\n\\x01\n");

    let r = hp(dir, &args(&["state", "get", "--plugin", "cost-governor", "tenant:acme:spent"]));
    assert_eq!((r.code, r.stdout.as_str()), (0, "1200"));
    // Another plugin's namespace does not hold it.
    let r = hp(dir, &args(&["state", "get", "--plugin", "audit-chain", "tenant:acme:spent"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("audit-chain: no key \"tenant:acme:spent\""), "{}", r.stderr);

    let r = hp(dir, &args(&["state", "delete", "--plugin", "cost-governor", "tenant:acme:spent"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = hp(dir, &args(&["state", "get", "--plugin", "cost-governor", "tenant:acme:spent"]));
    assert_eq!(r.code, 1);
    let r = hp(dir, &args(&["state", "plugins"]));
    assert_eq!((r.code, r.stdout.as_str()), (0, "audit-chain\ncost-governor\n"), "{}", r.stderr);
}

#[test]
fn state_dump_get_and_delete_work_offline_on_the_sqlite_file_a_host_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    seed(&Store::open(&StateConfig { path: Some(db.clone()), ..StateConfig::new(BackendKind::Sqlite) }).unwrap());
    exercise(dir.path(), &["--sqlite", db.to_str().unwrap()]);

    // The same store named through proxy.toml's [state] table.
    let toml =
        format!("[state]\nbackend = \"sqlite\"\npath = {:?}\n\n[[plugins]]\nname = \"x\"\n", db.to_str().unwrap());
    std::fs::write(dir.path().join("proxy.toml"), toml).unwrap();
    let r =
        hp(dir.path(), &["state", "get", "--plugin", "cost-governor", "tenant:beta:spent", "--config", "proxy.toml"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "7"), "{}", r.stderr);
}

#[test]
fn state_works_online_on_redis_and_an_unreachable_store_is_exit_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server) is installed");
    let url = format!("redis://127.0.0.1:{port}/0");
    let cfg = StateConfig { url: Some(url.clone()), ..StateConfig::new(BackendKind::Redis) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let store = loop {
        match Store::open(&cfg) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("redis-server did not come up: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    seed(&store);
    exercise(dir.path(), &["--redis", &url]);
    let _ = server.kill();
    let _ = server.wait();

    let r = hp(dir.path(), &["state", "dump", "--plugin", "cost-governor", "--redis", &url]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stderr.contains(&format!("state store redis 127.0.0.1:{port}/0 unavailable")), "{}", r.stderr);
    let r = hp(dir.path(), &["state", "dump", "--plugin", "x", "--sqlite", "no-such.db"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no-such.db: no such state file"), "{}", r.stderr);
}
