//! OCI distribution of helios-plugin artefacts: push a `.tar.gz` artefact to a registry, pull it
//! back, and resolve `oci://host/repo:tag` or `oci://host/repo@sha256:<hex>` into a content-addressed
//! local cache.
//!
//! The registry layout is what `oras push <ref> my-plugin-1.0.0.tar.gz` writes, so artefacts pushed
//! by oras load here and ours pull with oras: an OCI image manifest
//! (`application/vnd.oci.image.manifest.v1+json`) whose config is oras's empty
//! `application/vnd.unknown.config.v1+json`, and one layer (`application/vnd.oci.image.layer.v1.tar`)
//! annotated `org.opencontainers.image.title` = the file name.
//!
//! ```no_run
//! use helios_plugin_oci::{OciRef, Options};
//! # fn main() -> Result<(), helios_plugin_oci::Error> {
//! let r = OciRef::parse("oci://127.0.0.1:5000/my-org/my-plugin:1.0.0")?;
//! let opts = Options { plain_http: true, ..Options::default() };
//! let pulled = helios_plugin_oci::pull(&r, &opts)?;
//! println!("{} bytes, manifest {}", pulled.bytes.len(), pulled.manifest_digest);
//! # Ok(()) }
//! ```
//!
//! **Invariant:** this crate moves bytes and checks digests; it never trusts what it pulls. A pulled
//! artefact goes through `helios_plugin_artefact::verify_*` like any other before it is compiled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{
    IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciImageManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

pub mod testing;

/// The scheme of an OCI source (`oci://host[:port]/repo[:tag|@sha256:…]`).
pub const SCHEME: &str = "oci://";
/// Config media type oras writes for a plain file push.
pub const ORAS_CONFIG_MEDIA_TYPE: &str = "application/vnd.unknown.config.v1+json";
/// Layer media type oras writes for a plain file push (and we write).
pub const LAYER_MEDIA_TYPE: &str = IMAGE_LAYER_MEDIA_TYPE;
/// Layer media types accepted on pull: oras's default, and gzip-typed layers (`oras push
/// file:application/vnd.oci.image.layer.v1.tar+gzip`).
pub const ACCEPTED_LAYER_MEDIA_TYPES: &[&str] = &[IMAGE_LAYER_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE];
/// The annotation naming a layer's file.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// Largest artefact pulled, in bytes (a 10 MiB module compresses well below this). Default: 32 MiB.
pub const MAX_ARTEFACT_BYTES: u64 = 32 << 20;

/// What went wrong, naming the reference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not an `oci://` reference this crate understands.
    #[error("E_OCI_REFERENCE: {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    /// The registry could not be reached or refused the request.
    #[error("E_OCI_REGISTRY: {reference}: registry {registry}: {reason}")]
    Registry { reference: String, registry: String, reason: String },
    /// The registry answered with something that is not a helios-plugin artefact.
    #[error("E_OCI_CONTENT: {reference}: {reason}")]
    Content { reference: String, reason: String },
    /// A digest did not match the bytes.
    #[error("E_OCI_DIGEST: {reference}: {what}: expected {expected}, found {found}")]
    Digest { reference: String, what: String, expected: String, found: String },
    /// A pinned digest is not in the cache and the registry was not to be asked.
    #[error("E_OCI_NOT_CACHED: {reference}: digest {digest} is not in cache {cache} (offline)")]
    NotCached { reference: String, digest: String, cache: String },
    /// A local file could not be read or written.
    #[error("E_IO: {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// A parsed `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    /// As written (for messages).
    pub raw: String,
    reference: Reference,
}

impl OciRef {
    /// Parses `oci://host[:port]/repo[:tag]` or `oci://host[:port]/repo@sha256:<64 hex>`. The scheme
    /// may be omitted (`host:port/repo:tag`, as oras writes references). A reference with neither
    /// tag nor digest means the tag `latest`, as for oras.
    pub fn parse(s: &str) -> Result<OciRef, Error> {
        let bad = |reason: String| Error::Reference { reference: s.to_owned(), reason };
        let rest = s.strip_prefix(SCHEME).unwrap_or(s);
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected oci://host[:port]/repository[:tag|@sha256:digest]".into()))?;
        if host.is_empty() || path.is_empty() {
            return Err(bad("expected oci://host[:port]/repository[:tag|@sha256:digest]".into()));
        }
        // Without a dot, a colon or `localhost`, the docker grammar would read the host as a path.
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad(format!(
                "{host:?} is not a registry host (expected a name with a dot, a port, or localhost)"
            )));
        }
        if let Some((_, d)) = rest.rsplit_once('@') {
            let hex = d.strip_prefix("sha256:").ok_or_else(|| bad(format!("digest {d:?} is not sha256")))?;
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad(format!("digest {d:?}: expected sha256: and 64 lowercase hex digits")));
            }
        }
        let reference: Reference = rest.parse().map_err(|e| bad(format!("{e}")))?;
        if let Some(d) = reference.digest() {
            let hex = d.strip_prefix("sha256:").ok_or_else(|| bad(format!("digest {d:?} is not sha256")))?;
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad(format!("digest {d:?}: expected sha256: and 64 lowercase hex digits")));
            }
        }
        Ok(OciRef { raw: s.to_owned(), reference })
    }

    /// `host[:port]`.
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The repository path (`my-org/my-plugin`).
    pub fn repository(&self) -> &str {
        self.reference.repository()
    }

    /// The tag, if the reference names one.
    pub fn tag(&self) -> Option<&str> {
        self.reference.tag()
    }

    /// The pinned manifest digest (`sha256:<hex>`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Talk plain HTTP (oras's `--plain-http`), for a registry without TLS such as a loopback test
    /// registry. Default: HTTPS.
    pub plain_http: bool,
    /// Registry credentials (`None`: anonymous).
    pub basic_auth: Option<(String, String)>,
}

/// A pushed artefact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:<hex>` of the manifest: pin it as `oci://host/repo@<digest>`.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the artefact layer.
    pub layer_digest: String,
}

/// A pulled artefact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The `.tar.gz` bytes (digest-checked, not yet verified as an artefact).
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of the manifest they came from.
    pub manifest_digest: String,
    /// The layer's title annotation, if any (`my-plugin-1.0.0.tar.gz`).
    pub title: Option<String>,
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn client(opts: &Options) -> Client {
    let protocol = if opts.plain_http { ClientProtocol::Http } else { ClientProtocol::Https };
    Client::new(ClientConfig { protocol, ..Default::default() })
}

fn auth(opts: &Options) -> RegistryAuth {
    match &opts.basic_auth {
        Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
        None => RegistryAuth::Anonymous,
    }
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io { path: "tokio runtime".into(), source: e })?;
    Ok(rt.block_on(f))
}

fn registry_err(r: &OciRef, e: impl std::fmt::Display) -> Error {
    // The client's errors nest their causes; show the chain on one line.
    Error::Registry { reference: r.raw.clone(), registry: r.registry().to_owned(), reason: e.to_string() }
}

/// Pushes `artefact` (the `.tar.gz` bytes) as `file_name`, the way `oras push <ref> <file_name>` does.
pub fn push(artefact: &[u8], file_name: &str, r: &OciRef, opts: &Options) -> Result<Pushed, Error> {
    if r.digest().is_some() {
        return Err(Error::Reference {
            reference: r.raw.clone(),
            reason: "push needs a tag (the registry computes the digest)".into(),
        });
    }
    let annotations = BTreeMap::from([(TITLE_ANNOTATION.to_owned(), file_name.to_owned())]);
    let layer = ImageLayer::new(artefact.to_vec(), LAYER_MEDIA_TYPE.to_owned(), Some(annotations));
    let layer_digest = layer.sha256_digest();
    let config = Config::new(b"{}".to_vec(), ORAS_CONFIG_MEDIA_TYPE.to_owned(), None);
    let c = client(opts);
    let a = auth(opts);
    let manifest_digest = block_on(async {
        c.push(&r.reference, std::slice::from_ref(&layer), config, &a, None).await.map_err(|e| registry_err(r, e))?;
        c.fetch_manifest_digest(&r.reference, &a).await.map_err(|e| registry_err(r, e))
    })??;
    Ok(Pushed { manifest_digest, layer_digest })
}

/// Pulls the artefact a reference names: its manifest (checked against a pinned digest), then its
/// one artefact layer (checked against the layer digest, capped at [`MAX_ARTEFACT_BYTES`]).
pub fn pull(r: &OciRef, opts: &Options) -> Result<Pulled, Error> {
    let c = client(opts);
    let a = auth(opts);
    block_on(pull_async(&c, &a, r))?
}

async fn pull_async(c: &Client, a: &RegistryAuth, r: &OciRef) -> Result<Pulled, Error> {
    let content = |reason: String| Error::Content { reference: r.raw.clone(), reason };
    let (manifest_bytes, _) =
        c.pull_manifest_raw(&r.reference, a, &[OCI_IMAGE_MEDIA_TYPE]).await.map_err(|e| registry_err(r, e))?;
    let manifest_digest = sha256_digest(&manifest_bytes);
    if let Some(pinned) = r.digest()
        && pinned != manifest_digest
    {
        return Err(Error::Digest {
            reference: r.raw.clone(),
            what: "manifest".into(),
            expected: pinned.to_owned(),
            found: manifest_digest,
        });
    }
    let manifest: OciImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| content(format!("the manifest is not an OCI image manifest: {e}")))?;
    let layer = pick_layer(&manifest).map_err(content)?;
    if layer.size < 0 || layer.size as u64 > MAX_ARTEFACT_BYTES {
        return Err(content(format!("artefact layer is {} bytes (limit: {MAX_ARTEFACT_BYTES})", layer.size)));
    }
    let mut bytes = Vec::with_capacity(layer.size as usize);
    c.pull_blob(&r.reference, layer, &mut bytes).await.map_err(|e| registry_err(r, e))?;
    let found = sha256_digest(&bytes);
    if found != layer.digest {
        return Err(Error::Digest {
            reference: r.raw.clone(),
            what: "artefact layer".into(),
            expected: layer.digest.clone(),
            found,
        });
    }
    if bytes.len() as u64 != layer.size as u64 {
        return Err(content(format!("artefact layer is {} bytes, the manifest says {}", bytes.len(), layer.size)));
    }
    let title = layer.annotations.as_ref().and_then(|a| a.get(TITLE_ANNOTATION)).cloned();
    Ok(Pulled { bytes, manifest_digest, title })
}

/// The artefact layer: the only layer of an accepted media type, or the one whose title ends in
/// `.tar.gz` when several are.
fn pick_layer(m: &OciImageManifest) -> Result<&oci_client::manifest::OciDescriptor, String> {
    let candidates: Vec<_> =
        m.layers.iter().filter(|l| ACCEPTED_LAYER_MEDIA_TYPES.contains(&l.media_type.as_str())).collect();
    let titled = |l: &oci_client::manifest::OciDescriptor| {
        l.annotations
            .as_ref()
            .and_then(|a| a.get(TITLE_ANNOTATION))
            .is_some_and(|t| t.ends_with(".tar.gz") || t.ends_with(".tgz"))
    };
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => {
            let types: Vec<_> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
            Err(format!(
                "no artefact layer (layers: {}; expected one of {})",
                if types.is_empty() { "none".to_string() } else { types.join(", ") },
                ACCEPTED_LAYER_MEDIA_TYPES.join(", ")
            ))
        }
        many => {
            let tarballs: Vec<_> = many.iter().copied().filter(|l| titled(l)).collect();
            match tarballs.as_slice() {
                [one] => Ok(one),
                _ => Err(format!("{} layers and not exactly one titled *.tar.gz; push the artefact alone", many.len())),
            }
        }
    }
}

/// A content-addressed cache of pulled artefacts: `<dir>/sha256/<manifest hex>.tar.gz`.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// Where a fetched artefact came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The cached `.tar.gz`.
    pub path: PathBuf,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// Served from the cache without asking the registry.
    pub from_cache: bool,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache file of a manifest digest.
    pub fn path_of(&self, manifest_digest: &str) -> PathBuf {
        let hex = manifest_digest.strip_prefix("sha256:").unwrap_or(manifest_digest);
        self.dir.join("sha256").join(format!("{hex}.tar.gz"))
    }

    /// Resolves a reference to a cached artefact file. A pinned digest already in the cache is
    /// served without the registry (offline); anything else is pulled (a tag always asks the
    /// registry, so a moved tag is seen) and stored under its manifest digest.
    pub fn fetch(&self, r: &OciRef, opts: &Options) -> Result<Fetched, Error> {
        if let Some(d) = r.digest() {
            let path = self.path_of(d);
            if path.is_file() {
                return Ok(Fetched { path, manifest_digest: d.to_owned(), from_cache: true });
            }
        }
        let pulled = pull(r, opts)?;
        let path = self.path_of(&pulled.manifest_digest);
        self.store(&path, &pulled.bytes)?;
        Ok(Fetched { path, manifest_digest: pulled.manifest_digest, from_cache: false })
    }

    /// Like [`Cache::fetch`] but never asks the registry: a pinned digest in the cache, or an error.
    pub fn fetch_offline(&self, r: &OciRef) -> Result<Fetched, Error> {
        let Some(d) = r.digest() else {
            return Err(Error::Reference {
                reference: r.raw.clone(),
                reason: "a tag needs the registry; pin a digest (@sha256:...) to load offline".into(),
            });
        };
        let path = self.path_of(d);
        if path.is_file() {
            return Ok(Fetched { path, manifest_digest: d.to_owned(), from_cache: true });
        }
        Err(Error::NotCached { reference: r.raw.clone(), digest: d.to_owned(), cache: self.dir.display().to_string() })
    }

    fn store(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let io = |p: &Path, e| Error::Io { path: p.display().to_string(), source: e };
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        // Write then rename, so a reader never sees half an artefact.
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_and_without_the_scheme_and_name_their_parts() {
        let r = OciRef::parse("oci://127.0.0.1:5000/my-org/my-plugin:1.0.0").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.digest()),
            ("127.0.0.1:5000", "my-org/my-plugin", Some("1.0.0"), None)
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = OciRef::parse(&format!("registry.example.com/my-org/my-plugin@{d}")).unwrap();
        assert_eq!((r.registry(), r.digest()), ("registry.example.com", Some(d.as_str())));
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (s, needle) in [
            ("oci://my-plugin", "expected oci://host"),
            ("oci://myhost/repo:1", "not a registry host"),
            ("oci://h.io/repo@sha256:abc", "64 lowercase hex"),
            ("oci://h.io/repo@md5:0123456789abcdef0123456789abcdef", "digest"),
        ] {
            let e = OciRef::parse(s).unwrap_err().to_string();
            assert!(e.starts_with("E_OCI_REFERENCE") && e.contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn an_uncached_pinned_digest_offline_names_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let r = OciRef::parse(&format!("oci://h.io/p@sha256:{}", "b".repeat(64))).unwrap();
        let e = Cache::new(dir.path()).fetch_offline(&r).unwrap_err().to_string();
        assert!(e.contains("E_OCI_NOT_CACHED") && e.contains(&dir.path().display().to_string()), "{e}");
        let tag = OciRef::parse("oci://h.io/p:1").unwrap();
        assert!(Cache::new(dir.path()).fetch_offline(&tag).unwrap_err().to_string().contains("needs the registry"));
    }
}
