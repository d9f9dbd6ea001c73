//! The restriction rule and tenant-style equalities, on a small condition form both extractors
//! lower their parser's expressions into, so the rule is written (and tested) once.

#![cfg_attr(not(any(feature = "pg", feature = "guest")), allow(dead_code))]

use crate::{Equality, Restriction, insert_sorted};

/// What the rule needs to know about one side of a comparison.
#[derive(Debug, Clone, Default)]
pub(crate) struct Operand {
    /// The operand is a bare column reference: (qualifier, column).
    pub plain: Option<(Option<String>, String)>,
    /// Qualifiers of the column references in the operand outside subqueries (`None` = unqualified).
    pub columns: Vec<Option<String>>,
    /// Qualifiers of the qualified column references inside subqueries (unqualified ones there are
    /// taken to be the subquery's own).
    pub subquery_qualifiers: Vec<String>,
    /// Tables the operand's subqueries read.
    pub subquery_tables: Vec<String>,
    /// The operand is a parameter (`$1`).
    pub param: bool,
    /// The operand is a string literal with this value.
    pub string: Option<String>,
}

impl Operand {
    fn has_columns(&self) -> bool {
        !self.columns.is_empty() || !self.subquery_qualifiers.is_empty() || !self.subquery_tables.is_empty()
    }
}

/// A condition, as far as the rule looks into it.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    /// `=`, `<`, `<=`, `>`, `>=` (anything else is `Other`).
    Cmp(&'static str, Operand, Operand),
    /// `x IN (list)` or `x = ANY (...)`.
    In(Operand, Vec<Operand>),
    Between(Operand, Operand, Operand),
    /// `x LIKE p` (`ilike` for `ILIKE`).
    Like(&'static str, Operand, Operand),
    Other,
}

/// The tables of one query level with their aliases.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    /// (resolved name, alias).
    pub tables: Vec<(String, Option<String>)>,
}

impl Scope {
    /// Whether qualifier `q` denotes `table` in this scope.
    fn denotes(&self, q: &str, table: &str) -> bool {
        self.tables.iter().any(|(name, alias)| {
            name == table
                && match alias {
                    Some(a) => a == q || name == q || crate::last_part(name) == q,
                    None => name == q || crate::last_part(name) == q,
                }
        })
    }

    /// The table qualifier `q` denotes, if any.
    pub fn resolve(&self, q: &str) -> Option<String> {
        self.tables
            .iter()
            .find(|(_, alias)| alias.as_deref() == Some(q))
            .or_else(|| self.tables.iter().find(|(name, _)| name == q || crate::last_part(name) == q))
            .map(|(name, _)| name.clone())
    }

    fn may_belong(&self, q: &Option<String>, table: &str) -> bool {
        match q {
            None => true,
            Some(q) => self.denotes(q, table),
        }
    }

    fn references(&self, o: &Operand, table: &str) -> bool {
        o.columns.iter().any(|q| self.may_belong(q, table))
            || o.subquery_qualifiers.iter().any(|q| self.denotes(q, table))
            || o.subquery_tables.iter().any(|t| t == table || crate::last_part(t) == crate::last_part(table))
    }

    fn column_of<'o>(&self, o: &'o Operand, table: &str) -> Option<&'o str> {
        let (q, c) = o.plain.as_ref()?;
        self.may_belong(q, table).then_some(c.as_str())
    }

    /// The first (column, op) by which `cond` restricts `table`.
    fn restricts(&self, cond: &Cond, table: &str) -> Option<(String, &'static str)> {
        match cond {
            Cond::And(cs) => cs.iter().find_map(|c| self.restricts(c, table)),
            Cond::Or(cs) => {
                let firsts: Option<Vec<_>> = cs.iter().map(|c| self.restricts(c, table)).collect();
                let firsts = firsts?;
                let first = firsts.into_iter().next()?;
                Some((first.0, "or"))
            }
            Cond::Cmp(op, l, r) => {
                let side = |col: &Operand, val: &Operand| {
                    let c = self.column_of(col, table)?;
                    (!self.references(val, table)).then(|| (c.to_owned(), *op))
                };
                side(l, r).or_else(|| side(r, l))
            }
            Cond::In(col, items) => {
                let c = self.column_of(col, table)?;
                (!items.is_empty() && !items.iter().any(|i| self.references(i, table))).then(|| (c.to_owned(), "in"))
            }
            Cond::Between(col, lo, hi) => {
                let c = self.column_of(col, table)?;
                (!self.references(lo, table) && !self.references(hi, table)).then(|| (c.to_owned(), "between"))
            }
            Cond::Like(op, col, pat) => {
                let c = self.column_of(col, table)?;
                let prefix = match &pat.string {
                    Some(s) => !s.is_empty() && !s.starts_with(['%', '_']),
                    None => pat.param,
                };
                (prefix && !self.references(pat, table)).then(|| (c.to_owned(), *op))
            }
            Cond::Other => None,
        }
    }

    /// Applies the rule to every table of the scope over the top-level conditions `conds`.
    pub fn restrictions(&self, conds: &[Cond]) -> Vec<Restriction> {
        let mut out = Vec::new();
        for (table, _) in &self.tables {
            if out.iter().any(|r: &Restriction| &r.table == table) {
                continue;
            }
            if let Some((column, op)) = conds.iter().find_map(|c| self.restricts(c, table)) {
                out.push(Restriction { table: table.clone(), column, op: op.to_owned() });
            }
        }
        out
    }

    /// The tenant-style equalities among the top-level conditions.
    pub fn equalities(&self, conds: &[Cond], out: &mut Vec<Equality>) {
        for c in conds {
            let Cond::Cmp("=", l, r) = c else { continue };
            for (col, val) in [(l, r), (r, l)] {
                if let Some((q, column)) = &col.plain
                    && !val.has_columns()
                    && val.plain.is_none()
                {
                    let table = q.as_ref().map(|q| self.resolve(q).unwrap_or_else(|| q.clone()));
                    insert_sorted(out, Equality { table, column: column.clone() });
                }
            }
        }
    }
}

/// Flattens nested `AND`s into the list of top-level conditions.
pub(crate) fn top_level(cond: Cond, out: &mut Vec<Cond>) {
    match cond {
        Cond::And(cs) => cs.into_iter().for_each(|c| top_level(c, out)),
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(q: Option<&str>, c: &str) -> Operand {
        Operand {
            plain: Some((q.map(str::to_owned), c.to_owned())),
            columns: vec![q.map(str::to_owned)],
            ..Operand::default()
        }
    }
    fn lit() -> Operand {
        Operand::default()
    }
    fn scope(t: &[(&str, Option<&str>)]) -> Scope {
        Scope { tables: t.iter().map(|(n, a)| (n.to_string(), a.map(str::to_owned))).collect() }
    }

    #[test]
    fn a_column_compared_with_a_constant_restricts_its_table_only() {
        let s = scope(&[("orders", Some("o")), ("customers", Some("c"))]);
        let r = s.restrictions(&[Cond::Cmp("=", col(Some("o"), "id"), lit())]);
        assert_eq!(r, vec![Restriction { table: "orders".into(), column: "id".into(), op: "=".into() }]);
        // A join condition restricts each side by the other.
        let r = s.restrictions(&[Cond::Cmp("=", col(Some("o"), "customer_id"), col(Some("c"), "id"))]);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn self_comparisons_self_subqueries_and_ors_of_them_do_not_restrict() {
        let s = scope(&[("orders", None)]);
        assert!(s.restrictions(&[Cond::Cmp("=", col(None, "x"), col(None, "x"))]).is_empty());
        let sub = Operand { subquery_tables: vec!["orders".into()], ..Operand::default() };
        assert!(s.restrictions(&[Cond::In(col(None, "id"), vec![sub])]).is_empty());
        assert!(s.restrictions(&[Cond::Or(vec![Cond::Cmp("=", col(None, "id"), lit()), Cond::Other])]).is_empty());
        let both = Cond::Or(vec![Cond::Cmp("=", col(None, "id"), lit()), Cond::Cmp("<", col(None, "id"), lit())]);
        assert_eq!(s.restrictions(&[both])[0].op, "or");
    }

    #[test]
    fn like_restricts_only_with_a_prefix() {
        let s = scope(&[("t", None)]);
        let pat = |p: &str| Operand { string: Some(p.into()), ..Operand::default() };
        assert!(!s.restrictions(&[Cond::Like("like", col(None, "n"), pat("ab%"))]).is_empty());
        assert!(s.restrictions(&[Cond::Like("like", col(None, "n"), pat("%ab"))]).is_empty());
        assert!(s.restrictions(&[Cond::Like("like", col(None, "n"), pat("_b"))]).is_empty());
        let param = Operand { param: true, ..Operand::default() };
        assert!(!s.restrictions(&[Cond::Like("like", col(None, "n"), param)]).is_empty());
    }

    #[test]
    fn equalities_resolve_aliases_and_skip_column_values() {
        let s = scope(&[("orders", Some("o"))]);
        let mut eq = Vec::new();
        s.equalities(
            &[
                Cond::Cmp("=", col(Some("o"), "tenant_id"), lit()),
                Cond::Cmp("=", col(None, "a"), col(None, "b")),
                Cond::Cmp("=", lit(), col(None, "status")),
            ],
            &mut eq,
        );
        assert_eq!(
            eq,
            vec![
                Equality { table: None, column: "status".into() },
                Equality { table: Some("orders".into()), column: "tenant_id".into() },
            ]
        );
    }
}
