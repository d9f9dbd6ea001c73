//! Where a plugin's bytes come from: the `source` of a `[[plugins]]` entry.
//!
//! A source is a local path, or an artefact in an OCI registry (`oci://host[:port]/repo:tag` or
//! `oci://host[:port]/repo@sha256:<hex>`, what `oras push` or `helios-plugin push` uploaded). A
//! remote source is fetched into a local, content-addressed cache by [`Resolver::resolve`];
//! everything after resolution (verification, loading) is shared, so a pulled artefact is verified
//! like any file before a byte of it is compiled.
//!
//! The cache is `$HELIOS_OCI_CACHE`, else `$XDG_CACHE_HOME/helios-plugin/oci`, else
//! `~/.cache/helios-plugin/oci` ([`default_oci_cache`]; [`Resolver::with_oci_cache`] overrides it).
//! A pinned digest already in the cache loads without the registry (offline); a tag always asks the
//! registry, so a moved tag is seen, and its failure names the registry. Registries on a loopback
//! address (`127.0.0.0/8`, `localhost`, `[::1]`) are spoken to over plain HTTP, as docker and oras
//! do for local registries; every other one over HTTPS. Credentials, when the registry needs them,
//! come from `HELIOS_REGISTRY_USERNAME` and `HELIOS_REGISTRY_PASSWORD`.

use std::fmt;
use std::path::{Path, PathBuf};

use helios_plugin_oci::{Cache, OciRef, Options};
use serde::Deserialize;

/// Where one plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A local file or directory, relative to the config file's directory: an artefact
    /// (`.tar.gz`), a directory holding `guard-manifest.yaml` (or that file), or a bare `.wasm` next
    /// to its `.wasm.sig` sidecar.
    Path(PathBuf),
    /// An artefact in an OCI registry, by tag or pinned digest.
    Oci(OciRef),
}

/// A `source` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("is empty")]
    Empty,
    /// `scheme://…` with a scheme this build does not fetch from.
    #[error("{text:?}: no {scheme}:// sources in this build (a source is a file path or oci://)")]
    UnknownScheme { text: String, scheme: String },
    /// An `oci://` reference that does not parse, or whose artefact could not be fetched (the
    /// message carries the `E_OCI_*` code, the reference and the registry).
    #[error("{0}")]
    Oci(String),
}

impl Source {
    /// Reads the text of a `source` field. `scheme://rest` names a remote source; anything else is
    /// a path.
    pub fn parse(text: &str) -> Result<Source, SourceError> {
        if text.trim().is_empty() {
            return Err(SourceError::Empty);
        }
        if let Some(scheme) = scheme_of(text) {
            if scheme == "oci" {
                return OciRef::parse(text).map(Source::Oci).map_err(|e| SourceError::Oci(e.to_string()));
            }
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
            Source::Oci(r) => write!(f, "{r}"),
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
    oci_cache: PathBuf,
}

/// The cache OCI sources are pulled into: `$HELIOS_OCI_CACHE`, else
/// `$XDG_CACHE_HOME/helios-plugin/oci`, else `$HOME/.cache/helios-plugin/oci`, else a directory
/// under the system's temporary directory.
pub fn default_oci_cache() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HELIOS_OCI_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("helios-plugin/oci")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/helios-plugin/oci")))
        .unwrap_or_else(|| std::env::temp_dir().join("helios-plugin-oci"))
}

/// Plain HTTP for a registry on a loopback address (`127.0.0.0/8`, `localhost`, `[::1]`), as
/// docker and oras treat local registries; HTTPS for every other.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => registry.split(':').next().unwrap_or(""),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Resolver {
    /// Relative paths resolve against `base_dir` (a config file's directory); OCI sources are pulled
    /// into [`default_oci_cache`].
    pub fn new(base_dir: impl Into<PathBuf>) -> Resolver {
        Resolver { base_dir: base_dir.into(), oci_cache: default_oci_cache() }
    }

    /// Pulls OCI sources into `dir` instead of the default cache.
    pub fn with_oci_cache(mut self, dir: impl Into<PathBuf>) -> Resolver {
        self.oci_cache = dir.into();
        self
    }

    /// The directory OCI sources are pulled into.
    pub fn oci_cache(&self) -> &Path {
        &self.oci_cache
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
    /// here (the verifier reports a missing file with its own error). An OCI source is fetched into
    /// the cache (a pinned digest already there without the registry) and its cached file returned.
    pub fn resolve(&self, source: &Source) -> Result<PathBuf, SourceError> {
        match source {
            Source::Path(p) => Ok(self.path(p)),
            Source::Oci(r) => {
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let basic_auth = env("HELIOS_REGISTRY_USERNAME").zip(env("HELIOS_REGISTRY_PASSWORD"));
                let opts = Options { plain_http: is_loopback(r.registry()), basic_auth };
                let fetched = Cache::new(&self.oci_cache).fetch(r, &opts).map_err(|e| {
                    let hint = match r.digest() {
                        None => " (a tag needs the registry; pin a digest, oci://host/repo@sha256:..., to load from the cache offline)",
                        Some(_) => "",
                    };
                    SourceError::Oci(format!("{e}{hint}"))
                })?;
                tracing::info!(source = %r, digest = %fetched.manifest_digest, cached = fetched.from_cache, file = %fetched.path.display(), "OCI source resolved");
                Ok(fetched.path)
            }
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
        let e = Source::parse("s3://bucket/p.tar.gz").unwrap_err();
        assert_eq!(e, SourceError::UnknownScheme { text: "s3://bucket/p.tar.gz".into(), scheme: "s3".into() });
        assert!(e.to_string().contains("no s3:// sources"), "{e}");
        assert_eq!(Source::parse("  "), Err(SourceError::Empty));
    }

    #[test]
    fn oci_references_parse_as_oci_sources_and_bad_ones_say_why() {
        let s = Source::parse("oci://127.0.0.1:5000/my-org/p:1.0.0").unwrap();
        assert!(matches!(&s, Source::Oci(r) if r.registry() == "127.0.0.1:5000" && r.tag() == Some("1.0.0")));
        assert_eq!(s.to_string(), "oci://127.0.0.1:5000/my-org/p:1.0.0");
        let e = Source::parse("oci://h.io/p@sha256:abc").unwrap_err().to_string();
        assert!(e.contains("E_OCI_REFERENCE") && e.contains("64 lowercase hex"), "{e}");
    }

    #[test]
    fn only_loopback_registries_are_spoken_to_in_plain_http() {
        for r in ["127.0.0.1:5000", "127.1.2.3", "localhost:5000", "localhost", "[::1]:5000"] {
            assert!(is_loopback(r), "{r}");
        }
        for r in
            ["registry.example.com", "10.0.0.1:5000", "ghcr.io", "localhost.example.com:5000", "[2001:db8::1]:5000"]
        {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
