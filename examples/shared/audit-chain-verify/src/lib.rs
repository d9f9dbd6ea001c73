//! The audit-chain record format ([`chain`]) and the verifier of an exported chain ([`verify`],
//! native only), in one library both the audit-chain plugin (which writes records) and the CLI's
//! `helios-plugin audit verify` (which checks them) use, so the format exists once.
//!
//! **Invariant:** this crate knows nothing of the host or of the plugin's KV; the plugin hashes
//! through the host's `sha256_hex`, the verifier with `sha2`, over the same [`chain::hashed_bytes`].

pub mod chain;
#[cfg(not(target_arch = "wasm32"))]
pub mod verify;

#[cfg(not(target_arch = "wasm32"))]
pub use verify::{BrokenLink, VerifyOptions, verify_chain, verify_chain_with};
