//! bundle-denylist: a guard whose denylist is a content bundle instead of a config value. The
//! manifest declares the bundle (`bundles: ["sha256:…"]`) and names it in config key `bundle`; the
//! guard reads it through [`PolicyContext`] on each evaluation and denies a call whose arguments
//! (as JSON text) contain one of its non-empty lines. The bundle's digest is in the verdict trace,
//! so an audit can tell which denylist decided.
//!
//! The same source builds as a core module and, with feature `component`, as a component.

use helios_plugin_abi::*;

/// Config key naming the bundle (`sha256:<64 hex>`).
pub const BUNDLE_KEY: &str = "bundle";

/// The first line of `denylist` (one entry per line, blank lines ignored, whitespace trimmed) that
/// occurs in `arguments`.
pub fn first_match<'a>(denylist: &'a str, arguments: &str) -> Option<&'a str> {
    denylist.lines().map(str::trim).find(|l| !l.is_empty() && arguments.contains(l))
}

#[chio_guard]
pub fn evaluate(req: &GuardRequest) -> GuardVerdict {
    let Some(id) = get_config(BUNDLE_KEY) else {
        return GuardVerdict::deny("bundle-denylist: no bundle configured (config key \"bundle\")");
    };
    let bytes = match PolicyContext.open(&id).read_to_end() {
        Ok(b) => b,
        Err(e) => return GuardVerdict::deny(format!("bundle-denylist: cannot read {id}: {e}")),
    };
    let denylist = String::from_utf8_lossy(&bytes);
    let arguments = req.arguments.to_string();
    match first_match(&denylist, &arguments) {
        Some(line) => GuardVerdict::deny(format!("arguments contain {line:?}, on the denylist bundle")),
        None => GuardVerdict::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_whose_arguments_contain_a_bundle_line_is_denied() {
        testing::reset();
        testing::set_config(BUNDLE_KEY, "sha256:test");
        testing::set_bundle("sha256:test", b"rm -rf\n\n  DROP TABLE \n");
        let call = |args: serde_json::Value| evaluate(&GuardRequest { arguments: args, ..Default::default() });
        assert_eq!(
            call(serde_json::json!({"sql": "DROP TABLE users"})),
            GuardVerdict::deny("arguments contain \"DROP TABLE\", on the denylist bundle")
        );
        assert_eq!(call(serde_json::json!({"sql": "SELECT 1"})), GuardVerdict::Allow);
    }

    #[test]
    fn without_a_configured_bundle_every_call_is_denied() {
        testing::reset();
        assert!(!evaluate(&GuardRequest::default()).is_allow());
    }
}
