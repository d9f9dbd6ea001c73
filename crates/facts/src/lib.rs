//! Statement facts: what a plugin decides on, extracted once per statement.
//!
//! A host that speaks PostgreSQL parses each statement with PostgreSQL's own parser (feature `pg`,
//! `pg_query` over libpg_query) and sends the facts with the hook context; a plugin in a host that sends
//! none computes the same facts in the guest with sqlparser (feature `guest`). The types here build
//! everywhere, wasm32 included, and depend on serde only.
//!
//! The types are *tolerant* like the rest of the wire: every field defaults, unknown fields are
//! ignored, an unknown [`StatementClass`] reads as [`StatementClass::Other`]. A change that alters
//! what an existing field means bumps [`FACTS_VERSION`]; adding a field does not.
//!
//! Names are the way PostgreSQL resolves them: unquoted identifiers are folded to lower case, quoted
//! ones kept as written, schema-qualified names joined with `.` (`public.orders`). No catalog is
//! consulted: an unqualified name stays unqualified (the server's `search_path` decides).
//! See the crate's README for each field and for where the two extractors disagree.

// Without an extractor feature the helpers the extractors share are unused.
#![cfg_attr(not(any(feature = "pg", feature = "guest")), allow(dead_code))]

use serde::{Deserialize, Serialize};

#[cfg(feature = "pg")]
pub mod pg;

#[cfg(feature = "guest")]
pub mod guest;

#[cfg(feature = "pg")]
pub mod cache;

mod restrict;

mod comments;
pub use comments::comments;

/// The version of the facts' meaning. Bumped when a field changes what it says.
pub const FACTS_VERSION: u32 = 1;

/// How deep routine bodies are parsed (a body that defines a routine whose body defines ...).
pub const MAX_ROUTINE_DEPTH: u32 = 4;

/// Everything the extractor learnt from one query text (which may hold several statements).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatementFacts {
    /// [`FACTS_VERSION`] of the extractor that filled this.
    pub version: u32,
    /// Which parser produced these facts: `pg_query` (the host) or `sqlparser` (a guest).
    pub source: String,
    /// Why the text does not parse; `None` when it does. When set, `statements` is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// The text with literals replaced by `$n` placeholders (empty when it cannot be normalised).
    pub normalized: String,
    /// A stable fingerprint of the statement's shape, hex; equal for texts that differ only in
    /// literal values, whitespace and comments. Only comparable between facts of the same `source`.
    pub fingerprint: String,
    /// How many statements the text holds (`SELECT 1; DROP TABLE t` is 2).
    pub statement_count: usize,
    /// Every statement only reads: class [`StatementClass::Read`], no data-modifying CTE, no
    /// `SELECT ... INTO`, no row-locking clause (`FOR UPDATE`). False when the text does not parse.
    pub is_read_only: bool,
    /// The text inside each comment (`/* ... */` or `-- ...`), trimmed, in order. Text inside string
    /// literals is not a comment.
    pub comments: Vec<String>,
    /// One entry per statement, in order.
    pub statements: Vec<Statement>,
}

/// What one statement does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Statement {
    /// The command, PostgreSQL's command tag where it has one: `SELECT`, `INSERT`, `DROP TABLE`,
    /// `CREATE FUNCTION`, `VACUUM`, `SET ROLE`, `COPY`, ...
    pub kind: String,
    /// The class the policy decides on.
    pub class: StatementClass,
    /// Tables (and views) the statement names, each with how it uses them. CTE names are not tables.
    pub tables: Vec<TableUse>,
    /// Each query level: every `SELECT ... FROM` block (subqueries and CTEs included) and every
    /// `INSERT`/`UPDATE`/`DELETE`/`MERGE`, wherever it is nested.
    pub levels: Vec<QueryLevel>,
    /// Functions called, by resolved name (`pg_catalog.pg_terminate_backend`, `lower`), deduplicated.
    pub functions: Vec<String>,
    /// Binary and prefix operators used in expressions (`=`, `<->`, `@>`), deduplicated. `AND`/`OR`/
    /// `NOT`, `IN`, `LIKE`, `BETWEEN` and `IS ...` are not operators here.
    pub operators: Vec<String>,
    /// Column references, deduplicated (`*` for a star).
    pub columns: Vec<ColumnRef>,
    /// For `MERGE`: each `WHEN` action in order: `update`, `delete`, `insert`, `do_nothing`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merge_actions: Vec<String>,
    /// For a statement that defines or runs code: the routine and its parsed body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routine: Option<Routine>,
}

/// The class of a statement, what a default-deny policy allows or refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementClass {
    /// `SELECT`, `VALUES`, `TABLE`, `SHOW`, `FETCH`, `COPY ... TO STDOUT`, `EXPLAIN` of a read.
    Read,
    /// `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `COPY ... FROM STDIN`, a `SELECT` with a
    /// data-modifying CTE.
    Write,
    /// Schema changes: `CREATE`/`ALTER`/`DROP` of tables, views, indexes, schemas, types, extensions,
    /// databases ...; `TRUNCATE`; `COMMENT`; `SELECT ... INTO`.
    Ddl,
    /// Permissions: `GRANT`, `REVOKE`, roles (`CREATE`/`ALTER`/`DROP ROLE`), policies, default
    /// privileges, ownership (`ALTER ... OWNER TO`, `REASSIGN OWNED`, `DROP OWNED`).
    Dcl,
    /// Code definitions: `CREATE FUNCTION`/`PROCEDURE`, triggers, event triggers, rules, and `DO`.
    Routine,
    /// `VACUUM` (plain or `FULL`), `ANALYZE`, `CLUSTER`, `REINDEX`, `REFRESH MATERIALIZED VIEW`,
    /// `CHECKPOINT`.
    Maintenance,
    /// `SET ROLE`, `RESET ROLE`, `SET SESSION AUTHORIZATION`, `RESET SESSION AUTHORIZATION`.
    SessionRole,
    /// Other session state: `SET`, `RESET`, `DISCARD`, `DEALLOCATE`, `CLOSE`.
    Session,
    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `SET CONSTRAINTS`, two-phase commit.
    Transaction,
    /// `COPY` to or from a file on the database server.
    CopyFile,
    /// `COPY` to or from a program run on the database server.
    CopyProgram,
    /// `LISTEN`, `UNLISTEN`.
    Listen,
    /// `NOTIFY`.
    Notify,
    /// `CALL` of a procedure.
    Call,
    /// `LOCK TABLE`.
    Lock,
    /// Server administration: `ALTER SYSTEM`, `LOAD`.
    Admin,
    /// Anything else (`EXECUTE` of a prepared statement, a class a newer extractor knows).
    #[default]
    #[serde(other)]
    Other,
}

impl StatementClass {
    /// Every class, in declaration order.
    pub const ALL: [StatementClass; 17] = [
        StatementClass::Read,
        StatementClass::Write,
        StatementClass::Ddl,
        StatementClass::Dcl,
        StatementClass::Routine,
        StatementClass::Maintenance,
        StatementClass::SessionRole,
        StatementClass::Session,
        StatementClass::Transaction,
        StatementClass::CopyFile,
        StatementClass::CopyProgram,
        StatementClass::Listen,
        StatementClass::Notify,
        StatementClass::Call,
        StatementClass::Lock,
        StatementClass::Admin,
        StatementClass::Other,
    ];

    /// The name used on the wire and in configuration (`ddl`, `session_role`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Write => "write",
            StatementClass::Ddl => "ddl",
            StatementClass::Dcl => "dcl",
            StatementClass::Routine => "routine",
            StatementClass::Maintenance => "maintenance",
            StatementClass::SessionRole => "session_role",
            StatementClass::Session => "session",
            StatementClass::Transaction => "transaction",
            StatementClass::CopyFile => "copy_file",
            StatementClass::CopyProgram => "copy_program",
            StatementClass::Listen => "listen",
            StatementClass::Notify => "notify",
            StatementClass::Call => "call",
            StatementClass::Lock => "lock",
            StatementClass::Admin => "admin",
            StatementClass::Other => "other",
        }
    }

    /// The class with this configuration name, if any.
    pub fn from_name(name: &str) -> Option<StatementClass> {
        StatementClass::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl std::fmt::Display for StatementClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A table a statement names and how it uses it. A table can be used several ways at once
/// (`UPDATE t SET x = (SELECT max(x) FROM t)` reads and writes `t`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TableUse {
    /// The name as resolved (`orders`, `public.orders`).
    pub name: String,
    /// Rows are read (`FROM`, `JOIN`, subqueries, `COPY ... TO`).
    pub read: bool,
    /// Rows are written (`INSERT`/`UPDATE`/`DELETE`/`MERGE` target, `COPY ... FROM`, `TRUNCATE`).
    pub write: bool,
    /// The table's definition, permissions or storage are acted on (`ALTER`, `DROP`, `CREATE INDEX`,
    /// `GRANT`, `VACUUM`, `LOCK`, ...).
    pub ddl: bool,
}

/// One query level: a `SELECT ... FROM` block or a data-modifying statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryLevel {
    /// `select`, `insert`, `update`, `delete` or `merge`.
    pub kind: String,
    /// The table written by `insert`/`update`/`delete`/`merge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Tables this level reads directly (its `FROM`/`JOIN`s, `USING`, `UPDATE ... FROM`, `MERGE`'s
    /// source), not those of its subqueries, and its target. CTE names are not tables.
    pub tables: Vec<String>,
    /// A `WHERE` clause is present (for `merge`: always, the `ON`).
    pub has_where: bool,
    /// A `LIMIT n` or `FETCH FIRST n` applies to this level (its own, or that of the set operation it
    /// is a branch of). `LIMIT ALL` and `LIMIT NULL` are no limit.
    pub has_limit: bool,
    /// Operators used in this level's `ORDER BY` (outside subqueries), deduplicated, sorted; for a
    /// branch of a set operation also those of the set operation's `ORDER BY` (`<->` here makes a
    /// top-K vector search when `has_limit` is set).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub order_operators: Vec<String>,
    /// The tables of this level that the restriction rule finds restricted, each with the first
    /// condition that restricts it. The rule: a top-level `AND`ed condition of the `WHERE` (or a
    /// join's `ON`, or `MERGE`'s `ON`) compares a column of the table (`=`, `<`, `<=`, `>`, `>=`,
    /// `IN (...)`, `= ANY (...)`, `BETWEEN`, `LIKE`/`ILIKE` a pattern that does not start with a
    /// wildcard) with an expression that references no column of that table (literals, parameters
    /// and functions of them count as constants; a subquery counts when it neither reads the table
    /// nor names it). An `OR` restricts when each of its branches does. `IS NOT NULL`, `x = x` and
    /// self-subqueries do not. An unqualified column may belong to any table of the level.
    pub restricted: Vec<Restriction>,
    /// Tenant-style predicates: top-level `AND`ed `column = <expression referencing no column>` of
    /// the `WHERE` and of the joins' `ON`s.
    pub equalities: Vec<Equality>,
}

impl QueryLevel {
    /// Whether `table` (a resolved name) is restricted at this level.
    pub fn is_restricted(&self, table: &str) -> bool {
        self.restricted.iter().any(|r| r.table == table)
    }
}

/// A condition that restricts the rows of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Restriction {
    pub table: String,
    pub column: String,
    /// `=`, `<`, `<=`, `>`, `>=`, `in`, `between`, `like`, `ilike` or `or`.
    pub op: String,
}

/// `column = <value>` where the value references no column.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default)]
pub struct Equality {
    /// The table the qualifier resolves to (through the level's aliases); `None` when unqualified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub column: String,
}

/// A column reference as written, with the qualifier resolved through aliases where it names one.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct ColumnRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub column: String,
}

/// A routine a statement defines (`CREATE FUNCTION`/`PROCEDURE`/`TRIGGER`, `DO`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Routine {
    /// `function`, `procedure`, `trigger`, `event_trigger`, `rule` or `do`.
    pub kind: String,
    /// The routine's name (empty for `DO`); for a trigger, the function it executes.
    pub name: String,
    /// The language, lower-cased (`sql`, `plpgsql`, `c`, ...); empty when it does not apply.
    pub language: String,
    /// For `sql` routines (`AS $$ ... $$`, `AS '...'`, `BEGIN ATOMIC ... END`, `RETURN ...`): the
    /// body's facts, judged like top-level statements. `None` for other languages, for triggers,
    /// and past [`MAX_ROUTINE_DEPTH`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<StatementFacts>>,
}

impl StatementFacts {
    /// Facts for text that does not parse.
    pub fn unparsed(source: &str, error: String) -> StatementFacts {
        StatementFacts {
            version: FACTS_VERSION,
            source: source.to_owned(),
            parse_error: Some(error),
            ..StatementFacts::default()
        }
    }

    /// Every table named by any statement, deduplicated, in first-seen order.
    pub fn tables(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in self.statements.iter().flat_map(|s| &s.tables) {
            if !out.contains(&t.name) {
                out.push(t.name.clone());
            }
        }
        out
    }

    /// The classes of the statements, deduplicated.
    pub fn classes(&self) -> Vec<StatementClass> {
        let mut out: Vec<StatementClass> = self.statements.iter().map(|s| s.class).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether some statement calls a function whose last name part is `name` (already folded).
    pub fn calls(&self, name: &str) -> bool {
        self.statements.iter().flat_map(|s| &s.functions).any(|f| last_part(f) == name)
    }
}

/// The last `.`-separated part of a resolved name: `pg_catalog.lower` → `lower`.
pub fn last_part(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(_, l)| l)
}

/// Sorted, deduplicated insert.
pub(crate) fn insert_sorted<T: Ord>(v: &mut Vec<T>, x: T) {
    if let Err(i) = v.binary_search(&x) {
        v.insert(i, x);
    }
}

impl Statement {
    /// Marks `name` as used in the given ways.
    pub(crate) fn use_table(&mut self, name: &str, read: bool, write: bool, ddl: bool) {
        if let Some(t) = self.tables.iter_mut().find(|t| t.name == name) {
            t.read |= read;
            t.write |= write;
            t.ddl |= ddl;
        } else {
            self.tables.push(TableUse { name: name.to_owned(), read, write, ddl });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_trip_and_unknown_classes_read_as_other() {
        for c in StatementClass::ALL {
            let j = serde_json::to_string(&c).unwrap();
            assert_eq!(j, format!("\"{}\"", c.name()));
            assert_eq!(serde_json::from_str::<StatementClass>(&j).unwrap(), c);
            assert_eq!(StatementClass::from_name(&c.name().to_uppercase()), Some(c));
        }
        assert_eq!(serde_json::from_str::<StatementClass>("\"from_the_future\"").unwrap(), StatementClass::Other);
        assert_eq!(StatementClass::from_name("nonsense"), None);
    }

    #[test]
    fn facts_tolerate_missing_and_unknown_fields() {
        let f: StatementFacts =
            serde_json::from_str(r#"{"statements":[{"kind":"SELECT","class":"read","new":1}],"extra":true}"#).unwrap();
        assert_eq!(f.statements[0].class, StatementClass::Read);
        assert_eq!(f.version, 0);
        assert!(f.parse_error.is_none());
    }

    #[test]
    fn last_part_strips_the_schema() {
        assert_eq!(last_part("pg_catalog.pg_terminate_backend"), "pg_terminate_backend");
        assert_eq!(last_part("lower"), "lower");
    }
}
