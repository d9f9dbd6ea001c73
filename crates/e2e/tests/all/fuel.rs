//! How much fuel and time the plugins need: the least fuel per call that lets every corpus
//! statement through each plugin, found by bisection, must leave ample headroom under the default.

use std::time::Instant;

use helios_plugin_e2e::Host;
use helios_plugin_host::{OnError, Plugin, PluginConfig};
use helios_plugin_schema::hooks::spec;
use helios_plugin_schema::limits::DEFAULT_FUEL;
use helios_plugin_schema::{PostQueryEnvelope, QueryOutcome};
use std::sync::Arc;

use crate::support::{Line, config_of, corpus};

fn load(host: &Host, name: &str, fuel: u64) -> Arc<Plugin> {
    let cfg = PluginConfig::new(name).config_map(config_of(name)).fuel(Some(fuel)).on_error(OnError::Abort);
    host.try_load(name, cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs every corpus line through the plugin's hooks; `false` when any call fails.
fn all_pass(p: &Plugin, lines: &[Line]) -> bool {
    lines.iter().all(|l| {
        let pre =
            !p.hooks().contains(&helios_plugin_schema::Hook::PreQuery) || p.call::<spec::PreQuery>(&l.ctx).is_ok();
        let route = !p.hooks().contains(&helios_plugin_schema::Hook::Route) || p.call::<spec::Route>(&l.ctx).is_ok();
        let env = PostQueryEnvelope {
            query_context: l.ctx.clone(),
            outcome: QueryOutcome { success: true, elapsed_us: 1_000, response_bytes: 100, ..Default::default() },
        };
        let post =
            !p.hooks().contains(&helios_plugin_schema::Hook::PostQuery) || p.call::<spec::PostQuery>(&env).is_ok();
        pre && route && post
    })
}

#[test]
fn every_plugin_runs_the_whole_corpus_on_a_fifth_of_the_default_fuel() {
    let lines = corpus();
    let mut report = Vec::new();
    for name in helios_plugin_e2e::PLUGINS {
        let host = Host::new(1_700_000_000);
        let (mut lo, mut hi) = (1_000u64, DEFAULT_FUEL);
        assert!(all_pass(&load(&host, name, hi), &lines), "{name} fails the corpus on the default fuel");
        while hi - lo > hi / 50 {
            let mid = lo + (hi - lo) / 2;
            if all_pass(&load(&host, name, mid), &lines) { hi = mid } else { lo = mid }
        }
        let p = load(&host, name, DEFAULT_FUEL);
        let start = Instant::now();
        assert!(all_pass(&p, &lines));
        let per_line = start.elapsed() / lines.len() as u32;
        report.push(format!("{name}: needs <= {hi} fuel per call, {per_line:?} per corpus line (all its hooks)"));
        assert!(hi <= DEFAULT_FUEL / 5, "{name} needs {hi} fuel per call on some corpus statement");
    }
    eprintln!("{}", report.join("\n"));
}
