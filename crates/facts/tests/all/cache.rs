//! The facts cache's shape key against a fresh extraction: for every statement of the corpus and
//! the bypass sets (the differential inputs), a fresh cache is primed with the statement, then
//! variants with other literals are looked up; whatever the cache answers (a shape hit, a text hit
//! or a fresh extraction) must equal `pg::extract` of the variant, field for field.

#![cfg(all(feature = "pg", feature = "guest"))]

use helios_plugin_facts::StatementFacts;
use helios_plugin_facts::cache::{FactsCache, Fallback, Lookup, shape_key};
use helios_plugin_facts::pg;
use pg_query::protobuf::Token;

const NUMBERS: &[&str] = &["0", "-1", "99999999999", "1.5", "1e3", "NULL", "ALL", "'7'"];
const STRINGS: &[&str] = &[
    "''",
    "'%'",
    "'a%'",
    "'%a'",
    "'_'",
    "'x''y'",
    "$$SELECT 1$$",
    "$q$DROP TABLE t$q$",
    "E'\\xff'",
    "U&'\\0041'",
    "'a' 'b'",
    "NULL",
    "5",
];
const BITS: &[&str] = &["B'1'", "X'00'", "''"];

/// The text with the token `start..end` replaced by `by`.
fn splice(sql: &str, start: usize, end: usize, by: &str) -> String {
    format!("{}{}{}", &sql[..start], by, &sql[end..])
}

/// Every variant of `sql` with one constant token replaced by another literal, plus one with every
/// number and one with every string replaced at once.
fn variants(sql: &str) -> Vec<String> {
    let Ok(scan) = pg_query::scan(sql) else { return Vec::new() };
    let mut out = Vec::new();
    let mut all_numbers = sql.to_owned();
    let mut all_strings = sql.to_owned();
    for t in scan.tokens.iter().rev() {
        let (s, e) = (t.start as usize, t.end as usize);
        let alternatives = match Token::try_from(t.token) {
            Ok(Token::Iconst | Token::Fconst) => {
                all_numbers = splice(&all_numbers, s, e, "424242");
                NUMBERS
            }
            Ok(Token::Sconst | Token::Usconst) => {
                all_strings = splice(&all_strings, s, e, "'zz%'");
                STRINGS
            }
            Ok(Token::Bconst | Token::Xconst) => BITS,
            _ => continue,
        };
        out.extend(alternatives.iter().map(|a| splice(sql, s, e, a)));
    }
    out.push(all_numbers);
    out.push(all_strings);
    out.retain(|v| v != sql);
    out
}

/// The first field where two facts differ, for the failure message.
fn first_difference(a: &StatementFacts, b: &StatementFacts) -> String {
    let (ja, jb) = (serde_json::to_value(a).unwrap(), serde_json::to_value(b).unwrap());
    let (oa, ob) = (ja.as_object().unwrap(), jb.as_object().unwrap());
    for (k, va) in oa {
        if ob.get(k) != Some(va) {
            return format!("{k}: cached {va} / fresh {}", ob.get(k).unwrap_or(&serde_json::Value::Null));
        }
    }
    "(no field differs in JSON)".to_owned()
}

#[test]
fn every_cached_answer_equals_a_fresh_extraction_over_literal_variants() {
    let inputs = crate::differential::inputs();
    assert!(inputs.len() > 300, "the inputs were found ({} statements)", inputs.len());
    let (mut looked_up, mut shape_hits, mut primed_by_shape) = (0usize, 0usize, 0usize);
    let mut wrong = Vec::new();
    for sql in &inputs {
        let cache = FactsCache::new(64);
        let (primed, how) = cache.lookup(sql);
        assert_eq!(*primed, pg::extract(sql), "{sql}: the primed facts are a fresh extraction");
        primed_by_shape += (how == Lookup::Extracted(None)) as usize;
        for v in variants(sql) {
            let (cached, how) = cache.lookup(&v);
            let fresh = pg::extract(&v);
            looked_up += 1;
            shape_hits += (how == Lookup::Shape) as usize;
            if *cached != fresh {
                wrong.push(format!("{sql}\n  variant {v}\n  {how:?}: {}", first_difference(&cached, &fresh)));
            }
        }
    }
    assert!(wrong.is_empty(), "{} cached answers differ from a fresh extraction:\n{}", wrong.len(), wrong.join("\n"));
    // The rule must not refuse everything: most of the corpus is reads and writes with literals.
    eprintln!(
        "{} inputs, {primed_by_shape} cached by shape, {looked_up} variants, {shape_hits} shape hits",
        inputs.len()
    );
    assert!(primed_by_shape * 3 > inputs.len(), "only {primed_by_shape} of {} inputs have a shape", inputs.len());
    assert!(shape_hits * 4 > looked_up, "only {shape_hits} of {looked_up} variants hit a shape");
}

/// Primes a fresh cache with `primed`, looks up `variant`: either the rule refuses the variant's
/// shape or the facts equal — and they do differ here, so a hit would be a wrong answer.
fn caught(primed: &str, variant: &str) -> Lookup {
    let cache = FactsCache::new(8);
    cache.get(primed);
    let (cached, how) = cache.lookup(variant);
    assert_ne!(pg::extract(primed), pg::extract(variant), "{primed} / {variant}: the facts differ");
    assert_ne!(how, Lookup::Shape, "{primed} / {variant}: a shape hit");
    assert_eq!(*cached, pg::extract(variant), "{variant}");
    how
}

#[test]
fn literal_changes_that_change_the_facts_are_never_shape_hits() {
    // LIMIT NULL / LIMIT ALL are no limit: keywords, not constants, so other shapes.
    caught("SELECT * FROM t WHERE a = 1 LIMIT 5", "SELECT * FROM t WHERE a = 1 LIMIT NULL");
    caught("SELECT * FROM t WHERE a = 1 LIMIT 5", "SELECT * FROM t WHERE a = 1 LIMIT ALL");
    caught(
        "SELECT * FROM t WHERE a = 1 FETCH FIRST 5 ROWS ONLY",
        "SELECT * FROM t WHERE a = 1 FETCH FIRST NULL ROWS ONLY",
    );
    // LIKE with a prefix restricts, with a leading wildcard it does not.
    assert_eq!(
        caught("DELETE FROM orders WHERE name LIKE 'abc%'", "DELETE FROM orders WHERE name LIKE '%'"),
        Lookup::Extracted(Some(Fallback::Like))
    );
    caught("DELETE FROM orders WHERE name ILIKE 'a%' AND id = 1", "DELETE FROM orders WHERE name ILIKE '_' AND id = 1");
    // A routine's body is a string: the first text is never stored by shape.
    assert_eq!(
        caught(
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM orders'",
        ),
        Lookup::Extracted(Some(Fallback::Class))
    );
    caught("DO LANGUAGE sql 'SELECT 1'", "DO LANGUAGE sql 'DELETE FROM orders'");
    // An escape string that is not UTF-8 does not parse (PostgreSQL's lexer refuses it), so it has
    // no shape; one that is UTF-8 shares the shape of any other string.
    assert_eq!(caught("SELECT 'a'", "SELECT E'\\xff'"), Lookup::Extracted(Some(Fallback::DoesNotParse)));
    let cache = FactsCache::new(8);
    cache.get("SELECT 'a'");
    assert_eq!(cache.lookup("SELECT E'\\x41\\n'").1, Lookup::Shape);
    // A comment inside a folded negative number is a comment.
    caught("SELECT 1", "SELECT - /* ignore the guard */ 1");
}

#[test]
fn the_shape_key_is_the_normalized_text_and_equal_texts_have_equal_fingerprints() {
    for (a, b) in [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
        ),
        (
            "SELECT o.id FROM orders o WHERE o.tenant_id = 'acme' /* app */ ORDER BY o.id LIMIT 20",
            "SELECT o.id FROM orders o WHERE o.tenant_id = $x$globex$x$ /* app */ ORDER BY o.id LIMIT 0",
        ),
        ("UPDATE t SET n = n + -4021 WHERE id = 7", "UPDATE t SET n = n + - 1 WHERE id = 8"),
    ] {
        let (ka, kb) = (shape_key(a).unwrap(), shape_key(b).unwrap());
        let (fa, fb) = (pg::extract(a), pg::extract(b));
        assert_eq!(ka, kb, "{a} / {b}");
        assert_eq!(ka, format!("{}\0{}", fa.normalized, ka.split('\0').nth(1).unwrap()));
        assert_eq!(fa.normalized, fb.normalized);
        assert_eq!(fa.fingerprint, fb.fingerprint);
        assert_eq!(fa, fb, "{a} / {b}");
    }
    // 70000000000 does not fit an integer: PostgreSQL's lexer makes it a float, another shape.
    assert_ne!(shape_key("SELECT 7").unwrap(), shape_key("SELECT 70000000000").unwrap());
}
