//! Fuzz target `manifest`: guard-manifest.yaml, manifest.json, a .sig sidecar and a blocklist parsed from the same bytes.
//! The property lives in `helios_plugin_fuzz_smoke::targets::manifest`; a panic there is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = helios_plugin_fuzz_smoke::targets::manifest(data);
});
