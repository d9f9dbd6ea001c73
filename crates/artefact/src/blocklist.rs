//! The digest blocklist: modules that never load, whatever else passes (a leaked key, a withdrawn
//! release).

use std::collections::BTreeSet;
use std::path::Path;

use helios_plugin_schema::manifest::{BlocklistFile, DIGEST_PREFIX};

use crate::error::{ErrorKind, Result, err, shown};

/// Largest blocklist file read. Default: 4 MiB (about 55,000 digests).
pub const MAX_BLOCKLIST_BYTES: u64 = 4 << 20;

/// A set of blocked module digests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    digests: BTreeSet<String>,
    origin: String,
}

impl Blocklist {
    /// Parses `{"digests": ["sha256:<64 lowercase hex>", ...]}`; `file` names it in errors.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Blocklist> {
        let bad = |reason: String| err(ErrorKind::BlocklistInvalid, format!("blocklist {file}: {reason}"));
        let parsed: BlocklistFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let mut digests = BTreeSet::new();
        for (i, entry) in parsed.digests.iter().enumerate() {
            let hex = entry
                .strip_prefix(DIGEST_PREFIX)
                .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .ok_or_else(|| {
                    bad(format!("digests[{i}]: expected \"{DIGEST_PREFIX}<64 lowercase hex>\", found {entry:?}"))
                })?;
            digests.insert(hex.to_owned());
        }
        Ok(Blocklist { digests, origin: file.to_owned() })
    }

    /// Reads a blocklist file.
    pub fn load(path: &Path) -> Result<Blocklist> {
        let bytes = crate::error::read_capped(path, MAX_BLOCKLIST_BYTES, |n| {
            err(
                ErrorKind::BlocklistInvalid,
                format!("blocklist {}: {n} bytes (limit: {MAX_BLOCKLIST_BYTES})", path.display()),
            )
        })?;
        Blocklist::parse(&bytes, &shown(path))
    }

    /// Whether a module with this lowercase hex SHA-256 is blocked.
    pub fn contains(&self, sha256: &str) -> bool {
        self.digests.contains(sha256)
    }

    /// Fails with `E_GUARD_DIGEST_BLOCKLISTED` if the module is blocked.
    pub fn check(&self, sha256: &str, plugin: &str) -> Result<()> {
        if self.contains(sha256) {
            return Err(err(
                ErrorKind::DigestBlocklisted,
                format!("plugin {plugin}: module {DIGEST_PREFIX}{sha256} is listed in blocklist {}", self.origin),
            ));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_digest_fails_with_the_stable_code() {
        let d = "a".repeat(64);
        let b = Blocklist::parse(format!(r#"{{"digests":["sha256:{d}"]}}"#).as_bytes(), "bl.json").unwrap();
        let e = b.check(&d, "p").unwrap_err();
        assert!(e.to_string().starts_with("E_GUARD_DIGEST_BLOCKLISTED: plugin p"), "{e}");
        assert!(b.check(&"b".repeat(64), "p").is_ok());
    }

    #[test]
    fn malformed_entries_are_named() {
        let e = Blocklist::parse(br#"{"digests":["sha256:abc"]}"#, "bl.json").unwrap_err().to_string();
        assert!(e.contains("bl.json") && e.contains("digests[0]"), "{e}");
        let e = Blocklist::parse(br#"{"digest":[]}"#, "bl.json").unwrap_err().to_string();
        assert!(e.contains("digest"), "{e}");
    }
}
