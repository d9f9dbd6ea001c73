//! Where a plugin's bytes come from: the `source` of a `[[plugins]]` entry.
//!
//! Today a source is a local path. A remote kind (a registry reference such as `oci://…`) is added
//! as a [`Source`] variant, a branch of [`Source::parse`] and an arm of [`Resolver::resolve`] that
//! fetches into a local directory; everything after resolution (verification, loading) is shared.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where one plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A local file or directory, relative to the config file's directory: an artefact
    /// (`.tar.gz`), a directory holding `guard-manifest.yaml` (or that file), or a bare `.wasm` next
    /// to its `.wasm.sig` sidecar.
    Path(PathBuf),
}

/// A `source` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("is empty")]
    Empty,
    /// `scheme://…` with a scheme this build does not fetch from.
    #[error("{text:?}: no {scheme}:// sources in this build (a source is a file path)")]
    UnknownScheme { text: String, scheme: String },
}

impl Source {
    /// Reads the text of a `source` field. `scheme://rest` names a remote source; anything else is
    /// a path.
    pub fn parse(text: &str) -> Result<Source, SourceError> {
        if text.trim().is_empty() {
            return Err(SourceError::Empty);
        }
        if let Some(scheme) = scheme_of(text) {
            return Err(SourceError::UnknownScheme { text: text.to_string(), scheme: scheme.to_string() });
        }
        Ok(Source::Path(PathBuf::from(text)))
    }
}

/// `oci` of `oci://host/repo:tag`; `None` for paths (including Windows-style `C:\…`).
fn scheme_of(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .then_some(scheme)
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Source, D::Error> {
        let text = String::deserialize(d)?;
        Source::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl From<PathBuf> for Source {
    fn from(p: PathBuf) -> Source {
        Source::Path(p)
    }
}

/// Turns a [`Source`] into the local file or directory the verifier reads.
#[derive(Debug, Clone)]
pub struct Resolver {
    base_dir: PathBuf,
}

impl Resolver {
    /// Relative paths resolve against `base_dir` (a config file's directory).
    pub fn new(base_dir: impl Into<PathBuf>) -> Resolver {
        Resolver { base_dir: base_dir.into() }
    }

    /// The directory relative paths resolve against.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// A path as written in a config file, made absolute against the base directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base_dir.join(p) }
    }

    /// The local file or directory holding the plugin `source` names. A local path is not read
    /// here (the verifier reports a missing file with its own error).
    pub fn resolve(&self, source: &Source) -> Result<PathBuf, SourceError> {
        match source {
            Source::Path(p) => Ok(self.path(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_as_paths_and_resolve_against_the_base_directory() {
        let r = Resolver::new("/etc/helios");
        for (text, resolved) in [
            ("plugins/a.tar.gz", "/etc/helios/plugins/a.tar.gz"),
            ("/opt/a.wasm", "/opt/a.wasm"),
            ("C:/weird:name", "/etc/helios/C:/weird:name"),
        ] {
            let s = Source::parse(text).unwrap();
            assert_eq!(s, Source::Path(text.into()));
            assert_eq!(s.to_string(), text);
            assert_eq!(r.resolve(&s).unwrap(), Path::new(resolved));
        }
    }

    #[test]
    fn a_scheme_this_build_does_not_fetch_from_is_refused_naming_it() {
        let e = Source::parse("oci://127.0.0.1:5000/p:1.0").unwrap_err();
        assert_eq!(e, SourceError::UnknownScheme { text: "oci://127.0.0.1:5000/p:1.0".into(), scheme: "oci".into() });
        assert!(e.to_string().contains("no oci:// sources"), "{e}");
        assert_eq!(Source::parse("  "), Err(SourceError::Empty));
    }
}
