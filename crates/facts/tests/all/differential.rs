//! The two extractors on the same statements: PostgreSQL's parser (host, `pg`) and sqlparser
//! (guest, `guest`). Inputs: the bundled corpus (examples/corpus/sql.jsonl) and every SQL string
//! literal of the first-party plugins' sources and tests and of the end-to-end tests (their bypass
//! sets), plus the shapes of issue 14.
//!
//! Every statement where the two disagree is listed in target/facts-differential.md; each known
//! disagreement is in `KNOWN` below (with its reason in the crate's README). A new disagreement,
//! or a known one that no longer happens, fails the test: the list stays exact.

#![cfg(all(feature = "pg", feature = "guest"))]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use helios_plugin_facts::{StatementFacts, guest, pg};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Statements of issue 14 that must be judged the same way by both.
const ISSUE_14: &[&str] = &[
    "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ DELETE FROM orders $$",
    "SELECT f()",
    "MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE",
    "DELETE FROM orders WHERE id IS NOT NULL",
    "DELETE FROM orders WHERE id IN (SELECT id FROM orders)",
    "ALTER TABLE users ALTER COLUMN ssn TYPE int USING 0",
    "ALTER TABLE users RENAME TO users_old",
    "REVOKE ALL ON users FROM public",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    "VACUUM FULL events",
    "SET ROLE admin",
    "SET SESSION AUTHORIZATION postgres",
    "COPY users TO '/tmp/u.csv'",
    "COPY users FROM PROGRAM 'curl x'",
    "LISTEN jobs",
    "NOTIFY jobs",
    "GRANT SELECT ON users TO bob",
    "DELETE FROM orders WHERE id = 5",
    "UPDATE orders SET status = 'x' WHERE tenant_id = 'acme' AND id = 1042",
    "DELETE FROM orders WHERE name LIKE 'abc%'",
    "DELETE FROM orders WHERE id BETWEEN 1 AND 10",
    "SELECT \"PG_TERMINATE_BACKEND\"(1)",
    "SELECT pg_catalog.pg_terminate_backend(1)",
    "SELECT id FROM items ORDER BY embedding <-> '[1,2,3]' LIMIT 5",
    "SELECT id FROM items ORDER BY embedding <=> $1 LIMIT 5",
    "SELECT id FROM items ORDER BY embedding <#> $1 LIMIT 5",
];

/// Known disagreements: (statement, field). Each has a row in the README's table.
const KNOWN: &[(&str, &str)] = &[
    // sqlparser 0.63 does not parse PostgreSQL's VACUUM options or DO blocks: the guest refuses
    // them as unparseable (fail closed), the host classes them `maintenance` / `routine`.
    ("VACUUM ANALYZE orders", "parses"),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", "parses"),
    ("DO $$ BEGIN DELETE FROM t; END $$", "parses"),
    ("DO $$ BEGIN DELETE FROM orders; END $$", "parses"),
    // Nor CLUSTER and REINDEX (the corpus's maintenance refusals).
    ("CLUSTER events USING events_created_at_idx", "parses"),
    ("REINDEX TABLE orders", "parses"),
];

/// String literals of Rust sources that read as SQL.
fn sql_literals(src: &str, out: &mut Vec<String>) {
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Skip line comments (doc comments hold backticked SQL, not literals).
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b[i] == b'\'' {
            // A char literal or a lifetime: skip `'x'`, `'\''`, `'a`.
            if b.get(i + 2) == Some(&b'\'') {
                i += 3;
                continue;
            }
            if b.get(i + 1) == Some(&b'\\') && b.get(i + 3) == Some(&b'\'') {
                i += 4;
                continue;
            }
            i += 1;
            continue;
        }
        if b[i] == b'"' && (i == 0 || (b[i - 1] != b'r' && b[i - 1] != b'#')) {
            let mut s = String::new();
            let mut j = i + 1;
            let mut ok = true;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    match b.get(j + 1) {
                        Some(b'n') => s.push('\n'),
                        Some(b't') => s.push('\t'),
                        Some(b'"') => s.push('"'),
                        Some(b'\\') => s.push('\\'),
                        Some(b'\'') => s.push('\''),
                        Some(b'\n') => {
                            // Line continuation: skip the newline and leading whitespace.
                            j += 2;
                            while j < b.len() && (b[j] == b' ' || b[j] == b'\n') {
                                j += 1;
                            }
                            continue;
                        }
                        _ => ok = false,
                    }
                    j += 2;
                    continue;
                }
                let ch_len = utf8_len(b[j]);
                s.push_str(std::str::from_utf8(&b[j..j + ch_len]).unwrap_or(""));
                j += ch_len;
            }
            i = j + 1;
            if ok && looks_like_sql(&s) {
                out.push(s);
            }
            continue;
        }
        i += 1;
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

fn looks_like_sql(s: &str) -> bool {
    const HEADS: &[&str] = &[
        "select ",
        "insert ",
        "update ",
        "delete ",
        "merge ",
        "with ",
        "drop ",
        "truncate ",
        "alter ",
        "create ",
        "grant ",
        "revoke ",
        "copy ",
        "vacuum",
        "set ",
        "explain ",
        "prepare ",
        "do ",
        "call ",
        "listen ",
        "notify ",
        "begin",
        "commit",
        "/*",
        "--",
    ];
    let l = s.trim_start().to_lowercase();
    s.len() < 4000 && !s.contains('{') && HEADS.iter().any(|h| l.starts_with(h))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

pub(crate) fn inputs() -> Vec<String> {
    let mut all: Vec<String> = ISSUE_14.iter().map(|s| s.to_string()).collect();
    let corpus = std::fs::read_to_string(root().join("examples/corpus/sql.jsonl")).expect("the corpus");
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a corpus line is JSON");
        if let Some(sql) = v.get("sql").and_then(|s| s.as_str()) {
            all.push(sql.to_owned());
        }
    }
    let mut files = Vec::new();
    for dir in ["examples", "crates/e2e/tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    files.sort();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap_or_default();
        sql_literals(&src, &mut all);
    }
    let mut seen = BTreeSet::new();
    all.retain(|s| seen.insert(s.clone()));
    all
}

/// The fields the two extractors must agree on, as comparable text. `normalized` and `fingerprint`
/// differ by design (libpg_query's algorithms are not reproduced in the guest).
fn fields(f: &StatementFacts) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("parses", f.parse_error.is_none().to_string()),
        ("statement_count", f.statement_count.to_string()),
        ("is_read_only", f.is_read_only.to_string()),
        ("comments", format!("{:?}", f.comments)),
    ];
    let each = |g: &dyn Fn(&helios_plugin_facts::Statement) -> String| {
        f.statements.iter().map(g).collect::<Vec<_>>().join(" | ")
    };
    v.push(("kind", each(&|s| s.kind.clone())));
    v.push(("class", each(&|s| s.class.to_string())));
    v.push((
        "tables",
        each(&|s| {
            let mut t: Vec<String> = s
                .tables
                .iter()
                .map(|t| format!("{}:{}{}{}", t.name, flag(t.read, 'r'), flag(t.write, 'w'), flag(t.ddl, 'd')))
                .collect();
            t.sort();
            t.join(",")
        }),
    ));
    v.push((
        "levels",
        each(&|s| {
            let mut l: Vec<String> = s
                .levels
                .iter()
                .map(|l| {
                    let mut tables = l.tables.clone();
                    tables.sort();
                    let mut r: Vec<String> = l.restricted.iter().map(|r| r.table.clone()).collect();
                    r.sort();
                    format!(
                        "{}({}) target={:?} where={} limit={} order_ops={:?} restricted={:?}",
                        l.kind,
                        tables.join(","),
                        l.target,
                        l.has_where,
                        l.has_limit,
                        l.order_operators,
                        r
                    )
                })
                .collect();
            l.sort();
            l.join("; ")
        }),
    ));
    v.push((
        "equalities",
        each(&|s| {
            let mut e: Vec<String> = s
                .levels
                .iter()
                .flat_map(|l| l.equalities.iter().map(|e| format!("{:?}.{}", e.table, e.column)))
                .collect();
            e.sort();
            e.join(",")
        }),
    ));
    v.push(("functions", each(&|s| s.functions.join(","))));
    v.push(("operators", each(&|s| s.operators.join(","))));
    v.push(("columns", each(&|s| format!("{:?}", s.columns))));
    v.push(("merge_actions", each(&|s| s.merge_actions.join(","))));
    v.push((
        "routine",
        each(&|s| match &s.routine {
            None => String::new(),
            Some(r) => format!(
                "{} {} {} body={:?}",
                r.kind,
                r.name,
                r.language,
                r.body.as_ref().map(|b| b.statements.iter().map(|s| s.class.to_string()).collect::<Vec<_>>())
            ),
        }),
    ));
    v
}

fn flag(on: bool, c: char) -> String {
    if on { c.to_string() } else { String::new() }
}

#[test]
fn host_and_guest_facts_agree_or_the_disagreement_is_documented() {
    let inputs = inputs();
    assert!(inputs.len() > 300, "the inputs were found ({} statements)", inputs.len());
    let mut found: Vec<(String, &'static str, String, String)> = Vec::new();
    for sql in &inputs {
        let host = pg::extract(sql);
        let guest = guest::extract(sql);
        let (h, g) = (fields(&host), fields(&guest));
        for ((name, hv), (_, gv)) in h.iter().zip(g.iter()) {
            if hv != gv {
                found.push((sql.clone(), name, hv.clone(), gv.clone()));
            }
            // Once one side does not parse, the other fields say nothing more.
            if *name == "parses" && hv != gv {
                break;
            }
        }
    }
    let mut report = format!(
        "# Host (pg_query) vs guest (sqlparser) facts\n\n{} statements, {} disagreements.\n\n| statement | field | host | guest |\n|---|---|---|---|\n",
        inputs.len(),
        found.len()
    );
    for (sql, field, h, g) in &found {
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        report.push_str(&format!("| `{}` | {field} | {} | {} |\n", cell(sql), cell(h), cell(g)));
    }
    let out = root().join("target/facts-differential.md");
    let _ = std::fs::create_dir_all(out.parent().unwrap());
    std::fs::write(&out, &report).expect("write the report");

    let found_keys: BTreeSet<(String, String)> = found.iter().map(|(s, f, _, _)| (s.clone(), f.to_string())).collect();
    let known: BTreeSet<(String, String)> = KNOWN.iter().map(|(s, f)| (s.to_string(), f.to_string())).collect();
    let new: Vec<_> = found_keys.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found_keys).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "undocumented disagreements: {new:#?}\nknown disagreements that no longer happen: {gone:#?}\n(full report: {})",
        out.display()
    );
}

/// `comments()` (PostgreSQL's lexical rules, no parser: what ai-classifier uses) finds exactly the
/// comments PostgreSQL's scanner finds, on every input and on quoting corner cases.
#[test]
fn the_comment_scanner_agrees_with_postgresql_on_every_input() {
    let corner = [
        "SELECT 'a -- b' -- c",
        "SELECT E'\\' /* x */ '-- no' -- y",
        "SELECT e'it\\'s /* no */' -- yes",
        "SELECT $tag$ -- no $tag$ /* yes */",
        "SELECT $1 /* after a parameter */",
        "SELECT a$b$c -- identifier with dollars",
        "SELECT /* outer /* inner */ still outer */ 1",
        "SELECT \"col -- not\" FROM t -- yes",
        "SELECT U&'d\\0061t -- no' -- yes",
        "SELECT 1 /* unterminated",
        "-- first\nSELECT 'unterminated",
        "SELECT 1-- x\n",
        "SELECT 2--\r\n3",
    ];
    let mut differ = Vec::new();
    let inputs = inputs();
    for sql in inputs.iter().map(String::as_str).chain(corner) {
        let (want, got) = (pg::extract(sql).comments, helios_plugin_facts::comments(sql));
        if got != want {
            differ.push(format!("{sql:?}: PostgreSQL {want:?}, scanner {got:?}"));
        }
    }
    assert!(differ.is_empty(), "{} differences:\n{}", differ.len(), differ.join("\n"));
}

#[test]
fn the_sql_literal_scanner_reads_rust_strings() {
    let mut v = Vec::new();
    sql_literals(
        r#"let a = "SELECT 1"; let c = 'x'; // "DROP TABLE in a comment"
           let b = "DELETE FROM \"T\" WHERE a = 'q'"; let d = "not sql";"#,
        &mut v,
    );
    assert_eq!(v, ["SELECT 1", "DELETE FROM \"T\" WHERE a = 'q'"]);
}
