//! The guardrail's rules, judged on the statement facts (`helios-plugin-facts`), never on the SQL
//! text: case, comments and quoting are settled by the parser before any rule looks. The facts come
//! from the host (PostgreSQL's own parser in helios-proxy) or, from a host that sends none, from the
//! guest's own extraction (sqlparser), see [`helios_plugin_abi::facts`].
//!
//! A statement is refused when
//! 1. it does not parse (fail-closed: PostgreSQL reads `DR/**/OP TABLE t` as `DR OP TABLE t`, a syntax
//!    error, and SQL we cannot read we cannot vouch for),
//! 2. the query holds several statements (`SELECT 1; DROP TABLE t`),
//! 3. its class is not allowed: AI traffic may read (`read`) and change rows (`write`); every other
//!    class (DDL, DCL, routines, maintenance, `SET ROLE`, `COPY` with files or programs, ...) must be
//!    listed in config `allow` ([`DEFAULT_ALLOW`] by default),
//! 4. it defines a routine (when `routine` is allowed) in a language other than SQL, or whose SQL body
//!    breaks a rule (the body is judged like a top-level statement),
//! 5. it calls a function of `deny_functions` (resolved name, any case, quoting or schema),
//! 6. a `DELETE`, `UPDATE` or `MERGE ... THEN UPDATE/DELETE` (also nested in a CTE, `EXPLAIN`,
//!    `PREPARE`) does not restrict its target's rows (the restriction rule: a top-level `AND`ed
//!    condition compares a column of the target with something that references no column of it;
//!    see [`helios_plugin_abi::facts::QueryLevel::restricted`]),
//! 7. a query level reads a configured large table with no `WHERE` restricting it and no
//!    `LIMIT`/`FETCH`, or `COPY` copies the whole table,
//! 8. a query level reads or writes a configured tenant table without `tenant_column = <value>` among
//!    the top-level `AND`ed conditions of its `WHERE` or of a join's `ON` (unqualified, or qualified
//!    by that table's alias or name; the value references no column).
//!
//! Table and function names match case-insensitively (over-matching a quoted `"Events"` errs on the
//! safe side); a configured name with a schema (`public.events`) matches only that schema, one
//! without matches any.

use helios_plugin_abi::facts::{QueryLevel, Statement, StatementClass, StatementFacts};

pub use plugin_sql::TableName;

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

/// What the rules look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub large_tables: Vec<TableName>,
    pub tenant_tables: Vec<TableName>,
    /// Lower-cased.
    pub tenant_column: String,
    /// Classes (by [`StatementClass::name`]) allowed besides `read` and `write`.
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

    /// An error naming the first class in `allow` that is not a [`StatementClass`] name.
    pub fn check_allow(&self) -> Result<(), String> {
        match self.allow.iter().find(|c| StatementClass::from_name(c).is_none()) {
            None => Ok(()),
            Some(c) => Err(format!(
                "llm-guardrail: config key allow: unknown statement class {c:?} (known: {})",
                StatementClass::ALL.map(StatementClass::name).join(", ")
            )),
        }
    }

    fn allows(&self, class: StatementClass) -> bool {
        matches!(class, StatementClass::Read | StatementClass::Write) || self.allow.iter().any(|c| c == class.name())
    }

    fn large(&self, name: &str) -> Option<&TableName> {
        self.large_tables.iter().find(|t| t.matches_dotted(name))
    }

    fn tenant(&self, name: &str) -> Option<&TableName> {
        self.tenant_tables.iter().find(|t| t.matches_dotted(name))
    }
}

/// Judges one query (the whole text a client sent) on its facts. `Err` carries the reason to refuse.
pub fn judge(rules: &Rules, facts: &StatementFacts) -> Result<(), String> {
    if let Some(e) = &facts.parse_error {
        return Err(format!("the statement does not parse as PostgreSQL ({e}); unreadable AI SQL is refused"));
    }
    if facts.statement_count > 1 {
        return Err(format!("{} statements in one query; send one statement at a time", facts.statement_count));
    }
    judge_statements(rules, facts)
}

/// Every statement of `facts` (a query or a routine body).
fn judge_statements(rules: &Rules, facts: &StatementFacts) -> Result<(), String> {
    if let Some(e) = &facts.parse_error {
        return Err(format!("it does not parse ({e})"));
    }
    facts.statements.iter().try_for_each(|s| judge_statement(rules, s))
}

fn judge_statement(rules: &Rules, s: &Statement) -> Result<(), String> {
    if !rules.allows(s.class) {
        return Err(class_refusal(s));
    }
    if let Some(r) = &s.routine {
        let what = if r.name.is_empty() { s.kind.clone() } else { format!("{} {}", s.kind, r.name) };
        match (r.language.as_str(), &r.body) {
            // A trigger, event trigger or rule without body executes a function defined elsewhere.
            (_, None) if matches!(r.kind.as_str(), "trigger" | "event_trigger") => {}
            ("sql", Some(body)) => {
                judge_statements(rules, body).map_err(|why| format!("the body of {what}: {why}"))?;
            }
            ("sql", None) => {
                return Err(format!("{what} nests routine definitions too deeply to be judged; refused"));
            }
            (language, _) => {
                return Err(format!(
                    "{what} in language {language} is not allowed for AI traffic (only SQL bodies can be judged)"
                ));
            }
        }
    }
    for f in &s.functions {
        if let Some(d) = rules.deny_functions.iter().find(|d| d.matches_dotted(f)) {
            return Err(format!("function {f} is not allowed for AI traffic (config deny_functions lists {d})"));
        }
    }
    for level in &s.levels {
        judge_level(rules, s, level)?;
    }
    if s.kind == "COPY" {
        // `COPY table TO`: the whole table, whatever the client meant to filter afterwards.
        for t in s.tables.iter().filter(|t| t.read && !s.levels.iter().any(|l| l.tables.contains(&t.name))) {
            if let Some(l) = rules.large(&t.name) {
                return Err(format!("COPY of the whole large table {l} is not allowed"));
            }
            if let Some(tt) = rules.tenant(&t.name) {
                return Err(format!("COPY of tenant table {tt} has no {} predicate", rules.tenant_column));
            }
        }
    }
    Ok(())
}

/// The reason a statement of a class that is not allowed is refused.
fn class_refusal(s: &Statement) -> String {
    let names: Vec<&str> = s.tables.iter().filter(|t| t.ddl || t.write).map(|t| t.name.as_str()).collect();
    let head = if names.is_empty() { s.kind.clone() } else { format!("{} {}", s.kind, names.join(", ")) };
    if s.kind.starts_with("DROP ") || s.kind == "TRUNCATE" {
        // Destroys data: no class explanation needed.
        return format!("{head} is not allowed");
    }
    let why = match s.class {
        StatementClass::CopyProgram => " ... PROGRAM runs a shell command on the database server and",
        StatementClass::CopyFile => " with a server file reads or writes the database server's files and",
        _ => "",
    };
    format!(
        "{head}{why} is not allowed (statement class {}: AI traffic may read and change rows; config allow lists the other classes an operator permits)",
        s.class
    )
}

fn judge_level(rules: &Rules, s: &Statement, level: &QueryLevel) -> Result<(), String> {
    let target = level.target.as_deref().unwrap_or("");
    match level.kind.as_str() {
        "delete" | "update" if !level.is_restricted(target) => {
            let verb = if level.kind == "delete" { "DELETE FROM" } else { "UPDATE" };
            return Err(format!(
                "{verb} {target} without a WHERE that restricts rows is not allowed (restriction rule: no ANDed condition compares a column of {target} with a value)"
            ));
        }
        // A MERGE that only inserts changes no existing row.
        "merge"
            if !level.is_restricted(target)
                && (s.merge_actions.is_empty() || s.merge_actions.iter().any(|a| a == "update" || a == "delete")) =>
        {
            return Err(format!(
                "MERGE INTO {target} without an ON that restricts rows is not allowed (restriction rule: no ANDed condition compares a column of the target with a value)"
            ));
        }
        "select" if !level.has_limit => {
            for t in &level.tables {
                if let Some(l) = rules.large(t)
                    && (!level.has_where || !level.is_restricted(t))
                {
                    return Err(format!("unbounded SELECT on large table {l}: add a WHERE or a LIMIT"));
                }
            }
        }
        _ => {}
    }
    if rules.tenant_tables.is_empty() || level.kind == "insert" {
        return Ok(());
    }
    let col = &rules.tenant_column;
    for t in &level.tables {
        let Some(tt) = rules.tenant(t) else { continue };
        let ok = level.equalities.iter().any(|e| &e.column == col && e.table.as_ref().is_none_or(|q| q == t));
        if !ok {
            return Err(format!(
                "tenant table {tt} is used without a {col} = <value> condition (ANDed in WHERE or ON)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use helios_plugin_facts::{guest, pg};

    /// Judges `sql` on the host's facts (pg_query) and on the guest's (sqlparser): both must agree
    /// on refusing; the host's result is returned, the guest's reason is checked by [`blocked`].
    fn both(r: &Rules, sql: &str) -> (Result<(), String>, Result<(), String>) {
        let host = judge(r, &pg::extract(sql));
        let guest = judge(r, &guest::extract(sql));
        assert_eq!(host.is_ok(), guest.is_ok(), "{sql}: host {host:?}, guest {guest:?}");
        (host, guest)
    }

    #[track_caller]
    fn judge_sql(r: &Rules, sql: &str) -> Result<(), String> {
        both(r, sql).0
    }

    fn rules() -> Rules {
        Rules::from_lookup(|k| match k {
            "large_tables" => Some("events, page_views, public.audit_log".into()),
            "tenant_tables" => Some("orders,invoices".into()),
            _ => None,
        })
    }

    #[track_caller]
    fn blocked(sql: &str, needle: &str) {
        let (host, guest) = both(&rules(), sql);
        for (who, r) in [("host", host), ("guest", guest)] {
            match r {
                Err(r) => assert!(r.contains(needle), "{sql} ({who} facts): reason {r:?} lacks {needle:?}"),
                Ok(()) => panic!("{sql} ({who} facts): expected a block mentioning {needle:?}"),
            }
        }
    }

    #[track_caller]
    fn allowed(sql: &str) {
        assert_eq!(both(&rules(), sql), (Ok(()), Ok(())), "{sql}");
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
        blocked("ALTER TABLE users DROP COLUMN ssn", "statement class ddl");
        blocked("COPY t FROM PROGRAM 'rm -rf /'", "PROGRAM");
        blocked("copy (select 1) to program 'curl x'", "PROGRAM");
        blocked("EXPLAIN ANALYZE DELETE FROM t", "DELETE FROM t without");
        blocked("PREPARE p AS DELETE FROM t", "DELETE FROM t without");
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
        let body =
            judge_sql(&r, "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DELETE FROM orders $$").unwrap_err();
        assert!(body.contains("the body of CREATE FUNCTION f: DELETE FROM orders without a WHERE"), "{body}");
        let quoted = judge_sql(&r, "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DROP TABLE t'").unwrap_err();
        assert!(quoted.contains("the body of CREATE FUNCTION f: DROP TABLE t"), "{quoted}");
        let plpgsql = judge_sql(&r, "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$");
        assert!(plpgsql.unwrap_err().contains("in language plpgsql is not allowed"));
        assert_eq!(
            judge_sql(&r, "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$"),
            Ok(()),
            "a harmless SQL body passes when routines are allowed"
        );
        // MERGE is judged by the restriction rule.
        blocked("MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE", "MERGE INTO orders");
        assert_eq!(
            judge_sql(
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
        assert!(judge_sql(&allowing("transaction"), "NOTIFY jobs").is_err(), "LISTEN/NOTIFY refused when configured");
        assert_eq!(judge_sql(&allowing("ddl"), "ALTER TABLE users ADD COLUMN nickname text"), Ok(()));
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
        assert_eq!(judge_sql(&r, "SELECT pg_terminate_backend(42)"), Ok(()), "an empty deny list disables the rule");
    }

    #[test]
    fn do_cluster_and_reindex_are_refused_by_class_and_an_operator_can_allow_them() {
        // Host facts (PostgreSQL's parser): refused by class, with the class named.
        for (sql, class) in [
            ("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", "routine"),
            ("CLUSTER events USING events_pkey", "maintenance"),
            ("REINDEX TABLE events", "maintenance"),
            ("VACUUM ANALYZE orders", "maintenance"),
        ] {
            let host = judge(&rules(), &pg::extract(sql)).unwrap_err();
            assert!(host.contains(&format!("statement class {class}")), "{sql}: {host}");
            // Guest facts (sqlparser cannot parse these): still refused, as unreadable.
            let guest = judge(&rules(), &guest::extract(sql)).unwrap_err();
            assert!(guest.contains("does not parse") || guest.contains("statement class"), "{sql}: {guest}");
        }
        let maintenance = allowing("maintenance");
        for sql in ["CLUSTER events USING events_pkey", "REINDEX TABLE events", "VACUUM ANALYZE orders"] {
            assert_eq!(judge(&maintenance, &pg::extract(sql)), Ok(()), "{sql} with allow = maintenance");
        }
        // DO runs PL/pgSQL: allowing routines lets the class through, the language stays refused.
        let e = judge(&allowing("routine"), &pg::extract("DO $$ BEGIN DELETE FROM t; END $$")).unwrap_err();
        assert!(e.contains("DO in language plpgsql is not allowed"), "{e}");
    }

    #[test]
    fn unknown_allow_classes_are_a_config_error() {
        let r = Rules::from_lookup(|k| (k == "allow").then(|| "ddl, dml".to_owned()));
        let e = r.check_allow().unwrap_err();
        assert!(e.contains("config key allow") && e.contains("\"dml\"") && e.contains("session_role"), "{e}");
        assert_eq!(Rules::default().check_allow(), Ok(()));
    }
}
