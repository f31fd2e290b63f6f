//! Public keys in their Go text forms (`mkey:<64 hex>`, `nodekey:…`, `discokey:…`, `chalpub:…`).
//!
//! We keep our own owned-string serde here rather than `ts_keys`' types because those deserialize from a borrowed
//! `&str` only, which fails on input that went through a `serde_json::Value` (our case-insensitive decoding).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Why a key string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// The string does not start with the expected prefix.
    #[error("key {input:?} lacks the {prefix:?} prefix")]
    Prefix {
        /// Expected prefix.
        prefix: &'static str,
        /// The input (truncated).
        input: String,
    },
    /// The hex part is not 64 hex characters.
    #[error("key with prefix {prefix:?} must have 64 hex characters")]
    Hex {
        /// The prefix of the key type.
        prefix: &'static str,
    },
}

macro_rules! public_key {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The text prefix of this key type.
            pub const PREFIX: &'static str = $prefix;

            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// True for the all-zero key, which Go uses for "no key".
            pub fn is_zero(&self) -> bool {
                self.0 == [0; 32]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = KeyParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let hex_part = s.strip_prefix($prefix).ok_or_else(|| KeyParseError::Prefix {
                    prefix: $prefix,
                    input: s.chars().take(80).collect(),
                })?;
                let mut out = [0u8; 32];
                hex::decode_to_slice(hex_part, &mut out).map_err(|_| KeyParseError::Hex { prefix: $prefix })?;
                Ok($name(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Go accepts JSON null for a key and leaves it zero.
                let s: Option<String> = Option::deserialize(d)?;
                match s {
                    None => Ok($name::default()),
                    Some(s) => s.parse().map_err(serde::de::Error::custom),
                }
            }
        }
    };
}

public_key!(
    /// A machine public key: the client's Noise static key, which identifies a device.
    MachineKey,
    "mkey:"
);
public_key!(
    /// A node public key: the WireGuard key of a node, also its DERP identity.
    NodeKey,
    "nodekey:"
);
public_key!(
    /// A disco public key, used by peers for path discovery; changes on every client restart.
    DiscoKey,
    "discokey:"
);
public_key!(
    /// The per-connection challenge key sent in the Noise early payload.
    ChallengeKey,
    "chalpub:"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let text = format!("nodekey:{}", "ab".repeat(32));
        let k: NodeKey = text.parse().unwrap();
        assert_eq!(k.0, [0xab; 32]);
        assert_eq!(k.to_string(), text);
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{text}\""));
        assert!(matches!(text.parse::<MachineKey>(), Err(KeyParseError::Prefix { .. })));
        assert!(matches!("nodekey:abc".parse::<NodeKey>(), Err(KeyParseError::Hex { .. })));
        let upper = format!("nodekey:{}", "AB".repeat(32));
        assert_eq!(upper.parse::<NodeKey>().unwrap(), k);
        let null: NodeKey = serde_json::from_str("null").unwrap();
        assert!(null.is_zero());
    }
}
