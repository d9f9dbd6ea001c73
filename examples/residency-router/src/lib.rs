//! residency-router: per-user data-residency routing for HeliosProxy.
//!
//! The user's region comes from config `user_regions` (JSON `{identity: region}`, set by the operator
//! and therefore authoritative) or, for users not listed there, from the attribute `helios.region`
//! (set by the client). The statement goes to that region's node from `region_map` (JSON
//! `{region: node}`). Region names match case-insensitively.
//!
//! With `enforce = "true"` the router refuses (`RouteResult::Block`) whatever it cannot place in
//! region: no known region, a region without a node, or a client claiming a region other than its
//! registered one. Without `enforce` those cases keep the default route and are logged. See README.md.

use std::collections::BTreeMap;

use helios_plugin_abi::*;

// It decides from the identity, attributes and outcome, never from the statement facts: the host
// leaves them out of its input.
helios_plugin_abi::without_statement_facts!();

/// The attribute a client sets to name its region.
pub const REGION_ATTRIBUTE: &str = "helios.region";

/// The router's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Lower-cased region → node.
    pub region_map: BTreeMap<String, String>,
    /// Identity → lower-cased region.
    pub user_regions: BTreeMap<String, String>,
    pub enforce: bool,
}

fn json_map(get: &impl Fn(&str) -> Option<String>, key: &str) -> Result<BTreeMap<String, String>, String> {
    let Some(raw) = get(key).filter(|s| !s.trim().is_empty()) else { return Ok(BTreeMap::new()) };
    serde_json::from_str::<BTreeMap<String, String>>(&raw).map_err(|e| {
        format!("residency-router: config key {key}: expected a JSON object of strings, found {raw:?} ({e})")
    })
}

impl Config {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let lower =
            |m: BTreeMap<String, String>, keys: bool| -> BTreeMap<String, String> {
                m.into_iter()
                    .map(|(k, v)| {
                        if keys { (k.trim().to_lowercase(), v.trim().to_owned()) } else { (k, v.trim().to_lowercase()) }
                    })
                    .collect()
            };
        let enforce = match get("enforce") {
            None => false,
            Some(v) => config::flag(&v).map_err(|e| format!("residency-router: config key enforce: {e}"))?,
        };
        Ok(Config {
            region_map: lower(json_map(&get, "region_map")?, true),
            user_regions: lower(json_map(&get, "user_regions")?, false),
            enforce,
        })
    }
}

/// Where the statement goes and, for a non-node answer, why.
pub fn decide(cfg: &Config, hc: &HookContext) -> (RouteResult, Option<String>) {
    let who = hc.identity.as_deref().unwrap_or("");
    let registered = cfg.user_regions.get(who);
    let claimed = hc.attr(REGION_ATTRIBUTE).map(|r| r.trim().to_lowercase()).filter(|r| !r.is_empty());
    let refuse = |why: String| {
        let reason = format!("residency-router: {why}");
        if cfg.enforce {
            (RouteResult::Block { reason: reason.clone() }, Some(reason))
        } else {
            (RouteResult::Default, Some(format!("{reason}; default route (enforce is off)")))
        }
    };
    let region = match (registered, claimed) {
        (Some(r), Some(c)) if *r != c => {
            return refuse(format!("user {who:?} is registered in region {r} but {REGION_ATTRIBUTE} claims {c}"));
        }
        (Some(r), _) => r.clone(),
        (None, Some(c)) => c,
        (None, None) => {
            return refuse(format!(
                "no region known for user {who:?} (not in user_regions and no {REGION_ATTRIBUTE} attribute)"
            ));
        }
    };
    match cfg.region_map.get(&region) {
        Some(node) => (RouteResult::Node { target: node.clone() }, None),
        None => refuse(format!(
            "no node serves region {region} (region_map has {})",
            cfg.region_map.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The configuration, read once per instance.
static CONFIG: config::InstanceConfig<Config, String> = config::InstanceConfig::new(|| Config::from_lookup(get_config));

/// Routes the statement to the user's in-region node.
#[hook(Route)]
pub fn route_in_region(ctx: &QueryContext) -> RouteResult {
    CONFIG.with(|cfg| match cfg {
        Ok(cfg) => route_with(cfg, ctx),
        Err(e) => {
            log(Level::Error, e);
            // A router that cannot read its map cannot keep data in region: refuse.
            RouteResult::Block { reason: e.clone() }
        }
    })
}

fn route_with(cfg: &Config, ctx: &QueryContext) -> RouteResult {
    let id = &ctx.hook_context.request_id;
    let (route, why) = decide(cfg, &ctx.hook_context);
    if let Some(why) = why {
        log(if cfg.enforce { Level::Warn } else { Level::Info }, &format!("request {id:?}: {why}"));
    }
    route
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(enforce: bool) -> Config {
        let get = |k: &str| match k {
            "region_map" => Some(r#"{"EU": "pg-eu-1", "us": "pg-us-1"}"#.to_owned()),
            "user_regions" => Some(r#"{"alice": "eu", "bob": "US", "zed": "sa"}"#.to_owned()),
            "enforce" => Some(enforce.to_string()),
            _ => None,
        };
        Config::from_lookup(get).unwrap()
    }

    fn hc(identity: &str, region: Option<&str>) -> HookContext {
        let mut h = HookContext { request_id: "r".into(), identity: Some(identity.into()), ..Default::default() };
        if let Some(r) = region {
            h.attributes.insert(REGION_ATTRIBUTE.into(), r.into());
        }
        h
    }

    fn node(n: &str) -> RouteResult {
        RouteResult::Node { target: n.into() }
    }

    #[test]
    fn registered_users_go_to_their_region() {
        assert_eq!(decide(&cfg(true), &hc("alice", None)).0, node("pg-eu-1"));
        assert_eq!(decide(&cfg(true), &hc("bob", None)).0, node("pg-us-1"));
        assert_eq!(decide(&cfg(true), &hc("alice", Some("EU"))).0, node("pg-eu-1"), "a matching claim is fine");
    }

    #[test]
    fn unregistered_users_are_placed_by_the_attribute() {
        assert_eq!(decide(&cfg(true), &hc("erin", Some("eu"))).0, node("pg-eu-1"));
        assert_eq!(decide(&cfg(true), &hc("erin", Some(" Us "))).0, node("pg-us-1"));
    }

    #[test]
    fn enforce_blocks_what_cannot_stay_in_region() {
        let blocked = |h: HookContext, needle: &str| match decide(&cfg(true), &h).0 {
            RouteResult::Block { reason } => assert!(reason.contains(needle), "{reason}"),
            other => panic!("expected a block, got {other:?}"),
        };
        blocked(hc("frank", None), "no region known for user \"frank\"");
        blocked(hc("zed", None), "no node serves region sa");
        blocked(hc("gia", Some("ap")), "no node serves region ap");
        blocked(hc("alice", Some("us")), "registered in region eu but helios.region claims us");
    }

    #[test]
    fn without_enforce_the_same_cases_keep_the_default_route() {
        for h in [hc("frank", None), hc("zed", None), hc("alice", Some("us"))] {
            let (route, why) = decide(&cfg(false), &h);
            assert_eq!(route, RouteResult::Default);
            assert!(why.unwrap().ends_with("default route (enforce is off)"));
        }
        assert_eq!(
            decide(&cfg(false), &hc("alice", Some("us"))).0,
            RouteResult::Default,
            "the registered region is not overridden either"
        );
    }

    #[test]
    fn the_hook_reads_the_host_config_and_a_broken_map_blocks() {
        testing::reset();
        testing::set_config("region_map", r#"{"eu": "pg-eu-1"}"#);
        testing::set_config("enforce", "true");
        let ctx = |id: &str, r: Option<&str>| QueryContext {
            query: "SELECT 1".into(),
            hook_context: hc(id, r),
            ..Default::default()
        };
        assert_eq!(route_in_region(&ctx("erin", Some("eu"))), node("pg-eu-1"));
        assert!(matches!(route_in_region(&ctx("erin", None)), RouteResult::Block { .. }));
        assert!(testing::logs().iter().any(|(l, m)| *l == Level::Warn && m.contains("no region known")));
        testing::set_config("region_map", "[\"eu\"]");
        let r = route_in_region(&ctx("erin", Some("eu")));
        assert!(matches!(&r, RouteResult::Block { reason } if reason.contains("config key region_map")), "{r:?}");
    }
}
