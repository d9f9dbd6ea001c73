//! Building guests for wasm32.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The guest target and profile, and where guests land: spelled once, in crates/test-support.
pub use helios_plugin_test_support::{GUEST_PROFILE, GUEST_TARGET, guest_dir};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Every guest crate built for [`GUEST_TARGET`]: a `cdylib` under examples/ or
/// crates/host/tests/guests/, except the [`WASIP1_GUESTS`].
pub fn guest_packages() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for dir in ["examples", "crates/host/tests/guests"] {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else { continue };
        let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let manifest = path.join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
            if !text.contains("cdylib") {
                continue;
            }
            let name = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = ").map(|v| v.trim_matches('"').to_owned()))
                .with_context(|| format!("{}: no package name", manifest.display()))?;
            if !WASIP1_GUESTS.contains(&name.as_str()) {
                out.push(name);
            }
        }
    }
    Ok(out)
}

fn ensure_target(target: &str) -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == target) => Ok(()),
        Ok(_) => {
            eprintln!("xtask: adding the {target} target with rustup");
            let st = Command::new("rustup").args(["target", "add", target]).status().context("cannot run rustup")?;
            if !st.success() {
                bail!(
                    "`rustup target add {target}` failed: guests cannot be built without it (install it by hand, or check the network access to the Rust distribution server)"
                );
            }
            Ok(())
        }
        // No rustup: trust that the toolchain has the target; cargo will say clearly if not.
        Err(_) => Ok(()),
    }
}

/// Guests that are components of `chio:guard/guard@0.2.0`: built for [`GUEST_TARGET`] like every
/// guest, then turned into a component (`<name>.component.wasm` beside the module) by
/// `wit-component` from the component type `wit-bindgen` embedded.
pub const COMPONENT_GUESTS: &[&str] = &["guest-component-guard"];
/// Guests also built for WASI preview 2 (rustc links them into components itself); they land in
/// `target/wasm32-wasip2/guest/`.
pub const WASIP2_GUESTS: &[&str] = &["guest-component-guard"];
/// Guests built for WASI preview 1 only (std's I/O through wasi-libc): the host runs them in its
/// deny-all preview 1 sandbox. They land in `target/wasm32-wasip1/guest/`.
pub const WASIP1_GUESTS: &[&str] = &["guest-wasi-escape"];
/// The WASI preview 1 and preview 2 targets (spelled in crates/test-support).
pub use helios_plugin_test_support::{WASI_GUEST_TARGET as WASIP1_TARGET, WASIP2_GUEST_TARGET as WASIP2_TARGET};

/// SDK guests that also build as components (their `component` feature): built first, in a cargo
/// invocation of their own (the feature must not reach the core builds), each module saved as
/// `<name>.component-core.wasm`, then turned into `<name>.component.wasm`.
pub const SDK_COMPONENT_GUESTS: &[&str] = &["tool-denylist", "bundle-denylist"];

/// Wraps the core module `module` (carrying wit-bindgen's `component-type` section) into a
/// component at `<name>.component.wasm`.
fn componentize(package: &str, module_path: &Path) -> Result<()> {
    let module = std::fs::read(module_path).with_context(|| format!("cannot read {}", module_path.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|e| e.validate(true).encode())
        .with_context(|| format!("{}: cannot turn the module into a component", module_path.display()))?;
    let out = guest_dir().join(format!("{}.component.wasm", package.replace('-', "_")));
    std::fs::write(&out, component).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

fn module_path(package: &str, suffix: &str) -> PathBuf {
    guest_dir().join(format!("{}{suffix}.wasm", package.replace('-', "_")))
}

/// The eight first-party plugins, which `wasm-opt -O2 -g` (binaryen) optimises after cargo when it is
/// installed: 12 % fewer bytes for the sqlparser guests (19 % without the names `-g` keeps), 5–15 % less time per call
/// (BENCHMARKS.md, "Guest sizes"). `-g` keeps the name section, so traps still name functions.
pub const OPTIMIZED_GUESTS: &[&str] = &helios_plugin_test_support::FIRST_PARTY_PLUGINS;

/// Runs `wasm-opt` on the [`OPTIMIZED_GUESTS`] that cargo (re)built since the last run: a stamp
/// beside each module records the size and mtime of the optimised file, so an unchanged module is not
/// optimised twice. Without binaryen it says so and leaves the modules as cargo built them.
fn optimize_guests() -> Result<()> {
    if Command::new("wasm-opt").arg("--version").output().is_err() {
        eprintln!(
            "xtask: wasm-opt (Debian: binaryen) is not installed: the first-party plugins stay as cargo built them \
             (with it they are ~19 % smaller and faster per call)"
        );
        return Ok(());
    }
    let stamp_of = |path: &Path| -> Option<String> {
        let m = std::fs::metadata(path).ok()?;
        let t = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(format!("wasm-opt -O2 -g: {} bytes, mtime {}.{:09}", m.len(), t.as_secs(), t.subsec_nanos()))
    };
    let mut running = Vec::new();
    for p in OPTIMIZED_GUESTS {
        let path = module_path(p, "");
        let stamp = path.with_extension("wasm-opt");
        if stamp_of(&path).is_some_and(|s| std::fs::read_to_string(&stamp).ok() == Some(s)) {
            continue;
        }
        // Written beside and renamed over the module: cargo may have hard-linked it to its own copy.
        let tmp = path.with_extension("wasm-opt.tmp");
        let child = Command::new("wasm-opt")
            .args(["-O2", "-g"])
            .arg(&path)
            .arg("-o")
            .arg(&tmp)
            .spawn()
            .with_context(|| format!("cannot run wasm-opt on {}", path.display()))?;
        running.push((path, stamp, tmp, child));
    }
    let n = running.len();
    for (path, stamp, tmp, mut child) in running {
        let status = child.wait().with_context(|| format!("wasm-opt on {}", path.display()))?;
        if !status.success() {
            bail!("wasm-opt failed on {} ({status})", path.display());
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
        let s = stamp_of(&path).context("the optimised module vanished")?;
        std::fs::write(&stamp, s).with_context(|| format!("cannot write {}", stamp.display()))?;
    }
    if n > 0 {
        eprintln!("xtask: wasm-opt -O2 -g optimised {n} first-party plugins");
    }
    Ok(())
}

/// Builds every guest in one cargo invocation.
pub fn build_guests() -> Result<()> {
    ensure_target(GUEST_TARGET)?;
    ensure_target(WASIP2_TARGET)?;
    ensure_target(WASIP1_TARGET)?;
    let mut args = vec!["build", "--target", GUEST_TARGET, "--profile", GUEST_PROFILE];
    let features: Vec<String> = SDK_COMPONENT_GUESTS.iter().map(|p| format!("{p}/component")).collect();
    let features = features.join(",");
    for p in SDK_COMPONENT_GUESTS {
        args.extend(["-p", *p]);
    }
    args.extend(["--features", &features]);
    crate::cargo(&args, &[])?;
    for p in SDK_COMPONENT_GUESTS {
        let core = module_path(p, ".component-core");
        std::fs::copy(module_path(p, ""), &core).with_context(|| format!("cannot write {}", core.display()))?;
        componentize(p, &core)?;
    }
    let packages = guest_packages()?;
    let mut args = vec!["build", "--target", GUEST_TARGET, "--profile", GUEST_PROFILE];
    for p in &packages {
        args.push("-p");
        args.push(p);
    }
    crate::cargo(&args, &[])?;
    optimize_guests()?;
    for p in COMPONENT_GUESTS {
        componentize(p, &module_path(p, ""))?;
    }
    let mut args = vec!["build", "--target", WASIP2_TARGET, "--profile", GUEST_PROFILE];
    for p in WASIP2_GUESTS {
        args.push("-p");
        args.push(p);
    }
    crate::cargo(&args, &[])?;
    let mut args = vec!["build", "--target", WASIP1_TARGET, "--profile", GUEST_PROFILE];
    for p in WASIP1_GUESTS {
        args.push("-p");
        args.push(p);
    }
    crate::cargo(&args, &[])?;
    eprintln!(
        "xtask: built {} guests into {} ({} also as components, {} for {WASIP2_TARGET}, {} for {WASIP1_TARGET})",
        packages.len(),
        guest_dir().display(),
        COMPONENT_GUESTS.len() + SDK_COMPONENT_GUESTS.len(),
        WASIP2_GUESTS.len(),
        WASIP1_GUESTS.len()
    );
    Ok(())
}
