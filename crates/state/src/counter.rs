//! The counter format every backend shares is the schema's ([`abi::counter_value`]): the canonical
//! decimal text of a signed 64-bit integer, which `kv_get` reads back as text and Redis's `HINCRBY`
//! accepts, so the atomic add of every backend agrees on which values are counters.

use helios_plugin_schema::abi;

use crate::StateError;

/// The value of a counter.
pub(crate) fn parse(value: &[u8]) -> Result<i64, StateError> {
    abi::counter_value(value).ok_or(StateError::NotACounter)
}

/// `old + delta`, where a missing `old` is 0.
pub(crate) fn add(old: Option<&[u8]>, delta: i64) -> Result<i64, StateError> {
    let old = old.map(parse).transpose()?.unwrap_or(0);
    old.checked_add(delta).ok_or(StateError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_counter_is_zero_and_overflow_and_non_counters_are_refused() {
        assert_eq!(add(None, 5), Ok(5));
        assert_eq!(add(Some(b"5"), -7), Ok(-2));
        assert_eq!(add(Some(b"07"), 1), Err(StateError::NotACounter));
        assert_eq!(add(Some(b"9223372036854775807"), 1), Err(StateError::Overflow));
    }
}
