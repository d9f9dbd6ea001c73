//! Limits and timeouts, each named in the error a client sees.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_proxy::NoHooks;

use crate::extended::{connect, rt};
use crate::support::pg::{self, PgCluster};
use crate::support::proxy::{TestProxy, config_text};
use crate::support::raw::{self, RawClient};

#[test]
fn a_client_that_does_not_log_in_is_closed_after_client_login_timeout_ms() {
    let db = PgCluster::start();
    let toml = "client_login_timeout_ms = 500\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), Arc::new(NoHooks));
    let started = Instant::now();
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = silent.read_to_end(&mut got);
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    assert_eq!(got.first(), Some(&b'E'), "{got:?}");
    let msg = raw::field(&got[5..], b'M');
    assert!(msg.contains("client_login_timeout_ms"), "{msg}");
    // A client that logs in promptly is unaffected.
    let mut c = RawClient::connect(proxy.port(), pg::SUPERUSER);
    c.query("SELECT 1");
    assert!(c.read_until_ready().iter().any(|m| m.0 == b'D'));
}

#[test]
fn max_client_conn_refuses_one_client_more_with_53300() {
    let db = PgCluster::start();
    let toml = "max_client_conn = 2\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), Arc::new(NoHooks));
    let _a = RawClient::connect(proxy.port(), pg::SUPERUSER);
    let _b = RawClient::connect(proxy.port(), pg::SUPERUSER);
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SELECT 1;", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("max_client_conn = 2"), "{err}");
    drop(_a);
    std::thread::sleep(Duration::from_millis(300));
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SELECT 'in';", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "in", "a freed place is reused");
}

#[test]
fn a_session_idle_in_a_transaction_is_closed_and_its_transaction_rolled_back() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE t (x int);");
    let toml = "idle_in_transaction_timeout_ms = 400\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), Arc::new(NoHooks));
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        c.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let e = c.batch_execute("COMMIT").await.expect_err("the session was closed");
        let text = e.to_string() + &e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
        assert!(e.is_closed() || text.contains("idle_in_transaction_timeout_ms"), "{e:?}");
        // Idle outside a transaction is fine.
        let d = connect(proxy.port()).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(d.query_one("SELECT 2", &[]).await.unwrap().get::<_, i32>(0), 2);
    });
    assert_eq!(db.psql("SELECT count(*) FROM t;").trim(), "0");
}
