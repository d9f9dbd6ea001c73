//! The tool-denylist guard as a component (`chio:guard/guard@0.2.0`) beside the core module, and the
//! bundle-denylist guard reading its denylist from a content bundle. Both components are signed and
//! verified like the core guard (`guard-manifest.yaml` with `wit_world` and `bundles`, sidecar,
//! pinned key) before the runtime compiles them; the runtime picks the backend from the header.

use std::path::Path;

use anyhow::{Context, Result, bail};
use helios_plugin_artefact::{VerifyOptions, keys, signing, verify_path};
use helios_plugin_host::{BundleStore, ContentId, DirBundleStore, PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{GuardRequest, manifest::GUARD_WIT_WORLD};

/// The denylist the bundle-denylist guard reads: one entry per line.
const BUNDLE_DENYLIST: &[u8] = b"rm -rf\nDROP TABLE\n/etc/shadow\n";

/// Writes `<work>/guards/<dir>/` (module, sidecar, manifest pinning a throw-away key), verifies it
/// and loads it into `rt`.
fn sign_and_load(
    rt: &Runtime,
    work: &Path,
    name: &str,
    file: &str,
    config: &str,
    bundles: &[ContentId],
) -> Result<std::sync::Arc<helios_plugin_host::Plugin>> {
    let src = helios_plugin_test_support::guest_dir().join(file);
    let wasm =
        std::fs::read(&src).with_context(|| format!("reading {} (run `cargo xtask build-examples`)", src.display()))?;
    let key = keys::generate_signing_key()?;
    let dir = work.join("guards").join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(file), &wasm)?;
    let sidecar = signing::sign_module(&key, &wasm, name, "1.0.0");
    std::fs::write(dir.join(format!("{file}.sig")), signing::sidecar_bytes(&sidecar))?;
    let world = if helios_plugin_artefact::is_component(&wasm) {
        format!("wit_world: {GUARD_WIT_WORLD:?}\n")
    } else {
        String::new()
    };
    let bundles = if bundles.is_empty() {
        String::new()
    } else {
        format!(
            "bundles: [{}]\n",
            bundles.iter().map(|b| format!("{:?}", b.to_string())).collect::<Vec<_>>().join(", ")
        )
    };
    std::fs::write(
        dir.join("guard-manifest.yaml"),
        format!(
            "name: {name}\nversion: \"1.0.0\"\nabi_version: \"1\"\nwasm_path: {file}\nwasm_sha256: \"{}\"\nsigner_public_key: \"{}\"\n{world}{bundles}config:\n{config}",
            signing::sha256_hex(&wasm),
            keys::public_key_hex(&key.verifying_key())
        ),
    )?;
    let v = verify_path(&dir, &VerifyOptions::default()).with_context(|| format!("verifying {name}"))?;
    let mut cfg = PluginConfig::new(v.name.clone()).config_map(v.config.clone());
    if let Some(w) = &v.wit_world {
        cfg = cfg.wit_world(w.clone());
    }
    cfg = cfg.bundles(v.bundles.iter().filter_map(|b| b.parse().ok()));
    Ok(rt.load(&v.wasm, cfg)?)
}

/// Runs the corpus through the core and the component build of tool-denylist, then through the
/// bundle-reading guard, and prints what each decided.
pub fn run(work: &Path, calls: &[GuardRequest]) -> Result<()> {
    let store = DirBundleStore::new(work.join("bundles"));
    let bundle = store.put(BUNDLE_DENYLIST)?;
    let rt = Runtime::new(RuntimeConfig::default().bundle_store(std::sync::Arc::new(store)))?;
    let denylist = format!("  denylist: {:?}\n", crate::sign::GUARD_DENYLIST);
    let core = sign_and_load(&rt, work, "tool-denylist-core", "tool_denylist.wasm", &denylist, &[])?;
    let component =
        sign_and_load(&rt, work, "tool-denylist-component", "tool_denylist.component.wasm", &denylist, &[])?;
    let (mut denies, mut differ) = (0, 0);
    for call in calls {
        let (a, b) = (core.evaluate(call), component.evaluate(call));
        denies += usize::from(!a.is_allow());
        if a != b {
            differ += 1;
            println!("  DIFFER on {:?}: core {a:?}, component {b:?}", call.tool_name);
        }
    }
    println!(
        "  tool-denylist as a core module and as a component: {} calls, {denies} denied by both, {differ} different verdicts",
        calls.len()
    );
    if differ > 0 {
        bail!("the component build of tool-denylist disagrees with the core build on {differ} calls");
    }
    let config = format!("  bundle: {:?}\n", bundle.to_string());
    let guard = sign_and_load(&rt, work, "bundle-denylist", "bundle_denylist.component.wasm", &config, &[bundle])?;
    let (mut denied, mut shown) = (0, 0);
    for call in calls {
        let (v, trace) = guard.evaluate_traced(call);
        let helios_plugin_schema::GuardVerdict::Deny { reason } = &v else { continue };
        // A denial from the bundle names the line it matched; any other denial (the bundle could
        // not be read, the guard failed) is a fault of this demo.
        if !reason.ends_with("on the denylist bundle") || trace.bundles != [bundle] {
            bail!(
                "bundle-denylist denied {:?} but not from its bundle: {reason} (bundles read: {:?})",
                call.tool_name,
                trace.bundles
            );
        }
        denied += 1;
        if shown < 3 {
            shown += 1;
            println!("  bundle-denylist (component) denied {:?}: {reason} [bundle read: {}]", call.tool_name, bundle);
        }
    }
    println!(
        "  bundle-denylist: {denied} of {} calls denied from bundle {bundle} ({} bytes, {} lines)",
        calls.len(),
        BUNDLE_DENYLIST.len(),
        BUNDLE_DENYLIST.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count()
    );
    if denied == 0 {
        bail!("bundle-denylist denied nothing: the corpus has calls naming a line of its bundle");
    }
    Ok(())
}
