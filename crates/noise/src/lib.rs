//! Server side of the ts2021 control channel.
//!
//! Owns the Noise IK responder step (delegated to Tailscale's `ts_noise`), the Tailscale-specific message framing
//! around it (5-byte initiation header, 3-byte response and record headers, big-endian nonces), the early payload,
//! and [`NoiseStream`], an `AsyncRead + AsyncWrite` over the encrypted records that HTTP/2 runs on.
//!
//! The record codec is our own rather than `ts_control_noise::Codec`: that decoder indexes past the end of a record
//! shorter than the AEAD tag (a panic reachable by any client) and does not enforce the 4096-byte record limit.
#![deny(missing_docs)]

mod handshake;
mod record;
mod stream;

pub use handshake::{Accepted, INITIATION_LEN, Initiation, RESPONSE_LEN, accept, early_payload};
pub use record::{MAX_PLAINTEXT, MAX_RECORD, RecordCodec};
pub use stream::NoiseStream;

/// Why the Noise channel failed.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// The initiation message has the wrong size or header.
    #[error("malformed handshake initiation: {reason}")]
    MalformedInitiation {
        /// What was wrong.
        reason: &'static str,
    },
    /// The handshake did not authenticate (wrong server key or corrupted message).
    #[error("handshake authentication failed (client may have a stale server key)")]
    HandshakeFailed,
    /// A record header announced a size the protocol forbids.
    #[error("record of {len} bytes exceeds the {max}-byte limit or is shorter than its tag")]
    BadRecordSize {
        /// Announced ciphertext length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A record of a type other than "transport" arrived after the handshake.
    #[error("unexpected Noise message type {0:#04x}")]
    UnexpectedType(u8),
    /// A record failed to decrypt.
    #[error("record decryption failed")]
    Decrypt,
    /// The nonce counter ran out.
    #[error("nonce space exhausted")]
    NonceExhausted,
}
