//! token-budget: per (agent, model) token spend gating per minute and day for HeliosProxy.
//!
//! An agent names itself and its model in the attributes `helios.agent` and `helios.model`, and says
//! how many tokens the model spent writing the statement in `helios.tokens`. `pre_query` blocks a
//! statement whose tokens would take the pair past its minute or day limit (the day is checked first;
//! the reason names the window and when it resets); `post_query` charges the tokens of every statement
//! that ran. Windows follow the host clock. See README.md.
//!
//! The decisions live in [`budget`]; the window ledger is cost-governor's, included from its crate so
//! the window and eviction rules exist once.

use helios_plugin_abi::*;

pub mod budget;
#[path = "../../cost-governor/src/ledger.rs"]
pub mod ledger;

/// The host's KV (namespaced to this plugin by the host) as a [`ledger::Store`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HostKv;

impl ledger::Store for HostKv {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        kv_read(key).map_err(|e| e.to_string())
    }
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        kv_write(key, value).map_err(|e| e.to_string())
    }
    fn remove(&mut self, key: &str) -> Result<(), String> {
        kv_remove(key).map_err(|e| e.to_string())
    }
}

/// Blocks a statement that would take its (agent, model) past a limit; a configuration error blocks
/// too (fail-closed), with the reason naming the key.
#[hook(PreQuery)]
pub fn gate_spend(ctx: &QueryContext) -> PreQueryResult {
    let result = match budget::Config::from_lookup(get_config) {
        Ok(cfg) => budget::check(&cfg, &mut HostKv, &ctx.hook_context, get_time()),
        Err(e) => PreQueryResult::Block { reason: e.to_string() },
    };
    if let PreQueryResult::Block { reason } = &result {
        log(Level::Info, reason);
    }
    result
}

/// Charges the statement's tokens to its (agent, model).
#[hook(PostQuery)]
pub fn charge_spend(env: &PostQueryEnvelope) {
    let cfg = match budget::Config::from_lookup(get_config) {
        Ok(cfg) => cfg,
        Err(e) => return log(Level::Error, &e.to_string()),
    };
    match budget::charge(&cfg, &mut HostKv, env, get_time()) {
        Ok(Some((pair, tokens))) => log(Level::Debug, &format!("token-budget: charged {pair} {tokens} tokens")),
        Ok(None) => {}
        Err(e) => log(Level::Error, &format!("token-budget: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(tokens: &str) -> QueryContext {
        let mut ctx = QueryContext { query: "SELECT 1".into(), ..Default::default() };
        for (k, v) in [("helios.agent", "support-bot"), ("helios.model", "gpt-4o"), ("helios.tokens", tokens)] {
            ctx.hook_context.attributes.insert(k.into(), v.into());
        }
        ctx
    }

    #[test]
    fn hooks_gate_and_charge_through_the_host() {
        testing::reset();
        testing::set_config("budget_day", "1000");
        testing::set_time(1_700_000_000);
        for _ in 0..4 {
            assert_eq!(gate_spend(&query("250")), PreQueryResult::Continue);
            charge_spend(&PostQueryEnvelope { query_context: query("250"), ..Default::default() });
        }
        let PreQueryResult::Block { reason } = gate_spend(&query("1")) else { panic!("expected a block") };
        assert!(reason.contains("day budget (1000 used + 1 requested > 1000 tokens)"), "{reason}");
        assert!(testing::logs().iter().any(|(l, m)| *l == Level::Info && *m == reason));
        testing::set_time(1_700_006_400); // the next UTC day
        assert_eq!(gate_spend(&query("1000")), PreQueryResult::Continue);
    }

    #[test]
    fn a_config_error_blocks_and_names_the_key() {
        testing::reset();
        testing::set_config("budget_minute", "ten");
        let r = gate_spend(&query("1"));
        assert_eq!(
            r,
            PreQueryResult::Block {
                reason: "token-budget: config key budget_minute: expected a non-negative integer, found \"ten\"".into()
            }
        );
    }
}
