//! The cost-governor's decisions as plain functions over the wire types, a config and a [`Store`].

use std::collections::BTreeMap;

use helios_plugin_abi::{HookContext, PostQueryEnvelope, PreQueryResult, QueryOutcome};

use crate::ledger::{DAY, HOUR, Ledger, LedgerError, MINUTE, Reservation, Store, Window};

/// Windows in the order a block checks them: the longest first, so the reason names the wait that
/// actually matters.
pub const WINDOWS: [Window; 3] = [DAY, HOUR, MINUTE];

/// KV prefix of this plugin's keys (`tenant:<id>:<window>:<start>` counters, `tenant:index`).
pub const KV_PREFIX: &str = "tenant";

/// Tenant ids longer than this are refused: they would bloat the index past a KV value.
pub const MAX_TENANT_BYTES: usize = 128;

/// Default attribute naming the tenant.
pub const DEFAULT_TENANT_ATTRIBUTE: &str = "helios.tenant";

/// Usage is kept in thousandths of a cost unit, so every weight is an exact integer.
pub const MILLI: u64 = 1_000;

/// Budgets of one tenant, in cost units; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub minute: Option<u64>,
    pub hour: Option<u64>,
    pub day: Option<u64>,
}

impl Budget {
    pub fn get(&self, w: Window) -> Option<u64> {
        match w.name {
            "minute" => self.minute,
            "hour" => self.hour,
            _ => self.day,
        }
    }
}

/// The plugin's configuration, read from `get_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub tenant_attribute: String,
    pub default_budget: Budget,
    /// Per-tenant overrides; a window missing in an override falls back to the default.
    pub tenant_budgets: BTreeMap<String, PartialBudget>,
    /// Cost units per millisecond of elapsed time.
    pub cost_per_ms: u64,
    /// Cost units per kilobyte (1000 bytes) of response.
    pub cost_per_kb: u64,
    /// Cost units per statement.
    pub cost_per_query: u64,
    pub max_tenants: usize,
}

/// A per-tenant override: `Some(None)` = explicitly unlimited (`null`), `None` = use the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartialBudget {
    pub minute: Option<Option<u64>>,
    pub hour: Option<Option<u64>>,
    pub day: Option<Option<u64>>,
}

/// A configuration error, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cost-governor: config key {}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn parse_u64(key: &str, v: &str) -> Result<u64, ConfigError> {
    helios_plugin_abi::config::non_negative(v).map_err(|message| ConfigError { key: key.to_owned(), message })
}

impl Config {
    /// Reads the configuration through `get` (the host's `get_config` in the plugin).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let num = |key: &str, default: Option<u64>| -> Result<Option<u64>, ConfigError> {
            match get(key) {
                Some(v) if !v.trim().is_empty() => parse_u64(key, &v).map(Some),
                _ => Ok(default),
            }
        };
        let default_budget = Budget {
            minute: num("budget_minute", None)?,
            hour: num("budget_hour", None)?,
            day: num("budget_day", None)?,
        };
        let mut tenant_budgets = BTreeMap::new();
        if let Some(raw) = get("tenant_budgets").filter(|s| !s.trim().is_empty()) {
            let key = "tenant_budgets";
            let err = |message: String| ConfigError { key: key.to_owned(), message };
            let v: serde_json::Value = serde_json::from_str(&raw)
                .map_err(|e| err(format!("expected a JSON object, found invalid JSON: {e}")))?;
            let obj =
                v.as_object().ok_or_else(|| err(format!("expected a JSON object of tenant → budgets, found {v}")))?;
            for (tenant, b) in obj {
                let b = b.as_object().ok_or_else(|| {
                    err(format!("tenant {tenant:?}: expected an object like {{\"day\": 1000}}, found {b}"))
                })?;
                let mut p = PartialBudget::default();
                for (window, limit) in b {
                    let value = match limit {
                        serde_json::Value::Null => None,
                        serde_json::Value::Number(n) => Some(n.as_u64().ok_or_else(|| {
                            err(format!(
                                "tenant {tenant:?} window {window:?}: expected a non-negative integer, found {n}"
                            ))
                        })?),
                        other => {
                            return Err(err(format!(
                                "tenant {tenant:?} window {window:?}: expected an integer or null, found {other}"
                            )));
                        }
                    };
                    match window.as_str() {
                        "minute" => p.minute = Some(value),
                        "hour" => p.hour = Some(value),
                        "day" => p.day = Some(value),
                        w => {
                            return Err(err(format!(
                                "tenant {tenant:?}: unknown window {w:?} (expected minute, hour or day)"
                            )));
                        }
                    }
                }
                tenant_budgets.insert(tenant.clone(), p);
            }
        }
        let max_tenants = num("max_tenants", Some(256))?.unwrap_or(256);
        // Each tenant keeps one counter per window; the index is one more key.
        let cap = ((helios_plugin_abi::schema::limits::KV_MAX_KEYS - 1) / WINDOWS.len()) as u64;
        if max_tenants == 0 || max_tenants > cap {
            return Err(ConfigError {
                key: "max_tenants".into(),
                message: format!("expected 1..={cap}, found {max_tenants}"),
            });
        }
        Ok(Config {
            tenant_attribute: get("tenant_attribute")
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_TENANT_ATTRIBUTE.to_owned()),
            default_budget,
            tenant_budgets,
            cost_per_ms: num("cost_per_ms", Some(1))?.unwrap_or(1),
            cost_per_kb: num("cost_per_kb", Some(1))?.unwrap_or(1),
            cost_per_query: num("cost_per_query", Some(0))?.unwrap_or(0),
            max_tenants: max_tenants as usize,
        })
    }

    /// The budget that applies to `tenant`.
    pub fn budget_for(&self, tenant: &str) -> Budget {
        let d = self.default_budget;
        match self.tenant_budgets.get(tenant) {
            None => d,
            Some(p) => Budget {
                minute: p.minute.unwrap_or(d.minute),
                hour: p.hour.unwrap_or(d.hour),
                day: p.day.unwrap_or(d.day),
            },
        }
    }

    /// Cost of one statement in thousandths of a unit: exact, no rounding.
    pub fn cost_milli(&self, outcome: &QueryOutcome) -> u64 {
        // elapsed_us µs × cost_per_ms units/ms = elapsed_us × cost_per_ms milli-units (1 ms = 1000 µs).
        let time = outcome.elapsed_us.saturating_mul(self.cost_per_ms);
        // response_bytes B × cost_per_kb units/1000 B = response_bytes × cost_per_kb milli-units.
        let size = outcome.response_bytes.saturating_mul(self.cost_per_kb);
        time.saturating_add(size).saturating_add(self.cost_per_query.saturating_mul(MILLI))
    }
}

/// The tenant a statement is charged to: the configured attribute, else the identity, else
/// `"anonymous"`.
pub fn tenant_of<'a>(cfg: &Config, ctx: &'a HookContext) -> &'a str {
    ctx.attr(&cfg.tenant_attribute)
        .filter(|t| !t.is_empty())
        .or(ctx.identity.as_deref().filter(|t| !t.is_empty()))
        .unwrap_or("anonymous")
}

/// Formats thousandths of a unit as a decimal (`1234` → `1.234`).
pub fn units(milli: u64) -> String {
    format!("{}.{:03}", milli / MILLI, milli % MILLI)
}

/// `pre_query`: blocks when any window of the tenant's budget is used up (the day is checked
/// first), and charges the statement's fixed cost (`cost_per_query`) when it admits it. That charge
/// is atomic (the host's `kv_add`, added then taken back on a refusal), so with a per-statement cost
/// concurrent statements from every instance and replica never admit more than the budget. A store
/// that cannot be reached blocks (fail closed).
pub fn check<S: Store>(cfg: &Config, store: &mut S, ctx: &HookContext, now: i64) -> PreQueryResult {
    let tenant = tenant_of(cfg, ctx);
    if tenant.len() > MAX_TENANT_BYTES {
        return PreQueryResult::Block {
            reason: format!("cost-governor: tenant id of {} bytes is longer than {MAX_TENANT_BYTES}", tenant.len()),
        };
    }
    let budget = cfg.budget_for(tenant);
    let limits: Vec<(Window, Option<u64>)> =
        WINDOWS.iter().map(|&w| (w, budget.get(w).map(|l| l.saturating_mul(MILLI)))).collect();
    let fixed = cfg.cost_per_query.saturating_mul(MILLI);
    let reserved = Ledger::new(store, KV_PREFIX, cfg.max_tenants).reserve(tenant, &limits, now, fixed);
    // Without a fixed cost nothing is reserved: a window is closed once its budget is used up.
    let reserved = match reserved {
        Ok(Reservation::Admitted(usage)) if fixed == 0 => {
            Ok(limits.iter().find(|(w, l)| l.is_some_and(|l| usage.used(*w, now) >= l)).map_or(
                Reservation::Admitted(usage.clone()),
                |&(w, _)| Reservation::Over { window: w, used: usage.used(w, now) },
            ))
        }
        other => other,
    };
    match reserved {
        Ok(Reservation::Admitted(_)) => PreQueryResult::Continue,
        Ok(Reservation::Over { window: w, used }) => {
            let limit = budget.get(w).unwrap_or(0);
            let at = w.resets_at(now);
            let statement = if fixed > 0 { format!(", a statement costs {}", units(fixed)) } else { String::new() };
            PreQueryResult::Block {
                reason: format!(
                    "cost-governor: tenant {tenant:?} has used its {} budget ({} of {limit} units{statement}); it resets at {at} (unix time, in {} s)",
                    w.name,
                    units(used),
                    at - now
                ),
            }
        }
        Err(e @ LedgerError::Full { .. }) => PreQueryResult::Block {
            reason: format!("cost-governor: cannot track tenant {tenant:?}: {e} (raise config key max_tenants)"),
        },
        Err(e) => PreQueryResult::Block {
            reason: format!("cost-governor: cannot charge tenant {tenant:?} (failing closed): {e}"),
        },
    }
}

/// `post_query`: charges the statement's measured cost (elapsed time and response size; the fixed
/// `cost_per_query` was charged when `pre_query` admitted it) to every window, atomically. Returns
/// (tenant, milli-units charged here).
pub fn charge<S: Store>(
    cfg: &Config,
    store: &mut S,
    env: &PostQueryEnvelope,
    now: i64,
) -> Result<(String, u64), String> {
    let tenant = tenant_of(cfg, &env.query_context.hook_context);
    if tenant.len() > MAX_TENANT_BYTES {
        return Err(format!("tenant id of {} bytes is longer than {MAX_TENANT_BYTES}, not charged", tenant.len()));
    }
    let cost = cfg.cost_milli(&env.outcome).saturating_sub(cfg.cost_per_query.saturating_mul(MILLI));
    if cost > 0 {
        Ledger::new(store, KV_PREFIX, cfg.max_tenants)
            .charge(tenant, &WINDOWS, now, cost)
            .map_err(|e| format!("tenant {tenant:?} not charged {} units: {e}", units(cost)))?;
    }
    Ok((tenant.to_owned(), cost))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::MemStore;
    use helios_plugin_abi::QueryContext;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    fn ctx(tenant: Option<&str>, identity: Option<&str>) -> HookContext {
        let mut c = HookContext { request_id: "r".into(), identity: identity.map(Into::into), ..Default::default() };
        if let Some(t) = tenant {
            c.attributes.insert("helios.tenant".into(), t.into());
        }
        c
    }

    fn env(hc: HookContext, elapsed_us: u64, response_bytes: u64) -> PostQueryEnvelope {
        PostQueryEnvelope {
            query_context: QueryContext { query: "select 1".into(), hook_context: hc, ..Default::default() },
            outcome: QueryOutcome { success: true, elapsed_us, response_bytes, ..Default::default() },
        }
    }

    fn reason(r: PreQueryResult) -> String {
        match r {
            PreQueryResult::Block { reason } => reason,
            other => panic!("expected a block, got {other:?}"),
        }
    }

    #[test]
    fn cost_is_exact_in_thousandths() {
        let cfg = config(&[("cost_per_ms", "2"), ("cost_per_kb", "3"), ("cost_per_query", "1")]);
        // 1.5 ms × 2 = 3 units, 2500 B × 3/1000 = 7.5 units, + 1 = 11.5 units.
        let o = QueryOutcome { elapsed_us: 1_500, response_bytes: 2_500, ..Default::default() };
        assert_eq!(cfg.cost_milli(&o), 11_500);
        assert_eq!(units(11_500), "11.500");
    }

    #[test]
    fn many_charges_add_up_exactly() {
        let cfg = config(&[("budget_day", "1000000")]);
        let mut store = MemStore::with_max_keys(1024);
        let now = 1_700_000_000;
        let mut expected = 0u64;
        for i in 0..500u64 {
            let (elapsed, bytes) = (37 * i + 1, 1_001 * (i % 7));
            charge(&cfg, &mut store, &env(ctx(Some("acme"), None), elapsed, bytes), now).unwrap();
            expected += elapsed + bytes;
        }
        let usage = Ledger::new(&mut store, KV_PREFIX, 256).usage("acme", &WINDOWS, now).unwrap();
        assert_eq!(usage.used(DAY, now), expected);
        assert_eq!(usage.used(HOUR, now), expected);
        assert_eq!(usage.used(MINUTE, now), expected);
    }

    #[test]
    fn the_minute_budget_blocks_then_reopens_at_rollover() {
        let cfg = config(&[("budget_minute", "10"), ("cost_per_ms", "1"), ("cost_per_kb", "0")]);
        let mut store = MemStore::with_max_keys(1024);
        let t0 = 1_700_000_100; // the start of a minute
        let c = ctx(Some("acme"), Some("alice"));
        // 9.999 units: still under budget.
        charge(&cfg, &mut store, &env(c.clone(), 9_999, 0), t0).unwrap();
        assert_eq!(check(&cfg, &mut store, &c, t0 + 1), PreQueryResult::Continue);
        charge(&cfg, &mut store, &env(c.clone(), 1, 0), t0 + 1).unwrap();
        let r = reason(check(&cfg, &mut store, &c, t0 + 15));
        assert!(r.contains("\"acme\"") && r.contains("minute budget") && r.contains("10.000 of 10 units"), "{r}");
        assert!(r.contains(&format!("resets at {}", t0 + 60)) && r.contains("in 45 s"), "{r}");
        assert_eq!(check(&cfg, &mut store, &c, t0 + 59), reason_block(&cfg, &mut store, &c, t0 + 59));
        assert_eq!(check(&cfg, &mut store, &c, t0 + 60), PreQueryResult::Continue, "a new minute starts empty");
    }

    fn reason_block(cfg: &Config, store: &mut MemStore, c: &HookContext, now: i64) -> PreQueryResult {
        let r = check(cfg, store, c, now);
        assert!(matches!(r, PreQueryResult::Block { .. }), "expected a block at {now}, got {r:?}");
        r
    }

    #[test]
    fn the_day_window_is_reported_first_when_several_are_exhausted() {
        let cfg = config(&[("budget_minute", "1"), ("budget_hour", "1"), ("budget_day", "1")]);
        let mut store = MemStore::with_max_keys(1024);
        let now = 1_700_000_000;
        let c = ctx(Some("acme"), None);
        charge(&cfg, &mut store, &env(c.clone(), 5_000, 0), now).unwrap();
        let r = reason(check(&cfg, &mut store, &c, now));
        assert!(r.contains("day budget") && r.contains(&format!("resets at {}", DAY.resets_at(now))), "{r}");
        // After the minute and hour roll over the day still blocks.
        let r = reason(check(&cfg, &mut store, &c, now + 3_600));
        assert!(r.contains("day budget"), "{r}");
        assert_eq!(check(&cfg, &mut store, &c, DAY.resets_at(now)), PreQueryResult::Continue);
    }

    #[test]
    fn hour_blocks_across_minutes_until_the_hour_rolls_over() {
        let cfg = config(&[("budget_minute", "100"), ("budget_hour", "30"), ("cost_per_kb", "0")]);
        let mut store = MemStore::with_max_keys(1024);
        let h = 1_699_999_200; // start of an hour
        let c = ctx(Some("acme"), None);
        for m in 0..3 {
            assert_eq!(check(&cfg, &mut store, &c, h + 60 * m), PreQueryResult::Continue);
            charge(&cfg, &mut store, &env(c.clone(), 10_000, 0), h + 60 * m).unwrap();
        }
        let r = reason(check(&cfg, &mut store, &c, h + 200));
        assert!(r.contains("hour budget") && r.contains("30.000 of 30") && r.contains("in 3400 s"), "{r}");
        assert_eq!(check(&cfg, &mut store, &c, h + 3_600), PreQueryResult::Continue);
    }

    #[test]
    fn tenants_are_charged_separately_and_fall_back_to_identity() {
        let cfg = config(&[("budget_day", "5"), ("cost_per_kb", "0")]);
        let mut store = MemStore::with_max_keys(1024);
        let now = 1_700_000_000;
        charge(&cfg, &mut store, &env(ctx(None, Some("bob")), 6_000, 0), now).unwrap();
        assert!(matches!(check(&cfg, &mut store, &ctx(None, Some("bob")), now), PreQueryResult::Block { .. }));
        assert_eq!(check(&cfg, &mut store, &ctx(Some("acme"), Some("bob")), now), PreQueryResult::Continue);
        assert!(store.map.keys().any(|k| k.starts_with("tenant:bob:day:")), "{:?}", store.map.keys());
        assert_eq!(tenant_of(&cfg, &HookContext::default()), "anonymous");
    }

    #[test]
    fn per_tenant_overrides_fall_back_per_window() {
        let cfg = config(&[
            ("budget_minute", "10"),
            ("budget_day", "100"),
            ("tenant_budgets", r#"{"big": {"day": 1000}, "free": {"minute": null, "day": 1}}"#),
        ]);
        assert_eq!(cfg.budget_for("big"), Budget { minute: Some(10), hour: None, day: Some(1000) });
        assert_eq!(cfg.budget_for("free"), Budget { minute: None, hour: None, day: Some(1) });
        assert_eq!(cfg.budget_for("other"), Budget { minute: Some(10), hour: None, day: Some(100) });
    }

    #[test]
    fn bad_config_names_the_key_and_what_was_found() {
        let e = Config::from_lookup(|k| (k == "budget_day").then(|| "lots".to_string())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cost-governor: config key budget_day: expected a non-negative integer, found \"lots\""
        );
        let e =
            Config::from_lookup(|k| (k == "tenant_budgets").then(|| r#"{"a": {"week": 1}}"#.to_string())).unwrap_err();
        assert!(e.to_string().contains("unknown window \"week\""), "{e}");
        let e = Config::from_lookup(|k| (k == "max_tenants").then(|| "5000".to_string())).unwrap_err();
        assert!(e.to_string().contains("max_tenants") && e.to_string().contains("5000"), "{e}");
    }

    #[test]
    fn a_full_tenant_table_blocks_new_tenants_but_not_known_ones() {
        let cfg = config(&[("max_tenants", "2"), ("budget_day", "1000")]);
        let mut store = MemStore::with_max_keys(1024);
        let now = 1_700_000_000;
        for t in ["a", "b"] {
            charge(&cfg, &mut store, &env(ctx(Some(t), None), 1, 0), now).unwrap();
        }
        let r = reason(check(&cfg, &mut store, &ctx(Some("c"), None), now));
        assert!(r.contains("\"c\"") && r.contains("max_tenants"), "{r}");
        assert_eq!(check(&cfg, &mut store, &ctx(Some("a"), None), now), PreQueryResult::Continue);
        assert_eq!(check(&cfg, &mut store, &ctx(Some("c"), None), now + 86_400), PreQueryResult::Continue);
    }

    #[test]
    fn a_per_statement_cost_is_charged_at_admission_so_exactly_the_budget_is_admitted() {
        let cfg = config(&[("budget_day", "5"), ("cost_per_query", "1"), ("cost_per_ms", "0"), ("cost_per_kb", "0")]);
        let mut store = MemStore::with_max_keys(1024);
        let c = ctx(Some("acme"), None);
        // Admitted statements are charged before they run: no post_query is needed to hold the line.
        let admitted = (0..20).filter(|_| check(&cfg, &mut store, &c, 0) == PreQueryResult::Continue).count();
        assert_eq!(admitted, 5);
        let r = reason(check(&cfg, &mut store, &c, 0));
        assert!(r.contains("5.000 of 5 units, a statement costs 1.000"), "{r}");
        // post_query then charges only what it measured (here nothing).
        assert_eq!(charge(&cfg, &mut store, &env(c.clone(), 9_000, 9_000), 0), Ok(("acme".to_owned(), 0)));
    }

    #[test]
    fn an_oversized_tenant_id_is_blocked_not_stored() {
        let cfg = config(&[]);
        let mut store = MemStore::with_max_keys(1024);
        let long = "x".repeat(MAX_TENANT_BYTES + 1);
        assert!(reason(check(&cfg, &mut store, &ctx(Some(&long), None), 0)).contains("129 bytes"));
        assert!(charge(&cfg, &mut store, &env(ctx(Some(&long), None), 1, 1), 0).is_err());
        assert!(store.map.is_empty());
    }
}
