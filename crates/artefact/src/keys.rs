//! Ed25519 keys in the formats operators already have, and trust roots made of them.
//!
//! Public keys: PEM SPKI (`openssl pkey -pubout`), DER SPKI (`-outform DER`), signify public keys
//! (`signify -G`), base64 of the raw 32 bytes (HeliosProxy's `*.pub`) and 64 hex digits (chio's
//! `signer_public_key`, optionally `0x`-prefixed). Private keys: PKCS#8 PEM (`openssl genpkey
//! -algorithm ed25519`, and what [`signing_key_pem`] writes) and unencrypted signify secret keys
//! (`signify -G -n`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};

use crate::error::{Error, ErrorKind, Result, err, shown};

/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 16 << 10;

const SIGNIFY_COMMENT: &str = "untrusted comment:";
const SIGNIFY_ALG: &[u8; 2] = b"Ed";
const SIGNIFY_KDF: &[u8; 2] = b"BK";
/// `Ed` + key number (8) + public key (32).
const SIGNIFY_PUBLIC_LEN: usize = 42;
/// `Ed` `BK` + rounds (4) + salt (16) + checksum (8) + key number (8) + secret key (64).
const SIGNIFY_SECRET_LEN: usize = 104;
/// `Ed` + key number (8) + signature (64).
const SIGNIFY_SIGNATURE_LEN: usize = 74;

fn key_err(file: &str, reason: impl std::fmt::Display) -> Error {
    err(ErrorKind::KeyInvalid, format!("key file {file}: {reason}"))
}

/// Lowercase hex of a public key, the form every signed message and sidecar uses.
pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// Canonical form of a hex key for comparison: trimmed, without `0x`, lowercase.
pub fn normalize_hex_key(s: &str) -> String {
    let t = s.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    t.to_ascii_lowercase()
}

/// Parses 64 hex digits (after [`normalize_hex_key`]) as a public key. `what` names the value in
/// errors (`sidecar x.sig field signer_public_key`).
pub fn public_key_from_hex(s: &str, what: &str) -> Result<VerifyingKey> {
    let norm = normalize_hex_key(s);
    let bytes: [u8; 32] = hex::decode(&norm)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| key_err(what, format!("expected 64 hex digits, found {:?}", s)))?;
    checked_public_key(&bytes, what)
}

fn checked_public_key(bytes: &[u8; 32], file: &str) -> Result<VerifyingKey> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| key_err(file, "not a point of Ed25519"))?;
    if key.is_weak() {
        return Err(key_err(file, "a weak (small-order) Ed25519 key"));
    }
    Ok(key)
}

/// Decodes signify's second line (base64) after checking the comment line.
fn signify_blob(text: &str, file: &str) -> Result<Vec<u8>> {
    let mut lines = text.lines();
    let _comment = lines.next();
    let b64 = lines.next().ok_or_else(|| key_err(file, "signify file without its base64 line"))?;
    BASE64.decode(b64.trim()).map_err(|e| key_err(file, format!("signify base64 line: {e}")))
}

/// Parses a public key file's contents. `file` names it in errors.
pub fn parse_public_key(bytes: &[u8], file: &str) -> Result<VerifyingKey> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        // DER SubjectPublicKeyInfo (`openssl pkey -pubout -outform DER`).
        return VerifyingKey::from_public_key_der(bytes)
            .map_err(|e| key_err(file, format!("binary file is not an Ed25519 DER public key: {e}")));
    };
    let t = text.trim();
    if t.starts_with("-----BEGIN PUBLIC KEY-----") {
        let key = VerifyingKey::from_public_key_pem(t)
            .map_err(|e| key_err(file, format!("PEM public key is not Ed25519 SPKI: {e}")))?;
        return checked_public_key(key.as_bytes(), file);
    }
    if t.starts_with("-----BEGIN") && t.contains("PRIVATE KEY-----") {
        return Err(key_err(file, "holds a private key; use its public key (openssl pkey -in KEY -pubout)"));
    }
    if t.starts_with("-----BEGIN") {
        return Err(key_err(file, "PEM block is not a PUBLIC KEY"));
    }
    let blob = if t.starts_with(SIGNIFY_COMMENT) { signify_blob(t, file)? } else { Vec::new() };
    if t.starts_with(SIGNIFY_COMMENT) {
        return match blob.len() {
            SIGNIFY_PUBLIC_LEN if &blob[..2] == SIGNIFY_ALG => {
                checked_public_key(blob[10..].try_into().expect("32 bytes"), file)
            }
            SIGNIFY_SECRET_LEN => Err(key_err(file, "a signify secret key; use its public key (.pub)")),
            SIGNIFY_SIGNATURE_LEN => Err(key_err(file, "a signify signature, not a key")),
            n => Err(key_err(file, format!("signify blob of {n} bytes (expected {SIGNIFY_PUBLIC_LEN})"))),
        };
    }
    let digits = normalize_hex_key(t);
    if digits.len() == 64 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return public_key_from_hex(&digits, file);
    }
    match BASE64.decode(t) {
        Ok(raw) if raw.len() == 32 => checked_public_key(raw[..].try_into().expect("32 bytes"), file),
        Ok(raw) if raw.len() == SIGNIFY_PUBLIC_LEN && &raw[..2] == SIGNIFY_ALG => {
            checked_public_key(raw[10..].try_into().expect("32 bytes"), file)
        }
        Ok(raw) => Err(key_err(file, format!("base64 decodes to {} bytes (expected 32)", raw.len()))),
        Err(_) => Err(key_err(
            file,
            "not an Ed25519 public key (expected PEM SPKI, a signify public key, 64 hex digits or base64 of 32 bytes)",
        )),
    }
}

/// Reads a public key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    let bytes = read_key_file(path)?;
    parse_public_key(&bytes, &shown(path))
}

fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    crate::error::read_capped(path, MAX_KEY_FILE_BYTES, |n| {
        key_err(&shown(path), format!("{n} bytes is too large for a key file (limit: {MAX_KEY_FILE_BYTES})"))
    })
}

/// Parses a private key file's contents.
pub fn parse_signing_key(bytes: &[u8], file: &str) -> Result<SigningKey> {
    let text = std::str::from_utf8(bytes).map_err(|_| key_err(file, "binary file; expected a PEM or signify key"))?;
    let t = text.trim();
    if t.starts_with("-----BEGIN PRIVATE KEY-----") {
        return SigningKey::from_pkcs8_pem(t)
            .map_err(|e| key_err(file, format!("PEM private key is not Ed25519 PKCS#8: {e}")));
    }
    if t.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(key_err(file, "encrypted PKCS#8 key; decrypt it first (openssl pkey -in KEY -out PLAIN)"));
    }
    if t.starts_with("-----BEGIN PUBLIC KEY-----") {
        return Err(key_err(file, "a public key; signing needs the private key"));
    }
    if t.starts_with(SIGNIFY_COMMENT) {
        let blob = signify_blob(t, file)?;
        if blob.len() == SIGNIFY_PUBLIC_LEN {
            return Err(key_err(file, "a signify public key; signing needs the secret key (.sec)"));
        }
        if blob.len() != SIGNIFY_SECRET_LEN || &blob[..2] != SIGNIFY_ALG || &blob[2..4] != SIGNIFY_KDF {
            return Err(key_err(file, format!("not a signify Ed25519 secret key ({} bytes)", blob.len())));
        }
        let rounds = u32::from_be_bytes(blob[4..8].try_into().expect("4 bytes"));
        if rounds != 0 {
            return Err(key_err(file, "passphrase-protected signify key; create one with `signify -G -n`"));
        }
        let checksum = &blob[24..32];
        let secret = &blob[40..104];
        if &Sha512::digest(secret)[..8] != checksum {
            return Err(key_err(file, "signify secret key checksum does not match"));
        }
        let key = SigningKey::from_bytes(secret[..32].try_into().expect("32 bytes"));
        if key.verifying_key().as_bytes() != &secret[32..] {
            return Err(key_err(file, "signify secret key holds a public half that does not match"));
        }
        return Ok(key);
    }
    Err(key_err(file, "not a private key (expected PKCS#8 PEM or an unencrypted signify secret key)"))
}

/// Reads a private key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let bytes = read_key_file(path)?;
    parse_signing_key(&bytes, &shown(path))
}

/// A fresh key from the operating system's random source.
pub fn generate_signing_key() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| err(ErrorKind::Io, format!("no randomness for a new key: {e}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// PKCS#8 v1 PEM, byte for byte what `openssl genpkey -algorithm ed25519` writes.
pub fn signing_key_pem(key: &SigningKey) -> String {
    let bytes = KeypairBytes { secret_key: key.to_bytes(), public_key: None };
    bytes.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF).expect("encoding 32 bytes").to_string()
}

/// PEM SubjectPublicKeyInfo, what `openssl pkey -pubout` writes.
pub fn public_key_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF).expect("encoding 32 bytes")
}

/// Base64 of the raw 32 bytes plus a newline, HeliosProxy's `*.pub`.
pub fn public_key_base64(key: &VerifyingKey) -> String {
    format!("{}\n", BASE64.encode(key.as_bytes()))
}

/// A key of a trust root.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// The file stem (`ops-2026.pub` ⇒ `ops-2026`).
    pub label: String,
    pub file: PathBuf,
    pub key: VerifyingKey,
}

/// A set of trusted public keys, usually a directory of key files.
#[derive(Debug, Clone, Default)]
pub struct TrustRoot {
    keys: Vec<TrustedKey>,
    origin: String,
}

impl TrustRoot {
    /// Loads every key file of `dir`. Names starting with `.` are skipped (editor and Kubernetes
    /// mount files); symlinks are followed; anything else that is not a valid public key file —
    /// a subdirectory, a private key, a typo — is an error naming it. An empty directory is an
    /// error: it would trust nothing and fail every verification with a less useful message.
    pub fn load(dir: &Path) -> Result<TrustRoot> {
        let trust_err =
            |reason: String| err(ErrorKind::TrustRootInvalid, format!("trust root {}: {reason}", dir.display()));
        let entries = std::fs::read_dir(dir).map_err(|e| trust_err(format!("cannot read directory: {e}")))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            paths.push(entry.path());
        }
        paths.sort();
        let mut keys = Vec::new();
        for path in paths {
            if !path.is_file() {
                return Err(key_err(&shown(&path), "not a regular file"));
            }
            let key = read_public_key(&path)?;
            let label = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            keys.push(TrustedKey { label, file: path, key });
        }
        if keys.is_empty() {
            return Err(trust_err("no key files".into()));
        }
        Ok(TrustRoot { keys, origin: shown(dir) })
    }

    /// A trust root from keys in memory (labels as given).
    pub fn from_keys(keys: impl IntoIterator<Item = (String, VerifyingKey)>) -> TrustRoot {
        let keys =
            keys.into_iter().map(|(label, key)| TrustedKey { file: PathBuf::from(&label), label, key }).collect();
        TrustRoot { keys, origin: "keys in memory".into() }
    }

    /// The trusted entry for this key, if any.
    pub fn find(&self, key: &VerifyingKey) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.key == *key)
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// Where the keys came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_format_of_one_key_parses_to_that_key() {
        let sk = SigningKey::from_bytes(&[7; 32]);
        let vk = sk.verifying_key();
        let hexed = public_key_hex(&vk);
        for (name, text) in [
            ("pem", public_key_pem(&vk)),
            ("b64", public_key_base64(&vk)),
            ("hex", hexed.clone()),
            ("0x", format!("  0x{}\n", hexed.to_uppercase())),
        ] {
            assert_eq!(parse_public_key(text.as_bytes(), name).unwrap(), vk, "{name}");
        }
    }

    #[test]
    fn written_private_key_reads_back() {
        let sk = SigningKey::from_bytes(&[9; 32]);
        let pem = signing_key_pem(&sk);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        assert_eq!(parse_signing_key(pem.as_bytes(), "k").unwrap().to_bytes(), sk.to_bytes());
    }

    #[test]
    fn garbage_and_private_keys_are_not_public_keys() {
        let sk = SigningKey::from_bytes(&[9; 32]);
        let e = parse_public_key(signing_key_pem(&sk).as_bytes(), "ops.pub").unwrap_err();
        assert!(e.to_string().contains("ops.pub") && e.to_string().contains("private key"), "{e}");
        let e = parse_public_key(b"hello", "x.pub").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::KeyInvalid);
        let e = parse_public_key(BASE64.encode([1u8; 31]).as_bytes(), "short.pub").unwrap_err();
        assert!(e.to_string().contains("31 bytes"), "{e}");
    }

    #[test]
    fn a_passphrase_protected_signify_key_is_refused_with_the_fix() {
        // `Ed` `BK`, 42 KDF rounds, salt, checksum, key number, secret key.
        let mut blob = b"EdBK".to_vec();
        blob.extend_from_slice(&42u32.to_be_bytes());
        blob.resize(104, 7);
        let file = format!("untrusted comment: signify secret key\n{}\n", BASE64.encode(&blob));
        let e = parse_signing_key(file.as_bytes(), "release.sec").unwrap_err().to_string();
        assert!(e.contains("release.sec") && e.contains("passphrase") && e.contains("-n"), "{e}");
    }

    #[test]
    fn a_small_order_key_is_refused() {
        // The identity point: every signature "verifies" under it without verify_strict.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let e = parse_public_key(hex::encode(identity).as_bytes(), "weak.pub").unwrap_err();
        assert!(e.to_string().contains("weak"), "{e}");
    }
}
