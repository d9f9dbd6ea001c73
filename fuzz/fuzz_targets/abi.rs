//! Fuzz target `abi`: wasm-smith modules importing the host surface, loaded and called through Runtime with small fuel.
//! The property lives in `helios_plugin_fuzz_smoke::targets::abi`; a panic there is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = helios_plugin_fuzz_smoke::targets::abi(data);
});
