//! Session attributes plugins see in `HookContext.attributes`, and the `helios.*` settings a client
//! may make.
//!
//! A client sets `helios.*` attributes in two ways:
//! - at startup, as `options` (`-c helios.region=eu` or `--helios.region=eu`, what libpq's
//!   `PGOPTIONS` sends) or as a startup parameter named `helios.<name>`;
//! - later, with a statement `SET helios.<name> = <value>` (or `TO`, optionally `SESSION`/`LOCAL`),
//!   and `RESET helios.<name>`, in the simple or the extended protocol (applied when parsed). The
//!   proxy answers these itself (`SET`), so they work in both pool modes and never leak into a
//!   pooled server connection, and the server never sees them (`SHOW helios.x` does not work). They
//!   are not plugin statements: `pre_query` does not see them. `LOCAL` is treated like `SESSION`,
//!   and a later ROLLBACK does not undo them.

use std::collections::BTreeMap;

/// The prefix of attributes a client may set.
pub const HELIOS_PREFIX: &str = "helios.";

/// A `SET helios.x …` or `RESET helios.x` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeliosSet {
    Set { name: String, value: String },
    Reset { name: String },
}

/// The attributes from startup: every startup parameter plus `helios.*` values from `options`.
pub fn from_startup(params: &[(String, String)]) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    for (k, v) in params {
        attrs.insert(k.clone(), v.clone());
        if k == "options" {
            for (name, value) in options_settings(v) {
                if name.starts_with(HELIOS_PREFIX) {
                    attrs.insert(name, value);
                }
            }
        }
    }
    attrs
}

/// `name=value` settings in a startup `options` string (`-c a=b`, `-ca=b`, `--a=b`; `\ ` escapes).
fn options_settings(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
        } else if let Some(r) = w.strip_prefix("--") {
            Some(r.to_string())
        } else {
            w.strip_prefix("-c").map(str::to_string)
        };
        if let Some((k, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((k.to_ascii_lowercase().replace('-', "_"), v.to_string()));
        }
    }
    out
}

/// Recognises `SET [SESSION|LOCAL] helios.<name> {=|TO} <value>` and `RESET helios.<name>`, alone in
/// the statement (a trailing `;` allowed). Names are lowercased, as PostgreSQL does.
pub fn parse_helios_set(sql: &str) -> Option<HeliosSet> {
    let s = sql.trim().trim_end_matches(';').trim_end();
    let (first, rest) = split_word(s)?;
    if first.eq_ignore_ascii_case("reset") {
        let name = rest.trim().to_ascii_lowercase();
        return (name.starts_with(HELIOS_PREFIX) && is_name(&name)).then_some(HeliosSet::Reset { name });
    }
    if !first.eq_ignore_ascii_case("set") {
        return None;
    }
    let mut rest = rest.trim_start();
    if let Some((w, r)) = split_word(rest)
        && (w.eq_ignore_ascii_case("session") || w.eq_ignore_ascii_case("local"))
    {
        rest = r.trim_start();
    }
    let name_end = rest.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(rest.len());
    let name = rest[..name_end].to_ascii_lowercase();
    if !name.starts_with(HELIOS_PREFIX) || !is_name(&name) {
        return None;
    }
    let mut rest = rest[name_end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r;
    } else {
        let (w, r) = split_word(rest)?;
        if !w.eq_ignore_ascii_case("to") {
            return None;
        }
        rest = r;
    }
    let rest = rest.trim();
    if rest.eq_ignore_ascii_case("default") {
        return Some(HeliosSet::Reset { name });
    }
    let value = if let Some(q) = rest.strip_prefix('\'') {
        let inner = q.strip_suffix('\'')?;
        if inner.replace("''", "").contains('\'') {
            return None;
        }
        inner.replace("''", "'")
    } else if !rest.is_empty() && !rest.contains(char::is_whitespace) && !rest.contains(['\'', ';', '"']) {
        rest.to_string()
    } else {
        return None;
    };
    Some(HeliosSet::Set { name, value })
}

fn split_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], &s[end..]))
}

fn is_name(name: &str) -> bool {
    name.len() > HELIOS_PREFIX.len() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_statements_in_their_usual_spellings() {
        let set = |n: &str, v: &str| Some(HeliosSet::Set { name: n.into(), value: v.into() });
        assert_eq!(parse_helios_set("SET helios.region = 'eu'"), set("helios.region", "eu"));
        assert_eq!(parse_helios_set("set session HELIOS.Tenant to acme;"), set("helios.tenant", "acme"));
        assert_eq!(parse_helios_set("SET helios.note='it''s'"), set("helios.note", "it's"));
        assert_eq!(parse_helios_set("RESET helios.region"), Some(HeliosSet::Reset { name: "helios.region".into() }));
        assert_eq!(
            parse_helios_set("SET helios.region TO DEFAULT"),
            Some(HeliosSet::Reset { name: "helios.region".into() })
        );
    }

    #[test]
    fn other_statements_are_not_taken() {
        assert_eq!(parse_helios_set("SET search_path = public"), None);
        assert_eq!(parse_helios_set("SET helios.a = 'x'; DROP TABLE t"), None);
        assert_eq!(parse_helios_set("SELECT 1"), None);
    }

    #[test]
    fn startup_options_carry_helios_attributes() {
        let params = vec![
            ("application_name".to_string(), "psql".to_string()),
            ("options".to_string(), "-c helios.region=eu --helios.ai_traffic=true -c work_mem=4MB".to_string()),
        ];
        let a = from_startup(&params);
        assert_eq!(a.get("application_name").map(String::as_str), Some("psql"));
        assert_eq!(a.get("helios.region").map(String::as_str), Some("eu"));
        assert_eq!(a.get("helios.ai_traffic").map(String::as_str), Some("true"));
        assert!(!a.contains_key("work_mem"));
    }
}
