//! Operations of the running helios-proxy binary, checked from outside as an operator would: a real
//! Prometheus server scrapes the admin listener after a known sequence of psql sessions (pool
//! waits and connections by node and state, every error a client received by SQLSTATE class).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::admin::{Running, http, wait_for};
use crate::support::pg::{self, PgCluster};
use crate::support::{plugin_entry, stderr};

/// A Prometheus server scraping `target` every second, queried over its HTTP API.
struct Prometheus {
    _server: Running,
    web: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: helios-proxy\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let web = pg::free_port();
        let server = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian package prometheus) must be installed");
        Prometheus { _server: Running(server), web, dir }
    }

    fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let Some((200, body)) = http(self.web, "GET", &format!("/api/v1/query?query={}", encode(q)), None) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let labels = serde_json::from_value(r["metric"].clone()).unwrap_or_default();
                let value = r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// The single sample `q` returns (fails the test otherwise).
    fn one(&self, q: &str) -> f64 {
        let r = self.query(q);
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        r[0].1
    }

    /// Waits until a scrape that happened after this call has landed (`helios_proxy_sessions_opened_total`
    /// reaching `sessions`), so the values read afterwards are the final ones.
    fn wait_for_scrape(&self, sessions: u64) {
        let start = Instant::now();
        loop {
            let r = self.query("helios_proxy_sessions_opened_total");
            if r.first().is_some_and(|(_, v)| *v == sessions as f64) {
                // One more scrape interval, so every family of that state is in.
                std::thread::sleep(Duration::from_millis(1200));
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "prometheus did not scrape {sessions} sessions within 60 s (last: {r:?}): {}",
                std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn start_proxy(dir: &std::path::Path, toml: &str, admin: u16) -> Running {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, toml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_helios-proxy"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("proxy.log")).unwrap())
        .spawn()
        .expect("start helios-proxy");
    let p = Running(child);
    wait_for("the admin listener answers", || http(admin, "GET", "/metrics", None).is_some_and(|r| r.0 == 200));
    p
}

fn metric_line(admin: u16, line: &str) -> bool {
    http(admin, "GET", "/metrics", None).is_some_and(|(_, m)| m.lines().any(|l| l == line))
}

#[test]
fn prometheus_scrapes_pool_waits_connections_and_every_error_class_clients_received() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE uniq (id int PRIMARY KEY);");
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (pg::free_port(), pg::free_port());
    // One server connection per (user, database), session pooling: a second client waits.
    let mut toml = format!(
        "pool_size = 1\npool_timeout_ms = 20000\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[[listeners]]\nlisten = \"127.0.0.1:{listen}\"\n[[nodes]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {}\nrole = \"primary\"\n",
        db.port()
    );
    toml += &plugin_entry("llm_guardrail", "", &[]);
    let _proxy = start_proxy(dir.path(), &toml, admin);
    let prom = Prometheus::start(admin);

    // Session A holds the only connection for 1.5 s; B arrives while A is busy and waits.
    let a = std::thread::spawn(move || pg::psql_raw(listen, pg::SUPERUSER, "postgres", "SELECT pg_sleep(1.5);", &[]));
    wait_for("session A holds the pool's connection", || {
        metric_line(admin, "helios_proxy_pool_connections{node=\"primary\",state=\"busy\"} 1")
    });
    let b = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "SELECT 'b waited';", &[]);
    assert!(pg_ok(&b), "{}", stderr(&b));
    assert!(pg_ok(&a.join().unwrap()));

    // The known errors: one from the server's constraint, one from its parser, one refusal by a
    // plugin (AI traffic, marked by the comment), and a FATAL for a database that does not exist.
    let out = pg::psql_raw(
        listen,
        pg::SUPERUSER,
        "postgres",
        "INSERT INTO uniq VALUES (1);\nINSERT INTO uniq VALUES (1);\nSELEC 1;\n/* ai: cleanup */ DROP TABLE uniq;\n",
        &[],
    );
    let err = stderr(&out);
    for code in ["ERROR:  23505", "ERROR:  42601", "ERROR:  42000"] {
        assert!(err.contains(code), "psql did not see {code}: {err}");
    }
    let out = pg::psql_raw(listen, pg::SUPERUSER, "no_such_db", "SELECT 1;", &[]);
    assert!(stderr(&out).contains("3D000"), "{}", stderr(&out));
    assert_eq!(db.psql("SELECT count(*) FROM uniq;").trim(), "1", "the refused DROP did not run");

    prom.wait_for_scrape(4);
    assert_eq!(prom.one("helios_proxy_errors_total{class=\"23\"}"), 1.0);
    assert_eq!(prom.one("helios_proxy_errors_total{class=\"42\"}"), 2.0, "42601 from the server + 42000 refusal");
    assert_eq!(prom.one("helios_proxy_errors_total{class=\"3D\"}"), 1.0);
    assert_eq!(prom.one("sum(helios_proxy_errors_total)"), 4.0);
    assert_eq!(prom.one("helios_proxy_pool_waits_total{node=\"primary\"}"), 1.0, "only B waited");
    assert_eq!(prom.one("helios_proxy_pool_wait_duration_seconds_count{node=\"primary\"}"), 1.0);
    let waited = prom.one("helios_proxy_pool_wait_duration_seconds_sum{node=\"primary\"}");
    assert!((0.3..20.0).contains(&waited), "B waited for A's 1.5 s statement, not {waited} s");
    assert_eq!(prom.one("helios_proxy_pool_connections{node=\"primary\",state=\"idle\"}"), 1.0);
    assert_eq!(prom.one("helios_proxy_pool_connections{node=\"primary\",state=\"busy\"}"), 0.0);
}

fn pg_ok(o: &std::process::Output) -> bool {
    o.status.success() && o.stderr.is_empty()
}

// ---------------------------------------------------------------------- canary, shadow, triggers

const TOKEN: &str = "ops-token-15";

/// The config both versions of plugin `gate` get (each reads its own keys). guest-misbehave's
/// `pre_query` traps on a statement containing `boom` (`panic_on`), which no canary statement does.
const GATE_CONFIG: &[(&str, &str)] = &[("behavior", "ok"), ("apply_to_all", "true"), ("panic_on", "boom")];

/// Plugin `gate` in two versions: v1 lets every statement through (guest-misbehave, `ok`), v2 is
/// llm-guardrail judging every statement (it refuses DDL). Unsigned `.wasm` take their name from
/// the file, so both are `gate.wasm` in their own directory.
struct Versions {
    v1: std::path::PathBuf,
    v2: std::path::PathBuf,
}

fn versions(dir: &std::path::Path) -> Versions {
    let place = |sub: &str, guest: &str| {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let to = d.join("gate.wasm");
        std::fs::copy(crate::support::guest_wasm(guest), &to).unwrap();
        to
    };
    Versions { v1: place("v1", "guest_misbehave"), v2: place("v2", "llm_guardrail") }
}

/// Statements of a canary corpus: reads, a row change and DDL (where v1 and v2 differ).
const CORPUS_STATEMENTS: &[&str] = &[
    "SELECT 1",
    "SELECT id FROM uniq WHERE id = 1",
    "INSERT INTO uniq VALUES (7)",
    "DROP TABLE victim",
    "SELECT 2",
    "UPDATE uniq SET id = 8 WHERE id = 7",
    "CREATE TABLE scratch (x int)",
    "SELECT 3",
];

/// Records a 32-fixture corpus of `wasm`'s `pre_query` answers (what a canary of it expects), with
/// `MANIFEST.sha256`, by running it in the host as the proxy would.
fn record_corpus(dir: &std::path::Path, wasm: &std::path::Path) {
    use helios_plugin_host::schema::{Hook, QueryContext};
    use sha2::Digest;
    std::fs::create_dir_all(dir).unwrap();
    let rt = helios_plugin_host::Runtime::new(helios_plugin_host::RuntimeConfig::default()).unwrap();
    let mut pc = helios_plugin_host::PluginConfig::new("gate").hooks([Hook::PreQuery]);
    for (k, v) in GATE_CONFIG {
        pc = pc.config(*k, *v);
    }
    let plugin = rt.load(&std::fs::read(wasm).unwrap(), pc).unwrap();
    let mut manifest = String::new();
    for i in 0..helios_plugin_host::CANARY_FIXTURE_COUNT {
        let ctx = QueryContext { query: CORPUS_STATEMENTS[i % CORPUS_STATEMENTS.len()].into(), ..Default::default() };
        let input = serde_json::to_value(&ctx).unwrap();
        let out = plugin.call_json(Hook::PreQuery, &serde_json::to_vec(&input).unwrap()).unwrap();
        let expected: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let bytes =
            serde_json::to_vec_pretty(&serde_json::json!({"hook": "pre_query", "input": input, "expected": expected}))
                .unwrap();
        let file = format!("f{i:02}.json");
        std::fs::write(dir.join(&file), &bytes).unwrap();
        let hex: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        manifest += &format!("{hex}  {file}\n");
    }
    std::fs::write(dir.join("MANIFEST.sha256"), manifest).unwrap();
}

/// proxy.toml with an admin listener (token), one node and plugin `gate`: `source`, its `canary`
/// corpus and incident directory, and `extra` lines of the entry (e.g. a shadow).
fn gate_config(
    listen: u16,
    admin: u16,
    node: u16,
    dir: &std::path::Path,
    source: &std::path::Path,
    canary: &str,
    extra: &str,
) -> String {
    let token = dir.join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let mut s = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken_file = \"{}\"\n\n[[listeners]]\nlisten = \"127.0.0.1:{listen}\"\n[[nodes]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {node}\nrole = \"primary\"\n\n[[plugins]]\nname = \"gate\"\nsource = \"{}\"\nallow_unsigned = true\ncanary = \"{canary}\"\nincident_dir = \"incidents\"\n{extra}\n[plugins.config]\n",
        token.display(),
        source.display()
    );
    for (k, v) in GATE_CONFIG {
        s += &format!("{k} = \"{v}\"\n");
    }
    s
}

fn post_json(admin: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(admin, "POST", path, Some(TOKEN)).expect("admin listener answers");
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
}

fn gate_view(admin: u16) -> serde_json::Value {
    let (_, body) = http(admin, "GET", "/plugins", None).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array().unwrap().iter().find(|p| p["name"] == "gate").cloned().expect("gate in /plugins")
}

fn wasm_digest(path: &std::path::Path) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(std::fs::read(path).unwrap());
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn table_exists(db: &PgCluster, table: &str) -> bool {
    db.psql(&format!("SELECT to_regclass('{table}') IS NOT NULL;")).trim() == "t"
}

#[test]
fn a_hook_plugins_reload_keeps_the_old_version_when_its_canary_fails_and_applies_one_that_passes() {
    let db = PgCluster::start();
    db.psql("CREATE TABLE victim1 (x int); CREATE TABLE victim2 (x int);");
    let dir = tempfile::tempdir().unwrap();
    let v = versions(dir.path());
    record_corpus(&dir.path().join("canary-v1"), &v.v1);
    record_corpus(&dir.path().join("canary-v2"), &v.v2);
    let (listen, admin) = (pg::free_port(), pg::free_port());
    let write = |source: &std::path::Path, canary: &str| {
        std::fs::write(
            dir.path().join("proxy.toml"),
            gate_config(listen, admin, db.port(), dir.path(), source, canary, ""),
        )
        .unwrap()
    };
    write(&v.v1, "canary-v1");
    let _proxy = start_proxy(dir.path(), &std::fs::read_to_string(dir.path().join("proxy.toml")).unwrap(), admin);
    assert_eq!(gate_view(admin)["digest"], wasm_digest(&v.v1));

    // v2 refuses the corpus's DROP TABLE that v1 let through: the canary fails, v1 keeps answering.
    write(&v.v2, "canary-v1");
    let (status, body) = post_json(admin, "/reload");
    assert_eq!(status, 200, "{body}");
    let c = &body["canary"][0];
    assert_eq!(c["outcome"], "canary_failed", "{body}");
    assert_eq!(c["to"], wasm_digest(&v.v2));
    let incident = std::path::PathBuf::from(c["incident"].as_str().unwrap());
    assert!(incident.starts_with(dir.path().join("incidents")), "{}", incident.display());
    let detail: serde_json::Value =
        serde_json::from_slice(&std::fs::read(incident.join("incident.json")).unwrap()).unwrap();
    assert_eq!(detail["outcome"], "canary_failed");
    assert_eq!(detail["fixture"], c["fixture"]);
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("canary-v1").join(c["fixture"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert!(
        ["DROP TABLE victim", "CREATE TABLE scratch (x int)"].contains(&fixture["input"]["query"].as_str().unwrap()),
        "the first differing fixture is DDL: {fixture}"
    );
    let traces = std::fs::read_to_string(incident.join("last_5_eval_traces.ndjson")).unwrap();
    assert!((1..=5).contains(&traces.lines().count()), "{traces}");
    assert!(traces.lines().last().unwrap().contains(&wasm_digest(&v.v2)), "{traces}");
    assert_eq!(gate_view(admin)["digest"], wasm_digest(&v.v1), "v1 still answers");
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "DROP TABLE victim1;", &[]);
    assert!(pg_ok(&out), "v1 lets DROP TABLE through: {}", stderr(&out));
    assert!(!table_exists(&db, "victim1"));

    // With a corpus v2 reproduces, the reload applies it: v2 answers the next psql statement.
    write(&v.v2, "canary-v2");
    let (status, body) = post_json(admin, "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["canary"][0]["outcome"], "applied", "{body}");
    assert_eq!(body["canary"][0]["fixtures"], 32);
    assert_eq!(gate_view(admin)["digest"], wasm_digest(&v.v2));
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "DROP TABLE victim2;", &[]);
    assert!(stderr(&out).contains("ERROR:  42000"), "v2 refuses DROP TABLE: {}", stderr(&out));
    assert!(table_exists(&db, "victim2"));

    let log = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap();
    assert!(log.contains("RELOAD_CANARY_FAILED"), "{log}");
    assert!(log.contains("RELOAD_APPLIED"), "{log}");
}

#[test]
fn a_shadow_candidate_from_proxy_toml_never_blocks_a_client_counts_divergences_exactly_and_is_promoted() {
    let db = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let v = versions(dir.path());
    record_corpus(&dir.path().join("canary-v2"), &v.v2);
    let (listen, admin) = (pg::free_port(), pg::free_port());

    // A typo inside `shadow` is an error naming the file and the field.
    let bad = gate_config(
        listen,
        admin,
        db.port(),
        dir.path(),
        &v.v1,
        "canary-v2",
        &format!("shadow = {{ source = \"{}\", evry = 1 }}", v.v2.display()),
    );
    std::fs::write(dir.path().join("proxy.toml"), &bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_helios-proxy"))
        .arg("--config")
        .arg(dir.path().join("proxy.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("proxy.toml") && said.contains("evry") && said.contains("plugins[0] (gate)"), "{said}");

    // v1 is live, v2 (which refuses DDL) its shadow on every call.
    let toml = gate_config(
        listen,
        admin,
        db.port(),
        dir.path(),
        &v.v1,
        "canary-v2",
        &format!("shadow = {{ source = \"{}\", every = 1 }}", v.v2.display()),
    );
    let _proxy = start_proxy(dir.path(), &toml, admin);
    let script = "SELECT 1;\nCREATE TABLE s1 (x int);\nSELECT 2;\nCREATE TABLE s2 (x int);\nSELECT 3;\nCREATE TABLE s3 (x int);\nSELECT 4;\n";
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", script, &[]);
    assert!(pg_ok(&out), "the client is never blocked by the shadow: {}", stderr(&out));
    for t in ["s1", "s2", "s3"] {
        assert!(table_exists(&db, t), "{t} was created (the live version decided)");
    }
    wait_for("the shadow compared all 7 statements", || gate_view(admin)["shadow"]["compared"] == 7);
    let view = gate_view(admin);
    assert_eq!(view["digest"], wasm_digest(&v.v1));
    assert_eq!(view["shadow"]["digest"], wasm_digest(&v.v2));
    assert_eq!(view["shadow"]["divergences"], 3, "{view}");
    let rate = view["shadow"]["agreement_rate"].as_f64().unwrap();
    assert!((rate - 4.0 / 7.0).abs() < 1e-9, "{view}");

    // Promotion is a write: refused without the token; with it the candidate goes live through the
    // canary, and the next statement of a client is judged by it.
    assert_eq!(http(admin, "POST", "/plugins/gate/promote", None).unwrap().0, 401);
    let (status, body) = post_json(admin, "/plugins/nothere/promote");
    assert_ne!(status, 200, "{body}");
    let (status, body) = post_json(admin, "/plugins/gate/promote");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["canary"]["outcome"], "applied", "{body}");
    assert_eq!(body["to"], wasm_digest(&v.v2));
    let view = gate_view(admin);
    assert_eq!(view["digest"], wasm_digest(&v.v2));
    assert!(view.get("shadow").is_none(), "{view}");
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "CREATE TABLE s4 (x int);", &[]);
    assert!(stderr(&out).contains("ERROR:  42000"), "now blocked: {}", stderr(&out));
    assert!(!table_exists(&db, "s4"));
}

#[test]
fn ten_quick_reload_triggers_make_one_reload() {
    let db = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let v = versions(dir.path());
    record_corpus(&dir.path().join("canary-v1"), &v.v1);
    let (listen, admin) = (pg::free_port(), pg::free_port());
    let toml = gate_config(listen, admin, db.port(), dir.path(), &v.v1, "canary-v1", "");
    let proxy = start_proxy(dir.path(), &toml, admin);
    let pid = proxy.0.id().to_string();
    let replaced = || {
        std::fs::read_to_string(dir.path().join("proxy.log")).unwrap().matches("reload: configuration replaced").count()
    };
    assert_eq!(replaced(), 0);
    // Five SIGHUPs and five admin requests at once.
    for _ in 0..5 {
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    }
    let posts: Vec<_> = (0..5).map(|_| std::thread::spawn(move || post_json(admin, "/reload"))).collect();
    let answers: Vec<_> = posts.into_iter().map(|t| t.join().unwrap()).collect();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["reload"], 1, "every request was answered by the first reload: {body}");
    }
    std::thread::sleep(QUIET_AND_MARGIN);
    assert_eq!(replaced(), 1, "{}", std::fs::read_to_string(dir.path().join("proxy.log")).unwrap());
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "SELECT 1;", &[]);
    assert!(pg_ok(&out), "{}", stderr(&out));
}

/// Longer than the proxy's quiet period (300 ms) plus a reload: a second reload would be logged.
const QUIET_AND_MARGIN: Duration = Duration::from_millis(1500);

/// The incident directories of `outcome` under `dir/incidents`.
fn incidents(dir: &std::path::Path, outcome: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join("incidents")) else { return Vec::new() };
    entries.map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().ends_with(&format!("-gate-{outcome}"))).collect()
}

#[test]
fn a_reloaded_hook_plugin_that_fails_live_is_rolled_back_after_5_failures_and_not_after_4() {
    let db = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let v = versions(dir.path());
    // The old version is llm-guardrail (refuses DDL); the new one is guest-misbehave, which lets
    // everything through, reproduces its own 32-fixture corpus, and traps on `boom`.
    let (old, new) = (v.v2, v.v1);
    record_corpus(&dir.path().join("canary-new"), &new);
    let (listen, admin) = (pg::free_port(), pg::free_port());
    let entry = "hooks = [\"pre_query\"]\non_error = \"abort\"";
    let toml =
        |source: &std::path::Path| gate_config(listen, admin, db.port(), dir.path(), source, "canary-new", entry);
    let _proxy = start_proxy(dir.path(), &toml(&old), admin);
    assert_eq!(gate_view(admin)["digest"], wasm_digest(&old));

    std::fs::write(dir.path().join("proxy.toml"), toml(&new)).unwrap();
    let (status, body) = post_json(admin, "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["canary"][0]["outcome"], "applied", "the new version passes the canary: {body}");
    let view = gate_view(admin);
    assert_eq!(view["digest"], wasm_digest(&new));
    assert_eq!(view["last_reload"]["outcome"], "applied", "{view}");
    assert_eq!(view["watchdog"]["previous"], wasm_digest(&old), "{view}");
    assert_eq!(view["watchdog"]["errors"], 0, "{view}");
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "CREATE TABLE w1 (x int);", &[]);
    assert!(pg_ok(&out), "the new version lets DDL through: {}", stderr(&out));
    assert!(table_exists(&db, "w1"));

    // Four failures on live traffic: each statement is refused naming the plugin; no rollback.
    let boom = |n: std::ops::Range<u32>| n.map(|i| format!("SELECT 'boom {i}';\n")).collect::<String>();
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", &boom(1..5), &[]);
    let err = stderr(&out);
    assert_eq!(err.matches("ERROR:  42000").count(), 4, "{err}");
    assert!(err.contains("plugin \"gate\""), "the refusal names the plugin: {err}");
    let view = gate_view(admin);
    assert_eq!(view["digest"], wasm_digest(&new), "4 failures do not roll back: {view}");
    assert_eq!(view["watchdog"]["errors"], 4, "{view}");
    assert_eq!(view["last_reload"]["outcome"], "applied", "{view}");
    assert!(incidents(dir.path(), "rolled_back").is_empty());
    assert!(!metric_line(admin, "chio_guard_reload_total{guard=\"gate\",outcome=\"rolled_back\"} 1"));

    // The fifth (still answered by the failing version) rolls back before the client hears of it.
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", &boom(5..6), &[]);
    assert!(stderr(&out).contains("ERROR:  42000"), "{}", stderr(&out));
    let view = gate_view(admin);
    assert_eq!(view["digest"], wasm_digest(&old), "rolled back: {view}");
    assert_eq!(view["last_reload"]["outcome"], "rolled_back", "{view}");
    assert_eq!(view["last_reload"]["from"], wasm_digest(&new), "{view}");
    assert!(view.get("watchdog").is_none(), "the old version is not watched: {view}");

    // The old version answers the next statements: `boom` goes through, DDL is refused.
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "SELECT 'boom 6';", &[]);
    assert!(pg_ok(&out), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "boom 6");
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "CREATE TABLE w2 (x int);", &[]);
    assert!(stderr(&out).contains("ERROR:  42000"), "llm-guardrail refuses DDL again: {}", stderr(&out));
    assert!(!table_exists(&db, "w2"));

    // One incident: what went back to what, and the five failed calls.
    let found = incidents(dir.path(), "rolled_back");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(view["last_reload"]["incident"], found[0].display().to_string(), "{view}");
    let detail: serde_json::Value =
        serde_json::from_slice(&std::fs::read(found[0].join("incident.json")).unwrap()).unwrap();
    assert_eq!(detail["outcome"], "rolled_back");
    assert_eq!(detail["plugin"], "gate");
    assert_eq!(detail["from"], wasm_digest(&new));
    assert_eq!(detail["to"], wasm_digest(&old));
    let traces = std::fs::read_to_string(found[0].join("last_5_eval_traces.ndjson")).unwrap();
    let traces: Vec<serde_json::Value> = traces.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(traces.len(), 5, "{traces:?}");
    for (i, t) in traces.iter().enumerate() {
        assert_eq!(t["error"], true, "{t}");
        assert_eq!(t["digest"], wasm_digest(&new), "{t}");
        assert_eq!(t["input"]["hook"], "pre_query", "{t}");
        assert_eq!(t["input"]["query"], format!("SELECT 'boom {}';", i + 1), "{t}");
        let output = t["output"].as_str().unwrap();
        assert!(["panic: ", "trap: "].iter().any(|c| output.starts_with(c)), "the failure cause: {t}");
    }
    assert!(metric_line(admin, "chio_guard_reload_total{guard=\"gate\",outcome=\"rolled_back\"} 1"));
    assert!(metric_line(admin, "chio_guard_reload_total{guard=\"gate\",outcome=\"applied\"} 1"));
    let log = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap();
    assert!(log.contains("RELOAD_ROLLED_BACK"), "{log}");
}
