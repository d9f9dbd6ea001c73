//! The `helios.plugin` custom section: how a module declares, without being run, what it serves.
//!
//! The section is a sequence of lines `key=value\n`. Each `#[hook]` or `#[chio_guard]` in a plugin
//! contributes its own lines and the linker concatenates them, so the format has no header and no
//! count. Keys: `hook` (an export name of the catalogue), `guard` (the guard export, `evaluate`),
//! `sdk` (the SDK version that built it), and `name` and `version` (the Cargo package name and
//! version of the crate that wrote the hook, so `sign` and `pack` need no flags for SDK plugins),
//! and `facts` (`facts=none`: the plugin never reads the host's statement facts, so a host leaves them
//! out of its input — written by `helios_plugin_abi::without_statement_facts!()`).
//! Unknown keys are kept for forward compatibility.

use crate::Hook;

/// Name of the custom section.
pub const SECTION_NAME: &str = "helios.plugin";

/// Key of the line naming the SDK version that built the module.
pub const KEY_SDK: &str = "sdk";
/// Key of a line naming a served hook (its export name).
pub const KEY_HOOK: &str = "hook";
/// Key of the line naming the guard export.
pub const KEY_GUARD: &str = "guard";
/// Key of the line saying whether the plugin reads the host's statement facts.
pub const KEY_FACTS: &str = "facts";
/// The [`KEY_FACTS`] value of a plugin that never reads them.
pub const FACTS_NONE: &str = "none";
/// The [`KEY_FACTS`] value of a plugin that reads them (what a module without the line gets).
pub const FACTS_READ: &str = "read";

// ---- writer (used by the SDK macros at compile time) ---------------------------------------------

/// Length of the entry [`entry`] builds.
pub const fn entry_len(sdk: &str, key: &str, value: &str) -> usize {
    KEY_SDK.len() + 1 + sdk.len() + 1 + key.len() + 1 + value.len() + 1
}

/// One entry `sdk=<sdk>\n<key>=<value>\n` as a byte array of length `N = entry_len(sdk, key,
/// value)` (a `static` in a link section needs a fixed-size array). Each `#[hook]`/`#[chio_guard]`
/// contributes one; the linker concatenates them and [`parse`] reads the result.
pub const fn entry<const N: usize>(sdk: &str, key: &str, value: &str) -> [u8; N] {
    assert!(N == entry_len(sdk, key, value), "section entry length mismatch");
    let mut out = [0u8; N];
    let mut at = 0;
    at = put(&mut out, at, KEY_SDK.as_bytes());
    at = put(&mut out, at, b"=");
    at = put(&mut out, at, sdk.as_bytes());
    at = put(&mut out, at, b"\n");
    at = put(&mut out, at, key.as_bytes());
    at = put(&mut out, at, b"=");
    at = put(&mut out, at, value.as_bytes());
    put(&mut out, at, b"\n");
    out
}

const fn put<const N: usize>(out: &mut [u8; N], mut at: usize, bytes: &[u8]) -> usize {
    let mut i = 0;
    while i < bytes.len() {
        out[at] = bytes[i];
        at += 1;
        i += 1;
    }
    at
}

// ---- parser ---------------------------------------------------------------------------------------

/// What a module declares about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    pub hooks: Vec<Hook>,
    pub guard: bool,
    pub sdk: Option<String>,
    /// The plugin's name (its crate's package name). `None` when no entry names one, or when entries
    /// name different crates (a module linking hooks of several crates declares no name).
    pub name: Option<String>,
    /// The plugin's version (its crate's package version), under the same rule as `name`.
    pub version: Option<String>,
    /// The plugin said `facts=none`: it never reads the host's statement facts, so a host may leave
    /// them out of its input (they are most of a statement's context). A module without the line
    /// gets them: an older plugin that reads them keeps working.
    pub without_facts: bool,
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
    let (mut names, mut versions) = (Vec::<&str>::new(), Vec::<&str>::new());
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').ok_or_else(|| SectionError(format!("line {line:?} has no '='")))?;
        match k {
            KEY_HOOK => {
                let h = Hook::from_export_name(v).ok_or_else(|| SectionError(format!("unknown hook {v:?}")))?;
                if !d.hooks.contains(&h) {
                    d.hooks.push(h);
                }
            }
            KEY_GUARD if v == crate::abi::EVALUATE => d.guard = true,
            KEY_GUARD => return Err(SectionError(format!("unknown guard export {v:?}"))),
            KEY_SDK => d.sdk = Some(v.to_owned()),
            KEY_FACTS if v == FACTS_NONE => d.without_facts = true,
            KEY_FACTS if v == FACTS_READ => {}
            KEY_FACTS => {
                return Err(SectionError(format!(
                    "unknown {KEY_FACTS} value {v:?} (known: {FACTS_NONE}, {FACTS_READ})"
                )));
            }
            "name" => names.push(v),
            "version" => versions.push(v),
            _ => d.unknown.push((k.to_owned(), v.to_owned())),
        }
    }
    let one = |values: Vec<&str>| match values.split_first() {
        Some((first, rest)) if rest.iter().all(|v| v == first) => Some((*first).to_owned()),
        _ => None,
    };
    // Name and version go together: a module whose entries disagree on either declares neither.
    if let (Some(n), Some(v)) = (one(names), one(versions)) {
        d.name = Some(n);
        d.version = Some(v);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_can_say_it_reads_no_statement_facts() {
        assert!(!parse(b"sdk=0.1.0\nhook=pre_query\n").unwrap().without_facts, "no line: facts are sent");
        assert!(!parse(b"facts=read\n").unwrap().without_facts);
        let d = parse(b"sdk=0.1.0\nhook=pre_query\nfacts=none\n").unwrap();
        assert!(d.without_facts);
        assert_eq!(d.hooks, vec![Hook::PreQuery]);
        assert!(d.unknown.is_empty(), "facts is a known key: {:?}", d.unknown);
        let e = parse(b"facts=some\n").unwrap_err().to_string();
        assert!(e.contains("\"some\"") && e.contains("none"), "{e}");
    }

    #[test]
    fn concatenated_entries_parse() {
        let d = parse(b"sdk=0.1.0\nhook=pre_query\nsdk=0.1.0\nhook=post_query\nguard=evaluate\nx=y\n").unwrap();
        assert_eq!(d.hooks, vec![Hook::PreQuery, Hook::PostQuery]);
        assert!(d.guard);
        assert_eq!(d.unknown, vec![("x".into(), "y".into())]);
    }

    #[test]
    fn what_the_writer_writes_the_parser_reads() {
        const A: [u8; entry_len("0.1.0", KEY_HOOK, "route")] = entry("0.1.0", KEY_HOOK, "route");
        const B: [u8; entry_len("0.1.0", KEY_GUARD, crate::abi::EVALUATE)] =
            entry("0.1.0", KEY_GUARD, crate::abi::EVALUATE);
        let linked = [&A[..], &B[..]].concat();
        assert_eq!(linked, b"sdk=0.1.0\nhook=route\nsdk=0.1.0\nguard=evaluate\n");
        let d = parse(&linked).unwrap();
        assert_eq!((d.hooks, d.guard, d.sdk.as_deref()), (vec![Hook::Route], true, Some("0.1.0")));
    }

    #[test]
    fn name_and_version_are_declared_once_or_not_at_all() {
        let d = parse(
            b"sdk=0.1.0\nname=my-plugin\nversion=1.0.0\nhook=pre_query\nname=my-plugin\nversion=1.0.0\nhook=route\n",
        )
        .unwrap();
        assert_eq!((d.name.as_deref(), d.version.as_deref()), (Some("my-plugin"), Some("1.0.0")));
        let d = parse(b"name=a\nversion=1.0.0\nhook=pre_query\nname=b\nversion=1.0.0\nhook=route\n").unwrap();
        assert_eq!((d.name, d.version), (None, None), "two crates: no name");
        let d = parse(b"name=a\nhook=pre_query\n").unwrap();
        assert_eq!((d.name, d.version), (None, None), "a name without a version is not a declaration");
    }

    #[test]
    fn an_unknown_hook_is_an_error_naming_it() {
        assert!(parse(b"hook=pre_qurey\n").unwrap_err().to_string().contains("pre_qurey"));
    }
}
