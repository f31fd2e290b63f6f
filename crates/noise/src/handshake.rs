//! The IK handshake as Tailscale frames it.

use crate::NoiseError;
use crate::record::RecordCodec;
use tailwarden_wire::{ChallengeKey, EarlyNoise, MachineKey};
use ts_keys::X25519KeyPair;
use ts_noise::ik::ReceivedHandshake;

/// Size of the initiation message (5-byte header + 96-byte Noise payload).
pub const INITIATION_LEN: usize = 101;
/// Size of the response message (3-byte header + 48-byte Noise payload).
pub const RESPONSE_LEN: usize = 51;

const MSG_INITIATION: u8 = 0x01;
const MSG_RESPONSE: u8 = 0x02;
const PAYLOAD_LEN: usize = 96;

/// A parsed initiation message.
#[derive(Clone)]
pub struct Initiation {
    /// The client's capability version, which is also the Noise protocol version.
    pub version: u16,
    payload: [u8; PAYLOAD_LEN],
}

impl Initiation {
    /// Parses the 101-byte initiation (as decoded from the `X-Tailscale-Handshake` header).
    pub fn parse(bytes: &[u8]) -> Result<Initiation, NoiseError> {
        if bytes.len() != INITIATION_LEN {
            return Err(NoiseError::MalformedInitiation { reason: "initiation must be 101 bytes" });
        }
        if bytes[2] != MSG_INITIATION {
            return Err(NoiseError::MalformedInitiation { reason: "message type is not 'initiation'" });
        }
        if u16::from_be_bytes([bytes[3], bytes[4]]) as usize != PAYLOAD_LEN {
            return Err(NoiseError::MalformedInitiation { reason: "payload length is not 96" });
        }
        let mut payload = [0u8; PAYLOAD_LEN];
        payload.copy_from_slice(&bytes[5..]);
        Ok(Initiation { version: u16::from_be_bytes([bytes[0], bytes[1]]), payload })
    }

    /// Decodes the standard-base64 header value and parses it.
    pub fn from_header(value: &str) -> Result<Initiation, NoiseError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| NoiseError::MalformedInitiation { reason: "handshake header is not base64" })?;
        Initiation::parse(&bytes)
    }
}

/// A completed handshake.
pub struct Accepted {
    /// The client's authenticated machine key.
    pub machine_key: MachineKey,
    /// The client's capability version.
    pub version: u16,
    /// The 51-byte response to write before anything else.
    pub response: [u8; RESPONSE_LEN],
    /// Transport keys for the records that follow.
    pub codec: RecordCodec,
}

/// Runs the responder side of the handshake with the server's static key.
pub fn accept(init: &Initiation, server: &X25519KeyPair) -> Result<Accepted, NoiseError> {
    let prologue = format!("Tailscale Control Protocol v{}", init.version);
    let mut payload = init.payload;
    let hs = ReceivedHandshake::new(&mut payload, prologue.as_bytes(), server).ok_or(NoiseError::HandshakeFailed)?;
    let machine_key = MachineKey(hs.peer_static_pub.to_bytes());
    let mut response = [0u8; RESPONSE_LEN];
    response[0] = MSG_RESPONSE;
    response[1..3].copy_from_slice(&((RESPONSE_LEN - 3) as u16).to_be_bytes());
    let session = hs.finish(&mut response[3..]);
    Ok(Accepted { machine_key, version: init.version, response, codec: RecordCodec::responder(session) })
}

/// The plaintext of the early payload: magic, big-endian length, `EarlyNoise` JSON with a fresh challenge.
pub fn early_payload(challenge: ChallengeKey) -> Vec<u8> {
    const MAGIC: [u8; 5] = [0xff, 0xff, 0xff, b'T', b'S'];
    let json = serde_json::to_vec(&EarlyNoise { node_key_challenge: challenge })
        .expect("EarlyNoise has only a key field, which always serialises");
    let mut out = Vec::with_capacity(9 + json.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}
