//! Human-readable durations: `30s`, `15m`, `24h`, `7d`, `250ms`, or combinations such as `1h30m`.
//!
//! The grammar is one or more `<integer><unit>` pieces with no spaces, where the unit is
//! `ms`, `s`, `m`, `h` or `d` (a day is 86 400 s). Bare numbers are refused so that a
//! duration always states its unit. [`format_duration`] writes the shortest form that
//! [`parse_duration`] reads back to the same value.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration ({reason}; expected e.g. 30s, 15m, 24h, 7d or 1h30m)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses a duration such as `30s`, `15m`, `24h`, `7d`, `250ms` or `1h30m`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let fail = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(fail("empty"));
    }
    let mut total: u64 = 0; // milliseconds
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(fail("each part must start with a number"));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let per_unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(fail("missing unit")),
            _ => return Err(fail("unknown unit (use ms, s, m, h or d)")),
        };
        let value: u64 = number.parse().map_err(|_| fail("number too large"))?;
        total = value
            .checked_mul(per_unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| fail("too large"))?;
        rest = after;
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration in the form [`parse_duration`] reads, e.g. `1h30m`, `7d`, `250ms`.
///
/// Sub-millisecond parts are dropped.
pub fn format_duration(duration: Duration) -> String {
    let total_ms = duration.as_millis();
    if total_ms == 0 {
        return "0s".to_owned();
    }
    if !total_ms.is_multiple_of(1_000) {
        return format!("{total_ms}ms");
    }
    let mut secs = total_ms / 1_000;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400u128), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Serde adapter: a [`Duration`] stored as a duration string (`#[serde(with = "...")]`).
pub mod serde_str {
    use super::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use std::time::Duration;

    /// Writes the duration as a string such as `30s`.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*value))
    }

    /// Reads a duration string such as `30s`; numbers without a unit are refused.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Text(text)) => parse_duration(&text).map_err(D::Error::custom),
            Ok(Raw::Number(n)) => Err(D::Error::custom(format!(
                "{n} has no unit; write a duration string such as \"{n}s\""
            ))),
            Err(_) => Err(D::Error::custom(
                "expected a duration string such as \"30s\", \"15m\", \"24h\" or \"7d\"",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_combinations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "",
            "30",
            "h",
            "1x",
            "-5s",
            "1.5h",
            "1 h",
            "s30",
            "99999999999999999999d",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(
                err.to_string().contains("is not a duration"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn format_round_trips() {
        for secs in [1u64, 59, 60, 61, 3_600, 5_400, 86_400, 90_061, 604_800] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{secs}");
        }
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(604_800)), "7d");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
