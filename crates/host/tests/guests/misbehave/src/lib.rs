//! guest-misbehave: a test guest for the host's limits and error policies. Its `#[chio_guard]` and
//! `#[hook(PreQuery)]` do what config key `behavior` says:
//!
//! | `behavior` | guard / pre_query |
//! |---|---|
//! | `ok` (or unset) | allow / continue |
//! | `panic` | panics with "misbehave: deliberate panic" (a trap, after the panic hook logs it) |
//! | `loop` | loops forever (fuel or the deadline must stop it) |
//! | `recurse` | recurses without bound (stack overflow trap) |
//! | `grow` | keeps 1 MiB chunks alive until memory runs out (trap) |
//! | `slow_host_calls` | calls `sha256_digest_hex` on 64 KiB forever |
//! | `kv_counter` | adds one to KV `count` (u64 little-endian), then allow / continue |
//! | `kv_flood` | writes keys until `kv_write` fails, then deny / block with the error |
//! | `log_flood` | logs 1000 lines of 5000 bytes, then allow / continue |
//! | `rewrite` | allow / rewrite to `/* misbehave */ ` + query |
//! | `long_reason` | deny / block with a 10,000-byte reason (`é` × 5000), longer than the host's buffer |
//! | anything else | deny / block naming the unknown behaviour |
//!
//! Config key `panic_on`: `pre_query` panics (a trap) on a statement containing its text, whatever
//! `behavior` says, and otherwise does what `behavior` says — a version that passes a canary corpus
//! without that text and fails on live traffic.
//!
//! `#[hook(Route)]` answers `Node { target: <config "node"> }` (default routing without it) and
//! `#[hook(PostQuery)]` adds one to KV `post_count`.

use std::hint::black_box;

use helios_plugin_abi::*;

/// Config key selecting the behaviour.
pub const BEHAVIOR_KEY: &str = "behavior";
/// Config key: `pre_query` panics on a statement containing its (non-empty) text.
pub const PANIC_ON_KEY: &str = "panic_on";
/// The message of the deliberate panic.
pub const PANIC_MESSAGE: &str = "misbehave: deliberate panic";
/// What `rewrite` puts in front of the query.
pub const REWRITE_PREFIX: &str = "/* misbehave */ ";

/// The character `long_reason` repeats (two bytes in UTF-8, so a cut can fall inside it).
pub const LONG_REASON_CHAR: char = 'é';

/// What a behaviour decided, before it is mapped onto the guard or hook result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    Pass,
    Stop(String),
    Rewrite,
}

/// Runs the configured behaviour. Returns only for the behaviours that finish.
pub fn act() -> Act {
    let behavior = get_config(BEHAVIOR_KEY).unwrap_or_else(|| "ok".to_owned());
    match behavior.as_str() {
        "ok" => Act::Pass,
        "panic" => panic!("{PANIC_MESSAGE}"),
        "loop" => loop {
            black_box(());
        },
        "recurse" => {
            black_box(recurse(black_box(0)));
            Act::Stop("misbehave: recursion ended".to_owned())
        }
        "grow" => {
            let mut keep: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = vec![1u8; 1 << 20];
                black_box(&mut chunk);
                keep.push(chunk);
                black_box(&keep);
            }
        }
        "slow_host_calls" => {
            let input = vec![0xA5u8; 64 << 10];
            loop {
                black_box(sha256_digest_hex(black_box(&input)).ok());
            }
        }
        "kv_counter" => match bump("count") {
            Ok(_) => Act::Pass,
            Err(e) => Act::Stop(format!("misbehave: kv_counter failed: {e}")),
        },
        "kv_flood" => {
            let value = [0x5Au8; 64];
            for i in 0u64.. {
                if let Err(e) = kv_write(format!("flood:{i}"), value) {
                    return Act::Stop(format!("misbehave: kv_flood stopped after {i} keys: {e}"));
                }
            }
            Act::Stop("misbehave: kv_flood never failed".to_owned())
        }
        "log_flood" => {
            let line = "x".repeat(5000);
            for _ in 0..1000 {
                log(Level::Info, &line);
            }
            Act::Pass
        }
        "rewrite" => Act::Rewrite,
        "long_reason" => Act::Stop(LONG_REASON_CHAR.to_string().repeat(5000)),
        other => Act::Stop(format!("misbehave: unknown behavior {other:?}")),
    }
}

/// Recursion the optimiser cannot turn into a loop: every frame keeps an opaque local alive across
/// the call and the base case depends on an opaque value.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    if black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse(depth + 1).wrapping_add(black_box(frame)[15])
}

/// Adds one to a u64 little-endian KV counter and returns the new value.
pub fn bump(key: &str) -> Result<u64, HostError> {
    let old = match kv_read(key)? {
        Some(b) if b.len() == 8 => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
        _ => 0,
    };
    let new = old + 1;
    kv_write(key, new.to_le_bytes())?;
    Ok(new)
}

#[chio_guard]
pub fn evaluate(_req: GuardRequest) -> GuardVerdict {
    match act() {
        Act::Pass | Act::Rewrite => GuardVerdict::Allow,
        Act::Stop(reason) => GuardVerdict::deny(reason),
    }
}

#[hook(PreQuery)]
pub fn pre_query(ctx: &QueryContext) -> PreQueryResult {
    if get_config(PANIC_ON_KEY).is_some_and(|text| !text.is_empty() && ctx.query.contains(&text)) {
        panic!("{PANIC_MESSAGE}");
    }
    match act() {
        Act::Pass => PreQueryResult::Continue,
        Act::Stop(reason) => PreQueryResult::Block { reason },
        Act::Rewrite => PreQueryResult::Rewrite { sql: format!("{REWRITE_PREFIX}{}", ctx.query) },
    }
}

#[hook(Route)]
pub fn route(_ctx: &QueryContext) -> RouteResult {
    match get_config("node") {
        Some(target) => RouteResult::Node { target },
        None => RouteResult::Default,
    }
}

#[hook(PostQuery)]
pub fn post_query(_env: PostQueryEnvelope) {
    if let Err(e) = bump("post_count") {
        log(Level::Error, &format!("misbehave: post_count not updated: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> QueryContext {
        QueryContext { query: sql.into(), ..Default::default() }
    }

    #[test]
    fn ok_allows_and_continues() {
        testing::reset();
        testing::set_config(BEHAVIOR_KEY, "ok");
        assert_eq!(evaluate(GuardRequest::default()), GuardVerdict::Allow);
        assert_eq!(pre_query(&query("select 1")), PreQueryResult::Continue);
    }

    #[test]
    fn kv_counter_counts_every_call_in_little_endian() {
        testing::reset();
        testing::set_config(BEHAVIOR_KEY, "kv_counter");
        evaluate(GuardRequest::default());
        pre_query(&query("select 1"));
        pre_query(&query("select 1"));
        assert_eq!(testing::kv_snapshot()[&b"count".to_vec()], 3u64.to_le_bytes());
    }

    #[test]
    fn kv_flood_stops_at_the_key_cap_with_the_error() {
        testing::reset();
        testing::set_config(BEHAVIOR_KEY, "kv_flood");
        let PreQueryResult::Block { reason } = pre_query(&query("x")) else { panic!("not blocked") };
        let cap = helios_plugin_abi::schema::limits::KV_MAX_KEYS;
        assert!(reason.contains(&format!("after {cap} keys")) && reason.contains("quota"), "{reason}");
    }

    #[test]
    fn rewrite_prefixes_the_query_and_the_guard_allows() {
        testing::reset();
        testing::set_config(BEHAVIOR_KEY, "rewrite");
        assert_eq!(pre_query(&query("select 1")), PreQueryResult::Rewrite { sql: "/* misbehave */ select 1".into() });
        assert_eq!(evaluate(GuardRequest::default()), GuardVerdict::Allow);
    }

    #[test]
    fn log_flood_logs_a_thousand_capped_lines() {
        testing::reset();
        testing::set_config(BEHAVIOR_KEY, "log_flood");
        pre_query(&query("x"));
        let logs = testing::logs();
        assert_eq!(logs.len(), 1000);
        assert!(logs.iter().all(|(_, m)| m.len() == helios_plugin_abi::schema::limits::LOG_MAX_MESSAGE_BYTES));
    }

    #[test]
    fn panic_panics_with_the_documented_message() {
        testing::reset();
        testing::set_config(BEHAVIOR_KEY, "panic");
        let err = std::panic::catch_unwind(|| pre_query(&query("x"))).unwrap_err();
        let msg = err.downcast_ref::<String>().map(String::as_str).or(err.downcast_ref::<&str>().copied());
        assert_eq!(msg, Some(PANIC_MESSAGE));
    }

    #[test]
    fn panic_on_panics_only_on_statements_containing_its_text() {
        testing::reset();
        testing::set_config(BEHAVIOR_KEY, "ok");
        testing::set_config(PANIC_ON_KEY, "boom");
        assert_eq!(pre_query(&query("select 1")), PreQueryResult::Continue);
        assert!(std::panic::catch_unwind(|| pre_query(&query("select 'boom'"))).is_err());
        testing::set_config(PANIC_ON_KEY, "");
        assert_eq!(pre_query(&query("select 'boom'")), PreQueryResult::Continue, "an empty text never matches");
    }

    #[test]
    fn an_unknown_behavior_denies_naming_it() {
        testing::reset();
        testing::set_config(BEHAVIOR_KEY, "explode");
        assert_eq!(evaluate(GuardRequest::default()), GuardVerdict::deny("misbehave: unknown behavior \"explode\""));
    }

    #[test]
    fn route_follows_the_node_key_and_post_query_counts() {
        testing::reset();
        assert_eq!(route(&query("x")), RouteResult::Default);
        testing::set_config("node", "replica-2");
        assert_eq!(route(&query("x")), RouteResult::Node { target: "replica-2".into() });
        post_query(PostQueryEnvelope::default());
        post_query(PostQueryEnvelope::default());
        assert_eq!(testing::kv_snapshot()[&b"post_count".to_vec()], 2u64.to_le_bytes());
    }
}
