//! Faults: departing clients, node restarts, protocol violations, bad routes, shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_proxy::NoHooks;
use tokio_postgres::error::SqlState;

use crate::extended::{connect, connect_as, rt};
use crate::support::pg::{self, PgCluster};
use crate::support::proxy::{ScriptedHooks, TestProxy, config_text};
use crate::support::raw::{self, RawClient};

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_client_that_leaves_mid_query_gets_its_statement_cancelled_and_others_carry_on() {
    let db = PgCluster::start();
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(NoHooks));
    let mut c = RawClient::connect(proxy.port(), pg::SUPERUSER);
    c.query("SELECT pg_sleep(60) AS helios_departed");
    let running = || {
        db.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%helios_departed%' AND state = 'active' AND pid <> pg_backend_pid();").trim().to_string()
    };
    wait_until("the sleep runs", || running() == "1");
    drop(c);
    wait_until("the departed client's statement is gone", || running() == "0");
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SELECT 'alive';", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alive");
}

#[test]
fn an_oversized_message_closes_only_that_connection_with_08p01() {
    let db = PgCluster::start();
    let proxy = TestProxy::start(
        &config_text(&[("primary", db.port(), "primary")], "max_message_bytes = 65536\n"),
        Arc::new(NoHooks),
    );
    rt().block_on(async {
        let bystander = connect(proxy.port()).await;
        let port = proxy.port();
        let (code, closed) = tokio::task::spawn_blocking(move || {
            let mut c = RawClient::connect(port, pg::SUPERUSER);
            c.query(&format!("SELECT '{}'", "x".repeat(100_000)));
            let m = c.read().expect("an ErrorResponse before the close");
            assert_eq!(m.0, b'E');
            assert!(raw::field(&m.1, b'M').contains("exceeds the limit of 65536 bytes"), "{}", raw::field(&m.1, b'M'));
            (raw::sqlstate(&m.1), c.closed())
        })
        .await
        .unwrap();
        assert_eq!((code.as_str(), closed), ("08P01", true));
        let n: i32 = bystander.query_one("SELECT 3", &[]).await.unwrap().get(0);
        assert_eq!(n, 3, "the other session must be untouched");
    });
}

#[test]
fn malformed_messages_close_only_that_connection() {
    let db = PgCluster::start();
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(NoHooks));
    // A length below 4, an unknown message type, a Parse without its terminators.
    let cases: [&[u8]; 3] = [b"Q\x00\x00\x00\x02", b"@\x00\x00\x00\x04", b"P\x00\x00\x00\x08abcd"];
    for bytes in cases {
        let mut c = RawClient::connect(proxy.port(), pg::SUPERUSER);
        c.send(bytes);
        let m = c.read();
        if let Some((tag, body)) = &m {
            assert_eq!((*tag, raw::sqlstate(body).as_str()), (b'E', "08P01"), "{bytes:?}");
        }
        assert!(m.is_none() || c.closed(), "{bytes:?}: connection left open");
    }
    // A startup packet with an absurd length.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    std::io::Write::write_all(&mut s, &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]).unwrap();
    let mut c = RawClient { sock: s };
    c.sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let m = c.read().expect("an ErrorResponse for a bad startup packet");
    assert_eq!((m.0, raw::sqlstate(&m.1).as_str()), (b'E', "08P01"));
    let mut ok = RawClient::connect(proxy.port(), pg::SUPERUSER);
    ok.query("SELECT 1");
    assert!(ok.read_until_ready().iter().any(|m| m.0 == b'D'));
}

#[test]
fn a_node_restart_gives_a_clear_error_then_the_same_session_recovers() {
    let mut db = PgCluster::start();
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(NoHooks));
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
        db.stop();
        let err = c.simple_query("SELECT 2").await.expect_err("the node is down");
        let dbe = err.as_db_error().expect("an ErrorResponse, not a dropped socket");
        assert!(dbe.code().code().starts_with("08") || dbe.code() == &SqlState::ADMIN_SHUTDOWN, "{dbe:?}");
        assert!(dbe.message().contains("primary"), "the error names the node: {dbe:?}");
        // While it is down, every statement gets a clear error.
        let err = c.simple_query("SELECT 3").await.expect_err("still down");
        assert!(err.as_db_error().is_some_and(|e| e.message().contains("primary")), "{err}");
        db.start_again();
        let mut recovered = false;
        for _ in 0..50 {
            if let Ok(rows) = c.query("SELECT 4", &[]).await {
                assert_eq!(rows[0].get::<_, i32>(0), 4);
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(recovered, "the session did not recover after the restart");
        let fresh = connect(proxy.port()).await;
        assert_eq!(fresh.query_one("SELECT 5", &[]).await.unwrap().get::<_, i32>(0), 5);
    });
}

#[test]
fn a_node_that_is_down_at_login_gives_a_postgres_error() {
    let mut db = PgCluster::start();
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(NoHooks));
    db.stop();
    rt().block_on(async {
        let err = connect_as(proxy.port(), pg::SUPERUSER, None).await.expect_err("login fails");
        let dbe = err.as_db_error().expect("an ErrorResponse");
        assert_eq!(dbe.code().code(), "08001");
        assert!(dbe.message().contains("node \"primary\""), "{dbe:?}");
    });
}

#[test]
fn a_route_to_an_unknown_node_is_an_error_naming_the_node_and_the_session_goes_on() {
    let db = PgCluster::start();
    let hooks = Arc::new(ScriptedHooks { route: vec![("elsewhere".into(), "nowhere".into())], ..Default::default() });
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks);
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        for _ in 0..2 {
            let err = c.query("SELECT 'elsewhere'", &[]).await.unwrap_err();
            let msg = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
            assert!(msg.contains("\"nowhere\"") && msg.contains("not configured"), "{err}");
            let err = c.simple_query("SELECT 'elsewhere'").await.unwrap_err();
            assert!(err.as_db_error().is_some(), "{err}");
            assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
        }
    });
}

#[test]
fn shutdown_lets_an_open_transaction_finish_then_closes_the_session() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE t (x int);");
    let proxy = TestProxy::start(
        &config_text(&[("primary", db.port(), "primary")], "shutdown_timeout_ms = 20000\n"),
        Arc::new(NoHooks),
    );
    let port = proxy.port();
    rt().block_on(async {
        let c = connect(port).await;
        c.batch_execute("BEGIN; INSERT INTO t VALUES (1);").await.unwrap();
        let stopper = std::thread::spawn(move || proxy.shutdown());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user=postgres connect_timeout=3"),
                tokio_postgres::NoTls
            )
            .await
            .is_err(),
            "a new client was accepted during shutdown"
        );
        c.batch_execute("INSERT INTO t VALUES (2); COMMIT;").await.expect("the open transaction finishes");
        let err = c.simple_query("SELECT 1").await.expect_err("the session is closed after its transaction");
        if let Some(dbe) = err.as_db_error() {
            assert_eq!(dbe.code(), &SqlState::ADMIN_SHUTDOWN);
        }
        stopper.join().unwrap();
    });
    assert_eq!(db.psql("SELECT count(*) FROM t;").trim(), "2");
}

#[test]
fn losing_the_node_inside_a_transaction_ends_the_session_with_a_fatal_error() {
    let mut db = PgCluster::start();
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(NoHooks));
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        c.batch_execute("BEGIN; SELECT 1;").await.unwrap();
        db.stop();
        let err = c.simple_query("SELECT 2").await.expect_err("the node is gone");
        if let Some(dbe) = err.as_db_error() {
            assert_eq!(dbe.code().code(), "08006", "{dbe:?}");
            assert!(dbe.message().contains("transaction is lost"), "{dbe:?}");
        }
        assert!(c.simple_query("COMMIT").await.is_err(), "a COMMIT must not pretend to succeed");
        assert!(c.is_closed(), "the session must end");
    });
}

#[test]
fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let db = PgCluster::start();
    let proxy = TestProxy::start(
        &config_text(&[("primary", db.port(), "primary")], "server_idle_timeout_ms = 300\n"),
        Arc::new(NoHooks),
    );
    let backends = || {
        db.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid();",
        )
        .trim()
        .to_string()
    };
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SELECT 1;", &[]);
    assert!(out.status.success());
    wait_until("the pooled connection is closed", || backends() == "0");
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SELECT 'again';", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "again");
}

#[test]
fn a_node_restart_under_load_gives_errors_not_hangs_and_every_session_recovers() {
    let mut db = PgCluster::start();
    let proxy = TestProxy::start(
        &config_text(&[("primary", db.port(), "primary")], "shutdown_timeout_ms = 20000\n"),
        Arc::new(NoHooks),
    );
    let port = proxy.port();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        db.stop();
        std::thread::sleep(Duration::from_millis(1000));
        db.start_again();
        db
    });
    let results = rt().block_on(async move {
        let mut tasks = Vec::new();
        for worker in 0..4 {
            tasks.push(tokio::spawn(async move {
                let c = connect(port).await;
                let (mut ok, mut errors, mut last_ok) = (0u32, 0u32, false);
                let end = Instant::now() + Duration::from_secs(6);
                let mut i = 0i32;
                while Instant::now() < end {
                    i += 1;
                    let q = async {
                        if i % 2 == 0 {
                            c.query_one("SELECT $1::int", &[&i]).await.map(|r| r.get::<_, i32>(0) == i)
                        } else {
                            c.simple_query("SELECT 1").await.map(|_| true)
                        }
                    };
                    match tokio::time::timeout(Duration::from_secs(10), q).await {
                        Err(_) => panic!("worker {worker}: a statement hung during the restart"),
                        Ok(Ok(true)) => {
                            ok += 1;
                            last_ok = true;
                        }
                        Ok(Ok(false)) => panic!("worker {worker}: wrong result"),
                        Ok(Err(e)) => {
                            assert!(e.as_db_error().is_some(), "worker {worker}: not an ErrorResponse: {e}");
                            errors += 1;
                            last_ok = false;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                (ok, errors, last_ok)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("worker"));
        }
        out
    });
    let db = restarter.join().unwrap();
    for (w, (ok, errors, last_ok)) in results.iter().enumerate() {
        assert!(*ok > 0 && *errors > 0, "worker {w}: {ok} ok, {errors} errors: the restart must be seen and survived");
        assert!(*last_ok, "worker {w} did not recover");
    }
    let started = Instant::now();
    proxy.shutdown();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown waited {:?}: a session hung", started.elapsed());
    assert_eq!(db.psql("SELECT 1;").trim(), "1");
}
