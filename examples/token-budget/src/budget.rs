//! token-budget's decisions as plain functions over the wire types, a config and a [`Store`].

use std::collections::BTreeMap;

use helios_plugin_abi::{HookContext, PostQueryEnvelope, PreQueryResult};

use crate::ledger::{DAY, Ledger, LedgerError, MINUTE, Reservation, Store, Window};

/// The attribute naming the agent that sent the statement.
pub const AGENT_ATTRIBUTE: &str = "helios.agent";
/// The attribute naming the model that wrote the statement.
pub const MODEL_ATTRIBUTE: &str = "helios.model";
/// The attribute carrying the tokens the model spent producing the statement.
pub const TOKENS_ATTRIBUTE: &str = "helios.tokens";

/// Windows in the order a block checks them: the day first.
pub const WINDOWS: [Window; 2] = [DAY, MINUTE];

/// KV prefix of this plugin's keys (`spend:<agent>/<model>:<window>:<start>` counters, `spend:index`).
pub const KV_PREFIX: &str = "spend";

/// Agent and model names longer than this are refused (they would bloat the index).
pub const MAX_NAME_BYTES: usize = 64;

/// Model name used when an agent does not say which model it ran.
pub const UNKNOWN_MODEL: &str = "unknown";

/// Token limits of one (agent, model); `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub minute: Option<u64>,
    pub day: Option<u64>,
}

impl Limits {
    pub fn get(&self, w: Window) -> Option<u64> {
        if w == MINUTE { self.minute } else { self.day }
    }
}

/// An override: `Some(None)` = explicitly unlimited (`null`), `None` = fall back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartialLimits {
    pub minute: Option<Option<u64>>,
    pub day: Option<Option<u64>>,
}

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub default_limits: Limits,
    /// Keyed `agent/model`, `agent/*`, `*/model`.
    pub budgets: BTreeMap<String, PartialLimits>,
    /// Statements without `helios.agent` are blocked instead of passing unmetered.
    pub require_agent: bool,
    pub max_pairs: usize,
}

/// A configuration error, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "token-budget: config key {}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration through `get` (the host's `get_config` in the plugin).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError { key: key.to_owned(), message };
        let num = |key: &str| -> Result<Option<u64>, ConfigError> {
            match get(key) {
                Some(v) if !v.trim().is_empty() => {
                    helios_plugin_abi::config::non_negative(&v).map(Some).map_err(|m| err(key, m))
                }
                _ => Ok(None),
            }
        };
        let default_limits = Limits { minute: num("budget_minute")?, day: num("budget_day")? };
        let mut budgets = BTreeMap::new();
        if let Some(raw) = get("budgets").filter(|s| !s.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(&raw)
                .map_err(|e| err("budgets", format!("expected a JSON object, found invalid JSON: {e}")))?;
            let obj = v
                .as_object()
                .ok_or_else(|| err("budgets", format!("expected an object of \"agent/model\" → limits, found {v}")))?;
            for (pair, limits) in obj {
                if !pair.contains('/') {
                    return Err(err(
                        "budgets",
                        format!("entry {pair:?}: expected \"agent/model\", \"agent/*\" or \"*/model\""),
                    ));
                }
                let limits = limits.as_object().ok_or_else(|| {
                    err(
                        "budgets",
                        format!("entry {pair:?}: expected an object like {{\"day\": 100000}}, found {limits}"),
                    )
                })?;
                let mut p = PartialLimits::default();
                for (window, value) in limits {
                    let value = match value {
                        serde_json::Value::Null => None,
                        serde_json::Value::Number(n) => Some(n.as_u64().ok_or_else(|| {
                            err(
                                "budgets",
                                format!("entry {pair:?} window {window:?}: expected a non-negative integer, found {n}"),
                            )
                        })?),
                        other => {
                            return Err(err(
                                "budgets",
                                format!("entry {pair:?} window {window:?}: expected an integer or null, found {other}"),
                            ));
                        }
                    };
                    match window.as_str() {
                        "minute" => p.minute = Some(value),
                        "day" => p.day = Some(value),
                        w => {
                            return Err(err(
                                "budgets",
                                format!("entry {pair:?}: unknown window {w:?} (expected minute or day)"),
                            ));
                        }
                    }
                }
                budgets.insert(pair.clone(), p);
            }
        }
        let require_agent = match get("require_agent").as_deref().map(str::trim) {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(err("require_agent", format!("expected \"true\" or \"false\", found {other:?}")));
            }
        };
        // Each pair keeps one counter per window; the index is one more key.
        let cap = ((helios_plugin_abi::schema::limits::KV_MAX_KEYS - 1) / WINDOWS.len()) as u64;
        let max_pairs = num("max_pairs")?.unwrap_or(256);
        if max_pairs == 0 || max_pairs > cap {
            return Err(err("max_pairs", format!("expected 1..={cap}, found {max_pairs}")));
        }
        Ok(Config { default_limits, budgets, require_agent, max_pairs: max_pairs as usize })
    }

    /// The limits of (agent, model): per window, the most specific entry that names the window
    /// (`agent/model`, then `agent/*`, then `*/model`), else `budget_minute` / `budget_day`.
    pub fn limits_for(&self, agent: &str, model: &str) -> Limits {
        let chain: Vec<&PartialLimits> = [format!("{agent}/{model}"), format!("{agent}/*"), format!("*/{model}")]
            .iter()
            .filter_map(|k| self.budgets.get(k))
            .collect();
        Limits {
            minute: chain.iter().find_map(|p| p.minute).unwrap_or(self.default_limits.minute),
            day: chain.iter().find_map(|p| p.day).unwrap_or(self.default_limits.day),
        }
    }
}

/// Who is spending: (agent, model, tokens of this statement). `Ok(None)` for traffic without an agent.
pub fn spender(ctx: &HookContext) -> Result<Option<(&str, &str, u64)>, String> {
    let Some(agent) = ctx.attr(AGENT_ATTRIBUTE).filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let model = ctx.attr(MODEL_ATTRIBUTE).filter(|m| !m.is_empty()).unwrap_or(UNKNOWN_MODEL);
    for (what, v) in [("agent", agent), ("model", model)] {
        if v.len() > MAX_NAME_BYTES {
            return Err(format!("{what} name of {} bytes is longer than {MAX_NAME_BYTES}", v.len()));
        }
        if v.contains('/') {
            return Err(format!("{what} name {v:?} contains '/'"));
        }
    }
    let tokens = match ctx.attr(TOKENS_ATTRIBUTE) {
        None => 0,
        Some(t) => t
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("attribute {TOKENS_ATTRIBUTE}: expected a non-negative integer, found {t:?}"))?,
    };
    Ok(Some((agent, model, tokens)))
}

fn subject(agent: &str, model: &str) -> String {
    format!("{agent}/{model}")
}

/// `pre_query`: charges this statement's tokens to (agent, model) unless that would take a window
/// past its limit, checking the day first. The charge is atomic (the host's `kv_add`, added then taken
/// back on a refusal), so concurrent statements from every instance and replica never admit more than
/// the limit. A malformed token count blocks (a client must not dodge metering by sending garbage);
/// so does a store that cannot be reached (fail closed).
pub fn check<S: Store>(cfg: &Config, store: &mut S, ctx: &HookContext, now: i64) -> PreQueryResult {
    let block = |reason: String| PreQueryResult::Block { reason: format!("token-budget: {reason}") };
    let (agent, model, tokens) = match spender(ctx) {
        Ok(Some(s)) => s,
        Ok(None) if cfg.require_agent => {
            return block(format!("attribute {AGENT_ATTRIBUTE} is required (require_agent = true)"));
        }
        Ok(None) => return PreQueryResult::Continue,
        Err(e) => return block(e),
    };
    let limits = cfg.limits_for(agent, model);
    let windows: Vec<(Window, Option<u64>)> = WINDOWS.iter().map(|&w| (w, limits.get(w))).collect();
    let reserved = Ledger::new(store, KV_PREFIX, cfg.max_pairs).reserve(&subject(agent, model), &windows, now, tokens);
    match reserved {
        Ok(Reservation::Admitted(_)) => PreQueryResult::Continue,
        Ok(Reservation::Over { window: w, used }) => {
            let at = w.resets_at(now);
            let limit = limits.get(w).unwrap_or(0);
            block(format!(
                "agent {agent:?} on model {model:?} would exceed its {} budget ({used} used + {tokens} requested > {limit} tokens); it resets at {at} (unix time, in {} s)",
                w.name,
                at - now
            ))
        }
        Err(e @ LedgerError::Full { .. }) => {
            block(format!("cannot track {agent}/{model}: {e} (raise config key max_pairs)"))
        }
        Err(e) => block(format!("cannot charge the spend of {agent}/{model}: {e}")),
    }
}

/// What `post_query` charges: nothing, since `pre_query` charged the tokens when it admitted the
/// statement (the model spent them whether or not the statement then ran). Returns what the
/// statement was charged, or `Ok(None)` for traffic without an agent.
pub fn charged(env: &PostQueryEnvelope) -> Result<Option<(String, u64)>, String> {
    Ok(spender(&env.query_context.hook_context)?.map(|(agent, model, tokens)| (subject(agent, model), tokens)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::MemStore;
    use helios_plugin_abi::{QueryContext, QueryOutcome};

    fn config(pairs: &[(&str, &str)]) -> Config {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    fn ctx(agent: Option<&str>, model: Option<&str>, tokens: Option<&str>) -> HookContext {
        let mut c = HookContext { request_id: "r".into(), ..Default::default() };
        for (k, v) in [(AGENT_ATTRIBUTE, agent), (MODEL_ATTRIBUTE, model), (TOKENS_ATTRIBUTE, tokens)] {
            if let Some(v) = v {
                c.attributes.insert(k.into(), v.into());
            }
        }
        c
    }

    fn env(hc: HookContext) -> PostQueryEnvelope {
        PostQueryEnvelope {
            query_context: QueryContext { query: "select 1".into(), hook_context: hc, ..Default::default() },
            outcome: QueryOutcome { success: true, ..Default::default() },
        }
    }

    fn run(cfg: &Config, store: &mut MemStore, c: &HookContext, now: i64) -> PreQueryResult {
        let r = check(cfg, store, c, now);
        if r == PreQueryResult::Continue {
            charged(&env(c.clone())).unwrap();
        }
        r
    }

    #[test]
    fn spend_is_counted_exactly_per_agent_and_model() {
        let cfg = config(&[("budget_day", "10000000")]);
        let mut store = MemStore::with_max_keys(1024);
        let now = 1_700_000_000;
        let mut expected = BTreeMap::new();
        for i in 0..300u64 {
            let (agent, model) = (["a", "b"][(i % 2) as usize], ["m1", "m2", "m3"][(i % 3) as usize]);
            let tokens = 17 * i + 3;
            assert_eq!(
                run(&cfg, &mut store, &ctx(Some(agent), Some(model), Some(&tokens.to_string())), now),
                PreQueryResult::Continue
            );
            *expected.entry(format!("{agent}/{model}")).or_insert(0u64) += tokens;
        }
        assert_eq!(expected.len(), 6);
        for (s, total) in expected {
            let u = Ledger::new(&mut store, KV_PREFIX, 256).usage(&s, &WINDOWS, now).unwrap();
            assert_eq!((u.used(DAY, now), u.used(MINUTE, now)), (total, total), "{s}");
        }
    }

    #[test]
    fn a_statement_that_would_pass_the_minute_limit_is_blocked_until_rollover() {
        let cfg = config(&[("budget_minute", "1000")]);
        let mut store = MemStore::with_max_keys(1024);
        let t0 = 1_700_000_100;
        let c = |n: &str| ctx(Some("bot"), Some("gpt-4o"), Some(n));
        assert_eq!(run(&cfg, &mut store, &c("600"), t0), PreQueryResult::Continue);
        assert_eq!(
            run(&cfg, &mut store, &c("400"), t0 + 1),
            PreQueryResult::Continue,
            "exactly at the limit is allowed"
        );
        let PreQueryResult::Block { reason } = run(&cfg, &mut store, &c("1"), t0 + 20) else {
            panic!("expected a block")
        };
        assert_eq!(
            reason,
            format!(
                "token-budget: agent \"bot\" on model \"gpt-4o\" would exceed its minute budget (1000 used + 1 requested > 1000 tokens); it resets at {} (unix time, in 40 s)",
                t0 + 60
            )
        );
        assert_eq!(run(&cfg, &mut store, &c("0"), t0 + 21), PreQueryResult::Continue, "a zero-token statement fits");
        assert_eq!(
            run(&cfg, &mut store, &c("1000"), t0 + 60),
            PreQueryResult::Continue,
            "the next minute starts empty"
        );
    }

    #[test]
    fn the_day_limit_is_checked_first_and_holds_across_minutes() {
        let cfg = config(&[("budget_minute", "100"), ("budget_day", "250")]);
        let mut store = MemStore::with_max_keys(1024);
        let d = 1_699_920_000; // start of a UTC day
        let c = ctx(Some("bot"), Some("m"), Some("100"));
        for m in 0..2 {
            assert_eq!(run(&cfg, &mut store, &c, d + 60 * m), PreQueryResult::Continue);
        }
        // Both the minute (100 + 100 > 100) and the day (200 + 100 > 250) would be exceeded: day wins.
        let PreQueryResult::Block { reason } = run(&cfg, &mut store, &c, d + 61) else { panic!() };
        assert!(reason.contains("day budget") && reason.contains(&format!("resets at {}", d + 86_400)), "{reason}");
        let PreQueryResult::Block { reason } = run(&cfg, &mut store, &c, d + 3_000) else { panic!() };
        assert!(reason.contains("day budget"), "{reason}");
        assert_eq!(run(&cfg, &mut store, &c, d + 86_400), PreQueryResult::Continue);
    }

    #[test]
    fn limits_resolve_from_most_specific_entry_per_window() {
        let cfg = config(&[
            ("budget_minute", "10"),
            ("budget_day", "100"),
            (
                "budgets",
                r#"{"bot/gpt-4o": {"minute": 50}, "bot/*": {"day": 500}, "*/gpt-4o": {"day": 900, "minute": 20}, "free/*": {"day": null}}"#,
            ),
        ]);
        assert_eq!(cfg.limits_for("bot", "gpt-4o"), Limits { minute: Some(50), day: Some(500) });
        assert_eq!(cfg.limits_for("bot", "llama"), Limits { minute: Some(10), day: Some(500) });
        assert_eq!(cfg.limits_for("other", "gpt-4o"), Limits { minute: Some(20), day: Some(900) });
        assert_eq!(cfg.limits_for("free", "x"), Limits { minute: Some(10), day: None });
    }

    #[test]
    fn traffic_without_an_agent_passes_unless_an_agent_is_required() {
        let mut store = MemStore::with_max_keys(1024);
        let c = ctx(None, None, Some("5"));
        assert_eq!(run(&config(&[("budget_day", "1")]), &mut store, &c, 0), PreQueryResult::Continue);
        assert!(store.map.is_empty(), "nothing is charged without an agent");
        let r = run(&config(&[("require_agent", "true")]), &mut store, &c, 0);
        assert!(matches!(&r, PreQueryResult::Block { reason } if reason.contains("helios.agent is required")), "{r:?}");
    }

    #[test]
    fn a_malformed_token_count_blocks_instead_of_dodging_the_meter() {
        let cfg = config(&[("budget_day", "100")]);
        let mut store = MemStore::with_max_keys(1024);
        for bad in ["-5", "1e9", "lots", ""] {
            let r = run(&cfg, &mut store, &ctx(Some("bot"), Some("m"), Some(bad)), 0);
            assert!(
                matches!(&r, PreQueryResult::Block { reason } if reason.contains("helios.tokens") && reason.contains(&format!("{bad:?}"))),
                "{bad:?}: {r:?}"
            );
        }
        let r = run(&cfg, &mut store, &ctx(Some("a/b"), Some("m"), Some("1")), 0);
        assert!(matches!(&r, PreQueryResult::Block { reason } if reason.contains("contains '/'")), "{r:?}");
    }

    #[test]
    fn missing_model_is_metered_as_unknown() {
        let cfg = config(&[]);
        let mut store = MemStore::with_max_keys(1024);
        run(&cfg, &mut store, &ctx(Some("bot"), None, Some("7")), 0);
        assert!(store.map.contains_key("spend:bot/unknown:day:0"), "{:?}", store.map.keys());
    }

    #[test]
    fn bad_config_names_the_key() {
        let e = Config::from_lookup(|k| (k == "budgets").then(|| r#"{"bot": {"day": 1}}"#.to_string())).unwrap_err();
        assert!(e.to_string().starts_with("token-budget: config key budgets: entry \"bot\""), "{e}");
        let e = Config::from_lookup(|k| (k == "require_agent").then(|| "yes".to_string())).unwrap_err();
        assert!(e.to_string().contains("require_agent") && e.to_string().contains("\"yes\""), "{e}");
    }
}
