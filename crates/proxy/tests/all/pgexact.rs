//! PostgreSQL-exact details real drivers never show in the differential scripts: FunctionCall,
//! ParameterStatus on hand-over, and `post_query` on the paths where a statement never executes.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use helios_proxy::NoHooks;
use postgres_protocol::message::frontend;

use crate::extended::{connect, rt};
use crate::support::pg::{self, PgCluster};
use crate::support::proxy::{ScriptedHooks, TestProxy, config_text};
use crate::support::raw::{self, RawClient};

/// A FunctionCall of int4pl (oid 177) with text arguments 2 and 3.
fn function_call_int4pl() -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(177);
    body.put_i16(0);
    body.put_i16(2);
    for a in [b"2", b"3"] {
        body.put_i32(1);
        body.put_slice(a);
    }
    body.put_i16(0);
    let mut m = BytesMut::new();
    m.put_u8(b'F');
    m.put_i32(body.len() as i32 + 4);
    m.put_slice(&body);
    m
}

#[test]
fn function_call_is_refused_while_a_pre_query_plugin_is_loaded_and_relayed_without() {
    let db = PgCluster::start();
    let hooks = Arc::new(ScriptedHooks::default());
    let guarded = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks.clone());
    let mut c = RawClient::connect(guarded.port(), pg::SUPERUSER);
    c.send(&function_call_int4pl());
    let msgs = c.read_until_ready();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!((msgs[0].0, raw::sqlstate(&msgs[0].1).as_str()), (b'E', "42000"));
    assert!(raw::field(&msgs[0].1, b'M').contains("FunctionCall"), "{}", raw::field(&msgs[0].1, b'M'));
    assert_eq!(msgs[1], (b'Z', b"I".to_vec()));
    // The session goes on, and post_query heard of the refused call.
    c.query("SELECT 1");
    assert!(c.read_until_ready().iter().any(|m| m.0 == b'D'));
    assert!(
        hooks.outcomes().iter().any(|o| o.query_context.query.contains("FunctionCall") && !o.outcome.success),
        "post_query saw the refused FunctionCall"
    );

    let open = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(NoHooks));
    let mut c = RawClient::connect(open.port(), pg::SUPERUSER);
    c.send(&function_call_int4pl());
    let msgs = c.read_until_ready();
    assert_eq!(msgs[0].0, b'V', "{msgs:?}");
    assert_eq!(&msgs[0].1[4..], b"5", "int4pl(2, 3) through the proxy");
}

/// ParameterStatus values in a message list, by name.
fn reported<'a>(msgs: &'a [raw::Msg], name: &str) -> Option<(usize, &'a [u8])> {
    let prefix = [name.as_bytes(), b"\0"].concat();
    msgs.iter().position(|m| m.0 == b'S' && m.1.starts_with(&prefix)).map(|i| (i, &msgs[i].1[prefix.len()..]))
}

/// In transaction mode a client's `SET` stays on the connection it ran on (documented in the
/// README): when the client's next transaction lands on another connection, the proxy tells it the
/// values it now runs with, before the first row.
#[test]
fn a_client_served_by_another_connection_is_told_its_parameters() {
    let db = PgCluster::start();
    let toml = "pool_mode = \"transaction\"\npool_size = 2\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), Arc::new(NoHooks));
    let mut a = RawClient::connect(proxy.port(), pg::SUPERUSER);
    let mut b = RawClient::connect(proxy.port(), pg::SUPERUSER);
    a.query("SET application_name = 'alpha'");
    assert_eq!(reported(&a.read_until_ready(), "application_name").map(|r| r.1), Some(&b"alpha\0"[..]));
    // b takes the connection a's SET ran on and holds it: a's next statement gets a fresh one.
    b.query("BEGIN");
    b.read_until_ready();
    a.query("SELECT current_setting('application_name')");
    let msgs = a.read_until_ready();
    let status = reported(&msgs, "application_name");
    let row = msgs.iter().position(|m| m.0 == b'D');
    assert_eq!(status.map(|s| s.1), Some(&b"\0"[..]), "{msgs:?}");
    assert!(status.map(|s| s.0) < row, "ParameterStatus before the row: {msgs:?}");
    // b was reset before it got a's connection: it never saw 'alpha'.
    b.query("SELECT current_setting('application_name'); COMMIT");
    let msgs = b.read_until_ready();
    assert!(reported(&msgs, "application_name").is_none(), "{msgs:?}");
    let row = msgs.iter().find(|m| m.0 == b'D').expect("a row");
    assert!(row.1.ends_with(&[0, 1, 0, 0, 0, 0]), "an empty application_name: {row:?}");
}

/// Session state of one client never reaches the next in transaction mode: the proxy resets a
/// connection before handing it to another client (as PgBouncer's `server_reset_query`, which
/// PgBouncer itself skips in transaction mode), keeping only its tracked prepared statements.
#[test]
fn session_state_of_one_client_does_not_leak_to_the_next_in_transaction_mode() {
    let db = PgCluster::start();
    db.psql("CREATE SEQUENCE s; CREATE ROLE someone;");
    let toml = "pool_mode = \"transaction\"\npool_size = 1\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), Arc::new(NoHooks));
    rt().block_on(async {
        let a = connect(proxy.port()).await;
        let b = connect(proxy.port()).await;
        // Everything a client can leave on a session, each outside a transaction block.
        for sql in [
            "SET statement_timeout = '4321'",
            "SET search_path = pg_catalog",
            "CREATE TEMP TABLE a_only (x int)",
            "SELECT pg_advisory_lock(4242)",
            "LISTEN a_channel",
            "SELECT nextval('public.s')",
            "SET ROLE someone",
        ] {
            a.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let a_prepared = a.prepare("SELECT $1::int + 1").await.unwrap();
        assert_eq!(a.query_one("SHOW statement_timeout", &[]).await.unwrap().get::<_, String>(0), "4321ms");
        // b gets the one connection next.
        let row = b
            .query_one(
                "SELECT current_setting('statement_timeout'), current_setting('search_path'), current_user::text, \
                 to_regclass('pg_temp.a_only') IS NULL, (SELECT count(*) FROM pg_listening_channels())",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "0", "a's SET statement_timeout leaked");
        assert_eq!(row.get::<_, String>(1), "\"$user\", public", "a's search_path leaked");
        assert_eq!(row.get::<_, String>(2), pg::SUPERUSER, "a's SET ROLE leaked");
        assert!(row.get::<_, bool>(3), "a's temporary table leaked");
        assert_eq!(row.get::<_, i64>(4), 0, "a's LISTEN leaked");
        let e = b.query_one("SELECT currval('public.s')", &[]).await.expect_err("currval of a's sequence");
        assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("55000"), "{e}");
        // a's tracked prepared statement still works after the reset.
        assert_eq!(a.query_one(&a_prepared, &[&41]).await.unwrap().get::<_, i32>(0), 42);
    });
    // The session advisory lock was released when the connection changed hands.
    let locks = db.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory';");
    assert_eq!(locks.trim(), "0", "a's advisory lock outlived its hand-over");
}

#[test]
fn post_query_hears_of_route_refusals_and_statements_the_server_rejects_at_parse() {
    let db = PgCluster::start();
    let hooks = Arc::new(ScriptedHooks { route: vec![("elsewhere".into(), "nowhere".into())], ..Default::default() });
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks.clone());
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        c.query("SELECT 'elsewhere'", &[]).await.expect_err("routed to an unknown node");
        let e = c.query("SELECT FROM WHERE", &[]).await.expect_err("a syntax error");
        assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("42601"));
        assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    });
    let outcomes = hooks.outcomes();
    let failed = |q: &str| {
        outcomes.iter().find(|o| o.query_context.query == q).map(|o| (o.outcome.success, o.outcome.error.clone()))
    };
    let (ok, err) = failed("SELECT 'elsewhere'").expect("post_query for the route refusal");
    assert!(!ok && err.unwrap_or_default().contains("nowhere"));
    let (ok, err) = failed("SELECT FROM WHERE").expect("post_query for the statement that failed at Parse");
    assert!(!ok && err.unwrap_or_default().contains("42601"));
    assert!(failed("SELECT 1").is_some_and(|(ok, _)| ok));
}

#[test]
fn transaction_mode_tracks_named_statements_across_connections_as_postgresql_would() {
    let db = PgCluster::start();
    let toml = "pool_mode = \"transaction\"\npool_size = 2\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), Arc::new(NoHooks));
    rt().block_on(async {
        let a = connect(proxy.port()).await;
        let b = connect(proxy.port()).await;
        let st = a.prepare("SELECT $1::int * 10").await.unwrap();
        // b holds one connection in a transaction, so a's next statements may land on the other.
        b.batch_execute("BEGIN").await.unwrap();
        for i in 0..5 {
            assert_eq!(a.query_one(&st, &[&i]).await.unwrap().get::<_, i32>(0), i * 10);
        }
        b.batch_execute("COMMIT").await.unwrap();
        for i in 0..5 {
            assert_eq!(a.query_one(&st, &[&i]).await.unwrap().get::<_, i32>(0), i * 10);
        }
    });
    // DEALLOCATE of a tracked name, then using it, fails as on PostgreSQL; parsing a used name is 42P05.
    let mut c = RawClient::connect(proxy.port(), pg::SUPERUSER);
    let mut b = BytesMut::new();
    frontend::parse("named1", "SELECT 42", [], &mut b).unwrap();
    frontend::sync(&mut b);
    c.send(&b);
    assert_eq!(c.read_until_ready()[0].0, b'1');
    c.send(&b);
    let msgs = c.read_until_ready();
    assert_eq!((msgs[0].0, raw::sqlstate(&msgs[0].1).as_str()), (b'E', "42P05"), "{msgs:?}");
    let mut run = BytesMut::new();
    run.put_u8(b'B');
    run.put_i32(4 + 1 + 7 + 6);
    run.put_slice(b"\0named1\0");
    run.put_slice(&[0, 0, 0, 0, 0, 0]);
    frontend::execute("", 0, &mut run).unwrap();
    frontend::sync(&mut run);
    c.send(&run);
    assert!(c.read_until_ready().iter().any(|m| m.0 == b'D' && m.1.ends_with(b"42")));
    c.query("DEALLOCATE named1");
    let msgs = c.read_until_ready();
    assert_eq!(msgs[0].0, b'C', "{msgs:?}");
    c.send(&run);
    let msgs = c.read_until_ready();
    assert_eq!((msgs[0].0, raw::sqlstate(&msgs[0].1).as_str()), (b'E', "26000"), "{msgs:?}");
}

#[test]
fn an_attribute_bound_to_the_user_cannot_be_forged_by_set_or_startup_options() {
    let db = PgCluster::start();
    let hooks = Arc::new(ScriptedHooks::default());
    let users = format!("[[users]]\nname = \"{}\"\nattributes = {{ \"helios.tenant\" = \"acme\" }}\n", pg::SUPERUSER);
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], &users), hooks.clone());
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        for set in ["SET helios.tenant = 'evil'", "RESET helios.tenant"] {
            let e = c.batch_execute(set).await.expect_err("a bound attribute");
            let d = e.as_db_error().expect("an ErrorResponse");
            assert_eq!(d.code().code(), "42501", "{d:?}");
            assert!(d.message().contains("helios.tenant") && d.message().contains("bound"), "{d:?}");
        }
        let e = c.execute("SET helios.tenant = 'evil'", &[]).await.expect_err("extended protocol too");
        assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("42501"));
        c.batch_execute("SET helios.region = 'eu'").await.expect("an unbound attribute is the client's");
        c.query_one("SELECT 'tagged'::text", &[]).await.unwrap();
    });
    let seen = hooks.seen();
    let tagged = seen.iter().find(|c| c.query.contains("tagged")).expect("pre_query saw the SELECT");
    assert_eq!(tagged.hook_context.attr("helios.tenant"), Some("acme"));
    assert_eq!(tagged.hook_context.attr("helios.region"), Some("eu"));
    // At startup: another value is refused, the bound value is accepted.
    let sql = "SELECT 'in';";
    let forged = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", sql, &[("PGOPTIONS", "-c helios.tenant=evil")]);
    let err = String::from_utf8_lossy(&forged.stderr);
    assert!(!forged.status.success() && err.contains("helios.tenant") && err.contains("bound"), "{err}");
    let same = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", sql, &[("PGOPTIONS", "-c helios.tenant=acme")]);
    assert_eq!(String::from_utf8_lossy(&same.stdout).trim(), "in");
}
