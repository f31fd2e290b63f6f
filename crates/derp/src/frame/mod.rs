//! DERP framing, free of I/O.
//!
//! Every frame is `[type: u8][length: u32 big-endian][body]`. This module owns the frame type
//! numbers ([`FrameType`]), the per-type body limits, the incremental [`FrameDecoder`] that turns
//! a growing [`bytes::BytesMut`] into whole frames (skipping unknown types the way the Go server
//! does), and the typed bodies in [`Message`] with their parsers and encoders.

mod decoder;
mod message;

pub use decoder::{Frame, FrameDecoder};
pub use message::{Message, PeerGoneReason};

use std::fmt;

/// The 8-byte magic at the start of a ServerKey body: `"DERP🔑"`.
pub const MAGIC: [u8; 8] = *b"DERP\xF0\x9F\x94\x91";

/// DERP protocol version spoken here (v2: RecvPacket carries the source key).
pub const PROTOCOL_VERSION: u32 = 2;

/// Length of a frame header: one type byte and a big-endian `u32` body length.
pub const HEADER_LEN: usize = 5;

/// Length of a public key on the wire.
pub const KEY_LEN: usize = 32;

/// Length of a NaCl box nonce on the wire.
pub const NONCE_LEN: usize = 24;

/// Largest data packet relayed (excluding the key that precedes it in Send/RecvPacket).
pub const MAX_PACKET_SIZE: usize = 64 * 1024;

/// Largest ClientInfo/ServerInfo body accepted.
pub const MAX_INFO_LEN: u32 = 256 * 1024;

/// Largest Ping/Pong body accepted (only the first 8 bytes are used).
pub const MAX_PING_LEN: u32 = 1000;

/// Largest body of the small control frames (keys, reasons, flags).
pub const MAX_SMALL_FRAME_LEN: u32 = 1024;

/// Hard cap on any frame body, checked before anything is buffered. Unknown frame types up to
/// this size are skipped; longer ones are an error.
pub const MAX_FRAME_LEN: u32 = 1024 * 1024;

/// The 6 bytes that start every disco packet: `"TS💬"`.
pub const DISCO_MAGIC: [u8; 6] = [0x54, 0x53, 0xF0, 0x9F, 0x92, 0xAC];

/// Whether a relayed packet is a disco packet (magic, then a 32-byte key and a 24-byte nonce).
pub fn is_disco_packet(packet: &[u8]) -> bool {
    packet.len() >= DISCO_MAGIC.len() + KEY_LEN + NONCE_LEN && packet.starts_with(&DISCO_MAGIC)
}

/// A DERP frame type byte.
///
/// Types without a name here (including the unassigned `0x0b`–`0x0f`) are [`FrameType::Unknown`].
/// Converting a `u8` always yields the named variant when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameType {
    /// `0x01` S→C: magic + server public key.
    ServerKey,
    /// `0x02` C→S: client key + nonce + sealed ClientInfo JSON.
    ClientInfo,
    /// `0x03` S→C: nonce + sealed ServerInfo JSON.
    ServerInfo,
    /// `0x04` C→S: destination key + packet.
    SendPacket,
    /// `0x05` S→C: source key + packet.
    RecvPacket,
    /// `0x06` S→C: empty keep-alive.
    KeepAlive,
    /// `0x07` C→S: one byte, whether this is the client's home DERP.
    NotePreferred,
    /// `0x08` S→C: key + reason.
    PeerGone,
    /// `0x09` S→mesh watcher: key + endpoint + flags.
    PeerPresent,
    /// `0x0a` mesh: source key + destination key + packet.
    ForwardPacket,
    /// `0x10` mesh: subscribe to PeerPresent/PeerGone.
    WatchConns,
    /// `0x11` mesh: disconnect the client with this key.
    ClosePeer,
    /// `0x12` both: 8 bytes to echo.
    Ping,
    /// `0x13` both: the 8 bytes of a Ping.
    Pong,
    /// `0x14` S→C: UTF-8 health problem, empty when healthy.
    Health,
    /// `0x15` S→C: reconnect-in and try-for, milliseconds.
    Restarting,
    /// Any other type byte.
    Unknown(u8),
}

impl FrameType {
    /// The type byte on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::ServerKey => 0x01,
            Self::ClientInfo => 0x02,
            Self::ServerInfo => 0x03,
            Self::SendPacket => 0x04,
            Self::RecvPacket => 0x05,
            Self::KeepAlive => 0x06,
            Self::NotePreferred => 0x07,
            Self::PeerGone => 0x08,
            Self::PeerPresent => 0x09,
            Self::ForwardPacket => 0x0a,
            Self::WatchConns => 0x10,
            Self::ClosePeer => 0x11,
            Self::Ping => 0x12,
            Self::Pong => 0x13,
            Self::Health => 0x14,
            Self::Restarting => 0x15,
            Self::Unknown(b) => b,
        }
    }

    /// Largest body accepted for this type. Unknown types get [`MAX_FRAME_LEN`] (they are skipped,
    /// never buffered).
    pub fn max_body_len(self) -> u32 {
        // The packet-carrying limits are small constants; the casts cannot truncate.
        const PACKET: u32 = MAX_PACKET_SIZE as u32;
        const KEY: u32 = KEY_LEN as u32;
        match self {
            Self::SendPacket | Self::RecvPacket => KEY + PACKET,
            Self::ForwardPacket => 2 * KEY + PACKET,
            Self::ClientInfo | Self::ServerInfo => MAX_INFO_LEN,
            Self::Ping | Self::Pong => MAX_PING_LEN,
            Self::Health | Self::Unknown(_) => MAX_FRAME_LEN,
            Self::ServerKey
            | Self::KeepAlive
            | Self::NotePreferred
            | Self::PeerGone
            | Self::PeerPresent
            | Self::WatchConns
            | Self::ClosePeer
            | Self::Restarting => MAX_SMALL_FRAME_LEN,
        }
    }

    /// Whether this is a named (known) frame type.
    pub fn is_known(self) -> bool {
        !matches!(self, Self::Unknown(_))
    }

    fn name(self) -> &'static str {
        match self {
            Self::ServerKey => "ServerKey",
            Self::ClientInfo => "ClientInfo",
            Self::ServerInfo => "ServerInfo",
            Self::SendPacket => "SendPacket",
            Self::RecvPacket => "RecvPacket",
            Self::KeepAlive => "KeepAlive",
            Self::NotePreferred => "NotePreferred",
            Self::PeerGone => "PeerGone",
            Self::PeerPresent => "PeerPresent",
            Self::ForwardPacket => "ForwardPacket",
            Self::WatchConns => "WatchConns",
            Self::ClosePeer => "ClosePeer",
            Self::Ping => "Ping",
            Self::Pong => "Pong",
            Self::Health => "Health",
            Self::Restarting => "Restarting",
            Self::Unknown(_) => "Unknown",
        }
    }
}

impl From<u8> for FrameType {
    fn from(b: u8) -> Self {
        match b {
            0x01 => Self::ServerKey,
            0x02 => Self::ClientInfo,
            0x03 => Self::ServerInfo,
            0x04 => Self::SendPacket,
            0x05 => Self::RecvPacket,
            0x06 => Self::KeepAlive,
            0x07 => Self::NotePreferred,
            0x08 => Self::PeerGone,
            0x09 => Self::PeerPresent,
            0x0a => Self::ForwardPacket,
            0x10 => Self::WatchConns,
            0x11 => Self::ClosePeer,
            0x12 => Self::Ping,
            0x13 => Self::Pong,
            0x14 => Self::Health,
            0x15 => Self::Restarting,
            other => Self::Unknown(other),
        }
    }
}

impl From<FrameType> for u8 {
    fn from(t: FrameType) -> u8 {
        t.as_u8()
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:#04x})", self.name(), self.as_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_bytes_round_trip_and_match_the_protocol_table() {
        let table: &[(u8, FrameType)] = &[
            (0x01, FrameType::ServerKey),
            (0x02, FrameType::ClientInfo),
            (0x03, FrameType::ServerInfo),
            (0x04, FrameType::SendPacket),
            (0x05, FrameType::RecvPacket),
            (0x06, FrameType::KeepAlive),
            (0x07, FrameType::NotePreferred),
            (0x08, FrameType::PeerGone),
            (0x09, FrameType::PeerPresent),
            (0x0a, FrameType::ForwardPacket),
            (0x10, FrameType::WatchConns),
            (0x11, FrameType::ClosePeer),
            (0x12, FrameType::Ping),
            (0x13, FrameType::Pong),
            (0x14, FrameType::Health),
            (0x15, FrameType::Restarting),
        ];
        for &(b, t) in table {
            assert_eq!(FrameType::from(b), t);
            assert_eq!(t.as_u8(), b);
            assert!(t.is_known());
        }
        for b in (0x00..=0x00).chain(0x0b..=0x0f).chain(0x16..=0xff) {
            assert_eq!(FrameType::from(b), FrameType::Unknown(b));
        }
    }

    #[test]
    fn limits_allow_a_max_size_send_packet() {
        assert_eq!(FrameType::SendPacket.max_body_len(), 65536 + 32);
        assert_eq!(FrameType::ForwardPacket.max_body_len(), 65536 + 64);
        assert_eq!(FrameType::ClientInfo.max_body_len(), 256 * 1024);
        assert!(FrameType::Unknown(0x77).max_body_len() <= MAX_FRAME_LEN);
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(MAGIC, [0x44, 0x45, 0x52, 0x50, 0xF0, 0x9F, 0x94, 0x91]);
        assert_eq!(&MAGIC[..], "DERP🔑".as_bytes());
        assert_eq!(&DISCO_MAGIC[..], "TS💬".as_bytes());
    }

    #[test]
    fn disco_detection_needs_magic_and_length() {
        let mut p = DISCO_MAGIC.to_vec();
        assert!(!is_disco_packet(&p));
        p.resize(6 + 32 + 24, 0);
        assert!(is_disco_packet(&p));
        p[0] = 0;
        assert!(!is_disco_packet(&p));
    }

    #[test]
    fn display_names_type_and_byte() {
        assert_eq!(FrameType::SendPacket.to_string(), "SendPacket(0x04)");
        assert_eq!(FrameType::Unknown(0xab).to_string(), "Unknown(0xab)");
    }
}
