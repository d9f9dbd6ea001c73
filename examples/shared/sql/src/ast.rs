//! Walks over sqlparser's AST (PostgreSQL dialect) that several plugins need.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, Ident, JoinConstraint, JoinOperator, LimitClause, ObjectName, ObjectNamePart, Query,
    TableAlias, TableFactor, TableWithJoins, Value, Visit, Visitor,
};

/// The parts of a name, lower-cased.
pub fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.to_lowercase(),
            other => other.to_string().to_lowercase(),
        })
        .collect()
}

/// sqlparser 0.63 reads `FROM ONLY t` as the table `ONLY` aliased `t`; PostgreSQL reads the table
/// `t` (without its inheritance children). Returns `t` for that shape.
pub fn only_table(name: &ObjectName, alias: Option<&TableAlias>) -> Option<ObjectName> {
    let a = alias?;
    let is_only = matches!(name.0.as_slice(), [ObjectNamePart::Identifier(i)] if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("only"));
    (is_only && !a.explicit && a.columns.is_empty()).then(|| ObjectName::from(vec![a.name.clone()]))
}

/// The constraint of a join, for the operators that have one.
pub fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    use JoinOperator::*;
    match op {
        Join(c) | Inner(c) | Left(c) | LeftOuter(c) | Right(c) | RightOuter(c) | FullOuter(c) | CrossJoin(c)
        | Semi(c) | LeftSemi(c) | RightSemi(c) | Anti(c) | LeftAnti(c) | RightAnti(c) | StraightJoin(c) => Some(c),
        _ => None,
    }
}

/// (table name, alias) of every named table in a table factor, through parenthesised joins (not
/// inside derived tables, which are queries of their own).
pub fn collect_instances(tf: &TableFactor, out: &mut Vec<(ObjectName, Option<Ident>)>) {
    match tf {
        TableFactor::Table { name, alias, .. } => match only_table(name, alias.as_ref()) {
            Some(real) => out.push((real, None)),
            None => out.push((name.clone(), alias.as_ref().map(|a| a.name.clone()))),
        },
        TableFactor::NestedJoin { table_with_joins, .. } => {
            collect_instances(&table_with_joins.relation, out);
            for j in &table_with_joins.joins {
                collect_instances(&j.relation, out);
            }
        }
        _ => {}
    }
}

/// Named tables read directly by a FROM item and its joins.
pub fn relations(twj: &TableWithJoins) -> Vec<ObjectName> {
    let mut v = Vec::new();
    collect_instances(&twj.relation, &mut v);
    for j in &twj.joins {
        collect_instances(&j.relation, &mut v);
    }
    v.into_iter().map(|(n, _)| n).collect()
}

/// The top-level `AND`ed terms of a condition (through parentheses).
pub fn and_terms<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            and_terms(left, out);
            and_terms(right, out);
        }
        Expr::Nested(inner) => and_terms(inner, out),
        other => out.push(other),
    }
}

/// Whether a query has a row limit: `LIMIT n` (not `LIMIT ALL`/`LIMIT NULL`), `LIMIT a, b` or
/// `FETCH FIRST`.
pub fn has_limit(q: &Query) -> bool {
    q.fetch.is_some()
        || match &q.limit_clause {
            Some(LimitClause::LimitOffset { limit: Some(l), .. }) => {
                !matches!(l, Expr::Value(v) if v.value == Value::Null)
            }
            Some(LimitClause::OffsetCommaLimit { .. }) => true,
            _ => false,
        }
}

/// Whether some expression of `e`, outside any subquery, satisfies `found`.
pub fn any_expr_outside_subqueries(e: &Expr, found: impl FnMut(&Expr) -> bool) -> bool {
    struct Find<F> {
        depth: usize,
        found: F,
    }
    impl<F: FnMut(&Expr) -> bool> Visitor for Find<F> {
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
            if self.depth == 0 && (self.found)(e) {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    e.visit(&mut Find { depth: 0, found }).is_break()
}

/// Whether `e` references a column outside any subquery.
pub fn references_columns(e: &Expr) -> bool {
    any_expr_outside_subqueries(e, |e| matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)))
}

#[cfg(test)]
mod tests {
    use sqlparser::ast::{SetExpr, Statement};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    use super::*;

    fn query(sql: &str) -> Query {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0) {
            Statement::Query(q) => *q,
            other => panic!("not a query: {other}"),
        }
    }

    fn where_of(sql: &str) -> Expr {
        match *query(sql).body {
            SetExpr::Select(s) => s.selection.unwrap(),
            _ => panic!("not a select"),
        }
    }

    #[test]
    fn from_only_names_the_real_table_and_tables_come_through_nested_joins() {
        let q = query("SELECT * FROM ONLY t, (a JOIN public.b ON true) LEFT JOIN c x ON true");
        let SetExpr::Select(s) = *q.body else { panic!() };
        let names: Vec<String> = s.from.iter().flat_map(relations).map(|n| n.to_string()).collect();
        assert_eq!(names, ["t", "a", "public.b", "c"]);
    }

    #[test]
    fn limits_and_conditions_are_read_as_postgresql_means_them() {
        assert!(has_limit(&query("SELECT 1 LIMIT 5")) && has_limit(&query("SELECT 1 FETCH FIRST 1 ROW ONLY")));
        assert!(!has_limit(&query("SELECT 1 LIMIT ALL")) && !has_limit(&query("SELECT 1")));
        let e = where_of("SELECT 1 FROM t WHERE (a = 1 AND (b = 2)) AND c");
        let mut terms = Vec::new();
        and_terms(&e, &mut terms);
        assert_eq!(terms.iter().map(|t| t.to_string()).collect::<Vec<_>>(), ["a = 1", "b = 2", "c"]);
        assert!(references_columns(&where_of("SELECT 1 FROM t WHERE id > 1")));
        assert!(!references_columns(&where_of("SELECT 1 FROM t WHERE EXISTS (SELECT id FROM u)")));
    }
}
