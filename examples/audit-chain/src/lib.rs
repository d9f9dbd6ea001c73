//! audit-chain: a hash-chained, tamper-evident record of every query through HeliosProxy, and the
//! verifier of an exported chain.
//!
//! `post_query` builds one [`chain::Record`] per statement (seq, request id, identity, the query, the
//! outcome, the host-clock timestamp, `prev_hash` and `hash`), hashing through the host's real
//! `sha256_hex` import, advances the chain's tail (seq and last hash) in KV under [`chain::TAIL_KEY`]
//! with compare-and-swap, and emits the record as one Info log line `audit-record <json>`. The host's log
//! sink collects those lines; an exported chain is the JSON of those lines, one per line, and
//! [`verify_chain`] (native only) checks it and names the first broken link: an edited record fails its
//! own hash, a deleted, inserted or moved record breaks the seq/prev_hash links, and with the KV tail
//! ([`verify_chain_with`]) records cut off the end are caught too. See README.md.
//!
//! **Concurrency:** the tail advances only by compare-and-swap against the exact bytes the record was
//! built on; an instance that loses (another instance, thread or replica appended first) builds its
//! record again on the new tail, up to [`TAIL_RETRIES`] times. So any number of instances sharing one
//! store extend one chain and it never forks. Their log lines can interleave out of `seq` order;
//! the chain's order is its `seq`/`prev_hash` links, so sort an export by `seq` before verifying it.

use helios_plugin_abi::*;

// It decides from the identity, attributes and outcome, never from the statement facts: the host
// leaves them out of its input.
helios_plugin_abi::without_statement_facts!();

/// The record format and the verifier live in `audit-chain-verify`, which the CLI uses too.
pub use audit_chain_verify::chain;
#[cfg(not(target_arch = "wasm32"))]
pub use audit_chain_verify::verify;
#[cfg(not(target_arch = "wasm32"))]
pub use audit_chain_verify::{BrokenLink, VerifyOptions, verify_chain, verify_chain_with};

/// The genesis, read once per instance.
static GENESIS: config::InstanceConfig<String, String> = config::InstanceConfig::new(genesis);

/// The genesis from config `genesis` (64 lowercase hex; default 64 zeros).
pub fn genesis() -> Result<String, String> {
    match get_config("genesis") {
        None => Ok(chain::ZERO_GENESIS.to_owned()),
        Some(g) if chain::is_hash(g.trim()) => Ok(g.trim().to_owned()),
        Some(g) => Err(format!("audit-chain: config key genesis: expected 64 lowercase hex digits, found {g:?}")),
    }
}

/// How often a record is rebuilt on a tail another instance moved first before the statement is
/// reported as not recorded.
pub const TAIL_RETRIES: usize = 64;

/// The tail's stored bytes (as read, for the compare-and-swap) and its value.
fn read_tail() -> Result<(Option<Vec<u8>>, chain::Tail), String> {
    let raw = kv_read(chain::TAIL_KEY).map_err(|e| e.to_string())?;
    let tail = match &raw {
        None => chain::Tail { seq: 0, hash: GENESIS.with(|g| g.cloned().map_err(Clone::clone))? },
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| {
            format!("KV key {:?}: expected {{\"seq\", \"hash\"}}, found something else ({e})", chain::TAIL_KEY)
        })?,
    };
    Ok((raw, tail))
}

/// Appends the statement to the chain. Failures are logged at Error (`post_query` cannot refuse a
/// statement that already ran); a record is emitted only after its tail swap succeeded, so the chain
/// never forks.
#[hook(PostQuery)]
pub fn record_query(env: &PostQueryEnvelope) {
    let id = &env.query_context.hook_context.request_id;
    let result = (|| -> Result<(), String> {
        for _ in 0..TAIL_RETRIES {
            let (raw, tail) = read_tail()?;
            let max_line = schema::limits::LOG_MAX_MESSAGE_BYTES;
            let record = chain::next_record(&tail, env, get_time(), max_line, |b| {
                sha256_digest_hex(b).map_err(|e| e.to_string())
            })?;
            let new_tail = chain::Tail { seq: record.body.seq, hash: record.hash.clone() };
            let bytes = serde_json::to_vec(&new_tail).map_err(|e| e.to_string())?;
            match atomic::kv_compare_and_swap(chain::TAIL_KEY, raw.as_deref(), bytes).map_err(|e| e.to_string())? {
                atomic::Swap::Done => {
                    log(Level::Info, &chain::log_line(&record));
                    return Ok(());
                }
                // Another instance appended first: build the record again on its tail.
                atomic::Swap::Conflict => continue,
            }
        }
        Err(format!("the tail kept moving under {TAIL_RETRIES} compare-and-swap attempts"))
    })();
    if let Err(e) = result {
        log(Level::Error, &format!("audit-chain: statement of request {id:?} not recorded: {e}"));
    }
}

#[cfg(test)]
mod tests;
