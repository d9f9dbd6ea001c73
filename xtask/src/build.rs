//! Building guests for wasm32.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The one target guests are built for: no WASI, so a module's only imports are the host surface.
pub const GUEST_TARGET: &str = "wasm32-unknown-unknown";
/// The cargo profile guests are built with (see the root Cargo.toml).
pub const GUEST_PROFILE: &str = "guest";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Where a guest's wasm lands.
pub fn guest_dir() -> PathBuf {
    root().join("target").join(GUEST_TARGET).join(GUEST_PROFILE)
}

/// Every guest crate: a `cdylib` under examples/ or crates/host/tests/guests/.
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
            out.push(name);
        }
    }
    Ok(out)
}

fn ensure_target() -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == GUEST_TARGET) => Ok(()),
        Ok(_) => {
            eprintln!("xtask: adding the {GUEST_TARGET} target with rustup");
            let st =
                Command::new("rustup").args(["target", "add", GUEST_TARGET]).status().context("cannot run rustup")?;
            if !st.success() {
                bail!(
                    "`rustup target add {GUEST_TARGET}` failed: guests cannot be built without it (install it by hand, or check the network access to the Rust distribution server)"
                );
            }
            Ok(())
        }
        // No rustup: trust that the toolchain has the target; cargo will say clearly if not.
        Err(_) => Ok(()),
    }
}

/// Builds every guest in one cargo invocation.
pub fn build_guests() -> Result<()> {
    ensure_target()?;
    let packages = guest_packages()?;
    let mut args = vec!["build", "--target", GUEST_TARGET, "--profile", GUEST_PROFILE];
    for p in &packages {
        args.push("-p");
        args.push(p);
    }
    crate::cargo(&args, &[])?;
    eprintln!("xtask: built {} guests into {}", packages.len(), guest_dir().display());
    Ok(())
}
