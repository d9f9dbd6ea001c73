//! Running the corpus and printing what happened.

use std::{collections::BTreeMap, time::Duration};

use helios_plugin_host::{Chain, Level, Plugin};
use helios_plugin_schema::{HookContext, PostQueryEnvelope, PreQueryResult, QueryContext, QueryOutcome, RouteResult};

use crate::{corpus::Statement, sign::Loaded};

pub fn heading(s: &str) {
    println!("\n== {s}");
}

pub fn clip(s: &str, n: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut c: String = one_line.chars().take(n - 1).collect();
        c.push('…');
        c
    }
}

pub fn plugins(chain: &Chain) {
    println!("  {:<18} {:>4} {:<8} {:<28} {:>8} sha256", "plugin", "prio", "on_error", "serves", "bytes");
    for p in chain.plugins() {
        let mut serves: Vec<&str> = p.hooks().iter().map(|h| h.export_name()).collect();
        if p.is_guard() {
            serves.push("guard (evaluate)");
        }
        let (size, sha256) = p.module_info().map(|i| (i.size, &i.sha256[..16])).unwrap_or((0, "-"));
        println!(
            "  {:<18} {:>4} {:<8} {:<28} {:>8} {}…",
            p.name(),
            p.priority(),
            format!("{:?}", p.on_error()).to_lowercase(),
            serves.join(","),
            size,
            sha256
        );
    }
}

/// Per-plugin decisions and call times.
#[derive(Debug, Default)]
pub struct Stats {
    per: BTreeMap<String, PluginStats>,
}

#[derive(Debug, Default)]
struct PluginStats {
    decisions: BTreeMap<&'static str, u64>,
    times: Vec<Duration>,
}

impl Stats {
    fn record(&mut self, plugin: &Plugin, took: Duration, decision: &'static str) {
        let s = self.per.entry(plugin.name().to_owned()).or_default();
        *s.decisions.entry(decision).or_default() += 1;
        s.times.push(took);
    }
}

fn pre_label(r: &Result<PreQueryResult, helios_plugin_host::PluginError>) -> &'static str {
    match r {
        Ok(PreQueryResult::Continue) => "continue",
        Ok(PreQueryResult::Rewrite { .. }) => "rewrite",
        Ok(PreQueryResult::Block { .. }) => "block",
        Ok(PreQueryResult::Cached { .. }) => "cached",
        Err(_) => "error",
    }
}

fn route_label(r: &Result<RouteResult, helios_plugin_host::PluginError>) -> &'static str {
    match r {
        Ok(RouteResult::Default) => "route:default",
        Ok(RouteResult::Block { .. }) => "route:block",
        Ok(_) => "route:node",
        Err(_) => "error",
    }
}

fn context(i: usize, st: &Statement) -> QueryContext {
    // Like helios-proxy: the host analyses the statement once with PostgreSQL's parser.
    let facts = helios_plugin_facts::pg::extract(&st.sql);
    QueryContext {
        query: st.sql.clone(),
        normalized: facts.normalized.clone(),
        tables: facts.tables(),
        is_read_only: facts.is_read_only,
        facts: Some(facts),
        hook_context: HookContext {
            request_id: format!("demo-{:04}", i + 1),
            client_id: Some("127.0.0.1:50000".into()),
            identity: st.identity.clone(),
            database: st.database.clone(),
            branch: None,
            attributes: st.attributes.clone(),
            sql: String::new(),
        },
    }
}

pub fn statements(loaded: &Loaded, statements: &[Statement], notes: bool, stats: &mut Stats) {
    let chain = &loaded.chain;
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    println!("  {:>3} {:<12} {:<58} decision", "#", "identity", "sql");
    for (i, st) in statements.iter().enumerate() {
        loaded.clock.advance(1);
        let ctx = context(i, st);
        let pre = chain.pre_query_observed(&ctx, &mut |p, took, r| stats.record(p, took, pre_label(r)));
        let who = |d: &Option<std::sync::Arc<str>>| d.as_deref().unwrap_or("?").to_owned();
        let (label, shown) = match &pre.result {
            PreQueryResult::Block { reason } => {
                ("blocked", format!("BLOCK by {}: {}", who(&pre.decided_by), clip(reason, 70)))
            }
            PreQueryResult::Cached { bytes } => {
                ("cached", format!("CACHED by {} ({} bytes)", who(&pre.decided_by), bytes.len()))
            }
            _ => {
                let mut run = ctx.clone();
                run.query = pre.query(&ctx).to_owned();
                let route = chain.route_observed(&run, &mut |p, took, r| stats.record(p, took, route_label(r)));
                match &route.result {
                    RouteResult::Block { reason } => {
                        ("blocked", format!("BLOCK by {} (route): {}", who(&route.decided_by), clip(reason, 60)))
                    }
                    r => {
                        // No database in this part of the demo: a deterministic, plausible outcome.
                        let outcome = QueryOutcome {
                            success: true,
                            target_node: Some(match r {
                                RouteResult::Node { target } | RouteResult::Branch { target } => target.clone(),
                                RouteResult::Standby => "standby".into(),
                                _ => "primary".into(),
                            }),
                            elapsed_us: 300 + (run.query.len() as u64 * 37) % 4_000,
                            response_bytes: 256 + ((i as u64) * 97) % 8_192,
                            rows: Some(1 + (i as u64 * 13) % 50),
                            error: None,
                        };
                        let node = outcome.target_node.clone().unwrap_or_default();
                        chain.post_query_observed(
                            &PostQueryEnvelope { query_context: run.clone(), outcome },
                            &mut |p, took, r| stats.record(p, took, if r.is_ok() { "observed" } else { "error" }),
                        );
                        let mut s = format!("ok → {node}");
                        if !pre.rewritten_by.is_empty() {
                            s.push_str(&format!("  REWRITTEN: {}", clip(&run.query, 70)));
                            ("rewritten", s)
                        } else if matches!(r, RouteResult::Default) {
                            ("ran", s)
                        } else {
                            ("routed", s)
                        }
                    }
                }
            }
        };
        *totals.entry(label).or_default() += 1;
        println!(
            "  {:>3} {:<12} {:<58} {}",
            i + 1,
            clip(st.identity.as_deref().unwrap_or("-"), 12),
            clip(&st.sql, 58),
            shown
        );
        if notes && !st.note.is_empty() {
            println!("      expected: {}", st.note);
        }
    }
    let t: Vec<String> = totals.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("  → {} statements: {}", statements.len(), t.join(", "));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn summary(chain: &Chain, stats: &Stats) {
    println!("  {:<18} {:>6} {:>9} {:>9} {:>9}  decisions", "plugin", "calls", "p50 µs", "p99 µs", "max µs");
    for p in chain.plugins() {
        let Some(s) = stats.per.get(p.name()) else { continue };
        let mut t = s.times.clone();
        t.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let decisions: Vec<String> = s.decisions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "  {:<18} {:>6} {:>9.1} {:>9.1} {:>9.1}  {}",
            p.name(),
            t.len(),
            us(percentile(&t, 0.5)),
            us(percentile(&t, 0.99)),
            us(*t.last().unwrap_or(&Duration::ZERO)),
            decisions.join(", ")
        );
    }
    println!(
        "  (times include JSON both ways and the instance checkout; the first call of each plugin creates its instance)"
    );
}

/// The audit trail the audit-chain plugin logged.
pub fn audit(loaded: &Loaded) {
    let records: Vec<String> = loaded
        .logs
        .lines()
        .into_iter()
        .filter(|(p, l, m)| p == "audit-chain" && *l == Level::Info && m.starts_with(audit_chain::chain::LOG_PREFIX))
        .map(|(_, _, m)| m[audit_chain::chain::LOG_PREFIX.len()..].to_owned())
        .collect();
    heading("6. Audit chain");
    println!("  {} records logged by audit-chain (one per statement that ran)", records.len());
    if let Some(last) = records.last() {
        println!("  last record: {}", clip(last, 150));
    }
    let ndjson = records.join("\n");
    match audit_chain::verify::verify_chain(&ndjson) {
        Ok(n) => println!("  verify_chain: {n} records, every link intact (what `helios-plugin audit verify` checks)"),
        Err(e) => println!("  verify_chain: {e}"),
    }
    // Tamper with one record and show that the verifier names it.
    if records.len() > 3 {
        let mut edited = records.clone();
        edited[2] = edited[2].replacen("\"query\":\"", "\"query\":\"/* edited */ ", 1);
        if edited[2] != records[2] {
            match audit_chain::verify::verify_chain(&edited.join("\n")) {
                Ok(_) => println!("  tampered copy: NOT detected"),
                Err(e) => println!("  tampered copy (record 3 edited): {e}"),
            }
        }
    }
    for (k, v) in loaded.runtime.kv().entries("audit-chain") {
        println!("  KV tail {} = {}", String::from_utf8_lossy(&k), clip(&String::from_utf8_lossy(&v), 120));
    }
}
