//! The crate's error type for DERP framing, the NaCl handshake and connection handling.
//!
//! Variants carry the offending values (frame type, lengths, keys) rather than pre-formatted text,
//! so callers can match on them; only `Display` turns them into log lines. STUN has its own small
//! error type ([`crate::stun::StunError`]) because it is a separate protocol on a separate socket.

use std::time::Duration;

use crate::Key;
use crate::frame::FrameType;

/// Errors from decoding DERP frames, opening or sealing the info boxes, and serving a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DerpError {
    /// A frame header announced a body longer than the limit for its type.
    #[error("{frame_type} frame body of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Type of the offending frame.
        frame_type: FrameType,
        /// Body length from the header (or of the body being encoded).
        len: u64,
        /// Largest body accepted for this type.
        limit: u32,
    },
    /// A frame body is shorter than its type requires.
    #[error("{frame_type} frame body of {len} bytes is shorter than the required {min} bytes")]
    FrameTooShort {
        /// Type of the offending frame.
        frame_type: FrameType,
        /// Actual body length.
        len: usize,
        /// Minimum body length for this type.
        min: usize,
    },
    /// A frame of a type this crate does not know was handed to the body parser.
    #[error("frame type {type_byte:#04x} is unknown")]
    UnknownFrameType {
        /// The type byte.
        type_byte: u8,
    },
    /// A ServerKey frame did not start with the 8-byte DERP magic.
    #[error("ServerKey frame does not start with the DERP magic")]
    BadMagic,
    /// The peer sent a frame other than the one the handshake expects.
    #[error("expected a {expected} frame, got {got}")]
    UnexpectedFrame {
        /// The frame type the handshake waits for.
        expected: FrameType,
        /// The frame type received.
        got: FrameType,
    },
    /// A NaCl box failed to open (wrong key, corrupt or truncated box).
    #[error("NaCl box from {} could not be opened", hex::encode(.peer))]
    BoxOpen {
        /// Public key the box claimed to be from.
        peer: Key,
    },
    /// Sealing a NaCl box failed.
    #[error("NaCl box to {} could not be sealed", hex::encode(.peer))]
    BoxSeal {
        /// Public key of the recipient.
        peer: Key,
    },
    /// The opened ClientInfo or ServerInfo was not valid JSON.
    #[error("{what} is not valid JSON: {source}")]
    InfoJson {
        /// `"ClientInfo"` or `"ServerInfo"`.
        what: &'static str,
        /// The JSON parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The opened ClientInfo or ServerInfo was JSON but not an object.
    #[error("{what} JSON is not an object")]
    InfoNotObject {
        /// `"ClientInfo"` or `"ServerInfo"`.
        what: &'static str,
    },
    /// A handshake step did not finish in time.
    #[error("DERP handshake timed out after {timeout:?} waiting for {stage}")]
    HandshakeTimeout {
        /// What the server was waiting for.
        stage: &'static str,
        /// The deadline that expired.
        timeout: Duration,
    },
    /// The peer closed the connection before the handshake finished.
    #[error("connection closed during the DERP handshake")]
    ClosedDuringHandshake,
    /// The admission check refused the client's node key.
    #[error("admission refused for nodekey:{}", hex::encode(.key))]
    AdmissionRefused {
        /// The refused node key.
        key: Key,
    },
    /// Writing one frame (or flushing) took longer than the write timeout.
    #[error("writing to the client timed out after {timeout:?}")]
    WriteTimeout {
        /// The per-frame write timeout.
        timeout: Duration,
    },
    /// A client sent a frame reserved for mesh peers; this server has no mesh support.
    #[error("{frame_type} frames are only allowed from mesh peers, which this server does not support")]
    MeshFrameForbidden {
        /// The mesh-only frame type.
        frame_type: FrameType,
    },
    /// An I/O error on the underlying connection.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
