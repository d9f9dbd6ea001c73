//! The `.tar.gz` artefact: packing, signing and unpacking in memory.
//!
//! Unpacking never touches the file system. It reads entries one by one from a decompressor that
//! stops after a fixed number of bytes, takes only the known entry names at the root, regular files
//! only, each under its own cap, and each once. A gzip bomb therefore costs at most that many
//! bytes of work and memory.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use ed25519_dalek::SigningKey;
use helios_plugin_schema::Hook;
use helios_plugin_schema::limits::DEFAULT_MAX_MODULE_BYTES;
use helios_plugin_schema::manifest::{
    ARTEFACT_ENTRIES, ARTEFACT_MANIFEST, ARTEFACT_MANIFEST_SIGNATURE, ARTEFACT_MODULE, ARTEFACT_SCHEMA_VERSION,
    ARTEFACT_SIDECAR, ARTEFACT_TAR_OVERHEAD_BYTES, ArtefactManifest, MAX_ARTEFACT_ENTRIES, MAX_MANIFEST_BYTES,
    MAX_MANIFEST_SIGNATURE_BYTES, MAX_SIDECAR_BYTES, SIGNATURE_ALGORITHM,
};

use crate::error::{Error, ErrorKind, Result, err, shown};
use crate::manifests::{artefact_manifest_bytes, check_name, check_version, parse_artefact_manifest};
use crate::module_info::ModuleInfo;
use crate::signing::{self, sha256_hex};

/// The entries of an artefact, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artefact {
    /// `manifest.json`, exactly as stored (its signature covers these bytes).
    pub manifest: Vec<u8>,
    /// `plugin.wasm`.
    pub wasm: Vec<u8>,
    /// `plugin.sig`, the module's sidecar.
    pub sidecar: Option<Vec<u8>>,
    /// `manifest.sig`.
    pub manifest_signature: Option<Vec<u8>>,
}

/// Caps applied while unpacking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Largest `plugin.wasm`. Default: [`DEFAULT_MAX_MODULE_BYTES`].
    pub max_module_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits { max_module_bytes: DEFAULT_MAX_MODULE_BYTES }
    }
}

impl UnpackLimits {
    /// Decompressed bytes read, at most: every entry at its cap plus the tar headers and padding.
    pub fn max_decompressed_bytes(&self) -> u64 {
        self.max_module_bytes
            + MAX_MANIFEST_BYTES
            + MAX_SIDECAR_BYTES
            + MAX_MANIFEST_SIGNATURE_BYTES
            + ARTEFACT_TAR_OVERHEAD_BYTES
    }

    fn entry_cap(&self, name: &str) -> u64 {
        match name {
            ARTEFACT_MODULE => self.max_module_bytes,
            ARTEFACT_MANIFEST => MAX_MANIFEST_BYTES,
            ARTEFACT_SIDECAR => MAX_SIDECAR_BYTES,
            _ => MAX_MANIFEST_SIGNATURE_BYTES,
        }
    }
}

/// The marker error of [`Capped`].
#[derive(Debug)]
struct LimitReached;

impl std::fmt::Display for LimitReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed size limit reached")
    }
}

impl std::error::Error for LimitReached {}

/// A reader that fails once more than `left` bytes would be read.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the cap: only a clean end of stream is acceptable.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(LimitReached)),
            };
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn malformed(file: &str, reason: impl std::fmt::Display) -> Error {
    err(ErrorKind::ArtefactMalformed, format!("artefact {file}: {reason}"))
}

/// Reads an artefact file into memory.
pub fn read_artefact(path: &Path, limits: &UnpackLimits) -> Result<Artefact> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    unpack(io::BufReader::new(file), &shown(path), limits)
}

/// Unpacks a `.tar.gz` stream in memory; `file` names it in errors.
pub fn unpack(reader: impl Read, file: &str, limits: &UnpackLimits) -> Result<Artefact> {
    let cap = limits.max_decompressed_bytes();
    let gz = flate2::read::GzDecoder::new(reader);
    let mut archive = tar::Archive::new(Capped { inner: gz, left: cap });
    let io_err = |e: io::Error| {
        if e.get_ref().is_some_and(|inner| inner.is::<LimitReached>()) {
            malformed(file, format!("decompressed size exceeds {cap} bytes; reading stopped there"))
        } else {
            malformed(file, format!("not a readable .tar.gz: {e}"))
        }
    };
    let mut found: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    let mut count = 0usize;
    for entry in archive.entries().map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        count += 1;
        if count > MAX_ARTEFACT_ENTRIES {
            return Err(malformed(file, format!("more than {MAX_ARTEFACT_ENTRIES} entries")));
        }
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
            let what = if kind.is_symlink() { "symlink" } else { "hard link" };
            return Err(malformed(
                file,
                format!("entry {raw_path:?} is a {what} (to {target:?}); only regular files are allowed"),
            ));
        }
        let name = entry_name(&raw_path).map_err(|reason| malformed(file, format!("entry {raw_path:?}: {reason}")))?;
        let Some(name) = name else {
            if kind.is_dir() {
                continue; // the root directory itself (`./`), as `tar -C dir .` writes it
            }
            return Err(malformed(file, format!("entry {raw_path:?} is not a file name")));
        };
        if !kind.is_file() {
            return Err(malformed(
                file,
                format!("entry {raw_path:?} is not a regular file (type {:?})", kind.as_byte() as char),
            ));
        }
        let Some(&known) = ARTEFACT_ENTRIES.iter().find(|k| **k == name) else {
            return Err(malformed(
                file,
                format!("unknown entry {raw_path:?} (an artefact holds only {})", ARTEFACT_ENTRIES.join(", ")),
            ));
        };
        if found.contains_key(known) {
            return Err(malformed(file, format!("entry {known} appears twice")));
        }
        let entry_cap = limits.entry_cap(known);
        let declared = entry.size();
        if declared > entry_cap {
            return Err(too_large(file, known, declared, entry_cap));
        }
        let mut bytes = Vec::with_capacity(declared as usize);
        entry.take(entry_cap + 1).read_to_end(&mut bytes).map_err(io_err)?;
        if bytes.len() as u64 > entry_cap {
            return Err(too_large(file, known, bytes.len() as u64, entry_cap));
        }
        found.insert(known, bytes);
    }
    // Read to the end so gzip's CRC and length are checked and nothing hides after the tar's end
    // marker (tar pads with zeros; anything else is smuggled data). Bounded by the same cap.
    let mut rest = archive.into_inner();
    let mut buf = [0u8; 8192];
    loop {
        let n = rest.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(malformed(file, "data after the end of the tar archive"));
        }
    }
    let manifest = found.remove(ARTEFACT_MANIFEST).ok_or_else(|| malformed(file, format!("no {ARTEFACT_MANIFEST}")))?;
    let wasm = found.remove(ARTEFACT_MODULE).ok_or_else(|| malformed(file, format!("no {ARTEFACT_MODULE}")))?;
    let sidecar = found.remove(ARTEFACT_SIDECAR);
    let manifest_signature = found.remove(ARTEFACT_MANIFEST_SIGNATURE);
    if manifest_signature.is_some() && sidecar.is_none() {
        return Err(malformed(file, format!("{ARTEFACT_MANIFEST_SIGNATURE} without {ARTEFACT_SIDECAR}")));
    }
    Ok(Artefact { manifest, wasm, sidecar, manifest_signature })
}

fn too_large(file: &str, entry: &str, size: u64, cap: u64) -> Error {
    if entry == ARTEFACT_MODULE {
        err(ErrorKind::ModuleTooLarge, format!("artefact {file}: entry {entry} is {size} bytes (limit: {cap})"))
    } else {
        malformed(file, format!("entry {entry} is {size} bytes (limit: {cap})"))
    }
}

/// The root-level file name of a tar path, `None` for the root directory itself. Absolute paths,
/// `..`, backslashes and nested paths are errors.
fn entry_name(path: &str) -> std::result::Result<Option<&str>, &'static str> {
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.contains('\\') || path.contains('\0') {
        return Err("backslash or NUL in path");
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err("path traversal (..)");
    }
    match parts.as_slice() {
        [] => Ok(None),
        [name] => Ok(Some(name)),
        _ => Err("nested path; every entry sits at the root"),
    }
}

/// Writes an artefact as a `.tar.gz`. The output depends only on the entries (fixed mtime, owner
/// and mode), so packing twice gives the same bytes.
pub fn write_artefact(artefact: &Artefact, out: impl Write) -> io::Result<()> {
    let gz = flate2::GzBuilder::new().mtime(0).write(out, flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    let entries = [
        (ARTEFACT_MANIFEST, Some(&artefact.manifest)),
        (ARTEFACT_MODULE, Some(&artefact.wasm)),
        (ARTEFACT_SIDECAR, artefact.sidecar.as_ref()),
        (ARTEFACT_MANIFEST_SIGNATURE, artefact.manifest_signature.as_ref()),
    ];
    for (name, bytes) in entries {
        let Some(bytes) = bytes else { continue };
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        tar.append_data(&mut header, name, bytes.as_slice())?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// Writes an artefact to `path` (through a temporary file in the same directory, so a reader never
/// sees half an artefact).
pub fn save_artefact(artefact: &Artefact, path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp-helios-plugin");
    let write = || -> io::Result<()> {
        let mut f = io::BufWriter::new(std::fs::File::create(&tmp)?);
        write_artefact(artefact, &mut f)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// How a packed module is signed.
#[derive(Debug)]
pub enum PackSigning {
    /// No signature: verification needs `allow_unsigned`.
    Unsigned,
    /// A sidecar made by `sign` (or chio's tools) for this module, name and version. The manifest
    /// stays unsigned until the artefact is signed with [`sign_artefact`].
    Sidecar(Vec<u8>),
    /// Sign module and manifest with this key.
    Key(Box<SigningKey>),
    /// HeliosProxy's format: `plugin.sig` is base64 of a raw Ed25519 signature over the module bytes,
    /// and there is no `manifest.sig` (so the manifest may only repeat what the module declares; see
    /// SIGNING.md).
    RawKey(Box<SigningKey>),
}

/// What goes into a new artefact besides the module.
#[derive(Debug)]
pub struct PackOptions {
    pub name: String,
    pub version: String,
    pub description: String,
    pub license: String,
    /// Hooks to declare; `None` declares every hook the module exports.
    pub hooks: Option<Vec<Hook>>,
    /// Declare a chio guard (`evaluate`). `None`: when `hooks` is `None`, if the module exports
    /// `evaluate`; otherwise not.
    pub guard: Option<bool>,
    pub config: BTreeMap<String, String>,
    /// Content bundles (`sha256:<hex>`) the plugin may read; listing any needs a signed manifest.
    pub bundles: Vec<String>,
    pub signing: PackSigning,
    /// RFC 3339 time; `None` uses `SOURCE_DATE_EPOCH` if set, else now.
    pub packed_at: Option<String>,
    /// Largest module accepted. Default: [`DEFAULT_MAX_MODULE_BYTES`].
    pub max_module_bytes: u64,
}

impl PackOptions {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        PackOptions {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            license: String::new(),
            hooks: None,
            guard: None,
            config: BTreeMap::new(),
            bundles: Vec::new(),
            signing: PackSigning::Unsigned,
            packed_at: None,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
        }
    }
}

/// A packed artefact and what `pack` noticed on the way.
#[derive(Debug)]
pub struct Packed {
    pub artefact: Artefact,
    pub manifest: ArtefactManifest,
    pub module: ModuleInfo,
    /// Hooks the module exports that the manifest does not declare (they will never be called).
    pub undeclared_exports: Vec<Hook>,
}

/// Builds an artefact. Refuses declared hooks the module does not export.
pub fn pack(wasm: Vec<u8>, opts: PackOptions) -> Result<Packed> {
    let file = "pack options";
    check_name(&opts.name, file, "name")?;
    check_version(&opts.version, file, "version")?;
    if wasm.len() as u64 > opts.max_module_bytes {
        return Err(err(
            ErrorKind::ModuleTooLarge,
            format!("plugin {}: module is {} bytes (limit: {})", opts.name, wasm.len(), opts.max_module_bytes),
        ));
    }
    let module = ModuleInfo::parse(&wasm)
        .map_err(|e| err(ErrorKind::ModuleInvalid, format!("plugin {}: module: {e}", opts.name)))?;
    let exported = module.exported_hooks();
    let hooks = opts.hooks.clone().unwrap_or_else(|| exported.clone());
    let guard = opts.guard.unwrap_or_else(|| opts.hooks.is_none() && module.is_guard());
    check_hooks_exported(&hooks, &module, &opts.name)?;
    if guard && !module.is_guard() {
        return Err(err(
            ErrorKind::HookNotExported,
            format!(
                "plugin {}: declared hook {} (a chio guard) is not exported by the module",
                opts.name,
                helios_plugin_schema::abi::EVALUATE
            ),
        ));
    }
    let undeclared_exports = exported.iter().copied().filter(|h| !hooks.contains(h)).collect();
    let sha = sha256_hex(&wasm);
    let mut manifest = ArtefactManifest {
        schema_version: ARTEFACT_SCHEMA_VERSION.into(),
        name: opts.name.clone(),
        version: opts.version.clone(),
        description: opts.description,
        license: opts.license,
        hooks,
        guard,
        wasm_sha256: sha.clone(),
        signature_sha256: None,
        signature_algorithm: SIGNATURE_ALGORITHM.into(),
        packed_at: match opts.packed_at {
            Some(t) => t,
            None => packed_at_now(),
        },
        config: opts.config,
        bundles: opts.bundles,
    };
    let artefact = match opts.signing {
        PackSigning::Unsigned => {
            Artefact { manifest: artefact_manifest_bytes(&manifest), wasm, sidecar: None, manifest_signature: None }
        }
        PackSigning::Sidecar(bytes) => {
            let sc = match signing::parse_module_signature(&bytes, "given sidecar")? {
                signing::ModuleSignature::Sidecar(sc) => sc,
                // HeliosProxy's format: only a trust root can tell whether it verifies.
                signing::ModuleSignature::Raw(_) => {
                    manifest.signature_sha256 = Some(sha256_hex(&bytes));
                    let manifest = artefact_manifest_bytes(&manifest);
                    let artefact = Artefact { manifest, wasm, sidecar: Some(bytes), manifest_signature: None };
                    let manifest = parse_artefact_manifest(&artefact.manifest, ARTEFACT_MANIFEST)?;
                    return Ok(Packed { artefact, manifest, module, undeclared_exports });
                }
            };
            if sc.module_hash != sha {
                return Err(err(
                    ErrorKind::HashMismatch,
                    format!(
                        "plugin {}: sidecar field module_hash: expected {sha} (SHA-256 of the module), found {}",
                        opts.name, sc.module_hash
                    ),
                ));
            }
            signing::check_sidecar_names(&sc, &opts.name, &opts.version, "given sidecar")?;
            manifest.signature_sha256 = Some(sha256_hex(&bytes));
            Artefact {
                manifest: artefact_manifest_bytes(&manifest),
                wasm,
                sidecar: Some(bytes),
                manifest_signature: None,
            }
        }
        PackSigning::RawKey(key) => {
            let sig = signing::sign_module_raw(&key, &wasm);
            manifest.signature_sha256 = Some(sha256_hex(&sig));
            Artefact {
                manifest: artefact_manifest_bytes(&manifest),
                wasm,
                sidecar: Some(sig),
                manifest_signature: None,
            }
        }
        PackSigning::Key(key) => {
            let unsigned = Artefact {
                manifest: artefact_manifest_bytes(&manifest),
                wasm,
                sidecar: None,
                manifest_signature: None,
            };
            let signed = sign_artefact(&unsigned, &key)?;
            manifest = parse_artefact_manifest(&signed.manifest, ARTEFACT_MANIFEST)?;
            signed
        }
    };
    Ok(Packed { artefact, manifest, module, undeclared_exports })
}

/// Every declared hook must be exported by the module.
pub fn check_hooks_exported(hooks: &[Hook], module: &ModuleInfo, plugin: &str) -> Result<()> {
    let missing: Vec<_> =
        hooks.iter().filter(|h| !module.exports_func(h.export_name())).map(|h| h.export_name()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let exported: Vec<_> = module.exported_hooks().iter().map(|h| h.export_name()).collect();
    Err(err(
        ErrorKind::HookNotExported,
        format!(
            "plugin {plugin}: declared hook(s) {} not exported by the module (it exports: {})",
            missing.join(", "),
            if exported.is_empty() { "no hooks".to_string() } else { exported.join(", ") }
        ),
    ))
}

/// Signs (or re-signs) an artefact: a new sidecar for its module, name and version, the manifest's
/// `signature_sha256` updated to it, and `manifest.sig` over the new manifest. Everything else in the
/// manifest is kept.
pub fn sign_artefact(artefact: &Artefact, key: &SigningKey) -> Result<Artefact> {
    let mut manifest = parse_artefact_manifest(&artefact.manifest, ARTEFACT_MANIFEST)?;
    let sha = sha256_hex(&artefact.wasm);
    if manifest.wasm_sha256 != sha {
        return Err(err(
            ErrorKind::HashMismatch,
            format!(
                "plugin {}: manifest field wasm_sha256: expected {sha} (SHA-256 of {ARTEFACT_MODULE}), found {}",
                manifest.name, manifest.wasm_sha256
            ),
        ));
    }
    let sidecar = signing::sidecar_bytes(&signing::sign_module(key, &artefact.wasm, &manifest.name, &manifest.version));
    manifest.signature_sha256 = Some(sha256_hex(&sidecar));
    manifest.signature_algorithm = SIGNATURE_ALGORITHM.into();
    let manifest_bytes = artefact_manifest_bytes(&manifest);
    let manifest_signature = signing::sign_manifest(key, &manifest_bytes);
    Ok(Artefact {
        manifest: manifest_bytes,
        wasm: artefact.wasm.clone(),
        sidecar: Some(sidecar),
        manifest_signature: Some(manifest_signature),
    })
}

/// `SOURCE_DATE_EPOCH` (reproducible builds) or the current time, as RFC 3339 UTC.
pub fn packed_at_now() -> String {
    let secs =
        std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
        });
    rfc3339_utc(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_316_400), "2026-11-22T03:00:00Z");
    }

    #[test]
    fn entry_names_are_root_files_only() {
        assert_eq!(entry_name("manifest.json"), Ok(Some("manifest.json")));
        assert_eq!(entry_name("./plugin.wasm"), Ok(Some("plugin.wasm")));
        assert_eq!(entry_name("./"), Ok(None));
        assert!(entry_name("/etc/passwd").is_err());
        assert!(entry_name("../plugin.wasm").is_err());
        assert!(entry_name("a/../../x").is_err());
        assert!(entry_name("dir/plugin.wasm").is_err());
    }
}
