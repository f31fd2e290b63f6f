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

/// `bytes` as lowercase hex, written into `out`.
fn hex_str<'a>(bytes: &[u8; 32], out: &'a mut [u8; 64]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Hex digits are ASCII, so this never falls back.
    std::str::from_utf8(out).unwrap_or_default()
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
                f.write_str($prefix)?;
                f.write_str(hex_str(&self.0, &mut [0; 64]))
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
                // On the stack, without the formatting machinery: every peer in every map carries three keys.
                let mut text = [0u8; 80];
                let p = $prefix.len();
                text[..p].copy_from_slice($prefix.as_bytes());
                text[p..p + 64].copy_from_slice(hex_str(&self.0, &mut [0; 64]).as_bytes());
                s.serialize_str(std::str::from_utf8(&text[..p + 64]).unwrap_or_default())
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

    #[test]
    fn text_matches_the_hex_crate_for_every_nibble() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(0x0f));
        let expected = format!("discokey:{}", hex::encode(bytes));
        assert_eq!(DiscoKey(bytes).to_string(), expected);
        assert_eq!(serde_json::to_string(&DiscoKey(bytes)).unwrap(), format!("\"{expected}\""));
        assert_eq!(expected.parse::<DiscoKey>().unwrap(), DiscoKey(bytes));
    }
}
