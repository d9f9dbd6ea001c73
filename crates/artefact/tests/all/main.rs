//! Integration tests of the trust chain: one binary, a module per feature.

mod flips;
mod interop;
mod malicious;
mod pipeline;
mod support;
mod trust_rule;
