//! Fuzz target `config`: the proxy.toml [[plugins]] reader (helios_plugin_loader).
//! The property lives in `helios_plugin_fuzz_smoke::targets::config`; a panic there is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = helios_plugin_fuzz_smoke::targets::config(data);
});
