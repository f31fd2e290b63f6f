//! Durations as Headscale writes them: Go's `time.ParseDuration` syntax (`30m`, `1h30m`, `1.5h`, `300ms`), the
//! day/week/year units Headscale accepts for `node.expiry` (`180d`, `1w`, `1y`), and `0`.

use std::fmt;
use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("empty duration")]
    Empty,
    /// A leading `-`.
    #[error("must not be negative")]
    Negative,
    /// A number with no unit after it (other than a whole string of digits, which means seconds).
    #[error("missing unit after {number:?} (use ns, us, ms, s, m, h, d, w or y)")]
    MissingUnit {
        /// The number that lacks a unit.
        number: String,
    },
    /// A unit that is not one of ns, us, µs, ms, s, m, h, d, w, y.
    #[error("unknown unit {unit:?} (use ns, us, ms, s, m, h, d, w or y)")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
    },
    /// Something other than a number where a number was expected.
    #[error("expected a number at {rest:?}")]
    ExpectedNumber {
        /// The text from the point of the problem.
        rest: String,
    },
    /// Longer than `std::time::Duration` can hold.
    #[error("too large")]
    Overflow,
}

/// How a duration was written, for callers that want to warn about bare numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spelling {
    /// With units (or the bare `0`).
    Units,
    /// A bare non-zero integer, read as seconds.
    BareSeconds(u64),
}

/// Parses a duration.
///
/// Accepts Go's `time.ParseDuration` syntax: a sequence of decimal numbers, each with an optional fraction and a
/// unit, such as `300ms`, `1.5h` or `2h45m`. Units are `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, and also `d`
/// (24h), `w` (7d) and `y` (365d) as Headscale's `node.expiry` accepts. `0` is zero. A bare whole number is read
/// as seconds. Negative durations are rejected.
///
/// ```
/// use std::time::Duration;
/// use tailwarden_config::parse_duration;
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_duration("180d").unwrap(), Duration::from_secs(180 * 86400));
/// assert!(parse_duration("30x").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    parse_spelled(text).map(|(d, _)| d)
}

pub(crate) fn parse_spelled(text: &str) -> Result<(Duration, Spelling), DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let s = match s.as_bytes()[0] {
        b'-' => return Err(DurationError::Negative),
        b'+' => &s[1..],
        _ => s,
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = s.parse().map_err(|_| DurationError::Overflow)?;
        let spelling = if seconds == 0 { Spelling::Units } else { Spelling::BareSeconds(seconds) };
        return Ok((Duration::from_secs(seconds), spelling));
    }

    let mut total: u128 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(DurationError::ExpectedNumber { rest: String::new() });
    }
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::ExpectedNumber { rest: rest.to_owned() });
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let number = || format!("{int_part}{}{frac_part}", if frac_part.is_empty() { "" } else { "." });
        if unit.is_empty() {
            return Err(DurationError::MissingUnit { number: number() });
        }
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            "w" => 7 * 86_400 * 1_000_000_000,
            "y" => 365 * 86_400 * 1_000_000_000,
            other => return Err(DurationError::UnknownUnit { unit: other.to_owned() }),
        };
        let whole: u128 =
            if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| DurationError::Overflow)? };
        let mut value = whole.checked_mul(unit_nanos).ok_or(DurationError::Overflow)?;
        // Fractions beyond 18 digits are below a nanosecond for every unit up to a year; dropping them is exact
        // enough and keeps the arithmetic in range.
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits.parse().map_err(|_| DurationError::Overflow)?;
            let scale = 10u128.pow(frac_digits.len() as u32);
            value = value.checked_add(frac * unit_nanos / scale).ok_or(DurationError::Overflow)?;
        }
        total = total.checked_add(value).ok_or(DurationError::Overflow)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    let nanos = (total % 1_000_000_000) as u32; // < 1e9, fits
    Ok((Duration::new(secs, nanos), Spelling::Units))
}

/// Writes a duration compactly in the syntax [`parse_duration`] reads: `0s`, `90s` → `1m30s`, `30m`, `1h30m`,
/// `500ms`.
pub fn format_duration(d: Duration) -> String {
    DisplayDuration(d).to_string()
}

/// [`fmt::Display`] for a duration in the syntax [`parse_duration`] reads.
pub(crate) struct DisplayDuration(pub Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        let nanos = d.subsec_nanos();
        if nanos == 0 {
            if s > 0 {
                write!(f, "{s}s")?;
            }
        } else if secs == 0 && nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)?;
        } else if secs == 0 && nanos < 1_000_000 {
            write!(f, "{nanos}ns")?;
        } else {
            let frac = format!("{nanos:09}");
            write!(f, "{s}.{}s", frac.trim_end_matches('0'))?;
        }
        Ok(())
    }
}
