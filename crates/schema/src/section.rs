//! The `helios.plugin` custom section: how a module declares, without being run, what it serves.
//!
//! The section is a sequence of lines `key=value\n`. Each `#[hook]` or `#[chio_guard]` in a plugin
//! contributes its own lines and the linker concatenates them, so the format has no header and no
//! count. Keys: `hook` (an export name of the catalogue), `guard` (the guard export, `evaluate`) and
//! `sdk` (the SDK version that built it). Unknown keys are kept for forward compatibility.

use crate::Hook;

/// Name of the custom section.
pub const SECTION_NAME: &str = "helios.plugin";

/// What a module declares about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    pub hooks: Vec<Hook>,
    pub guard: bool,
    pub sdk: Option<String>,
    /// `key=value` lines this version does not understand.
    pub unknown: Vec<(String, String)>,
}

/// A malformed declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionError(pub String);

impl std::fmt::Display for SectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "custom section {SECTION_NAME}: {}", self.0)
    }
}

impl std::error::Error for SectionError {}

/// Parses the concatenated contents of every `helios.plugin` section of a module.
pub fn parse(bytes: &[u8]) -> Result<Declared, SectionError> {
    let text = std::str::from_utf8(bytes).map_err(|e| SectionError(format!("not UTF-8: {e}")))?;
    let mut d = Declared::default();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').ok_or_else(|| SectionError(format!("line {line:?} has no '='")))?;
        match k {
            "hook" => {
                let h = Hook::from_export_name(v).ok_or_else(|| SectionError(format!("unknown hook {v:?}")))?;
                if !d.hooks.contains(&h) {
                    d.hooks.push(h);
                }
            }
            "guard" if v == crate::abi::EVALUATE => d.guard = true,
            "guard" => return Err(SectionError(format!("unknown guard export {v:?}"))),
            "sdk" => d.sdk = Some(v.to_owned()),
            _ => d.unknown.push((k.to_owned(), v.to_owned())),
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_entries_parse() {
        let d = parse(b"sdk=0.1.0\nhook=pre_query\nsdk=0.1.0\nhook=post_query\nguard=evaluate\nx=y\n").unwrap();
        assert_eq!(d.hooks, vec![Hook::PreQuery, Hook::PostQuery]);
        assert!(d.guard);
        assert_eq!(d.unknown, vec![("x".into(), "y".into())]);
    }

    #[test]
    fn an_unknown_hook_is_an_error_naming_it() {
        assert!(parse(b"hook=pre_qurey\n").unwrap_err().to_string().contains("pre_qurey"));
    }
}
