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
///
/// Two wire forms exist for the same decision. CONTRACTS' form is tagged `kind`
/// (`{"kind":"block","reason":…}`, `rewrite{sql}`, `cached{bytes}`); heliosdb-proxy 2.2.0, the
/// HeliosProxy release on crates.io, reads only an `action`-tagged form whose payload is `value`
/// (`{"action":"block","value":…}`, `cached{data}`) and runs the statement when it cannot parse a
/// result — so a `kind`-only block would silently not block there. We therefore write `continue` and
/// `block` in both forms in one object (each host ignores the other's keys) and read either form: a
/// module built with our SDK blocks in both proxies, and a module built for heliosdb-proxy 2.2.0 blocks
/// in ours. A rewrite or cached answer is written once, in our form only (its payload can be large and
/// would travel twice); heliosdb-proxy 2.2.0 therefore does not apply it (it logs it and runs the
/// statement unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

impl Serialize for PreQueryResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let tag = self.tag();
        let fields = match self {
            PreQueryResult::Block { .. } => 4,
            PreQueryResult::Continue | PreQueryResult::Rewrite { .. } | PreQueryResult::Cached { .. } => 2,
        };
        let mut m = serializer.serialize_map(Some(fields))?;
        m.serialize_entry("kind", tag)?;
        match self {
            PreQueryResult::Continue => m.serialize_entry("action", tag)?,
            PreQueryResult::Block { reason } => {
                m.serialize_entry("reason", reason)?;
                m.serialize_entry("action", tag)?;
                m.serialize_entry("value", reason)?;
            }
            // A rewrite or cached answer can be large: written once, in our form only (see above).
            PreQueryResult::Rewrite { sql } => m.serialize_entry("sql", sql)?,
            PreQueryResult::Cached { bytes } => m.serialize_entry("bytes", bytes)?,
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for PreQueryResult {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        /// Both wire forms' keys; unknown keys are ignored like everywhere in this module.
        #[derive(Deserialize)]
        struct Wire {
            kind: Option<String>,
            sql: Option<String>,
            reason: Option<String>,
            bytes: Option<Vec<u8>>,
            action: Option<String>,
            value: Option<String>,
            data: Option<Vec<u8>>,
        }
        let w = Wire::deserialize(deserializer)?;
        const TAGS: &[&str] = &["continue", "rewrite", "block", "cached"];
        if let Some(kind) = w.kind {
            // CONTRACTS' form: every payload field is required.
            return match kind.as_str() {
                "continue" => Ok(PreQueryResult::Continue),
                "rewrite" => Ok(PreQueryResult::Rewrite { sql: w.sql.ok_or_else(|| D::Error::missing_field("sql"))? }),
                "block" => {
                    Ok(PreQueryResult::Block { reason: w.reason.ok_or_else(|| D::Error::missing_field("reason"))? })
                }
                "cached" => {
                    Ok(PreQueryResult::Cached { bytes: w.bytes.ok_or_else(|| D::Error::missing_field("bytes"))? })
                }
                other => Err(D::Error::unknown_variant(other, TAGS)),
            };
        }
        // heliosdb-proxy 2.2.0's form. Its host defaults a missing payload and treats an unknown action
        // as `continue`; we keep the payload defaults but refuse an unknown action (the plugin's
        // failure policy then decides), because reading a typo as "let it through" would fail open.
        match w.action.as_deref() {
            Some("continue") => Ok(PreQueryResult::Continue),
            Some("rewrite") => match w.value {
                Some(sql) => Ok(PreQueryResult::Rewrite { sql }),
                None => Err(D::Error::missing_field("value")),
            },
            Some("block") => Ok(PreQueryResult::Block {
                reason: w.value.filter(|r| !r.is_empty()).unwrap_or_else(|| "blocked by plugin".to_owned()),
            }),
            Some("cached") => Ok(PreQueryResult::Cached { bytes: w.data.unwrap_or_default() }),
            Some(other) => Err(D::Error::unknown_variant(other, TAGS)),
            None => Err(D::Error::missing_field("kind")),
        }
    }
}

impl PreQueryResult {
    /// The decision's name in both wire forms.
    fn tag(&self) -> &'static str {
        match self {
            PreQueryResult::Continue => "continue",
            PreQueryResult::Rewrite { .. } => "rewrite",
            PreQueryResult::Block { .. } => "block",
            PreQueryResult::Cached { .. } => "cached",
        }
    }
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

/// Encodes a [`QueryContext`] or a [`PostQueryEnvelope`] exactly as its own `Serialize` does, minus
/// `facts`: the input a host gives a plugin that declared `facts=none` (see
/// [`crate::section::KEY_FACTS`]). The statement facts are most of a context's bytes, and a guest
/// decodes every byte it is given. Borrows; nothing is cloned.
#[derive(Debug)]
pub struct WithoutFacts<'a, T>(pub &'a T);

impl Serialize for WithoutFacts<'_, QueryContext> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // Every field named: a field added to `QueryContext` does not compile here until it is sent.
        let QueryContext { query, normalized, tables, is_read_only, hook_context, facts: _ } = self.0;
        let mut s = serializer.serialize_struct("QueryContext", 5)?;
        s.serialize_field("query", query)?;
        s.serialize_field("normalized", normalized)?;
        s.serialize_field("tables", tables)?;
        s.serialize_field("is_read_only", is_read_only)?;
        s.serialize_field("hook_context", hook_context)?;
        s.end()
    }
}

impl Serialize for WithoutFacts<'_, PostQueryEnvelope> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let PostQueryEnvelope { query_context, outcome } = self.0;
        let mut s = serializer.serialize_struct("PostQueryEnvelope", 2)?;
        s.serialize_field("query_context", &WithoutFacts(query_context))?;
        s.serialize_field("outcome", outcome)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_facts_encodes_the_context_as_if_it_had_none() {
        let ctx = QueryContext {
            query: "SELECT * FROM t WHERE id = 1".into(),
            normalized: "SELECT * FROM t WHERE id = $1".into(),
            tables: vec!["t".into()],
            is_read_only: true,
            hook_context: HookContext {
                request_id: "r1".into(),
                client_id: Some("127.0.0.1:5".into()),
                identity: Some("app".into()),
                database: Some("db".into()),
                branch: Some("b".into()),
                attributes: BTreeMap::from([("helios.tenant".into(), "acme".into())]),
                sql: String::new(),
            },
            facts: Some(StatementFacts { statement_count: 1, source: "pg_query".into(), ..Default::default() }),
        };
        let bare = QueryContext { facts: None, ..ctx.clone() };
        let lean = serde_json::to_vec(&WithoutFacts(&ctx)).unwrap();
        assert_eq!(lean, serde_json::to_vec(&bare).unwrap());
        assert!(serde_json::to_vec(&ctx).unwrap().len() > lean.len(), "the full encoding carries the facts");
        let env = PostQueryEnvelope {
            query_context: ctx,
            outcome: QueryOutcome { success: true, rows: Some(3), ..Default::default() },
        };
        let bare = PostQueryEnvelope { query_context: bare, ..env.clone() };
        assert_eq!(serde_json::to_vec(&WithoutFacts(&env)).unwrap(), serde_json::to_vec(&bare).unwrap());
    }

    #[test]
    fn results_use_the_tagged_wire_shape() {
        let j = serde_json::to_string(&PreQueryResult::Block { reason: "no".into() }).unwrap();
        assert_eq!(j, r#"{"kind":"block","reason":"no","action":"block","value":"no"}"#);
        let j = serde_json::to_string(&RouteResult::Node { target: "vec".into() }).unwrap();
        assert_eq!(j, r#"{"action":"node","target":"vec"}"#);
        assert_eq!(
            serde_json::to_string(&PreQueryResult::Continue).unwrap(),
            r#"{"kind":"continue","action":"continue"}"#
        );
        let j = serde_json::to_string(&PreQueryResult::Cached { bytes: vec![1, 2] }).unwrap();
        assert_eq!(j, r#"{"kind":"cached","bytes":[1,2]}"#);
        let j = serde_json::to_string(&PreQueryResult::Rewrite { sql: "select 2".into() }).unwrap();
        assert_eq!(j, r#"{"kind":"rewrite","sql":"select 2"}"#);
    }

    #[test]
    fn every_pre_query_result_round_trips() {
        for r in [
            PreQueryResult::Continue,
            PreQueryResult::Rewrite { sql: "select 2".into() },
            PreQueryResult::Block { reason: "no".into() },
            PreQueryResult::Cached { bytes: vec![0, 255] },
        ] {
            let back: PreQueryResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
    }

    /// What heliosdb-proxy 2.2.0 (crates.io) reads and what modules built for it write: `action` +
    /// `value`/`data`. The `kind` form alone would not block there; this form must block here.
    #[test]
    fn heliosdb_proxy_2_2_results_are_read_and_ours_carry_its_form() {
        let parse = |j: &str| serde_json::from_str::<PreQueryResult>(j);
        assert_eq!(parse(r#"{"action":"block","value":"no"}"#).unwrap(), PreQueryResult::Block { reason: "no".into() });
        assert_eq!(
            parse(r#"{"action":"block"}"#).unwrap(),
            PreQueryResult::Block { reason: "blocked by plugin".into() }
        );
        assert_eq!(
            parse(r#"{"action":"rewrite","value":"select 2"}"#).unwrap(),
            PreQueryResult::Rewrite { sql: "select 2".into() }
        );
        assert_eq!(parse(r#"{"action":"cached","data":[7]}"#).unwrap(), PreQueryResult::Cached { bytes: vec![7] });
        assert_eq!(parse(r#"{"action":"continue"}"#).unwrap(), PreQueryResult::Continue);
        // An unknown action is an error (the plugin's failure policy decides), never a silent continue.
        let e = parse(r#"{"action":"allow"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown variant") && e.contains("allow"), "{e}");
        // Our own form stays strict about its payload.
        assert!(parse(r#"{"kind":"block"}"#).unwrap_err().to_string().contains("reason"));
        assert!(parse(r#"{}"#).unwrap_err().to_string().contains("kind"));
        // What we write is what heliosdb-proxy 2.2.0's deserializer needs: action + value.
        let ours: serde_json::Value =
            serde_json::to_value(PreQueryResult::Block { reason: "DROP is not allowed".into() }).unwrap();
        assert_eq!(ours["action"], "block");
        assert_eq!(ours["value"], "DROP is not allowed");
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
