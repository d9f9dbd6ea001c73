//! The extended query protocol (Parse/Bind/Describe/Execute/Sync) through the proxy, driven by
//! tokio-postgres, and client authentication with SCRAM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_proxy::NoHooks;
use tokio_postgres::{Client, NoTls, error::SqlState};

use crate::support::pg::{self, PgCluster};
use crate::support::proxy::{ScriptedHooks, TestProxy, config_text};

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

pub async fn connect_as(port: u16, user: &str, password: Option<&str>) -> Result<Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(port).user(user).dbname("postgres").connect_timeout(Duration::from_secs(10));
    if let Some(p) = password {
        cfg.password(p);
    }
    let (client, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

pub async fn connect(port: u16) -> Client {
    connect_as(port, pg::SUPERUSER, None).await.expect("connect through the proxy")
}

#[test]
fn prepared_statements_with_parameters_run_and_rerun() {
    let db = PgCluster::start();
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(NoHooks));
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        c.batch_execute("CREATE TABLE kv (k int primary key, v text)").await.unwrap();
        let ins = c.prepare("INSERT INTO kv VALUES ($1, $2)").await.unwrap();
        for i in 0..20 {
            c.execute(&ins, &[&i, &format!("v{i}")]).await.unwrap();
        }
        let row = c.query_one("SELECT count(*), max(v) FROM kv WHERE k >= $1", &[&5i32]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), 15);
        assert_eq!(row.get::<_, String>(1), "v9");
        // A statement error leaves the session usable.
        let err = c.query("SELECT * FROM missing_table", &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
        assert_eq!(c.query_one("SELECT $1::text", &[&"still here"]).await.unwrap().get::<_, String>(0), "still here");
    });
}

#[test]
fn a_blocked_drop_table_in_the_extended_protocol_gets_42000_and_the_session_goes_on() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE keep_me (x int);");
    let hooks = Arc::new(ScriptedHooks {
        block: vec![("drop table".into(), "DROP TABLE is not allowed here".into())],
        ..Default::default()
    });
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks);
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        for _ in 0..2 {
            let err = c.execute("DROP TABLE keep_me", &[]).await.unwrap_err();
            let dbe = err.as_db_error().expect("an ErrorResponse");
            assert_eq!(dbe.code().code(), "42000");
            assert!(dbe.message().contains("DROP TABLE is not allowed here"), "{dbe:?}");
            let n: i32 = c.query_one("SELECT $1::int + 1", &[&41i32]).await.unwrap().get(0);
            assert_eq!(n, 42);
        }
    });
    assert_eq!(db.psql("SELECT count(*) FROM keep_me;").trim(), "0");
}

#[test]
fn rewrite_and_cache_apply_to_prepared_statements() {
    let db = PgCluster::start();
    let mut hooks = crate::simple::cached_hooks();
    hooks.rewrite = vec![("'original'".into(), "SELECT 'rewritten'::text".into())];
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(hooks));
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        let v: String = c.query_one("SELECT 'original'::text", &[]).await.unwrap().get(0);
        assert_eq!(v, "rewritten");
        let rows = c.query("SELECT from_the_cache", &[]).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, String>(0), "cached-value");
        let n: i32 = c.query_one("SELECT 5", &[]).await.unwrap().get(0);
        assert_eq!(n, 5);
    });
}

#[test]
fn extended_routing_follows_the_plugin_outside_transactions_only() {
    let primary = PgCluster::start();
    let second = PgCluster::start();
    let hooks =
        Arc::new(ScriptedHooks { route: vec![("inet_server_port".into(), "second".into())], ..Default::default() });
    let cfg = config_text(&[("primary", primary.port(), "primary"), ("second", second.port(), "standby")], "");
    let proxy = TestProxy::start(&cfg, hooks);
    let (p, s) = (primary.port() as i32, second.port() as i32);
    rt().block_on(async {
        let mut c = connect(proxy.port()).await;
        let port = |r: tokio_postgres::Row| r.get::<_, i32>(0);
        assert_eq!(port(c.query_one("SELECT inet_server_port()", &[]).await.unwrap()), s);
        assert_eq!(port(c.query_one("SELECT current_setting('port')::int", &[]).await.unwrap()), p);
        let tx = c.transaction().await.unwrap();
        assert_eq!(port(tx.query_one("SELECT current_setting('port')::int", &[]).await.unwrap()), p);
        assert_eq!(
            port(tx.query_one("SELECT inet_server_port()", &[]).await.unwrap()),
            p,
            "a transaction must stay on its node"
        );
        tx.commit().await.unwrap();
        assert_eq!(port(c.query_one("SELECT inet_server_port()", &[]).await.unwrap()), s);
    });
}

#[test]
fn scram_clients_reach_md5_and_scram_upstream_users() {
    let db = PgCluster::start();
    let extra = format!(
        "[[users]]\nname = \"{md5}\"\npassword = \"{pw}\"\n[[users]]\nname = \"{scram}\"\nscram_verifier = \"{v}\"\nupstream_password = \"{pw}\"\n",
        md5 = pg::MD5_USER,
        scram = pg::SCRAM_USER,
        pw = pg::PASSWORD,
        v = stored_verifier(&db, pg::PASSWORD),
    );
    let mut cfg = config_text(&[("primary", db.port(), "primary")], &extra);
    cfg = cfg.replace("listen = \"127.0.0.1:0\"\n", "listen = \"127.0.0.1:0\"\nauth = \"scram-sha-256\"\n");
    let proxy = TestProxy::start(&cfg, Arc::new(NoHooks));
    rt().block_on(async {
        for user in [pg::MD5_USER, pg::SCRAM_USER] {
            let c = connect_as(proxy.port(), user, Some(pg::PASSWORD)).await.unwrap_or_else(|e| panic!("{user}: {e}"));
            let who: String = c.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
            assert_eq!(who, user);
            let err = connect_as(proxy.port(), user, Some("wrong")).await.expect_err("a wrong password is refused");
            assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("28P01"), "{err}");
        }
        let err = connect_as(proxy.port(), "nobody", Some("x")).await.expect_err("an unknown user is refused");
        assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("28P01"), "{err}");
    });
}

/// A SCRAM verifier as PostgreSQL stores it in pg_authid.
fn stored_verifier(db: &PgCluster, password: &str) -> String {
    db.psql(&format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE v PASSWORD '{password}';"));
    db.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'v';").trim().to_string()
}

#[test]
fn a_cancel_request_reaches_the_right_backend() {
    let db = PgCluster::start();
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(NoHooks));
    rt().block_on(async {
        let busy = connect(proxy.port()).await;
        let other = connect(proxy.port()).await;
        let token = busy.cancel_token();
        let started = Instant::now();
        let sleeper = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(20)").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(NoTls).await.expect("cancel request sent");
        let err = sleeper.await.unwrap().expect_err("the statement was cancelled");
        assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let n: i32 = other.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(n, 1, "the other session was not cancelled");
    });
}

#[test]
fn a_block_inside_an_extended_transaction_fails_the_transaction() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE ledger (x int);");
    let hooks = Arc::new(ScriptedHooks { block: vec![("drop table".into(), "no drops".into())], ..Default::default() });
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks);
    rt().block_on(async {
        let mut c = connect(proxy.port()).await;
        let tx = c.transaction().await.unwrap();
        tx.execute("INSERT INTO ledger VALUES ($1)", &[&1i32]).await.unwrap();
        let err = tx.execute("DROP TABLE ledger", &[]).await.unwrap_err();
        assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("42000"));
        let err = tx.query("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{err}");
        tx.rollback().await.unwrap();
        let n: i64 = c.query_one("SELECT count(*) FROM ledger", &[]).await.unwrap().get(0);
        assert_eq!(n, 0);
    });
}

#[test]
fn set_helios_attributes_work_in_the_extended_protocol() {
    let db = PgCluster::start();
    let hooks = Arc::new(ScriptedHooks::default());
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks.clone());
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        assert_eq!(c.execute("SET helios.tenant = 'acme'", &[]).await.unwrap(), 0);
        c.query_one("SELECT 'tagged'::text", &[]).await.unwrap();
    });
    let seen = hooks.seen();
    let tagged = seen.iter().find(|c| c.query.contains("tagged")).expect("the SELECT went through pre_query");
    assert_eq!(tagged.hook_context.attr("helios.tenant"), Some("acme"));
    assert!(!seen.iter().any(|c| c.query.contains("SET helios")), "SET helios.* is not a plugin statement");
}

#[test]
fn every_statement_arrives_with_postgresql_parser_facts_in_both_protocols() {
    use helios_plugin_schema::facts::StatementClass;
    let db = PgCluster::start();
    db.psql("CREATE TABLE orders (id int, tenant_id text);");
    let hooks = Arc::new(ScriptedHooks::default());
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks.clone());
    let out = pg::psql_raw(
        proxy.port(),
        pg::SUPERUSER,
        "postgres",
        "/* ai: simple */ SELECT id FROM public.orders WHERE tenant_id = 'acme';\n",
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        c.execute("DELETE FROM orders WHERE id IS NOT NULL", &[]).await.unwrap();
        c.query("SELECT id FROM orders WHERE id = $1", &[&1i32]).await.unwrap();
    });
    let seen = hooks.seen();
    let find = |s: &str| seen.iter().find(|c| c.query.contains(s)).unwrap_or_else(|| panic!("{s} not seen"));

    let simple = find("ai: simple");
    assert_eq!(simple.tables, ["public.orders"]);
    assert!(simple.is_read_only);
    assert!(simple.normalized.contains("SELECT id FROM public.orders WHERE tenant_id = $1"), "{}", simple.normalized);
    let f = simple.facts.as_ref().expect("facts in the simple protocol");
    assert_eq!((f.source.as_str(), f.comments.as_slice()), ("pg_query", &["ai: simple".to_owned()][..]));
    assert_eq!(f.statements[0].levels[0].equalities[0].column, "tenant_id");

    let delete = find("DELETE");
    assert!(!delete.is_read_only);
    let f = delete.facts.as_ref().expect("facts in the extended protocol");
    assert_eq!(f.statements[0].class, StatementClass::Write);
    assert!(!f.statements[0].levels[0].is_restricted("orders"), "IS NOT NULL restricts nothing");

    let param = find("id = $1");
    assert!(param.facts.as_ref().unwrap().statements[0].levels[0].is_restricted("orders"));
}
