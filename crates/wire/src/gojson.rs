//! Decoding client JSON the way Go's `encoding/json` does: object keys match case-insensitively.
//!
//! We normalise every object key to ASCII lower case and the request structs name their fields in lower case for
//! deserialisation (`#[serde(rename(deserialize = "…"))]`), while serialising with Go's spelling.

use crate::WireError;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes a client request body, matching object keys case-insensitively.
pub fn from_go_json<T: DeserializeOwned>(message: &'static str, body: &[u8]) -> Result<T, WireError> {
    let value: Value = serde_json::from_slice(body).map_err(|source| WireError::Json { message, source })?;
    serde_json::from_value(lowercase_keys(value)).map_err(|source| WireError::Json { message, source })
}

fn lowercase_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), lowercase_keys(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(lowercase_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Probe {
        #[serde(rename = "preferredderp", default)]
        preferred_derp: i64,
    }

    #[test]
    fn keys_match_case_insensitively() {
        for body in [r#"{"PreferredDERP":7}"#, r#"{"PreferredDerp":7}"#, r#"{"preferredderp":7}"#] {
            let p: Probe = from_go_json("Probe", body.as_bytes()).unwrap();
            assert_eq!(p.preferred_derp, 7, "{body}");
        }
    }

    #[test]
    fn errors_name_the_message() {
        let err = from_go_json::<Probe>("Probe", b"{\"PreferredDERP\":").unwrap_err();
        assert!(err.to_string().starts_with("invalid Probe JSON"), "{err}");
    }
}
