//! pgvector-router: routes pgvector top-K queries in HeliosProxy to a vector replica.
//!
//! A statement is a top-K vector search when a query in it orders by a pgvector distance (`<->` L2,
//! `<#>` negative inner product, `<=>` cosine, anywhere in an ORDER BY expression) and has a `LIMIT`
//! (or `FETCH FIRST`). Such a statement goes to `RouteResult::Node { target }`, the target being the
//! config key `vector_node` or, when that is not set, the attribute `helios.vector_node`; everything
//! else gets `Default`. Only reads move: a statement that writes (including through a data-modifying
//! CTE) or locks rows (`FOR UPDATE`) stays on the default route.
//!
//! Detection is on the statement facts (`helios_plugin_abi::facts`): the host's (PostgreSQL's parser
//! in helios-proxy) or, from a host that sends none, the guest's own (sqlparser). A top-K search is a
//! query level with a `LIMIT` whose `ORDER BY` uses a distance operator outside subqueries, in a single
//! read-only `SELECT`. When the statement does not parse, a token-level check over sqlparser's
//! tokenizer takes over (`ORDER BY ... <op> ... LIMIT` at one parenthesis depth), never a substring
//! search: an operator in a string literal or a comment is not an operator. See README.md.

use helios_plugin_abi::facts::StatementFacts;
use helios_plugin_abi::*;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// The pgvector distance operators.
pub const VECTOR_OPERATORS: [&str; 3] = ["<->", "<#>", "<=>"];
/// Config key of the vector replica.
pub const VECTOR_NODE_KEY: &str = "vector_node";
/// Attribute naming the vector replica when the config does not.
pub const VECTOR_NODE_ATTRIBUTE: &str = "helios.vector_node";

/// How a statement was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// Not a top-K vector search (or not one that may move).
    No,
    /// Found on the statement facts.
    Parsed,
    /// Found by the token-level fallback on a statement that does not parse.
    Tokens,
}

/// Whether the statement (`sql`, with its `facts`) is a single read-only top-K vector search.
pub fn detect(facts: &StatementFacts, sql: &str) -> Detection {
    if facts.parse_error.is_some() {
        return if tokens_say_top_k(sql) { Detection::Tokens } else { Detection::No };
    }
    let [statement] = facts.statements.as_slice() else { return Detection::No };
    let top_k = statement
        .levels
        .iter()
        .any(|l| l.has_limit && l.order_operators.iter().any(|op| VECTOR_OPERATORS.contains(&op.as_str())));
    if statement.kind == "SELECT" && facts.is_read_only && top_k { Detection::Parsed } else { Detection::No }
}

fn is_vector_op(op: &impl std::fmt::Display) -> bool {
    let s = op.to_string();
    VECTOR_OPERATORS.contains(&s.as_str())
}

/// The token-level check for statements sqlparser cannot parse: after `ORDER BY`, a vector operator
/// and then `LIMIT`, at the parenthesis depth of the `ORDER BY`. Comments and literals are tokens of
/// their own, so they never match.
pub fn tokens_say_top_k(sql: &str) -> bool {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else { return false };
    let tokens: Vec<&Token> = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect();
    let is_kw = |t: &Token, kw: &str| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw));
    let mut depth = 0i32;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ if is_kw(t, "ORDER") && tokens.get(i + 1).is_some_and(|n| is_kw(n, "BY")) => {
                let (mut d, mut saw_op) = (depth, false);
                for u in &tokens[i + 2..] {
                    match u {
                        Token::LParen => d += 1,
                        Token::RParen if d == depth => break,
                        Token::RParen => d -= 1,
                        Token::SemiColon => break,
                        _ if is_vector_op(u) => saw_op = true,
                        _ if d == depth && saw_op && is_kw(u, "LIMIT") => return true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// The route for one statement, given the configured node.
pub fn decide(configured: Option<&str>, ctx: &QueryContext) -> (RouteResult, Detection) {
    let d = detect(&facts::of(ctx), &ctx.query);
    if d == Detection::No {
        return (RouteResult::Default, d);
    }
    let target = configured
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or_else(|| ctx.hook_context.attr(VECTOR_NODE_ATTRIBUTE).map(str::trim).filter(|s| !s.is_empty()));
    match target {
        Some(t) => (RouteResult::Node { target: t.to_owned() }, d),
        None => (RouteResult::Default, d),
    }
}

/// The configured node, read once per instance.
static CONFIGURED_NODE: config::InstanceConfig<Option<String>, std::convert::Infallible> =
    config::InstanceConfig::new(|| Ok(get_config(VECTOR_NODE_KEY)));

/// Sends top-K vector searches to the vector replica.
#[hook(Route)]
pub fn route_vectors(ctx: &QueryContext) -> RouteResult {
    let (route, d) = CONFIGURED_NODE.with(|node| match node {
        Ok(node) => decide(node.as_deref(), ctx),
        Err(never) => match *never {},
    });
    let id = &ctx.hook_context.request_id;
    match (&route, d) {
        (RouteResult::Node { target }, d) => {
            let how = if d == Detection::Tokens { " (token-level check: the statement did not parse)" } else { "" };
            log(Level::Info, &format!("pgvector-router: request {id:?}: top-K vector search routed to {target}{how}"));
        }
        (_, Detection::Parsed | Detection::Tokens) => log(
            Level::Warn,
            &format!(
                "pgvector-router: request {id:?}: top-K vector search but no {VECTOR_NODE_KEY} config and no {VECTOR_NODE_ATTRIBUTE} attribute; default route"
            ),
        ),
        _ => {}
    }
    route
}

#[cfg(test)]
mod tests {
    use super::*;
    use helios_plugin_facts::{guest, pg};

    /// Detection on the host's facts and on the guest's, which must agree.
    fn detect_sql(sql: &str) -> Detection {
        let host = detect(&pg::extract(sql), sql);
        assert_eq!(host, detect(&guest::extract(sql), sql), "{sql}: host and guest facts disagree");
        host
    }

    const V: &str = "'[0.1,0.2,0.3]'";

    fn ctx(sql: &str) -> QueryContext {
        QueryContext { query: sql.into(), ..Default::default() }
    }

    fn routed(sql: &str) -> bool {
        let guest = decide(Some("vec-1"), &ctx(sql)).0;
        let mut with_facts = ctx(sql);
        with_facts.facts = Some(pg::extract(sql));
        assert_eq!(decide(Some("vec-1"), &with_facts).0, guest, "{sql}: host and guest facts disagree");
        guest == RouteResult::Node { target: "vec-1".into() }
    }

    #[test]
    fn each_distance_operator_with_order_by_and_limit_is_routed() {
        for op in VECTOR_OPERATORS {
            let sql = format!("SELECT id FROM items ORDER BY embedding {op} {V} LIMIT 5");
            assert_eq!(detect_sql(&sql), Detection::Parsed, "{sql}");
            assert!(routed(&sql), "{sql}");
        }
        assert!(routed(&format!("select id from items order by embedding <-> {V}::vector limit 20")));
        assert!(routed("SELECT id FROM items ORDER BY embedding <=> $1 LIMIT 8"));
        assert!(routed(&format!("SELECT id FROM items ORDER BY (embedding <#> {V}) FETCH FIRST 3 ROWS ONLY")));
        assert!(routed(&format!("SELECT id FROM items ORDER BY 1 - (embedding <=> {V}) DESC LIMIT 5")));
        assert!(routed(&format!("SELECT id FROM items ORDER BY category, embedding <-> {V} LIMIT 5")));
    }

    #[test]
    fn nested_top_k_queries_are_routed() {
        assert!(routed(&format!(
            "SELECT * FROM (SELECT id FROM docs ORDER BY embedding <=> {V} LIMIT 20) s WHERE id > 3"
        )));
        assert!(routed(&format!(
            "WITH q AS (SELECT {V}::vector AS v) SELECT d.id FROM docs d, q ORDER BY d.embedding <-> q.v LIMIT 5"
        )));
    }

    #[test]
    fn look_alikes_keep_the_default_route() {
        for sql in [
            format!("SELECT id FROM items ORDER BY embedding <-> {V}"),
            format!("SELECT id FROM items ORDER BY embedding <-> {V} LIMIT ALL"),
            format!("SELECT id, embedding <-> {V} AS d FROM items ORDER BY d LIMIT 5"),
            format!("SELECT count(*) FROM items WHERE embedding <-> {V} < 0.5"),
            "SELECT id FROM items ORDER BY price LIMIT 5".to_owned(),
            "SELECT '<->' AS op FROM items ORDER BY id LIMIT 1".to_owned(),
            "SELECT id FROM items /* ORDER BY e <-> x */ ORDER BY id LIMIT 1".to_owned(),
            format!("SELECT id FROM items ORDER BY (SELECT embedding <-> {V} FROM x LIMIT 1) LIMIT 5"),
            format!("SELECT id FROM items ORDER BY embedding <-> {V} LIMIT 5; SELECT 1"),
            format!("SELECT id FROM items ORDER BY embedding <-> {V} LIMIT 5 FOR UPDATE"),
            format!("INSERT INTO hits SELECT id FROM items ORDER BY embedding <-> {V} LIMIT 5"),
            format!("WITH d AS (DELETE FROM t RETURNING id) SELECT id FROM items ORDER BY embedding <-> {V} LIMIT 5"),
        ] {
            assert!(!routed(&sql), "{sql}");
        }
    }

    #[test]
    fn unparseable_statements_fall_back_to_tokens_not_substrings() {
        // `IS OF` (old PostgreSQL syntax) is rejected by sqlparser before the ORDER BY.
        let sql = format!("SELECT id FROM items WHERE kind IS OF (text) ORDER BY embedding <=> {V} LIMIT 5");
        assert!(guest::extract(&sql).parse_error.is_some(), "the example must not parse");
        assert!(pg::extract(&sql).parse_error.is_some(), "nor parse in PostgreSQL 14+ (IS OF was removed)");
        assert_eq!(detect_sql(&sql), Detection::Tokens);
        assert!(tokens_say_top_k("SELECT ORDER BY (a <-> b) LIMIT 5 garbage ("));
        assert!(!tokens_say_top_k("SELECT '<-> LIMIT' ORDER BY x garbage ("));
        assert!(!tokens_say_top_k("SELECT x ORDER BY a -- <-> LIMIT 5\n garbage ("));
        assert!(!tokens_say_top_k("SELECT (SELECT 1 ORDER BY a <-> b) LIMIT 5 garbage ("));
    }

    /// The demo corpus (examples/corpus/sql.jsonl): each line's context, without facts.
    fn corpus() -> Vec<QueryContext> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus/sql.jsonl")).unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let mut c = QueryContext { query: v["sql"].as_str().unwrap_or_default().into(), ..Default::default() };
                c.hook_context.identity = v["identity"].as_str().map(str::to_owned);
                for (k, a) in v["attributes"].as_object().into_iter().flatten() {
                    c.hook_context.attributes.insert(k.clone(), a.as_str().unwrap_or_default().into());
                }
                c
            })
            .collect()
    }

    #[test]
    fn the_corpus_is_routed_the_same_on_host_facts_and_on_guest_facts() {
        let mut routed = 0;
        for mut c in corpus() {
            let guest = decide(Some("vec"), &c).0;
            c.facts = Some(pg::extract(&c.query));
            assert_eq!(decide(Some("vec"), &c).0, guest, "{:?}", c.query);
            routed += usize::from(guest != RouteResult::Default);
        }
        assert!(routed >= 5, "only {routed} routed");
    }

    #[test]
    fn the_target_comes_from_config_then_the_attribute() {
        let sql = format!("SELECT id FROM items ORDER BY embedding <-> {V} LIMIT 5");
        let mut c = ctx(&sql);
        c.hook_context.attributes.insert(VECTOR_NODE_ATTRIBUTE.into(), "vec-attr".into());
        assert_eq!(decide(Some("vec-cfg"), &c).0, RouteResult::Node { target: "vec-cfg".into() });
        assert_eq!(decide(None, &c).0, RouteResult::Node { target: "vec-attr".into() });
        assert_eq!(decide(None, &ctx(&sql)).0, RouteResult::Default);
    }

    #[test]
    fn the_hook_routes_with_the_host_config_and_logs_why() {
        testing::reset();
        testing::set_config(VECTOR_NODE_KEY, "pg-vector-1");
        let sql = format!("SELECT id FROM items ORDER BY embedding <#> {V} LIMIT 10");
        assert_eq!(route_vectors(&ctx(&sql)), RouteResult::Node { target: "pg-vector-1".into() });
        assert_eq!(route_vectors(&ctx("SELECT 1")), RouteResult::Default);
        assert_eq!(testing::logs().len(), 1);
        testing::reset();
        assert_eq!(route_vectors(&ctx(&sql)), RouteResult::Default);
        assert!(testing::logs()[0].1.contains("no vector_node config"));
    }
}
