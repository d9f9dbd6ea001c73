//! Test support: real PostgreSQL clusters and a proxy started in-process against them.

#![allow(dead_code)]

pub mod pg;
pub mod proxy;
pub mod raw;

use std::process::Output;

/// stdout of a psql run, trimmed.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// stderr of a psql run.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}
