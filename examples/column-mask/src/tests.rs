use super::*;
use mask::{Config, rewrite};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

fn cfg() -> Config {
    Config::from_lookup(|k| match k {
        "rules" => Some(
            r#"[{"table": "users", "column": "ssn", "mask_function": "mask_ssn", "unmask_role": "compliance_officer"},
                {"table": "users", "column": "email", "mask_function": "mask_email", "unmask_role": ["support_lead", "compliance_officer"]},
                {"table": "payments", "column": "card_number", "mask_function": "mask_card", "unmask_role": "billing_admin"}]"#
                .into(),
        ),
        "table_columns" => Some(r#"{"users": ["id", "name", "email", "ssn"], "orders": ["id", "customer_id", "total"], "payments": ["id", "card_number", "Amount"]}"#.into()),
        _ => None,
    })
    .unwrap()
}

fn reparses(sql: &str) {
    if let Err(e) = Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        panic!("rewritten SQL {sql:?} does not parse: {e}");
    }
}

/// The rewrite for `alice` (no unmask role); asserts it is valid PostgreSQL.
#[track_caller]
fn masked(sql: &str) -> String {
    match rewrite(&cfg(), Some("alice"), sql) {
        Ok(Some(out)) => {
            reparses(&out);
            out
        }
        other => panic!("{sql}: expected a rewrite, got {other:?}"),
    }
}

#[track_caller]
fn untouched(sql: &str, who: &str) {
    assert_eq!(rewrite(&cfg(), Some(who), sql), Ok(None), "{sql} as {who}");
}

#[track_caller]
fn refused(sql: &str, needle: &str) {
    match rewrite(&cfg(), Some("alice"), sql) {
        Err(r) => assert!(r.contains(needle), "{sql}: {r:?} lacks {needle:?}"),
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_projected_column_is_wrapped_and_keeps_its_name() {
    assert_eq!(
        masked("SELECT id, name, ssn FROM users WHERE id = 7"),
        "SELECT id, name, mask_ssn(ssn) AS ssn FROM users WHERE id = 7"
    );
    assert_eq!(masked("SELECT ssn AS tax_id FROM users"), "SELECT mask_ssn(ssn) AS tax_id FROM users");
    assert_eq!(masked("SELECT SSN FROM USERS WHERE ID = 7"), "SELECT mask_ssn(SSN) AS SSN FROM USERS WHERE ID = 7");
    assert_eq!(masked("SELECT \"ssn\" FROM \"users\""), "SELECT mask_ssn(\"ssn\") AS \"ssn\" FROM \"users\"");
}

#[test]
fn qualified_and_aliased_columns_are_wrapped() {
    assert_eq!(
        masked("SELECT u.ssn, u.name FROM users u WHERE u.id = 7"),
        "SELECT mask_ssn(u.ssn) AS ssn, u.name FROM users u WHERE u.id = 7"
    );
    assert_eq!(masked("SELECT users.ssn FROM users"), "SELECT mask_ssn(users.ssn) AS ssn FROM users");
    assert_eq!(
        masked("SELECT public.users.ssn FROM public.users"),
        "SELECT mask_ssn(public.users.ssn) AS ssn FROM public.users"
    );
    assert_eq!(masked("SELECT x.ssn FROM users AS x"), "SELECT mask_ssn(x.ssn) AS ssn FROM users AS x");
}

#[test]
fn masked_columns_inside_expressions_are_wrapped_too() {
    assert_eq!(masked("SELECT upper(email) FROM users"), "SELECT upper(mask_email(email)) FROM users");
    assert_eq!(
        masked("SELECT substr(ssn, 1, 3) AS p FROM users"),
        "SELECT SUBSTR(mask_ssn(ssn), 1, 3) AS p FROM users"
    );
    assert_eq!(
        masked("SELECT email || ' <' || name || '>' AS contact FROM users"),
        "SELECT mask_email(email) || ' <' || name || '>' AS contact FROM users"
    );
    assert_eq!(
        masked("SELECT CASE WHEN ssn IS NULL THEN 'none' ELSE ssn END FROM users"),
        "SELECT CASE WHEN mask_ssn(ssn) IS NULL THEN 'none' ELSE mask_ssn(ssn) END FROM users"
    );
    assert_eq!(masked("SELECT ssn::text FROM users"), "SELECT mask_ssn(ssn)::TEXT FROM users");
}

#[test]
fn select_star_is_expanded_from_table_columns() {
    assert_eq!(
        masked("SELECT * FROM users WHERE id = 7"),
        "SELECT users.id, users.name, mask_email(users.email) AS email, mask_ssn(users.ssn) AS ssn FROM users WHERE id = 7"
    );
    assert_eq!(
        masked("SELECT u.* FROM users u"),
        "SELECT u.id, u.name, mask_email(u.email) AS email, mask_ssn(u.ssn) AS ssn FROM users u"
    );
    assert_eq!(
        masked("SELECT * FROM orders o JOIN users u ON u.id = o.customer_id"),
        "SELECT o.*, u.id, u.name, mask_email(u.email) AS email, mask_ssn(u.ssn) AS ssn FROM orders o JOIN users u ON u.id = o.customer_id"
    );
    assert_eq!(
        masked("SELECT * FROM customers_view v JOIN users u ON true"),
        "SELECT v.*, u.id, u.name, mask_email(u.email) AS email, mask_ssn(u.ssn) AS ssn FROM customers_view v JOIN users u ON true"
    );
    assert_eq!(
        masked("SELECT * FROM payments"),
        "SELECT payments.id, mask_card(payments.card_number) AS card_number, payments.\"Amount\" FROM payments"
    );
}

#[test]
fn subqueries_ctes_and_set_operations_are_masked_recursively() {
    assert_eq!(
        masked("SELECT name FROM (SELECT name, ssn FROM users) s WHERE s.ssn LIKE '1%'"),
        "SELECT name FROM (SELECT name, mask_ssn(ssn) AS ssn FROM users) s WHERE s.ssn LIKE '1%'"
    );
    assert_eq!(
        masked("SELECT * FROM (SELECT * FROM users WHERE id < 100) s"),
        "SELECT * FROM (SELECT users.id, users.name, mask_email(users.email) AS email, mask_ssn(users.ssn) AS ssn FROM users WHERE id < 100) s"
    );
    assert_eq!(
        masked("WITH u AS (SELECT id, ssn FROM users) SELECT ssn FROM u"),
        "WITH u AS (SELECT id, mask_ssn(ssn) AS ssn FROM users) SELECT ssn FROM u"
    );
    assert_eq!(
        masked("SELECT id, (SELECT ssn FROM users x WHERE x.id = o.customer_id) FROM orders o"),
        "SELECT id, (SELECT mask_ssn(ssn) AS ssn FROM users x WHERE x.id = o.customer_id) FROM orders o"
    );
    assert_eq!(
        masked("SELECT ssn FROM users UNION SELECT ssn FROM former_users"),
        "SELECT mask_ssn(ssn) AS ssn FROM users UNION SELECT ssn FROM former_users"
    );
    assert_eq!(
        masked(
            "SELECT id FROM orders WHERE customer_id IN (SELECT id FROM users WHERE email = 'x') OR EXISTS (SELECT ssn FROM users)"
        ),
        "SELECT id FROM orders WHERE customer_id IN (SELECT id FROM users WHERE email = 'x') OR EXISTS (SELECT mask_ssn(ssn) AS ssn FROM users)"
    );
}

#[test]
fn correlated_references_resolve_to_the_enclosing_query() {
    // Inside the subquery `ssn` is users.ssn of the outer query: orders has no such column.
    assert_eq!(
        masked("SELECT (SELECT ssn FROM orders o WHERE o.customer_id = u.id LIMIT 1) FROM users u"),
        "SELECT (SELECT mask_ssn(ssn) AS ssn FROM orders o WHERE o.customer_id = u.id LIMIT 1) FROM users u"
    );
    assert_eq!(
        masked("SELECT (SELECT u.email FROM orders o LIMIT 1) FROM users u"),
        "SELECT (SELECT mask_email(u.email) AS email FROM orders o LIMIT 1) FROM users u"
    );
    // A CTE named like nothing masked shadows nothing; a column of the CTE is not masked.
    untouched("WITH s AS (SELECT 1 AS ssn) SELECT ssn FROM s", "alice");
}

#[test]
fn returning_copy_and_create_as_are_masked() {
    assert_eq!(
        masked("UPDATE users SET name = 'x' WHERE id = 7 RETURNING ssn"),
        "UPDATE users SET name = 'x' WHERE id = 7 RETURNING mask_ssn(ssn) AS ssn"
    );
    assert_eq!(
        masked("DELETE FROM users u WHERE id = 7 RETURNING u.email"),
        "DELETE FROM users u WHERE id = 7 RETURNING mask_email(u.email) AS email"
    );
    assert_eq!(
        masked("COPY (SELECT id, ssn FROM users) TO STDOUT"),
        "COPY (SELECT id, mask_ssn(ssn) AS ssn FROM users) TO STDOUT"
    );
    assert_eq!(
        masked("CREATE TABLE leak AS SELECT ssn FROM users"),
        "CREATE TABLE leak AS SELECT mask_ssn(ssn) AS ssn FROM users"
    );
    assert_eq!(
        masked("INSERT INTO leak SELECT ssn FROM users"),
        "INSERT INTO leak SELECT mask_ssn(ssn) AS ssn FROM users"
    );
}

#[test]
fn what_cannot_be_masked_is_refused() {
    refused("SELECT row_to_json(u) FROM users u WHERE id = 7", "whole-row reference u");
    refused("SELECT to_json(u.*) FROM users u", "u.*");
    refused("SELECT users FROM users", "whole-row reference users");
    refused("COPY users TO STDOUT", "COPY users TO");
    untouched("SELECT o.*, u.name FROM orders o JOIN users u ON true", "alice");
    let no_columns = Config::from_lookup(|k| {
        (k == "rules").then(|| r#"[{"table": "people", "column": "ssn", "mask_function": "m"}]"#.to_owned())
    })
    .unwrap();
    let r = rewrite(&no_columns, None, "SELECT * FROM people").unwrap_err();
    assert!(r.contains("table_columns") && r.contains("people"), "{r}");
    refused("SELEC ssn FROM users", "does not parse");
    assert_eq!(
        rewrite(&cfg(), Some("alice"), "SELEC 1 FROM orders"),
        Ok(None),
        "unparseable but names no masked table"
    );
}

#[test]
fn unmask_roles_see_their_columns() {
    untouched("SELECT id, ssn, email FROM users", "compliance_officer");
    assert_eq!(
        rewrite(&cfg(), Some("support_lead"), "SELECT email, ssn FROM users"),
        Ok(Some("SELECT email, mask_ssn(ssn) AS ssn FROM users".into()))
    );
    untouched("SELECT card_number FROM payments", "billing_admin");
    assert!(rewrite(&cfg(), None, "SELECT ssn FROM users").unwrap().is_some(), "no identity: masked");
}

#[test]
fn statements_without_masked_projections_are_left_alone() {
    for sql in [
        "SELECT id, name FROM users WHERE ssn = '123-45-6789'",
        "SELECT id, total FROM orders",
        "SELECT * FROM orders",
        "SELECT count(*) FROM users",
        "INSERT INTO users (id, ssn) VALUES (1, '1')",
        "UPDATE users SET ssn = NULL WHERE id = 1",
        "SELECT ssn FROM former_users",
        "SELECT 'ssn' FROM users",
        "BEGIN",
    ] {
        untouched(sql, "alice");
    }
}

#[test]
fn every_rewrite_of_the_demo_corpus_is_valid_postgresql() {
    let corpus = include_str!("../../corpus/sql.jsonl");
    let mut rewritten = 0;
    for line in corpus.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (sql, who) = (v["sql"].as_str().unwrap(), v["identity"].as_str());
        if let Ok(Some(out)) = rewrite(&cfg(), who, sql) {
            reparses(&out);
            rewritten += 1;
        }
    }
    assert!(rewritten >= 20, "only {rewritten} corpus statements were rewritten");
}

#[test]
fn bad_rules_are_refused_with_the_key() {
    let e = Config::from_lookup(|k| (k == "rules").then(|| "{}".to_owned())).unwrap_err();
    assert!(e.starts_with("column-mask: config key rules: expected a JSON array"), "{e}");
    let e = Config::from_lookup(|k| {
        (k == "rules").then(|| r#"[{"table": "t", "column": "c", "mask_function": "x); DROP TABLE t; --"}]"#.to_owned())
    })
    .unwrap_err();
    assert!(e.contains("mask_function must be a function name"), "{e}");
}

#[test]
fn the_hook_rewrites_blocks_and_continues() {
    testing::reset();
    testing::set_config(
        "rules",
        r#"[{"table": "users", "column": "ssn", "mask_function": "mask_ssn", "unmask_role": "auditor"}]"#,
    );
    let ctx = |sql: &str, who: &str| {
        let mut c = QueryContext { query: sql.into(), ..Default::default() };
        c.hook_context.identity = Some(who.into());
        c
    };
    assert_eq!(
        mask_columns(&ctx("SELECT ssn FROM users", "bob")),
        PreQueryResult::Rewrite { sql: "SELECT mask_ssn(ssn) AS ssn FROM users".into() }
    );
    assert_eq!(mask_columns(&ctx("SELECT ssn FROM users", "auditor")), PreQueryResult::Continue);
    assert!(matches!(mask_columns(&ctx("SELECT * FROM users", "bob")), PreQueryResult::Block { .. }));
    testing::set_config("rules", "nope");
    assert!(
        matches!(mask_columns(&ctx("SELECT 1", "bob")), PreQueryResult::Block { reason } if reason.contains("config key rules"))
    );
}

#[test]
fn from_only_and_column_aliases_cannot_hide_a_masked_table() {
    assert_eq!(masked("SELECT ssn FROM ONLY users"), "SELECT mask_ssn(ssn) AS ssn FROM ONLY users");
    assert_eq!(
        masked("SELECT users.ssn FROM ONLY users WHERE id = 1"),
        "SELECT mask_ssn(users.ssn) AS ssn FROM ONLY users WHERE id = 1"
    );
    refused("SELECT d FROM users AS u(a, b, c, d)", "column aliases");
    refused("SELECT (u).ssn FROM users u", "whole-row reference u");
    assert_eq!(
        masked("SELECT * FROM users u, LATERAL (SELECT u.ssn) l"),
        "SELECT u.id, u.name, mask_email(u.email) AS email, mask_ssn(u.ssn) AS ssn, l.* FROM users u, LATERAL (SELECT mask_ssn(u.ssn) AS ssn) l"
    );
    assert_eq!(masked("SELECT ARRAY(SELECT ssn FROM users)"), "SELECT ARRAY(SELECT mask_ssn(ssn) AS ssn FROM users)");
    assert_eq!(masked("SELECT json_agg(ssn) FROM users"), "SELECT json_agg(mask_ssn(ssn)) FROM users");
    assert_eq!(
        masked("EXPLAIN ANALYZE SELECT ssn FROM users"),
        "EXPLAIN ANALYZE SELECT mask_ssn(ssn) AS ssn FROM users"
    );
    assert_eq!(masked("PREPARE p AS SELECT ssn FROM users"), "PREPARE p AS SELECT mask_ssn(ssn) AS ssn FROM users");
    assert_eq!(
        masked("VALUES ((SELECT ssn FROM users LIMIT 1))"),
        "VALUES ((SELECT mask_ssn(ssn) AS ssn FROM users LIMIT 1))"
    );
}

/// With the host's facts a statement naming no masked table is not parsed; the decisions over the
/// demo corpus are the same as parsing every statement.
#[test]
fn host_facts_skip_the_parse_and_decide_the_same_on_the_corpus() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus/sql.jsonl")).unwrap();
    let (mut skipped, mut decided) = (0, 0);
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let (sql, who) = (v["sql"].as_str().unwrap_or_default(), v["identity"].as_str());
        let facts = helios_plugin_facts::pg::extract(sql);
        let parsed = rewrite(&cfg(), who, sql);
        let with_facts = mask::rewrite_with(&cfg(), who, sql, Some(&facts));
        match (&parsed, &with_facts) {
            (Err(_), Err(_)) => decided += 1,
            _ => assert_eq!(parsed, with_facts, "{sql}"),
        }
        decided += usize::from(matches!(parsed, Ok(Some(_))));
        skipped +=
            usize::from(facts.parse_error.is_none() && !facts.tables().iter().any(|t| t == "users" || t == "payments"));
    }
    assert!(decided >= 20 && skipped >= 100, "{decided} rewritten or blocked, {skipped} skipped");
}
