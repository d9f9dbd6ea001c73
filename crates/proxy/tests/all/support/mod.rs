//! Test support: real PostgreSQL clusters and a proxy started in-process against them.

#![allow(dead_code)]

pub mod pg;
pub mod proxy;
pub mod raw;
pub use helios_plugin_test_support::redis;

use std::process::Output;

/// stdout of a psql run, trimmed.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// stderr of a psql run.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A guest plugin built for wasm32 (`helios_plugin_test_support::guest_path`).
/// Panics, failing the test, when it has not been built.
pub fn guest_wasm(crate_name: &str) -> std::path::PathBuf {
    let path = helios_plugin_test_support::guest_path(crate_name);
    assert!(
        path.exists(),
        "guest plugin {} is missing: run `{}` first",
        path.display(),
        helios_plugin_test_support::BUILD_GUESTS
    );
    path.canonicalize().expect("canonical guest path")
}

/// A `[[plugins]]` entry for `proxy.toml` loading an unsigned guest (its name is the file stem).
pub fn plugin_entry(crate_name: &str, extra: &str, config: &[(&str, &str)]) -> String {
    let name = crate_name;
    let mut s = format!(
        "\n[[plugins]]\nname = \"{name}\"\nsource = \"{}\"\nallow_unsigned = true\n{extra}\n",
        guest_wasm(crate_name).display()
    );
    if !config.is_empty() {
        s.push_str("[plugins.config]\n");
        for (k, v) in config {
            s.push_str(&format!("{k} = \"{v}\"\n"));
        }
    }
    s
}
