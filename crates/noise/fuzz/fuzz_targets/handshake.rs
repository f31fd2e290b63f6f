//! Feeds arbitrary bytes to everything a client controls before and after the Noise handshake: the initiation
//! message (raw and as the base64 header), the transport record decoder, and the JSON request decoders.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use tailwarden_noise::{Initiation, RecordCodec, accept};
use tailwarden_wire::{MapRequest, RegisterRequest, from_go_json};

static SERVER: LazyLock<ts_keys::X25519KeyPair> = LazyLock::new(ts_keys::X25519KeyPair::random);

fuzz_target!(|data: &[u8]| {
    if let Ok(init) = Initiation::parse(data) {
        if let Ok(accepted) = accept(&init, &SERVER) {
            let mut codec: RecordCodec = accepted.codec;
            let mut buf = BytesMut::from(data);
            while let Ok(Some(_)) = codec.open(&mut buf) {}
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Initiation::from_header(text);
    }
    let _ = from_go_json::<RegisterRequest>("RegisterRequest", data);
    let _ = from_go_json::<MapRequest>("MapRequest", data);
});
