//! Host-side extraction with PostgreSQL's own parser (`pg_query`, libpg_query: the server's grammar).
//!
//! The parse tree is walked generically (every node of every statement type is visited, so a node
//! type nobody listed cannot hide a table, a function or a subquery); the statement kinds, query
//! levels, routine bodies and `MERGE` actions are read from the nodes that carry them.

use serde_json::{Map, Value};

use pg_query::protobuf as pb;

use crate::restrict::{Cond, Operand, Scope, top_level};
use crate::{
    ColumnRef, FACTS_VERSION, MAX_ROUTINE_DEPTH, QueryLevel, Routine, Statement, StatementClass, StatementFacts,
    insert_sorted,
};

/// The `source` of facts from this extractor.
pub const SOURCE: &str = "pg_query";

/// Texts up to this many bytes are analysed on the caller's stack. libpg_query hands its tree over
/// through recursive C code (its protobuf output, the normaliser's and fingerprinter's walkers), a
/// few hundred bytes of stack per level of nesting, and a text nests at most one level per two
/// bytes (`1+1+…`): 1,024 levels fit in a tokio worker's 2 MiB with room to spare, debug builds
/// included. A longer text is analysed on a thread of its own whose stack grows with the text
/// ([`STACK_PER_BYTE`]): a client's deeply nested statement must not overflow the host's stack,
/// which aborts the process (a Rust panic can be caught; a stack overflow cannot).
pub const INLINE_TEXT: usize = 2 * 1024;

/// Texts longer than this are not analysed: their facts say so in `parse_error`, as for SQL that does
/// not parse (a plugin that refuses what it cannot read refuses them). PostgreSQL itself refuses
/// nesting past its `max_stack_depth` (2 MB by default).
pub const MAX_ANALYSED_TEXT: usize = 1 << 20;

/// Stack given to the analysis of a text longer than [`INLINE_TEXT`], per byte of text (on top of
/// 1 MiB): more than the deepest nesting the text can hold needs. Reserved, not touched: only the
/// pages the recursion reaches are ever mapped in.
pub const STACK_PER_BYTE: usize = 512;

/// Runs `f`, which hands `sql` to libpg_query, where its recursion fits: inline for a short text,
/// else on a scoped thread with a stack sized for `sql`. `Err` says why it did not run to the end
/// (the thread could not be started, or `f` panicked).
pub(crate) fn on_deep_enough_stack<T: Send>(sql: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    if sql.len() <= INLINE_TEXT {
        return Ok(f());
    }
    let stack = (1 << 20) + sql.len().saturating_mul(STACK_PER_BYTE);
    std::thread::scope(|s| {
        match std::thread::Builder::new().name("helios-facts".into()).stack_size(stack).spawn_scoped(s, f) {
            Ok(t) => t.join().map_err(|_| "the statement analyser failed on this text".to_owned()),
            Err(e) => Err(format!("cannot start a thread to analyse a statement of {} bytes: {e}", sql.len())),
        }
    })
}

/// The facts of `sql` (one or several statements). Never panics, and never overflows the caller's
/// stack however deeply `sql` nests; SQL that does not parse, or is longer than
/// [`MAX_ANALYSED_TEXT`], gives facts with `parse_error` set.
pub fn extract(sql: &str) -> StatementFacts {
    if sql.len() > MAX_ANALYSED_TEXT {
        return StatementFacts::unparsed(
            SOURCE,
            format!("the text is {} bytes, longer than the {MAX_ANALYSED_TEXT} the host analyses", sql.len()),
        );
    }
    let analysed = on_deep_enough_stack(sql, || {
        std::panic::catch_unwind(|| extract_at(sql, 0))
            .map_err(|_| "the statement analyser failed on this text".to_owned())
    });
    match analysed.and_then(|r| r) {
        Ok(f) => f,
        Err(why) => StatementFacts::unparsed(SOURCE, why),
    }
}

/// libpg_query's fingerprint of `sql` (hex), `None` when it does not parse (or is longer than
/// [`MAX_ANALYSED_TEXT`]).
pub fn fingerprint(sql: &str) -> Option<String> {
    if sql.len() > MAX_ANALYSED_TEXT {
        return None;
    }
    on_deep_enough_stack(sql, || pg_query::fingerprint(sql).ok().map(|f| f.hex)).ok().flatten()
}

fn extract_at(sql: &str, depth: u32) -> StatementFacts {
    let mut facts = StatementFacts { version: FACTS_VERSION, source: SOURCE.to_owned(), ..StatementFacts::default() };
    facts.comments = comments(sql);
    let parsed = match pg_query::parse(sql) {
        Ok(p) => p,
        Err(e) => {
            facts.parse_error = Some(error_text(e));
            return facts;
        }
    };
    let tree = match serde_json::to_value(&parsed.protobuf.stmts) {
        Ok(t) => t,
        Err(e) => {
            facts.parse_error = Some(format!("the parse tree could not be read: {e}"));
            return facts;
        }
    };
    let stmts: Vec<&Value> = list(&tree).iter().map(|raw| get(raw, "stmt")).collect();
    fill_statements(&mut facts, &stmts, depth);
    facts.normalized = pg_query::normalize(sql).unwrap_or_default();
    facts.fingerprint = pg_query::fingerprint(sql).map(|f| f.hex).unwrap_or_default();
    facts
}

fn error_text(e: pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(m) => m,
        pg_query::Error::Conversion(_) => "the text contains a NUL byte".to_owned(),
        other => other.to_string(),
    }
}

/// Statements (parse-tree nodes) into `facts`.
fn fill_statements(facts: &mut StatementFacts, stmts: &[&Value], depth: u32) {
    let mut read_only = !stmts.is_empty();
    for stmt in stmts {
        let mut w = Walker { depth, ..Walker::default() };
        let st = w.statement(stmt);
        read_only &= st.class == StatementClass::Read && !w.locks_rows && !w.writes;
        facts.statements.push(st);
    }
    facts.statement_count = facts.statements.len();
    facts.is_read_only = read_only;
}

/// The comments of `sql`, by PostgreSQL's scanner. When the scanner rejects the text (an
/// unterminated string or comment), the comments before the offending quote or comment opener.
fn comments(sql: &str) -> Vec<String> {
    if !sql.contains("--") && !sql.contains("/*") {
        return Vec::new();
    }
    let scan = pg_query::scan(sql).or_else(|e| {
        // Cut before each opener from the last one back, until what precedes scans.
        let cuts = sql.char_indices().filter(|(_, c)| matches!(c, '\'' | '"' | '$' | '/')).map(|(i, _)| i);
        let cuts: Vec<usize> = cuts.collect();
        cuts.into_iter().rev().take(16).find_map(|i| pg_query::scan(&sql[..i]).ok()).ok_or(e)
    });
    let Ok(scan) = scan else { return Vec::new() };
    scan.tokens
        .iter()
        .filter_map(|t| {
            let text = sql.get(t.start as usize..t.end as usize)?;
            if t.token == pb::Token::SqlComment as i32 {
                Some(text.strip_prefix("--").unwrap_or(text).trim().to_owned())
            } else if t.token == pb::Token::CComment as i32 {
                let inner = text.strip_prefix("/*").unwrap_or(text);
                Some(inner.strip_suffix("*/").unwrap_or(inner).trim().to_owned())
            } else {
                None
            }
        })
        .collect()
}

// ---- tree access -------------------------------------------------------------------------------

static NULL: Value = Value::Null;

fn get<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or(&NULL)
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn int(v: &Value, k: &str) -> i32 {
    get(v, k).as_i64().unwrap_or(0) as i32
}

fn flag(v: &Value, k: &str) -> bool {
    get(v, k).as_bool().unwrap_or(false)
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    get(v, k).as_str().unwrap_or("")
}

/// `{"node": {"Name": body}}` or `{"Name": body}` → (`Name`, body).
fn node(v: &Value) -> Option<(&str, &Value)> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let (k, body) = obj.iter().next()?;
    if k == "node" {
        return node(body);
    }
    k.starts_with(|c: char| c.is_ascii_uppercase()).then_some((k.as_str(), body))
}

/// The `sval` of a `String` node.
fn sval(v: &Value) -> Option<&str> {
    match node(v) {
        Some(("String", s)) => get(s, "sval").as_str(),
        _ => None,
    }
}

/// A list of `String` nodes joined with `.` (`pg_catalog.lower`).
fn dotted(v: &Value) -> String {
    list(v).iter().filter_map(sval).collect::<Vec<_>>().join(".")
}

fn is_range_var(m: &Map<String, Value>) -> bool {
    m.contains_key("relname") && m.contains_key("inh")
}

fn is_select(m: &Map<String, Value>) -> bool {
    m.contains_key("target_list") && m.contains_key("larg") && m.contains_key("op")
}

fn is_func_call(m: &Map<String, Value>) -> bool {
    m.contains_key("funcname") && m.contains_key("agg_star")
}

fn range_var_name(rv: &Value) -> String {
    [text(rv, "catalogname"), text(rv, "schemaname"), text(rv, "relname")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

fn alias_of(v: &Value) -> Option<String> {
    get(v, "alias").get("aliasname").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A column reference's (qualifier, column).
fn column_ref(c: &Value) -> Option<(Option<String>, String)> {
    let fields = list(get(c, "fields"));
    let mut parts: Vec<String> = Vec::with_capacity(fields.len());
    for f in fields {
        match node(f) {
            Some(("String", s)) => parts.push(text(s, "sval").to_owned()),
            Some(("AStar", _)) => parts.push("*".to_owned()),
            _ => return None,
        }
    }
    let column = parts.pop()?;
    Some(((!parts.is_empty()).then(|| parts.join(".")), column))
}

fn object_type_name(v: i32) -> String {
    let Ok(t) = pb::ObjectType::try_from(v) else { return "OBJECT".to_owned() };
    let name = t.as_str_name().trim_start_matches("OBJECT_");
    match name {
        "MATVIEW" => "MATERIALIZED VIEW".to_owned(),
        "FDW" => "FOREIGN DATA WRAPPER".to_owned(),
        "FOREIGN_SERVER" => "SERVER".to_owned(),
        "TABCONSTRAINT" => "CONSTRAINT".to_owned(),
        other => other.replace('_', " "),
    }
}

/// `CreateConversionStmt` → `CREATE CONVERSION`.
fn words_of(node_name: &str) -> String {
    let base = node_name.strip_suffix("Stmt").unwrap_or(node_name);
    let mut out = String::new();
    for (i, c) in base.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

// ---- the walk ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    Ddl,
}

#[derive(Default)]
struct Walker {
    st: Statement,
    depth: u32,
    /// CTE names seen so far (not tables).
    ctes: Vec<String>,
    /// Scopes of the enclosing query levels, innermost last, for resolving qualifiers.
    scopes: Vec<Scope>,
    writes: bool,
    locks_rows: bool,
    select_into: bool,
}

impl Walker {
    fn statement(&mut self, stmt: &Value) -> Statement {
        let Some((name, body)) = node(stmt) else {
            self.st.kind = "UNKNOWN".to_owned();
            return std::mem::take(&mut self.st);
        };
        let (kind, class) = self.classify(name, body);
        self.st.kind = kind;
        self.st.class = class;
        self.node(name, body, Access::Read);
        if name == "SelectStmt" {
            if self.select_into {
                self.st.kind = "SELECT INTO".to_owned();
                self.st.class = StatementClass::Ddl;
            } else if self.writes {
                self.st.class = StatementClass::Write;
            }
        }
        for t in &mut self.st.tables {
            t.name.shrink_to_fit();
        }
        std::mem::take(&mut self.st)
    }

    /// (kind, class) of a top-level statement node.
    fn classify(&self, name: &str, b: &Value) -> (String, StatementClass) {
        use StatementClass as C;
        let s = |k: &str, c: C| (k.to_owned(), c);
        match name {
            "SelectStmt" => s("SELECT", C::Read),
            "InsertStmt" => s("INSERT", C::Write),
            "UpdateStmt" => s("UPDATE", C::Write),
            "DeleteStmt" => s("DELETE", C::Write),
            "MergeStmt" => s("MERGE", C::Write),
            "CreateStmt" => s("CREATE TABLE", C::Ddl),
            "CreateTableAsStmt" => {
                if int(b, "objtype") == pb::ObjectType::ObjectMatview as i32 {
                    s("CREATE MATERIALIZED VIEW", C::Ddl)
                } else {
                    s("CREATE TABLE AS", C::Ddl)
                }
            }
            "ViewStmt" => s("CREATE VIEW", C::Ddl),
            "IndexStmt" => s("CREATE INDEX", C::Ddl),
            "AlterTableStmt" => (format!("ALTER {}", object_type_name(int(b, "objtype"))), C::Ddl),
            "DropStmt" => (format!("DROP {}", object_type_name(int(b, "remove_type"))), C::Ddl),
            "RenameStmt" => {
                // Renaming a column, constraint, trigger, rule or policy alters its relation.
                use pb::ObjectType as O;
                let t = match O::try_from(int(b, "rename_type")) {
                    Ok(
                        O::ObjectColumn | O::ObjectTabconstraint | O::ObjectTrigger | O::ObjectRule | O::ObjectPolicy,
                    ) => int(b, "relation_type"),
                    _ => int(b, "rename_type"),
                };
                (format!("ALTER {}", object_type_name(t)), C::Ddl)
            }
            "AlterObjectSchemaStmt" => (format!("ALTER {}", object_type_name(int(b, "object_type"))), C::Ddl),
            "AlterOwnerStmt" => (format!("ALTER {}", object_type_name(int(b, "object_type"))), C::Dcl),
            "TruncateStmt" => s("TRUNCATE", C::Ddl),
            "CommentStmt" => s("COMMENT", C::Ddl),
            "CompositeTypeStmt" | "CreateEnumStmt" | "CreateRangeStmt" => s("CREATE TYPE", C::Ddl),
            "AlterEnumStmt" => s("ALTER TYPE", C::Ddl),
            "DefineStmt" => (format!("CREATE {}", object_type_name(int(b, "kind"))), C::Ddl),
            "CreatedbStmt" => s("CREATE DATABASE", C::Ddl),
            "DropdbStmt" => s("DROP DATABASE", C::Ddl),
            "AlterDatabaseStmt" | "AlterDatabaseSetStmt" | "AlterDatabaseRefreshCollStmt" => {
                s("ALTER DATABASE", C::Ddl)
            }
            "CreateSeqStmt" => s("CREATE SEQUENCE", C::Ddl),
            "AlterSeqStmt" => s("ALTER SEQUENCE", C::Ddl),
            "CreateExtensionStmt" => s("CREATE EXTENSION", C::Ddl),
            "AlterExtensionStmt" | "AlterExtensionContentsStmt" => s("ALTER EXTENSION", C::Ddl),
            "CreateStatsStmt" => s("CREATE STATISTICS", C::Ddl),
            "SecLabelStmt" => s("SECURITY LABEL", C::Ddl),
            "GrantStmt" | "GrantRoleStmt" => {
                if flag(b, "is_grant") {
                    s("GRANT", C::Dcl)
                } else {
                    s("REVOKE", C::Dcl)
                }
            }
            "CreateRoleStmt" => s("CREATE ROLE", C::Dcl),
            "AlterRoleStmt" | "AlterRoleSetStmt" => s("ALTER ROLE", C::Dcl),
            "DropRoleStmt" => s("DROP ROLE", C::Dcl),
            "AlterDefaultPrivilegesStmt" => s("ALTER DEFAULT PRIVILEGES", C::Dcl),
            "CreatePolicyStmt" => s("CREATE POLICY", C::Dcl),
            "AlterPolicyStmt" => s("ALTER POLICY", C::Dcl),
            "ReassignOwnedStmt" => s("REASSIGN OWNED", C::Dcl),
            "DropOwnedStmt" => s("DROP OWNED", C::Dcl),
            "CreateFunctionStmt" => {
                if flag(b, "is_procedure") {
                    s("CREATE PROCEDURE", C::Routine)
                } else {
                    s("CREATE FUNCTION", C::Routine)
                }
            }
            "AlterFunctionStmt" => (format!("ALTER {}", object_type_name(int(b, "objtype"))), C::Routine),
            "CreateTrigStmt" => s("CREATE TRIGGER", C::Routine),
            "CreateEventTrigStmt" => s("CREATE EVENT TRIGGER", C::Routine),
            "AlterEventTrigStmt" => s("ALTER EVENT TRIGGER", C::Routine),
            "RuleStmt" => s("CREATE RULE", C::Routine),
            "DoStmt" => s("DO", C::Routine),
            "CreatePlangStmt" => s("CREATE LANGUAGE", C::Routine),
            "VacuumStmt" => {
                if flag(b, "is_vacuumcmd") {
                    s("VACUUM", C::Maintenance)
                } else {
                    s("ANALYZE", C::Maintenance)
                }
            }
            "ClusterStmt" => s("CLUSTER", C::Maintenance),
            "ReindexStmt" => s("REINDEX", C::Maintenance),
            "RefreshMatViewStmt" => s("REFRESH MATERIALIZED VIEW", C::Maintenance),
            "CheckPointStmt" => s("CHECKPOINT", C::Maintenance),
            "VariableSetStmt" => {
                let reset = matches!(
                    pb::VariableSetKind::try_from(int(b, "kind")),
                    Ok(pb::VariableSetKind::VarReset | pb::VariableSetKind::VarResetAll)
                );
                let verb = if reset { "RESET" } else { "SET" };
                match text(b, "name") {
                    "role" => (format!("{verb} ROLE"), C::SessionRole),
                    "session_authorization" => (format!("{verb} SESSION AUTHORIZATION"), C::SessionRole),
                    _ => s(verb, C::Session),
                }
            }
            "VariableShowStmt" => s("SHOW", C::Read),
            "ReturnStmt" => s("RETURN", C::Read),
            "TransactionStmt" => {
                use pb::TransactionStmtKind as K;
                let k = match K::try_from(int(b, "kind")) {
                    Ok(K::TransStmtBegin) => "BEGIN",
                    Ok(K::TransStmtStart) => "START TRANSACTION",
                    Ok(K::TransStmtCommit) => "COMMIT",
                    Ok(K::TransStmtRollback) => "ROLLBACK",
                    Ok(K::TransStmtSavepoint) => "SAVEPOINT",
                    Ok(K::TransStmtRelease) => "RELEASE",
                    Ok(K::TransStmtRollbackTo) => "ROLLBACK TO",
                    Ok(K::TransStmtPrepare) => "PREPARE TRANSACTION",
                    Ok(K::TransStmtCommitPrepared) => "COMMIT PREPARED",
                    Ok(K::TransStmtRollbackPrepared) => "ROLLBACK PREPARED",
                    _ => "TRANSACTION",
                };
                s(k, C::Transaction)
            }
            "ConstraintsSetStmt" => s("SET CONSTRAINTS", C::Transaction),
            "CopyStmt" => {
                let class = if flag(b, "is_program") {
                    C::CopyProgram
                } else if !text(b, "filename").is_empty() {
                    C::CopyFile
                } else if flag(b, "is_from") {
                    C::Write
                } else {
                    C::Read
                };
                s("COPY", class)
            }
            "ListenStmt" => s("LISTEN", C::Listen),
            "UnlistenStmt" => s("UNLISTEN", C::Listen),
            "NotifyStmt" => s("NOTIFY", C::Notify),
            "ExplainStmt" => ("EXPLAIN".to_owned(), self.inner_class(get(b, "query"))),
            "PrepareStmt" => ("PREPARE".to_owned(), self.inner_class(get(b, "query"))),
            "DeclareCursorStmt" => ("DECLARE CURSOR".to_owned(), self.inner_class(get(b, "query"))),
            "ExecuteStmt" => s("EXECUTE", C::Other),
            "DeallocateStmt" => s("DEALLOCATE", C::Session),
            "FetchStmt" => {
                if flag(b, "ismove") {
                    s("MOVE", C::Read)
                } else {
                    s("FETCH", C::Read)
                }
            }
            "ClosePortalStmt" => s("CLOSE", C::Session),
            "DiscardStmt" => s("DISCARD", C::Session),
            "CallStmt" => s("CALL", C::Call),
            "LockStmt" => s("LOCK TABLE", C::Lock),
            "AlterSystemStmt" => s("ALTER SYSTEM", C::Admin),
            "LoadStmt" => s("LOAD", C::Admin),
            other => {
                let words = words_of(other);
                let ddl =
                    ["CREATE", "ALTER", "DROP", "DEFINE", "IMPORT", "COMMENT"].iter().any(|p| words.starts_with(p));
                (words, if ddl { C::Ddl } else { C::Other })
            }
        }
    }

    /// The class of the statement inside `EXPLAIN`/`PREPARE`/`DECLARE`: what it would run.
    fn inner_class(&self, inner: &Value) -> StatementClass {
        let Some((name, body)) = node(inner) else { return StatementClass::Other };
        let mut w = Walker { depth: self.depth, ..Walker::default() };
        w.statement(&serde_json::json!({ name: body })).class
    }

    /// Visits any value of the tree.
    fn walk(&mut self, v: &Value, access: Access) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| self.walk(i, access)),
            Value::Object(m) => {
                if let Some((name, body)) = node(v) {
                    self.node(name, body, access);
                } else if is_range_var(m) {
                    self.range_var(v, access);
                } else if is_select(m) {
                    self.select(v, false, &[]);
                } else if is_func_call(m) {
                    self.node("FuncCall", v, access);
                } else {
                    m.values().for_each(|x| self.walk(x, access));
                }
            }
            _ => {}
        }
    }

    fn walk_fields_except(&mut self, b: &Value, skip: &[&str], access: Access) {
        if let Some(m) = b.as_object() {
            for (k, v) in m {
                if !skip.contains(&k.as_str()) {
                    self.walk(v, access);
                }
            }
        }
    }

    fn node(&mut self, name: &str, b: &Value, access: Access) {
        match name {
            "RangeVar" => self.range_var(b, access),
            "ColumnRef" => {
                if let Some((q, column)) = column_ref(b) {
                    let table = q.map(|q| self.resolve(&q).unwrap_or(q));
                    insert_sorted(&mut self.st.columns, ColumnRef { table, column });
                }
            }
            "FuncCall" => {
                let f = dotted(get(b, "funcname"));
                if !f.is_empty() {
                    insert_sorted(&mut self.st.functions, f);
                }
                self.walk_fields_except(b, &["funcname"], access);
            }
            "AExpr" => {
                use pb::AExprKind as K;
                if matches!(K::try_from(int(b, "kind")), Ok(K::AexprOp | K::AexprOpAny | K::AexprOpAll)) {
                    let op = dotted(get(b, "name"));
                    if !op.is_empty() {
                        insert_sorted(&mut self.st.operators, op);
                    }
                }
                self.walk_fields_except(b, &["name"], access);
            }
            "SelectStmt" => self.select(b, false, &[]),
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => self.dml(name, b),
            "CommonTableExpr" => {
                let n = text(b, "ctename");
                if !n.is_empty() && !self.ctes.iter().any(|c| c == n) {
                    self.ctes.push(n.to_owned());
                }
                if let Some((inner, _)) = node(get(b, "ctequery"))
                    && matches!(inner, "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt")
                {
                    self.writes = true;
                }
                self.walk(get(b, "ctequery"), Access::Read);
            }
            "CreateFunctionStmt" => self.create_function(b),
            "DoStmt" => self.do_block(b),
            "CreateTrigStmt" | "CreateEventTrigStmt" => {
                if self.st.routine.is_none() {
                    let kind = if name == "CreateTrigStmt" { "trigger" } else { "event_trigger" };
                    self.st.routine =
                        Some(Routine { kind: kind.to_owned(), name: dotted(get(b, "funcname")), ..Routine::default() });
                }
                self.walk_fields_except(b, &["funcname"], Access::Ddl);
            }
            "RuleStmt" => {
                let actions: Vec<&Value> = list(get(b, "actions")).iter().collect();
                let mut body =
                    StatementFacts { version: FACTS_VERSION, source: SOURCE.to_owned(), ..Default::default() };
                if self.depth < MAX_ROUTINE_DEPTH {
                    fill_statements(&mut body, &actions, self.depth + 1);
                }
                if self.st.routine.is_none() {
                    self.st.routine = Some(Routine {
                        kind: "rule".to_owned(),
                        name: text(b, "rulename").to_owned(),
                        language: "sql".to_owned(),
                        body: (self.depth < MAX_ROUTINE_DEPTH).then(|| Box::new(body)),
                    });
                }
                self.range_var(get(b, "relation"), Access::Ddl);
                self.walk(get(b, "where_clause"), Access::Read);
            }
            "DropStmt" => self.drop(b),
            "TruncateStmt" => self.walk(get(b, "relations"), Access::Write),
            "CopyStmt" => {
                let rel_access = if flag(b, "is_from") { Access::Write } else { Access::Read };
                self.range_var(get(b, "relation"), rel_access);
                self.walk_fields_except(b, &["relation"], Access::Read);
            }
            "ExplainStmt" | "PrepareStmt" | "DeclareCursorStmt" => self.walk(get(b, "query"), Access::Read),
            _ => {
                // Utility statements act on the relations they name; expressions within stay reads
                // through their own nodes (a SELECT inside resets to Read).
                let a = if name.ends_with("Stmt") && access == Access::Read && self.scopes.is_empty() {
                    match name {
                        "VariableShowStmt" | "CallStmt" | "ExecuteStmt" | "FetchStmt" | "ReturnStmt" => Access::Read,
                        _ => Access::Ddl,
                    }
                } else {
                    access
                };
                self.walk(b, a);
            }
        }
    }

    fn range_var(&mut self, rv: &Value, access: Access) {
        if !rv.is_object() {
            return;
        }
        let name = range_var_name(rv);
        if name.is_empty() || (text(rv, "schemaname").is_empty() && self.ctes.contains(&name)) {
            return;
        }
        self.st.use_table(&name, access == Access::Read, access == Access::Write, access == Access::Ddl);
    }

    fn resolve(&self, q: &str) -> Option<String> {
        self.scopes.iter().rev().find_map(|s| s.resolve(q))
    }

    /// The FROM items of a level: the tables it reads directly (with aliases), the `ON` conditions,
    /// and the items to walk (subqueries, functions).
    fn collect_from(items: &[Value], scope: &mut Scope, conds: &mut Vec<Cond>) {
        for item in items {
            match node(item) {
                Some(("RangeVar", rv)) => {
                    let name = range_var_name(rv);
                    if !name.is_empty() {
                        scope.tables.push((name, alias_of(rv)));
                    }
                }
                Some(("JoinExpr", j)) => {
                    Self::collect_from(std::slice::from_ref(get(j, "larg")), scope, conds);
                    Self::collect_from(std::slice::from_ref(get(j, "rarg")), scope, conds);
                    if let Some(q) = lower(get(j, "quals")) {
                        top_level(q, conds);
                    }
                }
                _ => {}
            }
        }
    }

    fn is_cte(&self, name: &str) -> bool {
        !name.contains('.') && self.ctes.iter().any(|c| c == name)
    }

    /// Builds a level from its scope and conditions and pushes it (at `at`, to keep outer levels
    /// first).
    fn push_level(&mut self, at: usize, mut level: QueryLevel, scope: &Scope, conds: &[Cond]) {
        let real: Vec<String> = scope.tables.iter().map(|(n, _)| n.clone()).filter(|n| !self.is_cte(n)).collect();
        for n in real {
            if !level.tables.contains(&n) {
                level.tables.push(n);
            }
        }
        level.restricted = scope.restrictions(conds).into_iter().filter(|r| !self.is_cte(&r.table)).collect();
        scope.equalities(conds, &mut level.equalities);
        self.st.levels.insert(at.min(self.st.levels.len()), level);
    }

    fn with_clause(&mut self, b: &Value) {
        let with = get(b, "with_clause");
        if with.is_object() {
            for cte in list(get(with, "ctes")) {
                if let Some(("CommonTableExpr", c)) = node(cte) {
                    let n = text(c, "ctename");
                    if !n.is_empty() && !self.ctes.iter().any(|x| x == n) {
                        self.ctes.push(n.to_owned());
                    }
                }
            }
            self.walk(get(with, "ctes"), Access::Read);
        }
    }

    fn select(&mut self, b: &Value, inherited_limit: bool, inherited_order: &[String]) {
        self.with_clause(b);
        let has_limit = inherited_limit || limit_present(b);
        let mut order_operators = inherited_order.to_vec();
        for s in list(get(b, "sort_clause")) {
            if let Some(("SortBy", sb)) = node(s) {
                sort_operators(get(sb, "node"), &mut order_operators);
            }
        }
        let op = pb::SetOperation::try_from(int(b, "op")).unwrap_or(pb::SetOperation::SetopNone);
        if op != pb::SetOperation::SetopNone {
            for side in ["larg", "rarg"] {
                let s = get(b, side);
                if s.is_object() {
                    self.select(s, has_limit, &order_operators);
                }
            }
            self.walk_fields_except(b, &["with_clause", "larg", "rarg"], Access::Read);
            return;
        }
        if get(b, "into_clause").is_object() {
            self.select_into = true;
        }
        if !list(get(b, "locking_clause")).is_empty() {
            self.locks_rows = true;
        }
        let from = list(get(b, "from_clause"));
        let at = self.st.levels.len();
        let mut scope = Scope::default();
        let mut conds = Vec::new();
        Self::collect_from(from, &mut scope, &mut conds);
        let where_clause = get(b, "where_clause");
        if let Some(c) = lower(where_clause) {
            top_level(c, &mut conds);
        }
        let is_level = !from.is_empty();
        self.scopes.push(scope);
        self.walk_fields_except(b, &["with_clause", "larg", "rarg"], Access::Read);
        let scope = self.scopes.pop().unwrap_or_default();
        if is_level {
            let level = QueryLevel {
                kind: "select".to_owned(),
                has_where: where_clause.is_object(),
                has_limit,
                order_operators,
                ..QueryLevel::default()
            };
            self.push_level(at, level, &scope, &conds);
        }
    }

    fn dml(&mut self, name: &str, b: &Value) {
        self.with_clause(b);
        let rel = get(b, "relation");
        let target = range_var_name(rel);
        let at = self.st.levels.len();
        let mut scope = Scope::default();
        scope.tables.push((target.clone(), alias_of(rel)));
        let mut conds = Vec::new();
        let (kind, extra_from, where_key) = match name {
            "InsertStmt" => ("insert", None, None),
            "UpdateStmt" => ("update", Some("from_clause"), Some("where_clause")),
            "DeleteStmt" => ("delete", Some("using_clause"), Some("where_clause")),
            _ => ("merge", None, Some("join_condition")),
        };
        if let Some(k) = extra_from {
            Self::collect_from(list(get(b, k)), &mut scope, &mut conds);
        }
        if name == "MergeStmt" {
            let src = get(b, "source_relation");
            Self::collect_from(std::slice::from_ref(src), &mut scope, &mut conds);
            for w in list(get(b, "merge_when_clauses")) {
                if let Some(("MergeWhenClause", m)) = node(w) {
                    let action = match pb::CmdType::try_from(int(m, "command_type")) {
                        Ok(pb::CmdType::CmdUpdate) => "update",
                        Ok(pb::CmdType::CmdInsert) => "insert",
                        Ok(pb::CmdType::CmdDelete) => "delete",
                        _ => "do_nothing",
                    };
                    self.st.merge_actions.push(action.to_owned());
                }
            }
        }
        let where_clause = where_key.map(|k| get(b, k)).unwrap_or(&NULL);
        if let Some(c) = lower(where_clause) {
            top_level(c, &mut conds);
        }
        self.range_var(rel, Access::Write);
        self.scopes.push(scope);
        self.walk_fields_except(b, &["with_clause", "relation"], Access::Read);
        let scope = self.scopes.pop().unwrap_or_default();
        let level = QueryLevel {
            kind: kind.to_owned(),
            target: (!target.is_empty()).then_some(target),
            has_where: where_clause.is_object(),
            ..QueryLevel::default()
        };
        self.push_level(at, level, &scope, &conds);
    }

    fn drop(&mut self, b: &Value) {
        use pb::ObjectType as O;
        let t = O::try_from(int(b, "remove_type")).unwrap_or(O::Undefined);
        for o in list(get(b, "objects")) {
            let Some(("List", l)) = node(o) else { continue };
            let items = list(get(l, "items"));
            let parts: Vec<&str> = items.iter().filter_map(sval).collect();
            let name = match t {
                O::ObjectTable | O::ObjectView | O::ObjectMatview | O::ObjectForeignTable => parts.join("."),
                O::ObjectRule | O::ObjectTrigger | O::ObjectPolicy if parts.len() > 1 => {
                    parts[..parts.len() - 1].join(".")
                }
                _ => continue,
            };
            if !name.is_empty() {
                self.st.use_table(&name, false, false, true);
            }
        }
    }

    fn create_function(&mut self, b: &Value) {
        let mut language = String::new();
        let mut as_body: Option<String> = None;
        for o in list(get(b, "options")) {
            let Some(("DefElem", d)) = node(o) else { continue };
            match text(d, "defname") {
                "language" => language = sval(get(d, "arg")).unwrap_or("").to_lowercase(),
                "as" => {
                    as_body = match node(get(d, "arg")) {
                        Some(("List", l)) => list(get(l, "items")).first().and_then(sval).map(str::to_owned),
                        Some(("String", s)) => get(s, "sval").as_str().map(str::to_owned),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        let sql_body = get(b, "sql_body");
        if language.is_empty() && sql_body.is_object() {
            language = "sql".to_owned();
        }
        let mut body = None;
        if language == "sql" && self.depth < MAX_ROUTINE_DEPTH {
            if let Some(text) = &as_body {
                body = Some(Box::new(extract_at(text, self.depth + 1)));
            } else if sql_body.is_object() {
                let mut stmts: Vec<&Value> = Vec::new();
                collect_body(sql_body, &mut stmts);
                let mut f = StatementFacts { version: FACTS_VERSION, source: SOURCE.to_owned(), ..Default::default() };
                fill_statements(&mut f, &stmts, self.depth + 1);
                body = Some(Box::new(f));
            }
        }
        let kind = if flag(b, "is_procedure") { "procedure" } else { "function" };
        self.st.routine = Some(Routine { kind: kind.to_owned(), name: dotted(get(b, "funcname")), language, body });
        // Parameter defaults and the like are expressions of the statement itself.
        self.walk_fields_except(b, &["sql_body", "options", "funcname", "return_type"], Access::Read);
    }

    fn do_block(&mut self, b: &Value) {
        let mut language = "plpgsql".to_owned();
        let mut code = None;
        for a in list(get(b, "args")) {
            let Some(("DefElem", d)) = node(a) else { continue };
            match text(d, "defname") {
                "language" => language = sval(get(d, "arg")).unwrap_or("").to_lowercase(),
                "as" => code = sval(get(d, "arg")).map(str::to_owned),
                _ => {}
            }
        }
        let body = (language == "sql" && self.depth < MAX_ROUTINE_DEPTH)
            .then(|| code.map(|c| Box::new(extract_at(&c, self.depth + 1))))
            .flatten();
        self.st.routine = Some(Routine { kind: "do".to_owned(), name: String::new(), language, body });
    }
}

/// The statements of a `BEGIN ATOMIC ... END` or `RETURN ...` body.
fn collect_body<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    match node(v) {
        Some(("List", l)) => list(get(l, "items")).iter().for_each(|i| collect_body(i, out)),
        Some(_) => out.push(v),
        None => {}
    }
}

/// The operators of an `ORDER BY` expression, outside subqueries.
fn sort_operators(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| sort_operators(i, out)),
        Value::Object(m) => match node(v) {
            Some(("SubLink", _)) => {}
            Some(("AExpr", b)) => {
                use pb::AExprKind as K;
                if matches!(K::try_from(int(b, "kind")), Ok(K::AexprOp | K::AexprOpAny | K::AexprOpAll)) {
                    let op = dotted(get(b, "name"));
                    if !op.is_empty() {
                        insert_sorted(out, op);
                    }
                }
                sort_operators(get(b, "lexpr"), out);
                sort_operators(get(b, "rexpr"), out);
            }
            _ => m.values().for_each(|x| sort_operators(x, out)),
        },
        _ => {}
    }
}

/// A `LIMIT n`/`FETCH FIRST n` that limits (not `LIMIT ALL`/`LIMIT NULL`).
fn limit_present(b: &Value) -> bool {
    match node(get(b, "limit_count")) {
        None => false,
        Some(("AConst", c)) => !flag(c, "isnull"),
        Some(_) => true,
    }
}

// ---- conditions --------------------------------------------------------------------------------

/// Lowers a condition node for the restriction rule.
fn lower(v: &Value) -> Option<Cond> {
    let (name, b) = node(v)?;
    Some(match name {
        "BoolExpr" => {
            let args = || list(get(b, "args")).iter().map(|a| lower(a).unwrap_or(Cond::Other)).collect();
            match pb::BoolExprType::try_from(int(b, "boolop")) {
                Ok(pb::BoolExprType::AndExpr) => Cond::And(args()),
                Ok(pb::BoolExprType::OrExpr) => Cond::Or(args()),
                _ => Cond::Other,
            }
        }
        "AExpr" => {
            use pb::AExprKind as K;
            let op = crate::last_part(&dotted(get(b, "name"))).to_owned();
            let l = || operand(get(b, "lexpr"));
            let r = || operand(get(b, "rexpr"));
            match K::try_from(int(b, "kind")) {
                Ok(K::AexprOp) => match op.as_str() {
                    "=" => Cond::Cmp("=", l(), r()),
                    "<" => Cond::Cmp("<", l(), r()),
                    "<=" => Cond::Cmp("<=", l(), r()),
                    ">" => Cond::Cmp(">", l(), r()),
                    ">=" => Cond::Cmp(">=", l(), r()),
                    _ => Cond::Other,
                },
                Ok(K::AexprIn) if op == "=" => {
                    let items = match node(get(b, "rexpr")) {
                        Some(("List", li)) => list(get(li, "items")).iter().map(operand).collect(),
                        _ => vec![r()],
                    };
                    Cond::In(l(), items)
                }
                Ok(K::AexprOpAny) if op == "=" => Cond::In(l(), vec![r()]),
                Ok(K::AexprBetween | K::AexprBetweenSym) => match node(get(b, "rexpr")) {
                    Some(("List", li)) => {
                        let items = list(get(li, "items"));
                        match items {
                            [lo, hi] => Cond::Between(l(), operand(lo), operand(hi)),
                            _ => Cond::Other,
                        }
                    }
                    _ => Cond::Other,
                },
                Ok(K::AexprLike) if op == "~~" => Cond::Like("like", l(), r()),
                Ok(K::AexprIlike) if op == "~~*" => Cond::Like("ilike", l(), r()),
                _ => Cond::Other,
            }
        }
        "SubLink" => {
            // `x IN (SELECT ...)` / `x = ANY (SELECT ...)`.
            let any = pb::SubLinkType::try_from(int(b, "sub_link_type")) == Ok(pb::SubLinkType::AnySublink);
            let op = dotted(get(b, "oper_name"));
            if any && (op.is_empty() || crate::last_part(&op) == "=") && get(b, "testexpr").is_object() {
                let mut sub = Operand::default();
                subquery_refs(get(b, "subselect"), &mut sub);
                Cond::In(operand(get(b, "testexpr")), vec![sub])
            } else {
                Cond::Other
            }
        }
        _ => Cond::Other,
    })
}

/// What the rule needs about an expression.
fn operand(v: &Value) -> Operand {
    let mut o = Operand::default();
    match node(v) {
        Some(("ColumnRef", c)) => o.plain = column_ref(c),
        Some(("ParamRef", _)) => o.param = true,
        Some(("AConst", c)) => {
            if let Some(("Sval", s)) = node(get(c, "val")) {
                o.string = get(s, "sval").as_str().map(str::to_owned);
            }
        }
        _ => {}
    }
    outer_refs(v, &mut o);
    o
}

/// Column references outside subqueries; subqueries go to `subquery_refs`.
fn outer_refs(v: &Value, o: &mut Operand) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| outer_refs(i, o)),
        Value::Object(m) => match node(v) {
            Some(("ColumnRef", c)) => {
                if let Some((q, _)) = column_ref(c) {
                    o.columns.push(q);
                }
            }
            Some(("SubLink", s)) => {
                outer_refs(get(s, "testexpr"), o);
                subquery_refs(get(s, "subselect"), o);
            }
            Some((_, b)) => outer_refs(b, o),
            None => m.values().for_each(|x| outer_refs(x, o)),
        },
        _ => {}
    }
}

/// Inside a subquery: qualified column references and tables read.
fn subquery_refs(v: &Value, o: &mut Operand) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| subquery_refs(i, o)),
        Value::Object(m) => match node(v) {
            Some(("ColumnRef", c)) => {
                if let Some((Some(q), _)) = column_ref(c) {
                    o.subquery_qualifiers.push(q);
                }
            }
            Some(("RangeVar", rv)) => o.subquery_tables.push(range_var_name(rv)),
            Some((_, b)) => subquery_refs(b, o),
            None if is_range_var(m) => o.subquery_tables.push(range_var_name(v)),
            None => m.values().for_each(|x| subquery_refs(x, o)),
        },
        _ => {}
    }
}
