//! The chain verifier: checks an exported chain (one record per line) and names the first broken
//! link. Native only (it hashes with the `sha2` crate; the plugin hashes through the host).

use sha2::{Digest, Sha256};

use crate::chain::{Body, FIELDS, LOG_PREFIX, Record, Tail, hashed_bytes, is_hash};

/// The first place an exported chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// 1-based line of the file.
    pub line: usize,
    /// The seq the record there claims, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "audit chain broken at line {} (seq {seq}): {}", self.line, self.problem),
            None => write!(f, "audit chain broken at line {}: {}", self.line, self.problem),
        }
    }
}

impl std::error::Error for BrokenLink {}

/// What to check beyond the links themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The configured genesis; `None` accepts any 64-hex value as the first `prev_hash`.
    pub genesis: Option<String>,
    /// The tail the plugin holds in KV (`chain:tail`): catches records cut off the end and a chain
    /// recomputed from scratch.
    pub tail: Option<Tail>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Verifies a chain that starts at seq 1; returns the number of records. Lines may carry the
/// `audit-record ` log prefix; blank lines are skipped. Any 64-hex genesis is accepted (see
/// [`verify_chain_with`] to pin it and the tail).
pub fn verify_chain(ndjson: &str) -> Result<usize, BrokenLink> {
    verify_chain_with(ndjson, &VerifyOptions::default())
}

/// [`verify_chain`] with a pinned genesis and/or the tail to end on.
pub fn verify_chain_with(ndjson: &str, opts: &VerifyOptions) -> Result<usize, BrokenLink> {
    let mut prev: Option<(u64, String)> = None;
    let mut last_line = 0;
    let mut count = 0;
    for (i, raw) in ndjson.lines().enumerate() {
        let line = i + 1;
        last_line = line;
        let text = raw.trim();
        if text.is_empty() {
            continue;
        }
        let text = text.strip_prefix(LOG_PREFIX.trim_end()).map(str::trim_start).unwrap_or(text);
        let broken = |seq: Option<u64>, problem: String| BrokenLink { line, seq, problem };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| broken(None, format!("not a JSON record: {e}")))?;
        let obj = value.as_object().ok_or_else(|| broken(None, "not a JSON object".into()))?;
        let seq_hint = obj.get("seq").and_then(|s| s.as_u64());
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected_keys = FIELDS.to_vec();
        expected_keys.sort_unstable();
        if keys != expected_keys {
            let extra: Vec<&str> = keys.iter().filter(|k| !FIELDS.contains(k)).copied().collect();
            let missing: Vec<&str> = FIELDS.iter().filter(|k| !keys.contains(k)).copied().collect();
            return Err(broken(
                seq_hint,
                format!("fields differ from a record's (extra: {extra:?}, missing: {missing:?})"),
            ));
        }
        let record: Record =
            serde_json::from_value(value.clone()).map_err(|e| broken(seq_hint, format!("malformed record: {e}")))?;
        let Record { body, hash } = record;
        let seq = body.seq;
        let broken = |problem: String| BrokenLink { line, seq: Some(seq), problem };
        let (expected_seq, expected_prev) = match &prev {
            None => (1, opts.genesis.clone()),
            Some((s, h)) => (s + 1, Some(h.clone())),
        };
        if seq != expected_seq {
            return Err(broken(format!(
                "expected seq {expected_seq}, found {seq}: a record was deleted, inserted or moved before this line"
            )));
        }
        match expected_prev {
            Some(p) if body.prev_hash != p => {
                return Err(broken(format!(
                    "prev_hash {} does not match {} {p}",
                    body.prev_hash,
                    if prev.is_none() { "the genesis" } else { "the previous record's hash" }
                )));
            }
            None if !is_hash(&body.prev_hash) => {
                return Err(broken(format!(
                    "prev_hash {:?} of the first record is not 64 lowercase hex digits",
                    body.prev_hash
                )));
            }
            _ => {}
        }
        let actual = sha256_hex(&hashed_bytes(&body));
        if hash != actual {
            return Err(broken(format!(
                "hash {hash} does not match the record's contents (computed {actual}): the record was edited"
            )));
        }
        if !body.query_truncated && sha256_hex(body.query.as_bytes()) != body.query_sha256 {
            return Err(broken("query_sha256 does not match the query".into()));
        }
        check_body(&body).map_err(broken)?;
        prev = Some((seq, hash));
        count += 1;
    }
    if let Some(tail) = &opts.tail {
        let (seq, hash) = prev.clone().unwrap_or((0, opts.genesis.clone().unwrap_or_default()));
        if seq != tail.seq || (tail.seq > 0 && hash != tail.hash) {
            return Err(BrokenLink {
                line: last_line + 1,
                seq: Some(seq),
                problem: format!(
                    "the chain ends at seq {seq} with hash {hash} but the plugin's tail is seq {} with hash {}: records were cut off the end or the chain was rewritten",
                    tail.seq, tail.hash
                ),
            });
        }
    }
    Ok(count)
}

fn check_body(body: &Body) -> Result<(), String> {
    if !is_hash(&body.query_sha256) {
        return Err(format!("query_sha256 {:?} is not 64 lowercase hex digits", body.query_sha256));
    }
    Ok(())
}
