//! llm-guardrail's pre_query hook under the Extism PDK. The detection and rule modules are the
//! example's own source files; only the config lookup and the export differ.

use extism_pdk::{FnResult, Json, config, plugin_fn, warn};
use helios_plugin_abi::{PreQueryResult, QueryContext};

#[path = "../../../../examples/ai-classifier/src/detect.rs"]
#[allow(dead_code)]
mod detect;
#[path = "../../../../examples/llm-guardrail/src/rules.rs"]
#[allow(dead_code)]
mod rules;

/// `llm_guardrail::Config::from_lookup` and `llm_guardrail::decide`, verbatim in behaviour.
fn decide(get: impl Fn(&str) -> Option<String>, ctx: &QueryContext) -> PreQueryResult {
    let apply_to_all = match get("apply_to_all").as_deref().map(str::trim) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return PreQueryResult::Block {
                reason: format!("llm-guardrail: config key apply_to_all: expected \"true\" or \"false\", found {other:?}"),
            };
        }
    };
    let detect_cfg = detect::DetectConfig::from_lookup(&get);
    let rules_cfg = rules::Rules::from_lookup(&get);
    let signals = detect::signals(&detect_cfg, ctx);
    if signals.is_empty() && !apply_to_all {
        return PreQueryResult::Continue;
    }
    match rules::judge(&rules_cfg, &ctx.query) {
        Ok(()) => PreQueryResult::Continue,
        Err(why) => {
            let traffic = if signals.is_empty() {
                "apply_to_all".to_owned()
            } else {
                signals.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            };
            PreQueryResult::Block { reason: format!("llm-guardrail: {why} (AI traffic: {traffic})") }
        }
    }
}

#[plugin_fn]
pub fn guard(Json(ctx): Json<QueryContext>) -> FnResult<Json<PreQueryResult>> {
    let result = decide(|k| config::get(k).ok().flatten(), &ctx);
    if let PreQueryResult::Block { reason } = &result {
        warn!("request {:?}: {reason}", ctx.hook_context.request_id);
    }
    Ok(Json(result))
}
