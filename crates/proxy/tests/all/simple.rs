//! The simple query protocol through the proxy, driven by psql.

use std::sync::Arc;

use helios_proxy::NoHooks;

use crate::support::pg::{self, PgCluster};
use crate::support::proxy::{ScriptedHooks, TestProxy, config_text};
use crate::support::{stderr, stdout};

fn psql(port: u16, sql: &str) -> std::process::Output {
    pg::psql_raw(port, pg::SUPERUSER, "postgres", sql, &[])
}

#[test]
fn psql_creates_fills_copies_and_reads_a_table_through_the_proxy() {
    let db = PgCluster::start();
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(NoHooks));
    let out = psql(
        proxy.port(),
        "CREATE TABLE items (id int primary key, name text);
         INSERT INTO items VALUES (1, 'one'), (2, 'two');
         COPY items FROM STDIN;
3\tthree
4\tfour
\\.
         SELECT count(*) FROM items;
         COPY (SELECT name FROM items ORDER BY id) TO STDOUT;",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("ERROR"), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines, ["4", "one", "two", "three", "four"], "{lines:?}");
    assert_eq!(db.psql("SELECT string_agg(name, ',' ORDER BY id) FROM items;").trim(), "one,two,three,four");
}

#[test]
fn a_blocked_drop_table_gets_42000_with_the_reason_and_the_session_goes_on() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE keep_me (x int);");
    let hooks = Arc::new(ScriptedHooks {
        block: vec![("drop table".into(), "DROP TABLE is not allowed here".into())],
        ..Default::default()
    });
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks.clone());
    let out = psql(proxy.port(), "DROP TABLE keep_me;\nSELECT 40 + 2;\n");
    let err = stderr(&out);
    assert!(err.contains("42000") && err.contains("DROP TABLE is not allowed here"), "{err}");
    assert_eq!(stdout(&out), "42");
    assert_eq!(db.psql("SELECT count(*) FROM keep_me;").trim(), "0", "the table must still exist");
    let blocked = hooks
        .outcomes()
        .into_iter()
        .find(|o| o.query_context.query.contains("DROP"))
        .expect("post_query saw the block");
    assert!(!blocked.outcome.success && blocked.outcome.target_node.is_none());
}

#[test]
fn a_rewrite_is_what_the_server_runs() {
    let db = PgCluster::start();
    let hooks = Arc::new(ScriptedHooks {
        rewrite: vec![("'original'".into(), "SELECT 'rewritten:' || current_query()".into())],
        ..Default::default()
    });
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks);
    let out = psql(proxy.port(), "SELECT 'original';");
    assert_eq!(stdout(&out), "rewritten:SELECT 'rewritten:' || current_query()", "{}", stderr(&out));
}

/// RowDescription (one text column `answer`), one DataRow, CommandComplete.
fn cached_answer(value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut msg = |tag: u8, body: Vec<u8>| {
        out.push(tag);
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(&body);
    };
    let mut rd = Vec::new();
    rd.extend_from_slice(&1i16.to_be_bytes());
    rd.extend_from_slice(b"answer\0");
    rd.extend_from_slice(&0i32.to_be_bytes());
    rd.extend_from_slice(&0i16.to_be_bytes());
    rd.extend_from_slice(&25i32.to_be_bytes());
    rd.extend_from_slice(&(-1i16).to_be_bytes());
    rd.extend_from_slice(&(-1i32).to_be_bytes());
    rd.extend_from_slice(&0i16.to_be_bytes());
    msg(b'T', rd);
    let mut dr = Vec::new();
    dr.extend_from_slice(&1i16.to_be_bytes());
    dr.extend_from_slice(&(value.len() as i32).to_be_bytes());
    dr.extend_from_slice(value.as_bytes());
    msg(b'D', dr);
    msg(b'C', b"SELECT 1\0".to_vec());
    out
}

pub(crate) fn cached_hooks() -> ScriptedHooks {
    ScriptedHooks { cached: vec![("from_the_cache".into(), cached_answer("cached-value"))], ..Default::default() }
}

#[test]
fn a_cached_answer_comes_without_the_server() {
    let db = PgCluster::start();
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), Arc::new(cached_hooks()));
    // The column does not exist: had the server seen the statement, it would fail.
    let out = psql(proxy.port(), "SELECT from_the_cache;\nSELECT 7;");
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), ["cached-value", "7"], "{}", stderr(&out));
}

#[test]
fn route_sends_a_statement_to_the_second_node_but_never_inside_a_transaction() {
    let primary = PgCluster::start();
    let second = PgCluster::start();
    let hooks =
        Arc::new(ScriptedHooks { route: vec![("inet_server_port".into(), "second".into())], ..Default::default() });
    let cfg = config_text(&[("primary", primary.port(), "primary"), ("second", second.port(), "standby")], "");
    let proxy = TestProxy::start(&cfg, hooks.clone());
    let out = psql(
        proxy.port(),
        "SELECT inet_server_port();
         SELECT 'plain', inet_server_port() IS NULL;
         BEGIN;
         SELECT 'in-tx', current_setting('port');
         SELECT inet_server_port();
         COMMIT;
         SELECT inet_server_port();",
    );
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let (p, s) = (primary.port(), second.port());
    assert_eq!(
        lines,
        [s.to_string(), "plain|f".into(), format!("in-tx|{p}"), p.to_string(), s.to_string()],
        "{}",
        stderr(&out)
    );
    let nodes: Vec<Option<String>> = hooks.outcomes().iter().map(|o| o.outcome.target_node.clone()).collect();
    assert_eq!(nodes.first().cloned().flatten().as_deref(), Some("second"));
}

#[test]
fn hook_context_carries_session_identity_and_helios_attributes() {
    let db = PgCluster::start();
    let hooks = Arc::new(ScriptedHooks::default());
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks.clone());
    let out = pg::psql_raw(
        proxy.port(),
        pg::SUPERUSER,
        "postgres",
        "SELECT 1;\nSET helios.tenant = 'acme';\nSELECT 2;\nRESET helios.tenant;\nSELECT 3;",
        &[("PGOPTIONS", "-c helios.region=eu"), ("PGAPPNAME", "agent-7")],
    );
    assert!(!stderr(&out).contains("ERROR"), "{}", stderr(&out));
    let seen = hooks.seen();
    let ctx = |sql: &str| {
        seen.iter().find(|c| c.query.trim() == sql).unwrap_or_else(|| panic!("no context for {sql}: {seen:?}")).clone()
    };
    let (one, two, three) = (ctx("SELECT 1;"), ctx("SELECT 2;"), ctx("SELECT 3;"));
    let hc = &one.hook_context;
    assert_eq!(hc.identity.as_deref(), Some(pg::SUPERUSER));
    assert_eq!(hc.database.as_deref(), Some("postgres"));
    assert!(hc.client_id.as_deref().is_some_and(|c| c.starts_with("127.0.0.1:")), "{hc:?}");
    assert_eq!(hc.attr("application_name"), Some("agent-7"));
    assert_eq!(hc.attr("helios.region"), Some("eu"));
    assert_eq!(hc.attr("helios.tenant"), None);
    assert_eq!(two.hook_context.attr("helios.tenant"), Some("acme"));
    assert_eq!(three.hook_context.attr("helios.tenant"), None);
    let mut ids: Vec<&str> = seen.iter().map(|c| c.hook_context.request_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), seen.len(), "request ids must be unique per statement");
}

#[test]
fn post_query_reports_rows_node_bytes_and_errors() {
    let db = PgCluster::start();
    let hooks = Arc::new(ScriptedHooks::default());
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks.clone());
    let _ = psql(proxy.port(), "SELECT generate_series(1, 5);\nSELECT * FROM no_such_table;");
    let outs = hooks.outcomes();
    let ok = outs.iter().find(|o| o.query_context.query.contains("generate_series")).expect("outcome of the SELECT");
    assert!(ok.outcome.success);
    assert_eq!(ok.outcome.rows, Some(5));
    assert_eq!(ok.outcome.target_node.as_deref(), Some("primary"));
    assert!(ok.outcome.response_bytes > 0);
    let bad =
        outs.iter().find(|o| o.query_context.query.contains("no_such_table")).expect("outcome of the failing SELECT");
    assert!(!bad.outcome.success);
    assert!(bad.outcome.error.as_deref().is_some_and(|e| e.contains("42P01")), "{:?}", bad.outcome.error);
}

#[test]
fn a_block_inside_a_transaction_fails_the_transaction_as_postgres_would() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE ledger (x int);");
    let hooks = Arc::new(ScriptedHooks { block: vec![("drop table".into(), "no drops".into())], ..Default::default() });
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], ""), hooks);
    let out = psql(
        proxy.port(),
        "BEGIN;\nINSERT INTO ledger VALUES (1);\nDROP TABLE ledger;\nSELECT 'after';\nCOMMIT;\nSELECT 'next', count(*) FROM ledger;\n",
    );
    let err = stderr(&out);
    assert!(err.contains("42000") && err.contains("no drops"), "{err}");
    assert!(err.contains("25P02"), "the statement after the block must meet an aborted transaction: {err}");
    assert_eq!(stdout(&out), "next|0", "the transaction was rolled back: {err}");
}

#[test]
fn pooled_connections_are_reused_and_reset_between_clients() {
    let db = PgCluster::start();
    for mode in ["session", "transaction"] {
        let proxy = TestProxy::start(
            &config_text(&[("primary", db.port(), "primary")], &format!("pool_mode = \"{mode}\"\n")),
            Arc::new(NoHooks),
        );
        let first = psql(proxy.port(), "SET work_mem = '7MB';\nSELECT pg_backend_pid();");
        // Session mode resets the connection (DISCARD ALL) in the background after the client leaves.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let second = psql(proxy.port(), "SELECT pg_backend_pid();\nSHOW work_mem;");
        let second_lines: Vec<String> = stdout(&second).lines().map(str::to_string).collect();
        assert_eq!(
            stdout(&first),
            second_lines[0],
            "{mode}: the second client reuses the first one's server connection"
        );
        if mode == "session" {
            assert_eq!(second_lines[1], "4MB", "session mode resets settings between clients");
        }
    }
}

#[test]
fn transaction_mode_lends_an_idle_clients_server_connection_to_another_client() {
    let db = PgCluster::start();
    let proxy = TestProxy::start(
        &config_text(&[("primary", db.port(), "primary")], "pool_mode = \"transaction\"\n"),
        Arc::new(NoHooks),
    );
    let port = proxy.port();
    // A stays connected but idle (psql runs a shell sleep) while B runs a statement.
    let a = std::thread::spawn(move || psql(port, "SELECT pg_backend_pid();\n\\! sleep 2\nSELECT pg_backend_pid();"));
    std::thread::sleep(std::time::Duration::from_millis(800));
    let b = psql(port, "SELECT pg_backend_pid();");
    let a = a.join().unwrap();
    let a_pids: Vec<String> = stdout(&a).lines().map(str::to_string).collect();
    assert_eq!(a_pids.len(), 2, "{}", stderr(&a));
    assert_eq!(stdout(&b), a_pids[0], "B ran on the connection A had released");
}
