//! Atomic add and compare-and-swap on every persistent backend: no lost update under concurrency.

use std::{sync::Arc, thread, time::Instant};

use helios_plugin_state::{Caps, RedisKv, SqliteKv, StateError, Synchronous};

use crate::support::{RedisServer, redis_options, sqlite_path};

/// Adds per thread: 1,000,000 in a release build (`cargo test --release -p helios-plugin-state`);
/// 250,000 in a debug build, where a million per thread took 6 minutes for SQLite on a loaded 2-core
/// machine (it passed). `HELIOS_STATE_ADDS` overrides both.
fn adds() -> i64 {
    let default = if cfg!(debug_assertions) { 250_000 } else { 1_000_000 };
    std::env::var("HELIOS_STATE_ADDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Two threads add 1 `n` times each to one counter; none may be lost.
fn two_threads_add(backend: &str, add: impl Fn() -> Result<i64, StateError> + Send + Sync + 'static) -> i64 {
    let n = adds();
    let add = Arc::new(add);
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let add = add.clone();
            thread::spawn(move || {
                let mut last = 0;
                for _ in 0..n {
                    let v = add().unwrap();
                    assert!(v > last, "counter went from {last} to {v}");
                    last = v;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{backend}: 2 x {n} atomic adds in {secs:.1} s ({:.1} us per add)", secs * 1e6 / (2 * n) as f64);
    n
}

#[test]
fn sqlite_two_threads_adding_lose_no_update() {
    let (_dir, path) = sqlite_path();
    // synchronous = normal: a WAL commit survives a process crash without an fsync per add; with
    // "full" a million adds take as many fsyncs (tested for durability in failure.rs instead).
    let kv = Arc::new(SqliteKv::open(&path, Caps::default(), Synchronous::Normal).unwrap());
    let k = kv.clone();
    let n = two_threads_add("sqlite", move || k.add("counter", b"n", 1));
    assert_eq!(kv.read("counter", b"n").unwrap(), Some((2 * n).to_string().into_bytes()));
}

#[test]
fn redis_two_threads_adding_lose_no_update() {
    let server = RedisServer::start();
    let kv = Arc::new(RedisKv::connect(&server.url(), Caps::default(), redis_options()).unwrap());
    let k = kv.clone();
    let n = two_threads_add("redis", move || k.add("counter", b"n", 1));
    assert_eq!(kv.read("counter", b"n").unwrap(), Some((2 * n).to_string().into_bytes()));
}

#[test]
fn compare_and_swap_appends_to_one_unbroken_chain_under_8_writers() {
    // The audit-chain pattern: read the tail, append, swap the tail in only if nobody else did.
    let server = RedisServer::start();
    let (_dir, path) = sqlite_path();
    let redis = Arc::new(RedisKv::connect(&server.url(), Caps::default(), redis_options()).unwrap());
    let sqlite = Arc::new(SqliteKv::open(&path, Caps::default(), Synchronous::Full).unwrap());
    type Cas = dyn Fn(Option<&[u8]>, &[u8]) -> Result<bool, StateError> + Send + Sync;
    type Read = dyn Fn() -> Result<Option<Vec<u8>>, StateError> + Send + Sync;
    let (r1, r2, s1, s2) = (redis.clone(), redis.clone(), sqlite.clone(), sqlite.clone());
    let cases: Vec<(&str, Arc<Cas>, Arc<Read>)> = vec![
        (
            "redis",
            Arc::new(move |e, n| r1.compare_and_swap("audit", b"tail", e, n)),
            Arc::new(move || r2.read("audit", b"tail")),
        ),
        (
            "sqlite",
            Arc::new(move |e, n| s1.compare_and_swap("audit", b"tail", e, n)),
            Arc::new(move || s2.read("audit", b"tail")),
        ),
    ];
    for (backend, cas, read) in cases {
        let per_writer = 50;
        let threads: Vec<_> = (0..8)
            .map(|w| {
                let (cas, read) = (cas.clone(), read.clone());
                thread::spawn(move || {
                    for i in 0..per_writer {
                        loop {
                            let tail = read().unwrap();
                            // Each link: <seq>:<writer>-<i>; the seq is the previous one + 1.
                            let seq = tail.as_deref().map_or(0, |t| {
                                std::str::from_utf8(t).unwrap().split(':').next().unwrap().parse::<u64>().unwrap() + 1
                            });
                            if cas(tail.as_deref(), format!("{seq}:{w}-{i}").as_bytes()).unwrap() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let tail = String::from_utf8(read().unwrap().unwrap()).unwrap();
        assert!(tail.starts_with(&format!("{}:", 8 * per_writer - 1)), "{backend}: the chain forked, tail {tail}");
        // A stale expectation never swaps, and "expect missing" fails once the key exists.
        assert!(!cas(Some(b"0:stale"), b"x").unwrap(), "{backend}");
        assert!(!cas(None, b"x").unwrap(), "{backend}");
    }
}

#[test]
fn atomic_add_refuses_values_that_are_not_counters_and_overflow_on_every_backend() {
    let server = RedisServer::start();
    let (_dir, path) = sqlite_path();
    let redis = RedisKv::connect(&server.url(), Caps::default(), redis_options()).unwrap();
    let sqlite = SqliteKv::open(&path, Caps::default(), Synchronous::Full).unwrap();
    type Ops<'a> = (&'a str, Box<dyn Fn(&[u8], i64) -> Result<i64, StateError> + 'a>, Box<dyn Fn(&[u8], &[u8]) + 'a>);
    let cases: Vec<Ops> = vec![
        ("redis", Box::new(|k, d| redis.add("p", k, d)), Box::new(|k, v| redis.write("p", k, v).unwrap())),
        ("sqlite", Box::new(|k, d| sqlite.add("p", k, d)), Box::new(|k, v| sqlite.write("p", k, v).unwrap())),
    ];
    for (backend, add, set) in cases {
        assert_eq!(add(b"c", 5), Ok(5), "{backend}: a missing counter starts at 0");
        assert_eq!(add(b"c", -7), Ok(-2), "{backend}");
        for bad in [&b"x"[..], b"+1", b"01", b"-0", b"1.5", b""] {
            set(b"t", bad);
            assert_eq!(add(b"t", 1), Err(StateError::NotACounter), "{backend}: {bad:?}");
        }
        set(b"m", i64::MAX.to_string().as_bytes());
        assert_eq!(add(b"m", 1), Err(StateError::Overflow), "{backend}");
        assert_eq!(add(b"m", -1), Ok(i64::MAX - 1), "{backend}: a refused add changed the counter");
    }
}
