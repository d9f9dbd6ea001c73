//! llm-guardrail: refuses dangerous SQL from AI traffic in HeliosProxy, judged on the statement facts.
//!
//! Which traffic: statements [`detect`] recognises as AI-generated (an `application_name` keyword, the
//! `helios.ai_traffic` attribute, or a comment marker such as `/* ai: ... */`), the same rules and
//! config keys as ai-classifier; with config `apply_to_all = "true"`, every statement. The rules
//! ([`rules`]) run on the facts the host sent (PostgreSQL's parser in helios-proxy) or, from a host
//! that sends none, on facts the guest extracts itself (sqlparser): default deny by statement class,
//! the restriction rule, routine bodies, denied functions, large and tenant tables. See README.md.

pub use ai_detect as detect;
use helios_plugin_abi::*;

pub mod rules;

/// The guardrail's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub apply_to_all: bool,
    pub detect: detect::DetectConfig,
    pub rules: rules::Rules,
}

impl Config {
    /// Reads `apply_to_all` (`"true"`/`"false"`, default false), the detection keys and the rule keys.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let apply_to_all = match get("apply_to_all") {
            None => false,
            Some(v) => config::flag(&v).map_err(|e| format!("llm-guardrail: config key apply_to_all: {e}"))?,
        };
        let rules = rules::Rules::from_lookup(&get);
        rules.check_allow()?;
        Ok(Config { apply_to_all, detect: detect::DetectConfig::from_lookup(&get), rules })
    }
}

/// The decision for one statement: which traffic it is, then the rules.
pub fn decide(cfg: &Config, ctx: &QueryContext) -> PreQueryResult {
    let signals = detect::signals(&cfg.detect, ctx);
    if signals.is_empty() && !cfg.apply_to_all {
        return PreQueryResult::Continue;
    }
    match rules::judge(&cfg.rules, &facts::of(ctx)) {
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

/// The configuration, read once per instance.
static CONFIG: config::InstanceConfig<Config, String> = config::InstanceConfig::new(|| Config::from_lookup(get_config));

/// Refuses dangerous SQL from AI traffic. A configuration error blocks AI traffic too (fail-closed).
#[hook(PreQuery)]
pub fn guard(ctx: &QueryContext) -> PreQueryResult {
    let result = CONFIG.with(|cfg| match cfg {
        Ok(cfg) => decide(cfg, ctx),
        Err(e) => PreQueryResult::Block { reason: e.clone() },
    });
    if let PreQueryResult::Block { reason } = &result {
        log(Level::Warn, &format!("request {:?}: {reason}", ctx.hook_context.request_id));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(sql: &str, attrs: &[(&str, &str)]) -> QueryContext {
        let mut c = QueryContext { query: sql.into(), ..Default::default() };
        c.hook_context.request_id = "r1".into();
        for (k, v) in attrs {
            c.hook_context.attributes.insert(k.to_string(), v.to_string());
        }
        c
    }

    fn is_block(r: &PreQueryResult) -> bool {
        matches!(r, PreQueryResult::Block { .. })
    }

    /// The demo corpus (examples/corpus/sql.jsonl): each line's context, without facts.
    fn corpus() -> Vec<QueryContext> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus/sql.jsonl")).unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let mut c = QueryContext { query: v["sql"].as_str().unwrap_or_default().into(), ..Default::default() };
                c.hook_context.identity = v["identity"].as_str().map(str::to_owned);
                for (k, a) in v["attributes"].as_object().into_iter().flatten() {
                    c.hook_context.attributes.insert(k.clone(), a.as_str().unwrap_or_default().into());
                }
                c
            })
            .collect()
    }

    #[test]
    fn the_corpus_is_judged_the_same_on_host_facts_and_on_guest_facts() {
        // The demo's configuration (examples/corpus/proxy.toml).
        let cfg = Config::from_lookup(|k| match k {
            "large_tables" => Some("events,page_views,audit_log".into()),
            "tenant_tables" => Some("orders,invoices,documents,support_tickets".into()),
            "tenant_column" => Some("tenant_id".into()),
            _ => None,
        })
        .unwrap();
        let (mut blocked, mut differ) = (0, Vec::new());
        for mut c in corpus() {
            let guest = decide(&cfg, &c);
            c.facts = Some(helios_plugin_facts::pg::extract(&c.query));
            let host = decide(&cfg, &c);
            if is_block(&host) != is_block(&guest) {
                differ.push(format!("{:?}: host {host:?}, guest {guest:?}", c.query));
            }
            blocked += usize::from(is_block(&host));
        }
        assert!(differ.is_empty(), "{}", differ.join("\n"));
        assert!(blocked >= 40, "only {blocked} blocked");
    }

    #[test]
    fn ai_traffic_is_judged_and_human_traffic_passes_by_default() {
        testing::reset();
        let ai = guard(&ctx("DROP TABLE users", &[("application_name", "langchain-agent")]));
        assert_eq!(
            ai,
            PreQueryResult::Block {
                reason: "llm-guardrail: DROP TABLE users is not allowed (AI traffic: application_name:langchain)"
                    .into()
            }
        );
        assert!(testing::logs().iter().any(|(l, m)| *l == Level::Warn && m.contains("DROP TABLE users")));
        assert_eq!(guard(&ctx("DROP TABLE users", &[("application_name", "psql")])), PreQueryResult::Continue);
        assert!(is_block(&guard(&ctx("DROP TABLE users", &[("helios.ai_traffic", "true")]))));
        assert!(is_block(&guard(&ctx("/* ai: cleanup */ TRUNCATE sessions", &[]))));
        assert!(is_block(&guard(&ctx("-- generated by autogen\nDELETE FROM customers", &[]))));
    }

    #[test]
    fn apply_to_all_judges_every_statement() {
        testing::reset();
        testing::set_config("apply_to_all", "true");
        let r = guard(&ctx("DELETE FROM t", &[("application_name", "psql")]));
        assert!(
            matches!(&r, PreQueryResult::Block { reason } if reason.ends_with("(AI traffic: apply_to_all)")),
            "{r:?}"
        );
        assert_eq!(guard(&ctx("DELETE FROM t WHERE id = 1", &[])), PreQueryResult::Continue);
    }

    #[test]
    fn unparseable_ai_sql_is_blocked_but_unparseable_human_sql_is_left_to_the_server() {
        testing::reset();
        assert!(is_block(&guard(&ctx("DR/**/OP TABLE t", &[("helios.ai_traffic", "1")]))));
        assert_eq!(guard(&ctx("DR/**/OP TABLE t", &[])), PreQueryResult::Continue);
    }

    #[test]
    fn configured_tables_come_from_the_host_config() {
        testing::reset();
        testing::set_config("large_tables", "events");
        testing::set_config("tenant_tables", "orders");
        testing::set_config("tenant_column", "org_id");
        let ai = [("application_name", "vanna")];
        assert!(is_block(&guard(&ctx("SELECT * FROM events", &ai))));
        assert!(is_block(&guard(&ctx("SELECT * FROM orders WHERE tenant_id = 1", &ai))));
        assert_eq!(guard(&ctx("SELECT * FROM orders WHERE org_id = 1", &ai)), PreQueryResult::Continue);
    }

    #[test]
    fn a_bad_flag_blocks_and_names_the_key() {
        testing::reset();
        testing::set_config("apply_to_all", "yes");
        let r = guard(&ctx("SELECT 1", &[]));
        assert!(
            matches!(&r, PreQueryResult::Block { reason } if reason.contains("apply_to_all") && reason.contains("\"yes\"")),
            "{r:?}"
        );
    }
}
