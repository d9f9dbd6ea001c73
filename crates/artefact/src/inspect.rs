//! What an artefact holds, without trusting it: `helios-plugin inspect`.

use std::collections::BTreeMap;
use std::path::Path;

use helios_plugin_schema::Hook;
use helios_plugin_schema::manifest::{ARTEFACT_MANIFEST, hook_names};
use serde::Serialize;

use crate::archive::{UnpackLimits, read_artefact};
use crate::error::{ErrorKind, Result, err, shown};
use crate::manifests::parse_artefact_manifest;
use crate::module_info::ModuleInfo;
use crate::signing::{ModuleSignature, parse_module_signature, sha256_hex};

/// Sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// The `.tar.gz` file.
    pub artefact: u64,
    pub module: u64,
    pub manifest: u64,
    pub sidecar: Option<u64>,
}

/// The sidecar, as written (not verified).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureInfo {
    /// `sidecar` (JSON, binds name and version) or `raw` (HeliosProxy's base64 signature over the
    /// module bytes, which names no key: only `verify` can tell who signed it).
    pub format: &'static str,
    pub signer_public_key: Option<String>,
    pub module_name: Option<String>,
    pub version: Option<String>,
    /// The sidecar's `module_hash` equals the module's SHA-256 (`None` for a raw signature).
    pub module_hash_matches: Option<bool>,
    /// The sidecar's SHA-256 equals the manifest's `signature_sha256`.
    pub sidecar_sha256_matches: bool,
    /// The artefact holds a manifest signature.
    pub manifest_signed: bool,
}

/// Everything `inspect` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    pub file: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub license: String,
    pub schema_version: String,
    pub packed_at: String,
    #[serde(with = "hook_names")]
    pub declared_hooks: Vec<Hook>,
    /// The manifest declares a chio guard (`evaluate`).
    pub guard: bool,
    #[serde(with = "hook_names")]
    pub exported_hooks: Vec<Hook>,
    /// Exported hooks the manifest does not declare.
    #[serde(with = "hook_names")]
    pub undeclared_exports: Vec<Hook>,
    /// Declared hooks the module does not export (a valid artefact has none).
    #[serde(with = "hook_names")]
    pub missing_exports: Vec<Hook>,
    /// Every import as `module.name`.
    pub imports: Vec<String>,
    /// Imports outside the host surface (such a module will not load).
    pub foreign_imports: Vec<String>,
    pub sizes: Sizes,
    /// SHA-256 of the module.
    pub sha256: String,
    /// The manifest's `wasm_sha256` equals `sha256`.
    pub sha256_matches_manifest: bool,
    /// `None` for an unsigned artefact.
    pub signature: Option<SignatureInfo>,
    pub config: BTreeMap<String, String>,
}

/// Reads an artefact and reports what it holds. Fails only when it cannot be read at all
/// (unsafe archive, unparsable manifest or module); mismatches are reported, not raised.
pub fn inspect_artefact(path: &Path, limits: &UnpackLimits) -> Result<Inspection> {
    let file = shown(path);
    let artefact = read_artefact(path, limits)?;
    let manifest = parse_artefact_manifest(&artefact.manifest, &format!("{file}:{ARTEFACT_MANIFEST}"))?;
    let module = ModuleInfo::parse(&artefact.wasm)
        .map_err(|e| err(ErrorKind::ModuleInvalid, format!("plugin {}: module: {e}", manifest.name)))?;
    let exported = module.exported_hooks();
    let sha = module.sha256.clone();
    let signature = match &artefact.sidecar {
        None => None,
        Some(bytes) => {
            let sidecar_sha256_matches = manifest.signature_sha256.as_deref() == Some(sha256_hex(bytes).as_str());
            let manifest_signed = artefact.manifest_signature.is_some();
            Some(match parse_module_signature(bytes, &format!("{file}:plugin.sig"))? {
                ModuleSignature::Sidecar(sc) => SignatureInfo {
                    format: "sidecar",
                    module_hash_matches: Some(sc.module_hash == sha),
                    sidecar_sha256_matches,
                    signer_public_key: Some(sc.signer_public_key),
                    module_name: Some(sc.module_name),
                    version: Some(sc.version),
                    manifest_signed,
                },
                ModuleSignature::Raw(_) => SignatureInfo {
                    format: "raw",
                    module_hash_matches: None,
                    sidecar_sha256_matches,
                    signer_public_key: None,
                    module_name: None,
                    version: None,
                    manifest_signed,
                },
            })
        }
    };
    Ok(Inspection {
        sizes: Sizes {
            artefact: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            module: artefact.wasm.len() as u64,
            manifest: artefact.manifest.len() as u64,
            sidecar: artefact.sidecar.as_ref().map(|s| s.len() as u64),
        },
        file,
        undeclared_exports: exported.iter().copied().filter(|h| !manifest.hooks.contains(h)).collect(),
        missing_exports: manifest.hooks.iter().copied().filter(|h| !exported.contains(h)).collect(),
        exported_hooks: exported,
        declared_hooks: manifest.hooks,
        guard: manifest.guard,
        imports: module.imports.iter().map(|i| format!("{}.{}", i.module, i.name)).collect(),
        foreign_imports: module.foreign_imports(),
        sha256_matches_manifest: manifest.wasm_sha256 == sha,
        sha256: sha,
        signature,
        name: manifest.name,
        version: manifest.version,
        description: manifest.description,
        license: manifest.license,
        schema_version: manifest.schema_version,
        packed_at: manifest.packed_at,
        config: manifest.config,
    })
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |hooks: &[Hook]| {
            if hooks.is_empty() {
                "-".to_string()
            } else {
                hooks.iter().map(|h| h.export_name()).collect::<Vec<_>>().join(", ")
            }
        };
        writeln!(f, "artefact     {}", self.file)?;
        writeln!(f, "name         {}", self.name)?;
        writeln!(f, "version      {}", self.version)?;
        if !self.description.is_empty() {
            writeln!(f, "description  {}", self.description)?;
        }
        if !self.license.is_empty() {
            writeln!(f, "license      {}", self.license)?;
        }
        writeln!(f, "packed at    {}", self.packed_at)?;
        writeln!(
            f,
            "hooks        declared: {}{}",
            list(&self.declared_hooks),
            if self.guard { " + evaluate (chio guard)" } else { "" }
        )?;
        writeln!(f, "             exported: {}", list(&self.exported_hooks))?;
        if !self.undeclared_exports.is_empty() {
            writeln!(f, "             exported but not declared (never called): {}", list(&self.undeclared_exports))?;
        }
        if !self.missing_exports.is_empty() {
            writeln!(f, "             DECLARED BUT NOT EXPORTED: {}", list(&self.missing_exports))?;
        }
        writeln!(
            f,
            "imports      {}",
            if self.imports.is_empty() { "-".to_string() } else { self.imports.join(", ") }
        )?;
        if !self.foreign_imports.is_empty() {
            writeln!(f, "             OUTSIDE THE HOST SURFACE: {}", self.foreign_imports.join(", "))?;
        }
        let s = &self.sizes;
        write!(f, "sizes        artefact {} B, module {} B, manifest {} B", s.artefact, s.module, s.manifest)?;
        match s.sidecar {
            Some(n) => writeln!(f, ", sidecar {n} B")?,
            None => writeln!(f)?,
        }
        writeln!(
            f,
            "sha256       {}{}",
            self.sha256,
            if self.sha256_matches_manifest { "" } else { " (DOES NOT MATCH the manifest)" }
        )?;
        match &self.signature {
            None => writeln!(f, "signature    none (unsigned)")?,
            Some(sig) => {
                match (&sig.signer_public_key, &sig.module_name, &sig.version) {
                    (Some(key), Some(name), Some(version)) => {
                        writeln!(f, "signer       {key} (not checked; run helios-plugin verify)")?;
                        writeln!(f, "signed for   {name} {version}")?;
                    }
                    _ => writeln!(
                        f,
                        "signature    raw Ed25519 over the module (HeliosProxy format; run helios-plugin verify to find the signer)"
                    )?,
                }
                if sig.module_hash_matches == Some(false) || !sig.sidecar_sha256_matches {
                    writeln!(f, "             SIGNATURE DOES NOT MATCH the module or the manifest")?;
                }
                writeln!(
                    f,
                    "manifest     {}",
                    if sig.manifest_signed {
                        "signed"
                    } else {
                        "not signed (verify accepts it only if it repeats what the module declares)"
                    }
                )?;
            }
        }
        if !self.config.is_empty() {
            writeln!(f, "config")?;
            for (k, v) in &self.config {
                writeln!(f, "  {k} = {v}")?;
            }
        }
        Ok(())
    }
}
