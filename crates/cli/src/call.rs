//! `helios-plugin call`: run one hook or guard of a module on a JSON input and print the result.
//!
//! Exit codes: 0 allow / continue (and rewrite, route decisions, other hooks), 1 deny / block,
//! 2 the module could not be loaded or the call failed (the cause goes to stderr).

use std::{io::Read, path::PathBuf};

use anyhow::{Context, Result, bail};
use helios_plugin_host::{PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{Hook, PreQueryResult, RouteResult};

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
    let rt = Runtime::new(RuntimeConfig::default())?;
    let plugin = rt.load_file(&args.wasm, cfg)?;
    if args.guard {
        let v = plugin.evaluate_json(&input)?;
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
