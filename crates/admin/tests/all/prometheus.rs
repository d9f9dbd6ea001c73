//! A real Prometheus server scrapes the admin listener after a known call sequence; its HTTP API
//! must return the expected series and values. `promtool check metrics` lints the same scrape.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_plugin_admin::{AdminConfig, GuardOutcome, pre_query_kind};
use helios_plugin_host::schema::{GuardRequest, GuardVerdict, QueryContext};
use helios_plugin_host::{Chain, PluginError};

use crate::support::{ALLOW, BLOCKER, CHATTY, Control, DENY, Host, TRAP, digest, free_port, http};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the known sequence: allow-all ×3, deny-all ×2, a trapping guard ×1, chatty ×3 (each call:
/// two `log`, one `get_config`), blocker (pre_query) ×4. Returns the digest prefixes of allow-all,
/// deny-all, trapper and chatty.
fn known_sequence(host: &Host) -> (String, String, String, String) {
    let chatty = host.guard("chatty", CHATTY);
    host.metrics.guard_live(&digest(&chatty), 3, chatty.module_info().unwrap().size);
    let req = GuardRequest { tool_name: "read_file".into(), ..Default::default() };
    for _ in 0..3 {
        assert_eq!(chatty.try_evaluate(&req).unwrap(), GuardVerdict::Allow);
    }
    let allow = host.guard("allow-all", ALLOW);
    let deny = host.guard("deny-all", DENY);
    let trap = host.guard("trapper", TRAP);
    let blocker = host.hook("blocker", BLOCKER, BTreeMap::new());
    for (p, epoch) in [(&allow, 1), (&deny, 1), (&trap, 2)] {
        host.metrics.guard_live(&digest(p), epoch, p.module_info().unwrap().size);
    }
    let req = GuardRequest { tool_name: "read_file".into(), ..Default::default() };
    let verdict = |p: &helios_plugin_host::Plugin| {
        let outcome = match p.try_evaluate(&req) {
            Ok(GuardVerdict::Allow) => GuardOutcome::Allow,
            Ok(GuardVerdict::Deny { .. }) => GuardOutcome::Deny,
            Err(PluginError { .. }) => GuardOutcome::Error,
        };
        host.metrics.guard_verdict(&digest(p), outcome);
    };
    for _ in 0..3 {
        verdict(&allow);
    }
    for _ in 0..2 {
        verdict(&deny);
    }
    verdict(&trap);
    let chain = Chain::new(vec![blocker]);
    for _ in 0..4 {
        chain.pre_query_observed(
            &QueryContext { query: "DROP TABLE t".into(), ..Default::default() },
            &mut |p, _, r| {
                if let Ok(r) = r {
                    host.metrics.plugin_result(p.name(), "pre_query", pre_query_kind(r));
                }
            },
        );
    }
    host.metrics.proxy_error("42501");
    host.metrics.proxy_error("42P01");
    host.metrics.proxy_error("08006");
    let prefix = |p: &helios_plugin_host::Plugin| digest(p)[..16].to_string();
    (prefix(&allow), prefix(&deny), prefix(&trap), prefix(&chatty))
}

#[test]
fn promtool_accepts_the_scrape() {
    let host = Host::new(100);
    known_sequence(&host);
    let text = host.metrics.render();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}\n--- scrape ---\n{text}");
}

#[test]
fn prometheus_scrapes_the_expected_series_after_a_known_call_sequence() {
    let host = Host::new(100);
    let (allow, deny, trap, chatty) = known_sequence(&host);
    let admin = host
        .admin(
            AdminConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() },
            Arc::new(Control::default()),
        )
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: helios\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let _prom = Server(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian package prometheus) must be installed"),
    );
    let query = |q: &str| -> Vec<(BTreeMap<String, String>, f64)> {
        let path = format!("/api/v1/query?query={}", encode(q));
        let Ok(mut s) = std::net::TcpStream::connect(web) else { return Vec::new() };
        drop(s.flush());
        let (status, body) = http(web, "GET", &path, None);
        if status != 200 {
            return Vec::new();
        }
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
    };
    // Ready when the first scrape of our target landed.
    let start = Instant::now();
    while query("up{job=\"helios\"} == 1").is_empty() || query("chio_guard_verdict_total").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "prometheus did not scrape {admin} within 60 s: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let one = |q: &str| -> f64 {
        let r = query(q);
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        r[0].1
    };
    assert_eq!(one(&format!("chio_guard_verdict_total{{guard=\"{allow}\",epoch=\"1\",verdict=\"allow\"}}")), 3.0);
    assert_eq!(one(&format!("chio_guard_verdict_total{{guard=\"{deny}\",verdict=\"deny\"}}")), 2.0);
    assert_eq!(one(&format!("chio_guard_verdict_total{{guard=\"{trap}\",epoch=\"2\",verdict=\"error\"}}")), 1.0);
    assert_eq!(one("sum(chio_guard_deny_total)"), 3.0, "deny + fail-closed error");
    assert_eq!(one(&format!("chio_guard_eval_duration_seconds_count{{guard=\"{allow}\"}}")), 3.0);
    assert!(one(&format!("chio_guard_fuel_consumed_total{{guard=\"{allow}\"}}")) > 0.0);
    assert!(one(&format!("chio_guard_module_bytes{{guard=\"{deny}\"}}")) > 0.0);
    assert_eq!(one("helios_plugin_calls_total{plugin=\"blocker\",export=\"pre_query\"}"), 4.0);
    assert_eq!(one("helios_plugin_results_total{plugin=\"blocker\",hook=\"pre_query\",kind=\"block\"}"), 4.0);
    assert_eq!(one("helios_plugin_failures_total{plugin=\"trapper\",cause=\"trap\"}"), 1.0);
    assert_eq!(one("sum(helios_plugin_calls_total)"), 13.0);
    // Host functions: chatty's 3 calls made 6 `log` and 3 `get_config` calls; no other guard
    // called any, so no other series exists.
    let host_calls = |f: &str| {
        format!("chio_guard_host_call_duration_seconds_count{{guard=\"{chatty}\",epoch=\"3\",host_function=\"{f}\"}}")
    };
    assert_eq!(one(&host_calls(helios_plugin_schema::abi::LOG)), 6.0);
    assert_eq!(one(&host_calls(helios_plugin_schema::abi::GET_CONFIG)), 3.0);
    assert!(
        one(&format!("chio_guard_host_call_duration_seconds_sum{{guard=\"{chatty}\",host_function=\"log\"}}")) > 0.0
    );
    assert_eq!(one("count(chio_guard_host_call_duration_seconds_count)"), 2.0, "only chatty called host functions");
    assert_eq!(one("helios_plugin_call_duration_seconds_count{plugin=\"deny-all\"}"), 2.0);
    assert_eq!(one("helios_proxy_errors_total{class=\"42\"}"), 2.0);
    assert_eq!(one("helios_proxy_errors_total{class=\"08\"}"), 1.0);
    assert!(query("helios_plugin_failures_total{plugin=\"allow-all\"}").is_empty());
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
