//! `helios-plugin call`: run one hook or guard of a module on a JSON input.
// Filled in together with the host's public API.
