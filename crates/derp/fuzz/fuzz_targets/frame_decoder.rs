//! Fuzz the parsers that see untrusted bytes: the DERP frame decoder (fed in pieces chosen by
//! the input itself) with every decoded body parsed, the ClientInfo JSON parser, and the STUN
//! Binding Request parser. Run with `cargo +nightly fuzz run frame_decoder` in crates/derp/fuzz.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tailwarden_derp::crypto::ClientInfo;
use tailwarden_derp::frame::FrameDecoder;
use tailwarden_derp::stun::{binding_response, parse_binding_request};

fuzz_target!(|data: &[u8]| {
    // First byte picks the chunk size so split headers and bodies get exercised.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);

    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    'feed: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let _ = frame.parse();
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }

    let _ = ClientInfo::from_json(stream);

    if let Ok(txid) = parse_binding_request(stream) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 3478));
        assert_eq!(binding_response(txid, addr).len(), 32);
    }
});
