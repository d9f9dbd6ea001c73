//! The guardrail's rules, judged on the statement sqlparser parsed (PostgreSQL dialect), never on the
//! SQL text: case, comments and quoting are settled by the parser before any rule looks.
//!
//! A statement is refused when it
//! 1. does not parse (fail-closed: PostgreSQL reads `DR/**/OP TABLE t` as `DR OP TABLE t`, a syntax
//!    error, and SQL we cannot read we cannot vouch for),
//! 2. is several statements in one query (`SELECT 1; DROP TABLE t`),
//! 3. is any `DROP ...`, a `TRUNCATE`, an `ALTER TABLE ... DROP ...`, or a `COPY ... PROGRAM` (a shell
//!    command on the server),
//! 4. is a `DELETE` or `UPDATE` without a `WHERE`, or whose `WHERE` is trivially true (it references
//!    no column outside subqueries, compares an expression with itself, or has such an `OR` branch),
//!    including when nested in a data-modifying CTE,
//! 5. reads a configured large table in a `SELECT` (or `COPY`) with no `WHERE` in a query with no
//!    `LIMIT`/`FETCH` (`LIMIT ALL` is no limit). Each query level is judged on its own: a subquery
//!    scanning a large table is refused even if the outer query has a `LIMIT`,
//! 6. reads or writes a configured tenant table without an equality on the tenant column (for that
//!    table: unqualified, or qualified by its alias or name) among the top-level `AND`ed conditions
//!    of its `WHERE` or of a join's `ON`, compared with something that is not a column (a literal, a
//!    parameter, `current_setting(...)`).
//!
//! Table names match case-insensitively (over-matching a quoted `"Events"` errs on the safe side); a
//! configured name with a schema (`public.events`) matches only that schema, one without matches any.

use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterTableOperation, BinaryOperator, CopySource, CopyTarget, CreateFunction, CreateFunctionBody,
    DollarQuotedString, Expr, FromTable, Ident, JoinConstraint, MergeAction, ObjectName, ObjectType, Query, Select,
    Set, SetExpr, Statement, TableFactor, TableWithJoins, UpdateTableFromKind, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use plugin_sql::TableName;
use plugin_sql::ast::{and_terms, collect_instances, join_constraint, name_parts, references_columns, relations};

fn ident_eq(a: &Ident, b: &str) -> bool {
    a.value.to_lowercase() == b
}

/// Default `allow`: the statement classes AI traffic may use besides reading and changing rows.
pub const DEFAULT_ALLOW: &str = "transaction,session,listen,notify";

/// Default `deny_functions`: built-in functions with side effects beyond the rows a statement reads
/// or writes (backend signalling, config reload and settings, large-object removal and file access,
/// file and program access, dblink).
pub const DEFAULT_DENY_FUNCTIONS: &str = "pg_terminate_backend,pg_cancel_backend,pg_reload_conf,\
pg_rotate_logfile,pg_promote,pg_switch_wal,pg_create_restore_point,set_config,lo_unlink,lo_import,lo_export,\
lo_put,lo_truncate,lo_from_bytea,pg_read_file,pg_read_binary_file,pg_stat_file,pg_ls_dir,pg_ls_logdir,\
pg_ls_waldir,pg_ls_tmpdir,pg_ls_archive_statusdir,dblink,dblink_exec,dblink_connect,dblink_connect_u,\
dblink_open,dblink_send_query";

/// The statement classes, by the names config `allow` uses.
pub const CLASSES: [&str; 17] = [
    "read",
    "write",
    "ddl",
    "dcl",
    "routine",
    "maintenance",
    "session_role",
    "session",
    "transaction",
    "copy_file",
    "copy_program",
    "listen",
    "notify",
    "call",
    "lock",
    "admin",
    "other",
];

/// What the rules look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub large_tables: Vec<TableName>,
    pub tenant_tables: Vec<TableName>,
    /// Lower-cased.
    pub tenant_column: String,
    /// Classes (names from [`CLASSES`]) allowed besides `read` and `write`.
    pub allow: Vec<String>,
    /// Functions refused, matched like table names (`dblink`, `pg_catalog.pg_read_file`).
    pub deny_functions: Vec<TableName>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::from_lookup(|_| None)
    }
}

impl Rules {
    /// From the comma-separated `large_tables` and `tenant_tables`, the `tenant_column` (default
    /// `tenant_id`), `allow` (default [`DEFAULT_ALLOW`]; unknown names are ignored by this
    /// constructor, see [`Rules::check_allow`]) and `deny_functions` (default
    /// [`DEFAULT_DENY_FUNCTIONS`]; empty disables) config keys.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Rules {
        let list = |k: &str| TableName::list(&get(k).unwrap_or_default());
        Rules {
            large_tables: list("large_tables"),
            tenant_tables: list("tenant_tables"),
            tenant_column: get("tenant_column")
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "tenant_id".to_owned()),
            allow: get("allow")
                .unwrap_or_else(|| DEFAULT_ALLOW.to_owned())
                .split(',')
                .map(|c| c.trim().to_lowercase())
                .filter(|c| !c.is_empty())
                .collect(),
            deny_functions: TableName::list(
                &get("deny_functions").unwrap_or_else(|| DEFAULT_DENY_FUNCTIONS.to_owned()),
            ),
        }
    }

    /// An error naming the first class in `allow` that is not one of [`CLASSES`].
    pub fn check_allow(&self) -> Result<(), String> {
        match self.allow.iter().find(|c| !CLASSES.contains(&c.as_str())) {
            None => Ok(()),
            Some(c) => Err(format!(
                "llm-guardrail: config key allow: unknown statement class {c:?} (known: {})",
                CLASSES.join(", ")
            )),
        }
    }

    fn allows(&self, class: &str) -> bool {
        matches!(class, "read" | "write") || self.allow.iter().any(|c| c == class)
    }

    fn large(&self, name: &ObjectName) -> Option<&TableName> {
        self.large_tables.iter().find(|t| t.matches(name))
    }

    fn tenant(&self, name: &ObjectName) -> Option<&TableName> {
        self.tenant_tables.iter().find(|t| t.matches(name))
    }
}

/// Judges one query (the whole text a client sent). `Err` carries the reason to refuse it.
pub fn judge(rules: &Rules, sql: &str) -> Result<(), String> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| format!("the statement does not parse as PostgreSQL ({e}); unreadable AI SQL is refused"))?;
    if statements.len() > 1 {
        return Err(format!("{} statements in one query; send one statement at a time", statements.len()));
    }
    let mut checker = Checker { rules };
    match statements.visit(&mut checker) {
        ControlFlow::Break(reason) => Err(reason),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct Checker<'a> {
    rules: &'a Rules,
}

impl Visitor for Checker<'_> {
    type Break = String;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<String> {
        let fail = |r: String| ControlFlow::Break(r);
        match statement {
            Statement::Truncate(t) => {
                let names: Vec<String> = t.table_names.iter().map(|n| n.name.to_string()).collect();
                return fail(format!("TRUNCATE {} is not allowed", names.join(", ")));
            }
            Statement::AlterTable(a) => {
                if let Some(op) = a.operations.iter().find(|op| is_destructive_alter(op)) {
                    return fail(format!("ALTER TABLE {} {op} drops data and is not allowed", a.name));
                }
            }
            Statement::Delete(d) => {
                let tables = match &d.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                let target = tables.first().map(|t| t.relation.to_string()).unwrap_or_default();
                let names: Vec<ObjectName> = tables.iter().flat_map(relations).collect();
                if d.selection.as_ref().is_none_or(|w| is_trivial_for(w, &names)) {
                    return fail(format!("DELETE FROM {target} without a WHERE that restricts rows is not allowed"));
                }
                let mut scope: Vec<&TableWithJoins> = tables.iter().collect();
                scope.extend(d.using.iter().flatten());
                self.tenant_check(&scope, d.selection.as_ref())?;
            }
            Statement::Update(u) => {
                if u.selection.as_ref().is_none_or(|w| is_trivial_for(w, &relations(&u.table))) {
                    return fail(format!(
                        "UPDATE {} without a WHERE that restricts rows is not allowed",
                        u.table.relation
                    ));
                }
                let mut scope = vec![&u.table];
                if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) = &u.from {
                    scope.extend(f.iter());
                }
                self.tenant_check(&scope, u.selection.as_ref())?;
            }
            Statement::Copy { target: CopyTarget::Program { .. }, .. } => {
                return fail("COPY ... PROGRAM runs a shell command on the database server and is not allowed".into());
            }
            Statement::Copy { source: CopySource::Table { table_name, .. }, to: true, .. } => {
                if let Some(t) = self.rules.large(table_name) {
                    return fail(format!("COPY of the whole large table {t} is not allowed"));
                }
                if let Some(t) = self.rules.tenant(table_name) {
                    return fail(format!("COPY of tenant table {t} has no {} predicate", self.rules.tenant_column));
                }
            }
            Statement::Merge(m) => {
                let changes_rows = m
                    .clauses
                    .iter()
                    .any(|c| matches!(c.action, MergeAction::Update { .. } | MergeAction::Delete { .. }));
                if changes_rows && is_trivial_for(&m.on, &merge_target(&m.table)) {
                    return fail(format!(
                        "MERGE INTO {} without an ON that restricts rows is not allowed (restriction rule: no ANDed condition compares a column of the target with a value)",
                        m.table
                    ));
                }
            }
            Statement::Query(_) | Statement::Insert(_) => {}
            other => {
                // Every DROP variant (TABLE, SCHEMA, DATABASE, INDEX, FUNCTION, ...). The statement's
                // canonical rendering starts with its keywords, whatever the client wrote.
                let text = other.to_string();
                if text.starts_with("DROP ") {
                    let head: String = text.chars().take(120).collect();
                    return fail(format!("{head} is not allowed"));
                }
            }
        }
        let class = class_of(statement);
        if !self.rules.allows(class) {
            let text = statement.to_string();
            let head: String = text.chars().take(120).collect();
            return fail(format!(
                "{head} is not allowed (statement class {class}: AI traffic may read and change rows; config allow lists the other classes an operator permits)"
            ));
        }
        if let Statement::CreateFunction(f) = statement {
            self.check_routine_body(f)?;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Function(f) => self.check_function(&f.name),
            _ => ControlFlow::Continue(()),
        }
    }

    /// Table functions (`FROM dblink(...) AS t(a int)`) are function calls too.
    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<String> {
        match tf {
            TableFactor::Table { name, args: Some(_), .. } | TableFactor::Function { name, .. } => {
                self.check_function(name)
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        self.check_set_expr(&query.body, plugin_sql::ast::has_limit(query))
    }
}

impl Checker<'_> {
    fn check_function(&self, name: &ObjectName) -> ControlFlow<String> {
        match self.rules.deny_functions.iter().find(|d| d.matches(name)) {
            Some(d) => ControlFlow::Break(format!(
                "function {name} is not allowed for AI traffic (config deny_functions lists {d})"
            )),
            None => ControlFlow::Continue(()),
        }
    }

    /// A routine is allowed (class `routine`): an SQL body is judged like a top-level statement;
    /// any other language is refused, the guardrail cannot see what it runs.
    fn check_routine_body(&self, f: &CreateFunction) -> ControlFlow<String> {
        let language = f.language.as_ref().map(|l| l.value.to_lowercase()).unwrap_or_else(|| "sql".to_owned());
        if language != "sql" {
            return ControlFlow::Break(format!(
                "CREATE FUNCTION {} in language {language} is not allowed for AI traffic (only SQL bodies can be judged)",
                f.name
            ));
        }
        let body = match &f.function_body {
            Some(CreateFunctionBody::AsBeforeOptions { body, .. } | CreateFunctionBody::AsAfterOptions(body)) => {
                match body {
                    Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s)
                        | Value::DollarQuotedString(DollarQuotedString { value: s, .. }) => s.clone(),
                        other => other.to_string(),
                    },
                    other => other.to_string(),
                }
            }
            // `BEGIN ATOMIC ... END` and `RETURN expr` are parsed already: the visitor walks them
            // like top-level statements and expressions.
            Some(_) | None => return ControlFlow::Continue(()),
        };
        match judge(self.rules, &body) {
            Ok(()) => ControlFlow::Continue(()),
            Err(why) => ControlFlow::Break(format!("the body of CREATE FUNCTION {}: {why}", f.name)),
        }
    }

    fn check_set_expr(&self, body: &SetExpr, bounded: bool) -> ControlFlow<String> {
        match body {
            SetExpr::Select(s) => self.check_select(s, bounded),
            SetExpr::SetOperation { left, right, .. } => {
                self.check_set_expr(left, bounded)?;
                self.check_set_expr(right, bounded)
            }
            // A parenthesised query has its own LIMIT and is visited as a query of its own.
            _ => ControlFlow::Continue(()),
        }
    }

    fn check_select(&self, select: &Select, bounded: bool) -> ControlFlow<String> {
        if !bounded && select.selection.as_ref().is_none_or(is_trivial) {
            for twj in &select.from {
                for name in relations(twj) {
                    if let Some(t) = self.rules.large(&name) {
                        return ControlFlow::Break(format!(
                            "unbounded SELECT on large table {t}: add a WHERE or a LIMIT"
                        ));
                    }
                }
            }
        }
        let scope: Vec<&TableWithJoins> = select.from.iter().collect();
        self.tenant_check(&scope, select.selection.as_ref())
    }

    /// Every tenant table in `scope` needs its tenant predicate among the `AND`ed conditions of
    /// `selection` and of the joins' `ON`.
    fn tenant_check(&self, scope: &[&TableWithJoins], selection: Option<&Expr>) -> ControlFlow<String> {
        if self.rules.tenant_tables.is_empty() {
            return ControlFlow::Continue(());
        }
        let mut conjuncts = Vec::new();
        if let Some(w) = selection {
            and_terms(w, &mut conjuncts);
        }
        let mut instances = Vec::new();
        for twj in scope {
            collect_instances(&twj.relation, &mut instances);
            for j in &twj.joins {
                collect_instances(&j.relation, &mut instances);
                if let Some(JoinConstraint::On(on)) = join_constraint(&j.join_operator) {
                    and_terms(on, &mut conjuncts);
                }
            }
        }
        let col = &self.rules.tenant_column;
        for (name, alias) in instances {
            let Some(t) = self.rules.tenant(&name) else { continue };
            let qualifiers: Vec<String> = match alias {
                Some(a) => vec![a.value.to_lowercase()],
                None => name_parts(&name).last().cloned().into_iter().collect(),
            };
            let ok = conjuncts.iter().any(|c| is_tenant_equality(c, col, &qualifiers));
            if !ok {
                return ControlFlow::Break(format!(
                    "tenant table {t} is used without a {col} = <value> condition (ANDed in WHERE or ON)"
                ));
            }
        }
        ControlFlow::Continue(())
    }
}

fn is_destructive_alter(op: &AlterTableOperation) -> bool {
    matches!(
        op,
        AlterTableOperation::DropColumn { .. }
            | AlterTableOperation::DropConstraint { .. }
            | AlterTableOperation::DropPartitions { .. }
            | AlterTableOperation::DropPrimaryKey { .. }
            | AlterTableOperation::DropForeignKey { .. }
    )
}

/// `col = value` or `value = col`, `col` naming the tenant column (unqualified or qualified by one of
/// `qualifiers`) and `value` referencing no column.
fn is_tenant_equality(e: &Expr, col: &str, qualifiers: &[String]) -> bool {
    let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = e else { return false };
    let names_col = |x: &Expr| match x {
        Expr::Identifier(i) => ident_eq(i, col),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            ident_eq(&parts[parts.len() - 1], col) && qualifiers.iter().any(|q| ident_eq(&parts[parts.len() - 2], q))
        }
        Expr::Nested(inner) => matches!(&**inner, Expr::Identifier(i) if ident_eq(i, col)),
        _ => false,
    };
    (names_col(left) && !references_columns(right)) || (names_col(right) && !references_columns(left))
}

/// The statement class config `allow` names (see [`CLASSES`]).
pub fn class_of(statement: &Statement) -> &'static str {
    use Statement as S;
    match statement {
        S::Query(_) | S::Explain { .. } | S::ExplainTable { .. } | S::Prepare { .. } | S::Fetch { .. } => "read",
        S::Declare { .. } => "read",
        S::ShowVariable { .. } | S::ShowVariables { .. } | S::ShowTables { .. } | S::ShowColumns { .. } => "read",
        S::Insert(_) | S::Update(_) | S::Delete(_) | S::Merge(_) => "write",
        S::Copy { target: CopyTarget::Program { .. }, .. } => "copy_program",
        S::Copy { target: CopyTarget::File { .. }, .. } => "copy_file",
        S::Copy { to: true, .. } => "read",
        S::Copy { .. } => "write",
        S::StartTransaction { .. }
        | S::Commit { .. }
        | S::Rollback { .. }
        | S::Savepoint { .. }
        | S::ReleaseSavepoint { .. } => "transaction",
        S::Set(Set::SetRole { .. } | Set::SetSessionAuthorization(_)) => "session_role",
        S::Set(_) | S::Discard { .. } | S::Deallocate { .. } | S::Close { .. } => "session",
        S::Grant(_) | S::Revoke(_) | S::Deny(_) | S::CreateRole(_) | S::AlterRole { .. } => "dcl",
        S::CreatePolicy(_) | S::AlterPolicy(_) | S::DropPolicy(_) => "dcl",
        S::Drop { object_type: ObjectType::Role | ObjectType::User, .. } => "dcl",
        S::CreateFunction(_) | S::CreateProcedure { .. } | S::CreateTrigger(_) | S::CreateMacro { .. } => "routine",
        S::Analyze(_) | S::OptimizeTable { .. } | S::Vacuum(_) => "maintenance",
        S::Call(_) => "call",
        S::Lock(_) | S::LockTables { .. } => "lock",
        S::LISTEN { .. } | S::UNLISTEN { .. } => "listen",
        S::NOTIFY { .. } => "notify",
        S::Load { .. } | S::Install { .. } | S::Kill { .. } => "admin",
        S::Execute { .. } => "other",
        other
            if other.to_string().starts_with("CREATE ")
                || other.to_string().starts_with("ALTER ")
                || other.to_string().starts_with("DROP ")
                || other.to_string().starts_with("COMMENT ")
                || matches!(other, S::Truncate(_)) =>
        {
            "ddl"
        }
        _ => "other",
    }
}

/// `MERGE INTO t [AS a]`: the names the target is known by.
fn merge_target(table: &TableFactor) -> Vec<ObjectName> {
    let mut v = Vec::new();
    collect_instances(table, &mut v);
    v.into_iter().map(|(n, _)| n).collect()
}

/// [`is_trivial`], and also true for conditions that restrict none of `targets`' rows: `IS NOT
/// NULL` and `IN`/`EXISTS` over a subquery reading a target (`id IN (SELECT id FROM t)`).
pub fn is_trivial_for(e: &Expr, targets: &[ObjectName]) -> bool {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
            is_trivial_for(left, targets) || is_trivial_for(right, targets)
        }
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            is_trivial_for(left, targets) && is_trivial_for(right, targets)
        }
        Expr::Nested(inner) => is_trivial_for(inner, targets),
        Expr::IsNotNull(_) => true,
        Expr::InSubquery { subquery, negated: false, .. } | Expr::Exists { subquery, negated: false } => {
            reads_any(subquery, targets) || is_trivial(e)
        }
        other => is_trivial(other),
    }
}

/// Whether `q` reads a table named like one of `targets` (last name part, case-insensitively).
fn reads_any(q: &Query, targets: &[ObjectName]) -> bool {
    let last: Vec<String> = targets.iter().filter_map(|t| name_parts(t).last().cloned()).collect();
    let mut found = false;
    let _ = q.visit(&mut RelationVisitor(|n: &ObjectName| {
        if name_parts(n).last().is_some_and(|l| last.contains(l)) {
            found = true;
        }
    }));
    found
}

struct RelationVisitor<F>(F);

impl<F: FnMut(&ObjectName)> Visitor for RelationVisitor<F> {
    type Break = ();
    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        (self.0)(relation);
        ControlFlow::Continue(())
    }
}

/// Whether a condition is trivially true or restricts nothing: no column reference outside subqueries,
/// `x = x`, or an `OR` with such a branch.
pub fn is_trivial(e: &Expr) -> bool {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::Or, right } => is_trivial(left) || is_trivial(right),
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => is_trivial(left) && is_trivial(right),
        Expr::Nested(inner) => is_trivial(inner),
        Expr::BinaryOp { left, op: BinaryOperator::Eq | BinaryOperator::GtEq | BinaryOperator::LtEq, right }
            if left.to_string() == right.to_string() =>
        {
            true
        }
        other => !references_columns(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::from_lookup(|k| match k {
            "large_tables" => Some("events, page_views, public.audit_log".into()),
            "tenant_tables" => Some("orders,invoices".into()),
            _ => None,
        })
    }

    #[track_caller]
    fn blocked(sql: &str, needle: &str) {
        match judge(&rules(), sql) {
            Err(r) => assert!(r.contains(needle), "{sql}: reason {r:?} lacks {needle:?}"),
            Ok(()) => panic!("{sql}: expected a block mentioning {needle:?}"),
        }
    }

    #[track_caller]
    fn allowed(sql: &str) {
        assert_eq!(judge(&rules(), sql), Ok(()), "{sql}");
    }

    #[test]
    fn drop_and_truncate_are_refused_in_every_spelling() {
        for sql in [
            "DROP TABLE users",
            "drop table users",
            "DrOp TaBlE users",
            "DROP TABLE \"Users\"",
            "DROP/**/TABLE users",
            "DROP -- comment\n TABLE users",
            "DROP TABLE IF EXISTS public.users CASCADE",
            "DROP SCHEMA app CASCADE",
            "DROP DATABASE app",
            "DROP INDEX idx",
            "DROP VIEW v",
            "DROP FUNCTION f(int)",
        ] {
            blocked(sql, "DROP ");
        }
        blocked("TRUNCATE users", "TRUNCATE users");
        blocked("truncate table events restart identity", "TRUNCATE");
        blocked("ALTER TABLE users DROP COLUMN ssn", "drops data");
        blocked("COPY t FROM PROGRAM 'rm -rf /'", "PROGRAM");
        blocked("copy (select 1) to program 'curl x'", "PROGRAM");
        blocked("EXPLAIN ANALYZE DELETE FROM t", "DELETE FROM t without");
        blocked("PREPARE p AS DELETE FROM t", "DELETE FROM t without");
        blocked("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", "does not parse");
        // Default deny by class: DDL of any kind, also when it drops nothing.
        blocked("ALTER TABLE users ADD COLUMN nickname text", "statement class ddl");
    }

    #[test]
    fn a_comment_inside_a_keyword_does_not_parse_and_is_refused() {
        blocked("DR/**/OP TABLE t", "does not parse");
        blocked("SELEC * FROM t", "does not parse");
    }

    #[test]
    fn several_statements_are_refused() {
        blocked("SELECT 1; DROP TABLE t", "2 statements");
        blocked("SELECT 1;SELECT 2", "2 statements");
        blocked("SELECT 1; SELECT 2; SELECT 3", "3 statements");
        allowed("SELECT 1;");
    }

    #[test]
    fn delete_and_update_need_a_real_where() {
        blocked("DELETE FROM t", "DELETE FROM t without a WHERE");
        blocked("DELETE FROM t -- WHERE x = 1", "without a WHERE");
        blocked("DELETE FROM t /* WHERE x = 1 */", "without a WHERE");
        blocked("delete from T where 1 = 1", "without a WHERE");
        blocked("DELETE FROM t WHERE true", "without a WHERE");
        blocked("DELETE FROM t WHERE x = 5 OR 1 = 1", "without a WHERE");
        blocked("DELETE FROM t WHERE id = id", "without a WHERE");
        blocked("DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = 1)", "without a WHERE");
        blocked("UPDATE t SET a = 1", "UPDATE t without a WHERE");
        blocked("update t set a = 1 where 'a' = 'a'", "without a WHERE");
        blocked("WITH gone AS (DELETE FROM t RETURNING *) SELECT count(*) FROM gone", "DELETE FROM t without");
        allowed("DELETE FROM t WHERE id = 5");
        allowed("DELETE FROM t WHERE created_at < now() - interval '30 days'");
        allowed("UPDATE t SET a = 1 WHERE id = 5 AND b IS NULL");
    }

    #[test]
    fn unbounded_selects_on_large_tables_are_refused() {
        blocked("SELECT * FROM events", "unbounded SELECT on large table events");
        blocked("select * from EVENTS", "events");
        blocked("SELECT * FROM \"events\"", "events");
        blocked("SELECT * FROM public.page_views", "page_views");
        blocked("SELECT user_id, count(*) FROM events GROUP BY user_id", "events");
        blocked("SELECT * FROM (SELECT * FROM events) e LIMIT 10", "events");
        blocked("SELECT * FROM events LIMIT ALL", "events");
        blocked("SELECT * FROM events WHERE true", "events");
        blocked("SELECT * FROM users u JOIN events e ON e.user_id = u.id", "events");
        blocked("SELECT id FROM users UNION SELECT id FROM events", "events");
        blocked("SELECT * FROM public.audit_log", "public.audit_log");
        blocked("COPY events TO STDOUT", "COPY of the whole large table events");
        allowed("SELECT * FROM app.audit_log"); // configured with schema public only
        allowed("SELECT * FROM events LIMIT 100");
        allowed("SELECT * FROM events FETCH FIRST 10 ROWS ONLY");
        allowed("SELECT * FROM events WHERE user_id = 42");
        allowed("SELECT * FROM users");
        blocked("SELECT * FROM ONLY events", "events");
        allowed("SELECT count(*) FROM events WHERE created_at > now() - interval '1 hour'");
    }

    #[test]
    fn tenant_tables_need_an_anded_tenant_equality() {
        blocked("SELECT id FROM orders", "tenant table orders");
        blocked("SELECT id FROM orders WHERE status = 'open'", "tenant_id = <value>");
        blocked("SELECT id FROM orders WHERE tenant_id = 'a' OR true", "orders");
        blocked("SELECT id FROM orders WHERE tenant_id = 'a' OR id = 1", "orders");
        blocked("SELECT id FROM orders WHERE tenant_id = tenant_id", "orders");
        blocked("SELECT id FROM orders o WHERE o.tenant_id = o.owner_tenant", "orders");
        blocked("SELECT id FROM orders WHERE tenant_id <> 'a'", "orders");
        blocked("SELECT id FROM orders o WHERE x.tenant_id = 'a'", "orders");
        blocked("SELECT o.id FROM orders o JOIN invoices i ON i.order_id = o.id WHERE o.tenant_id = 'a'", "invoices");
        blocked(
            "SELECT * FROM orders WHERE id IN (SELECT order_id FROM invoices WHERE paid = false) AND tenant_id = 'a'",
            "invoices",
        );
        blocked("UPDATE invoices SET paid = true WHERE id = 10", "invoices");
        blocked("DELETE FROM orders WHERE id = 3", "orders");
        blocked("SELECT id FROM ORDERS WHERE status = 'x'", "orders");
        blocked("SELECT id FROM ONLY orders WHERE status = 'x'", "orders");
        blocked("UPDATE ONLY invoices SET paid = true WHERE id = 1", "invoices");
        blocked("DELETE FROM ONLY orders WHERE id = 1", "orders");
        allowed("SELECT id FROM ONLY orders WHERE tenant_id = 'a'");
        allowed("SELECT id FROM orders WHERE tenant_id = 'acme' AND status = 'open'");
        allowed("SELECT id FROM orders WHERE (status = 'open' AND TENANT_ID = $1)");
        allowed("SELECT o.id FROM orders o WHERE o.tenant_id = current_setting('app.tenant')");
        allowed("SELECT orders.id FROM orders WHERE 'acme' = orders.tenant_id");
        allowed(
            "SELECT o.id FROM orders o JOIN invoices i ON i.order_id = o.id AND i.tenant_id = 'a' WHERE o.tenant_id = 'a'",
        );
        allowed("UPDATE invoices SET paid = true WHERE tenant_id = 'a' AND id = 10");
        allowed("DELETE FROM orders WHERE tenant_id = 'a' AND id = 3");
        allowed("INSERT INTO orders (tenant_id, total) VALUES ('a', 1)");
    }

    #[test]
    fn harmless_statements_pass() {
        for sql in
            ["SELECT 1", "BEGIN", "COMMIT", "SET search_path TO app", "SELECT now()", "EXPLAIN SELECT * FROM users", ""]
        {
            allowed(sql);
        }
    }

    fn allowing(classes: &str) -> Rules {
        let mut r = rules();
        r.allow = classes.split(',').map(str::to_owned).collect();
        r
    }

    #[test]
    fn the_issue_14_shapes_are_refused_by_default() {
        // Routine bodies: refused as a class; with routines allowed, an SQL body is judged.
        blocked("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DELETE FROM orders $$", "statement class routine");
        let r = allowing("routine");
        let body = judge(&r, "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DELETE FROM orders $$").unwrap_err();
        assert!(body.contains("the body of CREATE FUNCTION f: DELETE FROM orders without a WHERE"), "{body}");
        let quoted = judge(&r, "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DROP TABLE t'").unwrap_err();
        assert!(quoted.contains("the body of CREATE FUNCTION f: DROP TABLE t"), "{quoted}");
        let plpgsql = judge(&r, "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$");
        assert!(plpgsql.unwrap_err().contains("in language plpgsql is not allowed"));
        assert_eq!(
            judge(&r, "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$"),
            Ok(()),
            "a harmless SQL body passes when routines are allowed"
        );
        // MERGE is judged by the restriction rule.
        blocked("MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE", "MERGE INTO orders");
        assert_eq!(
            judge(
                &rules(),
                "MERGE INTO t USING s ON t.id = 5 WHEN MATCHED THEN UPDATE SET a = 1 WHEN NOT MATCHED THEN INSERT (id) VALUES (5)"
            ),
            Ok(())
        );
        // WHERE clauses that restrict nothing.
        blocked("DELETE FROM orders WHERE id IS NOT NULL", "without a WHERE that restricts rows");
        blocked("DELETE FROM orders WHERE id IN (SELECT id FROM orders)", "without a WHERE that restricts rows");
        blocked("UPDATE t SET a = 1 WHERE id IS NOT NULL OR id = 5", "without a WHERE");
        allowed("DELETE FROM t WHERE id IN (SELECT t_id FROM stale)");
        // DDL that is not a DROP, permissions and administration.
        blocked("ALTER TABLE users ALTER COLUMN ssn TYPE int USING 0", "statement class ddl");
        blocked("ALTER TABLE users RENAME TO users_old", "statement class ddl");
        blocked("REVOKE ALL ON users FROM public", "statement class dcl");
        blocked("GRANT SELECT ON users TO bob", "statement class dcl");
        blocked("SET ROLE admin", "statement class session_role");
        blocked("SET SESSION AUTHORIZATION admin", "statement class session_role");
        blocked("COPY t TO '/tmp/x'", "statement class copy_file");
        blocked("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "function pg_terminate_backend");
        blocked("VACUUM FULL events", "statement class maintenance");
        allowed("LISTEN jobs");
        allowed("NOTIFY jobs");
        assert!(judge(&allowing("transaction"), "NOTIFY jobs").is_err(), "LISTEN/NOTIFY refused when configured");
        assert_eq!(judge(&allowing("ddl"), "ALTER TABLE users ADD COLUMN nickname text"), Ok(()));
    }

    #[test]
    fn dangerous_functions_match_on_the_resolved_name_whatever_the_spelling() {
        for sql in [
            "SELECT pg_terminate_backend(42)",
            "SELECT PG_TERMINATE_BACKEND(42)",
            "SELECT \"pg_terminate_backend\"(42)",
            "SELECT pg_catalog.pg_terminate_backend(42)",
            "SELECT x FROM t WHERE pg_reload_conf()",
            "SELECT lo_unlink(1)",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)",
            "SELECT set_config('role', 'admin', false)",
            "INSERT INTO t SELECT pg_cancel_backend(1)",
        ] {
            blocked(sql, "is not allowed for AI traffic (config deny_functions");
        }
        allowed("SELECT lower(name), now(), count(*) FROM t WHERE id = 1");
        let mut r = rules();
        r.deny_functions.clear();
        assert_eq!(judge(&r, "SELECT pg_terminate_backend(42)"), Ok(()), "an empty deny list disables the rule");
    }

    #[test]
    fn unknown_allow_classes_are_a_config_error() {
        let r = Rules::from_lookup(|k| (k == "allow").then(|| "ddl, dml".to_owned()));
        let e = r.check_allow().unwrap_err();
        assert!(e.contains("config key allow") && e.contains("\"dml\"") && e.contains("session_role"), "{e}");
        assert_eq!(Rules::default().check_allow(), Ok(()));
    }
}
