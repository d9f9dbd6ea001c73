//! tool-denylist's guard under the Extism PDK: same config key, same decision, JSON in and out.

use extism_pdk::{FnResult, Json, config, info, plugin_fn};
use helios_plugin_abi::{GuardRequest, GuardVerdict};

/// The same parsing as `tool_denylist::parse_denylist`.
fn parse_denylist(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

#[plugin_fn]
pub fn evaluate(Json(req): Json<GuardRequest>) -> FnResult<Json<GuardVerdict>> {
    let Some(list) = config::get("denylist")? else {
        return Ok(Json(GuardVerdict::Allow));
    };
    if parse_denylist(&list).contains(&req.tool_name.as_str()) {
        info!("denied tool {:?}", req.tool_name);
        return Ok(Json(GuardVerdict::deny(format!("tool \"{}\" is on the denylist", req.tool_name))));
    }
    Ok(Json(GuardVerdict::Allow))
}
