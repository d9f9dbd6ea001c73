//! Real WebAssembly plugins (loaded from `[[plugins]]` through the host) on live traffic.

use helios_proxy::{ProxyConfig, plugins};

use crate::extended::{connect, rt};
use crate::support::pg::{self, PgCluster};
use crate::support::proxy::{TestProxy, config_text};
use crate::support::{plugin_entry, stderr, stdout};

/// A proxy whose hooks come from the `[[plugins]]` of `toml`, loaded like the binary does.
fn start_with_plugins(toml: &str) -> TestProxy {
    let config = ProxyConfig::from_toml(toml, "test-proxy.toml").expect("config parses");
    let hooks = plugins::hooks_from_config(&config, "test-proxy.toml").expect("plugins load");
    TestProxy::start_config(config, hooks)
}

#[test]
fn llm_guardrail_blocks_drop_table_in_both_protocols_and_the_session_goes_on() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE orders (id int);");
    let plugins = plugin_entry("llm_guardrail", "", &[("apply_to_all", "true")]);
    let proxy = start_with_plugins(&(config_text(&[("primary", db.port(), "primary")], "") + &plugins));
    let out = pg::psql_raw(
        proxy.port(),
        pg::SUPERUSER,
        "postgres",
        "DROP TABLE orders;\nSELECT count(*) FROM orders;\n",
        &[],
    );
    let err = stderr(&out);
    assert!(err.contains("42000") && err.contains("llm-guardrail"), "{err}");
    assert_eq!(stdout(&out), "0");
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        let err = c.execute("DROP TABLE orders", &[]).await.expect_err("blocked in the extended protocol too");
        let dbe = err.as_db_error().expect("an ErrorResponse");
        assert_eq!(dbe.code().code(), "42000");
        assert!(dbe.message().contains("llm-guardrail"), "{dbe:?}");
        let n: i64 = c.query_one("SELECT count(*) FROM orders WHERE id > $1", &[&0i32]).await.unwrap().get(0);
        assert_eq!(n, 0);
    });
    assert_eq!(db.psql("SELECT count(*) FROM orders;").trim(), "0", "the table survived");
}

/// pgbench `-M simple` and drivers that inline literals send a new text per statement; the facts
/// cache shares one analysis between texts that differ only in literals the facts cannot depend on
/// (crates/facts/src/cache.rs). Literals that do change the facts — a `LIKE` pattern's prefix,
/// `LIMIT ALL`/`LIMIT NULL` — must never reuse another text's facts: llm-guardrail, through real
/// PostgreSQL, judges each statement as if it had been analysed alone.
#[test]
fn llm_guardrail_judges_each_literal_variant_as_if_analysed_alone() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE orders (id int, name text); CREATE TABLE events (id int);");
    let plugins = plugin_entry("llm_guardrail", "", &[("apply_to_all", "true"), ("large_tables", "events")]);
    let proxy = start_with_plugins(&(config_text(&[("primary", db.port(), "primary")], "") + &plugins));
    let refused = |sql: &str| {
        let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", sql, &[]);
        let err = stderr(&out);
        let refused = err.contains("42000") && err.contains("llm-guardrail");
        assert!(refused || err.is_empty(), "{sql}: {err}");
        refused
    };
    // Each pair: the first is allowed and fills the cache, the second differs only in a literal or
    // a keyword where a constant was, and is refused.
    for (allowed, then_refused) in [
        ("DELETE FROM orders WHERE name LIKE 'a%';", "DELETE FROM orders WHERE name LIKE '%';"),
        ("SELECT id FROM events LIMIT 5;", "SELECT id FROM events LIMIT ALL;"),
        ("SELECT id FROM events LIMIT 5;", "SELECT id FROM events LIMIT NULL;"),
    ] {
        assert!(!refused(allowed), "{allowed}");
        assert!(refused(then_refused), "{then_refused}");
        assert!(!refused(allowed), "{allowed}, again");
    }
    // New literals in one session, pgbench-style: every one allowed, each through the shape entry.
    let script: String = (1..=20).map(|i| format!("SELECT {i} + count(*) FROM orders WHERE id = {i};\n")).collect();
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", &script, &[]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let expected: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), expected);
}

#[test]
fn a_deeply_nested_statement_is_refused_and_the_proxy_stays_up() {
    // 20,000 nested additions: analysing them on the session's own stack overflowed it, which
    // aborted helios-proxy for every client. Unparseable for the facts, so llm-guardrail refuses it.
    let db = PgCluster::start();
    let plugins = plugin_entry("llm_guardrail", "", &[("apply_to_all", "true")]);
    let proxy = start_with_plugins(&(config_text(&[("primary", db.port(), "primary")], "") + &plugins));
    let deep = format!("SELECT {};", vec!["1"; 20_000].join("+"));
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", &deep, &[]);
    let err = stderr(&out);
    assert!(err.contains("42000") && err.contains("llm-guardrail"), "{err}");
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SELECT 'still up';", &[]);
    assert_eq!(stdout(&out), "still up", "{}", stderr(&out));
}

#[test]
fn a_plugin_rewrite_is_what_the_server_runs() {
    let db = PgCluster::start();
    let plugins = plugin_entry("guest_misbehave", "", &[("behavior", "rewrite")]);
    let proxy = start_with_plugins(&(config_text(&[("primary", db.port(), "primary")], "") + &plugins));
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SELECT current_query();", &[]);
    assert_eq!(stdout(&out), "/* misbehave */ SELECT current_query();", "{}", stderr(&out));
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        let q: String = c.query_one("SELECT current_query()", &[]).await.unwrap().get(0);
        assert_eq!(q, "/* misbehave */ SELECT current_query()");
    });
}

#[test]
fn a_trapping_plugin_fails_closed_with_abort_and_open_with_skip() {
    let db = PgCluster::start();
    for (policy, blocked) in [("abort", true), ("skip", false)] {
        let plugins = plugin_entry("guest_misbehave", &format!("on_error = \"{policy}\""), &[("behavior", "panic")]);
        let proxy = start_with_plugins(&(config_text(&[("primary", db.port(), "primary")], "") + &plugins));
        let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SELECT 'went through';", &[]);
        if blocked {
            assert!(stderr(&out).contains("42000") && stderr(&out).contains("misbehave"), "{policy}: {}", stderr(&out));
            assert_eq!(stdout(&out), "", "{policy}");
        } else {
            assert_eq!(stdout(&out), "went through", "{policy}: {}", stderr(&out));
        }
        rt().block_on(async {
            let c = connect(proxy.port()).await;
            let r = c.query_one("SELECT 'went through'::text", &[]).await;
            match (blocked, r) {
                (true, Err(e)) => assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("42000"), "{e}"),
                (false, Ok(row)) => assert_eq!(row.get::<_, String>(0), "went through"),
                (b, r) => panic!("{policy}: blocked={b} but got {r:?}"),
            }
        });
    }
}

#[test]
fn a_plugin_route_reaches_the_second_node() {
    let primary = PgCluster::start();
    let second = PgCluster::start();
    let plugins = plugin_entry("guest_misbehave", "", &[("behavior", "ok"), ("node", "second")]);
    let cfg =
        config_text(&[("primary", primary.port(), "primary"), ("second", second.port(), "standby")], "") + &plugins;
    let proxy = start_with_plugins(&cfg);
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SELECT inet_server_port();", &[]);
    assert_eq!(stdout(&out), second.port().to_string(), "{}", stderr(&out));
}

#[test]
fn the_binary_serves_from_a_config_file_and_stops_on_sigterm() {
    let db = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let port = pg::free_port();
    let plugins = plugin_entry("llm_guardrail", "", &[("apply_to_all", "true")]);
    let cfg = config_text(&[("primary", db.port(), "primary")], "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + &plugins;
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_helios-proxy"))
        .arg("--config")
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start helios-proxy");
    // Compiling the plugin comes first; on a busy machine that takes a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut log = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
            panic!("helios-proxy exited early ({status}): {log}");
        }
        assert!(std::time::Instant::now() < deadline, "helios-proxy did not listen on {port}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = pg::psql_raw(port, pg::SUPERUSER, "postgres", "DROP TABLE x;\nSELECT 'served';", &[]);
    assert!(stderr(&out).contains("42000"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "served");
    let kill = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("shutdown complete"), "{log}");
}

#[test]
fn the_binary_refuses_a_broken_config_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config_text(&[("primary", 1, "primray")], "")).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_helios-proxy")).arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy.toml") && err.contains("primray"), "{err}");
}

#[test]
fn compiled_plugins_are_kept_in_the_configured_module_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("modules");
    let plugins = plugin_entry("llm_guardrail", "", &[]);
    let cwasm = |d: &std::path::Path| -> usize {
        std::fs::read_dir(d).map_or(0, |r| {
            r.filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cwasm"))).count()
        })
    };
    let on = format!("module_cache = \"{}\"\n", cache.display());
    let config =
        ProxyConfig::from_toml(&(config_text(&[("primary", 1, "primary")], &on) + &plugins), "p.toml").unwrap();
    let chain = plugins::load_chain(&config, "p.toml").expect("plugins load");
    assert_eq!(chain.plugins().len(), 1);
    assert_eq!(cwasm(&cache), 1, "the compiled guardrail is cached in {}", cache.display());
    // A second load (a restart) finds it and still loads.
    plugins::load_chain(&config, "p.toml").expect("plugins load from the cache");
}
