//! Restarts and outages: SQLite state survives a restart, an unreachable store gives an error naming
//! it, Redis killed mid-load gives named errors and recovers without losing an acknowledged write,
//! and two replicas sharing one Redis enforce one budget exactly.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use helios_plugin_host::{PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::GuardVerdict;
use helios_plugin_state::{BackendKind, Caps, RedisKv, SqliteKv, StateConfig, StateError, Store, Synchronous};

use crate::support::{RedisServer, redis_options, sqlite_path};

#[test]
fn sqlite_state_written_through_a_guest_survives_a_restart_of_the_host() {
    let (_dir, path) = sqlite_path();
    let cfg = StateConfig { path: Some(path.clone()), ..StateConfig::new(BackendKind::Sqlite) };
    let guard = crate::isolation::kv_guard;
    {
        let store = Store::open(&cfg).unwrap();
        let rt = Runtime::new(RuntimeConfig::default().kv(store.backend())).unwrap();
        let p = rt.load(guard("s", "spent:42").as_bytes(), PluginConfig::new("budget")).unwrap();
        assert_eq!(p.evaluate_json(b"tenant:acme").unwrap(), GuardVerdict::Allow);
        match &store {
            Store::Sqlite(s) => assert_eq!(s.add("budget", b"statements", 7), Ok(7)),
            other => panic!("opened {other:?}"),
        }
    }
    // A new process would do exactly this: open the file again, build a new runtime.
    let store = Store::open(&cfg).unwrap();
    let rt = Runtime::new(RuntimeConfig::default().kv(store.backend())).unwrap();
    let p = rt.load(guard("g", "").as_bytes(), PluginConfig::new("budget")).unwrap();
    assert_eq!(p.evaluate_json(b"tenant:acme").unwrap(), GuardVerdict::deny("spent:42"));
    match &store {
        Store::Sqlite(s) => assert_eq!(s.add("budget", b"statements", 1), Ok(8), "the counter restarted"),
        other => panic!("opened {other:?}"),
    }
    assert!(store.describe().contains("synchronous=full"), "{}", store.describe());
}

#[test]
fn an_unusable_sqlite_path_or_an_unreachable_redis_is_an_error_naming_it() {
    let (dir, _) = sqlite_path();
    let missing = dir.path().join("no-such-dir").join("state.db");
    let e = SqliteKv::open(&missing, Caps::default(), Synchronous::Full).unwrap_err();
    assert!(matches!(&e, StateError::Sqlite { path, .. } if *path == missing), "{e:?}");
    assert!(e.to_string().contains("no-such-dir"), "{e}");

    // A port nobody listens on: refused at once, named.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = Instant::now();
    let e = RedisKv::connect(&format!("redis://:hunter2@127.0.0.1:{port}/3"), Caps::default(), redis_options())
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("state store redis 127.0.0.1:{port}/3 unavailable")), "{msg}");
    assert!(!msg.contains("hunter2"), "the password leaked into {msg}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn redis_killed_mid_load_gives_named_errors_then_recovers_without_losing_an_acknowledged_write() {
    let mut server = RedisServer::start_durable();
    let kv = Arc::new(RedisKv::connect(&server.url(), Caps::default(), redis_options()).unwrap());
    let (acked, failed, stop) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<(StateError, Duration)>::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (kv, acked, failed, stop, errors) =
                (kv.clone(), acked.clone(), failed.clone(), stop.clone(), errors.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    match kv.add("budget", b"spent", 1) {
                        Ok(_) => acked.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            errors.lock().unwrap().push((e, t.elapsed()));
                            thread::sleep(Duration::from_millis(5));
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for("adds before the kill", &|| acked.load(Ordering::SeqCst) > 500);
    server.kill();
    wait_for("failures while down", &|| failed.load(Ordering::SeqCst) > 20);
    let acked_before_restart = acked.load(Ordering::SeqCst);
    server.restart();
    wait_for("adds after the restart", &|| acked.load(Ordering::SeqCst) > acked_before_restart + 500);
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }

    let errors = errors.lock().unwrap();
    for (e, took) in errors.iter() {
        assert!(matches!(e, StateError::Redis { .. }), "{e:?}");
        assert!(e.to_string().contains(&format!("redis 127.0.0.1:{}/0 unavailable", server.port)), "{e}");
        // Bounded by the timeouts (500 ms connect, 500 ms per command), with slack for a loaded machine.
        assert!(*took < Duration::from_secs(5), "a failed call took {took:?}");
    }
    // Every acknowledged add is in the counter; an add that failed may or may not have been applied
    // (the server can die after its fsync and before its reply), so it can hold at most that many more.
    let (acked, failed) = (acked.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    let spent: u64 = String::from_utf8(kv.read("budget", b"spent").unwrap().unwrap()).unwrap().parse().unwrap();
    assert!(spent >= acked, "lost acknowledged adds: counter {spent}, acknowledged {acked}");
    assert!(spent <= acked + failed, "counter {spent} > acknowledged {acked} + failed {failed}");
}

#[test]
fn two_replicas_sharing_one_redis_enforce_one_budget_exactly() {
    let server = RedisServer::start();
    let budget = 1000;
    // Two replicas: two independent connection pools, four workers each, all charging one tenant.
    let replicas: Vec<_> =
        (0..2).map(|_| Arc::new(RedisKv::connect(&server.url(), Caps::default(), redis_options()).unwrap())).collect();
    let allowed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = replicas
        .iter()
        .flat_map(|kv| (0..4).map(move |_| kv.clone()))
        .map(|kv| {
            let allowed = allowed.clone();
            thread::spawn(move || {
                for _ in 0..400 {
                    // Charge first, allow only within the budget: what cost-governor does with kv_add.
                    if kv.add("cost-governor", b"tenant:acme:spent", 1).unwrap() <= budget {
                        allowed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(allowed.load(Ordering::SeqCst), budget as u64, "8 workers x 400 attempts against a budget of {budget}");
    let spent = replicas[1].read("cost-governor", b"tenant:acme:spent").unwrap();
    assert_eq!(spent, Some(b"3200".to_vec()), "every attempt was charged once");
}
