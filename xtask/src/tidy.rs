//! Repository checks that run as ordinary tests.

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::build::root;

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
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
}
