//! `helios-plugin new <name> [--hook pre_query | --guard]`: a plugin crate that builds, passes its
//! own native tests and packs out of the box.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// Arguments of `new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name (its crate and package name): letters, digits, `-` and `_`.
    pub name: String,
    /// The hook the plugin serves (`pre_query`). Default: pre_query.
    #[arg(long, conflicts_with = "guard")]
    pub hook: Option<String>,
    /// Make a chio guard (`evaluate`) instead of a hook.
    #[arg(long)]
    pub guard: bool,
    /// Directory to create (default: ./<name>).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Path of this repository's `crates/abi` for the dependency (default: the one this
    /// helios-plugin was built from). The crates are not on crates.io yet.
    #[arg(long)]
    pub abi_path: Option<PathBuf>,
}

/// The `crates/abi` this binary was built from.
fn default_abi_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../abi")
}

pub fn run(args: NewArgs) -> Result<i32> {
    let name = &args.name;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        bail!("{name:?} is not a plugin crate name (a letter, then letters, digits, - or _; at most 64)");
    }
    let kind = match (args.guard, args.hook.as_deref()) {
        (true, _) => Kind::Guard,
        (false, None | Some("pre_query")) => Kind::PreQuery,
        (false, Some(other)) => {
            bail!("--hook {other}: the scaffold knows pre_query (or --guard); add other hooks by hand")
        }
    };
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!("{} exists; choose another name or --dir", dir.display());
    }
    let abi = args.abi_path.clone().unwrap_or_else(default_abi_path);
    let abi = std::fs::canonicalize(&abi)
        .with_context(|| format!("the SDK crate {} is not there; pass --abi-path <repo>/crates/abi", abi.display()))?;
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(dir.join("fixtures"))?;
    let write = |rel: &str, text: String| -> Result<()> {
        let p = dir.join(rel);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write("Cargo.toml", cargo_toml(name, &abi))?;
    write(".gitignore", "/target\n".into())?;
    match kind {
        Kind::PreQuery => {
            write("src/lib.rs", HOOK_LIB.replace("{name}", name))?;
            write("fixtures/drop-table.json", HOOK_FIXTURE_BLOCK.into())?;
            write("fixtures/select.json", HOOK_FIXTURE_CONTINUE.into())?;
        }
        Kind::Guard => {
            write("src/lib.rs", GUARD_LIB.replace("{name}", name))?;
            write("fixtures/rm.json", GUARD_FIXTURE_DENY.into())?;
            write("fixtures/ls.json", GUARD_FIXTURE_ALLOW.into())?;
        }
    }
    let module = name.replace('-', "_");
    println!("created {} ({})", dir.display(), if kind == Kind::Guard { "chio guard" } else { "pre_query hook" });
    println!("  cd {} && cargo test", dir.display());
    println!("  cargo build --release --target wasm32-unknown-unknown");
    println!("  helios-plugin test target/wasm32-unknown-unknown/release/{module}.wasm fixtures/*.json");
    println!(
        "  helios-plugin pack --wasm target/wasm32-unknown-unknown/release/{module}.wasm --key signing.pem --out {name}.tar.gz"
    );
    Ok(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PreQuery,
    Guard,
}

fn cargo_toml(name: &str, abi: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the wasm module; rlib: the plugin's own tests run natively with `cargo test`.
crate-type = ["cdylib", "rlib"]

[dependencies]
# helios-plugin is not on crates.io yet, so the SDK comes from a checkout of its repository (or use
# `{{ git = "<repository URL>" }}`). Once published this becomes: helios-plugin-abi = "0.1"
helios-plugin-abi = {{ path = "{}" }}

# A plugin is its own workspace, even when created inside another one.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"
"#,
        abi.display()
    )
}

const HOOK_LIB: &str = r#"//! {name}: a helios-plugin `pre_query` hook.

use helios_plugin_abi::*;

/// Blocks `DROP TABLE`; lets everything else through.
#[hook(PreQuery)]
fn check_query(ctx: &HookContext) -> PreQueryResult {
    if ctx.sql.to_uppercase().contains("DROP TABLE") {
        return PreQueryResult::Block { reason: "DROP TABLE is not allowed".into() };
    }
    PreQueryResult::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(sql: &str) -> HookContext {
        HookContext { sql: sql.into(), ..Default::default() }
    }

    #[test]
    fn drop_table_is_blocked() {
        assert!(matches!(check_query(&ctx("drop table users")), PreQueryResult::Block { .. }));
    }

    #[test]
    fn a_select_continues() {
        assert_eq!(check_query(&ctx("SELECT 1")), PreQueryResult::Continue);
    }
}
"#;

const GUARD_LIB: &str = r#"//! {name}: a chio guard that denies the tools listed in its `denylist` config.

use helios_plugin_abi::*;

#[chio_guard]
fn evaluate(req: &GuardRequest) -> GuardVerdict {
    let denylist = get_config("denylist").unwrap_or_else(|| "rm".to_string());
    if denylist.split(',').any(|t| t.trim() == req.tool_name) {
        return GuardVerdict::deny(format!("tool {} is on the denylist", req.tool_name));
    }
    GuardVerdict::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(tool: &str) -> GuardRequest {
        GuardRequest { tool_name: tool.into(), ..Default::default() }
    }

    #[test]
    fn a_listed_tool_is_denied() {
        assert!(!evaluate(&req("rm")).is_allow());
    }

    #[test]
    fn another_tool_is_allowed() {
        assert!(evaluate(&req("ls")).is_allow());
    }
}
"#;

const HOOK_FIXTURE_BLOCK: &str = r#"{
  "hook": "pre_query",
  "input": {"query": "DROP TABLE users"},
  "expected": {"kind": "block", "reason": "DROP TABLE is not allowed"}
}
"#;

const HOOK_FIXTURE_CONTINUE: &str = r#"{
  "hook": "pre_query",
  "input": {"query": "SELECT 1"},
  "expected": {"kind": "continue"}
}
"#;

const GUARD_FIXTURE_DENY: &str = r#"{"request": {"tool_name": "rm"}, "expected_verdict_bytes": "{\"decision\":\"deny\",\"reason\":\"tool rm is on the denylist\"}"}
"#;

const GUARD_FIXTURE_ALLOW: &str = r#"{"request": {"tool_name": "ls"}, "expected_verdict_bytes": "{\"decision\":\"allow\"}"}
"#;
