//! Properties of the pure parsers: no input makes them panic, chunking does not change what the
//! decoder yields, and every message survives encode → decode.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tailwarden_derp::crypto::ClientInfo;
use tailwarden_derp::frame::{FrameDecoder, Message, PeerGoneReason};
use tailwarden_derp::stun::{TransactionId, binding_response, parse_binding_request};

/// Decode `stream` fed in pieces of the given sizes; returns frames (parsed) and whether an error
/// stopped decoding.
fn decode_chunked(stream: &[u8], cuts: &[usize]) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut dec = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = cuts.next().copied().unwrap_or(rest.len()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    // Parsing any decoded body must not panic either.
                    let _ = f.clone().parse();
                    frames.push((f.frame_type.as_u8(), f.body.to_vec()));
                }
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

/// Byte streams that look like frames often enough to get past the header checks.
fn framish_stream() -> impl Strategy<Value = Vec<u8>> {
    let frame = (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(t, body)| {
        let t = t % 0x18;
        let mut v = vec![t];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&body);
        v
    });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2000),
        proptest::collection::vec(frame, 0..12).prop_map(|fs| fs.concat()),
    ]
}

fn key() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        key().prop_map(|key| Message::ServerKey { key }),
        (key(), any::<[u8; 24]>(), bytes(300)).prop_map(|(key, nonce, sealed)| Message::ClientInfo {
            key,
            nonce,
            sealed
        }),
        (any::<[u8; 24]>(), bytes(300)).prop_map(|(nonce, sealed)| Message::ServerInfo { nonce, sealed }),
        (key(), bytes(2000)).prop_map(|(dst, packet)| Message::SendPacket { dst, packet }),
        (key(), bytes(2000)).prop_map(|(src, packet)| Message::RecvPacket { src, packet }),
        Just(Message::KeepAlive),
        any::<bool>().prop_map(|preferred| Message::NotePreferred { preferred }),
        (key(), any::<u8>()).prop_map(|(key, r)| Message::PeerGone { key, reason: PeerGoneReason::from(r) }),
        (key(), proptest::option::of((any::<[u8; 16]>(), any::<u16>())), any::<u8>(), 0..3u8).prop_map(
            |(key, ep, flags, shape)| match shape {
                0 => Message::PeerPresent { key, endpoint: None, flags: None },
                1 => Message::PeerPresent { key, endpoint: Some(ep.unwrap_or(([0; 16], 0))), flags: None },
                _ => Message::PeerPresent { key, endpoint: Some(ep.unwrap_or(([0; 16], 0))), flags: Some(flags) },
            }
        ),
        (key(), key(), bytes(2000)).prop_map(|(src, dst, packet)| Message::ForwardPacket { src, dst, packet }),
        Just(Message::WatchConns),
        key().prop_map(|key| Message::ClosePeer { key }),
        any::<[u8; 8]>().prop_map(|data| Message::Ping { data }),
        any::<[u8; 8]>().prop_map(|data| Message::Pong { data }),
        bytes(200).prop_map(|problem| Message::Health { problem }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(reconnect_in_ms, try_for_ms)| { Message::Restarting { reconnect_in_ms, try_for_ms } }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoder_never_panics_and_chunking_does_not_matter(
        stream in framish_stream(),
        cuts in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let whole = decode_chunked(&stream, &[stream.len().max(1)]);
        let byte_at_a_time = decode_chunked(&stream, &[1]);
        let chunked = decode_chunked(&stream, &cuts);
        prop_assert_eq!(&whole, &byte_at_a_time);
        prop_assert_eq!(&whole, &chunked);
    }

    #[test]
    fn encode_then_decode_round_trips(msgs in proptest::collection::vec(message(), 1..6), cut in 1usize..50) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire).unwrap();
        }
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(cut) {
            buf.extend_from_slice(chunk);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f.parse().unwrap());
            }
        }
        prop_assert_eq!(got, msgs);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn client_info_json_never_panics(json in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = ClientInfo::from_json(&json);
    }

    #[test]
    fn client_info_json_round_trips(version in proptest::option::of(any::<u32>()), can_ack in any::<bool>(), prober in any::<bool>(), mesh in proptest::option::of("[0-9a-f]{64}")) {
        let info = ClientInfo { version: Some(version.unwrap_or(2)), mesh_key: mesh, can_ack_pings: can_ack, is_prober: prober };
        prop_assert_eq!(ClientInfo::from_json(&info.to_json()).unwrap(), info);
    }

    #[test]
    fn stun_parser_never_panics(packet in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_binding_request(&packet);
    }

    #[test]
    fn stun_requests_with_any_txid_and_software_parse(txid in any::<[u8; 12]>(), software in proptest::collection::vec(any::<u8>(), 0..40), fingerprint in any::<bool>()) {
        let padded = software.len().div_ceil(4) * 4;
        let attrs_len = 4 + padded + if fingerprint { 8 } else { 0 };
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&(attrs_len as u16).to_be_bytes());
        p.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        p.extend_from_slice(&txid);
        p.extend_from_slice(&[0x80, 0x22]);
        p.extend_from_slice(&(software.len() as u16).to_be_bytes());
        p.extend_from_slice(&software);
        p.resize(20 + 4 + padded, 0);
        if fingerprint {
            let crc = crc32fast::hash(&p) ^ 0x5354_554E;
            p.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
            p.extend_from_slice(&crc.to_be_bytes());
        }
        prop_assert_eq!(parse_binding_request(&p), Ok(TransactionId(txid)));
    }

    #[test]
    fn stun_response_sizes_and_txid(txid in any::<[u8; 12]>(), v6 in any::<bool>(), ip in any::<[u8; 16]>(), port in any::<u16>()) {
        let addr: std::net::SocketAddr = if v6 {
            (std::net::Ipv6Addr::from(ip), port).into()
        } else {
            (std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]), port).into()
        };
        let resp = binding_response(TransactionId(txid), addr);
        let is_v4 = match addr.ip() {
            std::net::IpAddr::V4(_) => true,
            std::net::IpAddr::V6(a) => a.to_ipv4_mapped().is_some(),
        };
        prop_assert_eq!(resp.len(), if is_v4 { 32 } else { 44 });
        prop_assert_eq!(&resp[8..20], &txid[..]);
        // Port, un-XORed, is the source port.
        prop_assert_eq!(u16::from_be_bytes([resp[26], resp[27]]) ^ 0x2112, port);
    }
}
