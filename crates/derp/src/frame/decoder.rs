//! Incremental frame decoder over a growing byte buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::{FrameType, HEADER_LEN, MAX_FRAME_LEN, Message};
use crate::DerpError;

/// One complete frame of a known type: its type and its body (header removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame type (never [`FrameType::Unknown`] when produced by [`FrameDecoder`]).
    pub frame_type: FrameType,
    /// The body, sharing the decoder's buffer allocation.
    pub body: Bytes,
}

impl Frame {
    /// Parse the body into a typed [`Message`].
    pub fn parse(self) -> Result<Message, DerpError> {
        Message::parse(self.frame_type, self.body)
    }
}

/// Turns a byte stream, fed in arbitrary pieces, into whole [`Frame`]s.
///
/// The caller appends received bytes to a [`BytesMut`] and calls [`FrameDecoder::decode`] until it
/// returns `Ok(None)`. Frames of unknown type are consumed and dropped without being buffered
/// whole (a counter records them). A header announcing a body longer than its type's limit is an
/// error before any of that body is buffered; after an error the stream is out of sync and the
/// connection should be closed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Bytes of an unknown frame's body still to discard.
    skip_remaining: usize,
    /// Number of unknown frames skipped so far.
    skipped_frames: u64,
}

impl FrameDecoder {
    /// A decoder at a frame boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many frames of unknown type have been skipped.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped_frames
    }

    /// Take the next complete frame of known type out of `buf`, if there is one.
    ///
    /// Consumed bytes are removed from `buf`; a partial frame stays there and `buf` is given room
    /// for the rest of it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DerpError> {
        loop {
            if self.skip_remaining > 0 {
                let n = self.skip_remaining.min(buf.len());
                buf.advance(n);
                self.skip_remaining -= n;
                if self.skip_remaining > 0 {
                    return Ok(None);
                }
            }
            let Some(header) = buf.get(..HEADER_LEN) else {
                return Ok(None);
            };
            let frame_type = FrameType::from(header[0]);
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let limit = frame_type.max_body_len().min(MAX_FRAME_LEN);
            if len > limit {
                return Err(DerpError::FrameTooLarge { frame_type, len: u64::from(len), limit });
            }
            // `len` is at most MAX_FRAME_LEN (1 MiB), so it fits a usize on every target.
            let len = len as usize;
            if !frame_type.is_known() {
                buf.advance(HEADER_LEN);
                self.skip_remaining = len;
                self.skipped_frames += 1;
                continue;
            }
            let total = HEADER_LEN + len;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                return Ok(None);
            }
            buf.advance(HEADER_LEN);
            let body = buf.split_to(len).freeze();
            return Ok(Some(Frame { frame_type, body }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{MAX_PACKET_SIZE, MAX_SMALL_FRAME_LEN};

    fn raw(t: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![t];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn decode_all(dec: &mut FrameDecoder, buf: &mut BytesMut) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = dec.decode(buf).expect("valid stream") {
            out.push(f);
        }
        out
    }

    #[test]
    fn decodes_a_single_frame() {
        let mut buf = BytesMut::from(&raw(0x12, b"12345678")[..]);
        let mut dec = FrameDecoder::new();
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.frame_type, FrameType::Ping);
        assert_eq!(&f.body[..], b"12345678");
        assert!(buf.is_empty());
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn empty_body_frames() {
        let mut buf = BytesMut::from(&raw(0x06, b"")[..]);
        let f = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.frame_type, FrameType::KeepAlive);
        assert!(f.body.is_empty());
    }

    #[test]
    fn byte_at_a_time_feeding_yields_the_same_frames() {
        let mut stream = raw(0x04, &[7u8; 40]);
        stream.extend(raw(0x77, b"unknown body"));
        stream.extend(raw(0x06, b""));
        stream.extend(raw(0x12, b"abcdefgh"));
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in stream {
            buf.extend_from_slice(&[b]);
            got.extend(decode_all(&mut dec, &mut buf));
        }
        let types: Vec<_> = got.iter().map(|f| f.frame_type).collect();
        assert_eq!(types, [FrameType::SendPacket, FrameType::KeepAlive, FrameType::Ping]);
        assert_eq!(&got[0].body[..], &[7u8; 40][..]);
        assert_eq!(&got[2].body[..], b"abcdefgh");
        assert_eq!(dec.skipped_frames(), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn unknown_types_are_skipped_including_unassigned_gap() {
        let mut stream = raw(0x0b, &[1; 10]);
        stream.extend(raw(0xff, &[2; 3]));
        stream.extend(raw(0x00, b""));
        stream.extend(raw(0x07, &[1]));
        let mut buf = BytesMut::from(&stream[..]);
        let mut dec = FrameDecoder::new();
        let got = decode_all(&mut dec, &mut buf);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].frame_type, FrameType::NotePreferred);
        assert_eq!(dec.skipped_frames(), 3);
    }

    #[test]
    fn large_unknown_frame_is_skipped_without_buffering_it_whole() {
        let body = vec![9u8; 500_000];
        let mut stream = raw(0x42, &body);
        stream.extend(raw(0x13, b"pongpong"));
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(4096) {
            buf.extend_from_slice(chunk);
            got.extend(decode_all(&mut dec, &mut buf));
            assert!(buf.len() <= 4096 + HEADER_LEN, "unknown body must not accumulate");
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].frame_type, FrameType::Pong);
    }

    #[test]
    fn max_size_send_packet_is_accepted() {
        let body = vec![0u8; 32 + MAX_PACKET_SIZE];
        let mut buf = BytesMut::from(&raw(0x04, &body)[..]);
        let f = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.body.len(), 32 + MAX_PACKET_SIZE);
    }

    #[test]
    fn oversize_frames_are_rejected_from_the_header_alone() {
        let cases: &[(u8, u32)] = &[
            (0x04, 32 + 65536 + 1),
            (0x0a, 64 + 65536 + 1),
            (0x02, 256 * 1024 + 1),
            (0x12, 1001),
            (0x06, MAX_SMALL_FRAME_LEN + 1),
            (0x77, MAX_FRAME_LEN + 1),
            (0x14, u32::MAX),
        ];
        for &(t, len) in cases {
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&[t]);
            buf.extend_from_slice(&len.to_be_bytes());
            let err = FrameDecoder::new().decode(&mut buf).unwrap_err();
            match err {
                DerpError::FrameTooLarge { frame_type, len: l, .. } => {
                    assert_eq!(frame_type, FrameType::from(t));
                    assert_eq!(l, u64::from(len));
                }
                other => panic!("unexpected error {other:?}"),
            }
            assert!(buf.capacity() < 1024 * 1024, "no allocation for rejected frame");
        }
    }

    #[test]
    fn partial_frame_reserves_room_for_the_rest() {
        let full = raw(0x04, &[1u8; 1000]);
        let mut buf = BytesMut::from(&full[..10]);
        let mut dec = FrameDecoder::new();
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() >= full.len());
        assert_eq!(buf.len(), 10, "partial frame is left in place");
    }
}
