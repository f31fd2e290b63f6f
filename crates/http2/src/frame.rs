//! HTTP/2 frame layout (RFC 9113 §4 and §6): the 9-byte header, frame types, flags, error codes and settings.

/// Bytes in a frame header: 24-bit length, type, flags, 31-bit stream id.
pub const HEADER_LEN: usize = 9;

/// Largest frame payload we accept and send. Every peer must accept 16,384 bytes (the protocol's minimum
/// `SETTINGS_MAX_FRAME_SIZE`); we never advertise more, so larger frames from a client are an error.
pub const MAX_FRAME_PAYLOAD: usize = 16_384;

/// Largest flow-control window the protocol allows (2^31 - 1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Window sizes before any SETTINGS say otherwise.
pub const DEFAULT_WINDOW: i64 = 65_535;

/// Frame types this server understands; others are ignored, as the protocol requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    Unknown(u8),
}

impl Kind {
    fn from_byte(b: u8) -> Kind {
        match b {
            0 => Kind::Data,
            1 => Kind::Headers,
            2 => Kind::Priority,
            3 => Kind::RstStream,
            4 => Kind::Settings,
            5 => Kind::PushPromise,
            6 => Kind::Ping,
            7 => Kind::GoAway,
            8 => Kind::WindowUpdate,
            9 => Kind::Continuation,
            other => Kind::Unknown(other),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Kind::Data => 0,
            Kind::Headers => 1,
            Kind::Priority => 2,
            Kind::RstStream => 3,
            Kind::Settings => 4,
            Kind::PushPromise => 5,
            Kind::Ping => 6,
            Kind::GoAway => 7,
            Kind::WindowUpdate => 8,
            Kind::Continuation => 9,
            Kind::Unknown(b) => b,
        }
    }
}

/// Frame flags (their meaning depends on the frame type).
pub mod flags {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes carried by RST_STREAM and GOAWAY (RFC 9113 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Graceful end; also sent with RST_STREAM to stop a client sending a body the response no longer needs.
    NoError = 0x0,
    /// The peer broke the protocol.
    Protocol = 0x1,
    /// Something failed on our side.
    Internal = 0x2,
    /// The peer overran a flow-control window.
    FlowControl = 0x3,
    /// A frame arrived for a stream that was already closed.
    StreamClosed = 0x5,
    /// A frame had an invalid length.
    FrameSize = 0x6,
    /// The stream was not processed (too many streams at once).
    RefusedStream = 0x7,
    /// The header block could not be decoded.
    Compression = 0x9,
    /// The peer sent more than we are willing to hold.
    EnhanceYourCalm = 0xb,
}

/// A frame header, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: usize,
    pub kind: Kind,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: Kind::from_byte(b[3]),
            flags: b[4],
            // The top bit is reserved and must be ignored on receipt.
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Appends a frame header to `out`. `len` must fit in 24 bits (callers never exceed [`MAX_FRAME_PAYLOAD`]).
pub fn put_header(out: &mut Vec<u8>, len: usize, kind: Kind, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind.byte(), flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

pub fn put_rst_stream(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    put_header(out, 4, Kind::RstStream, 0, stream);
    out.extend_from_slice(&(code as u32).to_be_bytes());
}

pub fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    put_header(out, 4, Kind::WindowUpdate, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

pub fn put_goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode, debug: &str) {
    put_header(out, 8 + debug.len(), Kind::GoAway, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&(code as u32).to_be_bytes());
    out.extend_from_slice(debug.as_bytes());
}

/// SETTINGS identifiers (RFC 9113 §6.5.2) this server reads or sends.
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

pub fn put_settings(out: &mut Vec<u8>, settings: &[(u16, u32)]) {
    put_header(out, settings.len() * 6, Kind::Settings, 0, 0);
    for (id, value) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_ignores_the_reserved_bit() {
        let mut out = Vec::new();
        put_header(&mut out, 0x01_02_03, Kind::Headers, flags::END_HEADERS | flags::END_STREAM, 0x7fff_fffe);
        let mut raw: [u8; HEADER_LEN] = out.try_into().unwrap();
        assert_eq!(raw, [1, 2, 3, 1, 5, 0x7f, 0xff, 0xff, 0xfe]);
        raw[5] |= 0x80;
        let parsed = FrameHeader::parse(&raw);
        assert_eq!(parsed, FrameHeader { len: 0x01_02_03, kind: Kind::Headers, flags: 5, stream: 0x7fff_fffe });
        assert!(parsed.has(flags::END_HEADERS) && !parsed.has(flags::PADDED));
    }

    #[test]
    fn unknown_kinds_keep_their_byte() {
        let raw = [0, 0, 0, 0xee, 0, 0, 0, 0, 1];
        assert_eq!(FrameHeader::parse(&raw).kind, Kind::Unknown(0xee));
        assert_eq!(Kind::Unknown(0xee).byte(), 0xee);
        for b in 0..=9u8 {
            assert_eq!(Kind::from_byte(b).byte(), b);
        }
    }

    #[test]
    fn control_frames_have_their_fixed_layouts() {
        let mut out = Vec::new();
        put_rst_stream(&mut out, 3, ErrorCode::RefusedStream);
        assert_eq!(out, [0, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 7]);
        out.clear();
        put_window_update(&mut out, 0, 70_000);
        assert_eq!(out, [0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        out.clear();
        put_goaway(&mut out, 5, ErrorCode::Protocol, "x");
        assert_eq!(out, [0, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, b'x']);
        out.clear();
        put_settings(&mut out, &[(setting::MAX_CONCURRENT_STREAMS, 64)]);
        assert_eq!(out, [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 64]);
    }
}
