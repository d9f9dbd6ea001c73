//! pgbench through the proxy with plugins loaded, in both query modes.

use std::process::{Command, Output};

use helios_proxy::{ProxyConfig, plugins};

use crate::support::pg::{self, PgCluster};
use crate::support::plugin_entry;
use crate::support::proxy::{TestProxy, config_text};

fn pgbench(port: u16, args: &[&str]) -> Output {
    Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", pg::SUPERUSER])
        .args(args)
        .arg("postgres")
        .output()
        .expect("pgbench is installed (postgresql-contrib / postgresql-client)")
}

#[test]
fn pgbench_simple_and_extended_run_to_completion_with_plugins() {
    let db = PgCluster::start();
    let init = pgbench(db.port(), &["-i", "-q", "-s", "1"]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let plugins = plugin_entry("llm_guardrail", "", &[("apply_to_all", "true")])
        + &plugin_entry("guest_misbehave", "", &[("behavior", "kv_counter")]);
    for mode in ["session", "transaction"] {
        let text = config_text(&[("primary", db.port(), "primary")], &format!("pool_mode = \"{mode}\"\n")) + &plugins;
        let config = ProxyConfig::from_toml(&text, "pgbench.toml").unwrap();
        let hooks = plugins::hooks_from_config(&config, "pgbench.toml").expect("plugins load");
        let proxy = TestProxy::start_config(config, hooks);
        for protocol in ["simple", "extended"] {
            let out = pgbench(proxy.port(), &["-M", protocol, "-c", "4", "-j", "2", "-t", "100", "-n"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{mode}/{protocol}: {}\n{}", text, String::from_utf8_lossy(&out.stderr));
            assert!(text.contains("number of transactions actually processed: 400/400"), "{mode}/{protocol}: {text}");
            assert!(text.contains("number of failed transactions: 0"), "{mode}/{protocol}: {text}");
        }
    }
}
