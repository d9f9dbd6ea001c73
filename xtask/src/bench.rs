//! `cargo xtask bench`: one benchmark run, every contender in turn.
//!
//! 1. builds the guests (as `build-examples` does);
//! 2. builds tool-denylist and llm-guardrail again with a 64 KiB guest stack
//!    (`-C link-arg=-zstack-size=65536`) into target/bench/stack64k, for the instantiation table;
//! 3. builds the Extism guests and runs benches/extism-compare (its own lockfile and target dir, so
//!    the workspace never compiles a second wasmtime), which writes target/bench/extism.json — a
//!    failure there is reported in the table, not fatal;
//! 4. runs helios-bench in release, which merges that JSON, prints the markdown report and writes
//!    target/bench/results.{md,json}.
//!
//! Extra arguments go to helios-bench (`--quick`, `--cycles N`).

use std::{path::Path, process::Command};

use anyhow::{Context, Result};

use crate::build::{GUEST_PROFILE, GUEST_TARGET, root};

const EXTISM_MANIFEST: &str = "benches/extism-compare/Cargo.toml";

pub fn run(extra: &[String]) -> Result<()> {
    crate::build::build_guests()?;
    let root = root();
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    let stack_target = out.join("stack64k");
    let stack_dir = stack_target.join(GUEST_TARGET).join(GUEST_PROFILE);
    let stack_ok = run_cargo(
        &root,
        &[
            "build",
            "--target",
            GUEST_TARGET,
            "--profile",
            GUEST_PROFILE,
            "-p",
            "tool-denylist",
            "-p",
            "llm-guardrail",
            "--target-dir",
            &stack_target.display().to_string(),
        ],
        &[("RUSTFLAGS", "-C link-arg=-zstack-size=65536")],
    );
    if let Err(e) = &stack_ok {
        eprintln!("xtask: the 64 KiB-stack guest variant did not build ({e:#}); its row is left out");
    }

    let extism_json = out.join("extism.json");
    let _ = std::fs::remove_file(&extism_json);
    if let Err(e) = extism(&root, &extism_json) {
        eprintln!("xtask: Extism comparison failed: {e:#}");
        let msg = serde_escape(&format!("Extism failed to build or run here: {e:#}"));
        std::fs::write(&extism_json, format!("{{\"error\": \"{msg}\"}}")).context("writing extism.json")?;
    }

    let mut args = vec![
        "run".to_owned(),
        "--release".into(),
        "-p".into(),
        "helios-plugin-bench".into(),
        "--".into(),
        "--extism".into(),
        extism_json.display().to_string(),
    ];
    if stack_ok.is_ok() {
        args.push("--stack-dir".into());
        args.push(stack_dir.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::cargo(&args, extra)
}

fn extism(root: &Path, out: &Path) -> Result<()> {
    let manifest = root.join(EXTISM_MANIFEST);
    let manifest = manifest.display().to_string();
    run_cargo(
        root,
        &[
            "build",
            "--manifest-path",
            &manifest,
            "--target",
            GUEST_TARGET,
            "--profile",
            GUEST_PROFILE,
            "-p",
            "extism-guest-tool-denylist",
            "-p",
            "extism-guest-llm-guardrail",
        ],
        &[],
    )?;
    let guests = root.join("benches/extism-compare/target").join(GUEST_TARGET).join(GUEST_PROFILE);
    run_cargo(
        root,
        &[
            "run",
            "--release",
            "--manifest-path",
            &manifest,
            "-p",
            "extism-compare",
            "--",
            &root.join("crates/bench/workloads.json").display().to_string(),
            &guests.display().to_string(),
            &out.display().to_string(),
        ],
        &[],
    )
}

fn run_cargo(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    anyhow::ensure!(status.success(), "`cargo {}` failed ({status})", args.join(" "));
    Ok(())
}

/// Escapes a message for a JSON string literal (xtask has no JSON dependency).
fn serde_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            '\n' => vec!['\\', 'n'],
            c if (c as u32) < 0x20 => vec![' '],
            c => vec![c],
        })
        .collect()
}
