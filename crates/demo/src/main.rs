//! `cargo xtask demo`: the first-party plugins and the tool-denylist guard, signed with a throw-away
//! key, packed into artefacts, loaded through a `proxy.toml` and run over the bundled corpus.
//!
//! Prints every decision, then per-plugin counts and latency. `--notes` also prints what the corpus
//! author expected of each statement.

mod component;
mod corpus;
mod database;
mod gateway;
mod http;
mod reload;
mod report;
mod sign;

use std::{path::PathBuf, time::Instant};

use anyhow::{Context, Result};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(gateway::UPSTREAM_FLAG) {
        let (Some(id), Some(corpus)) = (args.get(2), args.get(3)) else {
            anyhow::bail!("usage: helios-demo {} SERVER_ID CORPUS.jsonl", gateway::UPSTREAM_FLAG);
        };
        return gateway::serve_upstream(id, std::path::Path::new(corpus));
    }
    let started = Instant::now();
    let notes = std::env::args().any(|a| a == "--notes");
    let corpus_dir = root().join("examples/corpus");
    let work = tempfile::Builder::new().prefix("helios-demo-").tempdir().context("creating a temporary directory")?;

    report::heading("1. Sign and pack the plugins with a throw-away key");
    let signed = sign::sign_examples(&corpus_dir.join("proxy.toml"), work.path())?;
    println!("  key      {}", signed.public_key_hex);
    println!("  trust    {}", signed.trust_dir.display());
    for a in &signed.artefacts {
        println!(
            "  packed   {:<18} {} ({} bytes, sha256 {}…)",
            a.name,
            a.path.display(),
            a.wasm_bytes,
            &a.sha256[..16]
        );
    }

    report::heading("2. Load them through proxy.toml (verify before compile)");
    let loaded = sign::load(&signed)?;
    report::plugins(&loaded.chain);

    report::heading("3. Tool calls from MCP agents through helios-mcp-gateway (chio.yaml, tool-denylist guard)");
    let corpus_calls = corpus_dir.join("tool_calls.jsonl");
    let tool_calls = corpus::tool_calls(&corpus_calls)?;
    gateway::tool_calls(work.path(), &corpus_calls, &tool_calls)?;

    report::heading("3b. Hot reload behind a 32-fixture canary (one candidate refused, one applied)");
    reload::run(&root(), work.path(), &tool_calls)?;
    report::heading("3c. The same guard as a component (chio:guard/guard@0.2.0), and a guard reading a content bundle");
    component::run(work.path(), &tool_calls)?;
    let mut stats = report::Stats::default();

    report::heading("4. SQL through pre_query → route → post_query (simulated outcomes, no database)");
    let statements = corpus::statements(&corpus_dir.join("sql.jsonl"))?;
    report::statements(&loaded, &statements, notes, &mut stats);

    report::heading("5. Per plugin");
    report::summary(&loaded.chain, &stats);
    report::audit(&loaded);

    report::heading(
        "6. HTTP requests through helios-http-proxy (Starlark scripts and a signed WASM plugin, one chain)",
    );
    http::requests(&root(), work.path())?;
    report::heading("7. helios-proxy in front of real PostgreSQL (throw-away clusters, a scripted psql session)");
    database::run_live(&signed, work.path())?;

    println!(
        "\ndone in {:.1} s; artefacts, trust root and proxy.toml were in {}",
        started.elapsed().as_secs_f64(),
        work.path().display()
    );
    Ok(())
}
