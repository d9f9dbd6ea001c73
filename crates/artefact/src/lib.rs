//! Everything about a plugin that can be known and checked without running it: its module's
//! imports, exports and self-declared hooks ([`module_info`]); its manifests ([`manifests`]);
//! Ed25519 keys and trust roots ([`keys`]); module and manifest signatures ([`signing`]); the digest
//! blocklist ([`blocklist`]); `.tar.gz` artefacts ([`archive`], [`inspect`]); and the verification
//! pipeline a host runs before compiling anything ([`verify`]).
//!
//! ```no_run
//! use helios_plugin_artefact::{Blocklist, TrustRoot, VerifyOptions, verify_path};
//! # fn main() -> Result<(), helios_plugin_artefact::Error> {
//! let opts = VerifyOptions::default()
//!     .trust_root(TrustRoot::load("/etc/helios/trusted-keys".as_ref())?)
//!     .blocklist(Blocklist::load("/etc/helios/blocklist.json".as_ref())?);
//! let plugin = verify_path("plugins/tool-denylist-1.0.0.tar.gz".as_ref(), &opts)?;
//! println!("{} {} signed by {:?}", plugin.name, plugin.version, plugin.signer);
//! // plugin.wasm now goes to the host's loader.
//! # Ok(()) }
//! ```
//!
//! **Invariant:** this crate never executes guest code and knows nothing of wasmtime; it reads bytes.
//! Names, layouts and limits of the files come from `helios_plugin_schema::manifest`.

pub mod archive;
pub mod blocklist;
pub mod error;
pub mod inspect;
pub mod keys;
pub mod manifests;
pub mod signing;
pub mod verify;

/// Module inspection lives in the schema crate (beside the ABI tables and the section it reads).
pub use helios_plugin_schema::module_info;

pub use archive::{
    Artefact, PackOptions, PackSigning, Packed, UnpackLimits, pack, read_artefact, save_artefact, sign_artefact, unpack,
};
pub use blocklist::Blocklist;
pub use error::{Error, ErrorKind};
pub use inspect::{Inspection, inspect_artefact};
pub use keys::{TrustRoot, TrustedKey};
pub use module_info::{ModuleInfo, ModuleInfoError, is_component};
pub use signing::Signer;
pub use verify::{VerifiedPlugin, VerifyOptions, verify_artefact, verify_guard_manifest, verify_module, verify_path};
