//! Go `time.Time` as JSON: RFC 3339 text, where `0001-01-01T00:00:00Z` (the zero time) means "unset".

use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Go's zero time, written for unset timestamps in fields without `omitempty`.
pub const ZERO: &str = "0001-01-01T00:00:00Z";

/// Formats a timestamp the way Go does (RFC 3339, UTC, fractional seconds only when non-zero).
pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_else(|_| ZERO.to_string())
}

/// Serde adapter for `Option<OffsetDateTime>` where `None` is Go's zero time.
pub mod zero_is_none {
    use super::*;

    /// Writes `None` as the zero time.
    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(*t)),
            None => s.serialize_str(ZERO),
        }
    }

    /// Reads the zero time, `null` or a missing value as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
        let raw: Option<String> = Option::deserialize(d)?;
        match raw.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => {
                let t = OffsetDateTime::parse(s, &Rfc3339).map_err(serde::de::Error::custom)?;
                // Anything in year 1 is Go's zero time (possibly with a zone offset).
                Ok((t.year() > 1).then_some(t))
            }
        }
    }
}

/// Serde adapter for optional timestamps that are omitted when `None` (Go `omitempty` on `*time.Time`).
pub mod optional {
    use super::*;

    /// Writes the timestamp; only call through `skip_serializing_if = "Option::is_none"`.
    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        zero_is_none::serialize(t, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct T {
        #[serde(with = "zero_is_none", default)]
        at: Option<OffsetDateTime>,
    }

    #[test]
    fn zero_time_round_trips_as_none() {
        let t: T = serde_json::from_str(r#"{"at":"0001-01-01T00:00:00Z"}"#).unwrap();
        assert!(t.at.is_none());
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"at":"0001-01-01T00:00:00Z"}"#);
        let t: T = serde_json::from_str(r#"{"at":null}"#).unwrap();
        assert!(t.at.is_none());
    }

    #[test]
    fn logout_time_parses_as_past() {
        let t: T = serde_json::from_str(r#"{"at":"1970-01-01T00:02:03Z"}"#).unwrap();
        assert_eq!(t.at.unwrap().unix_timestamp(), 123);
    }
}
