//! The record format, its canonical serialisation, and building the next record of the chain.
//!
//! A record is one JSON object (see [`Record`]); its `hash` is
//! `sha256_hex("helios-audit-v1\n" + canonical(body))`, where `body` is every field except `hash` and
//! `canonical` is compact JSON with the fields in the order of [`Body`], absent values as `null`, and
//! JSON string escaping (`"`, `\`, control characters; everything else as UTF-8). `prev_hash` is the
//! previous record's `hash`, or the genesis value for `seq` 1, so editing, deleting or reordering a
//! record breaks the chain at that point.

use serde::{Deserialize, Serialize};

use helios_plugin_schema::PostQueryEnvelope;

/// Domain separation prefix of the hashed bytes.
pub const HASH_DOMAIN: &str = "helios-audit-v1\n";
/// Prefix of the log line carrying a record.
pub const LOG_PREFIX: &str = "audit-record ";
/// The default genesis: 64 zeros.
pub const ZERO_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// KV key of the chain tail.
pub const TAIL_KEY: &str = "chain:tail";
/// Identifiers (request id, identity, database, client, node) are cut to this many bytes.
pub const MAX_IDENT_BYTES: usize = 128;
/// Error messages are cut to this many bytes.
pub const MAX_ERROR_BYTES: usize = 512;

/// Everything a record says, in canonical field order. Absent values serialise as `null`. Not
/// `deny_unknown_fields` because [`Record`] flattens it; the verifier checks the exact key set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    pub seq: u64,
    /// Host clock, unix seconds.
    pub timestamp: i64,
    pub request_id: String,
    pub identity: Option<String>,
    pub database: Option<String>,
    pub client_id: Option<String>,
    /// The statement, cut at a character boundary when the whole record would not fit one log line.
    pub query: String,
    /// SHA-256 (hex) of the whole statement, also when `query` was cut.
    pub query_sha256: String,
    pub query_truncated: bool,
    pub success: bool,
    pub target_node: Option<String>,
    pub elapsed_us: u64,
    pub response_bytes: u64,
    pub rows: Option<u64>,
    pub error: Option<String>,
    pub prev_hash: String,
}

/// A record as exported: the body's fields followed by `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub body: Body,
    pub hash: String,
}

/// The names of a record's fields, in order.
pub const FIELDS: [&str; 17] = [
    "seq",
    "timestamp",
    "request_id",
    "identity",
    "database",
    "client_id",
    "query",
    "query_sha256",
    "query_truncated",
    "success",
    "target_node",
    "elapsed_us",
    "response_bytes",
    "rows",
    "error",
    "prev_hash",
    "hash",
];

/// The bytes whose SHA-256 is a record's hash.
pub fn hashed_bytes(body: &Body) -> Vec<u8> {
    let mut out = HASH_DOMAIN.as_bytes().to_vec();
    // Serialising a struct of strings, integers and options cannot fail.
    out.extend(serde_json::to_vec(body).unwrap_or_default());
    out
}

/// The chain's tail, kept in KV: the last record's seq and hash (seq 0 and the genesis before the first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tail {
    pub seq: u64,
    pub hash: String,
}

/// Whether `s` is 64 lowercase hex digits.
pub fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Builds the record following `tail` for a finished statement, sized so that its log line
/// (`audit-record <json>`) fits `max_line` bytes. `sha256_hex` is the host's hash import.
pub fn next_record(
    tail: &Tail,
    env: &PostQueryEnvelope,
    now: i64,
    max_line: usize,
    sha256_hex: impl Fn(&[u8]) -> Result<String, String>,
) -> Result<Record, String> {
    let hc = &env.query_context.hook_context;
    let o = &env.outcome;
    let query = &env.query_context.query;
    let ident = |s: &Option<String>| s.as_deref().map(|v| cut(v, MAX_IDENT_BYTES));
    let mut body = Body {
        seq: tail.seq + 1,
        timestamp: now,
        request_id: cut(&hc.request_id, MAX_IDENT_BYTES),
        identity: ident(&hc.identity),
        database: ident(&hc.database),
        client_id: ident(&hc.client_id),
        query: query.clone(),
        query_sha256: sha256_hex(query.as_bytes())?,
        query_truncated: false,
        success: o.success,
        target_node: ident(&o.target_node),
        elapsed_us: o.elapsed_us,
        response_bytes: o.response_bytes,
        rows: o.rows,
        error: o.error.as_deref().map(|e| cut(e, MAX_ERROR_BYTES)),
        prev_hash: tail.hash.clone(),
    };
    // The line's length does not depend on the hash's value (always 64 hex digits).
    let line_len = |b: &Body| {
        let r = Record { body: b.clone(), hash: ZERO_GENESIS.to_owned() };
        LOG_PREFIX.len() + serde_json::to_vec(&r).map(|v| v.len()).unwrap_or(usize::MAX)
    };
    if line_len(&body) > max_line {
        body.query_truncated = true;
        // Longest prefix of the query (at a char boundary) whose line fits: binary search.
        let cuts: Vec<usize> = query.char_indices().map(|(i, _)| i).collect();
        let (mut lo, mut hi) = (0usize, cuts.len());
        let with = |end: usize| Body { query: query[..end].to_owned(), ..body.clone() };
        if line_len(&with(0)) > max_line {
            return Err(format!("a record does not fit a log line of {max_line} bytes even without its query"));
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if line_len(&with(cuts[mid])) <= max_line {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        body = with(cuts[lo]);
    }
    let hash = sha256_hex(&hashed_bytes(&body))?;
    Ok(Record { body, hash })
}

/// The log line carrying a record.
pub fn log_line(record: &Record) -> String {
    format!("{LOG_PREFIX}{}", serde_json::to_string(record).unwrap_or_default())
}
