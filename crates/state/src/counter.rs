//! The counter format every backend shares: the canonical decimal text of a signed 64-bit integer
//! (what `i64::to_string` writes and Redis's `HINCRBY` accepts), so `kv_get` reads a counter back as
//! text and the atomic add of every backend agrees on which values are counters.

use crate::StateError;

/// The value of a counter, or `None` for a missing key (which counts as 0).
pub(crate) fn parse(value: &[u8]) -> Result<i64, StateError> {
    let text = std::str::from_utf8(value).map_err(|_| StateError::NotACounter)?;
    let n: i64 = text.parse().map_err(|_| StateError::NotACounter)?;
    // Only the canonical form ("7", "-7"; not "+7", "07", "-0"), as Redis insists.
    if n.to_string() != text {
        return Err(StateError::NotACounter);
    }
    Ok(n)
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
    fn only_canonical_decimal_text_is_a_counter() {
        assert_eq!(parse(b"42"), Ok(42));
        assert_eq!(parse(b"-9223372036854775808"), Ok(i64::MIN));
        for bad in [&b""[..], b"+1", b"01", b"-0", b" 1", b"1.0", b"9223372036854775808", b"\xff"] {
            assert_eq!(parse(bad), Err(StateError::NotACounter), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_counter_is_zero_and_overflow_is_refused() {
        assert_eq!(add(None, 5), Ok(5));
        assert_eq!(add(Some(b"5"), -7), Ok(-2));
        assert_eq!(add(Some(b"9223372036854775807"), 1), Err(StateError::Overflow));
    }
}
