//! The rewrite: masked columns in a statement's projections become `mask_function(col) AS col`,
//! on the syntax tree sqlparser built (PostgreSQL dialect), then rendered back to SQL.
//!
//! What is rewritten, in every query of the statement (CTE bodies, derived tables, subqueries in any
//! expression, both sides of set operations, `INSERT ... SELECT`, `COPY (query) TO`, `CREATE ... AS`):
//! * a projected column of a masked table, bare (`ssn`), qualified by the table (`users.ssn`,
//!   `public.users.ssn`) or by its alias (`u.ssn`), also inside any expression (`upper(ssn)`,
//!   `substr(u.ssn, 1, 3)`): every reference is wrapped; a bare column keeps its name with `AS`;
//! * `SELECT *` and `t.*` over a masked table: expanded from `table_columns` with the masked columns
//!   wrapped (other tables of the FROM stay `x.*`);
//! * `RETURNING` of `INSERT`, `UPDATE` and `DELETE`.
//!
//! What is refused (the plugin blocks, it cannot mask it): `SELECT *` over a masked table missing from
//! `table_columns`, whole-row references to a masked table (`row_to_json(u)`, `to_json(u.*)`), `COPY`
//! of a masked table, and SQL that does not parse but names a masked table.
//!
//! An unqualified column resolves as PostgreSQL would as far as the config knows: the innermost query
//! first, then the enclosing ones (correlated subqueries); where the config cannot tell (tables not in
//! `table_columns`), the rewrite masks. Only projections are rewritten: a masked column in `WHERE`,
//! `GROUP BY` or `ORDER BY` is left alone (masking is not row-level security).

use std::collections::BTreeMap;

use helios_plugin_abi::facts::StatementFacts;
use std::ops::ControlFlow;

use sqlparser::ast::{
    CopySource, Expr, FromTable, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, Query, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, TableObject, TableWithJoins, UpdateTableFromKind,
    VisitMut, VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

pub use plugin_sql::TableName;
use plugin_sql::ast::name_parts as parts;
pub use plugin_sql::ast::only_table;

/// One masking rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: TableName,
    /// As configured; compared case-insensitively.
    pub column: String,
    /// A function name (`mask_ssn` or `schema.mask_ssn`), checked to be a plain identifier path.
    pub mask_function: String,
    /// Identities that see the column unmasked.
    pub unmask_roles: Vec<String>,
}

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub rules: Vec<Rule>,
    /// Columns of tables, in table order, for `SELECT *` expansion.
    pub table_columns: Vec<(TableName, Vec<String>)>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    table: String,
    column: String,
    mask_function: String,
    #[serde(default)]
    unmask_role: Option<Roles>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Roles {
    One(String),
    Many(Vec<String>),
}

fn is_function_name(s: &str) -> bool {
    let ident = |p: &str| {
        let mut c = p.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == '$')
    };
    let ps: Vec<&str> = s.split('.').collect();
    ps.len() <= 2 && ps.iter().all(|p| ident(p))
}

impl Config {
    /// Reads `rules` (JSON array of `{table, column, mask_function, unmask_role}`; `unmask_role` a
    /// string or an array) and `table_columns` (JSON object `{table: [columns]}`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut cfg = Config::default();
        if let Some(raw) = get("rules").filter(|s| !s.trim().is_empty()) {
            let rules: Vec<RawRule> = serde_json::from_str(&raw).map_err(|e| {
                format!("column-mask: config key rules: expected a JSON array of {{table, column, mask_function, unmask_role}}, found {raw:?} ({e})")
            })?;
            for (i, r) in rules.into_iter().enumerate() {
                if !is_function_name(r.mask_function.trim()) {
                    return Err(format!(
                        "column-mask: config key rules: rule {i}: mask_function must be a function name like mask_ssn or schema.mask_ssn, found {:?}",
                        r.mask_function
                    ));
                }
                if r.table.trim().is_empty() || r.column.trim().is_empty() {
                    return Err(format!("column-mask: config key rules: rule {i}: table and column must not be empty"));
                }
                cfg.rules.push(Rule {
                    table: TableName::parse(&r.table),
                    column: r.column.trim().to_owned(),
                    mask_function: r.mask_function.trim().to_owned(),
                    unmask_roles: match r.unmask_role {
                        None => Vec::new(),
                        Some(Roles::One(s)) => vec![s],
                        Some(Roles::Many(v)) => v,
                    },
                });
            }
        }
        if let Some(raw) = get("table_columns").filter(|s| !s.trim().is_empty()) {
            let map: BTreeMap<String, Vec<String>> = serde_json::from_str(&raw).map_err(|e| {
                format!("column-mask: config key table_columns: expected a JSON object {{table: [columns]}}, found {raw:?} ({e})")
            })?;
            cfg.table_columns = map.into_iter().map(|(t, cols)| (TableName::parse(&t), cols)).collect();
        }
        Ok(cfg)
    }

    fn columns_of(&self, name: &ObjectName) -> Option<&[String]> {
        // The most specific entry: one naming the schema wins over one that does not.
        let mut found = None;
        for (t, cols) in &self.table_columns {
            if t.matches(name) && (found.is_none() || t.schema.is_some()) {
                found = Some(cols.as_slice());
            }
        }
        found
    }
}

/// A relation visible in a query's FROM.
#[derive(Debug, Clone)]
enum Rel {
    /// A table of the database.
    Base { name: ObjectName, alias: Option<Ident> },
    /// A derived table, a CTE, a table function: its output is already masked where needed.
    Other { alias: Option<Ident> },
}

impl Rel {
    /// Whether `qualifier` (the parts before the column) names this relation.
    fn named_by(&self, qualifier: &[Ident]) -> bool {
        let q: Vec<String> = qualifier.iter().map(|i| i.value.to_lowercase()).collect();
        match self {
            Rel::Base { alias: Some(a), .. } | Rel::Other { alias: Some(a) } => {
                q.len() == 1 && q[0] == a.value.to_lowercase()
            }
            Rel::Base { name, alias: None } => {
                let p = parts(name);
                !q.is_empty() && q.len() <= p.len() && p[p.len() - q.len()..] == q[..]
            }
            Rel::Other { alias: None } => false,
        }
    }

    /// How the relation is qualified in an expansion (`u`, `public.users`).
    fn qualifier(&self) -> Option<String> {
        match self {
            Rel::Base { alias: Some(a), .. } | Rel::Other { alias: Some(a) } => Some(a.to_string()),
            Rel::Base { name, alias: None } => Some(name.to_string()),
            Rel::Other { alias: None } => None,
        }
    }
}

/// The relations of one query level.
type Scope = Vec<Rel>;

/// Renders a configured column name as an identifier: bare when PostgreSQL would read it back as the
/// same name, double-quoted otherwise. Keywords need no quotes: they only appear after `q.` and after
/// `AS`, where PostgreSQL (and sqlparser) accept any label.
fn render_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { name.to_owned() } else { Ident::with_quote('"', name).to_string() }
}

fn parse_expr(text: &str) -> Result<Expr, String> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("column-mask: internal rewrite {text:?} does not parse: {e}"))
}

fn parse_item(text: &str) -> Result<SelectItem, String> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_select_item())
        .map_err(|e| format!("column-mask: internal rewrite {text:?} does not parse: {e}"))
}

/// The rules in force for one identity.
struct Masker<'a> {
    cfg: &'a Config,
    active: Vec<&'a Rule>,
}

impl<'a> Masker<'a> {
    fn rules_of(&self, rel: &Rel) -> Vec<&'a Rule> {
        match rel {
            Rel::Base { name, .. } => self.active.iter().copied().filter(|r| r.table.matches(name)).collect(),
            Rel::Other { .. } => Vec::new(),
        }
    }

    fn rule_for(&self, rel: &Rel, column: &str) -> Option<&'a Rule> {
        let c = column.to_lowercase();
        self.rules_of(rel).into_iter().find(|r| r.column.to_lowercase() == c)
    }

    fn known_to_have(&self, rel: &Rel, column: &str) -> bool {
        let c = column.to_lowercase();
        match rel {
            Rel::Base { name, .. } => {
                self.cfg.columns_of(name).is_some_and(|cols| cols.iter().any(|x| x.to_lowercase() == c))
            }
            Rel::Other { .. } => false,
        }
    }

    /// The rule masking an unqualified column, resolved innermost scope first.
    fn resolve_bare(&self, chain: &[Scope], column: &str) -> Option<&'a Rule> {
        let (current, outer) = chain.split_last()?;
        if let Some(r) = current.iter().find_map(|rel| self.rule_for(rel, column)) {
            return Some(r);
        }
        if current.iter().any(|rel| self.known_to_have(rel, column)) {
            return None; // PostgreSQL binds it here, to an unmasked column.
        }
        outer.iter().rev().flat_map(|s| s.iter()).find_map(|rel| self.rule_for(rel, column))
    }

    /// The relation a qualifier names, innermost scope first.
    fn resolve_rel<'c>(&self, chain: &'c [Scope], qualifier: &[Ident]) -> Option<&'c Rel> {
        chain.iter().rev().find_map(|s| s.iter().find(|r| r.named_by(qualifier)))
    }

    fn whole_row_error(&self, rel: &Rel, how: &str) -> Option<String> {
        let rules = self.rules_of(rel);
        let first = rules.first()?;
        Some(format!(
            "column-mask: {how} would expose masked column {}.{} unmasked; select the columns instead",
            first.table, first.column
        ))
    }

    /// Masks the references in one projection expression and processes its subqueries.
    fn mask_expr(&self, e: &mut Expr, chain: &[Scope], ctes: &[String], mask: bool) -> Result<bool, String> {
        let mut v = ExprMasker { m: self, chain, ctes, mask, depth: 0, changed: false };
        match e.visit(&mut v) {
            ControlFlow::Break(err) => Err(err),
            ControlFlow::Continue(()) => Ok(v.changed),
        }
    }

    /// Processes the subqueries of any AST node without masking at its own level.
    fn subqueries<T: VisitMut>(&self, node: &mut T, chain: &[Scope], ctes: &[String]) -> Result<bool, String> {
        let mut v = ExprMasker { m: self, chain, ctes, mask: false, depth: 0, changed: false };
        match node.visit(&mut v) {
            ControlFlow::Break(err) => Err(err),
            ControlFlow::Continue(()) => Ok(v.changed),
        }
    }

    fn process_statement(&self, stmt: &mut Statement, ctes: &[String]) -> Result<bool, String> {
        match stmt {
            Statement::Copy { source: CopySource::Table { table_name, .. }, to: true, .. } => {
                let rel = Rel::Base { name: table_name.clone(), alias: None };
                if let Some(err) = self.whole_row_error(&rel, &format!("COPY {table_name} TO")) {
                    return Err(err);
                }
                Ok(false)
            }
            Statement::Insert(i) => {
                let mut returning = i.returning.take();
                let mut changed = self.subqueries(i, &[], ctes)?;
                if let (Some(items), TableObject::TableName(name)) = (&mut returning, &i.table) {
                    let alias = i.table_alias.as_ref().map(|a| a.alias.clone());
                    let scope = vec![Rel::Base { name: name.clone(), alias }];
                    changed |= self.process_projection(items, &scope, &[], ctes)?;
                }
                i.returning = returning;
                Ok(changed)
            }
            Statement::Update(u) => {
                let mut returning = u.returning.take();
                let mut changed = self.subqueries(u, &[], ctes)?;
                if let Some(items) = &mut returning {
                    let mut scope = Vec::new();
                    self.collect(&mut u.table, &mut scope, &[], ctes)?;
                    if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) = &mut u.from {
                        for t in f {
                            self.collect(t, &mut scope, &[], ctes)?;
                        }
                    }
                    changed |= self.process_projection(items, &scope, &[], ctes)?;
                }
                u.returning = returning;
                Ok(changed)
            }
            Statement::Delete(d) => {
                let mut returning = d.returning.take();
                let mut changed = self.subqueries(d, &[], ctes)?;
                if let Some(items) = &mut returning {
                    let mut scope = Vec::new();
                    let (FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t)) = &mut d.from;
                    for t in t.iter_mut().chain(d.using.iter_mut().flatten()) {
                        self.collect(t, &mut scope, &[], ctes)?;
                    }
                    changed |= self.process_projection(items, &scope, &[], ctes)?;
                }
                d.returning = returning;
                Ok(changed)
            }
            other => self.subqueries(other, &[], ctes),
        }
    }

    fn process_query(&self, q: &mut Query, chain: &[Scope], ctes: &[String]) -> Result<bool, String> {
        let mut own: Vec<String> = ctes.to_vec();
        let mut changed = false;
        if let Some(with) = &mut q.with {
            for cte in &mut with.cte_tables {
                own.push(cte.alias.name.value.to_lowercase());
            }
            for cte in &mut with.cte_tables {
                changed |= self.process_query(&mut cte.query, chain, &own)?;
            }
        }
        changed |= self.process_set_expr(&mut q.body, chain, &own)?;
        Ok(changed)
    }

    fn process_set_expr(&self, body: &mut SetExpr, chain: &[Scope], ctes: &[String]) -> Result<bool, String> {
        match body {
            SetExpr::Select(s) => {
                let mut scope = Vec::new();
                let mut changed = false;
                for twj in &mut s.from {
                    changed |= self.collect(twj, &mut scope, chain, ctes)?;
                }
                let mut inner = chain.to_vec();
                inner.push(scope.clone());
                // Subqueries in the other clauses are masked in their own projections.
                changed |= self.subqueries(&mut s.selection, &inner, ctes)?;
                changed |= self.subqueries(&mut s.having, &inner, ctes)?;
                for twj in &mut s.from {
                    for j in &mut twj.joins {
                        changed |= self.subqueries(&mut j.join_operator, &inner, ctes)?;
                    }
                }
                changed |= self.process_projection(&mut s.projection, &scope, chain, ctes)?;
                Ok(changed)
            }
            SetExpr::Query(q) => self.process_query(q, chain, ctes),
            SetExpr::SetOperation { left, right, .. } => {
                let l = self.process_set_expr(left, chain, ctes)?;
                let r = self.process_set_expr(right, chain, ctes)?;
                Ok(l || r)
            }
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
                self.process_statement(s, ctes)
            }
            other => self.subqueries(other, chain, ctes),
        }
    }

    /// Adds the relations of a FROM item to `scope`, processing derived tables on the way.
    fn collect(
        &self,
        twj: &mut TableWithJoins,
        scope: &mut Scope,
        chain: &[Scope],
        ctes: &[String],
    ) -> Result<bool, String> {
        let mut changed = self.collect_factor(&mut twj.relation, scope, chain, ctes)?;
        for j in &mut twj.joins {
            changed |= self.collect_factor(&mut j.relation, scope, chain, ctes)?;
        }
        Ok(changed)
    }

    fn collect_factor(
        &self,
        tf: &mut TableFactor,
        scope: &mut Scope,
        chain: &[Scope],
        ctes: &[String],
    ) -> Result<bool, String> {
        match tf {
            TableFactor::Table { name, alias, .. } => {
                let (name, alias_ident) = match only_table(name, alias.as_ref()) {
                    Some(real) => (real, None),
                    None => (name.clone(), alias.as_ref().map(|a| a.name.clone())),
                };
                let is_cte = name.0.len() == 1 && ctes.contains(&parts(&name)[0]);
                let rel = if is_cte {
                    Rel::Other { alias: alias_ident.or_else(|| name.0[0].as_ident().cloned()) }
                } else {
                    Rel::Base { name, alias: alias_ident }
                };
                if let Some(a) = alias.as_ref().filter(|a| !a.columns.is_empty())
                    && let Some(err) = self.whole_row_error(&rel, &format!("the column aliases of {a}"))
                {
                    return Err(err);
                }
                scope.push(rel);
                Ok(false)
            }
            TableFactor::Derived { lateral, subquery, alias, .. } => {
                let changed = if *lateral {
                    let mut c = chain.to_vec();
                    c.push(scope.clone());
                    self.process_query(subquery, &c, ctes)?
                } else {
                    self.process_query(subquery, chain, ctes)?
                };
                scope.push(Rel::Other { alias: alias.as_ref().map(|a| a.name.clone()) });
                Ok(changed)
            }
            TableFactor::NestedJoin { table_with_joins, alias } => {
                let mut inner = Vec::new();
                let changed = self.collect(table_with_joins, &mut inner, chain, ctes)?;
                if let Some(a) = alias {
                    if let Some(err) =
                        inner.iter().find_map(|r| self.whole_row_error(r, &format!("the aliased join {}", a.name)))
                    {
                        return Err(err);
                    }
                    scope.push(Rel::Other { alias: Some(a.name.clone()) });
                } else {
                    scope.extend(inner);
                }
                Ok(changed)
            }
            other => {
                let changed = self.subqueries(other, chain, ctes)?;
                let alias = match other {
                    TableFactor::Function { alias, .. }
                    | TableFactor::UNNEST { alias, .. }
                    | TableFactor::TableFunction { alias, .. } => alias.as_ref().map(|a| a.name.clone()),
                    _ => None,
                };
                scope.push(Rel::Other { alias });
                Ok(changed)
            }
        }
    }

    /// Rewrites a projection (or a RETURNING list) whose FROM is `scope`, inside `chain`.
    fn process_projection(
        &self,
        items: &mut Vec<SelectItem>,
        scope: &Scope,
        chain: &[Scope],
        ctes: &[String],
    ) -> Result<bool, String> {
        let mut full = chain.to_vec();
        full.push(scope.clone());
        let mut changed = false;
        let mut out = Vec::with_capacity(items.len());
        for item in std::mem::take(items) {
            match item {
                SelectItem::UnnamedExpr(mut e) => {
                    let bare = match &e {
                        Expr::Identifier(i) => Some(i.clone()),
                        Expr::CompoundIdentifier(p) => p.last().cloned(),
                        _ => None,
                    };
                    let c = self.mask_expr(&mut e, &full, ctes, true)?;
                    changed |= c;
                    match bare {
                        Some(alias) if c && matches!(e, Expr::Function(_)) => {
                            out.push(SelectItem::ExprWithAlias { expr: e, alias })
                        }
                        _ => out.push(SelectItem::UnnamedExpr(e)),
                    }
                }
                SelectItem::ExprWithAlias { mut expr, alias } => {
                    changed |= self.mask_expr(&mut expr, &full, ctes, true)?;
                    out.push(SelectItem::ExprWithAlias { expr, alias });
                }
                SelectItem::ExprWithAliases { mut expr, aliases } => {
                    changed |= self.mask_expr(&mut expr, &full, ctes, true)?;
                    out.push(SelectItem::ExprWithAliases { expr, aliases });
                }
                SelectItem::Wildcard(opts) => {
                    if scope.iter().all(|r| self.rules_of(r).is_empty()) {
                        out.push(SelectItem::Wildcard(opts));
                        continue;
                    }
                    for rel in scope {
                        out.extend(self.expand(rel, true)?);
                    }
                    changed = true;
                }
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), opts) => {
                    let qualifier: Vec<Ident> = name.0.iter().filter_map(|p| p.as_ident().cloned()).collect();
                    match scope.iter().find(|r| r.named_by(&qualifier)) {
                        Some(rel) if !self.rules_of(rel).is_empty() => {
                            out.extend(self.expand(rel, false)?);
                            changed = true;
                        }
                        _ => out.push(SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(name),
                            opts,
                        )),
                    }
                }
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(mut e), opts) => {
                    changed |= self.mask_expr(&mut e, &full, ctes, true)?;
                    out.push(SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(e), opts));
                }
            }
        }
        *items = out;
        Ok(changed)
    }

    /// The items replacing `rel.*` (or `rel`'s share of `*`).
    fn expand(&self, rel: &Rel, from_star: bool) -> Result<Vec<SelectItem>, String> {
        let rules = self.rules_of(rel);
        let Some(q) = rel.qualifier() else {
            return Err("column-mask: cannot expand SELECT * over an unaliased subquery next to a masked table; alias the subquery".into());
        };
        if rules.is_empty() {
            return Ok(vec![parse_item(&format!("{q}.*"))?]);
        }
        let Rel::Base { name, .. } = rel else { return Ok(vec![parse_item(&format!("{q}.*"))?]) };
        let Some(cols) = self.cfg.columns_of(name) else {
            return Err(format!(
                "column-mask: SELECT {} over {name} needs the table's columns in config key table_columns (it has masked column {})",
                if from_star { "*" } else { "t.*" },
                rules[0].column
            ));
        };
        cols.iter()
            .map(|c| {
                let col = render_ident(c);
                match self.rule_for(rel, c) {
                    Some(r) => parse_item(&format!("{}({q}.{col}) AS {col}", r.mask_function)),
                    None => parse_item(&format!("{q}.{col}")),
                }
            })
            .collect()
    }
}

/// Masks column references at one query level and hands nested queries back to the [`Masker`].
struct ExprMasker<'m, 'a, 'c> {
    m: &'m Masker<'a>,
    chain: &'c [Scope],
    ctes: &'c [String],
    /// Mask references at this level (projections) or only process subqueries (other clauses).
    mask: bool,
    depth: usize,
    changed: bool,
}

impl VisitorMut for ExprMasker<'_, '_, '_> {
    type Break = String;

    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<String> {
        if self.depth == 0 {
            match self.m.process_query(q, self.chain, self.ctes) {
                Ok(c) => self.changed |= c,
                Err(e) => return ControlFlow::Break(e),
            }
        }
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<String> {
        if self.depth > 0 || !self.mask {
            return ControlFlow::Continue(());
        }
        let rule = match e {
            Expr::Identifier(i) => {
                let r = self.m.resolve_bare(self.chain, &i.value);
                if r.is_none() {
                    // Not a masked column: is it a whole-row reference to a masked table?
                    let current = self.chain.last().map(Vec::as_slice).unwrap_or(&[]);
                    let is_column = current.iter().any(|rel| self.m.known_to_have(rel, &i.value));
                    if !is_column
                        && let Some(rel) = self.m.resolve_rel(self.chain, std::slice::from_ref(i))
                        && let Some(err) = self.m.whole_row_error(rel, &format!("the whole-row reference {i}"))
                    {
                        return ControlFlow::Break(err);
                    }
                }
                r
            }
            Expr::CompoundIdentifier(p) if p.len() >= 2 => {
                let (col, qualifier) = p.split_last().expect("len >= 2");
                self.m.resolve_rel(self.chain, qualifier).and_then(|rel| self.m.rule_for(rel, &col.value))
            }
            Expr::QualifiedWildcard(name, _) => {
                let qualifier: Vec<Ident> = name.0.iter().filter_map(|p| p.as_ident().cloned()).collect();
                if let Some(err) = self
                    .m
                    .resolve_rel(self.chain, &qualifier)
                    .and_then(|rel| self.m.whole_row_error(rel, &format!("{name}.*")))
                {
                    return ControlFlow::Break(err);
                }
                None
            }
            Expr::Function(f) => {
                if let FunctionArguments::List(list) = &f.args {
                    for a in &list.args {
                        let (FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(name))
                        | FunctionArg::Named { arg: FunctionArgExpr::QualifiedWildcard(name), .. }) = a
                        else {
                            continue;
                        };
                        let qualifier: Vec<Ident> = name.0.iter().filter_map(|p| p.as_ident().cloned()).collect();
                        if let Some(err) = self
                            .m
                            .resolve_rel(self.chain, &qualifier)
                            .and_then(|rel| self.m.whole_row_error(rel, &format!("{name}.*")))
                        {
                            return ControlFlow::Break(err);
                        }
                    }
                }
                None
            }
            _ => None,
        };
        if let Some(rule) = rule {
            match parse_expr(&format!("{}({e})", rule.mask_function)) {
                Ok(masked) => {
                    *e = masked;
                    self.changed = true;
                }
                Err(err) => return ControlFlow::Break(err),
            }
        }
        ControlFlow::Continue(())
    }
}

/// For SQL that does not parse: a masked table some word token names (tokens, not substrings: a
/// name inside a string literal or a comment does not count).
fn names_masked_table(active: &[&Rule], sql: &str) -> Option<String> {
    let dialect = PostgreSqlDialect {};
    let mut tokens = Vec::new();
    let _ = Tokenizer::new(&dialect, sql).tokenize_with_location_into_buf(&mut tokens);
    tokens.iter().find_map(|t| match &t.token {
        Token::Word(w) => active.iter().find(|r| r.table.name == w.value.to_lowercase()).map(|r| r.table.to_string()),
        _ => None,
    })
}

/// Rewrites `sql` for `identity`. `Ok(None)`: nothing to mask; `Ok(Some(sql))`: the masked SQL;
/// `Err(reason)`: the statement cannot be masked and must be refused.
pub fn rewrite(cfg: &Config, identity: Option<&str>, sql: &str) -> Result<Option<String>, String> {
    rewrite_with(cfg, identity, sql, None)
}

/// Whether some statement of `facts` (or of a routine body in it) names a table one of `active`'s
/// rules masks.
fn facts_name_masked_table(active: &[&Rule], facts: &StatementFacts) -> bool {
    facts.statements.iter().any(|s| {
        s.tables.iter().any(|t| active.iter().any(|r| r.table.matches_dotted(&t.name)))
            || s.routine.as_ref().and_then(|r| r.body.as_deref()).is_some_and(|b| facts_name_masked_table(active, b))
    })
}

/// [`rewrite`], with the host's statement facts when it sent them: a statement they show naming no
/// masked table needs no rewrite, so it is not parsed at all. Without facts (or when they say the
/// text does not parse) the statement is parsed and judged as [`rewrite`] does.
pub fn rewrite_with(
    cfg: &Config,
    identity: Option<&str>,
    sql: &str,
    facts: Option<&StatementFacts>,
) -> Result<Option<String>, String> {
    let active: Vec<&Rule> =
        cfg.rules.iter().filter(|r| !identity.is_some_and(|id| r.unmask_roles.iter().any(|u| u == id))).collect();
    if active.is_empty() {
        return Ok(None);
    }
    if let Some(f) = facts
        && f.parse_error.is_none()
        && !facts_name_masked_table(&active, f)
    {
        return Ok(None);
    }
    let mut statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) => s,
        Err(e) => {
            return match names_masked_table(&active, sql) {
                Some(t) => {
                    Err(format!("column-mask: the statement does not parse ({e}) and names masked table {t}; refused"))
                }
                None => Ok(None),
            };
        }
    };
    let masker = Masker { cfg, active };
    let mut changed = false;
    for s in &mut statements {
        changed |= masker.process_statement(s, &[])?;
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(statements.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))
}
