//! Typed plugin configuration, parsed once per instance and kept for the instance's life.
//!
//! The host binds a plugin's configuration when it creates an instance and never changes it under a
//! live instance (a reload makes new instances), so parsing it on every call is wasted work: each
//! [`get_config`](crate::get_config) is a host call, and JSON values are parsed again each time. An
//! [`InstanceConfig`] parses on first use and hands out the same result afterwards:
//!
//! ```
//! use helios_plugin_abi::config::InstanceConfig;
//! use helios_plugin_abi::{get_config, testing};
//!
//! struct Config {
//!     limit: u64,
//! }
//!
//! fn parse() -> Result<Config, String> {
//!     let raw = get_config("limit").unwrap_or_else(|| "10".to_owned());
//!     let limit = helios_plugin_abi::config::non_negative(&raw).map_err(|e| format!("config key limit: {e}"))?;
//!     Ok(Config { limit })
//! }
//!
//! static CONFIG: InstanceConfig<Config, String> = InstanceConfig::new(parse);
//!
//! testing::reset();
//! testing::set_config("limit", "3");
//! assert_eq!(CONFIG.with(|c| c.map(|c| c.limit).map_err(Clone::clone)), Ok(3));
//! ```
//!
//! An error is kept too: a plugin with a bad configuration fails the same way on every call, without
//! re-reading it. Natively (unit tests) the cache is per thread and is dropped whenever
//! [`testing::set_config`](crate::testing::set_config) or [`testing::reset`](crate::testing::reset)
//! changes the configuration, so tests can change it between calls.
//!
//! The small parsers below ([`list`], [`non_negative`], [`flag`]) give every first-party plugin the
//! same syntax and the same error wording for the same kind of value; their errors say what was
//! expected and found, and the caller names itself and the key (`llm-guardrail: config key
//! apply_to_all: expected "true" or "false", found "yes"`).

/// A configuration parsed on first use by `parse`, then kept (see the module doc).
#[derive(Debug)]
pub struct InstanceConfig<T: 'static, E: 'static> {
    parse: fn() -> Result<T, E>,
    #[cfg(target_arch = "wasm32")]
    cell: std::sync::OnceLock<Result<T, E>>,
}

impl<T: 'static, E: 'static> InstanceConfig<T, E> {
    /// A configuration that `parse` builds (typically from [`get_config`](crate::get_config)).
    pub const fn new(parse: fn() -> Result<T, E>) -> Self {
        InstanceConfig {
            parse,
            #[cfg(target_arch = "wasm32")]
            cell: std::sync::OnceLock::new(),
        }
    }

    /// Runs `f` on the parsed configuration (or the parse error), parsing it first if this is the
    /// first use in this instance.
    #[cfg(target_arch = "wasm32")]
    pub fn with<R>(&'static self, f: impl FnOnce(Result<&T, &E>) -> R) -> R {
        f(self.cell.get_or_init(self.parse).as_ref())
    }

    /// Runs `f` on the parsed configuration (or the parse error), parsing it first if this is the
    /// first use on this thread since the test host's configuration last changed.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with<R>(&'static self, f: impl FnOnce(Result<&T, &E>) -> R) -> R {
        let parsed = native::cached(self as *const Self as usize, self.parse);
        f(parsed.as_ref().as_ref())
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::any::Any;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// (address of the `InstanceConfig`, test-host config generation, the parse result).
    type Entry = (usize, u64, Rc<dyn Any>);

    thread_local! {
        static CACHE: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn cached<T: 'static, E: 'static>(id: usize, parse: fn() -> Result<T, E>) -> Rc<Result<T, E>> {
        let generation = crate::testing::config_generation();
        let hit = CACHE
            .with(|c| c.borrow().iter().find(|(i, g, _)| *i == id && *g == generation).map(|(_, _, v)| Rc::clone(v)));
        if let Some(any) = hit
            && let Ok(v) = any.downcast::<Result<T, E>>()
        {
            return v;
        }
        // Parse outside the borrow: `parse` calls into the test host, which is another thread-local.
        let value = Rc::new(parse());
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|(i, _, _)| *i != id);
            c.push((id, generation, Rc::clone(&value) as Rc<dyn Any>));
        });
        value
    }
}

/// A comma-separated list: items trimmed, empty items dropped.
pub fn list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A non-negative integer (surrounding blanks ignored).
pub fn non_negative(value: &str) -> Result<u64, String> {
    value.trim().parse().map_err(|_| format!("expected a non-negative integer, found {value:?}"))
}

/// `"true"` or `"false"` (surrounding blanks ignored; empty is `false`).
pub fn flag(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        other => Err(format!("expected \"true\" or \"false\", found {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{get_config, testing};

    static PARSES: AtomicUsize = AtomicUsize::new(0);

    fn parse() -> Result<String, String> {
        PARSES.fetch_add(1, Ordering::SeqCst);
        get_config("k").ok_or_else(|| "config key k: missing".to_owned())
    }

    static CONFIG: InstanceConfig<String, String> = InstanceConfig::new(parse);

    #[test]
    fn the_configuration_is_parsed_once_and_again_only_after_it_changed() {
        testing::reset();
        testing::set_config("k", "one");
        let before = PARSES.load(Ordering::SeqCst);
        for _ in 0..5 {
            assert_eq!(CONFIG.with(|c| c.cloned().map_err(Clone::clone)), Ok("one".to_owned()));
        }
        assert_eq!(PARSES.load(Ordering::SeqCst) - before, 1, "parsed once for five calls");
        testing::set_config("k", "two");
        assert_eq!(CONFIG.with(|c| c.cloned().map_err(Clone::clone)), Ok("two".to_owned()));
        testing::reset();
        assert_eq!(
            CONFIG.with(|c| c.cloned().map_err(Clone::clone)),
            Err("config key k: missing".to_owned()),
            "an error is kept too"
        );
        assert_eq!(PARSES.load(Ordering::SeqCst) - before, 3);
    }

    #[test]
    fn value_parsers_say_what_was_expected_and_found() {
        assert_eq!(list(" a, ,b ,"), vec!["a", "b"]);
        assert_eq!(non_negative(" 7 "), Ok(7));
        assert_eq!(non_negative("-5"), Err("expected a non-negative integer, found \"-5\"".to_owned()));
        assert_eq!((flag(" true"), flag(""), flag("false")), (Ok(true), Ok(false), Ok(false)));
        assert_eq!(flag("yes"), Err("expected \"true\" or \"false\", found \"yes\"".to_owned()));
    }
}
