//! Test support: real PostgreSQL clusters and a proxy started in-process against them.

pub mod pg;
