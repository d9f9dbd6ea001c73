//! The one error type of this crate, with a stable code per failure class.
//!
//! Every message starts with its code (`E_GUARD_DIGEST_BLOCKLISTED: ...`) so operators can grep logs
//! for it, then says where (plugin, file, field), what was expected and what was found.

use std::path::{Path, PathBuf};

/// A failure class. Its [`code`](ErrorKind::code) is stable; so is the `helios-plugin` exit code
/// ([`exit_code`](ErrorKind::exit_code)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file could not be read or written.
    Io,
    /// The `.tar.gz` is not a well-formed artefact: bad gzip or tar, an unsafe or unknown entry, a
    /// duplicate, a missing required entry, an entry or the whole stream over its cap.
    ArtefactMalformed,
    /// A manifest does not parse or holds a bad value (unknown or missing field, unsupported
    /// `abi_version`, malformed hex).
    ManifestInvalid,
    /// The module is larger than the module size cap.
    ModuleTooLarge,
    /// The module is not a readable core WebAssembly module.
    ModuleInvalid,
    /// A declared hook is not exported by the module.
    HookNotExported,
    /// A digest does not match the bytes: the module's against the manifest or the sidecar, the
    /// sidecar's against the manifest.
    HashMismatch,
    /// The module's digest is on the blocklist.
    DigestBlocklisted,
    /// A signature is required and absent.
    SignatureMissing,
    /// The signing key is not a trusted key.
    SignerUntrusted,
    /// A signature (or its sidecar) is malformed or does not verify.
    SignatureInvalid,
    /// The sidecar names another plugin or version than the manifest.
    SidecarMismatch,
    /// A key file is not a usable Ed25519 key.
    KeyInvalid,
    /// A trust-root directory is unusable (missing, empty).
    TrustRootInvalid,
    /// A blocklist file does not parse.
    BlocklistInvalid,
}

impl ErrorKind {
    /// Every kind, in exit-code order.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::Io,
        ErrorKind::ArtefactMalformed,
        ErrorKind::ManifestInvalid,
        ErrorKind::ModuleTooLarge,
        ErrorKind::ModuleInvalid,
        ErrorKind::HookNotExported,
        ErrorKind::HashMismatch,
        ErrorKind::DigestBlocklisted,
        ErrorKind::SignatureMissing,
        ErrorKind::SignerUntrusted,
        ErrorKind::SignatureInvalid,
        ErrorKind::SidecarMismatch,
        ErrorKind::KeyInvalid,
        ErrorKind::TrustRootInvalid,
        ErrorKind::BlocklistInvalid,
    ];

    /// The stable code that opens the error's message.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::Io => "E_IO",
            ErrorKind::ArtefactMalformed => "E_ARTEFACT_MALFORMED",
            ErrorKind::ManifestInvalid => "E_MANIFEST_INVALID",
            ErrorKind::ModuleTooLarge => "E_MODULE_TOO_LARGE",
            ErrorKind::ModuleInvalid => "E_MODULE_INVALID",
            ErrorKind::HookNotExported => "E_HOOK_NOT_EXPORTED",
            ErrorKind::HashMismatch => "E_HASH_MISMATCH",
            ErrorKind::DigestBlocklisted => "E_GUARD_DIGEST_BLOCKLISTED",
            ErrorKind::SignatureMissing => "E_SIGNATURE_MISSING",
            ErrorKind::SignerUntrusted => "E_SIGNER_UNTRUSTED",
            ErrorKind::SignatureInvalid => "E_SIGNATURE_INVALID",
            ErrorKind::SidecarMismatch => "E_SIDECAR_MISMATCH",
            ErrorKind::KeyInvalid => "E_KEY_INVALID",
            ErrorKind::TrustRootInvalid => "E_TRUST_ROOT_INVALID",
            ErrorKind::BlocklistInvalid => "E_BLOCKLIST_INVALID",
        }
    }

    /// The exit code of `helios-plugin` for this class (0 is success, 1 an unclassified error, 2 a
    /// usage error).
    pub const fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Io => 3,
            ErrorKind::ArtefactMalformed => 10,
            ErrorKind::ManifestInvalid => 11,
            ErrorKind::ModuleTooLarge => 12,
            ErrorKind::ModuleInvalid => 13,
            ErrorKind::HookNotExported => 14,
            ErrorKind::HashMismatch => 20,
            ErrorKind::DigestBlocklisted => 21,
            ErrorKind::SignatureMissing => 22,
            ErrorKind::SignerUntrusted => 23,
            ErrorKind::SignatureInvalid => 24,
            ErrorKind::SidecarMismatch => 25,
            ErrorKind::KeyInvalid => 30,
            ErrorKind::TrustRootInvalid => 31,
            ErrorKind::BlocklistInvalid => 32,
        }
    }

    /// One line for documentation tables.
    pub const fn summary(self) -> &'static str {
        match self {
            ErrorKind::Io => "a file could not be read or written",
            ErrorKind::ArtefactMalformed => {
                "unsafe or malformed .tar.gz (traversal, link, duplicate, unknown entry, over a cap)"
            }
            ErrorKind::ManifestInvalid => "manifest does not parse or holds a bad value",
            ErrorKind::ModuleTooLarge => "module over the size cap",
            ErrorKind::ModuleInvalid => "module is not a readable core wasm module",
            ErrorKind::HookNotExported => "a declared hook is not exported by the module",
            ErrorKind::HashMismatch => "a SHA-256 does not match the bytes",
            ErrorKind::DigestBlocklisted => "module digest is on the blocklist",
            ErrorKind::SignatureMissing => "a required signature is absent",
            ErrorKind::SignerUntrusted => "the signing key is not trusted",
            ErrorKind::SignatureInvalid => "a signature is malformed or does not verify",
            ErrorKind::SidecarMismatch => "sidecar name or version differs from the manifest",
            ErrorKind::KeyInvalid => "a key file is not a usable Ed25519 key",
            ErrorKind::TrustRootInvalid => "trust-root directory missing or empty",
            ErrorKind::BlocklistInvalid => "blocklist does not parse",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// An error of this crate: a [`ErrorKind`] and a message that names the plugin, file or field.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<std::io::Error>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Error { kind: ErrorKind::Io, message: format!("{}: {err}", path.display()), source: Some(err) }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without its code.
    pub fn message(&self) -> &str {
        &self.message
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand constructors, so call sites read like the message.
pub(crate) fn err(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::new(kind, message)
}

/// A path for messages.
pub(crate) fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Reads at most `limit` bytes of `path`; a longer file is an error built by `too_large(size)`.
pub(crate) fn read_capped(path: &Path, limit: u64, too_large: impl FnOnce(u64) -> Error) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > limit {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The directory a relative path in `base` resolves against.
pub(crate) fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}
