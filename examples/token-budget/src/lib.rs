//! token-budget: per (agent, model) token spend gating per minute and day for HeliosProxy.
//!
//! An agent names itself and its model in the attributes `helios.agent` and `helios.model`, and says
//! how many tokens the model spent writing the statement in `helios.tokens`. `pre_query` blocks a
//! statement whose tokens would take the pair past its minute or day limit (the day is checked first;
//! the reason names the window and when it resets) and charges the tokens of every statement it
//! admits, atomically (`kv_add`), so replicas sharing one store never admit more than the limit. Windows follow the host clock. See README.md.
//!
//! The decisions live in [`budget`]; the window ledger is the `budget-ledger` crate, shared with
//! cost-governor so the window and eviction rules exist once. The config is parsed once per instance.

use helios_plugin_abi::*;

// It decides from the identity, attributes and outcome, never from the statement facts: the host
// leaves them out of its input.
helios_plugin_abi::without_statement_facts!();

pub mod budget;
/// The window ledger, shared with cost-governor.
pub use budget_ledger as ledger;

/// The host's KV (namespaced to this plugin by the host) as a [`ledger::Store`].
pub use helios_plugin_abi::kv::HostKv;

/// The configuration, read once per instance.
static CONFIG: config::InstanceConfig<budget::Config, budget::ConfigError> =
    config::InstanceConfig::new(|| budget::Config::from_lookup(get_config));

/// Blocks a statement that would take its (agent, model) past a limit; a configuration error blocks
/// too (fail-closed), with the reason naming the key.
#[hook(PreQuery)]
pub fn gate_spend(ctx: &QueryContext) -> PreQueryResult {
    let result = CONFIG.with(|cfg| match cfg {
        Ok(cfg) => budget::check(cfg, &mut HostKv, &ctx.hook_context, get_time()),
        Err(e) => PreQueryResult::Block { reason: e.to_string() },
    });
    if let PreQueryResult::Block { reason } = &result {
        log(Level::Info, reason);
    }
    result
}

/// Logs what the statement was charged. The charge itself happened atomically in `pre_query`, when
/// the statement was admitted; this hook stays so configurations that list it keep loading.
#[hook(PostQuery)]
pub fn charge_spend(env: &PostQueryEnvelope) {
    match budget::charged(env) {
        Ok(Some((pair, tokens))) => log(Level::Debug, &format!("token-budget: {pair} was charged {tokens} tokens")),
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
