//! cost-governor: per-tenant cost budgets per minute, hour and day for HeliosProxy.
//!
//! `post_query` charges each statement's cost (elapsed time and response size, with configurable
//! weights) to its tenant; `pre_query` blocks a tenant whose budget is used up in any window (the day
//! is checked first), naming the window and when it resets, and charges the fixed `cost_per_query`
//! of each statement it admits. Every charge is the host's atomic `kv_add`, so no charge is lost
//! between concurrent instances or replicas sharing one store. Windows are aligned on the host clock
//! (`get_time`), so they roll over the same way in tests and in production. See README.md for the
//! config keys and the KV keys.
//!
//! The decisions live in [`governor`] as plain functions over a [`ledger::Store`]; this file binds them
//! to the host: its config (parsed once per instance), its clock and its KV.

use helios_plugin_abi::*;

// It decides from the identity, attributes and outcome, never from the statement facts: the host
// leaves them out of its input.
helios_plugin_abi::without_statement_facts!();

pub mod governor;
/// The window ledger, shared with token-budget.
pub use budget_ledger as ledger;

/// The host's KV (namespaced to this plugin by the host) as a [`ledger::Store`].
pub use helios_plugin_abi::kv::HostKv;

/// The configuration, read once per instance.
static CONFIG: config::InstanceConfig<governor::Config, governor::ConfigError> =
    config::InstanceConfig::new(|| governor::Config::from_lookup(get_config));

/// Blocks a tenant whose budget is used up; a configuration error blocks too (fail-closed), with the
/// reason naming the key.
#[hook(PreQuery)]
pub fn check_budget(ctx: &QueryContext) -> PreQueryResult {
    let result = CONFIG.with(|cfg| match cfg {
        Ok(cfg) => governor::check(cfg, &mut HostKv, &ctx.hook_context, get_time()),
        Err(e) => {
            log(Level::Error, &e.to_string());
            PreQueryResult::Block { reason: e.to_string() }
        }
    });
    if let PreQueryResult::Block { reason } = &result {
        log(Level::Info, reason);
    }
    result
}

/// Charges the statement's cost to its tenant in every window.
#[hook(PostQuery)]
pub fn charge_cost(env: &PostQueryEnvelope) {
    CONFIG.with(|cfg| match cfg {
        Ok(cfg) => charge_with(cfg, env),
        Err(e) => log(Level::Error, &e.to_string()),
    })
}

fn charge_with(cfg: &governor::Config, env: &PostQueryEnvelope) {
    match governor::charge(cfg, &mut HostKv, env, get_time()) {
        Ok((tenant, milli)) => {
            log(Level::Debug, &format!("cost-governor: charged tenant {tenant:?} {} units", governor::units(milli)))
        }
        Err(e) => log(Level::Error, &format!("cost-governor: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(tenant: &str) -> QueryContext {
        let mut ctx = QueryContext { query: "SELECT * FROM orders WHERE id = 1".into(), ..Default::default() };
        ctx.hook_context.request_id = "r1".into();
        ctx.hook_context.attributes.insert("helios.tenant".into(), tenant.into());
        ctx
    }

    fn done(tenant: &str, elapsed_us: u64, response_bytes: u64) -> PostQueryEnvelope {
        PostQueryEnvelope {
            query_context: query(tenant),
            outcome: QueryOutcome { success: true, elapsed_us, response_bytes, ..Default::default() },
        }
    }

    #[test]
    fn hooks_charge_through_the_host_kv_and_block_on_the_host_clock() {
        testing::reset();
        testing::set_config("budget_minute", "3");
        testing::set_config("cost_per_kb", "0");
        testing::set_time(1_700_000_100);
        for _ in 0..3 {
            assert_eq!(check_budget(&query("acme")), PreQueryResult::Continue);
            charge_cost(&done("acme", 1_000, 5_000));
        }
        let PreQueryResult::Block { reason } = check_budget(&query("acme")) else { panic!("expected a block") };
        assert!(reason.contains("minute budget") && reason.contains("3.000 of 3"), "{reason}");
        assert_eq!(check_budget(&query("other")), PreQueryResult::Continue);
        testing::set_time(1_700_000_160);
        assert_eq!(check_budget(&query("acme")), PreQueryResult::Continue);
        let keys: Vec<String> =
            testing::kv_snapshot().keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        // The minute that rolled over took its counter with it.
        assert_eq!(keys, vec!["tenant:acme:day:1699920000", "tenant:acme:hour:1699999200", "tenant:index"]);
    }

    #[test]
    fn an_unreachable_store_blocks_naming_it_and_the_tenant() {
        testing::reset();
        testing::set_config("cost_per_query", "1");
        testing::set_store_unavailable(true);
        let PreQueryResult::Block { reason } = check_budget(&query("acme")) else { panic!("expected a block") };
        assert!(
            reason.contains("\"acme\"") && reason.contains("failing closed") && reason.contains("unavailable"),
            "{reason}"
        );
        testing::set_store_unavailable(false);
        assert_eq!(check_budget(&query("acme")), PreQueryResult::Continue, "recovers when the store is back");
    }

    #[test]
    fn a_config_error_blocks_and_names_the_key() {
        testing::reset();
        testing::set_config("budget_hour", "-5");
        let r = check_budget(&query("acme"));
        assert_eq!(
            r,
            PreQueryResult::Block {
                reason: "cost-governor: config key budget_hour: expected a non-negative integer, found \"-5\"".into()
            }
        );
    }
}
