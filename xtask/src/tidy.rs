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

    #[test]
    fn every_guest_is_found_by_build_examples() {
        let guests = crate::build::guest_packages().unwrap();
        for expected in ["tool-denylist", "llm-guardrail", "guest-misbehave"] {
            assert!(guests.iter().any(|g| g == expected), "{expected} missing from {guests:?}");
        }
    }
}
