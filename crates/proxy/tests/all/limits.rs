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

/// A tokio-postgres client of `database` whose `application_name` makes it a pool key of its own.
async fn open_as(
    port: u16,
    user: &str,
    password: Option<&str>,
    database: &str,
    app: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(port).user(user).dbname(database).application_name(app);
    cfg.connect_timeout(Duration::from_secs(20));
    if let Some(p) = password {
        cfg.password(p);
    }
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let d = e.as_db_error().unwrap_or_else(|| panic!("a server error, found {e}"));
    (d.code().code().to_string(), d.message().to_string())
}

/// Server connections of these application names, counted by the server itself.
fn server_connections(db: &PgCluster, apps: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name IN ({apps});"
    );
    db.psql(&sql).trim().parse().expect("a count")
}

/// PgBouncer's `max_db_connections`: one cap over every pool (user, startup parameters) of a
/// database. A client over it waits in FIFO order, is served when a place frees, and after
/// `pool_timeout_ms` gets 53300 naming the cap.
#[test]
fn max_db_connections_queues_clients_of_every_pool_of_the_database_then_names_the_cap() {
    let db = PgCluster::start();
    let toml = "pool_size = 4\nmax_db_connections = 2\npool_timeout_ms = 1500\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), Arc::new(NoHooks));
    let port = proxy.port();
    rt().block_on(async {
        let a = open_as(port, pg::SUPERUSER, None, "postgres", "cap_a").await.expect("first place");
        let b = open_as(port, pg::SUPERUSER, None, "postgres", "cap_b").await.expect("second place");
        // A third pool of the same database has room of its own (pool_size 4) but not under the cap.
        let waiting = tokio::spawn(open_as(port, pg::SUPERUSER, None, "postgres", "cap_c"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!waiting.is_finished(), "the third client waits for a place");
        assert_eq!(server_connections(&db, "'cap_a', 'cap_b', 'cap_c'"), 2);
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("served when a place frees")
            .unwrap()
            .expect("the waiting client connects");
        assert_eq!(c.query_one("SELECT 3", &[]).await.unwrap().get::<_, i32>(0), 3);
        // b and c hold both places: one more client waits pool_timeout_ms, then is told why.
        let started = Instant::now();
        let e = open_as(port, pg::SUPERUSER, None, "postgres", "cap_d").await.expect_err("over the cap");
        let waited = started.elapsed();
        let (code, msg) = db_error(&e);
        assert_eq!(code, "53300", "{msg}");
        assert!(msg.contains("max_db_connections = 2") && msg.contains("database \"postgres\""), "{msg}");
        assert!(waited >= Duration::from_millis(1400), "gave up after {waited:?}, before pool_timeout_ms");
        assert_eq!(b.query_one("SELECT 2", &[]).await.unwrap().get::<_, i32>(0), 2);
    });
    assert!(server_connections(&db, "'cap_a', 'cap_b', 'cap_c', 'cap_d'") <= 2);
}

/// PgBouncer's `max_user_connections`: one cap over every database of a user; `[[users]]
/// max_user_connections` gives a user its own.
#[test]
fn max_user_connections_caps_a_user_over_its_databases_and_a_user_may_have_its_own() {
    let db = PgCluster::start();
    db.psql("CREATE DATABASE other;");
    let toml = format!(
        "max_user_connections = 1\npool_timeout_ms = 300\n[[users]]\nname = \"{}\"\npassword = \"{}\"\nmax_user_connections = 2\n",
        pg::MD5_USER,
        pg::PASSWORD
    );
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], &toml), Arc::new(NoHooks));
    let port = proxy.port();
    rt().block_on(async {
        let _held = open_as(port, pg::SUPERUSER, None, "postgres", "u1").await.expect("the user's one place");
        let e = open_as(port, pg::SUPERUSER, None, "other", "u2").await.expect_err("a second database, same user");
        let (code, msg) = db_error(&e);
        assert_eq!(code, "53300", "{msg}");
        assert!(
            msg.contains("max_user_connections = 1") && msg.contains(&format!("user \"{}\"", pg::SUPERUSER)),
            "{msg}"
        );
        // Another user has a place of its own, and its own cap of 2.
        let m1 = open_as(port, pg::MD5_USER, Some(pg::PASSWORD), "postgres", "m1").await.expect("md5user 1");
        let m2 = open_as(port, pg::MD5_USER, Some(pg::PASSWORD), "other", "m2").await.expect("md5user 2");
        for c in [&m1, &m2] {
            assert_eq!(c.query_one("SELECT current_user::text", &[]).await.unwrap().get::<_, String>(0), pg::MD5_USER);
        }
        let e = open_as(port, pg::MD5_USER, Some(pg::PASSWORD), "other", "m3").await.expect_err("a third");
        assert!(db_error(&e).1.contains("max_user_connections = 2"), "{e}");
    });
}

/// In transaction mode an idle connection of another pool of the database is closed to make room,
/// as PgBouncer does, instead of the client waiting for a timeout.
#[test]
fn an_idle_connection_of_another_pool_is_closed_to_make_room_under_max_db_connections() {
    let db = PgCluster::start();
    let toml = "pool_mode = \"transaction\"\nmax_db_connections = 1\npool_timeout_ms = 5000\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), Arc::new(NoHooks));
    let port = proxy.port();
    rt().block_on(async {
        let a = open_as(port, pg::SUPERUSER, None, "postgres", "evict_a").await.unwrap();
        let b = open_as(port, pg::SUPERUSER, None, "postgres", "evict_b").await.unwrap();
        for round in 0..3 {
            for (c, app) in [(&a, "evict_a"), (&b, "evict_b")] {
                let started = Instant::now();
                let got: String = c.query_one("SELECT current_setting('application_name')", &[]).await.unwrap().get(0);
                assert_eq!(got, app);
                assert!(started.elapsed() < Duration::from_secs(3), "round {round}: waited {:?}", started.elapsed());
            }
        }
    });
    assert!(server_connections(&db, "'evict_a', 'evict_b'") <= 1);
}
