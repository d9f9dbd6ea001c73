//! Static inspection of a core wasm module: imports, exports and the `helios.plugin` declaration
//! (feature `module-info`; hosts and tools use it, guests do not).
//!
//! It lives beside [`abi`] and [`section`] because it is their reader: the import surface and the
//! section format are checked against the tables they define, and nowhere else.

use crate::{Hook, abi, section};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef};

/// A module that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ModuleInfoError {
    #[error("not a core WebAssembly module: {0}")]
    Malformed(String),
    #[error("a component, not a core module (components are not supported yet)")]
    Component,
    #[error(transparent)]
    Section(#[from] section::SectionError),
}

/// Whether `bytes` is a WebAssembly component (its header's layer field), not a core module.
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

/// One import of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportInfo {
    pub module: String,
    pub name: String,
    /// `func`, `memory`, `table`, `global` or `tag`.
    pub kind: &'static str,
}

/// One export of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportInfo {
    pub name: String,
    pub kind: &'static str,
}

/// What a module says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    pub size: u64,
    /// Lowercase hex SHA-256 of the module bytes.
    pub sha256: String,
    pub imports: Vec<ImportInfo>,
    pub exports: Vec<ExportInfo>,
    /// Hooks listed in the `helios.plugin` custom section (empty for modules not built with the SDK).
    pub declared_hooks: Vec<Hook>,
    /// Whether the section declares a chio guard.
    pub declared_guard: bool,
    /// The SDK version that built the module, if it says.
    pub sdk: Option<String>,
    /// The plugin name the module declares (its crate's package name, written by the SDK).
    pub declared_name: Option<String>,
    /// The plugin version the module declares (its crate's package version).
    pub declared_version: Option<String>,
    /// The module declares `facts=none`: it never reads the host's statement facts.
    pub declared_without_facts: bool,
}

impl ModuleInfo {
    /// Reads a module's structure. Does not validate function bodies.
    pub fn parse(bytes: &[u8]) -> Result<ModuleInfo, ModuleInfoError> {
        let malformed = |e: wasmparser::BinaryReaderError| ModuleInfoError::Malformed(e.to_string());
        let mut imports = Vec::new();
        let mut exports = Vec::new();
        let mut section_bytes = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.map_err(malformed)? {
                Payload::Version { encoding: wasmparser::Encoding::Component, .. } => {
                    return Err(ModuleInfoError::Component);
                }
                Payload::ImportSection(r) => {
                    for imp in r.into_imports() {
                        let imp = imp.map_err(malformed)?;
                        let kind = match imp.ty {
                            TypeRef::Func(_) | TypeRef::FuncExact(_) => "func",
                            TypeRef::Memory(_) => "memory",
                            TypeRef::Table(_) => "table",
                            TypeRef::Global(_) => "global",
                            TypeRef::Tag(_) => "tag",
                        };
                        imports.push(ImportInfo { module: imp.module.into(), name: imp.name.into(), kind });
                    }
                }
                Payload::ExportSection(r) => {
                    for exp in r {
                        let exp = exp.map_err(malformed)?;
                        let kind = match exp.kind {
                            ExternalKind::Func | ExternalKind::FuncExact => "func",
                            ExternalKind::Memory => "memory",
                            ExternalKind::Table => "table",
                            ExternalKind::Global => "global",
                            ExternalKind::Tag => "tag",
                        };
                        exports.push(ExportInfo { name: exp.name.into(), kind });
                    }
                }
                Payload::CustomSection(c) if c.name() == section::SECTION_NAME => {
                    section_bytes.extend_from_slice(c.data());
                }
                _ => {}
            }
        }
        let declared = section::parse(&section_bytes)?;
        Ok(ModuleInfo {
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            imports,
            exports,
            declared_hooks: declared.hooks,
            declared_guard: declared.guard,
            sdk: declared.sdk,
            declared_name: declared.name,
            declared_version: declared.version,
            declared_without_facts: declared.without_facts,
        })
    }

    /// Whether the module exports a function of this name.
    pub fn exports_func(&self, name: &str) -> bool {
        self.exports.iter().any(|e| e.kind == "func" && e.name == name)
    }

    /// Hooks of the catalogue the module actually exports, in catalogue order.
    pub fn exported_hooks(&self) -> Vec<Hook> {
        Hook::ALL.iter().copied().filter(|h| self.exports_func(h.export_name())).collect()
    }

    /// The hooks the module itself says it serves: those of its `helios.plugin` section, or, for a
    /// module without one (not built with the SDK), every hook it exports.
    pub fn self_declared_hooks(&self) -> Vec<Hook> {
        if self.declared_hooks.is_empty() && !self.declared_guard {
            self.exported_hooks()
        } else {
            self.declared_hooks.clone()
        }
    }

    /// Whether the module itself says it is a chio guard: its section does, or (without a section)
    /// it exports `evaluate`.
    pub fn self_declared_guard(&self) -> bool {
        if self.declared_hooks.is_empty() && !self.declared_guard { self.is_guard() } else { self.declared_guard }
    }

    /// Whether the module exports chio's `evaluate`.
    pub fn is_guard(&self) -> bool {
        self.exports_func(abi::EVALUATE)
    }

    /// Imports outside the host surface ([`abi::IMPORTS`]) and WASI preview 1 (which hosts serve
    /// from a deny-all context), as `module.name`.
    pub fn foreign_imports(&self) -> Vec<String> {
        self.imports
            .iter()
            .filter(|i| {
                i.kind != "func"
                    || (abi::import(&i.module, &i.name).is_none() && !abi::is_wasi_preview1(&i.module, &i.name))
            })
            .map(|i| format!("{}.{}", i.module, i.name))
            .collect()
    }
}
