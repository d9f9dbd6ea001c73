//! The fuzz targets of helios-plugin as plain functions over bytes, so that one definition serves
//! both `cargo fuzz` (the libFuzzer harnesses in `fuzz/fuzz_targets/` call these) and the normal test
//! suite (`tests/all/smoke.rs` runs every target over its committed seed corpus in `fuzz/corpus/`).
//!
//! | target | input | what must hold |
//! |---|---|---|
//! | [`targets::manifest`] | any bytes | `guard-manifest.yaml`, `manifest.json`, sidecar and blocklist parsers never panic; errors name the file; an accepted `manifest.json` re-serialises to bytes that parse to the same manifest |
//! | [`targets::config`] | any bytes | the `proxy.toml` `[[plugins]]` reader never panics; errors name the file |
//! | [`targets::unpack`] | any bytes | `unpack` of a `.tar.gz` never panics, never returns an entry over its cap; verification of what it returns never panics |
//! | [`targets::abi`] | bytes for `wasm-smith` | a generated module importing the host surface and exporting both calling conventions loads or fails with an error naming the plugin, and every call of it ends in a verdict or an error naming the plugin |
//!
//! Each target returns an [`Outcome`] so the smoke tests can check that their seeds reach past the
//! first parser (a corpus that only exercises rejections would prove little).
//!
//! **Invariant:** a target panics only when a property above is broken; that panic is the finding.

use std::sync::OnceLock;
use std::time::Duration;

use helios_plugin_host::{MemoryKv, PluginConfig, Runtime, RuntimeConfig};
use helios_plugin_schema::{Hook, abi};

/// How far an input got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The first parser refused it with an error naming its source.
    Rejected,
    /// It was accepted by at least one parser (and, for `abi`, loaded and called).
    Accepted,
}

/// The fuzz targets. Each takes arbitrary bytes and must not panic.
pub mod targets {
    use super::*;
    use helios_plugin_artefact::{
        Blocklist, UnpackLimits, VerifyOptions,
        manifests::{artefact_manifest_bytes, parse_artefact_manifest, parse_guard_manifest},
        signing::parse_sidecar,
        unpack as unpack_artefact, verify_artefact,
    };
    use helios_plugin_loader::PluginsConfig;

    fn named(e: &impl std::fmt::Display, file: &str, what: &str) {
        let msg = e.to_string();
        assert!(msg.contains(file), "{what}: the error does not name {file}: {msg}");
    }

    /// `guard-manifest.yaml`, `manifest.json`, a `.sig` sidecar and a blocklist, all from the same bytes.
    pub fn manifest(data: &[u8]) -> Outcome {
        let mut accepted = false;
        match parse_guard_manifest(data, "guard-manifest.yaml") {
            Ok(_) => accepted = true,
            Err(e) => named(&e, "guard-manifest.yaml", "guard manifest"),
        }
        match parse_artefact_manifest(data, "manifest.json") {
            Ok(m) => {
                accepted = true;
                let again = artefact_manifest_bytes(&m);
                let round = parse_artefact_manifest(&again, "manifest.json")
                    .unwrap_or_else(|e| panic!("an accepted manifest.json does not re-parse after writing: {e}"));
                assert_eq!(round, m, "manifest.json does not round-trip");
            }
            Err(e) => named(&e, "manifest.json", "artefact manifest"),
        }
        match parse_sidecar(data, "plugin.sig") {
            Ok(_) => accepted = true,
            Err(e) => named(&e, "plugin.sig", "sidecar"),
        }
        match Blocklist::parse(data, "blocklist.json") {
            Ok(b) => {
                accepted = true;
                let _ = b.contains("sha256:00");
            }
            Err(e) => named(&e, "blocklist.json", "blocklist"),
        }
        if accepted { Outcome::Accepted } else { Outcome::Rejected }
    }

    /// The `[[plugins]]` section of a `proxy.toml`.
    pub fn config(data: &[u8]) -> Outcome {
        let Ok(text) = std::str::from_utf8(data) else { return Outcome::Rejected };
        match PluginsConfig::from_toml(text, std::path::Path::new("fuzz/proxy.toml")) {
            Ok(c) => {
                for p in &c.plugins {
                    // Sources resolve under the config's directory; nothing is read.
                    let resolved = c.resolver().resolve(&p.source);
                    let _ = (&p.name, resolved.map(|r| r.is_absolute()), &p.hooks, &p.config);
                }
                Outcome::Accepted
            }
            Err(e) => {
                named(&e, "fuzz/proxy.toml", "proxy.toml");
                Outcome::Rejected
            }
        }
    }

    /// The largest module the unpack target accepts (small, so that a run stays fast).
    pub const UNPACK_MAX_MODULE_BYTES: u64 = 1 << 20;

    /// A `.tar.gz` artefact, unpacked in memory and then verified (unsigned allowed, so verification
    /// goes past the signature step).
    pub fn unpack(data: &[u8]) -> Outcome {
        let limits = UnpackLimits { max_module_bytes: UNPACK_MAX_MODULE_BYTES };
        match unpack_artefact(data, "fuzz.tar.gz", &limits) {
            Ok(a) => {
                assert!(
                    a.wasm.len() as u64 <= UNPACK_MAX_MODULE_BYTES,
                    "plugin.wasm of {} bytes passed the cap",
                    a.wasm.len()
                );
                assert!(a.manifest.len() as u64 <= helios_plugin_schema::manifest::MAX_MANIFEST_BYTES);
                let opts = VerifyOptions::default().allow_unsigned(true).max_module_bytes(UNPACK_MAX_MODULE_BYTES);
                if let Err(e) = verify_artefact(&a, "fuzz.tar.gz", &opts) {
                    let msg = e.to_string();
                    assert!(!msg.is_empty());
                }
                Outcome::Accepted
            }
            Err(e) => {
                named(&e, "fuzz.tar.gz", "unpack");
                Outcome::Rejected
            }
        }
    }

    /// The module every generated module may import from: the whole host surface.
    fn host_surface() -> Vec<u8> {
        let mut wat = String::from("(module\n");
        for s in abi::IMPORTS {
            let params: Vec<_> = s.sig.params.iter().map(|t| t.name()).collect();
            let results: Vec<_> = s.sig.results.iter().map(|t| t.name()).collect();
            wat.push_str(&format!(
                "(import \"{}\" \"{}\" (func (param {}) (result {})))\n",
                s.module,
                s.name,
                params.join(" "),
                results.join(" ")
            ));
        }
        wat.push(')');
        wat::parse_str(&wat).expect("the host surface is valid WAT")
    }

    /// The exports every shaped module has: memory, both allocators, the guard and three hooks.
    fn plugin_shape() -> Vec<u8> {
        let hooks: String = [Hook::PreQuery, Hook::Route, Hook::PostQuery]
            .iter()
            .map(|h| format!("(func (export \"{}\") (param i32 i32) (result i64) unreachable)\n", h.export_name()))
            .collect();
        let wat = format!(
            r#"(module
  (memory (export "{memory}") 1 16)
  (func (export "{alloc}") (param i32) (result i32) unreachable)
  (func (export "{dealloc}") (param i32 i32) unreachable)
  (func (export "{chio_alloc}") (param i32) (result i32) unreachable)
  (func (export "{chio_free}") (param i32 i32) unreachable)
  (func (export "{evaluate}") (param i32 i32) (result i32) unreachable)
  (func (export "{reason}") (param i32 i32) (result i32) unreachable)
  {hooks})"#,
            memory = abi::MEMORY,
            alloc = abi::ALLOC,
            dealloc = abi::DEALLOC,
            chio_alloc = abi::CHIO_ALLOC,
            chio_free = abi::CHIO_FREE,
            evaluate = abi::EVALUATE,
            reason = abi::CHIO_DENY_REASON,
        );
        wat::parse_str(&wat).expect("the plugin shape is valid WAT")
    }

    fn runtime() -> &'static Runtime {
        static RT: OnceLock<Runtime> = OnceLock::new();
        RT.get_or_init(|| {
            let cfg = RuntimeConfig::default()
                .kv(MemoryKv::with_caps(64, 64 << 10))
                .max_instances(64)
                .max_plugin_memory_bytes(ABI_MAX_MEMORY_BYTES);
            Runtime::new(cfg).expect("the fuzz runtime starts")
        })
    }

    /// The memory cap of generated plugins.
    pub const ABI_MAX_MEMORY_BYTES: u64 = 4 << 20;
    /// Fuel per call of generated plugins.
    pub const ABI_FUEL: u64 = 100_000;

    fn wasm_smith_config(u: &mut arbitrary::Unstructured<'_>, shaped: bool) -> wasm_smith::Config {
        static SURFACE: OnceLock<Vec<u8>> = OnceLock::new();
        static SHAPE: OnceLock<Vec<u8>> = OnceLock::new();
        let mut c = wasm_smith::Config {
            max_memories: 1,
            max_tables: 2,
            max_funcs: 20,
            max_imports: 10,
            max_memory32_bytes: 1 << 24,
            memory64_enabled: false,
            simd_enabled: false,
            threads_enabled: false,
            exceptions_enabled: false,
            gc_enabled: false,
            tail_call_enabled: false,
            custom_page_sizes_enabled: false,
            wide_arithmetic_enabled: false,
            relaxed_simd_enabled: false,
            canonicalize_nans: u.arbitrary().unwrap_or(false),
            ..Default::default()
        };
        if shaped {
            c.available_imports = Some(SURFACE.get_or_init(host_surface).clone());
            c.exports = Some(SHAPE.get_or_init(plugin_shape).clone());
        }
        c
    }

    /// A `wasm-smith` module loaded and called through [`Runtime`] with small fuel. The first byte
    /// picks a shaped module (host imports only, both calling conventions exported) or a free one
    /// (arbitrary imports and exports, mostly refused at load).
    pub fn abi(data: &[u8]) -> Outcome {
        let Some((&first, rest)) = data.split_first() else { return Outcome::Rejected };
        let mut u = arbitrary::Unstructured::new(rest);
        let config = wasm_smith_config(&mut u, first & 1 == 0);
        let Ok(module) = wasm_smith::Module::new(config, &mut u) else { return Outcome::Rejected };
        run_module(&module.to_bytes())
    }

    /// Loads `wasm` as plugin `fuzz` and calls every convention it serves, twice (the second call
    /// reuses a pooled instance when the first succeeded).
    pub fn run_module(wasm: &[u8]) -> Outcome {
        let cfg = PluginConfig::new("fuzz")
            .fuel(Some(ABI_FUEL))
            .deadline(Duration::from_millis(200))
            .max_memory_bytes(ABI_MAX_MEMORY_BYTES)
            .max_idle_instances(2);
        let plugin = match runtime().load(wasm, cfg) {
            Ok(p) => p,
            Err(e) => {
                named(&e, "fuzz", "load");
                return Outcome::Rejected;
            }
        };
        let request = br#"{"tool_name":"rm","server_id":"s","agent_id":"a","arguments":{"path":"/"}}"#;
        let query = br#"{"query":"SELECT 1","normalized":"SELECT ?","tables":["t"],"is_read_only":true,"hook_context":{"request_id":"r","attributes":{}}}"#;
        let post = br#"{"query_context":{"query":"SELECT 1","normalized":"SELECT ?","tables":[],"is_read_only":true,"hook_context":{"request_id":"r","attributes":{}}},"outcome":{"success":true,"elapsed_us":1,"response_bytes":2}}"#;
        for _ in 0..2 {
            if plugin.is_guard() {
                if let Err(e) = plugin.evaluate_json(request) {
                    named(&e, "fuzz", helios_plugin_schema::abi::EVALUATE);
                }
                let _ = plugin.evaluate(&Default::default());
            }
            for (hook, input) in [(Hook::PreQuery, &query[..]), (Hook::Route, &query[..]), (Hook::PostQuery, &post[..])]
            {
                if plugin.serves(hook)
                    && let Err(e) = plugin.call_json(hook, input)
                {
                    named(&e, "fuzz", hook.export_name());
                }
            }
        }
        let s = plugin.stats();
        assert!(s.failures <= s.calls, "{s:?}");
        Outcome::Accepted
    }
}

/// The seed corpus of a target: every file of `fuzz/corpus/<target>/`, sorted by name.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_file())
                .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).ok()?)))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A fuzz target: arbitrary bytes in, how far they got out.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target by name, for the smoke tests and `cargo xtask fuzz`.
pub const TARGETS: &[(&str, Target)] =
    &[("manifest", targets::manifest), ("config", targets::config), ("unpack", targets::unpack), ("abi", targets::abi)];
