//! A bounded LRU cache of facts, for hosts that see the same statements again (prepared
//! statements, ORMs, pgbench) — and statements that differ only in their literal values (`-M simple`
//! pgbench, every driver that inlines literals).
//!
//! Two keys, two bounded LRUs (each at most the capacity given to [`FactsCache::new`]):
//!
//! * **by text**: the exact text. Always correct: [`crate::pg::extract`] is a function of the text.
//! * **by shape**: the text with its literals replaced ([`shape_key`]), used only where the literal
//!   values provably cannot change any fact. A hit returns the facts of another text of the same
//!   shape; that is safe only because of the argument below. A wrong fact is a guardrail bypass, so
//!   anything the argument does not cover falls back to the text key ([`Fallback`] names why).
//!
//! # Why a shape hit gives exactly the facts [`crate::pg::extract`] would give
//!
//! [`shape_key`] accepts a text `S` only when PostgreSQL's normaliser (`pg_query::normalize`, which
//! replaces the location of every `A_Const` node and of some string options by `$n`) and its lexer
//! (`pg_query::scan`) agree that:
//!
//! 1. `S` parses (the normaliser runs PostgreSQL's raw parser) and holds no parameter (`$1`);
//! 2. every span the normaliser replaced is exactly one constant token — a number (`ICONST`,
//!    `FCONST`), a string (`SCONST`, `USCONST`), a bit string (`BCONST`, `XCONST`) — or a `-` token
//!    followed by a number with nothing but white space between (PostgreSQL folds `-5` into one
//!    constant). `NULL`, `TRUE`, `FALSE`, `ALL` (`LIMIT ALL` is a null constant), `DEFAULT` or any
//!    other keyword replaced → [`Fallback::NotAConstant`]. Checked by rebuilding the normalised
//!    text from `S` and the lexer's tokens and comparing byte for byte. Constants the normaliser
//!    leaves (`GROUP BY 1`, `ORDER BY 1`, type modifiers, `COPY`'s file name) stay in the key as
//!    written;
//! 3. no `$` is left outside those spans (an identifier `a$b`, a comment, an unreplaced
//!    dollar-quoted string), so the `$n` in the normalised text are exactly the placeholders;
//! 4. no `LIKE`/`ILIKE` keyword is present (below).
//!
//! The key is the normalised text plus the kind of each replaced token (`-` marks the folded
//! negatives). Two texts with one key are therefore byte-identical outside the replaced tokens, and
//! the tokens are constants of the same kinds: the lexer sees the same token sequence (a constant is
//! a whole token and the lexer starts each segment between them in its initial state), the grammar
//! chooses its productions by token kind, and its actions put each replaced constant's value into
//! an `A_Const` node (a folded `-` number included) or into an option string (`DefElem` arguments,
//! `NOTIFY`'s payload, a subscription's connection string): the trees differ only in those values.
//! Comments are tokens outside the replaced spans, so they are equal (facts' `comments`);
//! `normalized` is the key's text and the fingerprint ignores constants, so both are equal.
//!
//! A constant's value cannot make the parse fail for one text and not the other in a way the key
//! hides: the normaliser runs the same parser and lexer (an escape string `E'\xff'` that is not
//! UTF-8 is refused by PostgreSQL's lexer, so such a text has no key), and `extract` reads the
//! tree the same parser builds.
//!
//! What `extract` reads from those values (crates/facts/src/pg.rs, all of it):
//!
//! * a string constant's content as a `LIKE`/`ILIKE` pattern (the restriction rule: `LIKE 'a%'`
//!   restricts, `LIKE '%a'` does not) — excluded by rule 4 (`~~` written as an operator, `SIMILAR
//!   TO` and the rest do not read the pattern);
//! * whether `LIMIT`'s constant is null (`has_limit`) — only `NULL` and `ALL` make a null constant,
//!   and neither is a constant token (rule 2), so `LIMIT 5`, `LIMIT 0` and `LIMIT -1` all limit;
//! * option strings: a routine's body and language (`CREATE FUNCTION … AS '…'`, `DO '…'`) —
//!   excluded by keeping a shape entry only when the facts of the text that created it have every
//!   statement of class `read` or `write` and no routine ([`Fallback::Class`],
//!   [`Fallback::Routine`]); other option strings (`SET` values, `EXPLAIN` and `COPY` options,
//!   `NOTIFY` payloads, role passwords) are never read, and most of those statements are of other
//!   classes anyway.
//!
//! Everything else `extract` reads comes from names, keywords and the tree's shape, which a shape
//! key fixes. The differential test (tests/all/cache.rs) checks this on every statement of the
//! corpus and the bypass sets with literal variants.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use pg_query::protobuf::Token;

use crate::{StatementClass, StatementFacts};

/// Texts longer than this are analysed every time and never cached (they would evict many small
/// entries and are rarely repeated).
pub const MAX_CACHED_TEXT: usize = 16 * 1024;

/// Why a text's facts are not looked up or stored by shape (they are by text instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Longer than [`MAX_CACHED_TEXT`] (not cached at all).
    TooLong,
    /// PostgreSQL's parser (through the normaliser) or its lexer rejects the text.
    DoesNotParse,
    /// The text holds a parameter (`$1`).
    Parameter,
    /// The text has no constant the normaliser replaces: its shape is its text.
    NoConstant,
    /// The normaliser replaced something that is not a plain constant token (`NULL`, `TRUE`,
    /// `LIMIT ALL`, ...), or its output cannot be rebuilt from the text and its tokens.
    NotAConstant,
    /// A `$` outside the replaced constants (an identifier, a comment, an unreplaced
    /// dollar-quoted string): the placeholders would be ambiguous.
    Dollar,
    /// `LIKE`/`ILIKE`: the pattern's content decides the restriction rule.
    Like,
    /// A statement of a class other than `read`/`write` (or the text does not parse).
    Class,
    /// A statement defines a routine (its body and language are string literals).
    Routine,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fallback::TooLong => "the text is too long to cache",
            Fallback::DoesNotParse => "the text does not parse",
            Fallback::Parameter => "the text holds a parameter",
            Fallback::NoConstant => "the text holds no constant",
            Fallback::NotAConstant => "a replaced span is not a plain constant token",
            Fallback::Dollar => "a `$` outside the constants",
            Fallback::Like => "a LIKE/ILIKE pattern",
            Fallback::Class => "a statement of a class other than read/write",
            Fallback::Routine => "a routine definition",
        })
    }
}

/// How [`FactsCache::lookup`] found the facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The exact text was cached.
    Text,
    /// A text of the same shape was cached.
    Shape,
    /// Extracted now; stored by shape (`None`) or, for the reason given, by text only.
    Extracted(Option<Fallback>),
}

type Lru = lru::LruCache<String, Arc<StatementFacts>>;

/// A thread-safe, bounded cache of [`crate::pg::extract`] results, by text and by shape.
#[derive(Debug)]
pub struct FactsCache {
    by_text: Mutex<Lru>,
    by_shape: Mutex<Lru>,
}

impl FactsCache {
    /// A cache holding at most `capacity` texts and `capacity` shapes (each at least 1).
    pub fn new(capacity: usize) -> FactsCache {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        FactsCache { by_text: Mutex::new(Lru::new(cap)), by_shape: Mutex::new(Lru::new(cap)) }
    }

    /// The facts of `sql`, from the cache or freshly extracted (and then cached).
    pub fn get(&self, sql: &str) -> Arc<StatementFacts> {
        self.lookup(sql).0
    }

    /// [`FactsCache::get`], saying where the facts came from.
    pub fn lookup(&self, sql: &str) -> (Arc<StatementFacts>, Lookup) {
        if sql.len() > MAX_CACHED_TEXT {
            return (Arc::new(crate::pg::extract(sql)), Lookup::Extracted(Some(Fallback::TooLong)));
        }
        if let Some(f) = lock(&self.by_text).get(sql) {
            return (f.clone(), Lookup::Text);
        }
        let key = shape_key(sql);
        if let Ok(k) = &key
            && let Some(f) = lock(&self.by_shape).get(k)
        {
            return (f.clone(), Lookup::Shape);
        }
        // Extract outside the locks: other sessions keep hitting the cache meanwhile.
        let facts = Arc::new(crate::pg::extract(sql));
        let stored = key.and_then(|k| shape_cacheable(&facts).map(|()| k));
        // The text that creates a shape entry is kept by text too (an exact repeat then costs a
        // hash, not a normalisation); the texts that hit the shape are not, so that a stream of
        // new literals does not evict the text entries (prepared statements, `$n` texts).
        lock(&self.by_text).put(sql.to_owned(), facts.clone());
        match stored {
            Ok(k) => {
                lock(&self.by_shape).put(k, facts.clone());
                (facts, Lookup::Extracted(None))
            }
            Err(why) => (facts, Lookup::Extracted(Some(why))),
        }
    }

    /// How many texts and shapes are cached, together.
    pub fn len(&self) -> usize {
        lock(&self.by_text).len() + lock(&self.by_shape).len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock(m: &Mutex<Lru>) -> MutexGuard<'_, Lru> {
    // A panic while holding the lock cannot leave the LRU inconsistent for our use (get/put).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether facts may be stored under a shape key: every statement is of class `read` or `write`
/// and none defines a routine (see the module docs).
pub fn shape_cacheable(facts: &StatementFacts) -> Result<(), Fallback> {
    if facts.parse_error.is_some() || facts.statements.is_empty() {
        return Err(Fallback::Class);
    }
    for s in &facts.statements {
        if !matches!(s.class, StatementClass::Read | StatementClass::Write) {
            return Err(Fallback::Class);
        }
        if s.routine.is_some() {
            return Err(Fallback::Routine);
        }
    }
    Ok(())
}

/// The shape key of `sql`: PostgreSQL's normalised text, a NUL (which no accepted text holds), and
/// one letter per replaced constant giving its token kind (`-` before a folded negative number).
/// `Err` says why the text has no shape key that is safe to share (see the module docs).
pub fn shape_key(sql: &str) -> Result<String, Fallback> {
    if sql.len() > MAX_CACHED_TEXT {
        return Err(Fallback::TooLong);
    }
    // The normaliser walks the parse tree recursively: a long text gets a stack sized for it.
    let (normalized, scan) = crate::pg::on_deep_enough_stack(sql, || (pg_query::normalize(sql), pg_query::scan(sql)))
        .map_err(|_| Fallback::DoesNotParse)?;
    let normalized = normalized.map_err(|_| Fallback::DoesNotParse)?;
    let scan = scan.map_err(|_| Fallback::DoesNotParse)?;
    let (s, n) = (sql.as_bytes(), normalized.as_bytes());
    let (mut ps, mut pn) = (0usize, 0usize);
    let mut kinds = String::new();
    // `s[ps..to]` appears unchanged at `n[pn..]`, without a `$`.
    let verbatim = |ps: usize, to: usize, pn: &mut usize| -> Result<(), Fallback> {
        let part = s.get(ps..to).ok_or(Fallback::NotAConstant)?;
        if n.get(*pn..*pn + part.len()) != Some(part) {
            return Err(Fallback::NotAConstant);
        }
        if part.contains(&b'$') {
            return Err(Fallback::Dollar);
        }
        *pn += part.len();
        Ok(())
    };
    let tokens = &scan.tokens;
    let mut i = 0;
    while let Some(t) = tokens.get(i) {
        let (start, end) = (t.start as usize, t.end as usize);
        let kind = Token::try_from(t.token).unwrap_or(Token::Nul);
        match kind {
            Token::Param => return Err(Fallback::Parameter),
            Token::Like | Token::Ilike => return Err(Fallback::Like),
            _ => {}
        }
        verbatim(ps, start, &mut pn)?;
        let placeholder = n.get(pn) == Some(&b'$') && n.get(pn + 1).is_some_and(u8::is_ascii_digit);
        if !placeholder {
            verbatim(start, end, &mut pn)?;
            ps = end;
            i += 1;
            continue;
        }
        // The normaliser replaced a span starting at this token.
        let (span_end, taken) = match kind {
            Token::Ascii45 => {
                // A folded negative number: `-`, white space only, then the number.
                let next = tokens.get(i + 1).ok_or(Fallback::NotAConstant)?;
                let gap = s.get(end..next.start as usize).ok_or(Fallback::NotAConstant)?;
                let number = Token::try_from(next.token).unwrap_or(Token::Nul);
                if !gap.iter().all(u8::is_ascii_whitespace) || !matches!(number, Token::Iconst | Token::Fconst) {
                    return Err(Fallback::NotAConstant);
                }
                kinds.push('-');
                kinds.push(kind_letter(number).ok_or(Fallback::NotAConstant)?);
                (next.end as usize, 2)
            }
            _ => {
                kinds.push(kind_letter(kind).ok_or(Fallback::NotAConstant)?);
                (end, 1)
            }
        };
        pn += 1 + n[pn + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        ps = span_end;
        i += taken;
    }
    verbatim(ps, s.len(), &mut pn)?;
    if pn != n.len() {
        return Err(Fallback::NotAConstant);
    }
    if kinds.is_empty() {
        return Err(Fallback::NoConstant);
    }
    let mut key = normalized;
    key.push('\0');
    key.push_str(&kinds);
    Ok(key)
}

/// The letter of a constant token kind in a shape key; `None` for anything else.
fn kind_letter(t: Token) -> Option<char> {
    Some(match t {
        Token::Iconst => 'i',
        Token::Fconst => 'f',
        Token::Sconst => 's',
        Token::Usconst => 'u',
        Token::Bconst => 'b',
        Token::Xconst => 'x',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded_and_returns_the_same_facts() {
        let c = FactsCache::new(2);
        let a = c.get("SELECT 1");
        assert!(Arc::ptr_eq(&a, &c.get("SELECT 1")), "second lookup is a hit");
        c.get("DROP TABLE a");
        c.get("DROP TABLE b");
        c.get("DROP TABLE c");
        assert_eq!(lock(&c.by_text).len(), 2);
        assert_eq!(lock(&c.by_shape).len(), 1);
        c.get("SELECT 'x'");
        c.get("SELECT 1.5");
        assert_eq!(lock(&c.by_shape).len(), 2);
        assert!(!Arc::ptr_eq(&a, &c.get("SELECT 1")), "the oldest entries were evicted");
    }

    #[test]
    fn texts_that_differ_only_in_literals_share_a_shape() {
        let c = FactsCache::new(16);
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
        let (a, how) = c.lookup(sql);
        assert_eq!(how, Lookup::Extracted(None));
        assert_eq!(c.lookup(sql).1, Lookup::Text);
        for other in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 0x10;",
        ] {
            let (b, how) = c.lookup(other);
            assert_eq!(how, Lookup::Shape, "{other}");
            assert!(Arc::ptr_eq(&a, &b));
            assert_eq!(*b, crate::pg::extract(other), "{other}");
        }
        // A folded negative number is a shape of its own, shared by the other negatives.
        let (n, how) = c.lookup("SELECT abalance FROM pgbench_accounts WHERE aid = -7;");
        assert_eq!(how, Lookup::Extracted(None));
        let (m, how) = c.lookup("SELECT abalance FROM pgbench_accounts WHERE aid = - 99999;");
        assert_eq!(how, Lookup::Shape);
        assert!(Arc::ptr_eq(&n, &m));
        // Other kinds of constant are other shapes.
        assert_eq!(c.lookup("SELECT abalance FROM pgbench_accounts WHERE aid = 1.5;").1, Lookup::Extracted(None));
        assert_eq!(c.lookup("SELECT abalance FROM pgbench_accounts WHERE aid = '7';").1, Lookup::Extracted(None));
        assert_eq!(c.lookup("SELECT abalance FROM pgbench_accounts WHERE aid = '8';").1, Lookup::Shape);
    }

    fn why(sql: &str) -> Fallback {
        shape_key(sql).map(|k| panic!("{sql}: shape key {k:?}, expected a fallback")).unwrap_err()
    }

    fn refused_after_extraction(sql: &str) -> Fallback {
        shape_key(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let c = FactsCache::new(4);
        match c.lookup(sql).1 {
            Lookup::Extracted(Some(f)) => f,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn each_fallback_reason() {
        let long = format!("SELECT 1{}", ", 1".repeat(MAX_CACHED_TEXT / 3));
        assert_eq!(why(&long), Fallback::TooLong);
        assert_eq!(FactsCache::new(2).lookup(&long).1, Lookup::Extracted(Some(Fallback::TooLong)));
        assert_eq!(why("SELEC 1"), Fallback::DoesNotParse);
        assert_eq!(why("SELECT 'unterminated"), Fallback::DoesNotParse);
        assert_eq!(why("SELECT 1\0"), Fallback::DoesNotParse);
        assert_eq!(why("SELECT * FROM t WHERE id = $1 AND n = 5"), Fallback::Parameter);
        assert_eq!(why("SELECT a FROM t"), Fallback::NoConstant);
        assert_eq!(why("SELECT a FROM t LIMIT ALL"), Fallback::NotAConstant);
        assert_eq!(why("SELECT a FROM t WHERE id = 1 LIMIT NULL"), Fallback::NotAConstant);
        assert_eq!(why("SELECT a FROM t WHERE flag = true AND id = 1"), Fallback::NotAConstant);
        assert_eq!(why("SELECT - /* c */ 1"), Fallback::NotAConstant);
        assert_eq!(why("SELECT a$b FROM t WHERE id = 1"), Fallback::Dollar);
        assert_eq!(why("SELECT 1 /* $1 */"), Fallback::Dollar);
        assert_eq!(why("SELECT a FROM t WHERE n LIKE 'a%'"), Fallback::Like);
        assert_eq!(why("SELECT a FROM t WHERE n NOT ILIKE 'a%'"), Fallback::Like);
        assert_eq!(refused_after_extraction("SET work_mem = '64MB'"), Fallback::Class);
        assert_eq!(refused_after_extraction("SELECT 1 INTO t2"), Fallback::Class);
        assert_eq!(refused_after_extraction("DO 'BEGIN NULL; END'"), Fallback::Class);
        assert!(shape_cacheable(&crate::pg::extract("SELEC 1")) == Err(Fallback::Class));
        let mut routine = crate::pg::extract("SELECT 1");
        routine.statements[0].routine = Some(crate::Routine::default());
        assert_eq!(shape_cacheable(&routine), Err(Fallback::Routine));
    }

    #[test]
    fn keys_carry_the_constant_kinds_and_keep_comments() {
        assert_eq!(
            shape_key("SELECT 1, -2, 3.5, 'x', B'01', X'ff' -- hi").unwrap(),
            "SELECT $1, $2, $3, $4, $5, $6 -- hi\0i-ifsbx"
        );
        assert_ne!(shape_key("SELECT 1 /* a */").unwrap(), shape_key("SELECT 1 /* b */").unwrap());
    }
}
