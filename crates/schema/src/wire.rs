//! JSON shapes of the hook convention (HeliosProxy's wire types).
//!
//! These types are *tolerant*: unknown fields are ignored and most fields default, because a newer
//! host may send more than an older guest knows about. Manifests and configuration, where a typo must
//! be an error, live elsewhere and deny unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use helios_plugin_facts::StatementFacts;

/// Who is asking and on which session. Filled by the host; read by plugins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HookContext {
    /// Unique per statement.
    pub request_id: String,
    /// The client's address or identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The authenticated user (the role the session runs as).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Free-form attributes: `application_name`, startup parameters, `helios.*` values a client set.
    pub attributes: BTreeMap<String, String>,
    /// The statement, for a `pre_query`, `route` or `rewrite` hook written the way the HeliosProxy
    /// page writes one (`fn check(ctx: &HookContext)` reading `ctx.sql`): the SDK copies
    /// [`QueryContext::query`] here. Empty everywhere else; hosts do not send it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sql: String,
}

impl HookContext {
    /// An attribute's value, if set.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A statement on its way to the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryContext {
    /// The SQL as the client sent it (or as an earlier plugin rewrote it).
    pub query: String,
    /// The SQL with literals replaced, for grouping; may be empty when the host does not normalise.
    pub normalized: String,
    /// Tables the host saw in the statement, schema-qualified where the statement qualifies them
    /// (may be empty).
    pub tables: Vec<String>,
    /// Every statement only reads (see [`StatementFacts::is_read_only`]).
    pub is_read_only: bool,
    pub hook_context: HookContext,
    /// What the host's parser learnt about the statement (PostgreSQL's own parser in helios-proxy).
    /// `None` from a host that does not analyse statements: a plugin then computes the facts itself
    /// (`helios-plugin-facts` with its `guest` feature).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<StatementFacts>,
}

/// What a `pre_query` (or `rewrite`) hook decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PreQueryResult {
    /// Let the statement through unchanged.
    #[default]
    Continue,
    /// Replace the SQL; later plugins and the server see `sql`.
    Rewrite { sql: String },
    /// Refuse the statement; the client gets an error (SQLSTATE 42000) carrying `reason`.
    Block { reason: String },
    /// Answer from a cache without the server.
    Cached { bytes: Vec<u8> },
}

/// Where a `route` hook sends a statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RouteResult {
    /// No opinion: the host's own routing applies.
    #[default]
    Default,
    /// A named node.
    Node {
        target: String,
    },
    Primary,
    Standby,
    Branch {
        target: String,
    },
    Block {
        reason: String,
    },
}

/// How a statement ended, for `post_query`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryOutcome {
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_node: Option<String>,
    pub elapsed_us: u64,
    pub response_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The input of `post_query`: the statement and its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostQueryEnvelope {
    pub query_context: QueryContext,
    pub outcome: QueryOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_use_the_tagged_wire_shape() {
        let j = serde_json::to_string(&PreQueryResult::Block { reason: "no".into() }).unwrap();
        assert_eq!(j, r#"{"kind":"block","reason":"no"}"#);
        let j = serde_json::to_string(&RouteResult::Node { target: "vec".into() }).unwrap();
        assert_eq!(j, r#"{"action":"node","target":"vec"}"#);
        assert_eq!(serde_json::to_string(&PreQueryResult::Continue).unwrap(), r#"{"kind":"continue"}"#);
    }

    #[test]
    fn contexts_tolerate_unknown_and_missing_fields() {
        let q: QueryContext = serde_json::from_str(r#"{"query":"select 1","from_a_newer_host":true}"#).unwrap();
        assert_eq!(q.query, "select 1");
        assert!(q.tables.is_empty());
        assert!(q.facts.is_none());
    }

    #[test]
    fn facts_travel_with_the_context_and_tolerate_a_newer_host() {
        let q: QueryContext = serde_json::from_str(
            r#"{"query":"drop table t","facts":{"version":9,"statements":[{"kind":"DROP TABLE","class":"ddl","x":1}]}}"#,
        )
        .unwrap();
        let f = q.facts.expect("facts");
        assert_eq!(f.statements[0].class, helios_plugin_facts::StatementClass::Ddl);
        let none = serde_json::to_string(&QueryContext::default()).unwrap();
        assert!(!none.contains("facts"), "no facts, no field: {none}");
    }
}
