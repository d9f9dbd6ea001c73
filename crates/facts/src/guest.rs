//! Guest-side extraction with sqlparser (PostgreSQL dialect), for plugins whose host sends no facts
//! (a HeliosProxy build). Builds for wasm32. It aims at the facts [`crate::pg`] gives; the crate's
//! README lists where the two disagree (`tests/all/differential.rs` finds them).

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    AccessExpr, BinaryOperator, CopySource, CopyTarget, CreateFunctionBody, Expr, FromTable, FunctionArg,
    FunctionArgExpr, FunctionArguments, Grant, GrantObjects, Ident, JoinConstraint, JoinOperator, LimitClause,
    MergeAction, ObjectName, ObjectNamePart, ObjectType, Query, Revoke, Select, SelectItem,
    SelectItemQualifiedWildcardKind, Set, SetExpr, Statement as Ast, TableAlias, TableFactor, TableWithJoins,
    UnaryOperator, UpdateTableFromKind, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use crate::restrict::{Cond, Operand, Scope, top_level};
use crate::{
    ColumnRef, FACTS_VERSION, MAX_ROUTINE_DEPTH, QueryLevel, Routine, Statement, StatementClass, StatementFacts,
    insert_sorted,
};

/// The `source` of facts from this extractor.
pub const SOURCE: &str = "sqlparser";

/// The facts of `sql`. SQL sqlparser cannot parse gives facts with `parse_error` set.
pub fn extract(sql: &str) -> StatementFacts {
    extract_at(sql, 0)
}

fn extract_at(sql: &str, depth: u32) -> StatementFacts {
    let mut facts = StatementFacts { version: FACTS_VERSION, source: SOURCE.to_owned(), ..StatementFacts::default() };
    let (comments, normalized) = scan(sql);
    facts.comments = comments;
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql);
    let stmts = match parsed {
        Ok(s) => s,
        Err(e) => {
            facts.parse_error = Some(e.to_string());
            return facts;
        }
    };
    fill_statements(&mut facts, &stmts, depth);
    facts.fingerprint = fingerprint(&normalized);
    facts.normalized = normalized;
    facts
}

fn fill_statements(facts: &mut StatementFacts, stmts: &[Ast], depth: u32) {
    let mut read_only = !stmts.is_empty();
    for s in stmts {
        let mut w = Walker { depth, ..Walker::default() };
        let st = w.statement(s);
        read_only &= st.class == StatementClass::Read && !w.locks_rows && !w.writes;
        facts.statements.push(st);
    }
    facts.statement_count = facts.statements.len();
    facts.is_read_only = read_only;
}

/// The comments and a normalised text (literals → `$n`, comments dropped, whitespace collapsed).
fn scan(sql: &str) -> (Vec<String>, String) {
    let dialect = PostgreSqlDialect {};
    let mut tokens = Vec::new();
    // Keeps the tokens read before an error (an unterminated string): comments before it count.
    let ok = Tokenizer::new(&dialect, sql).tokenize_with_location_into_buf(&mut tokens).is_ok();
    let mut comments = Vec::new();
    let mut out = String::new();
    let mut n = 0;
    let mut space = false;
    for t in &tokens {
        match &t.token {
            Token::Whitespace(Whitespace::SingleLineComment { comment, .. }) => {
                comments.push(comment.trim().to_owned());
                space = true;
            }
            Token::Whitespace(Whitespace::MultiLineComment(c)) => {
                comments.push(c.trim().to_owned());
                space = true;
            }
            Token::Whitespace(_) => space = true,
            tok => {
                if space && !out.is_empty() {
                    out.push(' ');
                }
                space = false;
                match tok {
                    Token::Number(..)
                    | Token::SingleQuotedString(_)
                    | Token::DollarQuotedString(_)
                    | Token::EscapedStringLiteral(_)
                    | Token::NationalStringLiteral(_)
                    | Token::HexStringLiteral(_)
                    | Token::UnicodeStringLiteral(_)
                    | Token::SingleQuotedByteStringLiteral(_) => {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    }
                    other => out.push_str(&other.to_string()),
                }
            }
        }
    }
    (comments, if ok { out } else { String::new() })
}

/// FNV-1a over the normalised text (lower-cased), hex. Not libpg_query's fingerprint.
fn fingerprint(normalized: &str) -> String {
    if normalized.is_empty() {
        return String::new();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in normalized.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

// ---- names -------------------------------------------------------------------------------------

/// PostgreSQL's folding: unquoted identifiers are lower-cased, quoted ones kept.
fn fold(i: &Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
}

fn object_name(n: &ObjectName) -> String {
    n.0.iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => fold(i),
            other => other.to_string().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// sqlparser 0.63 reads `FROM ONLY t` as the table `ONLY` aliased `t`; PostgreSQL reads `t`.
fn only_table(name: &ObjectName, alias: Option<&TableAlias>) -> Option<String> {
    let a = alias?;
    let is_only = matches!(name.0.as_slice(), [ObjectNamePart::Identifier(i)] if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("only"));
    (is_only && !a.explicit && a.columns.is_empty()).then(|| fold(&a.name))
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    use JoinOperator::*;
    match op {
        Join(c) | Inner(c) | Left(c) | LeftOuter(c) | Right(c) | RightOuter(c) | FullOuter(c) | CrossJoin(c)
        | Semi(c) | LeftSemi(c) | RightSemi(c) | Anti(c) | LeftAnti(c) | RightAnti(c) | StraightJoin(c) => Some(c),
        _ => None,
    }
}

/// (name, alias) of each named table of a FROM item, and the `ON` conditions of its joins.
fn from_item(twj: &TableWithJoins, scope: &mut Scope, conds: &mut Vec<Cond>) {
    factor(&twj.relation, scope, conds);
    for j in &twj.joins {
        factor(&j.relation, scope, conds);
        if let Some(JoinConstraint::On(on)) = join_constraint(&j.join_operator) {
            top_level(lower(on), conds);
        }
    }
}

fn factor(tf: &TableFactor, scope: &mut Scope, conds: &mut Vec<Cond>) {
    match tf {
        TableFactor::Table { name, alias, args: None, .. } => match only_table(name, alias.as_ref()) {
            Some(real) => scope.tables.push((real, None)),
            None => scope.tables.push((object_name(name), alias.as_ref().map(|a| fold(&a.name)))),
        },
        TableFactor::NestedJoin { table_with_joins, .. } => from_item(table_with_joins, scope, conds),
        _ => {}
    }
}

fn limit_present(q: &Query) -> bool {
    q.fetch.is_some()
        || match &q.limit_clause {
            Some(LimitClause::LimitOffset { limit: Some(l), .. }) => {
                !matches!(l, Expr::Value(v) if v.value == Value::Null)
            }
            Some(LimitClause::OffsetCommaLimit { .. }) => true,
            _ => false,
        }
}

/// The SELECTs of a query body through set operations (not through parenthesised queries, which
/// have their own LIMIT and are visited as queries).
fn selects(body: &SetExpr, out: &mut Vec<*const Select>) {
    match body {
        SetExpr::Select(s) => out.push(&**s as *const Select),
        SetExpr::SetOperation { left, right, .. } => {
            selects(left, out);
            selects(right, out);
        }
        _ => {}
    }
}

// ---- the walk ----------------------------------------------------------------------------------

#[derive(Default)]
struct Walker {
    st: Statement,
    depth: u32,
    /// Nesting of statements (a data-modifying CTE, EXPLAIN's statement).
    stmt_depth: usize,
    ctes: Vec<String>,
    /// SELECTs a LIMIT bounds.
    bounded: HashSet<*const Select>,
    /// SELECTs an ORDER BY orders, with the ORDER BY's operators.
    ordered: HashMap<*const Select, Vec<String>>,
    /// Open levels: (insertion index, level, scope, conditions).
    open: Vec<(usize, QueryLevel, Scope, Vec<Cond>)>,
    /// Tables recorded by levels (the rest of the relations get the statement's default access).
    level_tables: HashSet<String>,
    relations: Vec<String>,
    /// Scopes of levels already closed, by query depth: a query's ORDER BY is visited after its
    /// SELECT and still resolves that SELECT's aliases.
    closed: Vec<(usize, Scope)>,
    query_depth: usize,
    /// Functions called in FROM (`FROM dblink(...)`): sqlparser reports their names as relations.
    table_functions: HashSet<String>,
    /// Identifiers that are field names (`(u).ssn`), not column references.
    fields: HashSet<*const Expr>,
    writes: bool,
    locks_rows: bool,
    select_into: bool,
    class_default_ddl: bool,
}

impl Walker {
    fn statement(&mut self, s: &Ast) -> Statement {
        let (kind, class) = classify(s);
        self.st.kind = kind;
        self.st.class = class;
        self.class_default_ddl = !matches!(class, StatementClass::Read | StatementClass::Write);
        // A routine's body is its own facts (`routine.body`), not the defining statement's.
        if !matches!(s, Ast::CreateFunction(_) | Ast::CreateProcedure { .. }) {
            let _ = s.visit(self);
        }
        match s {
            Ast::Query(_) if self.select_into => {
                self.st.kind = "SELECT INTO".to_owned();
                self.st.class = StatementClass::Ddl;
            }
            Ast::Query(_) if self.writes => self.st.class = StatementClass::Write,
            _ => {}
        }
        self.routine(s);
        // Statements whose names sqlparser's visitor does not report as relations.
        match s {
            Ast::Drop {
                object_type: ObjectType::Table | ObjectType::View | ObjectType::MaterializedView,
                names,
                ..
            } => {
                names.iter().for_each(|n| self.relations.push(object_name(n)));
            }
            Ast::Grant(Grant { objects: Some(GrantObjects::Tables(t)), .. })
            | Ast::Revoke(Revoke { objects: Some(GrantObjects::Tables(t)), .. }) => {
                t.iter().for_each(|n| self.relations.push(object_name(n)));
            }
            Ast::Copy { source: CopySource::Table { table_name, .. }, .. } => {
                self.relations.push(object_name(table_name))
            }
            Ast::Vacuum(v) => v.table_name.iter().for_each(|n| self.relations.push(object_name(n))),
            _ => {}
        }
        // Settings and index column lists name no column references in PostgreSQL's tree.
        match s {
            _ if matches!(self.st.class, StatementClass::Session | StatementClass::SessionRole) => {
                self.st.columns.clear();
            }
            Ast::CreateIndex(ci) => {
                let plain: Vec<String> = ci
                    .columns
                    .iter()
                    .filter_map(|c| match &c.column.expr {
                        Expr::Identifier(i) => Some(fold(i)),
                        _ => None,
                    })
                    .collect();
                self.st.columns.retain(|c| c.table.is_some() || !plain.contains(&c.column));
            }
            _ => {}
        }
        // Relations no level accounted for: what the statement acts on.
        let relations = std::mem::take(&mut self.relations);
        for r in relations {
            if self.level_tables.contains(&r) || self.is_cte(&r) || self.table_functions.contains(&r) {
                continue;
            }
            match s {
                Ast::Truncate(_) => self.st.use_table(&r, false, true, false),
                Ast::Copy { to, .. } => self.st.use_table(&r, *to, !*to, false),
                _ if self.class_default_ddl => self.st.use_table(&r, false, false, true),
                _ => self.st.use_table(&r, true, false, false),
            }
        }
        std::mem::take(&mut self.st)
    }

    fn is_cte(&self, name: &str) -> bool {
        !name.contains('.') && self.ctes.iter().any(|c| c == name)
    }

    fn resolve(&self, q: &str) -> Option<String> {
        self.open.iter().rev().find_map(|(_, _, s, _)| s.resolve(q)).or_else(|| {
            self.closed.iter().rev().filter(|(d, _)| *d == self.query_depth).find_map(|(_, s)| s.resolve(q))
        })
    }

    fn star(&mut self, qualifier: Option<&ObjectName>) {
        let table = qualifier.map(|n| {
            let q = object_name(n);
            self.resolve(&q).unwrap_or(q)
        });
        insert_sorted(&mut self.st.columns, ColumnRef { table, column: "*".into() });
    }

    fn returning(&mut self, items: Option<&Vec<SelectItem>>) {
        for item in items.into_iter().flatten() {
            match item {
                SelectItem::Wildcard(_) => self.star(None),
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), _) => self.star(Some(n)),
                _ => {}
            }
        }
    }

    fn open_level(&mut self, level: QueryLevel, scope: Scope, conds: Vec<Cond>) {
        let at = self.st.levels.len() + self.open.len();
        self.open.push((at, level, scope, conds));
    }

    fn close_level(&mut self) {
        let Some((at, mut level, scope, conds)) = self.open.pop() else { return };
        for (n, _) in &scope.tables {
            if self.is_cte(n) {
                continue;
            }
            if !level.tables.contains(n) {
                level.tables.push(n.clone());
            }
            let write = level.target.as_deref() == Some(n.as_str()) && level.tables.first() == Some(n);
            self.st.use_table(n, !write, write, false);
            self.level_tables.insert(n.clone());
        }
        level.restricted = scope.restrictions(&conds).into_iter().filter(|r| !self.is_cte(&r.table)).collect();
        scope.equalities(&conds, &mut level.equalities);
        self.closed.push((self.query_depth, scope));
        let at = at.min(self.st.levels.len());
        self.st.levels.insert(at, level);
    }

    fn dml(&mut self, s: &Ast) -> bool {
        let mut scope = Scope::default();
        let mut conds = Vec::new();
        let (kind, target, has_where) = match s {
            Ast::Insert(i) => {
                let name = match &i.table {
                    sqlparser::ast::TableObject::TableName(n) => object_name(n),
                    other => other.to_string().to_lowercase(),
                };
                scope.tables.push((name.clone(), i.table_alias.as_ref().map(|a| fold(&a.alias))));
                ("insert", name, false)
            }
            Ast::Update(u) => {
                from_item(&u.table, &mut scope, &mut conds);
                if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) = &u.from {
                    f.iter().for_each(|t| from_item(t, &mut scope, &mut conds));
                }
                if let Some(w) = &u.selection {
                    top_level(lower(w), &mut conds);
                }
                let name = scope.tables.first().map(|t| t.0.clone()).unwrap_or_default();
                ("update", name, u.selection.is_some())
            }
            Ast::Delete(d) => {
                let tables = match &d.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                tables.iter().for_each(|t| from_item(t, &mut scope, &mut conds));
                d.using.iter().flatten().for_each(|t| from_item(t, &mut scope, &mut conds));
                if let Some(w) = &d.selection {
                    top_level(lower(w), &mut conds);
                }
                let name = scope.tables.first().map(|t| t.0.clone()).unwrap_or_default();
                ("delete", name, d.selection.is_some())
            }
            Ast::Merge(m) => {
                factor(&m.table, &mut scope, &mut conds);
                factor(&m.source, &mut scope, &mut conds);
                top_level(lower(&m.on), &mut conds);
                for c in &m.clauses {
                    let a = match &c.action {
                        MergeAction::Update(_) => "update",
                        MergeAction::Delete { .. } => "delete",
                        MergeAction::Insert(_) => "insert",
                        MergeAction::DoNothing { .. } => "do_nothing",
                    };
                    self.st.merge_actions.push(a.to_owned());
                }
                let name = scope.tables.first().map(|t| t.0.clone()).unwrap_or_default();
                ("merge", name, true)
            }
            _ => return false,
        };
        let level = QueryLevel {
            kind: kind.to_owned(),
            target: (!target.is_empty()).then_some(target),
            has_where,
            ..QueryLevel::default()
        };
        self.open_level(level, scope, conds);
        true
    }

    fn routine(&mut self, s: &Ast) {
        let deeper =
            |text: &str, depth: u32| (depth < MAX_ROUTINE_DEPTH).then(|| Box::new(extract_at(text, depth + 1)));
        match s {
            Ast::CreateFunction(f) => {
                let mut language = f.language.as_ref().map(|l| l.value.to_lowercase()).unwrap_or_default();
                let body = match &f.function_body {
                    Some(
                        CreateFunctionBody::AsBeforeOptions { body, .. } | CreateFunctionBody::AsAfterOptions(body),
                    ) => string_of(body),
                    Some(CreateFunctionBody::Return(e) | CreateFunctionBody::AsReturnExpr(e)) => {
                        if language.is_empty() {
                            language = "sql".to_owned();
                        }
                        Some(format!("SELECT {e}"))
                    }
                    Some(CreateFunctionBody::AsBeginEnd(b)) => {
                        if language.is_empty() {
                            language = "sql".to_owned();
                        }
                        Some(b.statements.iter().map(|s| format!("{s};")).collect::<Vec<_>>().join(" "))
                    }
                    _ => None,
                };
                let body = if language == "sql" { body.and_then(|b| deeper(&b, self.depth)) } else { None };
                self.st.routine =
                    Some(Routine { kind: "function".to_owned(), name: object_name(&f.name), language, body });
            }
            Ast::CreateProcedure { name, body, language, .. } => {
                let language = language.as_ref().map(|l| l.value.to_lowercase()).unwrap_or_else(|| "sql".to_owned());
                let text = body.to_string();
                let body = if language == "sql" { deeper(&text, self.depth) } else { None };
                self.st.routine =
                    Some(Routine { kind: "procedure".to_owned(), name: object_name(name), language, body });
            }
            Ast::CreateTrigger(t) => {
                let name = t.exec_body.as_ref().map(|b| object_name(&b.func_desc.name)).unwrap_or_default();
                self.st.routine = Some(Routine { kind: "trigger".to_owned(), name, ..Routine::default() });
            }
            _ => {}
        }
    }
}

/// The text of a string-literal expression (a routine body).
fn string_of(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
            Value::DollarQuotedString(d) => Some(d.value.clone()),
            _ => None,
        },
        _ => None,
    }
}

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Ast) -> ControlFlow<()> {
        self.stmt_depth += 1;
        if self.stmt_depth > 1 && matches!(s, Ast::Insert(_) | Ast::Update(_) | Ast::Delete(_) | Ast::Merge(_)) {
            self.writes = true;
        }
        if self.dml(s) {
            match s {
                Ast::Insert(i) => self.returning(i.returning.as_ref()),
                Ast::Update(u) => self.returning(u.returning.as_ref()),
                Ast::Delete(d) => self.returning(d.returning.as_ref()),
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, s: &Ast) -> ControlFlow<()> {
        if matches!(s, Ast::Insert(_) | Ast::Update(_) | Ast::Delete(_) | Ast::Merge(_)) {
            self.close_level();
        }
        self.stmt_depth -= 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        let depth = self.query_depth;
        self.closed.retain(|(d, _)| *d != depth);
        self.query_depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        self.query_depth += 1;
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let n = fold(&cte.alias.name);
                if !self.ctes.contains(&n) {
                    self.ctes.push(n);
                }
            }
        }
        if !q.locks.is_empty() {
            self.locks_rows = true;
        }
        if limit_present(q) {
            let mut v = Vec::new();
            selects(&q.body, &mut v);
            self.bounded.extend(v);
        }
        if let Some(sqlparser::ast::OrderBy { kind: sqlparser::ast::OrderByKind::Expressions(exprs), .. }) = &q.order_by
        {
            let mut ops = SortOperators { depth: 0, ops: Vec::new() };
            for o in exprs {
                let _ = o.expr.visit(&mut ops);
            }
            if !ops.ops.is_empty() {
                let mut v = Vec::new();
                selects(&q.body, &mut v);
                for s in v {
                    let e = self.ordered.entry(s).or_default();
                    for op in &ops.ops {
                        insert_sorted(e, op.clone());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if s.into.is_some() {
            self.select_into = true;
        }
        let mut scope = Scope::default();
        let mut conds = Vec::new();
        s.from.iter().for_each(|t| from_item(t, &mut scope, &mut conds));
        if let Some(w) = &s.selection {
            top_level(lower(w), &mut conds);
        }
        let level = QueryLevel {
            kind: "select".to_owned(),
            has_where: s.selection.is_some(),
            has_limit: self.bounded.contains(&(s as *const Select)),
            order_operators: self.ordered.get(&(s as *const Select)).cloned().unwrap_or_default(),
            ..QueryLevel::default()
        };
        // A SELECT without FROM is no level, but its scope still resolves nothing: push it anyway.
        self.open_level(level, scope, conds);
        self.returning(Some(&s.projection));
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if s.from.is_empty() {
            self.open.pop();
        } else {
            self.close_level();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args: Some(_), .. } = tf {
            let f = object_name(name);
            insert_sorted(&mut self.st.functions, f.clone());
            self.table_functions.insert(f);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        // `FROM ONLY t`: sqlparser names a relation `only` (a reserved word in PostgreSQL).
        if matches!(r.0.as_slice(), [ObjectNamePart::Identifier(i)] if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("only"))
        {
            return ControlFlow::Continue(());
        }
        let n = object_name(r);
        if !self.relations.contains(&n) {
            self.relations.push(n);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Function(f) => {
                // PostgreSQL's grammar makes these expressions, not function calls.
                let plain = matches!(f.name.0.as_slice(), [ObjectNamePart::Identifier(i)] if i.quote_style.is_none()
                    && ["coalesce", "nullif", "greatest", "least", "array"].contains(&i.value.to_lowercase().as_str()));
                if !plain {
                    insert_sorted(&mut self.st.functions, object_name(&f.name));
                }
                if let FunctionArguments::List(l) = &f.args {
                    for a in &l.args {
                        if let FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(n)) = a {
                            self.star(Some(n));
                        }
                    }
                }
            }
            Expr::BinaryOp { .. } | Expr::AnyOp { .. } | Expr::AllOp { .. } | Expr::UnaryOp { .. } => {
                if let Some(op) = expr_operator(e) {
                    insert_sorted(&mut self.st.operators, op);
                }
            }
            Expr::Substring { shorthand, .. } => {
                let name = if *shorthand { "substr" } else { "substring" };
                insert_sorted(&mut self.st.functions, name.to_owned());
            }
            Expr::CompoundFieldAccess { access_chain, .. } => {
                for a in access_chain {
                    if let AccessExpr::Dot(e) = a {
                        self.fields.insert(e as *const Expr);
                    }
                }
            }
            Expr::Identifier(_) if self.fields.contains(&(e as *const Expr)) => {}
            Expr::Identifier(i) => insert_sorted(&mut self.st.columns, ColumnRef { table: None, column: fold(i) }),
            Expr::CompoundIdentifier(parts) if !parts.is_empty() => {
                let column = fold(&parts[parts.len() - 1]);
                let q = parts[..parts.len() - 1].iter().map(fold).collect::<Vec<_>>().join(".");
                let table = Some(self.resolve(&q).unwrap_or(q));
                insert_sorted(&mut self.st.columns, ColumnRef { table, column });
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// The operator an expression applies itself (not those of its operands), as [`Walker`] records it.
fn expr_operator(e: &Expr) -> Option<String> {
    match e {
        Expr::BinaryOp { op, .. } if !matches!(op, BinaryOperator::And | BinaryOperator::Or | BinaryOperator::Xor) => {
            Some(binary_op(op))
        }
        Expr::AnyOp { compare_op, .. } | Expr::AllOp { compare_op, .. } => Some(binary_op(compare_op)),
        Expr::UnaryOp { op, expr } => {
            // PostgreSQL folds `-1` into a constant: no operator.
            let literal = matches!(op, UnaryOperator::Minus | UnaryOperator::Plus)
                && matches!(&**expr, Expr::Value(v) if matches!(v.value, Value::Number(..)));
            (!matches!(op, UnaryOperator::Not) && !literal).then(|| op.to_string())
        }
        _ => None,
    }
}

/// The operators of an `ORDER BY` expression, outside subqueries.
struct SortOperators {
    depth: usize,
    ops: Vec<String>,
}

impl Visitor for SortOperators {
    type Break = ();
    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }
    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if self.depth == 0
            && let Some(op) = expr_operator(e)
        {
            insert_sorted(&mut self.ops, op);
        }
        ControlFlow::Continue(())
    }
}

fn binary_op(op: &BinaryOperator) -> String {
    match op {
        BinaryOperator::PGCustomBinaryOperator(parts) => parts.join("."),
        BinaryOperator::Custom(s) => s.clone(),
        other => other.to_string(),
    }
}

/// (kind, class) of a statement.
fn classify(s: &Ast) -> (String, StatementClass) {
    use StatementClass as C;
    let k = |k: &str, c: C| (k.to_owned(), c);
    match s {
        Ast::Query(_) => k("SELECT", C::Read),
        Ast::Insert(_) => k("INSERT", C::Write),
        Ast::Update(_) => k("UPDATE", C::Write),
        Ast::Delete(_) => k("DELETE", C::Write),
        Ast::Merge(_) => k("MERGE", C::Write),
        Ast::CreateTable(t) if t.query.is_some() => k("CREATE TABLE AS", C::Ddl),
        Ast::CreateTable(_) => k("CREATE TABLE", C::Ddl),
        Ast::CreateView(v) if v.materialized => k("CREATE MATERIALIZED VIEW", C::Ddl),
        Ast::CreateView(_) => k("CREATE VIEW", C::Ddl),
        Ast::CreateIndex(_) => k("CREATE INDEX", C::Ddl),
        Ast::AlterTable(_) => k("ALTER TABLE", C::Ddl),
        Ast::Drop { object_type: ObjectType::Role | ObjectType::User, .. } => k("DROP ROLE", C::Dcl),
        Ast::Drop { object_type, .. } => (format!("DROP {object_type}"), C::Ddl),
        Ast::DropFunction(_) => k("DROP FUNCTION", C::Ddl),
        Ast::DropProcedure { .. } => k("DROP PROCEDURE", C::Ddl),
        Ast::DropTrigger(_) => k("DROP TRIGGER", C::Ddl),
        Ast::DropPolicy(_) => k("DROP POLICY", C::Dcl),
        Ast::Truncate(_) => k("TRUNCATE", C::Ddl),
        Ast::Comment { .. } => k("COMMENT", C::Ddl),
        Ast::CreateFunction(_) => k("CREATE FUNCTION", C::Routine),
        Ast::CreateProcedure { .. } => k("CREATE PROCEDURE", C::Routine),
        Ast::CreateTrigger(_) => k("CREATE TRIGGER", C::Routine),
        Ast::AlterFunction(_) => k("ALTER FUNCTION", C::Routine),
        Ast::Grant(_) => k("GRANT", C::Dcl),
        Ast::Revoke(_) => k("REVOKE", C::Dcl),
        Ast::CreateRole(_) | Ast::CreateUser(_) => k("CREATE ROLE", C::Dcl),
        Ast::AlterRole { .. } | Ast::AlterUser(_) => k("ALTER ROLE", C::Dcl),
        Ast::CreatePolicy(_) => k("CREATE POLICY", C::Dcl),
        Ast::AlterPolicy(_) => k("ALTER POLICY", C::Dcl),
        Ast::Vacuum(_) => k("VACUUM", C::Maintenance),
        Ast::Analyze(_) => k("ANALYZE", C::Maintenance),
        Ast::Set(Set::SetRole { .. }) => k("SET ROLE", C::SessionRole),
        Ast::Set(Set::SetSessionAuthorization(_)) => k("SET SESSION AUTHORIZATION", C::SessionRole),
        Ast::Set(_) => k("SET", C::Session),
        Ast::Reset(r) => {
            let text = r.to_string().to_ascii_uppercase();
            if text.contains("RESET ROLE") {
                k("RESET ROLE", C::SessionRole)
            } else if text.contains("SESSION AUTHORIZATION") {
                k("RESET SESSION AUTHORIZATION", C::SessionRole)
            } else {
                k("RESET", C::Session)
            }
        }
        Ast::ShowVariable { .. } => k("SHOW", C::Read),
        Ast::StartTransaction { begin: true, .. } => k("BEGIN", C::Transaction),
        Ast::StartTransaction { .. } => k("START TRANSACTION", C::Transaction),
        Ast::Commit { .. } => k("COMMIT", C::Transaction),
        Ast::Rollback { savepoint: Some(_), .. } => k("ROLLBACK TO", C::Transaction),
        Ast::Rollback { .. } => k("ROLLBACK", C::Transaction),
        Ast::Savepoint { .. } => k("SAVEPOINT", C::Transaction),
        Ast::ReleaseSavepoint { .. } => k("RELEASE", C::Transaction),
        Ast::Copy { target: CopyTarget::Program { .. }, .. } => k("COPY", C::CopyProgram),
        Ast::Copy { target: CopyTarget::File { .. }, .. } => k("COPY", C::CopyFile),
        Ast::Copy { to: true, .. } => k("COPY", C::Read),
        Ast::Copy { source: CopySource::Query(_), .. } => k("COPY", C::Read),
        Ast::Copy { .. } => k("COPY", C::Write),
        Ast::LISTEN { .. } => k("LISTEN", C::Listen),
        Ast::UNLISTEN { .. } => k("UNLISTEN", C::Listen),
        Ast::NOTIFY { .. } => k("NOTIFY", C::Notify),
        Ast::Explain { statement, .. } => ("EXPLAIN".to_owned(), classify(statement).1),
        Ast::Prepare { statement, .. } => ("PREPARE".to_owned(), classify(statement).1),
        Ast::Declare { .. } => k("DECLARE CURSOR", C::Read),
        Ast::Execute { .. } => k("EXECUTE", C::Other),
        Ast::Deallocate { .. } => k("DEALLOCATE", C::Session),
        Ast::Fetch { .. } => k("FETCH", C::Read),
        Ast::Close { .. } => k("CLOSE", C::Session),
        Ast::Discard { .. } => k("DISCARD", C::Session),
        Ast::Call(_) => k("CALL", C::Call),
        Ast::Lock(_) => k("LOCK TABLE", C::Lock),
        other => {
            // By the statement's leading keywords, as sqlparser renders them.
            let text = other.to_string();
            let words: Vec<&str> = text.split_whitespace().take(3).collect();
            let first = words.first().copied().unwrap_or("").to_ascii_uppercase();
            let second = words.get(1).copied().unwrap_or("").to_ascii_uppercase();
            match first.as_str() {
                "CREATE" | "ALTER" | "DROP" => {
                    let dcl = matches!(second.as_str(), "ROLE" | "USER" | "GROUP" | "POLICY");
                    (format!("{first} {second}"), if dcl { C::Dcl } else { C::Ddl })
                }
                "CLUSTER" | "REINDEX" | "CHECKPOINT" => (first, C::Maintenance),
                "REFRESH" => k("REFRESH MATERIALIZED VIEW", C::Maintenance),
                "LOAD" => (first, C::Admin),
                _ => (first, C::Other),
            }
        }
    }
}

// ---- conditions --------------------------------------------------------------------------------

fn lower(e: &Expr) -> Cond {
    match e {
        Expr::Nested(inner) => lower(inner),
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => Cond::And(vec![lower(left), lower(right)]),
        Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
            let mut branches = Vec::new();
            or_branches(left, &mut branches);
            or_branches(right, &mut branches);
            Cond::Or(branches)
        }
        Expr::BinaryOp { left, op, right } => {
            let op = match op {
                BinaryOperator::Eq => "=",
                BinaryOperator::Lt => "<",
                BinaryOperator::LtEq => "<=",
                BinaryOperator::Gt => ">",
                BinaryOperator::GtEq => ">=",
                _ => return Cond::Other,
            };
            Cond::Cmp(op, operand(left), operand(right))
        }
        Expr::InList { expr, list, negated: false } => Cond::In(operand(expr), list.iter().map(operand).collect()),
        Expr::InSubquery { expr, subquery, negated: false } => {
            let mut sub = Operand::default();
            subquery_refs_query(subquery, &mut sub);
            Cond::In(operand(expr), vec![sub])
        }
        Expr::AnyOp { left, compare_op: BinaryOperator::Eq, right, .. } => {
            Cond::In(operand(left), vec![operand(right)])
        }
        Expr::Between { expr, negated: false, low, high } => Cond::Between(operand(expr), operand(low), operand(high)),
        Expr::Like { negated: false, expr, pattern, escape_char: None, any: false } => {
            Cond::Like("like", operand(expr), operand(pattern))
        }
        Expr::ILike { negated: false, expr, pattern, escape_char: None, any: false } => {
            Cond::Like("ilike", operand(expr), operand(pattern))
        }
        _ => Cond::Other,
    }
}

fn or_branches(e: &Expr, out: &mut Vec<Cond>) {
    match e {
        Expr::Nested(inner) => or_branches(inner, out),
        Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
            or_branches(left, out);
            or_branches(right, out);
        }
        other => out.push(lower(other)),
    }
}

fn operand(e: &Expr) -> Operand {
    let mut o = Operand::default();
    let mut bare = e;
    while let Expr::Nested(inner) = bare {
        bare = inner;
    }
    match bare {
        Expr::Identifier(i) => o.plain = Some((None, fold(i))),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            let q = parts[..parts.len() - 1].iter().map(fold).collect::<Vec<_>>().join(".");
            o.plain = Some((Some(q), fold(&parts[parts.len() - 1])));
        }
        Expr::Value(v) => match &v.value {
            Value::Placeholder(_) => o.param = true,
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => o.string = Some(s.clone()),
            Value::DollarQuotedString(d) => o.string = Some(d.value.clone()),
            _ => {}
        },
        _ => {}
    }
    let mut refs = Refs { depth: 0, o: &mut o };
    let _ = e.visit(&mut refs);
    o
}

/// Column references of an operand: outside subqueries all of them; inside, the qualified ones
/// and the tables read.
struct Refs<'a> {
    depth: usize,
    o: &'a mut Operand,
}

impl Visitor for Refs<'_> {
    type Break = ();
    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }
    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        self.o.subquery_tables.push(object_name(r));
        ControlFlow::Continue(())
    }
    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Identifier(_) if self.depth == 0 => self.o.columns.push(None),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let q = parts[..parts.len() - 1].iter().map(fold).collect::<Vec<_>>().join(".");
                if self.depth == 0 {
                    self.o.columns.push(Some(q));
                } else {
                    self.o.subquery_qualifiers.push(q);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn subquery_refs_query(q: &Query, o: &mut Operand) {
    let mut refs = Refs { depth: 1, o };
    let _ = q.visit(&mut refs);
}
