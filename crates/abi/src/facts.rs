//! The statement facts a plugin decides on: the host's when it sends them, the guest's own otherwise.
//!
//! helios-proxy analyses every statement once with PostgreSQL's parser and sends the result in
//! [`QueryContext::facts`]. A host that sends none (a HeliosProxy build) leaves the field empty; with
//! the SDK's `guest-facts` feature the plugin then extracts the same facts itself with sqlparser
//! (`helios-plugin-facts`'s `guest` feature), so one plugin build works in both hosts:
//!
//! ```
//! use helios_plugin_abi::{QueryContext, facts};
//!
//! let ctx = QueryContext { query: "DELETE FROM orders WHERE id = 5".into(), ..Default::default() };
//! let f = facts::of(&ctx);
//! # #[cfg(feature = "guest-facts")]
//! assert_eq!(f.statements[0].kind, "DELETE");
//! ```
//!
//! Host facts of another [`FACTS_VERSION`] (their fields mean something else) are not used: the
//! guest extracts its own. Without `guest-facts` and without host facts, the facts say why in
//! `parse_error` (source [`NO_FACTS`]), so a plugin that refuses what it cannot read stays
//! fail-closed.

use std::borrow::Cow;

/// Declares that this plugin never reads the host's statement facts (neither [`of`] nor
/// `ctx.facts`), so a host leaves them out of its input: the facts are most of a statement's
/// context, and the guest decodes every byte it is given. Write it once per plugin crate, at the top
/// level:
///
/// ```
/// helios_plugin_abi::without_statement_facts!();
/// ```
///
/// It adds the line `facts=none` to the module's `helios.plugin` section (signed with the module,
/// like the hooks it declares). A plugin that declares it and still calls [`of`] gets the guest's own
/// extraction (or, without `guest-facts`, facts that say none were sent): slower, never wrong.
#[macro_export]
macro_rules! without_statement_facts {
    () => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(link_section = "helios.plugin")]
            #[used]
            static __HELIOS_PLUGIN_WITHOUT_FACTS: [u8; $crate::__private::FACTS_NONE_LINE.len()] =
                *$crate::__private::FACTS_NONE_LINE;
        };
    };
}

pub use helios_plugin_schema::facts::*;

use crate::QueryContext;

/// The `source` of the facts [`of`] returns when the host sent none and this build extracts none.
pub const NO_FACTS: &str = "none";

/// The facts of `ctx`'s statement: the host's (borrowed) when present and of this
/// [`FACTS_VERSION`], else extracted in the guest.
pub fn of(ctx: &QueryContext) -> Cow<'_, StatementFacts> {
    match &ctx.facts {
        Some(f) if f.version == FACTS_VERSION => Cow::Borrowed(f),
        _ => Cow::Owned(extract(&ctx.query)),
    }
}

/// Whether `ctx` carries facts the host extracted (and [`of`] will use them).
pub fn from_host(ctx: &QueryContext) -> bool {
    ctx.facts.as_ref().is_some_and(|f| f.version == FACTS_VERSION)
}

/// The guest's own extraction (sqlparser, PostgreSQL dialect).
#[cfg(feature = "guest-facts")]
pub fn extract(sql: &str) -> StatementFacts {
    guest::extract(sql)
}

/// Without the `guest-facts` feature: facts that say no extraction happened.
#[cfg(not(feature = "guest-facts"))]
pub fn extract(_sql: &str) -> StatementFacts {
    StatementFacts::unparsed(
        NO_FACTS,
        "the host sent no statement facts and this plugin was built without the SDK's guest-facts feature".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_are_used_when_their_version_matches() {
        let mut ctx = QueryContext { query: "SELECT 1".into(), ..Default::default() };
        ctx.facts = Some(StatementFacts { version: FACTS_VERSION, source: "pg_query".into(), ..Default::default() });
        assert!(from_host(&ctx));
        assert!(matches!(of(&ctx), Cow::Borrowed(f) if f.source == "pg_query"));
        ctx.facts.as_mut().unwrap().version = FACTS_VERSION + 1;
        assert!(!from_host(&ctx));
        assert!(matches!(of(&ctx), Cow::Owned(f) if f.source != "pg_query"));
    }
}
