//! Reading a map stream as a client: splitting the body into `[u32 LE length][payload]` messages, undoing the
//! per-message zstd, and decoding only what the generator observes of each `MapResponse`.

use crate::BenchError;
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Clients refuse larger messages (Go's testcontrol never sends more than 16 MiB), so a larger prefix means the
/// stream is corrupt, not that a huge message is coming.
const MAX_MESSAGE: usize = 16 << 20;

/// Whether map messages are zstd frames (what Go clients ask for) or raw JSON (what tailscale-rs asks for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Compression {
    /// Raw JSON.
    None,
    /// One zstd frame per message.
    Zstd,
}

impl Compression {
    /// The value of `MapRequest.Compress`.
    pub fn request_value(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => "zstd",
        }
    }
}

/// One decoded message and what it cost on the wire.
#[derive(Debug)]
pub struct Received {
    /// Length prefix plus payload as received (compressed size when zstd).
    pub wire_bytes: u64,
    /// The parts of the message the generator tracks.
    pub message: MapMessage,
}

/// Accumulates body chunks and yields complete messages.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    compression: Compression,
}

impl Deframer {
    /// A deframer for a stream opened with `compression`.
    pub fn new(compression: Compression) -> Deframer {
        Deframer { buf: Vec::new(), compression }
    }

    /// Appends a chunk of the response body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Received>, BenchError> {
        let Some(prefix) = self.buf.first_chunk::<4>() else { return Ok(None) };
        let len = u32::from_le_bytes(*prefix) as usize;
        if len > MAX_MESSAGE {
            return Err(BenchError::MessageTooLarge { len });
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let payload = &self.buf[4..4 + len];
        let json = match self.compression {
            Compression::None => std::borrow::Cow::Borrowed(payload),
            Compression::Zstd => std::borrow::Cow::Owned(decompress(payload)?),
        };
        let message =
            serde_json::from_slice(&json).map_err(|source| BenchError::Json { what: "MapResponse", source })?;
        self.buf.drain(..4 + len);
        Ok(Some(Received { wire_bytes: 4 + len as u64, message }))
    }
}

thread_local! {
    /// One decompression context per thread, reused: a streaming decoder per message (a context and its buffers)
    /// cost the generator more than decoding a small delta, and it decodes one per watcher per change.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Undoes one message's zstd frame. Frames that state their size (ours do) go through the reused context; others
/// through a streaming decoder.
fn decompress(payload: &[u8]) -> Result<Vec<u8>, BenchError> {
    let size = match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(size)) if size <= MAX_MESSAGE as u64 * 64 => size as usize,
        _ => return zstd::stream::decode_all(payload).map_err(BenchError::Zstd),
    };
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new().map_err(BenchError::Zstd)?),
        };
        decompressor.decompress(payload, size).map_err(BenchError::Zstd)
    })
}

/// The generator's projection of Go's `tailcfg.MapResponse`: peer identity, endpoints, disco key and online state,
/// which is what its changes are about. Everything else is skipped unparsed.
#[derive(Debug, Default, Deserialize)]
pub struct MapMessage {
    /// Keep-alive only.
    #[serde(rename = "KeepAlive", default)]
    pub keep_alive: bool,
    /// The self node.
    #[serde(rename = "Node")]
    pub node: Option<PeerNode>,
    /// Complete peer list (when non-empty, or in the first message).
    #[serde(rename = "Peers")]
    pub peers: Option<Vec<PeerNode>>,
    /// Peers added or replaced.
    #[serde(rename = "PeersChanged")]
    pub peers_changed: Option<Vec<PeerNode>>,
    /// Peers removed, by ID.
    #[serde(rename = "PeersRemoved")]
    pub peers_removed: Option<Vec<i64>>,
    /// Light per-peer updates.
    #[serde(rename = "PeersChangedPatch")]
    pub peers_changed_patch: Option<Vec<PeerPatch>>,
    /// Online flags by decimal node ID.
    #[serde(rename = "OnlineChange")]
    pub online_change: Option<BTreeMap<String, bool>>,
}

/// The tracked fields of a `tailcfg.Node`.
#[derive(Debug, Default, Deserialize)]
pub struct PeerNode {
    /// Node ID.
    #[serde(rename = "ID")]
    pub id: i64,
    /// Direct endpoints.
    #[serde(rename = "Endpoints")]
    pub endpoints: Option<Vec<String>>,
    /// Disco key text.
    #[serde(rename = "DiscoKey")]
    pub disco_key: Option<String>,
    /// Online flag; absent means unknown.
    #[serde(rename = "Online")]
    pub online: Option<bool>,
}

/// The tracked fields of a `tailcfg.PeerChange`.
#[derive(Debug, Default, Deserialize)]
pub struct PeerPatch {
    /// The peer.
    #[serde(rename = "NodeID")]
    pub node_id: i64,
    /// Replacement endpoints.
    #[serde(rename = "Endpoints")]
    pub endpoints: Option<Vec<String>>,
    /// Replacement disco key.
    #[serde(rename = "DiscoKey")]
    pub disco_key: Option<String>,
    /// Online flag.
    #[serde(rename = "Online")]
    pub online: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailwarden_wire::framing::{self, encode_message};
    use tailwarden_wire::{MapResponse, PeerChange};

    fn server_frames(compression: framing::Compression) -> Vec<u8> {
        let patch = PeerChange {
            node_id: 7,
            endpoints: Some(vec!["[2001:db8::1]:41641".into()]),
            online: Some(true),
            ..Default::default()
        };
        let delta = MapResponse { peers_changed_patch: vec![patch], peers_removed: vec![3], ..Default::default() };
        let mut out = encode_message(&MapResponse::keep_alive(), compression).unwrap();
        out.extend(encode_message(&delta, compression).unwrap());
        out
    }

    #[test]
    fn reads_what_the_server_encoder_writes_in_any_chunking() {
        for (theirs, ours) in
            [(framing::Compression::None, Compression::None), (framing::Compression::Zstd, Compression::Zstd)]
        {
            let bytes = server_frames(theirs);
            for chunk in [1, 3, 7, bytes.len()] {
                let mut d = Deframer::new(ours);
                let mut got = Vec::new();
                for piece in bytes.chunks(chunk) {
                    d.push(piece);
                    while let Some(m) = d.next_message().unwrap() {
                        got.push(m);
                    }
                }
                assert_eq!(got.len(), 2);
                assert_eq!(got.iter().map(|m| m.wire_bytes).sum::<u64>(), bytes.len() as u64);
                assert!(got[0].message.keep_alive);
                let patch = &got[1].message.peers_changed_patch.as_ref().unwrap()[0];
                assert_eq!((patch.node_id, patch.online), (7, Some(true)));
                assert_eq!(patch.endpoints.as_deref(), Some(&["[2001:db8::1]:41641".to_string()][..]));
                assert_eq!(got[1].message.peers_removed, Some(vec![3]));
            }
        }
    }

    /// Other servers' encoders may leave the content size out of the frame header (a streaming encoder does).
    #[test]
    fn reads_zstd_frames_that_do_not_state_their_size() {
        let json = br#"{"KeepAlive":true,"PeersRemoved":[4,5]}"#;
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        std::io::Write::write_all(&mut encoder, json).unwrap();
        let frame = encoder.finish().unwrap();
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&frame).unwrap(), None, "the frame should not state a size");
        let mut d = Deframer::new(Compression::Zstd);
        d.push(&(frame.len() as u32).to_le_bytes());
        d.push(&frame);
        let m = d.next_message().unwrap().unwrap();
        assert!(m.message.keep_alive);
        assert_eq!(m.message.peers_removed, Some(vec![4, 5]));
    }

    #[test]
    fn a_huge_prefix_is_an_error_not_an_allocation() {
        let mut d = Deframer::new(Compression::None);
        d.push(&u32::MAX.to_le_bytes());
        assert!(matches!(d.next_message(), Err(BenchError::MessageTooLarge { .. })));
    }
}
