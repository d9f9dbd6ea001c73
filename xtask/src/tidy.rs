//! Repository checks ("tidy"): `cargo xtask tidy`, run first by `cargo xtask test`, and the same
//! checks as unit tests of xtask (so `cargo test --workspace` runs them too).
//!
//! * **One spelling per name.** Three kinds of name have one home each; a copy elsewhere drifts
//!   silently when the home changes:
//!   - **ABI names**: every fixed export and every import of the host surface (`abi::EXPORTS`,
//!     `abi::IMPORTS`), at home in `crates/schema/src/`. The guest bindings in
//!     `crates/abi/src/sys.rs`, `alloc_exports.rs`, `policy.rs` and the hand-written hostile guest must write
//!     them in attributes (`#[link_name = "…"]`, `wasm_import_module`), where Rust takes no constant:
//!     they are homes too. `log` is left out (an ordinary word), and so are the hook export names,
//!     which are the operator's vocabulary (`hooks = ["pre_query"]`, parsed by `Hook::from_str`).
//!   - **The guest targets and profile** (`wasm32-unknown-unknown`, the WASI preview 1 and 2
//!     targets, `--profile guest`), at home in
//!     `crates/test-support/src/`; `crates/cli/src/new.rs` prints build instructions for a plugin
//!     author's own project (which has no `guest` profile) and is a home of the triple.
//!   - **The audit record prefix** (`"audit-record "`), at home in
//!     `examples/shared/audit-chain-verify/src/`.
//!
//!   Only string literals of Rust source count: comments are prose, and a literal is a use only when
//!   it *is* the name (a WAT module in a raw string exporting `"alloc"` is a module, not a spelling).
//! * **The runtime crate stays a runtime**: `crates/host` depends on none of the artefact crate,
//!   TOML or the signing and archive crates (deployment loading is `crates/loader`'s).
//! * Every library crate opens with a role doc; no test is ignored or expects a panic.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Runs every check over the workspace and fails naming each finding.
pub fn run() -> Result<()> {
    let root = crate::build::root();
    let mut findings: Vec<String> = misplaced(&root).iter().map(ToString::to_string).collect();
    findings.extend(runtime_dependencies(&root));
    if !findings.is_empty() {
        bail!("tidy: {} finding(s):\n  {}", findings.len(), findings.join("\n  "));
    }
    Ok(())
}

/// Dependencies the runtime crate must not have.
const NOT_IN_THE_RUNTIME: &[&str] = &["helios-plugin-artefact", "toml", "ed25519-dalek", "tar", "flate2"];

/// The `[dependencies]` of `crates/host/Cargo.toml` that belong to deployment loading.
pub fn runtime_dependencies(root: &Path) -> Vec<String> {
    let manifest = root.join("crates/host/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap_or_default();
    let mut section = "";
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]" {
            let name = line.split(['=', ' ', '.']).next().unwrap_or("");
            if NOT_IN_THE_RUNTIME.contains(&name) {
                out.push(format!(
                    "crates/host/Cargo.toml: [dependencies] has {name}: the runtime crate does not load deployments (crates/loader does)"
                ));
            }
        }
    }
    out
}

/// One misplaced spelling: `file:line: what`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misplaced {
    pub file: String,
    pub line: usize,
    pub what: String,
}

impl std::fmt::Display for Misplaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.what)
    }
}

/// This file spells every name it looks for (in its tests): it is a home of all three.
const CHECKER: &str = "xtask/src/tidy.rs";
const ABI_HOMES: &[&str] = &[
    CHECKER,
    "crates/schema/src/",
    "crates/abi/src/sys.rs",
    "crates/abi/src/alloc_exports.rs",
    "crates/abi/src/policy.rs",
    "crates/host/tests/guests/hostile-raw/",
];
const TARGET_HOMES: &[&str] = &[CHECKER, "crates/test-support/src/", "crates/cli/src/new.rs"];
const AUDIT_HOMES: &[&str] = &[CHECKER, "examples/shared/audit-chain-verify/src/"];

/// The ABI names the check looks for: every fixed export and import name except ordinary words.
pub fn abi_names() -> Vec<&'static str> {
    use helios_plugin_schema::abi;
    let mut names: Vec<&str> = abi::EXPORTS.iter().map(|e| e.name).chain(abi::IMPORTS.iter().map(|i| i.name)).collect();
    names.retain(|n| *n != abi::LOG);
    names.sort_unstable();
    names.dedup();
    names
}

/// Every misplaced spelling in the Rust files under `root`'s `crates/`, `examples/` and `xtask/`.
pub fn misplaced(root: &Path) -> Vec<Misplaced> {
    let abi = abi_names();
    use helios_plugin_test_support::{GUEST_TARGET, WASI_GUEST_TARGET, WASIP2_GUEST_TARGET};
    let targets = [GUEST_TARGET, WASI_GUEST_TARGET, WASIP2_GUEST_TARGET];
    let profile = helios_plugin_test_support::GUEST_PROFILE;
    let audit = audit_chain_verify::chain::LOG_PREFIX;
    let mut files = Vec::new();
    for dir in ["crates", "examples", "xtask"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let home = |homes: &[&str]| homes.iter().any(|h| rel.starts_with(h));
        let lits = literals(&text);
        for (i, (line, lit)) in lits.iter().enumerate() {
            let mut found = |what: String| out.push(Misplaced { file: rel.clone(), line: *line, what });
            if abi.contains(&lit.as_str()) && !home(ABI_HOMES) {
                found(format!("ABI name {lit:?} (use helios_plugin_schema::abi)"));
            }
            let profile_arg =
                (lit == profile && i > 0 && lits[i - 1].1 == "--profile") || *lit == format!("--profile={profile}");
            if (targets.iter().any(|t| lit.contains(t)) || profile_arg) && !home(TARGET_HOMES) {
                found(format!("guest target/profile {lit:?} (use helios_plugin_test_support)"));
            }
            if lit.contains(audit) && !home(AUDIT_HOMES) {
                found(format!("audit record prefix in {lit:?} (use audit_chain_verify::chain::LOG_PREFIX)"));
            }
        }
    }
    out
}

/// `.rs` files under `dir`, skipping `target` and hidden directories.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// The string literals of Rust source (plain, byte, raw, raw byte), each with the line it starts
/// on, escapes left as written. Comments, char literals and lifetimes are skipped.
pub fn literals(src: &str) -> Vec<(usize, String)> {
    let s: Vec<char> = src.chars().collect();
    let n = s.len();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let count = |from: usize, to: usize| s[from..to.min(n)].iter().filter(|c| **c == '\n').count();
    while i < n {
        let c = s[i];
        let prev_ident = i > 0 && ident(s[i - 1]);
        if c == '/' && s.get(i + 1) == Some(&'/') {
            while i < n && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && s.get(i + 1) == Some(&'*') {
            // Block comments nest in Rust.
            let (start, mut depth) = (i, 0usize);
            while i < n {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            line += count(start, i);
        } else if !prev_ident && (c == 'r' || (c == 'b' && s.get(i + 1) == Some(&'r'))) && raw_open(&s, i).is_some() {
            let (hashes, body) = raw_open(&s, i).unwrap_or_default();
            let mut j = body;
            while j < n && !(s[j] == '"' && (0..hashes).all(|k| s.get(j + 1 + k) == Some(&'#'))) {
                j += 1;
            }
            out.push((line, s[body..j.min(n)].iter().collect()));
            line += count(i, j);
            i = j + 1 + hashes;
        } else if c == '"' || (c == 'b' && !prev_ident && s.get(i + 1) == Some(&'"')) {
            let start = i;
            let mut j = if c == 'b' { i + 2 } else { i + 1 };
            let body = j;
            while j < n && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            out.push((line, s[body..j.min(n)].iter().collect()));
            line += count(start, j);
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}', '"'), else a lifetime or label.
            i += match (s.get(i + 1), s.get(i + 2)) {
                (Some('\\'), _) => (i + 3..n).find(|&k| s[k] == '\'').map_or(1, |k| k - i + 1),
                (Some(_), Some('\'')) => 3,
                _ => 1,
            };
        } else {
            if c == '\n' {
                line += 1;
            }
            i += 1;
        }
    }
    out
}

/// At a raw string's `r`/`br`: the number of `#` and the index of its first content character.
fn raw_open(s: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = if s[i] == 'b' { i + 2 } else { i + 1 };
    let mut hashes = 0;
    while s.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (s.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::root;

    #[test]
    fn every_library_crate_opens_with_a_role_doc() {
        for dir in ["crates", "examples"] {
            let Ok(entries) = std::fs::read_dir(root().join(dir)) else { continue };
            for e in entries.flatten() {
                let lib = e.path().join("src/lib.rs");
                if let Ok(text) = std::fs::read_to_string(&lib) {
                    assert!(
                        text.trim_start().starts_with("//!"),
                        "{} does not open with a //! role doc",
                        lib.display()
                    );
                }
            }
        }
    }

    #[test]
    fn no_test_is_ignored_or_expects_a_panic() {
        let mut files = Vec::new();
        for dir in ["crates", "examples", "xtask"] {
            rust_files(&root().join(dir), &mut files);
        }
        assert!(!files.is_empty());
        let banned = [
            concat!("#[", "ignore"),
            concat!("#[", "should_panic"),
            concat!("todo", "!("),
            concat!("unimplemented", "!("),
        ];
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            for b in banned {
                assert!(!text.contains(b), "{} contains {b}", f.display());
            }
        }
    }

    /// `cargo publish` refuses a crate whose path dependencies have no version, and crates.io wants a
    /// description, a license and a repository: every crate not marked `publish = false` has them.
    #[test]
    fn every_publishable_crate_carries_what_cargo_publish_needs() {
        let mut published = Vec::new();
        for dir in ["crates", "examples", "examples/shared"] {
            let Ok(entries) = std::fs::read_dir(root().join(dir)) else { continue };
            for e in entries.flatten() {
                let manifest = e.path().join("Cargo.toml");
                let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
                if text.lines().any(|l| l.trim() == "publish = false") {
                    continue;
                }
                let name = manifest.display().to_string();
                for field in ["description", "license", "repository", "readme", "keywords", "categories"] {
                    assert!(
                        text.lines()
                            .any(|l| l.starts_with(&format!("{field} ")) || l.starts_with(&format!("{field}."))),
                        "{name}: no {field} (cargo publish / crates.io need it)"
                    );
                }
                let mut section = String::new();
                for line in text.lines() {
                    let t = line.trim();
                    if t.starts_with('[') {
                        section = t.to_owned();
                    } else if section.ends_with("dependencies]") && !section.contains("dev-dependencies") {
                        assert!(
                            !t.contains("path =") || t.contains("version ="),
                            "{name}: {section} {t}: a path dependency needs a version to be published"
                        );
                    }
                }
                published.push(name);
            }
        }
        assert!(published.len() >= 12, "{published:?}");
        let workspace = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
        for line in workspace.lines().filter(|l| l.starts_with("helios-") && l.contains("path =")) {
            assert!(line.contains("version ="), "workspace dependency without a version: {line}");
        }
    }

    #[test]
    fn every_guest_is_found_by_build_examples() {
        let guests = crate::build::guest_packages().unwrap();
        for expected in ["tool-denylist", "llm-guardrail", "guest-misbehave"] {
            assert!(guests.iter().any(|g| g == expected), "{expected} missing from {guests:?}");
        }
        // A WASI preview 1 guest is built for wasm32-wasip1 only.
        assert!(!guests.iter().any(|g| g == "guest-wasi-escape"), "{guests:?}");
        let root = crate::build::root();
        for p in crate::build::WASIP1_GUESTS {
            let dir = root.join("crates/host/tests/guests").join(p.trim_start_matches("guest-"));
            assert!(dir.join("Cargo.toml").is_file(), "{p}: no crate at {}", dir.display());
        }
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn literals_are_found_and_comments_chars_and_lifetimes_are_not() {
        let src = "// \"a\"\n/* \"b\" /* \"c\" */ */ let x: &'static str = \"d\";\nlet q = '\"'; let e = '\\''; \
                   let y = r#\"e \"quoted\"\"#; let z = b\"f\\\"g\"; let w = br\"h\";\nlet u = '\\u{1F600}'; \"i\"";
        let lits = literals(src);
        let got: Vec<(usize, &str)> = lits.iter().map(|(l, s)| (*l, s.as_str())).collect();
        assert_eq!(got, vec![(2, "d"), (3, "e \"quoted\""), (3, "f\\\"g"), (3, "h"), (4, "i")]);
    }

    /// The check fails on each kind of misplaced spelling in a synthetic tree, names file, line and
    /// the name, and accepts the homes, prose and WAT.
    #[test]
    fn a_synthetic_tree_with_one_misplaced_spelling_of_each_kind_fails_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "crates/schema/src/abi.rs", "pub const KV_GET: &str = \"kv_get\";\n");
        write(root, "crates/test-support/src/lib.rs", "pub const T: &str = \"wasm32-unknown-unknown\";\n");
        write(root, "examples/shared/audit-chain-verify/src/chain.rs", "pub const P: &str = \"audit-record \";\n");
        write(
            root,
            "crates/fine/src/lib.rs",
            "//! Calls \"kv_get\" and reads target/wasm32-unknown-unknown/guest, \"audit-record \" lines.\n\
             const WAT: &str = r#\"(module (func (export \"alloc\") (param i32) (result i32) i32.const 0))\"#;\n\
             const LOG: &str = \"log\"; const FEATURE: &str = \"guest\";\n",
        );
        assert_eq!(misplaced(root), vec![], "homes, prose, WAT and ordinary words are not misplaced");

        write(
            root,
            "crates/bad/src/lib.rs",
            "fn f() {\n    let _ = (\"chio_deny_reason\", 1);\n    let _ = \"target/wasm32-unknown-unknown/guest/x.wasm\";\n\
             \x20   let _ = [\"build\", \"--profile\", \"guest\"];\n    let _ = [\"--target\", \"wasm32-wasip1\"];\n}\n",
        );
        write(root, "xtask/src/x.rs", "fn g(l: &str) -> bool { l.starts_with(\"audit-record \") }\n");
        let found: Vec<String> = misplaced(root).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            vec![
                "crates/bad/src/lib.rs:2: ABI name \"chio_deny_reason\" (use helios_plugin_schema::abi)",
                "crates/bad/src/lib.rs:3: guest target/profile \"target/wasm32-unknown-unknown/guest/x.wasm\" (use helios_plugin_test_support)",
                "crates/bad/src/lib.rs:4: guest target/profile \"guest\" (use helios_plugin_test_support)",
                "crates/bad/src/lib.rs:5: guest target/profile \"wasm32-wasip1\" (use helios_plugin_test_support)",
                "xtask/src/x.rs:1: audit record prefix in \"audit-record \" (use audit_chain_verify::chain::LOG_PREFIX)",
            ]
        );
    }

    #[test]
    fn the_abi_names_come_from_the_schema_tables() {
        let names = abi_names();
        for n in ["alloc", "evaluate", "chio_deny_reason", "kv_get", "kv_cas", "get_time_unix_secs"] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert!(!names.contains(&"log"));
    }

    #[test]
    fn no_abi_name_guest_path_or_audit_prefix_is_spelled_outside_its_home() {
        let found = misplaced(&root());
        assert!(
            found.is_empty(),
            "spelled outside its home:\n{}",
            found.iter().map(|m| format!("  {m}\n")).collect::<String>()
        );
    }
    #[test]
    fn the_runtime_crate_has_no_deployment_dependency_and_the_check_can_fail() {
        assert_eq!(runtime_dependencies(&root()), Vec::<String>::new());
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "crates/host/Cargo.toml",
            "[dependencies]\nwasmtime = \"1\"\ntoml = { workspace = true }\n[dev-dependencies]\ntar = \"1\"\n",
        );
        let found = runtime_dependencies(dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("has toml"), "{found:?}");
    }
}
