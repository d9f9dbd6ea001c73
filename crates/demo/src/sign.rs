//! Signing the examples with a throw-away key and loading them back through `proxy.toml`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result, bail};
use helios_plugin_artefact::{PackOptions, PackSigning, keys, pack, save_artefact};
use helios_plugin_host::{Chain, ManualClock, MemoryLogSink, Runtime, RuntimeConfig};

/// The guard the demo adds to the proxy's plugins: chio's worked example.
pub const GUARD_NAME: &str = "tool-denylist";
pub const GUARD_DENYLIST: &str = "rm,curl,shell_exec,drop_table,sudo,wget";
/// The demo's clock starts here (2026-01-05 09:00:00 UTC, a Monday) and moves one second per statement.
pub const DEMO_EPOCH: i64 = 1_767_603_600;

#[derive(Debug)]
pub struct ArtefactInfo {
    pub name: String,
    pub path: PathBuf,
    pub wasm_bytes: usize,
    pub sha256: String,
}

#[derive(Debug)]
pub struct Signed {
    pub public_key_hex: String,
    pub trust_dir: PathBuf,
    pub proxy_toml: PathBuf,
    pub artefacts: Vec<ArtefactInfo>,
}

pub struct Loaded {
    pub runtime: Runtime,
    pub chain: Chain,
    pub logs: Arc<MemoryLogSink>,
    pub clock: Arc<ManualClock>,
}

fn str_field<'a>(t: &'a toml::Table, key: &str, what: &str) -> Result<&'a str> {
    t.get(key).and_then(|v| v.as_str()).with_context(|| format!("{what}: field {key} is missing or not a string"))
}

/// Packs and signs every plugin of the corpus `proxy.toml` (plus the tool-denylist guard), writes a
/// trust root holding the public key and a `proxy.toml` whose sources are the signed artefacts.
pub fn sign_examples(corpus_toml: &Path, work: &Path) -> Result<Signed> {
    // Sources are relative to the config file, as the host reads them.
    let base = corpus_toml.parent().unwrap_or(Path::new("."));
    let key = keys::generate_signing_key()?;
    let public = key.verifying_key();
    let trust_dir = work.join("trust");
    let artefact_dir = work.join("artefacts");
    std::fs::create_dir_all(&trust_dir)?;
    std::fs::create_dir_all(&artefact_dir)?;
    std::fs::write(trust_dir.join("demo.pub"), keys::public_key_base64(&public))?;

    let text = std::fs::read_to_string(corpus_toml).with_context(|| format!("reading {}", corpus_toml.display()))?;
    let mut doc: toml::Table = text.parse().with_context(|| format!("parsing {}", corpus_toml.display()))?;
    let Some(toml::Value::Array(plugins)) = doc.get_mut("plugins") else {
        bail!("{}: no [[plugins]]", corpus_toml.display());
    };
    let mut guard = toml::Table::new();
    guard.insert("name".into(), GUARD_NAME.into());
    guard.insert("source".into(), helios_plugin_test_support::guest_path("tool-denylist").display().to_string().into());
    guard.insert("priority".into(), 1.into());
    let mut cfg = toml::Table::new();
    cfg.insert("denylist".into(), GUARD_DENYLIST.into());
    guard.insert("config".into(), cfg.into());
    plugins.push(guard.into());

    let mut artefacts = Vec::new();
    for entry in plugins.iter_mut() {
        let t = entry.as_table_mut().context("a [[plugins]] entry is not a table")?;
        let name = str_field(t, "name", "[[plugins]]")?.to_owned();
        let source = base.join(str_field(t, "source", &name)?);
        let wasm = std::fs::read(&source).with_context(|| {
            format!("plugin {name}: reading {} (run `cargo xtask build-examples`)", source.display())
        })?;
        let hooks = match t.get("hooks").and_then(|h| h.as_array()) {
            Some(list) => Some(
                list.iter()
                    .map(|h| h.as_str().unwrap_or_default().parse())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!("plugin {name}: {e}"))?,
            ),
            None => None,
        };
        let mut opts = PackOptions::new(&name, "1.0.0");
        opts.description = format!("{name}, packed by cargo xtask demo");
        opts.license = "Apache-2.0".into();
        opts.hooks = hooks;
        opts.signing = PackSigning::Key(Box::new(key.clone()));
        let packed = pack(wasm, opts)?;
        let path = artefact_dir.join(format!("{name}-1.0.0.tar.gz"));
        save_artefact(&packed.artefact, &path)?;
        artefacts.push(ArtefactInfo {
            name: name.clone(),
            path: path.clone(),
            wasm_bytes: packed.artefact.wasm.len(),
            sha256: packed.manifest.wasm_sha256.clone(),
        });
        t.insert("source".into(), path.display().to_string().into());
        t.insert("verify_with".into(), trust_dir.display().to_string().into());
    }
    let proxy_toml = work.join("proxy.toml");
    std::fs::write(&proxy_toml, toml::to_string(&doc)?)?;
    Ok(Signed { public_key_hex: keys::public_key_hex(&public), trust_dir, proxy_toml, artefacts })
}

/// Builds the chain from the written `proxy.toml`: every plugin is verified against the trust root
/// before it is compiled.
pub fn load(signed: &Signed) -> Result<Loaded> {
    let logs = MemoryLogSink::new();
    let clock = ManualClock::new(DEMO_EPOCH);
    let runtime = Runtime::new(RuntimeConfig::default().log_sink(logs.clone()).clock(clock.clone()))?;
    let chain = helios_plugin_loader::load_chain(&signed.proxy_toml, &runtime)?;
    Ok(Loaded { runtime, chain, logs, clock })
}
