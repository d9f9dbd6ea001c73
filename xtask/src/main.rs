//! `cargo xtask`: the project's end-to-end tasks. One module per task; few dependencies.
//!
//! * `build-examples` — builds every guest (examples/*, crates/host/tests/guests/*) for wasm32.
//! * `demo` — the main job: builds the guests, then runs the demo over the bundled corpus.
//! * `test` — everything: the tidy checks, builds the guests, then runs every test of the workspace.
//! * `tidy` — the repository checks alone (one spelling per name, the runtime's dependencies).
//! * `fuzz --minutes N` — every cargo-fuzz target for N minutes each, then the long load test.
//! * `bench-proxy` — pgbench -S through PostgreSQL, PgBouncer and helios-proxy (0, 1, 8 plugins).

mod bench;
mod bench_proxy;
mod build;
mod chart;
mod fuzz;
mod tidy;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let (task, rest) = args.split_first().map(|(t, r)| (t.as_str(), r)).unwrap_or(("help", &[]));
    match task {
        "build-examples" => build::build_guests(),
        "bench" => bench::run(rest),
        "bench-proxy" => bench_proxy::run(rest),
        "demo" => {
            build::build_guests()?;
            cargo(&["run", "--quiet", "-p", "helios-demo", "--"], rest)
        }
        "tidy" => tidy::run(),
        "test" => {
            tidy::run()?;
            build::build_guests()?;
            cargo(&["test", "--workspace", "--no-fail-fast"], rest)
        }
        "fuzz" => fuzz::run(rest),
        "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <build-examples | demo | test | tidy | bench | bench-proxy | fuzz --minutes N> [extra args passed to cargo]"
            );
            Ok(())
        }
        other => bail!("unknown task {other:?} (tasks: build-examples, demo, test, tidy, bench, bench-proxy, fuzz)"),
    }
}

/// Runs cargo with `args` then `extra`, from the workspace root, failing on a non-zero exit.
pub(crate) fn cargo(args: &[&str], extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .args(extra)
        .current_dir(build::root())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
