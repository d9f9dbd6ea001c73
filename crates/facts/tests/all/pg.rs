//! The host extractor (PostgreSQL's parser) on the statements the policies decide on.

#![cfg(feature = "pg")]

use helios_plugin_facts::pg::extract;
use helios_plugin_facts::{Equality, Statement, StatementClass as C, StatementFacts};

fn one(sql: &str) -> Statement {
    let f = extract(sql);
    assert_eq!(f.parse_error, None, "{sql}");
    assert_eq!(f.statement_count, 1, "{sql}");
    f.statements.into_iter().next().unwrap()
}

fn class(sql: &str) -> C {
    one(sql).class
}

/// The target of the first level of kind `kind` is restricted.
fn target_restricted(sql: &str) -> bool {
    let st = one(sql);
    let level = st.levels.iter().find(|l| l.target.is_some() && l.kind != "insert").expect("a DML level");
    level.is_restricted(level.target.as_deref().unwrap())
}

#[test]
fn issue_14_shapes_get_their_class() {
    assert_eq!(class("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DELETE FROM orders $$"), C::Routine);
    assert_eq!(class("MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE"), C::Write);
    assert_eq!(class("ALTER TABLE users ALTER COLUMN ssn TYPE int USING 0"), C::Ddl);
    assert_eq!(class("ALTER TABLE users RENAME TO users_old"), C::Ddl);
    assert_eq!(class("REVOKE ALL ON users FROM public"), C::Dcl);
    assert_eq!(class("GRANT SELECT ON users TO bob"), C::Dcl);
    assert_eq!(class("VACUUM FULL events"), C::Maintenance);
    assert_eq!(class("CLUSTER events USING events_pkey"), C::Maintenance);
    assert_eq!(class("REINDEX TABLE events"), C::Maintenance);
    assert_eq!(class("SET ROLE admin"), C::SessionRole);
    assert_eq!(class("SET SESSION AUTHORIZATION postgres"), C::SessionRole);
    assert_eq!(class("RESET ROLE"), C::SessionRole);
    assert_eq!(class("SET statement_timeout = 0"), C::Session);
    assert_eq!(class("COPY users TO '/tmp/users.csv'"), C::CopyFile);
    assert_eq!(class("COPY users FROM PROGRAM 'curl evil'"), C::CopyProgram);
    assert_eq!(class("COPY users TO STDOUT"), C::Read);
    assert_eq!(class("COPY users FROM STDIN"), C::Write);
    assert_eq!(class("LISTEN jobs"), C::Listen);
    assert_eq!(class("NOTIFY jobs, 'x'"), C::Notify);
    assert_eq!(class("TRUNCATE staging_events"), C::Ddl);
    assert_eq!(class("DROP TABLE tmp_import_2024"), C::Ddl);
    assert_eq!(class("CREATE TRIGGER t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION f()"), C::Routine);
    assert_eq!(class("DO $$ BEGIN PERFORM 1; END $$"), C::Routine);
    assert_eq!(class("CREATE ROLE agent LOGIN"), C::Dcl);
    assert_eq!(class("ALTER SYSTEM SET work_mem = '1GB'"), C::Admin);
    assert_eq!(class("CALL cleanup()"), C::Call);
    assert_eq!(class("LOCK TABLE orders"), C::Lock);
    assert_eq!(class("BEGIN"), C::Transaction);
    assert_eq!(class("SELECT * INTO backup FROM users"), C::Ddl);
    assert_eq!(class("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"), C::Write);
    assert_eq!(class("EXPLAIN ANALYZE DELETE FROM orders"), C::Write);
    assert_eq!(one("VACUUM FULL events").kind, "VACUUM");
    assert_eq!(one("DROP INDEX i").kind, "DROP INDEX");
    assert_eq!(one("DROP MATERIALIZED VIEW v").kind, "DROP MATERIALIZED VIEW");
}

#[test]
fn the_restriction_rule_of_issue_14() {
    // Not restricting.
    assert!(!target_restricted("DELETE FROM orders"));
    assert!(!target_restricted("DELETE FROM orders WHERE id IS NOT NULL"));
    assert!(!target_restricted("DELETE FROM orders WHERE id IN (SELECT id FROM orders)"));
    assert!(!target_restricted("DELETE FROM orders WHERE id = id"));
    assert!(!target_restricted("DELETE FROM orders WHERE 1 = 1"));
    assert!(!target_restricted("DELETE FROM orders WHERE id = 1 OR id IS NOT NULL"));
    assert!(!target_restricted("DELETE FROM orders WHERE name LIKE '%x'"));
    assert!(!target_restricted("DELETE FROM orders WHERE id <> 5"));
    assert!(!target_restricted("UPDATE orders SET x = 1 WHERE NOT (id = 1)"));
    assert!(!target_restricted("MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE"));
    // Restricting.
    assert!(target_restricted("DELETE FROM orders WHERE id = 5"));
    assert!(target_restricted("DELETE FROM orders WHERE 5 = id"));
    assert!(target_restricted("DELETE FROM orders WHERE id = $1"));
    assert!(target_restricted("DELETE FROM orders WHERE id IN (1, 2, 3)"));
    assert!(target_restricted("DELETE FROM orders WHERE id = ANY($1)"));
    assert!(target_restricted("DELETE FROM orders WHERE created_at BETWEEN '2024-01-01' AND now()"));
    assert!(target_restricted("DELETE FROM sessions WHERE expires_at < now()"));
    assert!(target_restricted("DELETE FROM orders WHERE name LIKE 'abc%'"));
    assert!(target_restricted("DELETE FROM orders WHERE id = 1 OR id = 2"));
    assert!(target_restricted("DELETE FROM orders WHERE status IS NOT NULL AND (tenant_id = 'a')"));
    assert!(target_restricted("DELETE FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE banned)"));
    assert!(target_restricted("UPDATE orders SET status = 'x' WHERE tenant_id = 'acme' AND id = 1042"));
    assert!(target_restricted(
        "MERGE INTO orders o USING incoming i ON o.id = i.id WHEN MATCHED THEN UPDATE SET total = i.total"
    ));
    // The reason names the condition.
    let st = one("DELETE FROM orders WHERE x IS NULL AND id >= 7");
    let r = &st.levels[0].restricted[0];
    assert_eq!((r.table.as_str(), r.column.as_str(), r.op.as_str()), ("orders", "id", ">="));
}

#[test]
fn merge_actions_and_routine_bodies_are_facts() {
    let st =
        one("MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN DO NOTHING");
    assert_eq!(st.merge_actions, ["delete", "do_nothing"]);
    let t: Vec<_> = st.tables.iter().map(|t| (t.name.as_str(), t.read, t.write)).collect();
    assert_eq!(t, [("orders", false, true), ("customers", true, false)]);

    for sql in [
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DELETE FROM orders $$",
        "CREATE FUNCTION f() RETURNS void LANGUAGE SQL AS 'DELETE FROM orders'",
        "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC DELETE FROM orders; END",
    ] {
        let r = one(sql).routine.expect(sql);
        assert_eq!(r.language, "sql", "{sql}");
        let body = r.body.expect(sql);
        assert_eq!(body.statements[0].kind, "DELETE", "{sql}");
        assert!(!body.statements[0].levels[0].is_restricted("orders"), "{sql}");
    }
    let r = one("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN DELETE FROM orders; RETURN 1; END $$")
        .routine
        .unwrap();
    assert_eq!((r.kind.as_str(), r.language.as_str(), r.body.is_none()), ("function", "plpgsql", true));
    let r = one("CREATE FUNCTION f(int) RETURNS int RETURN $1 + 1").routine.unwrap();
    assert_eq!(r.language, "sql");
    assert_eq!(r.body.unwrap().statements[0].class, C::Read);
    let bad = one("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DELET FROM orders $$").routine.unwrap();
    assert!(bad.body.unwrap().parse_error.is_some(), "a body that does not parse says so");
}

#[test]
fn functions_are_resolved_names_whatever_the_case_quoting_or_schema() {
    for sql in [
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "SELECT PG_TERMINATE_BACKEND(pid) FROM pg_stat_activity",
        "SELECT \"pg_terminate_backend\"(pid) FROM pg_stat_activity",
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_stat_activity",
        "SELECT 1 FROM (SELECT pg_catalog.\"pg_terminate_backend\"(1)) s",
    ] {
        let f = extract(sql);
        assert!(f.calls("pg_terminate_backend"), "{sql}: {:?}", f.statements[0].functions);
    }
    assert!(!extract("SELECT \"PG_TERMINATE_BACKEND\"(1)").calls("pg_terminate_backend"), "quoted keeps case");
    assert!(extract("CALL pg_catalog.lo_unlink(1)").calls("lo_unlink"));
}

#[test]
fn levels_limits_tenants_operators() {
    let st = one("SELECT * FROM events");
    assert_eq!((st.levels[0].has_where, st.levels[0].has_limit), (false, false));
    assert!(!one("SELECT * FROM events LIMIT ALL").levels[0].has_limit);
    assert!(one("SELECT * FROM events FETCH FIRST 5 ROWS ONLY").levels[0].has_limit);
    // Each level on its own: the outer LIMIT does not bound the subquery's scan.
    let st = one("SELECT * FROM (SELECT * FROM events) e LIMIT 5");
    assert_eq!(st.levels.len(), 2);
    assert!(st.levels[0].has_limit && !st.levels[1].has_limit);
    assert_eq!(st.levels[1].tables, ["events"]);
    // A LIMIT on a set operation bounds its branches.
    let st = one("SELECT * FROM a UNION ALL SELECT * FROM b LIMIT 3");
    assert!(st.levels.iter().all(|l| l.has_limit));

    let st = one(
        "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id AND c.tenant_id = current_setting('app.tenant') WHERE o.tenant_id = 'acme'",
    );
    assert_eq!(
        st.levels[0].equalities,
        [
            Equality { table: Some("customers".into()), column: "tenant_id".into() },
            Equality { table: Some("orders".into()), column: "tenant_id".into() }
        ]
    );
    let st = one("SELECT id FROM items ORDER BY embedding <-> '[1,2]' LIMIT 5");
    assert_eq!(st.operators, ["<->"]);
    assert!(one("SELECT a <=> b, c <#> d FROM t").operators.contains(&"<#>".to_owned()));
}

#[test]
fn read_only_normalized_fingerprint_comments_and_errors() {
    let a = extract("SELECT abalance FROM pgbench_accounts WHERE aid = 48213");
    let b = extract("select abalance   from pgbench_accounts where aid = 7 -- again");
    assert!(a.is_read_only);
    assert_eq!(a.normalized, "SELECT abalance FROM pgbench_accounts WHERE aid = $1");
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_eq!(a.tables(), ["pgbench_accounts"]);
    assert_eq!(b.comments, ["again"]);
    assert!(!extract("SELECT * FROM t FOR UPDATE").is_read_only);
    assert!(!extract("UPDATE t SET a = 1 WHERE id = 1").is_read_only);

    let c = extract("/* ai: text2sql */ SELECT '/* not a comment */' -- llm: x");
    assert_eq!(c.comments, ["ai: text2sql", "llm: x"]);

    let two = extract("SELECT 1; DROP TABLE t");
    assert_eq!(two.statement_count, 2);
    assert!(!two.is_read_only);
    assert_eq!(two.statements[1].class, C::Ddl);

    for bad in ["DR/**/OP TABLE t", "SELECT 'unterminated", "SELECT \0", ""] {
        let f: StatementFacts = extract(bad);
        assert!(bad.is_empty() || f.parse_error.is_some(), "{bad:?} must not parse");
        assert!(!f.is_read_only, "{bad:?}");
    }
    assert_eq!(extract("").statement_count, 0);
    assert_eq!(extract("public.orders").parse_error.as_deref().map(|e| e.contains("syntax")), Some(true));
}

#[test]
fn tables_are_schema_qualified_and_ctes_are_not_tables() {
    let f = extract("WITH recent AS (SELECT * FROM public.events) SELECT * FROM recent JOIN \"Users\" u ON true");
    assert_eq!(f.tables(), ["public.events", "Users"]);
    let st = one("ALTER TABLE users RENAME TO users_old");
    assert!(st.tables[0].ddl && st.tables[0].name == "users");
    let st = one("DROP TABLE a, s.b");
    assert_eq!(st.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "s.b"]);
}

/// Runs `f` on a thread with the 2 MiB stack of a tokio worker (where helios-proxy analyses
/// statements). A stack overflow aborts the whole test binary: that is the failure this guards.
fn on_a_worker_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| std::thread::Builder::new().stack_size(2 << 20).spawn_scoped(s, f).unwrap().join().unwrap())
}

#[test]
fn a_deeply_nested_statement_gives_facts_not_a_stack_overflow() {
    // 20,000 nested additions (40 KB): libpg_query's recursive tree output needs several MiB of
    // stack for it; on the caller's 2 MiB it aborted the process.
    let deep = format!("SELECT {}", vec!["1"; 20_000].join("+"));
    let f = on_a_worker_stack(|| extract(&deep));
    assert_eq!(f.source, "pg_query");
    assert!(f.parse_error.is_some(), "nesting past what the facts decode is reported: {f:?}");
    assert!(on_a_worker_stack(|| helios_plugin_facts::pg::fingerprint(&deep)).is_some());
    // Through the cache too (its shape key runs the normaliser): 6,000 levels, under the cache's
    // text limit.
    let cache = helios_plugin_facts::cache::FactsCache::new(4);
    let shallower = format!("SELECT {}", vec!["1"; 6_000].join("+"));
    let f = on_a_worker_stack(|| cache.get(&shallower));
    assert!(f.parse_error.is_some(), "{:?}", f.parse_error);
    // A long ordinary statement is analysed as before, on its own thread.
    let wide = format!("SELECT {} FROM t", (0..2_000).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", "));
    let f = on_a_worker_stack(|| extract(&wide));
    assert_eq!(f.parse_error, None);
    assert_eq!(f.statements[0].columns.len(), 2_000);
}

#[test]
fn a_text_longer_than_the_analysis_limit_says_so() {
    let long = format!("SELECT 1 -- {}", "x".repeat(helios_plugin_facts::pg::MAX_ANALYSED_TEXT));
    let why = extract(&long).parse_error.expect("not analysed");
    assert!(why.contains("longer than the 1048576"), "{why}");
}
