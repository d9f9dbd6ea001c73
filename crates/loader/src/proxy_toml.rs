//! `proxy.toml` `[[plugins]]`: which plugins a host runs, where they come from, which keys they
//! must be signed with, and the limits and policies bound to them.
//!
//! ```toml
//! [[plugins]]
//! name = "tool-denylist"                       # must equal the signed manifest's name
//! source = "plugins/tool-denylist-1.0.0.tar.gz" # artefact, guard-manifest.yaml dir, or x.wasm + x.wasm.sig
//!                                               # (see [`Source`])
//! verify_with = "trusted-keys"                  # trust-root directory (PEM, signify, hex, base64 .pub)
//! hooks = ["pre_query"]                         # optional: each must be declared by the plugin
//! on_error = "abort"                            # skip (default) | abort
//! priority = 10                                 # lower runs first (default 1000)
//! fuel = 10_000_000                             # per call (default 10,000,000)
//! deadline_ms = 50                              # wall-clock deadline per call (default 100)
//! memory = 16_777_216                           # linear memory cap in bytes (default 16 MiB)
//! kv_max_keys = 1024                            # keys in its KV namespace (default 1024)
//! kv_max_bytes = 67_108_864                     # bytes in its KV namespace (default 64 MiB)
//! config = { denylist = "rm,curl" }             # overrides the manifest's config, key by key
//! canary = "canary/tool-denylist"               # optional: a 32-fixture corpus (MANIFEST.sha256) a new
//!                                               # module must reproduce before it goes live
//! incident_dir = "incidents"                    # failed canaries and watchdog rollbacks (default)
//! shadow = { source = "plugins/next.wasm", every = 1 } # optional: a candidate run beside the live
//!                                               # one on one call in `every`, never applied
//! ```
//!
//! Names are unique within a file: a plugin's name is its KV namespace (so that a new version of
//! the same plugin keeps its state), and two entries with one name would share it.
//!
//! Relative paths resolve against the config file's directory. Other top-level tables of the file
//! belong to the proxy and are ignored here; inside `[[plugins]]` every field is known and a typo is
//! an error naming the field and the file. Every plugin's source is resolved ([`Resolver`]) and goes
//! through [`helios_plugin_artefact::verify`] (size cap, SHA-256, blocklist, signature, name and version)
//! before [`Runtime::load`] compiles it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use helios_plugin_artefact::{Blocklist, TrustRoot, VerifiedPlugin, VerifyOptions};
use helios_plugin_host::{Chain, InstanceMode, LoadError, OnError, Plugin, PluginConfig, Runtime};
use helios_plugin_schema::Hook;
use helios_plugin_schema::limits::DEFAULT_MAX_MODULE_BYTES;
use serde::Deserialize;

use crate::parallel;
use crate::source::{Resolver, Source, SourceError};
use crate::verify::{VerifyError, load_verified, merged_config, verify_named};

/// A `proxy.toml` that could not become a chain. Each message names the file, the plugin entry
/// (index and name) and the field or the check that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: plugins[{index}] ({name}) field {field}: {message}")]
    Field { file: String, index: usize, name: String, field: &'static str, message: String },
    #[error("{file}: plugins[{index}] ({name}): {source}")]
    Verify { file: String, index: usize, name: String, source: Box<helios_plugin_artefact::Error> },
    #[error("{file}: plugins[{index}] ({name}): {source}")]
    Load { file: String, index: usize, name: String, source: Box<LoadError> },
}

/// One `[[plugins]]` entry. Every field is known: a typo must not silently drop a policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The plugin's name; must equal the name its manifest (and signature) carries.
    pub name: String,
    /// Where the plugin comes from: today a path to an artefact (`.tar.gz`), a directory holding
    /// `guard-manifest.yaml` (or that file), or a bare `.wasm` next to its `.wasm.sig` sidecar (name
    /// and version then come from the sidecar).
    pub source: Source,
    /// Hooks the operator expects the plugin to serve; each must be declared by it. Default: all it
    /// declares.
    #[serde(default, with = "optional_hooks")]
    pub hooks: Option<Vec<Hook>>,
    /// Trust-root directory the plugin's signature must verify against.
    pub verify_with: Option<PathBuf>,
    /// Digest blocklist file (`{"digests": ["sha256:..."]}`).
    pub blocklist: Option<PathBuf>,
    /// Load an unsigned plugin (development only; every load logs a warning). Default: false.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Default: skip.
    pub on_error: Option<OnError>,
    /// Lower runs first. Default: 1000.
    pub priority: Option<i32>,
    /// Fuel per call. Default: 10,000,000.
    pub fuel: Option<u64>,
    /// Wall-clock deadline per call, in milliseconds. Default: 100.
    pub deadline_ms: Option<u64>,
    /// Keys the plugin may keep in its KV namespace. Default: 1024.
    pub kv_max_keys: Option<usize>,
    /// Bytes (keys + values) the plugin may keep in its KV namespace. Default: 64 MiB.
    pub kv_max_bytes: Option<usize>,
    /// Linear memory cap in bytes. Default: 16 MiB.
    pub memory: Option<u64>,
    /// Module size cap in bytes, checked before hashing. Default: 10 MiB.
    pub max_module_bytes: Option<u64>,
    /// A failing advisory guard allows instead of denying. Default: false.
    pub advisory: Option<bool>,
    /// `pooled` (default) or `fresh`.
    pub mode: Option<InstanceMode>,
    /// Config values; each overrides the manifest's value of the same key.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// A canary corpus directory (exactly 32 fixtures listed in `MANIFEST.sha256`): a reload or a
    /// promotion that changes the module replays it first and keeps the old module on a mismatch.
    pub canary: Option<PathBuf>,
    /// Where canary failures write their incident directories. Default: `incidents` next to the
    /// config file.
    pub incident_dir: Option<PathBuf>,
    /// A candidate run beside the live plugin on real traffic; its decisions are compared, never
    /// applied.
    pub shadow: Option<ShadowEntry>,
}

/// `shadow = { source = "...", every = 1 }`: a candidate module for a plugin entry. It is verified
/// as the live one is (same trust root, blocklist, `allow_unsigned` and name) and loaded with the
/// entry's config and limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowEntry {
    /// Where the candidate comes from (as the entry's `source`).
    pub source: Source,
    /// One call in `every` is replayed on the candidate (at least 1). Default: 1, every call.
    #[serde(default = "every_call")]
    pub every: u64,
}

fn every_call() -> u64 {
    1
}

mod optional_hooks {
    use helios_plugin_schema::Hook;
    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Hook>>, D::Error> {
        helios_plugin_schema::manifest::hook_names::deserialize(d).map(Some)
    }
}

#[derive(Debug, Deserialize)]
struct PluginsOnly {
    #[serde(default)]
    plugins: Vec<PluginEntry>,
}

/// The `[[plugins]]` of one config file.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    /// The config file (for messages).
    pub file: PathBuf,
    /// Relative paths resolve against this directory.
    pub base_dir: PathBuf,
    pub plugins: Vec<PluginEntry>,
    /// Where OCI sources are pulled (default: [`crate::source::default_oci_cache`]).
    pub oci_cache: Option<PathBuf>,
}

/// A plugin that passed verification, with the settings of its entry.
#[derive(Debug, Clone)]
pub struct VerifiedEntry {
    pub entry: PluginEntry,
    pub plugin: VerifiedPlugin,
    /// The manifest's config overridden by the entry's.
    pub config: BTreeMap<String, String>,
    /// The verified `shadow` candidate, if the entry names one.
    pub shadow: Option<VerifiedPlugin>,
}

/// A loaded entry: the live plugin and, if configured, its shadow candidate (loaded with the same
/// name, config and limits; the same KV namespace).
#[derive(Debug, Clone)]
pub struct LoadedEntry {
    pub entry: PluginEntry,
    pub plugin: Arc<Plugin>,
    pub shadow: Option<Arc<Plugin>>,
}

impl PluginsConfig {
    /// Reads `[[plugins]]` from a config file.
    pub fn load(path: &Path) -> Result<PluginsConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { file: path.display().to_string(), source })?;
        PluginsConfig::from_toml(&text, path)
    }

    /// Parses `[[plugins]]` from TOML text; `file` names it and its directory is the base for
    /// relative paths.
    pub fn from_toml(text: &str, file: &Path) -> Result<PluginsConfig, ConfigError> {
        let parsed: PluginsOnly = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { file: file.display().to_string(), message: e.to_string() })?;
        PluginsConfig {
            file: file.to_path_buf(),
            base_dir: base_dir_of(file),
            plugins: parsed.plugins,
            oci_cache: None,
        }
        .checked()
    }

    /// Interprets `[[plugins]]` tables another parser kept raw (the proxy's own config reader).
    pub fn from_tables(tables: &[toml::Table], file: &Path) -> Result<PluginsConfig, ConfigError> {
        let mut plugins = Vec::with_capacity(tables.len());
        for (index, table) in tables.iter().enumerate() {
            let name = table.get("name").and_then(|v| v.as_str()).unwrap_or("?").to_string();
            let entry: PluginEntry = table.clone().try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
                file: file.display().to_string(),
                message: format!("plugins[{index}] ({name}): {}", e.message()),
            })?;
            plugins.push(entry);
        }
        PluginsConfig { file: file.to_path_buf(), base_dir: base_dir_of(file), plugins, oci_cache: None }.checked()
    }

    /// Refuses two entries with one name: the name is the plugin's KV namespace, its label in logs
    /// and metrics, and what a chain is searched by.
    fn checked(self) -> Result<PluginsConfig, ConfigError> {
        for (index, entry) in self.plugins.iter().enumerate() {
            if entry.shadow.as_ref().is_some_and(|s| s.every == 0) {
                return Err(ConfigError::Field {
                    file: self.file.display().to_string(),
                    index,
                    name: entry.name.clone(),
                    field: "shadow.every",
                    message: "must be at least 1 (one call in `every` runs on the candidate)".into(),
                });
            }
            if let Some(first) = self.plugins[..index].iter().position(|e| e.name == entry.name) {
                return Err(ConfigError::Field {
                    file: self.file.display().to_string(),
                    index,
                    name: entry.name.clone(),
                    field: "name",
                    message: format!(
                        "plugins[{first}] already has this name; each entry needs its own (the name is also the plugin's KV namespace)"
                    ),
                });
            }
        }
        Ok(self)
    }

    /// Resolves this file's sources and relative paths.
    pub fn resolver(&self) -> Resolver {
        let r = Resolver::new(self.base_dir.clone());
        match &self.oci_cache {
            Some(dir) => r.with_oci_cache(dir.clone()),
            None => r,
        }
    }

    /// Verifies every plugin (nothing is compiled), several at a time (one per core); the error is
    /// the first one in file order, as if they had been verified one after another.
    pub fn verify(&self) -> Result<Vec<VerifiedEntry>, ConfigError> {
        let resolver = self.resolver();
        // Sources are resolved first, one after another in file order (a registry pull writes into
        // the shared OCI cache; a local path is not even read here), up to the first that fails:
        // no entry after it could be the one reported, so none is fetched or verified.
        let mut sources: Vec<Resolved> = Vec::with_capacity(self.plugins.len());
        for e in &self.plugins {
            let live = resolver.resolve(&e.source);
            let shadow = match (&live, &e.shadow) {
                (Ok(_), Some(s)) => Some(resolver.resolve(&s.source)),
                _ => None,
            };
            let failed = live.is_err() || matches!(shadow, Some(Err(_)));
            sources.push((live, shadow));
            if failed {
                break;
            }
        }
        let weights: Vec<u64> = sources
            .iter()
            .map(|(p, _)| p.as_ref().ok().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len()))
            .collect();
        parallel::map_in_order(&weights, |index| self.verify_entry(index, &resolver, &sources[index]))
            .into_iter()
            .collect()
    }

    /// Verifies entry `index` (and its shadow candidate) from its resolved sources.
    fn verify_entry(
        &self,
        index: usize,
        resolver: &Resolver,
        sources: &Resolved,
    ) -> Result<VerifiedEntry, ConfigError> {
        let file = self.file.display().to_string();
        let entry = &self.plugins[index];
        let name = entry.name.clone();
        let verr =
            |source| ConfigError::Verify { file: file.clone(), index, name: name.clone(), source: Box::new(source) };
        let field = |field: &'static str, message: String| ConfigError::Field {
            file: file.clone(),
            index,
            name: name.clone(),
            field,
            message,
        };
        let mut opts = VerifyOptions::default()
            .allow_unsigned(entry.allow_unsigned)
            .max_module_bytes(entry.max_module_bytes.unwrap_or(DEFAULT_MAX_MODULE_BYTES));
        if let Some(dir) = &entry.verify_with {
            opts = opts.trust_root(TrustRoot::load(&resolver.path(dir)).map_err(verr)?);
        }
        if let Some(b) = &entry.blocklist {
            opts = opts.blocklist(Blocklist::load(&resolver.path(b)).map_err(verr)?);
        }
        let path = sources.0.as_ref().map_err(|e| field("source", e.to_string()))?;
        let plugin = verify_named(path, &entry.name, &opts).map_err(|e| match e {
            VerifyError::Artefact(source) => {
                ConfigError::Verify { file: file.clone(), index, name: name.clone(), source }
            }
            VerifyError::Name(m) => field("name", m.to_string()),
        })?;
        if let Some(hooks) = &entry.hooks {
            let undeclared: Vec<_> =
                hooks.iter().filter(|h| !plugin.hooks.contains(h)).map(|h| h.export_name()).collect();
            if !undeclared.is_empty() {
                let declared: Vec<_> = plugin.hooks.iter().map(|h| h.export_name()).collect();
                return Err(field(
                    "hooks",
                    format!(
                        "{} not declared by the plugin (it declares: {})",
                        undeclared.join(", "),
                        if declared.is_empty() { "none".into() } else { declared.join(", ") }
                    ),
                ));
            }
        }
        let config = merged_config(&plugin, &entry.config);
        let shadow = match &sources.1 {
            None => None,
            Some(resolved) => {
                let path = resolved.as_ref().map_err(|e| field("shadow.source", e.to_string()))?;
                Some(verify_named(path, &entry.name, &opts).map_err(|e| match e {
                    VerifyError::Artefact(source) => {
                        ConfigError::Verify { file: file.clone(), index, name: name.clone(), source }
                    }
                    VerifyError::Name(m) => field("shadow.source", m.to_string()),
                })?)
            }
        };
        Ok(VerifiedEntry { entry: entry.clone(), plugin, config, shadow })
    }

    /// Verifies every plugin, then loads each with `runtime`, and orders them into a chain.
    pub fn build_chain(&self, runtime: &Runtime) -> Result<Chain, ConfigError> {
        Ok(Chain::new(self.build_entries(runtime)?.into_iter().map(|e| e.plugin).collect()))
    }

    /// Verifies every plugin (and shadow candidate), then — only if all passed — loads each with
    /// `runtime`; both steps run several plugins at a time (one per core). Returns the entries in
    /// file order; an error is the first in file order, and a verification error comes before any
    /// load error, exactly as when the plugins are verified and then loaded one after another.
    pub fn build_entries(&self, runtime: &Runtime) -> Result<Vec<LoadedEntry>, ConfigError> {
        self.load_entries(runtime, &self.verify()?)
    }

    /// Loads what [`verify`](Self::verify) returned for this config, in its order (the second half
    /// of [`build_entries`](Self::build_entries)), several at a time; the error is the first in
    /// file order.
    pub fn load_entries(&self, runtime: &Runtime, verified: &[VerifiedEntry]) -> Result<Vec<LoadedEntry>, ConfigError> {
        let weights: Vec<u64> = verified
            .iter()
            .map(|v| (v.plugin.wasm.len() + v.shadow.as_ref().map_or(0, |s| s.wasm.len())) as u64)
            .collect();
        parallel::map_in_order(&weights, |index| self.load_entry(runtime, index, &verified[index]))
            .into_iter()
            .collect()
    }

    /// Loads one verified entry (its shadow candidate first) with the entry's settings.
    fn load_entry(&self, runtime: &Runtime, index: usize, v: &VerifiedEntry) -> Result<LoadedEntry, ConfigError> {
        let file = self.file.display().to_string();
        let e = &v.entry;
        let mut pc = PluginConfig::new(e.name.clone()).config_map(v.config.clone());
        if let Some(p) = e.priority {
            pc = pc.priority(p);
        }
        if let Some(o) = e.on_error {
            pc = pc.on_error(o);
        }
        if let Some(f) = e.fuel {
            pc = pc.fuel(Some(f));
        }
        if let Some(ms) = e.deadline_ms {
            pc = pc.deadline(std::time::Duration::from_millis(ms));
        }
        if let Some(n) = e.kv_max_keys {
            pc = pc.kv_max_keys(n);
        }
        if let Some(n) = e.kv_max_bytes {
            pc = pc.kv_max_bytes(n);
        }
        if let Some(m) = e.memory {
            pc = pc.max_memory_bytes(m);
        }
        if let Some(m) = e.max_module_bytes {
            pc = pc.max_module_bytes(m);
        }
        if let Some(a) = e.advisory {
            pc = pc.advisory(a);
        }
        if let Some(m) = e.mode {
            pc = pc.mode(m);
        }
        let load_error =
            |source| ConfigError::Load { file: file.clone(), index, name: e.name.clone(), source: Box::new(source) };
        // The candidate: the same settings, serving what the entry asks or what it declares.
        let shadow = match &v.shadow {
            None => None,
            Some(candidate) => {
                let hooks = e.hooks.clone().unwrap_or_else(|| candidate.hooks.clone());
                Some(load_verified(runtime, candidate, pc.clone().hooks(hooks)).map_err(load_error)?)
            }
        };
        // Serve what the operator asked for, else what the signed manifest declares.
        pc = pc.hooks(e.hooks.clone().unwrap_or_else(|| v.plugin.hooks.clone()));
        let plugin = load_verified(runtime, &v.plugin, pc).map_err(load_error)?;
        Ok(LoadedEntry { entry: v.entry.clone(), plugin, shadow })
    }
}

/// An entry's resolved source and, if it has one, its shadow candidate's.
type Resolved = (Result<PathBuf, SourceError>, Option<Result<PathBuf, SourceError>>);

fn base_dir_of(file: &Path) -> PathBuf {
    file.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Reads `[[plugins]]` of `path`, verifies and loads each plugin, and returns the chain.
pub fn load_chain(path: &Path, runtime: &Runtime) -> Result<Chain, ConfigError> {
    PluginsConfig::load(path)?.build_chain(runtime)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use helios_plugin_artefact::{PackOptions, PackSigning, keys, pack, save_artefact};
    use helios_plugin_schema::{HookContext, PreQueryResult, QueryContext};

    use helios_plugin_host::{KvCaps, RuntimeConfig};

    use super::*;

    /// A hook plugin whose pre_query blocks with a fixed reason.
    const BLOCKER: &str = r#"(module
        (memory (export "memory") 1)
        (data (i32.const 1024) "{\"kind\":\"block\",\"reason\":\"blocked by wat\"}")
        (func (export "alloc") (param i32) (result i32) i32.const 4096)
        (func (export "dealloc") (param i32 i32))
        (func (export "pre_query") (param i32 i32) (result i64)
            (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 42))))"#;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    /// A temp dir with `trusted/ops.pub`, `blocker.tar.gz` signed by that key, and `unsigned.tar.gz`.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::generate_signing_key().unwrap();
        std::fs::create_dir(dir.path().join("trusted")).unwrap();
        std::fs::write(dir.path().join("trusted/ops.pub"), keys::public_key_base64(&key.verifying_key())).unwrap();
        let wasm = wat::parse_str(BLOCKER).unwrap();
        let opts = |signing| PackOptions {
            config: BTreeMap::from([
                ("mode".to_string(), "strict".to_string()),
                ("keep".to_string(), "manifest".to_string()),
            ]),
            signing,
            ..PackOptions::new("blocker", "1.0.0")
        };
        let signed = pack(wasm.clone(), opts(PackSigning::Key(Box::new(key)))).unwrap();
        save_artefact(&signed.artefact, &dir.path().join("blocker.tar.gz")).unwrap();
        let unsigned = pack(wasm, opts(PackSigning::Unsigned)).unwrap();
        save_artefact(&unsigned.artefact, &dir.path().join("unsigned.tar.gz")).unwrap();
        Fixture { dir }
    }

    fn write_config(f: &Fixture, plugins: &str) -> PathBuf {
        let path = f.dir.path().join("proxy.toml");
        std::fs::write(&path, format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{plugins}")).unwrap();
        path
    }

    fn query() -> QueryContext {
        QueryContext {
            query: "DROP TABLE t".into(),
            normalized: "DROP TABLE t".into(),
            tables: vec!["t".into()],
            is_read_only: false,
            hook_context: HookContext { request_id: "r1".into(), ..Default::default() },
            facts: None,
        }
    }

    #[test]
    fn proxy_toml_builds_a_chain_of_verified_plugins() {
        let f = fixture();
        let path = write_config(
            &f,
            r#"[[plugins]]
name = "blocker"
source = "blocker.tar.gz"
verify_with = "trusted"
hooks = ["pre_query"]
on_error = "abort"
priority = 7
fuel = 1_000_000
deadline_ms = 25
memory = 1_048_576
kv_max_keys = 3
kv_max_bytes = 4096
config = { mode = "lenient" }
"#,
        );
        let cfg = PluginsConfig::load(&path).unwrap();
        let verified = cfg.verify().unwrap();
        assert_eq!(verified[0].plugin.signer.as_ref().unwrap().label, "ops");
        assert_eq!(verified[0].config["mode"], "lenient", "the entry overrides the manifest");
        assert_eq!(verified[0].config["keep"], "manifest");

        let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
        let chain = load_chain(&path, &runtime).unwrap();
        assert_eq!(chain.plugins().len(), 1);
        let p = &chain.plugins()[0];
        assert_eq!((p.name(), p.priority(), p.on_error()), ("blocker", 7, OnError::Abort));
        assert_eq!(p.limits().fuel, Some(1_000_000));
        assert_eq!(p.limits().deadline, std::time::Duration::from_millis(25), "deadline_ms reaches the plugin");
        assert_eq!(p.kv_caps(), KvCaps { max_keys: 3, max_bytes: 4096 });
        assert_eq!(p.limits().max_memory_bytes, 1_048_576);
        let outcome = chain.pre_query(&query());
        assert_eq!(outcome.result, PreQueryResult::Block { reason: "blocked by wat".into() });
    }

    #[test]
    fn two_entries_with_one_name_are_refused_naming_both() {
        let f = fixture();
        let entry = "[[plugins]]\nname = \"blocker\"\nsource = \"blocker.tar.gz\"\nverify_with = \"trusted\"\n";
        let path = write_config(&f, &format!("{entry}\n{entry}"));
        let e = PluginsConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("plugins[1] (blocker) field name") && e.contains("plugins[0] already has this name"), "{e}");
        let doc: toml::Table = toml::from_str(&format!("{entry}\n{entry}")).unwrap();
        let tables: Vec<toml::Table> =
            doc["plugins"].as_array().unwrap().iter().map(|v| v.as_table().unwrap().clone()).collect();
        let e = PluginsConfig::from_tables(&tables, &path).unwrap_err().to_string();
        assert!(e.contains("already has this name"), "{e}");
    }

    #[test]
    fn a_typo_in_an_entry_names_the_field_and_the_file() {
        let f = fixture();
        let path = write_config(
            &f,
            "[[plugins]]\nname = \"blocker\"\nsource = \"blocker.tar.gz\"\nverfy_with = \"trusted\"\n",
        );
        let e = PluginsConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("proxy.toml") && e.contains("verfy_with"), "{e}");
        let path = write_config(&f, "[[plugins]]\nname = \"blocker\"\n");
        let e = PluginsConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("proxy.toml") && e.contains("source"), "{e}");
    }

    #[test]
    fn a_source_this_build_cannot_fetch_names_the_entry_the_field_and_the_scheme() {
        let f = fixture();
        let path = write_config(&f, "[[plugins]]\nname = \"blocker\"\nsource = \"s3://bucket/blocker.tar.gz\"\n");
        let e = PluginsConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("proxy.toml") && e.contains("source") && e.contains("no s3:// sources"), "{e}");
        let doc: toml::Table = toml::from_str("[[plugins]]\nname = \"blocker\"\nsource = \"\"\n").unwrap();
        let tables: Vec<toml::Table> =
            doc["plugins"].as_array().unwrap().iter().map(|v| v.as_table().unwrap().clone()).collect();
        let e = PluginsConfig::from_tables(&tables, &path).unwrap_err().to_string();
        assert!(e.contains("plugins[0] (blocker)") && e.contains("is empty"), "{e}");
    }

    #[test]
    fn an_unsigned_artefact_is_refused_before_compiling_unless_allowed() {
        let f = fixture();
        let path = write_config(
            &f,
            "[[plugins]]\nname = \"blocker\"\nsource = \"unsigned.tar.gz\"\nverify_with = \"trusted\"\n",
        );
        let e = PluginsConfig::load(&path).unwrap().verify().unwrap_err().to_string();
        assert!(e.contains("plugins[0] (blocker)") && e.contains("E_SIGNATURE_MISSING"), "{e}");
        let path =
            write_config(&f, "[[plugins]]\nname = \"blocker\"\nsource = \"unsigned.tar.gz\"\nallow_unsigned = true\n");
        let v = PluginsConfig::load(&path).unwrap().verify().unwrap();
        assert!(v[0].plugin.signer.is_none());
    }

    /// An entry cannot run a plugin under another plugin's name (and so in its KV namespace); the
    /// error says both names and where the plugin's own name comes from.
    #[test]
    fn an_entry_naming_another_plugin_is_refused_saying_where_its_name_comes_from() {
        let f = fixture();
        let path = write_config(
            &f,
            "[[plugins]]\nname = \"auditor\"\nsource = \"blocker.tar.gz\"\nverify_with = \"trusted\"\n",
        );
        let e = PluginsConfig::load(&path).unwrap().verify().unwrap_err().to_string();
        assert!(
            e.contains("plugins[0] (auditor) field name")
                && e.contains("\"auditor\" differs from the plugin's own name \"blocker\" (from its signed manifest)"),
            "{e}"
        );
        let path =
            write_config(&f, "[[plugins]]\nname = \"auditor\"\nsource = \"unsigned.tar.gz\"\nallow_unsigned = true\n");
        let e = PluginsConfig::load(&path).unwrap().verify().unwrap_err().to_string();
        assert!(
            e.contains("\"auditor\" differs from the plugin's own name \"blocker\" (from its manifest, or for an unsigned module without one, its file name)"),
            "{e}"
        );
    }

    #[test]
    fn an_untrusted_signer_or_a_blocklisted_digest_never_loads() {
        let f = fixture();
        std::fs::create_dir(f.dir.path().join("other")).unwrap();
        let other = keys::generate_signing_key().unwrap();
        std::fs::write(f.dir.path().join("other/k.pub"), keys::public_key_base64(&other.verifying_key())).unwrap();
        let path =
            write_config(&f, "[[plugins]]\nname = \"blocker\"\nsource = \"blocker.tar.gz\"\nverify_with = \"other\"\n");
        let e = PluginsConfig::load(&path).unwrap().verify().unwrap_err().to_string();
        assert!(e.contains("E_SIGNER_UNTRUSTED"), "{e}");

        let sha = helios_plugin_artefact::signing::sha256_hex(&wat::parse_str(BLOCKER).unwrap());
        std::fs::write(f.dir.path().join("bl.json"), format!("{{\"digests\":[\"sha256:{sha}\"]}}")).unwrap();
        let path = write_config(
            &f,
            "[[plugins]]\nname = \"blocker\"\nsource = \"blocker.tar.gz\"\nverify_with = \"trusted\"\nblocklist = \"bl.json\"\n",
        );
        let e = PluginsConfig::load(&path).unwrap().verify().unwrap_err().to_string();
        assert!(e.contains("E_GUARD_DIGEST_BLOCKLISTED"), "{e}");
    }

    #[test]
    fn name_and_hooks_must_match_the_signed_manifest() {
        let f = fixture();
        let path = write_config(
            &f,
            "[[plugins]]\nname = \"impostor\"\nsource = \"blocker.tar.gz\"\nverify_with = \"trusted\"\n",
        );
        let e = PluginsConfig::load(&path).unwrap().verify().unwrap_err().to_string();
        assert!(e.contains("field name") && e.contains("\"blocker\""), "{e}");
        let path = write_config(
            &f,
            "[[plugins]]\nname = \"blocker\"\nsource = \"blocker.tar.gz\"\nverify_with = \"trusted\"\nhooks = [\"route\"]\n",
        );
        let e = PluginsConfig::load(&path).unwrap().verify().unwrap_err().to_string();
        assert!(e.contains("field hooks") && e.contains("route"), "{e}");
    }

    #[test]
    fn a_shadow_candidate_is_verified_like_the_live_plugin_and_its_fields_are_checked() {
        let f = fixture();
        let entry = "[[plugins]]\nname = \"blocker\"\nsource = \"blocker.tar.gz\"\nverify_with = \"trusted\"\n";
        let path = write_config(&f, &format!("{entry}shadow = {{ source = \"blocker.tar.gz\", every = 4 }}\n"));
        let cfg = PluginsConfig::load(&path).unwrap();
        assert_eq!(cfg.plugins[0].shadow.as_ref().map(|s| s.every), Some(4));
        let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
        let loaded = cfg.build_entries(&runtime).unwrap();
        let shadow = loaded[0].shadow.as_ref().expect("the candidate is loaded");
        assert_eq!((shadow.name(), shadow.hooks()), ("blocker", loaded[0].plugin.hooks()));

        // A typo inside `shadow`, and `every = 0`, name the file and the field.
        let path = write_config(&f, &format!("{entry}shadow = {{ source = \"blocker.tar.gz\", evry = 4 }}\n"));
        let e = PluginsConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("proxy.toml") && e.contains("evry"), "{e}");
        let path = write_config(&f, &format!("{entry}shadow = {{ source = \"blocker.tar.gz\", every = 0 }}\n"));
        let e = PluginsConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("proxy.toml") && e.contains("plugins[0] (blocker) field shadow.every"), "{e}");
        // The candidate's signature is checked against the entry's trust root.
        let path = write_config(&f, &format!("{entry}shadow = {{ source = \"unsigned.tar.gz\" }}\n"));
        let e = PluginsConfig::load(&path).unwrap().verify().unwrap_err().to_string();
        assert!(e.contains("plugins[0] (blocker)") && e.contains("E_SIGNATURE_MISSING"), "{e}");
    }

    /// Packs BLOCKER as plugin `name` into the fixture, signed with `key` (trusted: the test adds
    /// its public half to `trusted/`) or unsigned; `pad` bytes of data make it heavier (the loader
    /// starts heavier plugins first).
    fn pack_as(f: &Fixture, name: &str, key: Option<&ed25519_dalek::SigningKey>, pad: usize) {
        let wat = BLOCKER.replacen("(memory (export \"memory\") 1)", "(memory (export \"memory\") 8)", 1).replacen(
            "(func (export \"alloc\")",
            &format!("(data (i32.const 8192) \"{}\") (func (export \"alloc\")", "x".repeat(pad)),
            1,
        );
        let signing = match key {
            Some(k) => PackSigning::Key(Box::new(k.clone())),
            None => PackSigning::Unsigned,
        };
        let packed =
            pack(wat::parse_str(&wat).unwrap(), PackOptions { signing, ..PackOptions::new(name, "1.0.0") }).unwrap();
        save_artefact(&packed.artefact, &f.dir.path().join(format!("{name}.tar.gz"))).unwrap();
    }

    fn entries(list: &[(&str, &str)]) -> String {
        list.iter()
            .map(|(name, extra)| {
                format!(
                    "[[plugins]]\nname = \"{name}\"\nsource = \"{name}.tar.gz\"\nverify_with = \"trusted\"\n{extra}\n"
                )
            })
            .collect()
    }

    /// Plugins are verified and loaded several at a time, heaviest first, yet the error is always
    /// the one a loop in file order would have met first, and a verification error always comes
    /// before any load error (nothing is compiled unless every plugin verified).
    #[test]
    fn the_first_failure_in_file_order_is_reported_whatever_finishes_first() {
        let f = fixture();
        let key = keys::generate_signing_key().unwrap();
        std::fs::write(f.dir.path().join("trusted/more.pub"), keys::public_key_base64(&key.verifying_key())).unwrap();
        for (name, signed, pad) in
            [("p0", true, 0), ("p1", true, 0), ("p2", false, 0), ("p3", true, 200_000), ("p4", true, 300_000)]
        {
            pack_as(&f, name, signed.then_some(&key), pad);
        }
        let huge = "memory = 1_099_511_627_776";
        let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
        let cases = [
            // p2 is unsigned; p4 (heaviest, verified first) names another plugin.
            (
                entries(&[("p0", ""), ("p1", ""), ("p2", ""), ("p3", ""), ("p4", "")])
                    .replace("name = \"p4\"", "name = \"p4x\""),
                "plugins[2] (p2): E_SIGNATURE_MISSING",
            ),
            // Two load failures (a memory cap over the runtime's): the first in file order.
            (
                entries(&[("p0", ""), ("p1", huge), ("p3", ""), ("p4", huge)]),
                "plugins[1] (p1): plugin \"p1\": max_memory_bytes is 1099511627776, over the runtime's maximum",
            ),
            // A load failure early and a verification failure late: verification comes first.
            (entries(&[("p0", ""), ("p1", huge), ("p3", ""), ("p2", "")]), "plugins[3] (p2): E_SIGNATURE_MISSING"),
        ];
        for (plugins, expected) in cases {
            let path = write_config(&f, &plugins);
            for _ in 0..10 {
                let e = PluginsConfig::load(&path).unwrap().build_entries(&runtime).unwrap_err().to_string();
                assert!(e.starts_with(&format!("{}: {expected}", path.display())), "expected {expected:?}, got {e}");
            }
        }
        // All good: every plugin loaded, returned in file order.
        let path = write_config(&f, &entries(&[("p4", ""), ("p0", ""), ("p3", ""), ("p1", "")]));
        let loaded = PluginsConfig::load(&path).unwrap().build_entries(&runtime).unwrap();
        let names: Vec<_> = loaded.iter().map(|e| e.plugin.name()).collect();
        assert_eq!(names, ["p4", "p0", "p3", "p1"]);
        for e in loaded {
            let outcome = Chain::new(vec![e.plugin]).pre_query(&query());
            assert_eq!(outcome.result, PreQueryResult::Block { reason: "blocked by wat".into() });
        }
    }

    #[test]
    fn raw_tables_from_another_parser_are_read_the_same_way() {
        let f = fixture();
        let doc: toml::Table = toml::from_str(
            "[[plugins]]\nname = \"blocker\"\nsource = \"blocker.tar.gz\"\nverify_with = \"trusted\"\npriority = 3\n",
        )
        .unwrap();
        let tables: Vec<toml::Table> =
            doc["plugins"].as_array().unwrap().iter().map(|v| v.as_table().unwrap().clone()).collect();
        let cfg = PluginsConfig::from_tables(&tables, &f.dir.path().join("proxy.toml")).unwrap();
        assert_eq!(cfg.plugins[0].priority, Some(3));
        assert_eq!(cfg.verify().unwrap().len(), 1);
        let mut bad = tables[0].clone();
        bad.insert("prority".into(), toml::Value::Integer(1));
        let e = PluginsConfig::from_tables(&[bad], Path::new("conf/proxy.toml")).unwrap_err().to_string();
        assert!(e.contains("conf/proxy.toml") && e.contains("prority"), "{e}");
    }
}
