//! `helios-plugin test <module|artefact> <fixtures...>`: run fixture files against a plugin and
//! print pass/fail per fixture with a diff; exit 1 on any failure.
//!
//! Two fixture formats:
//! * chio's canary fixtures, for guards: `{"request": GuardRequest, "expected_verdict_bytes":
//!   "{\"decision\":\"allow\"}"}`, compared byte for byte with the verdict the runtime enforces;
//! * hook fixtures: `{"hook": "pre_query", "input": {...}, "expected": {...}}`, compared as JSON
//!   values with the hook's result.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use helios_plugin_host::{PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::GuardRequest;

/// Arguments of `test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The module (`.wasm`, `.wat`) or artefact (`.tar.gz`, read without verifying it).
    pub plugin: PathBuf,
    /// Fixture files (JSON).
    #[arg(required = true)]
    pub fixtures: Vec<PathBuf>,
    /// A config value the plugin reads with `get_config` (repeatable); an artefact's own config
    /// applies first.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Canary {
    request: GuardRequest,
    expected_verdict_bytes: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HookFixture {
    hook: String,
    input: serde_json::Value,
    expected: serde_json::Value,
}

enum Outcome {
    Pass,
    Fail { expected: String, actual: String },
}

pub fn run(args: TestArgs) -> Result<i32> {
    let (wasm, mut cfg) = load(&args.plugin)?;
    for kv in &args.config {
        let Some((k, v)) = kv.split_once('=') else { bail!("--config {kv:?}: expected KEY=VALUE") };
        cfg = cfg.config(k, v);
    }
    let rt = Runtime::new(RuntimeConfig::default())?;
    let plugin = rt.load(&wasm, cfg).with_context(|| format!("loading {}", args.plugin.display()))?;
    let (mut passed, mut failed) = (0, 0);
    for f in &args.fixtures {
        let shown = f.display();
        match run_one(&plugin, f) {
            Ok(Outcome::Pass) => {
                passed += 1;
                println!("PASS {shown}");
            }
            Ok(Outcome::Fail { expected, actual }) => {
                failed += 1;
                println!("FAIL {shown}");
                println!("  - expected {expected}");
                println!("  + actual   {actual}");
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {shown}");
                println!("  ! {e:#}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { 0 } else { 1 })
}

fn load(path: &Path) -> Result<(Vec<u8>, PluginConfig)> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into());
    let stem = stem.strip_suffix(".tar").unwrap_or(&stem).to_string();
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let a = helios_plugin_artefact::unpack(bytes.as_slice(), &path.display().to_string(), &Default::default())?;
        let m = helios_plugin_artefact::manifests::parse_artefact_manifest(&a.manifest, "manifest.json")?;
        let mut cfg = PluginConfig::new(m.name.clone());
        for (k, v) in &m.config {
            cfg = cfg.config(k, v);
        }
        return Ok((a.wasm, cfg));
    }
    Ok((bytes, PluginConfig::new(stem)))
}

fn run_one(plugin: &helios_plugin_host::Plugin, path: &Path) -> Result<Outcome> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).with_context(|| "not JSON".to_string())?;
    if value.get("expected_verdict_bytes").is_some() {
        let c: Canary = serde_json::from_value(value).context("not a chio canary fixture")?;
        let actual = serde_json::to_string(&plugin.evaluate(&c.request))?;
        return Ok(if actual == c.expected_verdict_bytes {
            Outcome::Pass
        } else {
            Outcome::Fail { expected: c.expected_verdict_bytes, actual }
        });
    }
    let h: HookFixture = serde_json::from_value(value).context(
        "expected a hook fixture {hook, input, expected} or a chio canary {request, expected_verdict_bytes}",
    )?;
    let hook = helios_plugin_schema::manifest::hook_names::lookup(&h.hook).map_err(anyhow::Error::msg)?;
    let out = plugin.call_json(hook, &serde_json::to_vec(&h.input)?)?;
    let actual: serde_json::Value =
        serde_json::from_slice(&out).with_context(|| format!("{} returned no JSON", h.hook))?;
    Ok(if same_result(hook, &actual, &h.expected) {
        Outcome::Pass
    } else {
        Outcome::Fail { expected: h.expected.to_string(), actual: actual.to_string() }
    })
}

/// A `pre_query`/`rewrite` result compares by its meaning: a fixture written in either wire form
/// (`kind` or heliosdb-proxy 2.2.0's `action`; the SDK writes both in one object) matches the same
/// decision. Every other hook's result compares as JSON.
fn same_result(hook: helios_plugin_schema::Hook, actual: &serde_json::Value, expected: &serde_json::Value) -> bool {
    use helios_plugin_schema::{Hook, PreQueryResult};
    if matches!(hook, Hook::PreQuery | Hook::Rewrite) {
        let parse = |v: &serde_json::Value| serde_json::from_value::<PreQueryResult>(v.clone());
        if let (Ok(a), Ok(e)) = (parse(actual), parse(expected)) {
            return a == e;
        }
    }
    actual == expected
}
