//! The admin listener of the helios-proxy binary (`[admin]`): metrics after real statements from
//! psql, `/plugins` with redacted config, and `POST /reload` (token required) sharing SIGHUP's path.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::pg::{self, PgCluster};
use crate::support::plugin_entry;

pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn config(listen: u16, node: u16, admin: u16, token_file: &std::path::Path, with_counter: bool) -> String {
    let mut s = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken_file = \"{}\"\n\n[[listeners]]\nlisten = \"127.0.0.1:{listen}\"\n[[nodes]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = {node}\nrole = \"primary\"\n",
        token_file.display()
    );
    s += &plugin_entry("llm_guardrail", "", &[("apply_to_all", "true")]);
    if with_counter {
        s += &plugin_entry(
            "guest_misbehave",
            "redact_keys = [\"api_key\"]",
            &[("behavior", "kv_counter"), ("api_key", "sk-live-0123456789")],
        );
    }
    s
}

pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn names(body: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn the_admin_listener_serves_metrics_plugins_and_reload_for_the_running_proxy() {
    let db = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "op-token-7\n").unwrap();
    let (listen, admin) = (pg::free_port(), pg::free_port());
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config(listen, db.port(), admin, &token, true)).unwrap();
    let log = dir.path().join("proxy.log");
    let child = Command::new(env!("CARGO_BIN_EXE_helios-proxy"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start helios-proxy");
    let p = Running(child);
    wait_for("the admin listener answers", || http(admin, "GET", "/metrics", None).is_some_and(|r| r.0 == 200));

    for _ in 0..3 {
        let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "SELECT 1;", &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "DROP TABLE nothing_here;", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ERROR:  42000"), "the guardrail refuses DDL from any client (apply_to_all): {err}");

    let (_, metrics) = http(admin, "GET", "/metrics", None).unwrap();
    for line in [
        "helios_plugin_calls_total{plugin=\"llm_guardrail\",export=\"pre_query\"} 4",
        "helios_plugin_results_total{plugin=\"llm_guardrail\",hook=\"pre_query\",kind=\"continue\"} 3",
        "helios_plugin_results_total{plugin=\"llm_guardrail\",hook=\"pre_query\",kind=\"block\"} 1",
        "helios_proxy_statements_total{outcome=\"forwarded\"} 3",
        "helios_proxy_statements_total{outcome=\"blocked\"} 1",
        "helios_proxy_errors_total{class=\"42\"} 1",
        "helios_proxy_sessions_opened_total 4",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line}\n{metrics}");
    }

    // The four psql sessions ended.
    wait_for("sessions closed", || {
        let m = http(admin, "GET", "/metrics", None).map(|r| r.1).unwrap_or_default();
        m.lines().any(|l| l == "helios_proxy_sessions 0")
    });

    let (status, body) = http(admin, "GET", "/plugins", None).unwrap();
    assert_eq!(status, 200);
    assert!(!body.contains("sk-live"), "a redacted value was shown: {body}");
    assert!(body.contains("\"api_key\": \"<redacted>\""), "{body}");
    assert_eq!(names(&body), ["llm_guardrail", "guest_misbehave"]);

    // A reload request without the token or with a wrong one is refused.
    assert_eq!(http(admin, "POST", "/reload", None).unwrap().0, 401);
    assert_eq!(http(admin, "POST", "/reload", Some("op-token-8")).unwrap().0, 401);
    assert_eq!(names(&http(admin, "GET", "/plugins", None).unwrap().1), ["llm_guardrail", "guest_misbehave"]);
    // The file changes (itself a trigger); the request's answer is the reload that read it.
    std::fs::write(&path, config(listen, db.port(), admin, &token, false)).unwrap();
    let (status, body) = http(admin, "POST", "/reload", Some("op-token-7")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&http(admin, "GET", "/plugins", None).unwrap().1), ["llm_guardrail"]);

    // SIGHUP goes the same way.
    std::fs::write(&path, config(listen, db.port(), admin, &token, true)).unwrap();
    let ok = Command::new("kill").args(["-HUP", &p.0.id().to_string()]).status().unwrap();
    assert!(ok.success());
    wait_for("SIGHUP reloaded the plugins", || {
        http(admin, "GET", "/plugins", None).is_some_and(|(_, b)| names(&b).len() == 2)
    });
    let out = pg::psql_raw(listen, pg::SUPERUSER, "postgres", "SELECT 1;", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
