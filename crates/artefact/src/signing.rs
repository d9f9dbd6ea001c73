//! Signing modules and manifests, and checking those signatures against trusted keys.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use helios_plugin_schema::manifest::{self, Sidecar};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result, err};
use crate::keys::{TrustRoot, normalize_hex_key, public_key_from_hex, public_key_hex};

/// Largest sidecar accepted, re-exported for callers that read files.
pub use helios_plugin_schema::manifest::MAX_SIDECAR_BYTES;

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// The sidecar of `wasm` for `name` `version`, signed with `key`.
pub fn sign_module(key: &SigningKey, wasm: &[u8], name: &str, version: &str) -> Sidecar {
    let module_hash = sha256_hex(wasm);
    let signer_public_key = public_key_hex(&key.verifying_key());
    let message = manifest::signed_module_message(&module_hash, name, version, &signer_public_key);
    let signature = hex::encode(key.sign(&message).to_bytes());
    Sidecar { module_hash, module_name: name.into(), version: version.into(), signer_public_key, signature }
}

/// A sidecar as the bytes `sign` writes (pretty JSON and a final newline).
pub fn sidecar_bytes(sidecar: &Sidecar) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(sidecar).expect("a sidecar serialises");
    out.push(b'\n');
    out
}

/// Parses a sidecar's bytes; `file` names it in errors.
pub fn parse_sidecar(bytes: &[u8], file: &str) -> Result<Sidecar> {
    serde_json::from_slice(bytes).map_err(|e| err(ErrorKind::SignatureInvalid, format!("sidecar {file}: {e}")))
}

/// A module signature as found in `plugin.sig` (or `<module>.sig`), in either format we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSignature {
    /// Our and chio's JSON sidecar: Ed25519 over [`manifest::signed_module_message`], which binds
    /// the module's SHA-256, the plugin's name and version, and the signer's key.
    Sidecar(Sidecar),
    /// HeliosProxy's `plugin.sig`: base64 of a raw 64-byte Ed25519 signature over the module bytes.
    /// It binds the bytes only (and so whatever the module declares about itself in its
    /// `helios.plugin` section), not the manifest's name or version.
    Raw(Box<Signature>),
}

/// Parses a module signature: a JSON sidecar (first non-blank byte `{`) or base64 of 64 bytes.
pub fn parse_module_signature(bytes: &[u8], file: &str) -> Result<ModuleSignature> {
    use base64::Engine as _;
    let text = std::str::from_utf8(bytes).map(str::trim).unwrap_or("");
    if text.starts_with('{') || bytes.first() == Some(&b'{') {
        return parse_sidecar(bytes, file).map(ModuleSignature::Sidecar);
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(text).ok().and_then(|b| <[u8; 64]>::try_from(b).ok());
    match raw {
        Some(raw) => Ok(ModuleSignature::Raw(Box::new(Signature::from_bytes(&raw)))),
        None => Err(err(
            ErrorKind::SignatureInvalid,
            format!(
                "sidecar {file}: neither a JSON sidecar nor base64 of a 64-byte Ed25519 signature (HeliosProxy's plugin.sig), {} bytes",
                bytes.len()
            ),
        )),
    }
}

/// HeliosProxy's `plugin.sig` for `wasm`: base64 of the raw Ed25519 signature over the module bytes,
/// and a newline.
pub fn sign_module_raw(key: &SigningKey, wasm: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    format!("{}\n", base64::engine::general_purpose::STANDARD.encode(key.sign(wasm).to_bytes())).into_bytes()
}

/// Checks a raw (HeliosProxy) signature over `wasm` against the trusted keys: it has no key id, so
/// every key of the trust root is tried. Returns the signer and its key.
pub fn verify_raw(
    signature: &Signature,
    wasm: &[u8],
    trust_root: Option<&TrustRoot>,
    plugin: &str,
    file: &str,
) -> Result<(Signer, VerifyingKey)> {
    let Some(root) = trust_root else {
        return Err(err(
            ErrorKind::SignerUntrusted,
            format!("plugin {plugin}: {file} is a raw signature and no trust root is configured to check it against"),
        ));
    };
    for k in root.keys() {
        if k.key.verify_strict(wasm, signature).is_ok() {
            return Ok((Signer { public_key: public_key_hex(&k.key), label: k.label.clone() }, k.key));
        }
    }
    Err(err(
        ErrorKind::SignerUntrusted,
        format!(
            "plugin {plugin}: {file}: the raw Ed25519 signature over the module verifies under none of the {} key(s) of trust root {}",
            root.keys().len(),
            root.origin()
        ),
    ))
}

/// Who signed a verified plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signer {
    /// Lowercase hex of the Ed25519 public key.
    pub public_key: String,
    /// The trust-root file stem of the key, or `pinned` for a manifest's `signer_public_key`.
    pub label: String,
}

/// The keys a signature may come from: a manifest's pinned key, a trust root, or both (then the key
/// must satisfy both).
#[derive(Debug, Clone, Copy, Default)]
pub struct Anchors<'a> {
    pub pinned: Option<&'a VerifyingKey>,
    pub trust_root: Option<&'a TrustRoot>,
}

impl Anchors<'_> {
    /// Whether any key is trusted at all.
    pub fn any(&self) -> bool {
        self.pinned.is_some() || self.trust_root.is_some()
    }

    /// The signer if `key` is trusted, or why not.
    pub fn check(&self, key: &VerifyingKey, plugin: &str) -> Result<Signer> {
        let shown = public_key_hex(key);
        if let Some(pinned) = self.pinned
            && pinned != key
        {
            return Err(err(
                ErrorKind::SignerUntrusted,
                format!(
                    "plugin {plugin}: signed by {shown}, but the manifest pins signer_public_key {}",
                    public_key_hex(pinned)
                ),
            ));
        }
        let label = match self.trust_root {
            Some(root) => match root.find(key) {
                Some(k) => k.label.clone(),
                None => {
                    return Err(err(
                        ErrorKind::SignerUntrusted,
                        format!(
                            "plugin {plugin}: signed by {shown}, which is not a key of trust root {}",
                            root.origin()
                        ),
                    ));
                }
            },
            None if self.pinned.is_some() => "pinned".into(),
            None => {
                return Err(err(
                    ErrorKind::SignerUntrusted,
                    format!("plugin {plugin}: signed by {shown}, but no key is trusted"),
                ));
            }
        };
        Ok(Signer { public_key: shown, label })
    }
}

fn bad_sig(plugin: &str, file: &str, reason: impl std::fmt::Display) -> Error {
    err(ErrorKind::SignatureInvalid, format!("plugin {plugin}: sidecar {file}: {reason}"))
}

/// Checks a module sidecar in the order chio does: the sidecar's key is trusted; the SHA-256 of the
/// actual bytes (`module_sha256`) equals `module_hash`; the signature is 64 bytes; Ed25519
/// `verify_strict` over [`manifest::signed_module_message`] of the sidecar's fields as written.
///
/// Name and version are *not* compared here (the caller holds the manifest): see
/// [`check_sidecar_names`].
pub fn verify_sidecar(
    sidecar: &Sidecar,
    module_sha256: &str,
    anchors: &Anchors<'_>,
    plugin: &str,
    file: &str,
) -> Result<Signer> {
    let key = public_key_from_hex(&sidecar.signer_public_key, &format!("sidecar {file} field signer_public_key"))
        .map_err(|e| bad_sig(plugin, file, e.message()))?;
    let signer = anchors.check(&key, plugin)?;
    if sidecar.module_hash != module_sha256 {
        return Err(err(
            ErrorKind::HashMismatch,
            format!(
                "plugin {plugin}: sidecar {file} field module_hash: expected {module_sha256} (SHA-256 of the module), found {}",
                sidecar.module_hash
            ),
        ));
    }
    let signature = decode_signature(&sidecar.signature)
        .map_err(|reason| bad_sig(plugin, file, format!("field signature: {reason}")))?;
    let message = manifest::signed_module_message(
        &sidecar.module_hash,
        &sidecar.module_name,
        &sidecar.version,
        &sidecar.signer_public_key,
    );
    key.verify_strict(&message, &signature)
        .map_err(|_| bad_sig(plugin, file, format!("Ed25519 signature does not verify under {}", signer.public_key)))?;
    Ok(signer)
}

/// The sidecar must name the manifest's plugin and version, or a signature of another plugin (or an
/// older, vulnerable version) could be swapped in.
pub fn check_sidecar_names(sidecar: &Sidecar, name: &str, version: &str, file: &str) -> Result<()> {
    for (field, found, expected) in
        [("module_name", &sidecar.module_name, name), ("version", &sidecar.version, version)]
    {
        if found != expected {
            return Err(err(
                ErrorKind::SidecarMismatch,
                format!(
                    "plugin {name}: sidecar {file} field {field}: expected {expected:?} (from the manifest), found {found:?}"
                ),
            ));
        }
    }
    Ok(())
}

/// 128 lowercase hex digits ⇒ a signature.
fn decode_signature(s: &str) -> std::result::Result<Signature, String> {
    if s.len() != 128 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("expected 128 lowercase hex digits (64 bytes), found {} characters", s.len()));
    }
    let bytes: [u8; 64] =
        hex::decode(s).map_err(|e| e.to_string())?.try_into().map_err(|_| "not 64 bytes".to_string())?;
    Ok(Signature::from_bytes(&bytes))
}

/// The `manifest.sig` bytes for `manifest_json`: hex signature and a newline.
pub fn sign_manifest(key: &SigningKey, manifest_json: &[u8]) -> Vec<u8> {
    let message = manifest::signed_manifest_message(&sha256_hex(manifest_json), &public_key_hex(&key.verifying_key()));
    format!("{}\n", hex::encode(key.sign(&message).to_bytes())).into_bytes()
}

/// Checks `manifest.sig` against the exact manifest bytes and the (already trusted) key.
pub fn verify_manifest_signature(
    manifest_json: &[u8],
    signature: &[u8],
    key: &VerifyingKey,
    plugin: &str,
) -> Result<()> {
    let file = manifest::ARTEFACT_MANIFEST_SIGNATURE;
    let text = std::str::from_utf8(signature).map_err(|_| bad_sig(plugin, file, "not UTF-8"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let signature = decode_signature(text).map_err(|reason| bad_sig(plugin, file, reason))?;
    let message = manifest::signed_manifest_message(&sha256_hex(manifest_json), &public_key_hex(key));
    key.verify_strict(&message, &signature).map_err(|_| {
        bad_sig(
            plugin,
            file,
            format!(
                "Ed25519 signature of {} does not verify under {}",
                manifest::ARTEFACT_MANIFEST,
                public_key_hex(key)
            ),
        )
    })
}

/// Builds a sidecar from a signature made elsewhere (openssl, signify, an HSM) over
/// [`manifest::signed_module_message`]. `signature` may be the raw 64 bytes, their hex or base64, or
/// a signify signature file. The signature is verified before the sidecar is returned.
pub fn sidecar_from_signature(
    wasm: &[u8],
    name: &str,
    version: &str,
    key: &VerifyingKey,
    signature: &[u8],
    file: &str,
) -> Result<Sidecar> {
    let raw = decode_external_signature(signature).ok_or_else(|| {
        err(
            ErrorKind::SignatureInvalid,
            format!("signature file {file}: expected 64 raw bytes, 128 hex digits, base64 of 64 bytes or a signify signature"),
        )
    })?;
    let sidecar = Sidecar {
        module_hash: sha256_hex(wasm),
        module_name: name.into(),
        version: version.into(),
        signer_public_key: public_key_hex(key),
        signature: hex::encode(raw),
    };
    let root = TrustRoot::from_keys([("given key".to_string(), *key)]);
    verify_sidecar(&sidecar, &sidecar.module_hash, &Anchors { pinned: None, trust_root: Some(&root) }, name, file)?;
    Ok(sidecar)
}

fn decode_external_signature(bytes: &[u8]) -> Option<[u8; 64]> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    if bytes.len() == 64 {
        return bytes.try_into().ok();
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if let Some(rest) = text.strip_prefix("untrusted comment:") {
        let blob = b64.decode(rest.lines().nth(1)?.trim()).ok()?;
        return (blob.len() == 74 && &blob[..2] == b"Ed").then(|| blob[10..].try_into().ok()).flatten();
    }
    let norm = normalize_hex_key(text);
    if norm.len() == 128 {
        return hex::decode(norm).ok()?.try_into().ok();
    }
    b64.decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(key: &SigningKey) -> TrustRoot {
        TrustRoot::from_keys([("ops".to_string(), key.verifying_key())])
    }

    #[test]
    fn a_signed_module_verifies_and_names_its_signer() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let sc = sign_module(&key, b"\0asm", "p", "1.0.0");
        let root = root(&key);
        let signer = verify_sidecar(
            &sc,
            &sha256_hex(b"\0asm"),
            &Anchors { pinned: None, trust_root: Some(&root) },
            "p",
            "p.sig",
        )
        .unwrap();
        assert_eq!(signer.label, "ops");
        assert_eq!(signer.public_key, sc.signer_public_key);
    }

    #[test]
    fn a_signature_moved_to_another_name_or_version_fails() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let root = root(&key);
        let anchors = Anchors { pinned: None, trust_root: Some(&root) };
        let sc = sign_module(&key, b"m", "p", "1.0.0");
        for moved in
            [Sidecar { module_name: "q".into(), ..sc.clone() }, Sidecar { version: "1.0.1".into(), ..sc.clone() }]
        {
            let e = verify_sidecar(&moved, &sha256_hex(b"m"), &anchors, "p", "p.sig").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::SignatureInvalid, "{e}");
        }
    }

    #[test]
    fn pinned_and_trust_root_must_both_accept_the_key() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let b = SigningKey::from_bytes(&[2; 32]);
        let sc = sign_module(&a, b"m", "p", "1");
        let root_a = root(&a);
        let pin_b = b.verifying_key();
        let e = verify_sidecar(
            &sc,
            &sha256_hex(b"m"),
            &Anchors { pinned: Some(&pin_b), trust_root: Some(&root_a) },
            "p",
            "s",
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SignerUntrusted);
        assert!(e.to_string().contains("pins"), "{e}");
    }

    #[test]
    fn manifest_signature_covers_every_byte() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let sig = sign_manifest(&key, b"{\"a\": 1}");
        verify_manifest_signature(b"{\"a\": 1}", &sig, &key.verifying_key(), "p").unwrap();
        let e = verify_manifest_signature(b"{\"a\":  1}", &sig, &key.verifying_key(), "p").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SignatureInvalid);
    }
}
