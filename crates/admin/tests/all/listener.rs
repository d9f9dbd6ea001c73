//! Token rules, `/plugins` redaction and the cardinality cap, through the listener.

use std::collections::BTreeMap;
use std::sync::Arc;

use helios_plugin_admin::{AdminConfig, GuardOutcome, PluginMeta, PluginView, REDACTED};
use helios_plugin_host::schema::GuardRequest;

use crate::support::{ALLOW, BLOCKER, Control, Host, digest, http};

fn loopback() -> AdminConfig {
    AdminConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }
}

fn token_file(dir: &tempfile::TempDir, token: &str) -> std::path::PathBuf {
    let p = dir.path().join("admin.token");
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p
}

#[test]
fn a_non_loopback_listener_without_a_token_file_never_starts() {
    let host = Host::new(100);
    let cfg = AdminConfig { listen: "0.0.0.0:0".parse().unwrap(), ..Default::default() };
    let e = host.admin(cfg, Arc::new(Control::default())).unwrap_err();
    assert!(e.contains("0.0.0.0:0") && e.contains("admin.token_file"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    let cfg = AdminConfig { token_file: Some(empty), ..loopback() };
    let e = host.admin(cfg, Arc::new(Control::default())).unwrap_err();
    assert!(e.contains("empty") && e.contains("token_file"), "{e}");
}

#[test]
fn writes_need_the_token_on_loopback_and_everything_needs_it_elsewhere() {
    let host = Host::new(100);
    let control = Arc::new(Control::default());
    // Loopback without a token: reads are open, writes are refused outright.
    let addr = host.admin(loopback(), control.clone()).unwrap();
    assert_eq!(http(addr, "GET", "/metrics", None).0, 200);
    let (status, body) = http(addr, "POST", "/reload", None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin.token_file"), "{body}");
    assert_eq!(*control.reloads.lock().unwrap(), 0);

    // Loopback with a token: writes need it, exactly.
    let dir = tempfile::tempdir().unwrap();
    let cfg = AdminConfig { token_file: Some(token_file(&dir, "s3cret-token")), ..loopback() };
    let addr = host.admin(cfg, control.clone()).unwrap();
    let (status, body) = http(addr, "POST", "/reload", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("missing bearer token"), "{body}");
    let (status, body) = http(addr, "POST", "/reload", Some("s3cret-tokeN"));
    assert_eq!((status, body.as_str()), (401, "wrong bearer token\n"));
    assert_eq!(*control.reloads.lock().unwrap(), 0, "a refused request reached the host");
    let (status, body) = http(addr, "POST", "/reload", Some("s3cret-token"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(*control.reloads.lock().unwrap(), 1);
    assert_eq!(http(addr, "GET", "/plugins", None).0, 200, "reads stay open on loopback");

    // Any other address: reads need the token as well.
    let cfg =
        AdminConfig { listen: "0.0.0.0:0".parse().unwrap(), token_file: Some(token_file(&dir, "t0k")), ..loopback() };
    let bound = host.admin(cfg, control.clone()).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], bound.port()));
    assert_eq!(http(addr, "GET", "/metrics", None).0, 401);
    assert_eq!(http(addr, "GET", "/plugins", Some("wrong")).0, 401);
    assert_eq!(http(addr, "GET", "/metrics", Some("t0k")).0, 200);
}

#[test]
fn plugins_lists_identity_hooks_limits_counters_and_never_a_redacted_value() {
    let host = Host::new(100);
    let mut config = BTreeMap::new();
    config.insert("api_key".to_string(), "sk-live-0123456789".to_string());
    config.insert("table".to_string(), "orders".to_string());
    let blocker = host.hook("blocker", BLOCKER, config);
    let guard = host.guard("allow-all", ALLOW);
    for _ in 0..3 {
        guard.evaluate(&GuardRequest::default());
    }
    let meta = PluginMeta {
        version: Some("1.2.0".into()),
        signer: Some("ops-key".into()),
        redact_keys: vec!["api_key".into()],
        shadow: None,
    };
    let control = Arc::new(Control {
        plugins: vec![(blocker.clone(), meta), (guard.clone(), PluginMeta::default())],
        ..Default::default()
    });
    let addr = host.admin(loopback(), control).unwrap();
    let (status, body) = http(addr, "GET", "/plugins", None);
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("sk-live"), "a redacted value was shown: {body}");
    let views: Vec<PluginView> = serde_json::from_str(&body).unwrap();
    let b = &views[0];
    assert_eq!(
        (b.name.as_str(), b.version.as_deref(), b.signer.as_deref()),
        ("blocker", Some("1.2.0"), Some("ops-key"))
    );
    assert_eq!(b.digest.as_deref(), Some(format!("sha256:{}", digest(&blocker)).as_str()));
    assert_eq!(b.config["api_key"], REDACTED);
    assert_eq!(b.config["table"], "orders");
    assert_eq!(b.kind, "hooks");
    assert_eq!(
        (b.hooks[0].protocol.as_str(), b.hooks[0].event.as_str(), b.hooks[0].phase.as_str()),
        ("postgres", "query", "pre_pipeline")
    );
    assert_eq!(b.limits.fuel, blocker.limits().fuel);
    let g = &views[1];
    assert_eq!((g.kind.as_str(), g.counters.calls, g.counters.failures), ("guard", 3, 0));
}

#[test]
fn a_family_at_its_cap_drops_new_label_sets_with_the_chio_warning_and_keeps_counting_old_ones() {
    let host = Host::new(3);
    let logs = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || Writer(sink.clone()))
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let digests: Vec<String> = (0..5).map(|i| format!("{i:016x}{}", "0".repeat(48))).collect();
    for d in &digests {
        host.metrics.guard_verdict(d, GuardOutcome::Allow);
    }
    host.metrics.guard_verdict(&digests[0], GuardOutcome::Allow);
    let text = host.metrics.render();
    let series: Vec<&str> = text.lines().filter(|l| l.starts_with("chio_guard_verdict_total{")).collect();
    assert_eq!(series.len(), 3, "{text}");
    assert!(series.contains(&"chio_guard_verdict_total{guard=\"0000000000000000\",epoch=\"0\",verdict=\"allow\"} 2"));
    assert!(!text.contains("guard=\"0000000000000003\""), "{text}");
    assert!(text.contains("helios_metric_label_sets_dropped_total{family=\"chio_guard_verdict\"} 2\n"), "{text}");
    let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert_eq!(
        logged.matches("E_GUARD_METRIC_CARDINALITY_EXCEEDED").count(),
        2,
        "one warning (message + code field): {logged}"
    );
    assert!(logged.contains("chio_guard_verdict"), "{logged}");
}

#[derive(Clone)]
struct Writer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn status_prints_one_row_per_plugin_and_needs_the_token_off_loopback() {
    let host = Host::new(100);
    let mut config = BTreeMap::new();
    config.insert("api_key".to_string(), "sk-live-0123456789".to_string());
    let blocker = host.hook("blocker", BLOCKER, config);
    let guard = host.guard("allow-all", ALLOW);
    guard.evaluate(&GuardRequest::default());
    let meta = PluginMeta { version: Some("1.2.0".into()), redact_keys: vec!["api_key".into()], ..Default::default() };
    let control = Arc::new(Control {
        plugins: vec![(blocker.clone(), meta), (guard.clone(), PluginMeta::default())],
        ..Default::default()
    });
    let addr = host.admin(loopback(), control.clone()).unwrap();
    let views = helios_plugin_admin::status::fetch(&format!("http://{addr}"), None).unwrap();
    let table = helios_plugin_admin::status::table(&views);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("DIGEST"), "{table}");
    assert!(
        lines[1].starts_with("blocker")
            && lines[1].contains("1.2.0")
            && lines[1].contains("postgres/query/pre_pipeline"),
        "{table}"
    );
    assert!(lines[1].contains(&digest(&blocker)[..16]) && lines[1].contains("api_key=<redacted>"), "{table}");
    assert!(!table.contains("sk-live"), "{table}");
    assert!(
        lines[2].starts_with("allow-all")
            && lines[2].contains("guard")
            && lines[2].contains(helios_plugin_schema::abi::EVALUATE),
        "{table}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg =
        AdminConfig { listen: "0.0.0.0:0".parse().unwrap(), token_file: Some(token_file(&dir, "t1")), ..loopback() };
    let bound = host.admin(cfg, control).unwrap();
    let url = format!("http://127.0.0.1:{}", bound.port());
    let e = helios_plugin_admin::status::fetch(&url, None).unwrap_err().to_string();
    assert!(e.contains("401") && e.contains("/plugins"), "{e}");
    assert_eq!(helios_plugin_admin::status::fetch(&url, Some("t1")).unwrap().len(), 2);
    let e = helios_plugin_admin::status::fetch("https://example.invalid", None).unwrap_err().to_string();
    assert!(e.contains("only http://"), "{e}");
}
