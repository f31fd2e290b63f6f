//! Typed frame bodies: parsing from and encoding to the wire.

use bytes::{BufMut, Bytes, BytesMut};

use super::{FrameType, HEADER_LEN, KEY_LEN, MAGIC, NONCE_LEN};
use crate::{DerpError, Key, Nonce};

/// Why a peer is gone, the reason byte of a PeerGone frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerGoneReason {
    /// `0x00`: the peer was connected and has disconnected.
    Disconnected,
    /// `0x01`: the destination of a SendPacket is not connected to this server.
    NotHere,
    /// Any other reason byte.
    Other(u8),
}

impl From<u8> for PeerGoneReason {
    fn from(b: u8) -> Self {
        match b {
            0x00 => Self::Disconnected,
            0x01 => Self::NotHere,
            other => Self::Other(other),
        }
    }
}

impl From<PeerGoneReason> for u8 {
    fn from(r: PeerGoneReason) -> u8 {
        match r {
            PeerGoneReason::Disconnected => 0x00,
            PeerGoneReason::NotHere => 0x01,
            PeerGoneReason::Other(b) => b,
        }
    }
}

/// A parsed frame body.
///
/// Parsing is lenient where Go is: trailing bytes after the fixed fields are ignored (Ping uses its
/// first 8 bytes, ServerKey may carry more than the key) and PeerGone/PeerPresent accept the
/// shorter bodies of older servers. Encoding writes the canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Server's public key, preceded on the wire by [`MAGIC`].
    ServerKey {
        /// The DERP server's public key.
        key: Key,
    },
    /// Client's node key and its sealed ClientInfo JSON.
    ClientInfo {
        /// The client's node public key.
        key: Key,
        /// Nonce of the box.
        nonce: Nonce,
        /// The NaCl box (tag followed by ciphertext).
        sealed: Bytes,
    },
    /// Sealed ServerInfo JSON.
    ServerInfo {
        /// Nonce of the box.
        nonce: Nonce,
        /// The NaCl box (tag followed by ciphertext).
        sealed: Bytes,
    },
    /// Client asks the server to relay a packet.
    SendPacket {
        /// Destination node key.
        dst: Key,
        /// The packet.
        packet: Bytes,
    },
    /// Server delivers a relayed packet.
    RecvPacket {
        /// Source node key.
        src: Key,
        /// The packet.
        packet: Bytes,
    },
    /// Keep-alive from the server.
    KeepAlive,
    /// Whether the server is the client's home DERP.
    NotePreferred {
        /// `true` for home DERP.
        preferred: bool,
    },
    /// A peer is gone.
    PeerGone {
        /// The peer's node key.
        key: Key,
        /// Why it is gone (older servers omit the byte: parsed as `Disconnected`).
        reason: PeerGoneReason,
    },
    /// A peer is present (mesh watchers only).
    PeerPresent {
        /// The peer's node key.
        key: Key,
        /// IPv6 (or v4-mapped) address and port of the peer, when sent.
        endpoint: Option<([u8; 16], u16)>,
        /// Flag bits, when sent. Encoding with flags but no endpoint writes a zero endpoint.
        flags: Option<u8>,
    },
    /// Mesh forwarding of a packet.
    ForwardPacket {
        /// Original source key.
        src: Key,
        /// Destination key.
        dst: Key,
        /// The packet.
        packet: Bytes,
    },
    /// Mesh subscription to connection changes.
    WatchConns,
    /// Mesh request to disconnect a client.
    ClosePeer {
        /// The client to disconnect.
        key: Key,
    },
    /// Ping with 8 bytes of data.
    Ping {
        /// Data to echo.
        data: [u8; 8],
    },
    /// Reply to a Ping.
    Pong {
        /// The Ping's data.
        data: [u8; 8],
    },
    /// Health problem text; empty when healthy again.
    Health {
        /// UTF-8 text (not validated).
        problem: Bytes,
    },
    /// Server is restarting.
    Restarting {
        /// Milliseconds until the client should reconnect.
        reconnect_in_ms: u32,
        /// Milliseconds the client should keep trying.
        try_for_ms: u32,
    },
}

fn need(frame_type: FrameType, body: &[u8], min: usize) -> Result<(), DerpError> {
    if body.len() < min {
        return Err(DerpError::FrameTooShort { frame_type, len: body.len(), min });
    }
    Ok(())
}

/// Copy `N` bytes at `at`; callers have checked the length with [`need`].
fn array<const N: usize>(body: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&body[at..at + N]);
    out
}

impl Message {
    /// The frame type this message is sent as.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::ServerKey { .. } => FrameType::ServerKey,
            Self::ClientInfo { .. } => FrameType::ClientInfo,
            Self::ServerInfo { .. } => FrameType::ServerInfo,
            Self::SendPacket { .. } => FrameType::SendPacket,
            Self::RecvPacket { .. } => FrameType::RecvPacket,
            Self::KeepAlive => FrameType::KeepAlive,
            Self::NotePreferred { .. } => FrameType::NotePreferred,
            Self::PeerGone { .. } => FrameType::PeerGone,
            Self::PeerPresent { .. } => FrameType::PeerPresent,
            Self::ForwardPacket { .. } => FrameType::ForwardPacket,
            Self::WatchConns => FrameType::WatchConns,
            Self::ClosePeer { .. } => FrameType::ClosePeer,
            Self::Ping { .. } => FrameType::Ping,
            Self::Pong { .. } => FrameType::Pong,
            Self::Health { .. } => FrameType::Health,
            Self::Restarting { .. } => FrameType::Restarting,
        }
    }

    /// Parse the body of a frame of type `frame_type`.
    pub fn parse(frame_type: FrameType, body: Bytes) -> Result<Self, DerpError> {
        let b = &body[..];
        Ok(match frame_type {
            FrameType::ServerKey => {
                need(frame_type, b, MAGIC.len() + KEY_LEN)?;
                if b[..MAGIC.len()] != MAGIC {
                    return Err(DerpError::BadMagic);
                }
                Self::ServerKey { key: array(b, MAGIC.len()) }
            }
            FrameType::ClientInfo => {
                need(frame_type, b, KEY_LEN + NONCE_LEN)?;
                Self::ClientInfo {
                    key: array(b, 0),
                    nonce: array(b, KEY_LEN),
                    sealed: body.slice(KEY_LEN + NONCE_LEN..),
                }
            }
            FrameType::ServerInfo => {
                need(frame_type, b, NONCE_LEN)?;
                Self::ServerInfo { nonce: array(b, 0), sealed: body.slice(NONCE_LEN..) }
            }
            FrameType::SendPacket => {
                need(frame_type, b, KEY_LEN)?;
                Self::SendPacket { dst: array(b, 0), packet: body.slice(KEY_LEN..) }
            }
            FrameType::RecvPacket => {
                need(frame_type, b, KEY_LEN)?;
                Self::RecvPacket { src: array(b, 0), packet: body.slice(KEY_LEN..) }
            }
            FrameType::KeepAlive => Self::KeepAlive,
            FrameType::NotePreferred => {
                need(frame_type, b, 1)?;
                Self::NotePreferred { preferred: b[0] != 0 }
            }
            FrameType::PeerGone => {
                need(frame_type, b, KEY_LEN)?;
                let reason = b.get(KEY_LEN).copied().map_or(PeerGoneReason::Disconnected, PeerGoneReason::from);
                Self::PeerGone { key: array(b, 0), reason }
            }
            FrameType::PeerPresent => {
                need(frame_type, b, KEY_LEN)?;
                let endpoint = (b.len() >= KEY_LEN + 18).then(|| {
                    let ip = array::<16>(b, KEY_LEN);
                    let port = u16::from_be_bytes(array(b, KEY_LEN + 16));
                    (ip, port)
                });
                let flags = b.get(KEY_LEN + 18).copied();
                Self::PeerPresent { key: array(b, 0), endpoint, flags }
            }
            FrameType::ForwardPacket => {
                need(frame_type, b, 2 * KEY_LEN)?;
                Self::ForwardPacket { src: array(b, 0), dst: array(b, KEY_LEN), packet: body.slice(2 * KEY_LEN..) }
            }
            FrameType::WatchConns => Self::WatchConns,
            FrameType::ClosePeer => {
                need(frame_type, b, KEY_LEN)?;
                Self::ClosePeer { key: array(b, 0) }
            }
            FrameType::Ping => {
                need(frame_type, b, 8)?;
                Self::Ping { data: array(b, 0) }
            }
            FrameType::Pong => {
                need(frame_type, b, 8)?;
                Self::Pong { data: array(b, 0) }
            }
            FrameType::Health => Self::Health { problem: body },
            FrameType::Restarting => {
                need(frame_type, b, 8)?;
                Self::Restarting {
                    reconnect_in_ms: u32::from_be_bytes(array(b, 0)),
                    try_for_ms: u32::from_be_bytes(array(b, 4)),
                }
            }
            FrameType::Unknown(type_byte) => return Err(DerpError::UnknownFrameType { type_byte }),
        })
    }

    /// Length of the encoded body (without the 5-byte header).
    pub fn body_len(&self) -> usize {
        match self {
            Self::ServerKey { .. } => MAGIC.len() + KEY_LEN,
            Self::ClientInfo { sealed, .. } => KEY_LEN + NONCE_LEN + sealed.len(),
            Self::ServerInfo { sealed, .. } => NONCE_LEN + sealed.len(),
            Self::SendPacket { packet, .. } | Self::RecvPacket { packet, .. } => KEY_LEN + packet.len(),
            Self::KeepAlive | Self::WatchConns => 0,
            Self::NotePreferred { .. } => 1,
            Self::PeerGone { .. } => KEY_LEN + 1,
            Self::PeerPresent { endpoint, flags, .. } => match (endpoint, flags) {
                (_, Some(_)) => KEY_LEN + 19,
                (Some(_), None) => KEY_LEN + 18,
                (None, None) => KEY_LEN,
            },
            Self::ForwardPacket { packet, .. } => 2 * KEY_LEN + packet.len(),
            Self::ClosePeer { .. } => KEY_LEN,
            Self::Ping { .. } | Self::Pong { .. } | Self::Restarting { .. } => 8,
            Self::Health { problem } => problem.len(),
        }
    }

    /// Append the whole frame (header and body) to `out`.
    ///
    /// Fails with [`DerpError::FrameTooLarge`] if the body exceeds the limit for its type, i.e.
    /// if [`crate::frame::FrameDecoder`] would reject it.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), DerpError> {
        let frame_type = self.frame_type();
        let body_len = self.body_len();
        let limit = frame_type.max_body_len();
        let len = match u32::try_from(body_len) {
            Ok(len) if len <= limit => len,
            _ => {
                return Err(DerpError::FrameTooLarge { frame_type, len: body_len as u64, limit });
            }
        };
        out.reserve(HEADER_LEN + body_len);
        out.put_u8(frame_type.as_u8());
        out.put_u32(len);
        match self {
            Self::ServerKey { key } => {
                out.put_slice(&MAGIC);
                out.put_slice(key);
            }
            Self::ClientInfo { key, nonce, sealed } => {
                out.put_slice(key);
                out.put_slice(nonce);
                out.put_slice(sealed);
            }
            Self::ServerInfo { nonce, sealed } => {
                out.put_slice(nonce);
                out.put_slice(sealed);
            }
            Self::SendPacket { dst: key, packet } | Self::RecvPacket { src: key, packet } => {
                out.put_slice(key);
                out.put_slice(packet);
            }
            Self::KeepAlive | Self::WatchConns => {}
            Self::NotePreferred { preferred } => out.put_u8(u8::from(*preferred)),
            Self::PeerGone { key, reason } => {
                out.put_slice(key);
                out.put_u8(u8::from(*reason));
            }
            Self::PeerPresent { key, endpoint, flags } => {
                out.put_slice(key);
                if endpoint.is_some() || flags.is_some() {
                    let (ip, port) = endpoint.unwrap_or(([0; 16], 0));
                    out.put_slice(&ip);
                    out.put_u16(port);
                }
                if let Some(flags) = flags {
                    out.put_u8(*flags);
                }
            }
            Self::ForwardPacket { src, dst, packet } => {
                out.put_slice(src);
                out.put_slice(dst);
                out.put_slice(packet);
            }
            Self::ClosePeer { key } => out.put_slice(key),
            Self::Ping { data } | Self::Pong { data } => out.put_slice(data),
            Self::Health { problem } => out.put_slice(problem),
            Self::Restarting { reconnect_in_ms, try_for_ms } => {
                out.put_u32(*reconnect_in_ms);
                out.put_u32(*try_for_ms);
            }
        }
        Ok(())
    }

    /// Encode the whole frame into a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, DerpError> {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.body_len());
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameDecoder, MAX_PACKET_SIZE};

    const K1: Key = [0x11; 32];
    const K2: Key = [0x22; 32];

    fn hdr(t: u8, len: u32) -> Vec<u8> {
        let mut v = vec![t];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// Each message next to the exact bytes it must encode to, built by hand.
    fn golden() -> Vec<(Message, Vec<u8>)> {
        vec![
            (Message::ServerKey { key: K1 }, cat(&[&hdr(0x01, 40), b"DERP\xF0\x9F\x94\x91", &K1])),
            (
                Message::ClientInfo { key: K1, nonce: [3; 24], sealed: Bytes::from_static(b"box") },
                cat(&[&hdr(0x02, 59), &K1, &[3; 24], b"box"]),
            ),
            (
                Message::ServerInfo { nonce: [4; 24], sealed: Bytes::from_static(b"sealed") },
                cat(&[&hdr(0x03, 30), &[4; 24], b"sealed"]),
            ),
            (
                Message::SendPacket { dst: K2, packet: Bytes::from_static(b"hello") },
                cat(&[&hdr(0x04, 37), &K2, b"hello"]),
            ),
            (Message::RecvPacket { src: K1, packet: Bytes::from_static(b"hi") }, cat(&[&hdr(0x05, 34), &K1, b"hi"])),
            (Message::KeepAlive, hdr(0x06, 0)),
            (Message::NotePreferred { preferred: true }, cat(&[&hdr(0x07, 1), &[1]])),
            (Message::NotePreferred { preferred: false }, cat(&[&hdr(0x07, 1), &[0]])),
            (Message::PeerGone { key: K2, reason: PeerGoneReason::Disconnected }, cat(&[&hdr(0x08, 33), &K2, &[0]])),
            (Message::PeerGone { key: K2, reason: PeerGoneReason::NotHere }, cat(&[&hdr(0x08, 33), &K2, &[1]])),
            (
                Message::PeerPresent { key: K1, endpoint: Some(([9; 16], 0x1234)), flags: Some(0x01) },
                cat(&[&hdr(0x09, 51), &K1, &[9; 16], &[0x12, 0x34], &[0x01]]),
            ),
            (
                Message::ForwardPacket { src: K1, dst: K2, packet: Bytes::from_static(b"x") },
                cat(&[&hdr(0x0a, 65), &K1, &K2, b"x"]),
            ),
            (Message::WatchConns, hdr(0x10, 0)),
            (Message::ClosePeer { key: K1 }, cat(&[&hdr(0x11, 32), &K1])),
            (Message::Ping { data: *b"pingdata" }, cat(&[&hdr(0x12, 8), b"pingdata"])),
            (Message::Pong { data: *b"pongdata" }, cat(&[&hdr(0x13, 8), b"pongdata"])),
            (Message::Health { problem: Bytes::from_static(b"bad") }, cat(&[&hdr(0x14, 3), b"bad"])),
            (
                Message::Restarting { reconnect_in_ms: 1000, try_for_ms: 0x0102_0304 },
                cat(&[&hdr(0x15, 8), &[0, 0, 0x03, 0xe8], &[1, 2, 3, 4]]),
            ),
        ]
    }

    #[test]
    fn every_message_encodes_to_its_golden_bytes_and_decodes_back() {
        for (msg, wire) in golden() {
            let encoded = msg.to_bytes().unwrap();
            assert_eq!(&encoded[..], &wire[..], "encoding of {msg:?}");
            let mut buf = BytesMut::from(&wire[..]);
            let frame = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
            assert_eq!(frame.parse().unwrap(), msg);
        }
    }

    #[test]
    fn ping_uses_the_first_eight_bytes_and_rejects_fewer() {
        let msg = Message::parse(FrameType::Ping, Bytes::from_static(b"0123456789abcdef")).unwrap();
        assert_eq!(msg, Message::Ping { data: *b"01234567" });
        let err = Message::parse(FrameType::Ping, Bytes::from_static(b"0123456")).unwrap_err();
        assert!(matches!(err, DerpError::FrameTooShort { len: 7, min: 8, .. }), "{err:?}");
    }

    #[test]
    fn short_bodies_are_errors_not_panics() {
        let cases: &[(FrameType, usize)] = &[
            (FrameType::ServerKey, 40),
            (FrameType::ClientInfo, 56),
            (FrameType::ServerInfo, 24),
            (FrameType::SendPacket, 32),
            (FrameType::RecvPacket, 32),
            (FrameType::NotePreferred, 1),
            (FrameType::PeerGone, 32),
            (FrameType::PeerPresent, 32),
            (FrameType::ForwardPacket, 64),
            (FrameType::ClosePeer, 32),
            (FrameType::Ping, 8),
            (FrameType::Pong, 8),
            (FrameType::Restarting, 8),
        ];
        for &(t, min) in cases {
            let err = Message::parse(t, Bytes::from(vec![0u8; min - 1])).unwrap_err();
            assert!(matches!(err, DerpError::FrameTooShort { min: m, .. } if m == min), "{t}: {err:?}");
        }
    }

    #[test]
    fn server_key_requires_magic_and_allows_trailing_bytes() {
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&K1);
        body.extend_from_slice(b"extra");
        assert_eq!(
            Message::parse(FrameType::ServerKey, Bytes::from(body.clone())).unwrap(),
            Message::ServerKey { key: K1 }
        );
        body[0] = b'X';
        assert!(matches!(Message::parse(FrameType::ServerKey, Bytes::from(body)), Err(DerpError::BadMagic)));
    }

    #[test]
    fn send_packet_splits_key_and_payload() {
        let mut body = K2.to_vec();
        body.extend_from_slice(b"payload");
        match Message::parse(FrameType::SendPacket, Bytes::from(body)).unwrap() {
            Message::SendPacket { dst, packet } => {
                assert_eq!(dst, K2);
                assert_eq!(&packet[..], b"payload");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_info_splits_key_nonce_and_box() {
        let body = cat(&[&K1, &[5; 24], b"the box"]);
        assert_eq!(
            Message::parse(FrameType::ClientInfo, Bytes::from(body)).unwrap(),
            Message::ClientInfo { key: K1, nonce: [5; 24], sealed: Bytes::from_static(b"the box") }
        );
    }

    #[test]
    fn note_preferred_any_nonzero_is_true() {
        let m = Message::parse(FrameType::NotePreferred, Bytes::from_static(&[7])).unwrap();
        assert_eq!(m, Message::NotePreferred { preferred: true });
    }

    #[test]
    fn old_server_short_forms_parse() {
        let m = Message::parse(FrameType::PeerGone, Bytes::from(K1.to_vec())).unwrap();
        assert_eq!(m, Message::PeerGone { key: K1, reason: PeerGoneReason::Disconnected });
        let m = Message::parse(FrameType::PeerPresent, Bytes::from(K1.to_vec())).unwrap();
        assert_eq!(m, Message::PeerPresent { key: K1, endpoint: None, flags: None });
        let m = Message::parse(FrameType::PeerPresent, Bytes::from(cat(&[&K1, &[1; 16], &[0, 80]]))).unwrap();
        assert_eq!(m, Message::PeerPresent { key: K1, endpoint: Some(([1; 16], 80)), flags: None });
    }

    #[test]
    fn peer_gone_reason_bytes() {
        for b in 0..=255u8 {
            assert_eq!(u8::from(PeerGoneReason::from(b)), b);
        }
        assert_eq!(PeerGoneReason::from(0), PeerGoneReason::Disconnected);
        assert_eq!(PeerGoneReason::from(1), PeerGoneReason::NotHere);
    }

    #[test]
    fn unknown_type_is_not_parsed() {
        assert!(matches!(
            Message::parse(FrameType::Unknown(0x33), Bytes::new()),
            Err(DerpError::UnknownFrameType { type_byte: 0x33 })
        ));
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would_reject() {
        let ok = Message::RecvPacket { src: K1, packet: Bytes::from(vec![0; MAX_PACKET_SIZE]) };
        assert!(ok.to_bytes().is_ok());
        let too_big = Message::RecvPacket { src: K1, packet: Bytes::from(vec![0; MAX_PACKET_SIZE + 1]) };
        assert!(matches!(too_big.to_bytes(), Err(DerpError::FrameTooLarge { .. })));
    }
}
