//! extism-compare: the Extism side of `cargo xtask bench`. Runs the tool-denylist and llm-guardrail
//! logic (guests built with extism-pdk) under the `extism` host crate =1.30.0 on the same workloads
//! as helios-bench, and writes one JSON object that helios-bench merges into its table.
//!
//! usage: extism-compare <workloads.json> <guest dir> <out.json>

use std::{path::Path, time::Instant};

use extism::{CompiledPlugin, Manifest, Plugin, PluginBuilder, Wasm};
use serde_json::{Value, json};

/// Nanoseconds per call of `f`: the fastest of `batches` batches of `per_batch` calls, after a
/// warm-up (helios-bench reports the fastest batch too: the machine it runs on may be shared).
fn best_ns(batches: usize, per_batch: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..per_batch.min(1000) {
        f();
    }
    let mut samples: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            t.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[0]
}

fn compiled(wasm: &Path, config: &serde_json::Map<String, Value>) -> Result<CompiledPlugin, String> {
    let bytes = std::fs::read(wasm).map_err(|e| format!("cannot read {}: {e}", wasm.display()))?;
    let mut manifest = Manifest::new([Wasm::data(bytes)]);
    for (k, v) in config {
        manifest = manifest.with_config_key(k, v.as_str().unwrap_or_default());
    }
    PluginBuilder::new(manifest)
        .with_wasi(false)
        .with_cache_disabled()
        .compile()
        .map_err(|e| format!("extism cannot compile {}: {e:#}", wasm.display()))
}

fn contender(workload: &Value, wasm: &Path, export: &str, per_batch: usize) -> Result<Value, String> {
    let config = workload["config"].as_object().cloned().unwrap_or_default();
    let input = serde_json::to_vec(&workload["input"]).map_err(|e| e.to_string())?;
    let compiled = compiled(wasm, &config)?;
    let mut plugin = Plugin::new_from_compiled(&compiled).map_err(|e| format!("extism instantiate: {e:#}"))?;
    let first: Vec<u8> =
        plugin.call::<&[u8], &[u8]>(export, &input).map_err(|e| format!("extism call {export}: {e:#}"))?.to_vec();
    let output: Value = serde_json::from_slice(&first).map_err(|e| format!("extism {export} returned non-JSON: {e}"))?;
    // What a host does with the answer: parse it.
    let per_call_ns = best_ns(15, per_batch, || {
        let out = plugin.call::<&[u8], &[u8]>(export, &input).expect("extism call");
        let v: Value = serde_json::from_slice(out).expect("extism JSON");
        std::hint::black_box(v);
    });
    let fresh_ns = best_ns(7, (per_batch / 20).max(20), || {
        let mut p = Plugin::new_from_compiled(&compiled).expect("extism instantiate");
        let out = p.call::<&[u8], &[u8]>(export, &input).expect("extism call");
        std::hint::black_box(serde_json::from_slice::<Value>(out).expect("extism JSON"));
    });
    Ok(json!({ "per_call_ns": per_call_ns, "fresh_ns": fresh_ns, "output": output }))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [workloads, guests, out] = &args[..] else {
        eprintln!("usage: extism-compare <workloads.json> <guest dir> <out.json>");
        return std::process::ExitCode::FAILURE;
    };
    let workloads: Value = match std::fs::read(workloads).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("extism-compare: cannot read workloads {workloads}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let guests = Path::new(guests);
    let run = |key: &str, file: &str, export: &str, per_batch: usize| -> Value {
        let r = contender(&workloads[key], &guests.join(file), export, per_batch);
        match r {
            Ok(v) => v,
            Err(e) => {
                eprintln!("extism-compare: {key}: {e}");
                json!({ "error": e })
            }
        }
    };
    let result = json!({
        "extism_version": "1.30.0",
        "tool_denylist": run("tool_denylist", "extism_guest_tool_denylist.wasm", "evaluate", 20_000),
        "llm_guardrail": run("llm_guardrail", "extism_guest_llm_guardrail.wasm", "guard", 5_000),
    });
    let text = serde_json::to_string_pretty(&result).unwrap_or_default();
    if let Err(e) = std::fs::write(out, &text) {
        eprintln!("extism-compare: cannot write {out}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    println!("{text}");
    std::process::ExitCode::SUCCESS
}
