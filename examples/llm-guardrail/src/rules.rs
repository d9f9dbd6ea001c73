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
    AlterTableOperation, BinaryOperator, CopySource, CopyTarget, Expr, FromTable, Ident, JoinConstraint, ObjectName,
    Query, Select, SetExpr, Statement, TableWithJoins, UpdateTableFromKind, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use plugin_sql::TableName;
use plugin_sql::ast::{and_terms, collect_instances, join_constraint, name_parts, references_columns, relations};

fn ident_eq(a: &Ident, b: &str) -> bool {
    a.value.to_lowercase() == b
}

/// What the rules look for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    pub large_tables: Vec<TableName>,
    pub tenant_tables: Vec<TableName>,
    /// Lower-cased.
    pub tenant_column: String,
}

impl Rules {
    /// From the comma-separated `large_tables` and `tenant_tables` and the `tenant_column` (default
    /// `tenant_id`) config keys.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Rules {
        let list = |k: &str| TableName::list(&get(k).unwrap_or_default());
        Rules {
            large_tables: list("large_tables"),
            tenant_tables: list("tenant_tables"),
            tenant_column: get("tenant_column")
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "tenant_id".to_owned()),
        }
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
                if d.selection.as_ref().is_none_or(is_trivial) {
                    return fail(format!("DELETE FROM {target} without a WHERE that restricts rows is not allowed"));
                }
                let mut scope: Vec<&TableWithJoins> = tables.iter().collect();
                scope.extend(d.using.iter().flatten());
                self.tenant_check(&scope, d.selection.as_ref())?;
            }
            Statement::Update(u) => {
                if u.selection.as_ref().is_none_or(is_trivial) {
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
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        self.check_set_expr(&query.body, plugin_sql::ast::has_limit(query))
    }
}

impl Checker<'_> {
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
        allowed("ALTER TABLE users ADD COLUMN nickname text");
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
        for sql in [
            "SELECT 1",
            "BEGIN",
            "COMMIT",
            "SET search_path TO app",
            "SELECT now()",
            "EXPLAIN SELECT * FROM users",
            "GRANT SELECT ON users TO bob",
            "",
        ] {
            allowed(sql);
        }
    }
}
