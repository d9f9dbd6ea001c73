//! `helios-plugin call`: run one hook or guard of a module on a JSON input and print the result.
//!
//! Exit codes: 0 allow / continue (and rewrite, route decisions, other hooks), 1 deny / block,
//! 2 the module could not be loaded or a hook call failed (the cause goes to stderr).
//!
//! A guard (`--guard`) gets the verdict the runtime enforces: a guard that traps, runs out of fuel
//! or memory, or answers outside the ABI is a `deny` naming the cause (exit 1), fail-closed as in
//! a chain; with `--advisory` it is an `allow` with a warning (exit 0).

use std::{io::Read, path::PathBuf};

use anyhow::{Context, Result, bail};
use helios_plugin_host::{PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{GuardRequest, Hook, PreQueryResult, RouteResult};

/// Arguments of `call`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The module (.wasm, or .wat text).
    pub wasm: PathBuf,
    /// The hook to call (`pre_query`, `route`, `post_query`, …).
    #[arg(long, conflicts_with = "guard", required_unless_present = "guard")]
    pub hook: Option<Hook>,
    /// Call chio's guard export `evaluate` instead of a hook.
    #[arg(long)]
    pub guard: bool,
    /// With --guard: the guard is advisory (a failing guard allows, with a warning), as `advisory`
    /// in a chain's configuration.
    #[arg(long, requires = "guard")]
    pub advisory: bool,
    /// Linear memory cap in bytes. Default: the schema default (16 MiB).
    #[arg(long)]
    pub memory: Option<u64>,
    /// The JSON input file (`-` for standard input).
    #[arg(long)]
    pub input: PathBuf,
    /// A config value the plugin reads with `get_config` (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// The plugin's name (its KV namespace and the name in messages). Default: the file stem.
    #[arg(long)]
    pub name: Option<String>,
    /// Fuel per call. Default: the schema default (10,000,000).
    #[arg(long)]
    pub fuel: Option<u64>,
}

/// Runs `call`; returns the process exit code.
pub fn run(args: CallArgs) -> Result<i32> {
    match call(&args) {
        Ok((json, code)) => {
            println!("{json}");
            Ok(code)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(2)
        }
    }
}

fn call(args: &CallArgs) -> Result<(String, i32)> {
    let input = if args.input.as_os_str() == "-" {
        let mut s = Vec::new();
        std::io::stdin().read_to_end(&mut s).context("reading standard input")?;
        s
    } else {
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?
    };
    serde_json::from_slice::<serde_json::Value>(&input)
        .with_context(|| format!("{} is not JSON", args.input.display()))?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.wasm.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into())
    });
    let mut cfg = PluginConfig::new(name);
    for kv in &args.config {
        let Some((k, v)) = kv.split_once('=') else { bail!("--config {kv:?}: expected KEY=VALUE") };
        cfg = cfg.config(k, v);
    }
    if let Some(f) = args.fuel {
        cfg = cfg.fuel(Some(f));
    }
    if let Some(m) = args.memory {
        cfg = cfg.max_memory_bytes(m);
    }
    cfg = cfg.advisory(args.advisory);
    let rt = Runtime::new(RuntimeConfig::default())?;
    let plugin = rt.load_file(&args.wasm, cfg)?;
    if args.guard {
        let request: GuardRequest = serde_json::from_slice(&input)
            .with_context(|| format!("{} is not a chio GuardRequest", args.input.display()))?;
        // The verdict the runtime enforces: `Plugin::evaluate` maps every failure to a deny naming
        // its cause (or, advisory, to an allow it logs as a warning).
        let v = plugin.evaluate(&request);
        let code = if v.is_allow() { 0 } else { 1 };
        return Ok((serde_json::to_string(&v)?, code));
    }
    let hook = args.hook.context("--hook or --guard is required")?;
    let out = plugin.call_json(hook, &input)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = match hook {
        Hook::PreQuery | Hook::Rewrite => match serde_json::from_slice::<PreQueryResult>(&out) {
            Ok(PreQueryResult::Block { .. }) => 1,
            Ok(_) => 0,
            Err(e) => bail!("{hook} returned JSON that is not a PreQueryResult: {e}"),
        },
        Hook::Route => match serde_json::from_slice::<RouteResult>(&out) {
            Ok(RouteResult::Block { .. }) => 1,
            Ok(_) => 0,
            Err(e) => bail!("route returned JSON that is not a RouteResult: {e}"),
        },
        _ => 0,
    };
    Ok((text, code))
}
