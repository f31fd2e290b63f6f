//! High-entropy secrets (pre-auth keys, API keys): generation, parsing of presented keys, hashing, verification.
//!
//! A key looks like Headscale's current format, `hskey-auth-<prefix>-<secret>` or `hskey-api-<prefix>-<secret>`,
//! with a 12-character lookup prefix and a 64-character secret drawn from `[A-Za-z0-9]` (≈381 bits). The store
//! keeps the prefix in clear (to find the row) and a SHA-256 over a domain-separation string, the kind, the prefix
//! and the secret. A slow password hash (bcrypt) buys nothing for secrets of this entropy and would cost
//! milliseconds on every API call, so a single fast hash is used; comparison is constant-time.
//!
//! Pure: randomness is passed in, nothing here does I/O.

use rand::distributions::Alphanumeric;
use rand::{CryptoRng, Rng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

/// Length of the clear-text lookup prefix.
pub const PREFIX_LEN: usize = 12;
/// Length of the secret part.
pub const SECRET_LEN: usize = 64;
/// Length of a hash produced by [`hash_secret`].
pub const HASH_LEN: usize = 32;

/// Domain-separation string mixed into every hash, so these hashes can never collide with another use of SHA-256.
const DOMAIN: &[u8] = b"tailwarden/secret/v1";

/// What a secret authorises; part of both the displayed key and the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum SecretKind {
    /// A pre-authentication key (`hskey-auth-…`), used by `tailscale up --authkey`.
    PreAuthKey,
    /// A management API key (`hskey-api-…`).
    ApiKey,
}

impl SecretKind {
    const ALL: [SecretKind; 2] = [SecretKind::PreAuthKey, SecretKind::ApiKey];

    /// The short tag in the displayed key: `auth` or `api`.
    pub fn tag(self) -> &'static str {
        match self {
            SecretKind::PreAuthKey => "auth",
            SecretKind::ApiKey => "api",
        }
    }

    /// The text every key of this kind starts with, e.g. `hskey-auth-`.
    pub fn display_prefix(self) -> &'static str {
        match self {
            SecretKind::PreAuthKey => "hskey-auth-",
            SecretKind::ApiKey => "hskey-api-",
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretKind::PreAuthKey => "pre-auth key",
            SecretKind::ApiKey => "API key",
        })
    }
}

/// Which part of a presented key an error points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SecretPart {
    /// The 12-character lookup prefix.
    Prefix,
    /// The 64-character secret.
    Secret,
}

/// Why a presented key was refused. Never contains the key itself, so it is safe to log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The key does not start with `hskey-auth-` / `hskey-api-` at all.
    #[error("not a {expected}: it must start with {:?}", expected.display_prefix())]
    UnknownFormat {
        /// The kind that was expected.
        expected: SecretKind,
    },
    /// The key is well-formed but of the other kind (an API key presented as a pre-auth key, or vice versa).
    #[error("expected a {expected} but got a {found}")]
    WrongKind {
        /// The kind that was expected.
        expected: SecretKind,
        /// The kind the key announces.
        found: SecretKind,
    },
    /// No `-` separates the prefix from the secret.
    #[error("malformed {kind}: missing '-' between prefix and secret")]
    MissingSeparator {
        /// The kind being parsed.
        kind: SecretKind,
    },
    /// A part has the wrong length.
    #[error("malformed {kind}: {part:?} must be {expected} characters, got {found}")]
    BadLength {
        /// The kind being parsed.
        kind: SecretKind,
        /// Which part.
        part: SecretPart,
        /// The required length.
        expected: usize,
        /// The presented length, in characters.
        found: usize,
    },
    /// A part contains a character outside `[A-Za-z0-9]`.
    #[error("malformed {kind}: {part:?} has a character outside [A-Za-z0-9] at position {position}")]
    BadCharacter {
        /// The kind being parsed.
        kind: SecretKind,
        /// Which part.
        part: SecretPart,
        /// Zero-based character position within the part.
        position: usize,
    },
}

/// A freshly generated key. `display` is shown to the user once; only `prefix` and `hash` are stored.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedSecret {
    /// The full key to hand to the user, e.g. `hskey-auth-<prefix>-<secret>`.
    pub display: String,
    /// The clear-text lookup prefix (stored, unique).
    pub prefix: String,
    /// The hash to store ([`HASH_LEN`] bytes).
    pub hash: Vec<u8>,
}

impl fmt::Debug for GeneratedSecret {
    /// Redacts the secret so keys never end up in logs by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedSecret")
            .field("display", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("hash", &HexBytes(&self.hash))
            .finish()
    }
}

struct HexBytes<'a>(&'a [u8]);

impl fmt::Debug for HexBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl GeneratedSecret {
    /// Generates a new key of `kind` from a cryptographically secure `rng`.
    pub fn new<R: RngCore + CryptoRng + ?Sized>(kind: SecretKind, rng: &mut R) -> GeneratedSecret {
        let mut alnum = |n: usize| -> String { (0..n).map(|_| char::from(rng.sample(Alphanumeric))).collect() };
        let prefix = alnum(PREFIX_LEN);
        let secret = alnum(SECRET_LEN);
        let hash = hash_secret(kind, &prefix, &secret);
        let display = format!("{}{prefix}-{secret}", kind.display_prefix());
        GeneratedSecret { display, prefix, hash }
    }
}

/// The stored hash of a key: SHA-256(domain ‖ 0 ‖ kind tag ‖ 0 ‖ prefix ‖ 0 ‖ secret).
///
/// The NUL separators cannot occur in any field, so distinct inputs never concatenate to the same bytes.
pub fn hash_secret(kind: SecretKind, prefix: &str, secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update([0]);
    h.update(kind.tag().as_bytes());
    h.update([0]);
    h.update(prefix.as_bytes());
    h.update([0]);
    h.update(secret.as_bytes());
    h.finalize().to_vec()
}

/// Splits a presented key into its lookup prefix and the hash to compare with the stored one.
pub fn parse_presented(kind: SecretKind, presented: &str) -> Result<(String, Vec<u8>), SecretError> {
    let Some(rest) = presented.strip_prefix(kind.display_prefix()) else {
        return Err(match SecretKind::ALL.into_iter().find(|k| presented.starts_with(k.display_prefix())) {
            Some(found) => SecretError::WrongKind { expected: kind, found },
            None => SecretError::UnknownFormat { expected: kind },
        });
    };
    let (prefix, secret) = rest.split_once('-').ok_or(SecretError::MissingSeparator { kind })?;
    check_part(kind, SecretPart::Prefix, prefix, PREFIX_LEN)?;
    check_part(kind, SecretPart::Secret, secret, SECRET_LEN)?;
    Ok((prefix.to_string(), hash_secret(kind, prefix, secret)))
}

fn check_part(kind: SecretKind, part: SecretPart, text: &str, expected: usize) -> Result<(), SecretError> {
    if let Some(position) = text.chars().position(|c| !c.is_ascii_alphanumeric()) {
        return Err(SecretError::BadCharacter { kind, part, position });
    }
    if text.len() != expected {
        return Err(SecretError::BadLength { kind, part, expected, found: text.len() });
    }
    Ok(())
}

/// Compares a stored hash with a presented one in time independent of where they differ.
pub fn verify(record_hash: &[u8], presented_hash: &[u8]) -> bool {
    // Lengths are public (always HASH_LEN for well-formed input), so an early return on them leaks nothing.
    if record_hash.len() != presented_hash.len() {
        return false;
    }
    let diff = record_hash.iter().zip(presented_hash).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn key(kind: SecretKind, seed: u64) -> GeneratedSecret {
        GeneratedSecret::new(kind, &mut StdRng::seed_from_u64(seed))
    }

    #[test]
    fn format_matches_headscale() {
        for (kind, start) in [(SecretKind::PreAuthKey, "hskey-auth-"), (SecretKind::ApiKey, "hskey-api-")] {
            let k = key(kind, 1);
            assert!(k.display.starts_with(start));
            assert_eq!(k.display.len(), start.len() + PREFIX_LEN + 1 + SECRET_LEN);
            assert_eq!(k.prefix.len(), PREFIX_LEN);
            assert!(k.prefix.chars().all(|c| c.is_ascii_alphanumeric()));
            assert_eq!(&k.display[start.len()..start.len() + PREFIX_LEN], k.prefix);
            assert_eq!(k.hash.len(), HASH_LEN);
            assert!(!k.display.starts_with("tskey-client-"));
            assert!(!k.display.contains("--TL"));
            assert!(!format!("{k:?}").contains(&k.display), "Debug must redact");
        }
    }

    #[test]
    fn round_trip() {
        for kind in SecretKind::ALL {
            let k = key(kind, 2);
            let (prefix, hash) = parse_presented(kind, &k.display).unwrap();
            assert_eq!(prefix, k.prefix);
            assert!(verify(&k.hash, &hash));
        }
    }

    #[test]
    fn kinds_hash_differently() {
        let k = key(SecretKind::ApiKey, 3);
        let secret = &k.display[k.display.len() - SECRET_LEN..];
        assert_ne!(hash_secret(SecretKind::PreAuthKey, &k.prefix, secret), k.hash);
    }

    #[test]
    fn malformed_keys_are_rejected_precisely() {
        use SecretKind::*;
        let good = key(PreAuthKey, 4).display;
        let api = key(ApiKey, 4).display;
        let body = good.strip_prefix("hskey-auth-").unwrap();
        let prefix = &body[..PREFIX_LEN];
        let secret = &body[PREFIX_LEN + 1..];
        let cases: Vec<(String, SecretError)> = vec![
            (api.clone(), SecretError::WrongKind { expected: PreAuthKey, found: ApiKey }),
            ("tskey-auth-abc".into(), SecretError::UnknownFormat { expected: PreAuthKey }),
            ("".into(), SecretError::UnknownFormat { expected: PreAuthKey }),
            (format!("hskey-auth-{prefix}{secret}"), SecretError::MissingSeparator { kind: PreAuthKey }),
            (
                format!("hskey-auth-{}-{secret}", &prefix[..11]),
                SecretError::BadLength { kind: PreAuthKey, part: SecretPart::Prefix, expected: 12, found: 11 },
            ),
            (
                format!("hskey-auth-{prefix}-{}", &secret[..63]),
                SecretError::BadLength { kind: PreAuthKey, part: SecretPart::Secret, expected: 64, found: 63 },
            ),
            (
                format!("hskey-auth-{prefix}-{secret}x"),
                SecretError::BadLength { kind: PreAuthKey, part: SecretPart::Secret, expected: 64, found: 65 },
            ),
            (
                format!("hskey-auth-{}_-{secret}", &prefix[..11]),
                SecretError::BadCharacter { kind: PreAuthKey, part: SecretPart::Prefix, position: 11 },
            ),
            (
                format!("hskey-auth-{prefix}-{}é", &secret[..63]),
                SecretError::BadCharacter { kind: PreAuthKey, part: SecretPart::Secret, position: 63 },
            ),
            (
                format!("hskey-auth-{prefix}--TL{}", &secret[3..]),
                SecretError::BadCharacter { kind: PreAuthKey, part: SecretPart::Secret, position: 0 },
            ),
            (
                format!("{good}\n"),
                SecretError::BadCharacter { kind: PreAuthKey, part: SecretPart::Secret, position: 64 },
            ),
        ];
        for (input, want) in cases {
            let got = parse_presented(PreAuthKey, &input);
            assert_eq!(got, Err(want.clone()), "{input:?}");
            let msg = want.to_string();
            assert!(!msg.contains(secret), "error message must not echo the secret: {msg}");
        }
        assert_eq!(parse_presented(ApiKey, &good), Err(SecretError::WrongKind { expected: ApiKey, found: PreAuthKey }));
    }

    #[test]
    fn verify_is_exact() {
        let k = key(SecretKind::ApiKey, 5);
        assert!(verify(&k.hash, &k.hash.clone()));
        assert!(!verify(&k.hash, &k.hash[..31]));
        assert!(!verify(&k.hash, &[]));
        for bit in 0..(HASH_LEN * 8) {
            let mut h = k.hash.clone();
            h[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify(&k.hash, &h), "bit {bit}");
        }
    }

    proptest! {
        /// Any presented key that differs from the generated one in one character of its secret fails to verify.
        #[test]
        fn one_character_change_fails(seed in any::<u64>(), pos in 0..SECRET_LEN, c in "[A-Za-z0-9]") {
            let k = key(SecretKind::PreAuthKey, seed);
            let start = k.display.len() - SECRET_LEN;
            let mut presented = k.display.clone();
            presented.replace_range(start + pos..start + pos + 1, &c);
            let (prefix, hash) = parse_presented(SecretKind::PreAuthKey, &presented).unwrap();
            prop_assert_eq!(prefix, k.prefix.clone());
            prop_assert_eq!(verify(&k.hash, &hash), presented == k.display);
        }

        /// Generated keys always parse back and never contain a reserved marker.
        #[test]
        fn generated_keys_parse(seed in any::<u64>(), api in any::<bool>()) {
            let kind = if api { SecretKind::ApiKey } else { SecretKind::PreAuthKey };
            let k = key(kind, seed);
            prop_assert!(!k.display.contains("--TL") && !k.display.starts_with("tskey-client-"));
            let (prefix, hash) = parse_presented(kind, &k.display).unwrap();
            prop_assert_eq!(prefix, k.prefix);
            prop_assert!(verify(&k.hash, &hash));
        }
    }
}
