//! audit-chain (in progress)
