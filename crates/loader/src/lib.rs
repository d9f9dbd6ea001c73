//! Deployment loading: which plugins a host runs, where their bytes come from, and the checks every
//! plugin passes before the runtime ([`helios_plugin_host`]) compiles a byte of it.
//!
//! ```no_run
//! use helios_plugin_host::{Runtime, RuntimeConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! // Reads `[[plugins]]`, resolves each `source`, verifies it (size cap, SHA-256, blocklist,
//! // signature, name, hooks), then loads it into `runtime` and orders the chain by priority.
//! let chain = helios_plugin_loader::load_chain("proxy.toml".as_ref(), &runtime)?;
//! # let _ = chain; Ok(()) }
//! ```
//!
//! - [`proxy_toml`]: the `[[plugins]]` entries of a `proxy.toml` ([`PluginsConfig`]).
//! - [`source`]: where a plugin comes from ([`Source`]) and how it becomes a local file
//!   ([`Resolver`]) — the one place a new kind of source (a registry) is added.
//! - [`verify`]: the steps every host shares, whatever its config format looks like (the MCP
//!   gateway's `wasm_guards[]` uses them too): verify and check the name, merge the config, load.
//!
//! **Invariants:** nothing reaches [`helios_plugin_host::Runtime::load`] that did not pass
//! [`helios_plugin_artefact::verify_path`] and match the name its entry gives; every error names the
//! config file, the entry (index and name) and the field or check that failed. The runtime crate
//! knows nothing of TOML, artefacts or signatures: they all stop here.

mod parallel;
pub mod proxy_toml;
pub mod source;
pub mod verify;

pub use proxy_toml::{ConfigError, LoadedEntry, PluginEntry, PluginsConfig, ShadowEntry, VerifiedEntry, load_chain};
pub use source::{Resolver, Source, SourceError, default_oci_cache};
pub use verify::{NameMismatch, VerifyError, load_verified, merged_config, verify_named};
