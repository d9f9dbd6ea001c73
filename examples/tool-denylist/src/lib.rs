//! tool-denylist: chio's worked example written with the helios-plugin SDK. A guard that denies tool
//! calls whose `tool_name` is on the `denylist` config key (comma-separated) and allows the rest.

use helios_plugin_abi::*;

/// Config key holding the comma-separated tool names to deny.
pub const DENYLIST_KEY: &str = "denylist";

/// The tool names of a `denylist` value: comma-separated, whitespace trimmed, empty entries ignored.
pub fn parse_denylist(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// The denied tool names, read once per instance (empty when the key is not configured).
static DENYLIST: config::InstanceConfig<Vec<String>, std::convert::Infallible> = config::InstanceConfig::new(|| {
    Ok(get_config(DENYLIST_KEY)
        .map(|v| parse_denylist(&v).into_iter().map(str::to_owned).collect())
        .unwrap_or_default())
});

/// Denies a listed tool with a reason naming it; allows everything else (and everything when the
/// key is not configured).
#[chio_guard]
pub fn evaluate(req: &GuardRequest) -> GuardVerdict {
    let listed = DENYLIST.with(|list| match list {
        Ok(list) => list.contains(&req.tool_name),
        Err(never) => match *never {},
    });
    if listed {
        log(Level::Info, &format!("denied tool {:?}", req.tool_name));
        return GuardVerdict::deny(format!("tool \"{}\" is on the denylist", req.tool_name));
    }
    GuardVerdict::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tool: &str) -> GuardVerdict {
        evaluate(&GuardRequest { tool_name: tool.into(), ..Default::default() })
    }

    #[test]
    fn a_listed_tool_is_denied_with_a_reason_naming_it() {
        testing::reset();
        testing::set_config("denylist", "rm, curl");
        assert_eq!(call("curl"), GuardVerdict::deny("tool \"curl\" is on the denylist"));
        assert_eq!(testing::logs(), vec![(Level::Info, "denied tool \"curl\"".to_owned())]);
    }

    #[test]
    fn an_unlisted_tool_is_allowed() {
        testing::reset();
        testing::set_config("denylist", "rm,curl");
        assert_eq!(call("ls"), GuardVerdict::Allow);
        // Names match whole, not as prefixes or case-insensitively.
        assert_eq!(call("rmdir"), GuardVerdict::Allow);
        assert_eq!(call("RM"), GuardVerdict::Allow);
    }

    #[test]
    fn without_a_denylist_everything_is_allowed() {
        testing::reset();
        assert_eq!(call("rm"), GuardVerdict::Allow);
    }

    #[test]
    fn entries_are_trimmed_and_empty_ones_ignored() {
        assert_eq!(parse_denylist("  rm ,, curl\t,\n wget ,"), vec!["rm", "curl", "wget"]);
        testing::reset();
        testing::set_config("denylist", " , ,");
        // An empty entry never matches a tool with an empty name.
        assert_eq!(call(""), GuardVerdict::Allow);
    }
}
