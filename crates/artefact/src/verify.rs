//! The verification pipeline a host runs before compiling a byte of a plugin:
//! size cap → SHA-256 → blocklist → signature against the trusted keys → sidecar name and version
//! equal the manifest's → declared hooks are exported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use helios_plugin_schema::Hook;
use helios_plugin_schema::limits::DEFAULT_MAX_MODULE_BYTES;
use helios_plugin_schema::manifest::{
    ARTEFACT_MANIFEST, ARTEFACT_MANIFEST_SIGNATURE, ARTEFACT_MODULE, ARTEFACT_SIDECAR, ArtefactManifest,
    GUARD_MANIFEST_FILE, GUARD_WIT_WORLD, MAX_MANIFEST_BYTES, MAX_SIDECAR_BYTES, SIDECAR_SUFFIX,
};
use serde::Serialize;

use crate::archive::{Artefact, UnpackLimits, check_hooks_exported, read_artefact};
use crate::blocklist::Blocklist;
use crate::error::{Error, ErrorKind, Result, err, read_capped, resolve, shown};
use crate::keys::{TrustRoot, public_key_from_hex};
use crate::manifests::{parse_artefact_manifest, parse_guard_manifest};
use crate::module_info::{ModuleInfo, ModuleInfoError, is_component};
use crate::signing::{self, Anchors, ModuleSignature, Signer, sha256_hex};

/// What the pipeline checks against.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Keys a signature may come from. `None` trusts no key (then only a guard manifest's pinned key
    /// or `allow_unsigned` lets a plugin load).
    pub trust_root: Option<TrustRoot>,
    /// Modules that never load.
    pub blocklist: Option<Blocklist>,
    /// Largest module accepted, checked before hashing. Default: [`DEFAULT_MAX_MODULE_BYTES`].
    pub max_module_bytes: u64,
    /// Load unsigned plugins (development only; every such load logs a warning). A plugin whose
    /// manifest pins a key or names a signature still needs that signature. Default: false.
    pub allow_unsigned: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            trust_root: None,
            blocklist: None,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            allow_unsigned: false,
        }
    }
}

impl VerifyOptions {
    pub fn trust_root(mut self, root: TrustRoot) -> Self {
        self.trust_root = Some(root);
        self
    }
    pub fn blocklist(mut self, blocklist: Blocklist) -> Self {
        self.blocklist = Some(blocklist);
        self
    }
    pub fn max_module_bytes(mut self, bytes: u64) -> Self {
        self.max_module_bytes = bytes;
        self
    }
    pub fn allow_unsigned(mut self, allow: bool) -> Self {
        self.allow_unsigned = allow;
        self
    }
}

/// A plugin whose bytes passed every check, ready for a host to compile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedPlugin {
    pub name: String,
    pub version: String,
    /// Hooks the manifest declares (each exported by the module).
    #[serde(with = "helios_plugin_schema::manifest::hook_names")]
    pub hooks: Vec<Hook>,
    /// The plugin is a chio guard (`evaluate`).
    pub guard: bool,
    pub config: BTreeMap<String, String>,
    #[serde(skip)]
    pub wasm: Vec<u8>,
    /// Lowercase hex SHA-256 of `wasm`.
    pub sha256: String,
    /// `None` only when loaded unsigned under `allow_unsigned`.
    pub signer: Option<Signer>,
    /// The artefact file or manifest directory it came from.
    pub source: PathBuf,
    /// The WIT world the manifest declares (required for, and only meaningful to, components).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit_world: Option<String>,
    /// The content bundles (`sha256:<hex>`) the manifest lets the plugin read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundles: Vec<String>,
}

/// Verifies a plugin from a path: a `.tar.gz` artefact, a directory holding `guard-manifest.yaml`,
/// that manifest file itself, or a bare `.wasm` with its `.sig` sidecar ([`verify_module`]).
pub fn verify_path(path: &Path, opts: &VerifyOptions) -> Result<VerifiedPlugin> {
    if path.is_dir() {
        return verify_guard_manifest(&path.join(GUARD_MANIFEST_FILE), opts);
    }
    if path.file_name().is_some_and(|n| n == GUARD_MANIFEST_FILE)
        || path.extension().is_some_and(|e| e == "yaml" || e == "yml")
    {
        return verify_guard_manifest(path, opts);
    }
    if path.extension().is_some_and(|e| e == "wasm") {
        return verify_module(path, opts);
    }
    let artefact = read_artefact(path, &UnpackLimits { max_module_bytes: opts.max_module_bytes })?;
    let mut plugin = verify_artefact(&artefact, &shown(path), opts)?;
    plugin.source = path.to_path_buf();
    Ok(plugin)
}

/// The module's SHA-256 (lowercase hex) and what it declares. [`ModuleInfo::parse`] takes the
/// digest as it reads the module, so a module that parses is hashed once, not twice; one that does
/// not is hashed alone, and its parse error is reported where the pipeline reads the module (after
/// the hash and blocklist checks, as before).
fn digest_and_info(wasm: &[u8]) -> (String, std::result::Result<ModuleInfo, ModuleInfoError>) {
    match ModuleInfo::parse(wasm) {
        Ok(m) => (m.sha256.clone(), Ok(m)),
        Err(e) => (sha256_hex(wasm), Err(e)),
    }
}

fn too_large(plugin: &str, file: &str, size: u64, limit: u64) -> Error {
    err(ErrorKind::ModuleTooLarge, format!("plugin {plugin}: module {file} is {size} bytes (limit: {limit})"))
}

fn hash_mismatch(plugin: &str, file: &str, field: &str, expected: &str, found: &str) -> Error {
    err(
        ErrorKind::HashMismatch,
        format!("plugin {plugin}: {file} field {field}: expected {expected} (SHA-256 of the bytes), found {found}"),
    )
}

fn warn_unsigned(plugin: &str, source: &str, why: &str) {
    tracing::warn!(
        plugin,
        source,
        "loading unsigned plugin {plugin} from {source}: {why} (allow_unsigned is set; development only)"
    );
}

/// Verifies an unpacked artefact; `file` names it in errors.
pub fn verify_artefact(artefact: &Artefact, file: &str, opts: &VerifyOptions) -> Result<VerifiedPlugin> {
    let manifest_file = format!("{file}:{ARTEFACT_MANIFEST}");
    let manifest = parse_artefact_manifest(&artefact.manifest, &manifest_file)?;
    let plugin = manifest.name.as_str();
    // 1. size cap
    if artefact.wasm.len() as u64 > opts.max_module_bytes {
        return Err(too_large(plugin, ARTEFACT_MODULE, artefact.wasm.len() as u64, opts.max_module_bytes));
    }
    // 2. SHA-256
    let (sha, module) = digest_and_info(&artefact.wasm);
    if manifest.wasm_sha256 != sha {
        return Err(hash_mismatch(plugin, &manifest_file, "wasm_sha256", &sha, &manifest.wasm_sha256));
    }
    // 3. blocklist
    if let Some(b) = &opts.blocklist {
        b.check(&sha, plugin)?;
    }
    // The module is read before the signature step: what it declares about itself (name, version,
    // hooks) is covered by its hash, so it decides what an unsigned manifest may say.
    let module =
        module.map_err(|e| err(ErrorKind::ModuleInvalid, format!("plugin {plugin}: {ARTEFACT_MODULE}: {e}")))?;
    // 4. signatures
    let signer = match (&artefact.sidecar, &manifest.signature_sha256) {
        (Some(sidecar_bytes), Some(expected)) => {
            let found = sha256_hex(sidecar_bytes);
            if &found != expected {
                return Err(hash_mismatch(plugin, &manifest_file, "signature_sha256", &found, expected));
            }
            if opts.trust_root.is_none() && opts.allow_unsigned {
                warn_unsigned(plugin, file, "its signature is not checked because no trust root is configured");
                None
            } else {
                let (signer, key, sidecar) = match signing::parse_module_signature(sidecar_bytes, ARTEFACT_SIDECAR)? {
                    ModuleSignature::Sidecar(sidecar) => {
                        let anchors = Anchors { pinned: None, trust_root: opts.trust_root.as_ref() };
                        let signer = signing::verify_sidecar(&sidecar, &sha, &anchors, plugin, ARTEFACT_SIDECAR)?;
                        let key = public_key_from_hex(&sidecar.signer_public_key, ARTEFACT_SIDECAR)?;
                        (signer, key, Some(sidecar))
                    }
                    ModuleSignature::Raw(sig) => {
                        let (signer, key) = signing::verify_raw(
                            &sig,
                            &artefact.wasm,
                            opts.trust_root.as_ref(),
                            plugin,
                            ARTEFACT_SIDECAR,
                        )?;
                        (signer, key, None)
                    }
                };
                if let Some(msig) = &artefact.manifest_signature {
                    signing::verify_manifest_signature(&artefact.manifest, msig, &key, plugin)?;
                }
                // 5. name and version
                let bound = match &sidecar {
                    Some(sidecar) => {
                        signing::check_sidecar_names(sidecar, &manifest.name, &manifest.version, ARTEFACT_SIDECAR)?;
                        Bound::Sidecar
                    }
                    None => Bound::ModuleBytes,
                };
                if artefact.manifest_signature.is_none() {
                    check_manifest_adds_nothing(&manifest, &module, bound, file)?;
                }
                Some(signer)
            }
        }
        (Some(_), None) => {
            return Err(err(
                ErrorKind::SignatureInvalid,
                format!(
                    "plugin {plugin}: {file} holds {ARTEFACT_SIDECAR} but {ARTEFACT_MANIFEST} has no signature_sha256 binding it"
                ),
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                ErrorKind::SignatureMissing,
                format!(
                    "plugin {plugin}: {ARTEFACT_MANIFEST} names a signature (signature_sha256) but {file} has no {ARTEFACT_SIDECAR}"
                ),
            ));
        }
        (None, None) if opts.allow_unsigned => {
            warn_unsigned(plugin, file, "the artefact has no signature");
            None
        }
        (None, None) => {
            return Err(err(
                ErrorKind::SignatureMissing,
                format!(
                    "plugin {plugin}: {file} is unsigned (no {ARTEFACT_SIDECAR}); sign it with helios-plugin sign, or allow unsigned plugins explicitly"
                ),
            ));
        }
    };
    // 6. hooks
    check_hooks_exported(&manifest.hooks, &module, plugin)?;
    check_guard_exported(manifest.guard, &module, plugin)?;
    Ok(VerifiedPlugin {
        name: manifest.name,
        version: manifest.version,
        hooks: manifest.hooks,
        guard: manifest.guard,
        config: manifest.config,
        wasm: artefact.wasm.clone(),
        sha256: sha,
        signer,
        source: PathBuf::from(file),
        wit_world: None,
        bundles: manifest.bundles,
    })
}

/// What a verified module signature binds besides the module's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// A JSON sidecar: the name and version (already compared with the manifest's).
    Sidecar,
    /// A raw signature (HeliosProxy): the bytes only, and so what the module declares about itself.
    ModuleBytes,
}

/// The trust rule for an artefact whose manifest is not signed (no `manifest.sig`): the manifest
/// may say nothing the module signature does not already bind. That is the name and version (bound
/// by a sidecar, or declared by the module itself in its `helios.plugin` section), the hash, and
/// exactly the hooks (and guard) the module declares. A manifest that narrows the hooks could
/// switch a guard hook off; one that widens them, or carries `config`, changes what the plugin does:
/// either needs `manifest.sig`. `description`, `license` and `packed_at` are informational: no host
/// reads them to decide anything.
fn check_manifest_adds_nothing(
    manifest: &ArtefactManifest,
    module: &ModuleInfo,
    bound: Bound,
    file: &str,
) -> Result<()> {
    let mut unbound = Vec::new();
    if bound == Bound::ModuleBytes {
        for (field, in_manifest, declared) in
            [("name", &manifest.name, &module.declared_name), ("version", &manifest.version, &module.declared_version)]
        {
            if let Some(declared) = declared
                && declared != in_manifest
            {
                unbound.push(format!("{field} {in_manifest:?} differs from the {declared:?} the module declares"));
            }
        }
    }
    let own_hooks = module.self_declared_hooks();
    let same_hooks = own_hooks.len() == manifest.hooks.len() && own_hooks.iter().all(|h| manifest.hooks.contains(h));
    if !same_hooks || manifest.guard != module.self_declared_guard() {
        let list = |hooks: &[Hook], guard: bool| {
            let mut v: Vec<_> = hooks.iter().map(|h| h.export_name()).collect();
            if guard {
                v.push(helios_plugin_schema::abi::EVALUATE);
            }
            if v.is_empty() { "none".to_string() } else { format!("[{}]", v.join(", ")) }
        };
        unbound.push(format!(
            "hooks {} differ from the hooks the module declares {}",
            list(&manifest.hooks, manifest.guard),
            list(&own_hooks, module.self_declared_guard())
        ));
    }
    if !manifest.config.is_empty() {
        let keys: Vec<_> = manifest.config.keys().map(String::as_str).collect();
        unbound.push(format!("config ({})", keys.join(", ")));
    }
    if !manifest.bundles.is_empty() {
        unbound.push(format!("bundles ({})", manifest.bundles.join(", ")));
    }
    if unbound.is_empty() {
        return Ok(());
    }
    Err(err(
        ErrorKind::SignatureMissing,
        format!(
            "plugin {}: {file} has no {ARTEFACT_MANIFEST_SIGNATURE}, and its {ARTEFACT_MANIFEST} says what the module signature does not bind: {}; sign the manifest: helios-plugin sign --key KEY --input {file}",
            manifest.name,
            unbound.join("; ")
        ),
    ))
}

/// A manifest that declares a guard needs a module that exports `evaluate`.
fn check_guard_exported(guard: bool, module: &ModuleInfo, plugin: &str) -> Result<()> {
    if guard && !module.is_guard() {
        return Err(err(
            ErrorKind::HookNotExported,
            format!(
                "plugin {plugin}: declared hook {} (a chio guard) is not exported by the module",
                helios_plugin_schema::abi::EVALUATE
            ),
        ));
    }
    Ok(())
}

/// Verifies a bare module and its `<module>.sig` sidecar (what `helios-plugin sign --input x.wasm`
/// writes). Without a manifest, the sidecar is the only statement of name and version, so the
/// plugin takes its name and version from the (verified) sidecar; its hooks are those the module
/// declares in its `helios.plugin` section, or else every hook it exports; its config is empty.
/// Unsigned and allowed, it is named after the file stem, version `0.0.0`.
pub fn verify_module(wasm_path: &Path, opts: &VerifyOptions) -> Result<VerifiedPlugin> {
    let wasm_file = shown(wasm_path);
    let stem = wasm_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    // 1. size cap
    let wasm =
        read_capped(wasm_path, opts.max_module_bytes, |n| too_large(&stem, &wasm_file, n, opts.max_module_bytes))?;
    // 2. SHA-256 (there is no manifest digest to compare; the sidecar's is checked with the signature)
    let (sha, module) = digest_and_info(&wasm);
    // 3. blocklist
    if let Some(b) = &opts.blocklist {
        b.check(&sha, &stem)?;
    }
    // 4. signature
    let sidecar_path = PathBuf::from(format!("{}{SIDECAR_SUFFIX}", wasm_path.display()));
    let sidecar_file = shown(&sidecar_path);
    let (name, version, signer) = if sidecar_path.exists() && opts.trust_root.is_some() {
        let bytes = read_capped(&sidecar_path, MAX_SIDECAR_BYTES, |n| {
            err(
                ErrorKind::SignatureInvalid,
                format!("plugin {stem}: sidecar {sidecar_file}: {n} bytes (limit: {MAX_SIDECAR_BYTES})"),
            )
        })?;
        let sidecar = signing::parse_sidecar(&bytes, &sidecar_file)?;
        let anchors = Anchors { pinned: None, trust_root: opts.trust_root.as_ref() };
        let signer = signing::verify_sidecar(&sidecar, &sha, &anchors, &sidecar.module_name, &sidecar_file)?;
        crate::manifests::check_name(&sidecar.module_name, &sidecar_file, "module_name")
            .and_then(|_| crate::manifests::check_version(&sidecar.version, &sidecar_file, "version"))
            .map_err(|e| err(ErrorKind::SignatureInvalid, e.message().to_string()))?;
        (sidecar.module_name, sidecar.version, Some(signer))
    } else if opts.allow_unsigned {
        warn_unsigned(
            &stem,
            &wasm_file,
            if sidecar_path.exists() { "no trust root to check its sidecar against" } else { "no sidecar" },
        );
        (stem, "0.0.0".to_string(), None)
    } else if opts.trust_root.is_none() {
        return Err(err(
            ErrorKind::SignerUntrusted,
            format!(
                "plugin {stem}: no trust root to verify module {wasm_file} against (configure one, or allow unsigned plugins explicitly)"
            ),
        ));
    } else {
        return Err(err(
            ErrorKind::SignatureMissing,
            format!(
                "plugin {stem}: no sidecar {sidecar_file}; sign the module: helios-plugin sign --key KEY --input {wasm_file} --name NAME --version VERSION"
            ),
        ));
    };
    // 6. hooks
    let module =
        module.map_err(|e| err(ErrorKind::ModuleInvalid, format!("plugin {name}: module {wasm_file}: {e}")))?;
    let hooks = if module.declared_hooks.is_empty() { module.exported_hooks() } else { module.declared_hooks.clone() };
    check_hooks_exported(&hooks, &module, &name)?;
    Ok(VerifiedPlugin {
        guard: module.is_guard(),
        name,
        version,
        hooks,
        config: BTreeMap::new(),
        wasm,
        sha256: sha,
        signer,
        source: wasm_path.to_path_buf(),
        wit_world: None,
        bundles: Vec::new(),
    })
}

/// Verifies a `guard-manifest.yaml`, its module and the module's `.sig` sidecar.
///
/// Trust: the manifest's `signer_public_key` (pinned) and the options' trust root; when both are
/// present the key must satisfy both. A pinned key requires a sidecar even with `allow_unsigned`.
/// Without any trusted key, only `allow_unsigned` (the manifest's or the options') lets it load.
pub fn verify_guard_manifest(manifest_path: &Path, opts: &VerifyOptions) -> Result<VerifiedPlugin> {
    let file = shown(manifest_path);
    let bytes = read_capped(manifest_path, MAX_MANIFEST_BYTES, |n| {
        err(ErrorKind::ManifestInvalid, format!("manifest {file}: {n} bytes (limit: {MAX_MANIFEST_BYTES})"))
    })?;
    let manifest = parse_guard_manifest(&bytes, &file)?;
    let plugin = manifest.name.as_str();
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let wasm_path = resolve(dir, &manifest.wasm_path);
    let wasm_file = shown(&wasm_path);
    // 1. size cap (before reading more than the cap)
    let wasm =
        read_capped(&wasm_path, opts.max_module_bytes, |n| too_large(plugin, &wasm_file, n, opts.max_module_bytes))?;
    // 2. SHA-256
    let (sha, module) = digest_and_info(&wasm);
    if manifest.wasm_sha256 != sha {
        return Err(hash_mismatch(plugin, &file, "wasm_sha256", &sha, &manifest.wasm_sha256));
    }
    // 3. blocklist
    if let Some(b) = &opts.blocklist {
        b.check(&sha, plugin)?;
    }
    // 4. signature
    let sidecar_path = PathBuf::from(format!("{}{SIDECAR_SUFFIX}", wasm_path.display()));
    let sidecar_file = shown(&sidecar_path);
    let sidecar_bytes = match read_capped(&sidecar_path, MAX_SIDECAR_BYTES, |n| {
        err(
            ErrorKind::SignatureInvalid,
            format!("plugin {plugin}: sidecar {sidecar_file}: {n} bytes (limit: {MAX_SIDECAR_BYTES})"),
        )
    }) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == ErrorKind::Io && !sidecar_path.exists() => None,
        Err(e) => return Err(e),
    };
    let pinned = match &manifest.signer_public_key {
        Some(k) => Some(public_key_from_hex(k, &format!("manifest {file} field signer_public_key"))?),
        None => None,
    };
    let anchors = Anchors { pinned: pinned.as_ref(), trust_root: opts.trust_root.as_ref() };
    let allow_unsigned = manifest.allow_unsigned || opts.allow_unsigned;
    let signer = match sidecar_bytes {
        None if pinned.is_some() => {
            return Err(err(
                ErrorKind::SignatureMissing,
                format!(
                    "plugin {plugin}: manifest {file} pins signer_public_key, so sidecar {sidecar_file} is required (allow_unsigned cannot override a pinned key)"
                ),
            ));
        }
        None if allow_unsigned => {
            warn_unsigned(plugin, &file, "no sidecar");
            None
        }
        None => {
            return Err(err(
                ErrorKind::SignatureMissing,
                format!(
                    "plugin {plugin}: no sidecar {sidecar_file}; sign the module (helios-plugin sign) or set allow_unsigned: true for development"
                ),
            ));
        }
        Some(_) if !anchors.any() && allow_unsigned => {
            warn_unsigned(
                plugin,
                &file,
                "its sidecar is not checked because no key is trusted (no signer_public_key, no trust root)",
            );
            None
        }
        Some(_) if !anchors.any() => {
            return Err(err(
                ErrorKind::SignerUntrusted,
                format!(
                    "plugin {plugin}: no trusted key to check sidecar {sidecar_file} against (pin signer_public_key in {file} or configure a trust root)"
                ),
            ));
        }
        Some(bytes) => {
            let sidecar = signing::parse_sidecar(&bytes, &sidecar_file)?;
            let signer = signing::verify_sidecar(&sidecar, &sha, &anchors, plugin, &sidecar_file)?;
            // 5. name and version
            signing::check_sidecar_names(&sidecar, &manifest.name, &manifest.version, &sidecar_file)?;
            Some(signer)
        }
    };
    // 6. hooks (a component serves chio's guard world only, and must say so)
    let guard = if is_component(&wasm) {
        if manifest.wit_world.as_deref() != Some(GUARD_WIT_WORLD) {
            return Err(err(
                ErrorKind::ManifestInvalid,
                format!(
                    "plugin {plugin}: module {wasm_file} is a component, so manifest {file} must declare wit_world {GUARD_WIT_WORLD:?} (found {})",
                    manifest.wit_world.as_deref().map_or("none".into(), |w| format!("{w:?}"))
                ),
            ));
        }
        if let Some(h) = manifest.hooks.first() {
            return Err(err(
                ErrorKind::HookNotExported,
                format!("plugin {plugin}: declared hook {} is not served by a component guard", h.export_name()),
            ));
        }
        true
    } else {
        let module =
            module.map_err(|e| err(ErrorKind::ModuleInvalid, format!("plugin {plugin}: module {wasm_file}: {e}")))?;
        check_hooks_exported(&manifest.hooks, &module, plugin)?;
        module.is_guard()
    };
    Ok(VerifiedPlugin {
        guard,
        name: manifest.name,
        version: manifest.version,
        hooks: manifest.hooks,
        config: manifest.config,
        wasm,
        sha256: sha,
        signer,
        source: manifest_path.to_path_buf(),
        wit_world: manifest.wit_world,
        bundles: manifest.bundles,
    })
}
