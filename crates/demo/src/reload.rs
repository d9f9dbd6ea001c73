//! Step 3b of the demo: hot reload with a canary (chio's contract, `helios_plugin_host::HotPlugin`).
//!
//! The live guard is examples/wat-guard (denying `"rm -rf"`); its verdicts on 32 calls of the
//! tool-call corpus are recorded as the canary corpus (`MANIFEST.sha256` + 32 fixtures). Two
//! candidates come through the bundle store: a "simplified" guard that allows everything (the
//! canary catches it; the live guard keeps serving; an incident directory is written) and the same
//! guard rebuilt with a build-id section (same verdicts, new digest: applied).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use helios_plugin_host::schema::GuardRequest;
use helios_plugin_host::{
    BundleStore, CanaryCorpus, DirBundleStore, HotPlugin, HotReloadError, OpenGate, PluginConfig, ReloadOutcome,
    Runtime, RuntimeConfig,
};

/// A module with a custom section appended: the same code under a new digest.
fn with_build_id(mut wasm: Vec<u8>, id: &str) -> Vec<u8> {
    let name = b"build-id";
    let payload = 1 + name.len() + id.len();
    wasm.push(0);
    wasm.push(payload as u8);
    wasm.push(name.len() as u8);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(id.as_bytes());
    wasm
}

pub fn run(root: &Path, work: &Path, calls: &[GuardRequest]) -> Result<()> {
    let v1 = wat::parse_file(root.join("examples/wat-guard/guard.wat")).context("examples/wat-guard/guard.wat")?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let config = PluginConfig::new("wat-guard").config("deny_substring", "rm -rf");

    // Record the live guard's verdicts on 32 real calls: the canary corpus.
    let recorder = runtime.load(&v1, config.clone())?;
    let canary = work.join("canary");
    std::fs::create_dir_all(&canary)?;
    let mut manifest = String::new();
    let (mut allows, mut denies) = (0, 0);
    // The first 24 calls and the last 8 (where the corpus's destructive commands are).
    let n = helios_plugin_host::CANARY_FIXTURE_COUNT;
    let picked: Vec<&GuardRequest> = if calls.len() >= n {
        calls[..n - 8].iter().chain(&calls[calls.len() - 8..]).collect()
    } else {
        calls.iter().cycle().take(n).collect()
    };
    for (i, call) in picked.into_iter().enumerate() {
        let verdict = recorder.evaluate(call);
        if verdict.is_allow() {
            allows += 1
        } else {
            denies += 1
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "request": call,
            "expected_verdict_bytes": serde_json::to_string(&verdict)?,
        }))?;
        let file = format!("{i:02}.json");
        std::fs::write(canary.join(&file), &body)?;
        manifest.push_str(&format!("{}  {file}\n", helios_plugin_artefact::signing::sha256_hex(&body)));
    }
    std::fs::write(canary.join("MANIFEST.sha256"), manifest)?;
    drop(recorder);
    println!(
        "  canary   32 fixtures recorded from the live guard ({allows} allow, {denies} deny) in {}",
        canary.display()
    );

    let store = Arc::new(DirBundleStore::new(work.join("bundles")));
    let live = store.put(&v1)?;
    let corpus = CanaryCorpus::load(&canary)?;
    let hot = HotPlugin::new(runtime, config, store.clone(), Arc::new(OpenGate), corpus, work.join("incidents"), live)?;
    println!("  live     wat-guard {live}");

    let allow_all = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "evaluate") (param i32 i32) (result i32) (i32.const 0)))"#,
    )?;
    let regression = store.put(&allow_all)?;
    match hot.reload(&regression) {
        Err(HotReloadError::CanaryFailed(f)) => {
            println!("  reload   {regression}: RELOAD_CANARY_FAILED on {}", f.fixture);
            println!("           expected {}", f.expected);
            println!("           got      {}", f.actual);
            println!("           incident {} (incident.json, last_5_eval_traces.ndjson)", f.incident);
        }
        other => anyhow::bail!("the allow-all candidate should fail the canary, got {other:?}"),
    }
    println!("  serving  {} (unchanged)", hot.live_id());

    let rebuilt = store.put(&with_build_id(v1, "demo-2"))?;
    match hot.reload(&rebuilt)? {
        ReloadOutcome::Applied { from, to, epoch } => {
            println!("  reload   {to}: RELOAD_APPLIED (epoch {epoch}, replaced {from})")
        }
        other => anyhow::bail!("the rebuilt guard should be applied, got {other:?}"),
    }
    let rm = GuardRequest {
        tool_name: "run_command".into(),
        arguments: serde_json::json!({"command": "rm -rf /"}),
        ..Default::default()
    };
    let answered = hot.evaluate(&rm);
    println!("  serving  {} → run_command \"rm -rf /\": {}", answered.id, serde_json::to_string(&answered.result)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The demo's reload step on the bundled corpus: one candidate refused by the canary (with an
    /// incident directory), one applied.
    #[test]
    fn the_demo_shows_one_canary_failed_and_one_applied_reload() {
        let root = crate::root();
        let calls = crate::corpus::tool_calls(&root.join("examples/corpus/tool_calls.jsonl")).unwrap();
        let work = tempfile::tempdir().unwrap();
        super::run(&root, work.path(), &calls).unwrap();
        let incidents: Vec<_> = std::fs::read_dir(work.path().join("incidents")).unwrap().collect();
        assert_eq!(incidents.len(), 1);
        let dir = incidents[0].as_ref().unwrap().path();
        assert!(dir.join("incident.json").is_file() && dir.join("last_5_eval_traces.ndjson").is_file());
    }
}
