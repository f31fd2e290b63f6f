//! The NaCl box around ClientInfo and ServerInfo, and the JSON inside it. No I/O.
//!
//! Both info frames are sealed with NaCl `crypto_box` (Curve25519, XSalsa20-Poly1305) between the
//! client's node key and the server's DERP key; on the wire the box is `tag(16) || ciphertext`
//! after a 24-byte nonce. Nonces are passed in by the caller so these functions stay pure.
//!
//! ClientInfo JSON is parsed leniently: keys match case-insensitively with underscores ignored, so
//! Go's `{"version":2,"CanAckPings":true}` and tailscale-rs's `can_ack_pings`/`mesh_key` both
//! work; unknown keys, missing keys and values of the wrong JSON type are ignored.

use bytes::Bytes;
use crypto_box::aead::Aead;
use crypto_box::aead::generic_array::GenericArray;
use crypto_box::{PublicKey, SalsaBox};
use serde::Serialize;
use serde_json::{Map, Value};

pub use crypto_box::SecretKey;

use crate::frame::{Message, PROTOCOL_VERSION};
use crate::{DerpError, Key, Nonce};

/// The public key that belongs to `secret`.
pub fn public_key(secret: &SecretKey) -> Key {
    secret.public_key().to_bytes()
}

/// Seal `plaintext` from `my_secret` to `peer`, returning `tag || ciphertext`.
pub fn seal(my_secret: &SecretKey, peer: &Key, nonce: &Nonce, plaintext: &[u8]) -> Result<Vec<u8>, DerpError> {
    SalsaBox::new(&PublicKey::from(*peer), my_secret)
        .encrypt(GenericArray::from_slice(nonce), plaintext)
        .map_err(|_| DerpError::BoxSeal { peer: *peer })
}

/// Open a box sealed by `peer` to `my_secret`.
pub fn open(my_secret: &SecretKey, peer: &Key, nonce: &Nonce, sealed: &[u8]) -> Result<Vec<u8>, DerpError> {
    SalsaBox::new(&PublicKey::from(*peer), my_secret)
        .decrypt(GenericArray::from_slice(nonce), sealed)
        .map_err(|_| DerpError::BoxOpen { peer: *peer })
}

/// What a client says about itself in the ClientInfo frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Protocol version the client speaks, if it said.
    pub version: Option<u32>,
    /// Mesh key (64 hex characters) of a mesh peer; ordinary clients send none.
    pub mesh_key: Option<String>,
    /// Whether the client answers server Pings.
    pub can_ack_pings: bool,
    /// Whether the client is a prober.
    pub is_prober: bool,
}

/// Lower-case a JSON key and drop underscores, so `CanAckPings` and `can_ack_pings` compare equal.
fn normalise_key(key: &str) -> String {
    key.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

fn parse_object(what: &'static str, json: &[u8]) -> Result<Map<String, Value>, DerpError> {
    match serde_json::from_slice::<Value>(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(DerpError::InfoNotObject { what }),
        Err(source) => Err(DerpError::InfoJson { what, source }),
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

impl ClientInfo {
    /// Parse ClientInfo JSON in Go or tailscale-rs spelling.
    pub fn from_json(json: &[u8]) -> Result<Self, DerpError> {
        let mut info = Self::default();
        for (key, value) in parse_object("ClientInfo", json)? {
            match normalise_key(&key).as_str() {
                "version" => info.version = as_u32(&value).or(info.version),
                "meshkey" => {
                    if let Some(s) = value.as_str().filter(|s| !s.is_empty()) {
                        info.mesh_key = Some(s.to_owned());
                    }
                }
                "canackpings" => info.can_ack_pings = value.as_bool().unwrap_or(info.can_ack_pings),
                "isprober" => info.is_prober = value.as_bool().unwrap_or(info.is_prober),
                _ => {}
            }
        }
        Ok(info)
    }

    /// Encode in Go's spelling (`meshKey`, `version`, `CanAckPings`, `IsProber`), omitting empty
    /// fields the way Go does.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = ClientInfoWire {
            mesh_key: self.mesh_key.as_deref(),
            version: self.version.unwrap_or(PROTOCOL_VERSION),
            can_ack_pings: self.can_ack_pings,
            is_prober: self.is_prober,
        };
        // Invariant: a struct of strings, integers and booleans always serialises.
        serde_json::to_vec(&wire).expect("ClientInfo serialises")
    }
}

/// ClientInfo as Go spells it; a struct rather than a map so the key order is fixed.
#[derive(Serialize)]
struct ClientInfoWire<'a> {
    #[serde(rename = "meshKey", skip_serializing_if = "Option::is_none")]
    mesh_key: Option<&'a str>,
    version: u32,
    #[serde(rename = "CanAckPings")]
    can_ack_pings: bool,
    #[serde(rename = "IsProber", skip_serializing_if = "is_false")]
    is_prober: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// ServerInfo as Go spells it; a struct rather than a map so the key order is fixed.
#[derive(Serialize)]
struct ServerInfoWire {
    version: u32,
    #[serde(rename = "TokenBucketBytesPerSecond", skip_serializing_if = "Option::is_none")]
    token_bucket_bytes_per_second: Option<u32>,
    #[serde(rename = "TokenBucketBytesBurst", skip_serializing_if = "Option::is_none")]
    token_bucket_bytes_burst: Option<u32>,
}

/// What the server tells an admitted client in the ServerInfo frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Protocol version the server speaks (2).
    pub version: u32,
    /// Client-side send rate limit in bytes per second, if any.
    pub token_bucket_bytes_per_second: Option<u32>,
    /// Burst of that rate limit in bytes, if any.
    pub token_bucket_bytes_burst: Option<u32>,
}

impl Default for ServerInfo {
    fn default() -> Self {
        Self { version: PROTOCOL_VERSION, token_bucket_bytes_per_second: None, token_bucket_bytes_burst: None }
    }
}

impl ServerInfo {
    /// Encode as Go does: `{"version":2}` plus the token-bucket fields when set.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = ServerInfoWire {
            version: self.version,
            token_bucket_bytes_per_second: self.token_bucket_bytes_per_second,
            token_bucket_bytes_burst: self.token_bucket_bytes_burst,
        };
        // Invariant: a struct of integers always serialises.
        serde_json::to_vec(&wire).expect("ServerInfo serialises")
    }

    /// Parse ServerInfo JSON leniently (same key matching as [`ClientInfo::from_json`]).
    pub fn from_json(json: &[u8]) -> Result<Self, DerpError> {
        let mut info = Self { version: 0, ..Self::default() };
        for (key, value) in parse_object("ServerInfo", json)? {
            match normalise_key(&key).as_str() {
                "version" => info.version = as_u32(&value).unwrap_or(info.version),
                "tokenbucketbytespersecond" => info.token_bucket_bytes_per_second = as_u32(&value),
                "tokenbucketbytesburst" => info.token_bucket_bytes_burst = as_u32(&value),
                _ => {}
            }
        }
        Ok(info)
    }
}

/// Build the ClientInfo frame a client sends: its key, the nonce and the sealed JSON.
pub fn seal_client_info(
    client_secret: &SecretKey,
    server_key: &Key,
    nonce: &Nonce,
    info: &ClientInfo,
) -> Result<Message, DerpError> {
    let sealed = seal(client_secret, server_key, nonce, &info.to_json())?;
    Ok(Message::ClientInfo { key: public_key(client_secret), nonce: *nonce, sealed: Bytes::from(sealed) })
}

/// Open and parse the box of a ClientInfo frame sent by `client_key`.
pub fn open_client_info(
    server_secret: &SecretKey,
    client_key: &Key,
    nonce: &Nonce,
    sealed: &[u8],
) -> Result<ClientInfo, DerpError> {
    ClientInfo::from_json(&open(server_secret, client_key, nonce, sealed)?)
}

/// Build the ServerInfo frame the server sends to `client_key`.
pub fn seal_server_info(
    server_secret: &SecretKey,
    client_key: &Key,
    nonce: &Nonce,
    info: &ServerInfo,
) -> Result<Message, DerpError> {
    let sealed = seal(server_secret, client_key, nonce, &info.to_json())?;
    Ok(Message::ServerInfo { nonce: *nonce, sealed: Bytes::from(sealed) })
}

/// Open and parse the box of a ServerInfo frame from `server_key`.
pub fn open_server_info(
    client_secret: &SecretKey,
    server_key: &Key,
    nonce: &Nonce,
    sealed: &[u8],
) -> Result<ServerInfo, DerpError> {
    ServerInfo::from_json(&open(client_secret, server_key, nonce, sealed)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from([b; 32])
    }

    #[test]
    fn client_info_round_trip_through_the_box() {
        let client = key(1);
        let server = key(2);
        let info = ClientInfo { version: Some(2), mesh_key: None, can_ack_pings: true, is_prober: false };
        let nonce = [9u8; 24];
        let Message::ClientInfo { key: ck, nonce: n, sealed } =
            seal_client_info(&client, &public_key(&server), &nonce, &info).unwrap()
        else {
            panic!("wrong message");
        };
        assert_eq!(ck, public_key(&client));
        assert_eq!(n, nonce);
        assert_eq!(sealed.len(), info.to_json().len() + 16, "box is tag + ciphertext");
        assert_eq!(open_client_info(&server, &ck, &n, &sealed).unwrap(), info);
    }

    #[test]
    fn server_info_round_trip_and_exact_json() {
        let client = key(3);
        let server = key(4);
        let nonce = [7u8; 24];
        let Message::ServerInfo { nonce: n, sealed } =
            seal_server_info(&server, &public_key(&client), &nonce, &ServerInfo::default()).unwrap()
        else {
            panic!("wrong message");
        };
        let plain = open(&client, &public_key(&server), &n, &sealed).unwrap();
        assert_eq!(plain, br#"{"version":2}"#);
        assert_eq!(open_server_info(&client, &public_key(&server), &n, &sealed).unwrap(), ServerInfo::default());
    }

    #[test]
    fn wrong_key_or_tampering_fails_to_open() {
        let client = key(5);
        let server = key(6);
        let other = key(7);
        let nonce = [1u8; 24];
        let sealed = seal(&client, &public_key(&server), &nonce, b"{}").unwrap();
        assert!(open(&server, &public_key(&client), &nonce, &sealed).is_ok());
        assert!(matches!(open(&server, &public_key(&other), &nonce, &sealed), Err(DerpError::BoxOpen { .. })));
        let mut bad = sealed.clone();
        bad[17] ^= 1;
        assert!(open(&server, &public_key(&client), &nonce, &bad).is_err());
        assert!(open(&server, &public_key(&client), &nonce, &sealed[..10]).is_err());
        assert!(open(&server, &public_key(&client), &[2u8; 24], &sealed).is_err());
    }

    /// The `crypto_box` test vector from NaCl's `tests/box.c`: checks the wire layout is NaCl's
    /// (16-byte tag first), which is what Go's `box.Seal` produces.
    #[test]
    fn nacl_box_test_vector() {
        let alice_sk = SecretKey::from(hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
        let bob_pk = hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let nonce: Nonce = hex::decode("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37").unwrap().try_into().unwrap();
        let m = hex::decode(concat!(
            "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffc",
            "e5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb31",
            "0e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde",
            "048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f937763848645e0705",
        ))
        .unwrap();
        let c = seal(&alice_sk, &bob_pk, &nonce, &m).unwrap();
        assert_eq!(c.len(), m.len() + 16);
        assert_eq!(hex::encode(&c[..32]), "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce");
    }

    fn hex32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn client_info_json_is_lenient() {
        let go = ClientInfo::from_json(br#"{"version":2,"CanAckPings":true}"#).unwrap();
        assert_eq!(go, ClientInfo { version: Some(2), mesh_key: None, can_ack_pings: true, is_prober: false });

        let rs = ClientInfo::from_json(
            br#"{"version":2,"can_ack_pings":true,"is_prober":false,"mesh_key":null,"extra":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(rs, ClientInfo { version: Some(2), mesh_key: None, can_ack_pings: true, is_prober: false });

        let mesh = ClientInfo::from_json(br#"{"meshKey":"abcd","IsProber":true}"#).unwrap();
        assert_eq!(mesh.mesh_key.as_deref(), Some("abcd"));
        assert!(mesh.is_prober);
        assert_eq!(mesh.version, None);

        let rs_mesh = ClientInfo::from_json(br#"{"mesh_key":"ef01"}"#).unwrap();
        assert_eq!(rs_mesh.mesh_key.as_deref(), Some("ef01"));

        assert_eq!(ClientInfo::from_json(b"{}").unwrap(), ClientInfo::default());
        let wrong_types = ClientInfo::from_json(br#"{"version":"2","CanAckPings":1,"meshKey":5}"#).unwrap();
        assert_eq!(wrong_types, ClientInfo::default());
        let huge = ClientInfo::from_json(br#"{"version":99999999999}"#).unwrap();
        assert_eq!(huge.version, None);
    }

    #[test]
    fn client_info_json_errors() {
        assert!(matches!(ClientInfo::from_json(b"[]"), Err(DerpError::InfoNotObject { .. })));
        assert!(matches!(ClientInfo::from_json(b"{"), Err(DerpError::InfoJson { .. })));
        assert!(matches!(ClientInfo::from_json(b""), Err(DerpError::InfoJson { .. })));
    }

    #[test]
    fn client_info_go_spelling() {
        let info = ClientInfo { version: Some(2), mesh_key: None, can_ack_pings: true, is_prober: false };
        assert_eq!(info.to_json(), br#"{"version":2,"CanAckPings":true}"#);
    }

    #[test]
    fn server_info_token_bucket_fields() {
        let info =
            ServerInfo { version: 2, token_bucket_bytes_per_second: Some(100), token_bucket_bytes_burst: Some(200) };
        let json = info.to_json();
        assert_eq!(json, br#"{"version":2,"TokenBucketBytesPerSecond":100,"TokenBucketBytesBurst":200}"#);
        assert_eq!(ServerInfo::from_json(&json).unwrap(), info);
    }
}
