//! Differential tests with real drivers (psycopg 3 and asyncpg, from pip): the same script
//! (crates/proxy/tests/py/differential.py) runs directly against PostgreSQL and through
//! helios-proxy, and must see the same results and leave the same database state. The proxy's plugin
//! refuses statements calling `helios_refuse_me()`; directly those fail on the server (42883, no such
//! function), so a refusal that behaves like a server error at that point changes nothing else.

use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

use crate::support::pg::{self, PgCluster};
use crate::support::proxy::{ScriptedHooks, TestProxy, config_text};

/// The SQLSTATE of the script's refused statement when run directly (undefined_function).
const DIRECT_REFUSAL: &str = "42883";

pub fn python() -> String {
    std::env::var("HELIOS_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs the differential script with `driver` against 127.0.0.1:`port`; its JSON steps.
pub fn run_script(driver: &str, port: u16) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/differential.py");
    let out = Command::new(python())
        .args([script, driver, "127.0.0.1", &port.to_string(), pg::SUPERUSER, "postgres"])
        .output()
        .unwrap_or_else(|e| panic!("running {} {script}: {e}", python()));
    assert!(
        out.status.success(),
        "{driver} script failed on port {port} (pip install 'psycopg[binary]' asyncpg): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{driver} script printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    v.as_array().expect("a JSON list of steps").clone()
}

fn refusing_hooks() -> Arc<ScriptedHooks> {
    Arc::new(ScriptedHooks {
        block: vec![("helios_refuse_me".into(), "helios_refuse_me() is refused by policy".into())],
        ..Default::default()
    })
}

/// Runs `driver`'s script directly and through the proxy; returns (direct, proxied, hooks).
fn differential(driver: &str) -> (Vec<Value>, Vec<Value>, Arc<ScriptedHooks>) {
    differential_with(driver, "")
}

/// [`differential`] with extra top-level `proxy.toml` settings.
fn differential_with(driver: &str, toml: &str) -> (Vec<Value>, Vec<Value>, Arc<ScriptedHooks>) {
    let direct_db = PgCluster::start();
    let proxied_db = PgCluster::start();
    let hooks = refusing_hooks();
    let proxy = TestProxy::start(&config_text(&[("primary", proxied_db.port(), "primary")], toml), hooks.clone());
    let direct = run_script(driver, direct_db.port());
    let proxied = run_script(driver, proxy.port());
    (direct, proxied, hooks)
}

/// The steps where the two runs differ, other than refused-versus-failed at the same step.
fn differences(direct: &[Value], proxied: &[Value]) -> Vec<String> {
    let mut diffs = Vec::new();
    if direct.len() != proxied.len() {
        diffs.push(format!("{} steps directly, {} through the proxy", direct.len(), proxied.len()));
    }
    for (d, p) in direct.iter().zip(proxied) {
        let refusal = d["sqlstate"] == DIRECT_REFUSAL && p["sqlstate"] == pg_blocked();
        if d != p && !refusal {
            diffs.push(format!("step {}: direct {d} / proxy {p}", d["step"]));
        }
    }
    diffs
}

fn pg_blocked() -> Value {
    Value::from(helios_proxy::sqlstate::BLOCKED)
}

fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps.iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("no step {name:?} in {steps:?}"))
}

#[test]
fn psycopg_sees_what_postgresql_shows_and_refusals_act_as_server_errors() {
    let (direct, proxied, hooks) = differential("psycopg");
    let diffs = differences(&direct, &proxied);
    assert!(diffs.is_empty(), "psycopg differs through the proxy:\n{}", diffs.join("\n"));
    // The properties the comparison protects, spelled out.
    assert_eq!(step(&proxied, "pipeline insert then refused")["sqlstate"], pg_blocked());
    assert_eq!(
        step(&proxied, "session usable after the pipeline")["rows"],
        serde_json::json!([[0]]),
        "a refusal in a pipeline rolls back the statements before it in the same Sync"
    );
    assert_eq!(step(&proxied, "next in failed tx")["sqlstate"], "25P02");
    assert_eq!(step(&proxied, "extended in failed tx")["sqlstate"], "25P02");
    assert_eq!(step(&proxied, "after rollback")["rows"], serde_json::json!([[0]]));
    assert_eq!(step(&proxied, "refused extended")["sqlstate"], pg_blocked());
    // post_query heard of every refusal.
    let refused = hooks.outcomes().iter().filter(|o| o.query_context.query.contains("helios_refuse_me")).count();
    assert_eq!(refused, 4, "post_query for each of the four refused statements");
}

#[test]
fn asyncpg_sees_what_postgresql_shows_and_refusals_act_as_server_errors() {
    let (direct, proxied, _) = differential("asyncpg");
    let diffs = differences(&direct, &proxied);
    assert!(diffs.is_empty(), "asyncpg differs through the proxy:\n{}", diffs.join("\n"));
    assert_eq!(step(&proxied, "refused")["sqlstate"], pg_blocked());
    assert_eq!(step(&proxied, "transaction with a refusal")["sqlstate"], "RuntimeError: refused:True next:25P02");
    assert_eq!(step(&proxied, "tx rows")["rows"], 0);
}

/// Runs pool_clients.py: `n` asyncpg clients at once through `port`; (succeeded, errors).
pub fn pool_clients(n: usize, port: u16, statement_cache: usize, rounds: usize) -> (u64, Vec<String>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/pool_clients.py");
    let out = Command::new(python())
        .args([script, &n.to_string(), "127.0.0.1", &port.to_string(), pg::SUPERUSER, "postgres"])
        .args([statement_cache.to_string(), rounds.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(out.status.success(), "pool_clients.py: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("pool_clients.py prints JSON");
    let errors = v["errors"].as_array().map(|a| a.iter().map(|e| e.to_string()).collect()).unwrap_or_default();
    (v["ok"].as_u64().unwrap_or(0), errors)
}

/// 40 asyncpg clients at once on a pool of 4 (session mode: each holds a connection for its whole
/// session; transaction mode: per transaction, with asyncpg's statement cache on). All are served,
/// in FIFO order, and the server never sees more than 4 connections from the proxy.
fn forty_clients_on_a_pool_of_four(mode: &str) {
    let db = PgCluster::start();
    db.psql("CREATE TABLE hits (client int);");
    let toml = format!("pool_mode = \"{mode}\"\npool_size = 4\npool_timeout_ms = 30000\n");
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], &toml), Arc::new(NoHooksLocal));
    let peak = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop, port) = (peak.clone(), stop.clone(), db.port());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = pg::psql_raw(
                    port,
                    pg::SUPERUSER,
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> 'psql';",
                    &[],
                );
                if let Ok(n) = String::from_utf8_lossy(&out.stdout).trim().parse::<i64>() {
                    peak.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    let started = std::time::Instant::now();
    let (ok, errors) = pool_clients(40, proxy.port(), 100, 1);
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(ok, 40, "{mode} mode: {} clients failed: {errors:?}", errors.len());
    assert_eq!(db.psql("SELECT count(DISTINCT client) FROM hits;").trim(), "40");
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak <= 4, "{mode} mode: the server saw {peak} connections from a pool of 4");
    eprintln!("{mode} mode: 40 asyncpg clients on a pool of 4 in {elapsed:?}, peak {peak} server connections");
}

use helios_proxy::NoHooks as NoHooksLocal;

#[test]
fn forty_asyncpg_clients_share_a_pool_of_four_in_session_mode() {
    forty_clients_on_a_pool_of_four("session");
}

#[test]
fn forty_asyncpg_clients_share_a_pool_of_four_in_transaction_mode() {
    forty_clients_on_a_pool_of_four("transaction");
}

/// asyncpg with its statement cache on, in transaction mode over many transactions: 8 clients, 2
/// connections, 20 rounds each (about 180 transactions per client). Each named statement is
/// re-prepared on whichever connection serves the next transaction.
#[test]
fn asyncpg_statement_cache_works_in_transaction_mode_over_many_transactions() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE hits (client int);");
    let toml = "pool_mode = \"transaction\"\npool_size = 2\npool_timeout_ms = 30000\n";
    let proxy = TestProxy::start(&config_text(&[("primary", db.port(), "primary")], toml), Arc::new(NoHooksLocal));
    let (ok, errors) = pool_clients(8, proxy.port(), 100, 20);
    assert_eq!(ok, 8, "{errors:?}");
    assert_eq!(db.psql("SELECT count(*) FROM hits;").trim(), "160");
}

/// The same scripts in transaction pool mode (one connection per transaction, statements tracked).
#[test]
fn both_drivers_see_what_postgresql_shows_in_transaction_pool_mode() {
    for driver in ["psycopg", "asyncpg"] {
        let (direct, proxied, _) = differential_with(driver, "pool_mode = \"transaction\"\npool_size = 2\n");
        let diffs = differences(&direct, &proxied);
        assert!(diffs.is_empty(), "{driver} differs through the proxy in transaction mode:\n{}", diffs.join("\n"));
    }
}
