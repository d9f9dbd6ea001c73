//! Where built guests live, defined once for tests, xtask, e2e, bench and the demo.
//!
//! Guests (examples/*, crates/host/tests/guests/*) are built for [`GUEST_TARGET`] with the cargo
//! profile [`GUEST_PROFILE`] by `cargo xtask build-examples` — once, before any test runs; no test
//! starts cargo itself. [`guest_wasm`] reads one back, and its error says how to build it.
//!
//! **Invariant:** the target triples (core wasm, WASI preview 1 and 2), the profile name and the
//! paths they make are spelled here and nowhere else in the workspace (xtask's tidy test checks it).

use std::path::{Path, PathBuf};

pub mod redis;

/// The one target guests are built for: no WASI, so a module's only imports are the host surface.
pub const GUEST_TARGET: &str = "wasm32-unknown-unknown";
/// The target of the guests that use WASI preview 1 (`[package.metadata.helios] target`).
pub const WASI_GUEST_TARGET: &str = "wasm32-wasip1";
/// The target of the guests built for WASI preview 2 (rustc links them into components itself).
pub const WASIP2_GUEST_TARGET: &str = "wasm32-wasip2";
/// The cargo profile guests are built with (see the root Cargo.toml).
pub const GUEST_PROFILE: &str = "guest";
/// The command that builds every guest.
pub const BUILD_GUESTS: &str = "cargo xtask build-examples";

/// The eight first-party plugins, by package name (examples/): what the e2e tests load and what
/// `build-examples` runs `wasm-opt` on.
pub const FIRST_PARTY_PLUGINS: [&str; 8] = [
    "ai-classifier",
    "audit-chain",
    "column-mask",
    "cost-governor",
    "llm-guardrail",
    "pgvector-router",
    "residency-router",
    "token-budget",
];

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| here.to_path_buf())
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else `target/` under the workspace root).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// The directory built guests land in.
pub fn guest_dir() -> PathBuf {
    target_dir().join(GUEST_TARGET).join(GUEST_PROFILE)
}

/// Where the guest of cargo package `package` (e.g. `tool-denylist`) lands.
pub fn guest_path(package: &str) -> PathBuf {
    guest_dir().join(format!("{}.wasm", package.replace('-', "_")))
}

/// Where the WASI guest of cargo package `package` lands.
pub fn wasi_guest_path(package: &str) -> PathBuf {
    target_dir().join(WASI_GUEST_TARGET).join(GUEST_PROFILE).join(format!("{}.wasm", package.replace('-', "_")))
}

/// The built module of package `package`, or an error naming the path and how to build it.
pub fn guest_wasm(package: &str) -> Result<Vec<u8>, String> {
    let path = guest_path(package);
    std::fs::read(&path).map_err(|e| {
        format!("guest {package}: cannot read {}: {e} (build the guests with `{BUILD_GUESTS}`)", path.display())
    })
}

/// The component `cargo xtask build-examples` made of guest `package` with `wit-component`.
pub fn guest_component(package: &str) -> Vec<u8> {
    let path = guest_dir().join(format!("{}.component.wasm", package.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("guest {package}: cannot read {}: {e} (build the guests with `{BUILD_GUESTS}`)", path.display())
    })
}

/// The `wasm32-wasip2` build (a component) of guest `package`.
pub fn guest_wasip2(package: &str) -> Vec<u8> {
    let path =
        target_dir().join(WASIP2_GUEST_TARGET).join(GUEST_PROFILE).join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("guest {package}: cannot read {}: {e} (build the guests with `{BUILD_GUESTS}`)", path.display())
    })
}

/// [`guest_wasm`] for tests: panics with the same message when the guest is missing.
pub fn guest(package: &str) -> Vec<u8> {
    guest_wasm(package).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_guest_names_its_path_and_how_to_build_it() {
        let e = guest_wasm("no-such-guest").unwrap_err();
        assert!(e.contains("no_such_guest.wasm") && e.contains(BUILD_GUESTS), "{e}");
        assert!(guest_path("tool-denylist").ends_with(format!("{GUEST_TARGET}/{GUEST_PROFILE}/tool_denylist.wasm")));
        assert!(workspace_root().join("Cargo.toml").is_file());
    }
}
