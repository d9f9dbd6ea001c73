//! `cargo xtask fuzz --minutes N [--target NAME] [--no-load]`: the long runs that stay out of CI.
//!
//! 1. Installs `cargo-fuzz` from crates.io if it is missing.
//! 2. Runs every target of `fuzz/` (manifest, config, unpack, abi) for N minutes each with
//!    libFuzzer. The committed seeds in `fuzz/corpus/<target>/` are read but never written: new
//!    inputs go to `target/fuzz-corpus/<target>/`, crashes to `fuzz/artifacts/<target>/`.
//! 3. Runs the load test with `HELIOS_LONG=1` (2 threads x 1,000,000 chain calls).
//!
//! Only a stable toolchain exists here: cargo-fuzz needs nightly flags (`-Zsanitizer`,
//! `-Cpasses=sancov-module`), so the runs set `RUSTC_BOOTSTRAP=1`. The targets run without a
//! sanitizer (`--sanitizer none`): the code under test is safe Rust plus wasmtime, whose pooling
//! allocator reserves more address space than AddressSanitizer tolerates; libFuzzer's coverage
//! guidance and the targets' own assertions remain.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::build::root;

/// Every target of `fuzz/Cargo.toml`.
pub const TARGETS: &[&str] = &["manifest", "config", "unpack", "abi"];

pub fn run(args: &[String]) -> Result<()> {
    let mut minutes: u64 = 1;
    let mut only: Option<String> = None;
    let mut load = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => {
                let v = it.next().context("--minutes needs a number")?;
                minutes = v.parse().with_context(|| format!("--minutes: expected a whole number, found {v:?}"))?;
            }
            "--target" => only = Some(it.next().context("--target needs a name")?.clone()),
            "--no-load" => load = false,
            other => bail!(
                "fuzz: unknown argument {other:?} (usage: cargo xtask fuzz --minutes N [--target NAME] [--no-load])"
            ),
        }
    }
    if minutes == 0 {
        bail!("--minutes: expected at least 1");
    }
    let targets: Vec<&str> = match &only {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!("fuzz: unknown target {t:?} (targets: {})", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    ensure_cargo_fuzz()?;
    let root = root();
    let mut summary = Vec::new();
    for t in &targets {
        let work = root.join("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
        let seeds = root.join("fuzz/corpus").join(t);
        eprintln!("xtask: fuzzing {t} for {minutes} min (seeds {}, new inputs {})", seeds.display(), work.display());
        let status = Command::new(cargo())
            .current_dir(&root)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "--sanitizer", "none", t])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", minutes * 60))
            .args(["-rss_limit_mb=4096", "-timeout=30", "-print_final_stats=1"])
            .status()
            .context("cannot run cargo fuzz")?;
        let crashes = count_files(&root.join("fuzz/artifacts").join(t));
        let line = format!(
            "{t}: {minutes} min, {status}, {} inputs in the working corpus, {crashes} files in fuzz/artifacts/{t}",
            count_files(&work)
        );
        summary.push((line, status.success() && crashes == 0));
    }
    if load {
        eprintln!("xtask: load test, 2 threads x 1,000,000 chain calls");
        let status = Command::new(cargo())
            .current_dir(&root)
            .env("HELIOS_LONG", "1")
            .args(["test", "-p", "helios-plugin-fuzz-smoke", "--test", "all", "--", "load::", "--nocapture"])
            .status()
            .context("cannot run the load test")?;
        summary.push((format!("load: {status}"), status.success()));
    }
    let lines: Vec<&str> = summary.iter().map(|(l, _)| l.as_str()).collect();
    eprintln!("xtask: fuzz summary\n  {}", lines.join("\n  "));
    if summary.iter().any(|(_, ok)| !ok) {
        bail!("a fuzz target or the load test failed; see fuzz/artifacts/ and the output above");
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().filter(|e| e.path().is_file()).count()).unwrap_or(0)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let found = Command::new(cargo()).args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if found {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz from crates.io");
    let status = Command::new(cargo())
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("`cargo install cargo-fuzz --locked` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_fuzz_target_has_a_harness_and_a_seed_corpus() {
        let root = crate::build::root();
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
        for t in super::TARGETS {
            assert!(manifest.contains(&format!("name = \"{t}\"")), "fuzz/Cargo.toml has no [[bin]] {t}");
            assert!(root.join(format!("fuzz/fuzz_targets/{t}.rs")).is_file(), "no harness for {t}");
            assert!(super::count_files(&root.join("fuzz/corpus").join(t)) > 0, "no seeds for {t}");
        }
    }
}
