//! Per-statement cost of the host's analysis, in microseconds, as one JSON object on stdout:
//! `cargo run --release -p helios-plugin-facts --features pg --example cost [iterations]`.
//! Used by `cargo xtask bench-proxy` for its parse-cost rows.
//!
//! `new_literal_*`: the statement with a new literal every time (pgbench `-M simple`, drivers that
//! inline literals), all texts made before timing: `uncached` is a fresh extraction of each (what
//! a text-keyed cache pays on every one of them), `cache` goes through `FactsCache`, whose shape key
//! makes them hits; `shape_key` and `scan` are the parts of a shape hit (the key, the lexer).

use std::time::Instant;

use helios_plugin_facts::cache::{FactsCache, shape_key};
use helios_plugin_facts::pg;

/// (name, statement, the same with `{}` where a new literal goes).
const STATEMENTS: &[(&str, &str, &str)] = &[
    (
        "pgbench -S",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
        "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
    ),
    (
        "pgbench update",
        "UPDATE pgbench_accounts SET abalance = abalance + -4021 WHERE aid = 48213;",
        "UPDATE pgbench_accounts SET abalance = abalance + -4021 WHERE aid = {};",
    ),
    (
        "corpus join",
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.tenant_id = 'acme' ORDER BY o.created_at DESC LIMIT 20",
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.tenant_id = 'acme' ORDER BY o.created_at DESC LIMIT {}",
    ),
];

fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mut rows = Vec::new();
    for (name, sql, template) in STATEMENTS {
        let parse = per_call(n, || drop(std::hint::black_box(pg_query::parse(sql))));
        let fingerprint = per_call(n, || drop(std::hint::black_box(pg_query::fingerprint(sql))));
        let normalize = per_call(n, || drop(std::hint::black_box(pg_query::normalize(sql))));
        let extract = per_call(n, || drop(std::hint::black_box(pg::extract(sql))));
        let cache = FactsCache::new(16);
        cache.get(sql);
        let hit = per_call(n, || drop(std::hint::black_box(cache.get(sql))));
        // New literals: every text distinct, made before timing (`per_call` runs n + n/10 calls).
        let texts: Vec<String> = (0..n + n / 10 + 1).map(|i| template.replace("{}", &(1 + i).to_string())).collect();
        let mut next = texts.iter();
        let uncached = per_call(n, || drop(std::hint::black_box(pg::extract(next.next().map_or("", |s| s)))));
        let mut next = texts.iter();
        let shape_key = per_call(n, || drop(std::hint::black_box(shape_key(next.next().map_or("", |s| s)))));
        let scan = per_call(n, || drop(std::hint::black_box(pg_query::scan(sql))));
        let cache = FactsCache::new(4096);
        let mut next = texts.iter();
        let through_cache = per_call(n, || drop(std::hint::black_box(cache.get(next.next().map_or("", |s| s)))));
        rows.push(serde_json::json!({
            "statement": name, "sql": sql,
            "parse_us": parse, "fingerprint_us": fingerprint, "normalize_us": normalize,
            "facts_us": extract, "cache_hit_us": hit,
            "new_literal_uncached_us": uncached, "new_literal_cache_us": through_cache,
            "scan_us": scan, "shape_key_us": shape_key,
        }));
    }
    println!("{}", serde_json::json!({ "iterations": n, "rows": rows }));
}
