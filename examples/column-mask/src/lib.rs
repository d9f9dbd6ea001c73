//! column-mask: per-role column masking for HeliosProxy, by rewriting the SQL's syntax tree.
//!
//! Rules (config `rules`, a JSON array of `{table, column, mask_function, unmask_role}`) name the
//! columns to mask and the SQL function that masks them; `table_columns` (JSON `{table: [columns]}`)
//! lets `SELECT *` be expanded. For every identity except a rule's `unmask_role`, projected masked
//! columns become `mask_function(col) AS col` ([`mask`] lists the query shapes); the hook answers
//! `Rewrite { sql }` only when something changed, `Continue` otherwise, and `Block` for what cannot be
//! masked (fail-closed). See README.md.

use helios_plugin_abi::*;

pub mod mask;

/// The configuration, read once per instance.
static CONFIG: config::InstanceConfig<mask::Config, String> =
    config::InstanceConfig::new(|| mask::Config::from_lookup(get_config));

/// Masks the statement for the session's identity.
#[hook(PreQuery)]
pub fn mask_columns(ctx: &QueryContext) -> PreQueryResult {
    CONFIG.with(|cfg| match cfg {
        Ok(cfg) => mask_with(cfg, ctx),
        Err(e) => {
            log(Level::Error, e);
            PreQueryResult::Block { reason: e.clone() }
        }
    })
}

fn mask_with(cfg: &mask::Config, ctx: &QueryContext) -> PreQueryResult {
    let id = &ctx.hook_context.request_id;
    // With the host's facts, a statement naming no masked table is not parsed at all.
    let host_facts = if facts::from_host(ctx) { ctx.facts.as_ref() } else { None };
    match mask::rewrite_with(cfg, ctx.hook_context.identity.as_deref(), &ctx.query, host_facts) {
        Ok(None) => PreQueryResult::Continue,
        Ok(Some(sql)) => {
            log(Level::Debug, &format!("column-mask: request {id:?} rewritten"));
            PreQueryResult::Rewrite { sql }
        }
        Err(reason) => {
            log(Level::Warn, &format!("request {id:?}: {reason}"));
            PreQueryResult::Block { reason }
        }
    }
}

#[cfg(test)]
mod tests;
