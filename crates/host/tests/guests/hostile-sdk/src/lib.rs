//! hostile-sdk: an SDK-built test guest for the host's escape suite and load test. Config key
//! `behavior` selects what its `pre_query` hook and its guard do:
//!
//! | `behavior` | effect |
//! |---|---|
//! | `count` (or unset) | adds one to the KV counter `count:<client_id>` (u64 little-endian), then continue / allow |
//! | `panic_long` | panics with a 10,000-byte message (the log line the host keeps is capped at 4096 bytes) |
//! | `alloc_bomb` | asks the allocator for 1 GiB (over any memory cap: the grow is refused, the guest aborts) |
//!
//! The counter key is per client: one client's calls are sequential, so a read-add-write per key
//! never races with itself even when two instances of the plugin run at once (see SECURITY.md).

use std::hint::black_box;

use helios_plugin_abi::*;

/// Config key selecting the behaviour.
pub const BEHAVIOR_KEY: &str = "behavior";
/// Prefix of the counter keys; the client id follows.
pub const COUNTER_PREFIX: &str = "count:";
/// Length of the `panic_long` message.
pub const LONG_PANIC_BYTES: usize = 10_000;

/// The counter key of a client.
pub fn counter_key(client_id: Option<&str>) -> String {
    format!("{COUNTER_PREFIX}{}", client_id.unwrap_or("-"))
}

/// Adds one to the counter of `client_id`; returns the new count.
pub fn bump(client_id: Option<&str>) -> Result<u64, HostError> {
    let key = counter_key(client_id);
    let old = match kv_read(&key)? {
        Some(b) => b.try_into().map(u64::from_le_bytes).unwrap_or(0),
        None => 0,
    };
    kv_write(&key, (old + 1).to_le_bytes())?;
    Ok(old + 1)
}

/// Runs the configured behaviour: `Err` carries a reason to block or deny with.
pub fn act(client_id: Option<&str>) -> Result<(), String> {
    match get_config(BEHAVIOR_KEY).as_deref().unwrap_or("count") {
        "count" => bump(client_id).map(|_| ()).map_err(|e| format!("hostile-sdk: counter not updated: {e}")),
        "panic_long" => panic!("{}", "p".repeat(LONG_PANIC_BYTES)),
        "alloc_bomb" => {
            let v = black_box(vec![1u8; 1 << 30]);
            Err(format!("hostile-sdk: got {} bytes", v.len()))
        }
        other => Err(format!("hostile-sdk: unknown behavior {other:?}")),
    }
}

#[hook(PreQuery)]
pub fn pre_query(ctx: &QueryContext) -> PreQueryResult {
    match act(ctx.hook_context.client_id.as_deref()) {
        Ok(()) => PreQueryResult::Continue,
        Err(reason) => PreQueryResult::Block { reason },
    }
}

#[chio_guard]
pub fn evaluate(req: GuardRequest) -> GuardVerdict {
    match act(Some(&req.agent_id)) {
        Ok(()) => GuardVerdict::Allow,
        Err(reason) => GuardVerdict::deny(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_keeps_one_counter_per_client() {
        testing::reset();
        let ctx = |c: &str| QueryContext {
            hook_context: HookContext { client_id: Some(c.into()), ..Default::default() },
            ..Default::default()
        };
        for c in ["a", "b", "a"] {
            assert_eq!(pre_query(&ctx(c)), PreQueryResult::Continue);
        }
        let kv = testing::kv_snapshot();
        assert_eq!(kv[&b"count:a".to_vec()], 2u64.to_le_bytes());
        assert_eq!(kv[&b"count:b".to_vec()], 1u64.to_le_bytes());
    }
}
