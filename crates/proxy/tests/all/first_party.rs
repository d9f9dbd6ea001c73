//! The first-party plugins, unmodified, on live traffic through the proxy.

use std::sync::Arc;

use helios_plugin_host::{MemoryLogSink, Runtime, RuntimeConfig};
use helios_proxy::{ProxyConfig, plugins};

use crate::extended::{connect, rt};
use crate::support::pg::{self, PgCluster};
use crate::support::proxy::{TestProxy, config_text};
use crate::support::{plugin_entry, stderr, stdout};

fn start(toml: &str, runtime: &Runtime) -> TestProxy {
    let config = ProxyConfig::from_toml(toml, "first-party.toml").expect("config parses");
    let chain = plugins::load_chain_with(&config, "first-party.toml", runtime).expect("plugins load");
    TestProxy::start_config(config, Arc::new(chain))
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

#[test]
fn column_mask_returns_the_masked_column_from_the_real_server() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE users (id int, email text); INSERT INTO users VALUES (1, 'ann@example.com');");
    let rules = r#"[{"table": "users", "column": "email", "mask_function": "md5", "unmask_role": "auditor"}]"#;
    let plugins = plugin_entry("column_mask", "", &[])
        + &format!("[plugins.config]\nrules = '{rules}'\ntable_columns = '{{\"users\": [\"id\", \"email\"]}}'\n");
    let proxy = start(&(config_text(&[("primary", db.port(), "primary")], "") + &plugins), &runtime());
    let masked = db.psql("SELECT md5('ann@example.com');").trim().to_string();
    let out = pg::psql_raw(
        proxy.port(),
        pg::SUPERUSER,
        "postgres",
        "SELECT id, email FROM users;\nSELECT * FROM users;",
        &[],
    );
    assert_eq!(stdout(&out), format!("1|{masked}\n1|{masked}"), "{}", stderr(&out));
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        let email: String = c.query_one("SELECT email FROM users WHERE id = $1", &[&1i32]).await.unwrap().get(0);
        assert_eq!(email, masked, "masked in the extended protocol too");
    });
}

#[test]
fn pgvector_router_sends_top_k_distance_queries_to_the_second_node() {
    let primary = PgCluster::start();
    let second = PgCluster::start();
    for db in [&primary, &second] {
        db.psql("CREATE TABLE places (id int, p point); INSERT INTO places SELECT g, point(g, g) FROM generate_series(1, 20) g;");
    }
    let plugins = plugin_entry("pgvector_router", "", &[("vector_node", "second")]);
    let cfg =
        config_text(&[("primary", primary.port(), "primary"), ("second", second.port(), "standby")], "") + &plugins;
    let proxy = start(&cfg, &runtime());
    let top_k = "SELECT inet_server_port() FROM places ORDER BY p <-> point(3, 3) LIMIT 2";
    let out = pg::psql_raw(
        proxy.port(),
        pg::SUPERUSER,
        "postgres",
        &format!("{top_k};\nSELECT inet_server_port();\nBEGIN;\n{top_k};\nCOMMIT;\n"),
        &[],
    );
    let (p, s) = (primary.port().to_string(), second.port().to_string());
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), [&s, &s, &p, &p, &p], "{}", stderr(&out));
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        let rows = c.query(top_k, &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i32>(0).to_string(), s, "routed in the extended protocol too");
    });
}

#[test]
fn cost_governor_blocks_a_tenant_after_its_budget() {
    let db = PgCluster::start();
    let plugins = plugin_entry(
        "cost_governor",
        "",
        &[("budget_day", "25"), ("cost_per_query", "10"), ("cost_per_ms", "0"), ("cost_per_kb", "0")],
    );
    let proxy = start(&(config_text(&[("primary", db.port(), "primary")], "") + &plugins), &runtime());
    let script = "SELECT 'q1';\nSELECT 'q2';\nSELECT 'q3';\nSELECT 'q4';\n";
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", script, &[("PGOPTIONS", "-c helios.tenant=acme")]);
    // Each statement is charged when admitted: a third would take 20 to 30 of 25, so it is refused.
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), ["q1", "q2"], "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("42000") && err.contains("cost-governor") && err.contains("acme"), "{err}");
    assert!(err.contains("20.000 of 25 units, a statement costs 10.000"), "{err}");
    // Another tenant has its own budget.
    let other =
        pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SET helios.tenant = 'globex';\nSELECT 'other';", &[]);
    assert_eq!(stdout(&other), "other", "{}", stderr(&other));
}

#[test]
fn audit_chain_records_every_statement_in_one_chain() {
    let db = PgCluster::start();
    let sink = MemoryLogSink::new();
    let rt_plugins = Runtime::new(RuntimeConfig::default().log_sink(sink.clone())).expect("runtime");
    let plugins = plugin_entry("audit_chain", "", &[]);
    let proxy = start(&(config_text(&[("primary", db.port(), "primary")], "") + &plugins), &rt_plugins);
    let out = pg::psql_raw(proxy.port(), pg::SUPERUSER, "postgres", "SELECT 1;\nSELECT * FROM nope;\nSELECT 3;", &[]);
    assert!(stdout(&out).contains('3'));
    rt().block_on(async {
        let c = connect(proxy.port()).await;
        let _ = c.query_one("SELECT $1::int", &[&4i32]).await.unwrap();
    });
    drop(proxy);
    let records: Vec<serde_json::Value> = sink
        .lines()
        .into_iter()
        .filter_map(|(_, _, line)| {
            line.strip_prefix(audit_chain_verify::chain::LOG_PREFIX)
                .map(|j| serde_json::from_str(j).expect("record is JSON"))
        })
        .collect();
    let queries: Vec<&str> = records.iter().filter_map(|r| r["query"].as_str()).collect();
    assert_eq!(queries, ["SELECT 1;", "SELECT * FROM nope;", "SELECT 3;", "SELECT $1::int"], "{records:#?}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"].as_u64(), Some(i as u64 + 1), "{r}");
        if i > 0 {
            assert_eq!(r["prev_hash"], records[i - 1]["hash"], "the chain links record {i} to the one before");
        }
    }
    assert_eq!(records[1]["success"], serde_json::Value::Bool(false));
}
