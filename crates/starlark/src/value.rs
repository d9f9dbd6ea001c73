//! The Starlark value behind `state`, `store`, `ctx.transaction_state` and `ctx.stream_state`:
//! `get(key, default=None)`, `set(key, value)`, `delete(key)`, `keys()`, `clear()`, `incr(key, by=1)`.

use std::fmt;

use allocative::Allocative;
use serde_json::Value as Json;
use starlark::environment::{Methods, MethodsBuilder, MethodsStatic};
use starlark::starlark_module;
use starlark::starlark_simple_value;
use starlark::values::none::NoneType;
use starlark::values::{Heap, NoSerialize, ProvidesStaticType, StarlarkValue, Value, starlark_value};

use crate::state::{PluginStore, Scope};

#[derive(Debug, Clone)]
pub(crate) enum Backing {
    Memory(Scope),
    Store(PluginStore),
}

/// A key/value scope as a Starlark value.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct StateValue {
    #[allocative(skip)]
    backing: Backing,
    label: &'static str,
}

starlark_simple_value!(StateValue);

impl StateValue {
    pub(crate) fn memory(scope: Scope, label: &'static str) -> StateValue {
        StateValue { backing: Backing::Memory(scope), label }
    }
    pub(crate) fn store(store: PluginStore) -> StateValue {
        StateValue { backing: Backing::Store(store), label: "store" }
    }

    fn get(&self, key: &str) -> anyhow::Result<Option<Json>> {
        match &self.backing {
            Backing::Memory(s) => Ok(s.get(key)),
            Backing::Store(s) => Ok(s.get(key)?),
        }
    }

    fn set(&self, key: &str, value: Json) -> anyhow::Result<()> {
        match &self.backing {
            Backing::Memory(s) => Ok(s.set(key, value)?),
            Backing::Store(s) => Ok(s.set(key, &value)?),
        }
    }
}

impl fmt::Display for StateValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.label)
    }
}

static STATE_METHODS: MethodsStatic = MethodsStatic::new("state_methods", state_methods);

#[starlark_value(type = "state")]
impl<'v> StarlarkValue<'v> for StateValue {
    fn get_methods() -> Option<&'static Methods> {
        Some(STATE_METHODS.methods())
    }
}

fn to_json(label: &str, key: &str, v: Value) -> anyhow::Result<Json> {
    v.to_json_value().map_err(|e| anyhow::anyhow!("{label}.set(\"{key}\", ...): value is not JSON-shaped: {e}"))
}

#[starlark_module]
fn state_methods(builder: &mut MethodsBuilder) {
    /// The value under `key`, or `default`.
    fn get<'v>(
        this: &StateValue,
        #[starlark(require = pos)] key: &str,
        #[starlark(require = pos)] default: Option<Value<'v>>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        Ok(match this.get(key)? {
            Some(v) => heap.alloc(v),
            None => default.unwrap_or(Value::new_none()),
        })
    }

    /// Sets `key` to a JSON-shaped value (caps: 10,000 keys, 1 MiB per value).
    fn set<'v>(
        this: &StateValue,
        #[starlark(require = pos)] key: &str,
        #[starlark(require = pos)] value: Value<'v>,
    ) -> anyhow::Result<NoneType> {
        let json = to_json(this.label, key, value)?;
        this.set(key, json)?;
        Ok(NoneType)
    }

    /// Adds `by` to the integer under `key` (missing counts as 0) and returns the new value.
    fn incr(
        this: &StateValue,
        #[starlark(require = pos)] key: &str,
        #[starlark(require = pos, default = 1)] by: i64,
    ) -> anyhow::Result<i64> {
        let current = match this.get(key)? {
            None => 0,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("{}.incr(\"{key}\"): the value is not an integer", this.label))?,
        };
        let next =
            current.checked_add(by).ok_or_else(|| anyhow::anyhow!("{}.incr(\"{key}\"): overflow", this.label))?;
        this.set(key, Json::from(next))?;
        Ok(next)
    }

    /// Removes `key`; whether it was there.
    fn delete(this: &StateValue, #[starlark(require = pos)] key: &str) -> anyhow::Result<bool> {
        Ok(match &this.backing {
            Backing::Memory(s) => s.delete(key),
            Backing::Store(s) => s.delete(key)?,
        })
    }

    /// The keys, sorted.
    fn keys(this: &StateValue) -> anyhow::Result<Vec<String>> {
        Ok(match &this.backing {
            Backing::Memory(s) => s.keys(),
            Backing::Store(s) => s.keys()?,
        })
    }

    /// Removes every key.
    fn clear(this: &StateValue) -> anyhow::Result<NoneType> {
        match &this.backing {
            Backing::Memory(s) => s.clear(),
            Backing::Store(s) => s.clear()?,
        }
        Ok(NoneType)
    }
}
