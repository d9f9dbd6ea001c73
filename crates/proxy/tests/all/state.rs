//! Plugin state through the proxy (issue 19): the first-party plugins on live traffic over a SQLite
//! file that outlives a proxy and a Redis server shared by two proxies, as an operator runs them.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use helios_plugin_host::{Level, MemoryLogSink, Runtime, RuntimeConfig};
use helios_proxy::{ProxyConfig, plugins};
use serde_json::Value;

use crate::extended::{connect, rt};
use crate::support::pg::{self, PgCluster};
use crate::support::proxy::{TestProxy, config_text};
use crate::support::redis::RedisServer;
use crate::support::{plugin_entry, stderr, stdout};

/// One helios-proxy with its own plugin runtime over the `[state]` store of its config, as a
/// separate process would have; the audit records it logged are in `logs`.
struct Replica {
    proxy: TestProxy,
    logs: Arc<MemoryLogSink>,
    _runtime: Runtime,
}

fn replica(text: &str) -> Replica {
    let config = ProxyConfig::from_toml(text, "state.toml").expect("config parses");
    let store = helios_plugin_state::Store::open(&config.state).expect("the state store opens");
    let logs = MemoryLogSink::new();
    let runtime = Runtime::new(RuntimeConfig::default().kv(store.backend()).log_sink(logs.clone())).expect("runtime");
    let chain = plugins::load_chain_with(&config, "state.toml", &runtime).expect("plugins load");
    Replica { proxy: TestProxy::start_config(config, Arc::new(chain)), logs, _runtime: runtime }
}

/// cost-governor charging 1 unit per statement (nothing for time or size) against a day budget.
fn budget_plugin(day: u64) -> String {
    let day = day.to_string();
    plugin_entry(
        "cost_governor",
        "on_error = \"abort\"",
        &[("budget_day", &day), ("cost_per_query", "1"), ("cost_per_ms", "0"), ("cost_per_kb", "0")],
    )
}

/// audit-chain with a deadline that covers its compare-and-swap retries: with 8 sessions on two
/// replicas contending for one tail on a loaded 2-core machine, a call can need more than the
/// default 100 ms (a call cut off by its deadline records nothing; it never forks the chain).
fn audit_plugin() -> String {
    plugin_entry("audit_chain", "on_error = \"skip\"\ndeadline_ms = 2000", &[])
}

/// The audit records a replica logged, as JSON lines.
fn records(r: &Replica) -> Vec<String> {
    r.logs
        .lines()
        .into_iter()
        .filter(|(p, l, m)| {
            p == "audit_chain" && *l == Level::Info && m.starts_with(audit_chain_verify::chain::LOG_PREFIX)
        })
        .map(|(_, _, m)| m[audit_chain_verify::chain::LOG_PREFIX.len()..].to_owned())
        .collect()
}

fn seq(record: &str) -> u64 {
    serde_json::from_str::<Value>(record).expect("a record is JSON")["seq"].as_u64().expect("seq")
}

/// Records of several replicas as one export in chain order (log lines of concurrent instances may
/// interleave; the chain's order is its seq/prev_hash links), checked as `helios-plugin audit verify`
/// checks an export.
fn verify(mut all: Vec<String>) -> Result<usize, String> {
    all.sort_by_key(|r| seq(r));
    audit_chain_verify::verify_chain(&all.join("\n")).map_err(|e| e.to_string())
}

fn sqlite_state(dir: &tempfile::TempDir) -> String {
    format!("[state]\nbackend = \"sqlite\"\npath = \"{}\"\n", dir.path().join("state.db").display())
}

fn redis_state(redis: &RedisServer) -> String {
    format!("[state]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout_ms = 300\nconnect_timeout_ms = 300\n", redis.url())
}

#[test]
fn a_restarted_proxy_keeps_its_sqlite_state_the_budget_stays_spent_and_the_chain_goes_on() {
    let db = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let text =
        config_text(&[("primary", db.port(), "primary")], &sqlite_state(&dir)) + &budget_plugin(5) + &audit_plugin();

    let first = replica(&text);
    let out = pg::psql_raw(first.proxy.port(), pg::SUPERUSER, "postgres", "SELECT 1;\nSELECT 2;\nSELECT 3;\n", &[]);
    assert_eq!(stdout(&out), "1\n2\n3", "{}", stderr(&out));
    let before = records(&first);
    drop(first);

    // A new proxy process over the same file: 2 of the 5 statements are left.
    let second = replica(&text);
    let out = pg::psql_raw(second.proxy.port(), pg::SUPERUSER, "postgres", "SELECT 4;\nSELECT 5;\nSELECT 6;\n", &[]);
    assert_eq!(stdout(&out), "4\n5", "the budget spent before the restart still counts");
    let err = stderr(&out);
    assert!(err.contains("42000") && err.contains("cost-governor") && err.contains("day budget"), "{err}");
    let after = records(&second);

    // The chain continues from the tail the first proxy left: one unbroken chain over both.
    let last: Value = serde_json::from_str(before.last().expect("records before the restart")).unwrap();
    let next: Value = serde_json::from_str(after.first().expect("records after the restart")).unwrap();
    assert_eq!(next["seq"].as_u64(), last["seq"].as_u64().map(|s| s + 1), "{next}");
    assert_eq!(next["prev_hash"], last["hash"]);
    let total = before.len() + after.len();
    assert_eq!(verify([before, after].concat()), Ok(total));
}

/// A pgbench custom script file.
fn script(sql: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), sql).unwrap();
    f
}

fn pgbench(port: u16, script: &std::path::Path, clients: &str, per_client: &str) -> std::process::Output {
    Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", pg::SUPERUSER, "-n", "-f"])
        .arg(script)
        .args(["-c", clients, "-j", "2", "-t", per_client, "postgres"])
        .output()
        .expect("pgbench is installed")
}

/// Two replicas sharing one Redis hold one tenant to one budget: under concurrent pgbench load from
/// both, exactly the budget's statements run (the charge is an atomic add, taken back on refusal).
#[test]
fn two_replicas_sharing_redis_enforce_one_budget_exactly_under_concurrent_pgbench() {
    const BUDGET: u64 = 400;
    let db = PgCluster::start();
    db.psql("CREATE TABLE hits (n int);");
    let redis = RedisServer::start_durable();
    let text = config_text(&[("primary", db.port(), "primary")], &redis_state(&redis)) + &budget_plugin(BUDGET);
    let (a, b) = (replica(&text), replica(&text));
    let insert = script("INSERT INTO hits VALUES (1);\n");
    let runs: Vec<_> = [a.proxy.port(), b.proxy.port()]
        .into_iter()
        .map(|port| {
            let path = insert.path().to_path_buf();
            std::thread::spawn(move || pgbench(port, &path, "4", "150"))
        })
        .collect();
    let outs: Vec<_> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    let rows: u64 = db.psql("SELECT count(*) FROM hits;").trim().parse().unwrap();
    assert_eq!(rows, BUDGET, "1200 attempts from two replicas against a budget of {BUDGET}");
    for o in &outs {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("day budget"), "each replica refused with the named budget: {err}");
    }
}

/// audit-chain over 8 concurrent sessions on two replicas sharing Redis: every statement gets a
/// record and the records form one chain (no repeated seq, every link intact).
#[test]
fn audit_chain_under_eight_concurrent_sessions_on_two_replicas_is_one_unbroken_chain() {
    const PER_SESSION: usize = 25;
    let db = PgCluster::start();
    let redis = RedisServer::start_durable();
    let text = config_text(&[("primary", db.port(), "primary")], &redis_state(&redis)) + &audit_plugin();
    let (a, b) = (replica(&text), replica(&text));
    let sql: String = (0..PER_SESSION).map(|i| format!("SELECT {i};\n")).collect();
    let sessions: Vec<_> = (0..8)
        .map(|i| {
            let port = if i % 2 == 0 { a.proxy.port() } else { b.proxy.port() };
            let sql = sql.clone();
            std::thread::spawn(move || pg::psql_raw(port, pg::SUPERUSER, "postgres", &sql, &[]))
        })
        .collect();
    for s in sessions {
        let out = s.join().unwrap();
        assert_eq!(stdout(&out).lines().count(), PER_SESSION, "{}", stderr(&out));
    }
    let errors: Vec<_> = [&a, &b]
        .iter()
        .flat_map(|r| r.logs.lines())
        .filter(|(_, l, _)| matches!(l, Level::Warn | Level::Error))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let all = [records(&a), records(&b)].concat();
    assert_eq!(all.len(), 8 * PER_SESSION);
    assert!(!records(&a).is_empty() && !records(&b).is_empty(), "both replicas appended");
    assert_eq!(verify(all), Ok(8 * PER_SESSION));
}

/// Redis killed under load: statements are refused with an error naming the plugin (budgets fail
/// closed, nothing passes unmetered), the proxy keeps serving, and traffic flows again when Redis
/// is back, with the budget spent before the kill still counted.
#[test]
fn redis_killed_mid_load_fails_closed_with_named_errors_and_recovers() {
    let db = PgCluster::start();
    let mut redis = RedisServer::start_durable();
    let text = config_text(&[("primary", db.port(), "primary")], &redis_state(&redis)) + &budget_plugin(100_000);
    let r = replica(&text);
    let port = r.proxy.port();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            rt().block_on(async move {
                let (mut ok, mut errors) = (0u64, Vec::new());
                let c = connect(port).await;
                while !stop.load(Ordering::Relaxed) {
                    match c.simple_query("SELECT 1").await {
                        Ok(_) => ok += 1,
                        Err(e) => errors.push(e.as_db_error().map_or(e.to_string(), |d| d.message().to_owned())),
                    }
                }
                (ok, errors)
            })
        })
    };
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let admitted = |r: &Replica| -> bool {
        let out = pg::psql_raw(r.proxy.port(), pg::SUPERUSER, "postgres", "SELECT 'in';", &[]);
        stdout(&out) == "in"
    };
    wait_for("traffic flows", &|| admitted(&r));
    redis.kill();
    let out = pg::psql_raw(port, pg::SUPERUSER, "postgres", "SELECT 'in';", &[]);
    assert_eq!(stdout(&out), "", "nothing passes unmetered while the store is down");
    let err = stderr(&out);
    assert!(err.contains("cost_governor") && err.contains("redis"), "the error names the plugin and the store: {err}");
    redis.restart();
    wait_for("traffic flows again once Redis is back", &|| admitted(&r));
    stop.store(true, Ordering::Relaxed);
    let (ok, errors) = load.join().unwrap();
    assert!(ok > 0, "the load ran");
    for e in &errors {
        // The host's refusal names the configured plugin (`cost_governor`); when the guest itself
        // sees the store fail it blocks with its own reason, which names it as `cost-governor`.
        assert!(e.contains("cost_governor") || e.contains("cost-governor"), "every refusal names the plugin: {e}");
    }
    // What was charged before the kill survived it (appendfsync always): the day counter is there.
    let store = helios_plugin_state::Store::open(&ProxyConfig::from_toml(&text, "state.toml").unwrap().state).unwrap();
    let day: Vec<_> = store
        .entries("cost_governor")
        .unwrap()
        .into_iter()
        .filter(|(k, _)| String::from_utf8_lossy(k).contains(":day:"))
        .map(|(_, v)| String::from_utf8_lossy(&v).parse::<u64>().unwrap())
        .collect();
    assert_eq!(day.len(), 1, "one tenant, one day");
    assert!(day[0] >= (ok + 1) * 1000, "charged {} milli-units for at least {} statements", day[0], ok + 1);
    eprintln!("redis kill: {ok} statements ran, {} refused while it was down", errors.len());
}

/// The helios-proxy binary logs which store holds plugin state at start, and once each when the
/// store becomes unreachable and reachable again (not once per failed call).
#[test]
fn the_proxy_log_names_the_state_backend_and_when_it_goes_away_and_comes_back() {
    let db = PgCluster::start();
    let mut redis = RedisServer::start_durable();
    let dir = tempfile::tempdir().unwrap();
    let listen = pg::free_port();
    let text =
        config_text(&[("primary", db.port(), "primary")], &format!("module_cache = \"off\"\n{}", redis_state(&redis)))
            .replace("127.0.0.1:0", &format!("127.0.0.1:{listen}"))
            + &budget_plugin(100_000);
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let log_path = dir.path().join("proxy.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_helios-proxy"))
        .arg("--config")
        .arg(&path)
        .env("HELIOS_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start helios-proxy");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let served = || stdout(&pg::psql_raw(listen, pg::SUPERUSER, "postgres", "SELECT 'in';", &[])) == "in";
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}; log:\n{}", log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("the proxy serves", &served);
    let backend = format!("redis 127.0.0.1:{}/0", redis.port);
    assert!(log().lines().any(|l| l.contains("plugin state store") && l.contains(&backend)), "{}", log());
    redis.kill();
    for _ in 0..3 {
        assert!(!served(), "refused while the store is down");
    }
    wait_for("the outage is logged", &|| log().contains("plugin state store unreachable"));
    redis.restart();
    wait_for("traffic flows again", &served);
    wait_for("the recovery is logged", &|| log().contains("plugin state store reachable again"));
    let outages = log().matches("plugin state store unreachable").count();
    assert_eq!(outages, 1, "one line per outage, not one per call:\n{}", log());
    let _ = child.kill();
    let _ = child.wait();
}
