//! SQL helpers shared by the first-party plugins: configured table names matched the same way in
//! every plugin, and (feature `ast`) the sqlparser walks several plugins need.
//!
//! **Invariant:** a configured table name matches a name written in a statement the same way in
//! every plugin: case-insensitively (over-matching a quoted `"Events"` errs on the safe side); a
//! configured name with a schema (`public.events`) matches only that schema, one without matches any.

#[cfg(feature = "ast")]
pub mod ast;

/// A configured table name, lower-cased: `name` or `schema.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// Parses `name` or `schema.name` (blanks trimmed, lower-cased).
    pub fn parse(s: &str) -> TableName {
        let s = s.trim().to_lowercase();
        match s.rsplit_once('.') {
            Some((schema, name)) => TableName { schema: Some(schema.to_owned()), name: name.to_owned() },
            None => TableName { schema: None, name: s },
        }
    }

    /// A comma-separated list of names; empty items are skipped.
    pub fn list(s: &str) -> Vec<TableName> {
        s.split(',').filter(|s| !s.trim().is_empty()).map(TableName::parse).collect()
    }

    /// Whether a name written as these parts (`["public", "users"]`, `["users"]`; any case) denotes
    /// this table.
    pub fn matches_parts<S: AsRef<str>>(&self, parts: &[S]) -> bool {
        let Some(last) = parts.last() else { return false };
        if !eq_lower(last.as_ref(), &self.name) {
            return false;
        }
        match &self.schema {
            None => true,
            Some(schema) => parts.len() >= 2 && eq_lower(parts[parts.len() - 2].as_ref(), schema),
        }
    }

    /// Whether a dotted name (`public.users`, `users`; any case) denotes this table.
    pub fn matches_dotted(&self, name: &str) -> bool {
        let parts: Vec<&str> = name.split('.').collect();
        self.matches_parts(&parts)
    }

    /// Whether a name as written in a statement denotes this table.
    #[cfg(feature = "ast")]
    pub fn matches(&self, name: &sqlparser::ast::ObjectName) -> bool {
        self.matches_parts(&ast::name_parts(name))
    }
}

/// Whether `written` lower-cased is `lower` (the ASCII comparison first: it allocates nothing).
fn eq_lower(written: &str, lower: &str) -> bool {
    written.eq_ignore_ascii_case(lower) || written.to_lowercase() == lower
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_without_schema_matches_any_schema_and_one_with_only_its_own() {
        let any = TableName::parse(" Events ");
        assert_eq!(any, TableName { schema: None, name: "events".into() });
        assert!(any.matches_dotted("events") && any.matches_dotted("PUBLIC.EVENTS") && any.matches_dotted("x.events"));
        assert!(!any.matches_dotted("events_2024") && !any.matches_dotted("events.x"));
        let public = TableName::parse("public.audit_log");
        assert!(public.matches_dotted("public.audit_log") && public.matches_dotted("Public.Audit_Log"));
        assert!(!public.matches_dotted("audit_log") && !public.matches_dotted("other.audit_log"));
        assert_eq!(public.to_string(), "public.audit_log");
        assert!(!any.matches_parts::<&str>(&[]));
    }

    #[test]
    fn lists_skip_empty_items() {
        assert_eq!(TableName::list("a, ,public.b,"), vec![TableName::parse("a"), TableName::parse("public.b")]);
        assert!(TableName::list("").is_empty());
    }
}
