//! The files that describe and authenticate a plugin: chio's `guard-manifest.yaml` and its signature
//! sidecar, the `.tar.gz` artefact's `manifest.json`, the digest blocklist, and the exact bytes every
//! signature covers.
//!
//! These are types and layouts only. Parsing files, checking values and verifying signatures is the
//! job of `helios-plugin-artefact`.
//!
//! Every type here is `deny_unknown_fields`: each one is written by an operator or a tool and read by a
//! host that decides whether to run code, so a misspelt `allow_unsigend: true` or `signer_publc_key`
//! must be an error instead of a silently ignored line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Hook;

// ---- guard-manifest.yaml (chio) --------------------------------------------------------------

/// File name of chio's manifest, next to the module it describes.
pub const GUARD_MANIFEST_FILE: &str = "guard-manifest.yaml";
/// The `abi_version` values a manifest may declare.
pub const SUPPORTED_ABI_VERSIONS: &[&str] = &["1"];
/// The only WIT world a component guard may declare in `wit_world`.
pub const GUARD_WIT_WORLD: &str = "chio:guard/guard@0.2.0";
/// The signature sidecar of a module is the module's path with this suffix appended
/// (`pii.wasm` ⇒ `pii.wasm.sig`).
pub const SIDECAR_SUFFIX: &str = ".sig";

/// `guard-manifest.yaml`: chio's description of one guard module, plus the hooks it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardManifest {
    /// Identifier of the plugin; bound by the signature.
    pub name: String,
    /// Version of the plugin; bound by the signature.
    pub version: String,
    /// ABI the module targets; one of [`SUPPORTED_ABI_VERSIONS`].
    pub abi_version: String,
    /// Path of the module, relative to the manifest's directory or absolute.
    pub wasm_path: String,
    /// Lowercase hex SHA-256 of the module.
    pub wasm_sha256: String,
    /// Required for components and then equal to [`GUARD_WIT_WORLD`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit_world: Option<String>,
    /// String key/value pairs the guest reads through `get_config`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Hex Ed25519 key (64 hex digits) the sidecar must be signed with. When set, a sidecar is
    /// required even if `allow_unsigned` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_public_key: Option<String>,
    /// Load without a sidecar (development only). Default: false.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Hooks of the catalogue the plugin serves (export names). Empty for a plain chio guard.
    #[serde(default, with = "hook_names", skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
    /// Content bundles (`sha256:<64 lowercase hex>`) the guard may read; no other bundle opens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundles: Vec<String>,
}

/// `<wasm_path>.sig` (and `plugin.sig` in an artefact): a detached signature over
/// [`signed_module_message`]. Every field is lowercase hex except the name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// SHA-256 of the module bytes.
    pub module_hash: String,
    pub module_name: String,
    pub version: String,
    /// The 32-byte Ed25519 public key.
    pub signer_public_key: String,
    /// The 64-byte Ed25519 signature.
    pub signature: String,
}

/// Domain separator that opens every module signature message.
pub const MODULE_SIGNATURE_DOMAIN: &str = "chio-wasm-guard-v1";

/// The exact bytes a module signature covers:
/// `chio-wasm-guard-v1\n<module_hash>\n<module_name>\n<version>\n<signer_public_key>` (no trailing
/// newline). Binding the name, version and key stops a signature from being replayed on another
/// module, version or signer.
pub fn signed_module_message(module_hash: &str, module_name: &str, version: &str, signer_public_key: &str) -> Vec<u8> {
    [MODULE_SIGNATURE_DOMAIN, module_hash, module_name, version, signer_public_key].join("\n").into_bytes()
}

// ---- .tar.gz artefact (HeliosProxy) ----------------------------------------------------------

/// `schema_version` of the artefact manifests this version writes and reads.
pub const ARTEFACT_SCHEMA_VERSION: &str = "1.0";
/// `signature_algorithm` of every artefact manifest.
pub const SIGNATURE_ALGORITHM: &str = "ed25519";

/// Artefact entry: the [`ArtefactManifest`] as JSON. Required.
pub const ARTEFACT_MANIFEST: &str = "manifest.json";
/// Artefact entry: the module. Required.
pub const ARTEFACT_MODULE: &str = "plugin.wasm";
/// Artefact entry: the module's [`Sidecar`]. Optional.
pub const ARTEFACT_SIDECAR: &str = "plugin.sig";
/// Artefact entry: the lowercase hex Ed25519 signature (128 digits, optionally followed by one
/// `\n`) over [`signed_manifest_message`] of `manifest.json`, by the sidecar's key. Optional; needs
/// [`ARTEFACT_SIDECAR`].
///
/// The manifest carries the plugin's config and hooks, which change what the plugin does, so a
/// verified artefact needs them signed too. It cannot sign itself (it holds the hash of the
/// sidecar), hence a separate entry.
pub const ARTEFACT_MANIFEST_SIGNATURE: &str = "manifest.sig";
/// Every entry an artefact may hold, in the order `pack` writes them. Anything else is rejected.
pub const ARTEFACT_ENTRIES: &[&str] =
    &[ARTEFACT_MANIFEST, ARTEFACT_MODULE, ARTEFACT_SIDECAR, ARTEFACT_MANIFEST_SIGNATURE];

/// Largest `manifest.json` (and `guard-manifest.yaml`) read. Default: 64 KiB.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 10;
/// Largest sidecar read. Default: 4 KiB.
pub const MAX_SIDECAR_BYTES: u64 = 4 << 10;
/// Largest `manifest.sig` read. Default: 1 KiB.
pub const MAX_MANIFEST_SIGNATURE_BYTES: u64 = 1 << 10;
/// Tar entries read before an artefact is rejected (directory entries included). Default: 16.
pub const MAX_ARTEFACT_ENTRIES: usize = 16;
/// Bytes of tar stream (headers and padding included) decompressed on top of the entries' own caps
/// before an artefact is rejected. Default: 64 KiB.
pub const ARTEFACT_TAR_OVERHEAD_BYTES: u64 = 64 << 10;

/// Domain separator of the manifest signature (distinct from the module's, so neither signature can
/// stand in for the other).
pub const MANIFEST_SIGNATURE_DOMAIN: &str = "helios-plugin-manifest-v1";

/// The exact bytes a manifest signature covers:
/// `helios-plugin-manifest-v1\n<sha256 of manifest.json bytes, hex>\n<signer_public_key>`.
pub fn signed_manifest_message(manifest_sha256: &str, signer_public_key: &str) -> Vec<u8> {
    [MANIFEST_SIGNATURE_DOMAIN, manifest_sha256, signer_public_key].join("\n").into_bytes()
}

/// `manifest.json` at the root of an artefact.
///
/// On the wire, a chio guard artefact lists chio's export [`crate::abi::EVALUATE`] among its `hooks`
/// (`"hooks": ["evaluate"]`); in memory that entry is the [`guard`](Self::guard) flag, so `hooks`
/// stays a list of the hook catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ArtefactManifestJson", into = "ArtefactManifestJson")]
pub struct ArtefactManifest {
    /// [`ARTEFACT_SCHEMA_VERSION`].
    pub schema_version: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub license: String,
    /// Hooks the plugin serves; each must be exported by the module.
    pub hooks: Vec<Hook>,
    /// The plugin is a chio guard (`evaluate`), listed as `"evaluate"` in `hooks`.
    pub guard: bool,
    /// Lowercase hex SHA-256 of `plugin.wasm`.
    pub wasm_sha256: String,
    /// Lowercase hex SHA-256 of the exact `plugin.sig` bytes; absent when the artefact is unsigned.
    pub signature_sha256: Option<String>,
    /// [`SIGNATURE_ALGORITHM`].
    pub signature_algorithm: String,
    /// When the artefact was packed, RFC 3339 UTC (`2026-11-22T03:00:00Z`).
    pub packed_at: String,
    /// String key/value pairs the guest reads through `get_config`.
    pub config: BTreeMap<String, String>,
    /// Content bundles (`sha256:<64 lowercase hex>`) the plugin may read. Not bound by the module
    /// signature: an artefact listing bundles needs `manifest.sig`.
    pub bundles: Vec<String>,
}

/// The JSON layout of [`ArtefactManifest`] (HeliosProxy's, plus our optional `config`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtefactManifestJson {
    schema_version: String,
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    license: String,
    hooks: Vec<String>,
    wasm_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature_sha256: Option<String>,
    signature_algorithm: String,
    packed_at: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    config: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    bundles: Vec<String>,
}

impl TryFrom<ArtefactManifestJson> for ArtefactManifest {
    type Error = String;

    fn try_from(j: ArtefactManifestJson) -> Result<Self, String> {
        let mut hooks = Vec::with_capacity(j.hooks.len());
        let mut guard = false;
        for name in &j.hooks {
            if name == crate::abi::EVALUATE {
                if guard {
                    return Err(format!("hook \"{name}\" is listed twice"));
                }
                guard = true;
                continue;
            }
            hooks.push(hook_names::lookup(name)?);
            if hooks[..hooks.len() - 1].contains(hooks.last().expect("just pushed")) {
                return Err(format!("hook \"{name}\" is listed twice"));
            }
        }
        Ok(ArtefactManifest {
            schema_version: j.schema_version,
            name: j.name,
            version: j.version,
            description: j.description,
            license: j.license,
            hooks,
            guard,
            wasm_sha256: j.wasm_sha256,
            signature_sha256: j.signature_sha256,
            signature_algorithm: j.signature_algorithm,
            packed_at: j.packed_at,
            config: j.config,
            bundles: j.bundles,
        })
    }
}

impl From<ArtefactManifest> for ArtefactManifestJson {
    fn from(m: ArtefactManifest) -> Self {
        let mut hooks: Vec<String> = m.hooks.iter().map(|h| h.export_name().to_owned()).collect();
        if m.guard {
            hooks.push(crate::abi::EVALUATE.to_owned());
        }
        ArtefactManifestJson {
            schema_version: m.schema_version,
            name: m.name,
            version: m.version,
            description: m.description,
            license: m.license,
            hooks,
            wasm_sha256: m.wasm_sha256,
            signature_sha256: m.signature_sha256,
            signature_algorithm: m.signature_algorithm,
            packed_at: m.packed_at,
            config: m.config,
            bundles: m.bundles,
        }
    }
}

// ---- digest blocklist ------------------------------------------------------------------------

/// Prefix of every blocklist entry.
pub const DIGEST_PREFIX: &str = "sha256:";

/// `{"digests": ["sha256:<64 lowercase hex>", ...]}`: modules that never load, whatever else passes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlocklistFile {
    pub digests: Vec<String>,
}

/// Serde for a list of hooks written as their export names (`["pre_query", "post_query"]`).
pub mod hook_names {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::SerializeSeq};

    use crate::Hook;

    pub fn serialize<S: Serializer>(hooks: &[Hook], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(hooks.len()))?;
        for h in hooks {
            seq.serialize_element(h.export_name())?;
        }
        seq.end()
    }

    /// The hook of an export name, or an error listing the known ones.
    pub fn lookup(name: &str) -> Result<Hook, String> {
        Hook::from_export_name(name).ok_or_else(|| {
            let known: Vec<_> = Hook::ALL.iter().map(|h| h.export_name()).collect();
            format!("unknown hook \"{name}\" (known: {})", known.join(", "))
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hook>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut hooks = Vec::with_capacity(names.len());
        for name in names {
            let hook = lookup(&name).map_err(D::Error::custom)?;
            if hooks.contains(&hook) {
                return Err(D::Error::custom(format!("hook \"{name}\" is listed twice")));
            }
            hooks.push(hook);
        }
        Ok(hooks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_message_has_the_contract_layout() {
        let m = signed_module_message("ab", "pii-scanner", "1.0.0", "cd");
        assert_eq!(m, b"chio-wasm-guard-v1\nab\npii-scanner\n1.0.0\ncd");
    }

    #[test]
    fn manifest_message_is_domain_separated_from_the_module_message() {
        let m = signed_manifest_message("ab", "cd");
        assert_eq!(m, b"helios-plugin-manifest-v1\nab\ncd");
        assert!(!m.starts_with(MODULE_SIGNATURE_DOMAIN.as_bytes()));
    }

    #[test]
    fn a_misspelt_sidecar_field_is_an_error_naming_it() {
        let err = serde_json::from_str::<Sidecar>(
            r#"{"module_hash":"a","module_name":"b","version":"c","signer_publc_key":"d","signature":"e"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("signer_publc_key"), "{err}");
    }

    #[test]
    fn a_guard_artefact_lists_evaluate_among_its_hooks() {
        let json = r#"{"schema_version":"1.0","name":"g","version":"1","hooks":["evaluate"],"wasm_sha256":"ab","signature_algorithm":"ed25519","packed_at":"t"}"#;
        let m: ArtefactManifest = serde_json::from_str(json).unwrap();
        assert!(m.guard && m.hooks.is_empty());
        let back = serde_json::to_string(&m).unwrap();
        assert!(back.contains(r#""hooks":["evaluate"]"#), "{back}");
        let typo = json.replace("\"hooks\"", "\"hoks\"");
        assert!(serde_json::from_str::<ArtefactManifest>(&typo).unwrap_err().to_string().contains("hoks"));
    }

    #[test]
    fn hooks_serialise_as_export_names_and_reject_unknown_and_repeated_ones() {
        #[derive(Serialize, Deserialize)]
        struct H {
            #[serde(with = "hook_names")]
            hooks: Vec<Hook>,
        }
        let json = serde_json::to_string(&H { hooks: vec![Hook::PreQuery, Hook::PostQuery] }).unwrap();
        assert_eq!(json, r#"{"hooks":["pre_query","post_query"]}"#);
        let err = serde_json::from_str::<H>(r#"{"hooks":["pre_qurey"]}"#).err().unwrap().to_string();
        assert!(err.contains("pre_qurey") && err.contains("known: pre_query"), "{err}");
        let err = serde_json::from_str::<H>(r#"{"hooks":["route","route"]}"#).err().unwrap().to_string();
        assert!(err.contains("twice"), "{err}");
    }
}
