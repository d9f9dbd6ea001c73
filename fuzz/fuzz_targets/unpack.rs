//! Fuzz target `unpack`: helios_plugin_artefact::unpack on arbitrary bytes, then verification of what it returns.
//! The property lives in `helios_plugin_fuzz_smoke::targets::unpack`; a panic there is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = helios_plugin_fuzz_smoke::targets::unpack(data);
});
