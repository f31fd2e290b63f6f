//! Map-stream framing: `[u32 little-endian length][payload]`, where the payload is the JSON of one
//! `MapResponse`, compressed as one independent zstd frame when the client asked for `zstd`.

use crate::{MapResponse, WireError};

/// How a session wants its messages encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    /// Raw JSON (tailscale-rs).
    None,
    /// One zstd frame per message (Go clients always ask for this).
    Zstd,
}

/// Fastest zstd level, as Tailscale's own servers use: map messages are small and latency matters more.
const ZSTD_LEVEL: i32 = 1;

/// Encodes one message with its length prefix.
pub fn encode_message(msg: &MapResponse, compression: Compression) -> Result<Vec<u8>, WireError> {
    let json = serde_json::to_vec(msg).map_err(|source| WireError::Json { message: "MapResponse", source })?;
    frame_payload(&json, compression)
}

/// Frames an already serialised JSON payload.
pub fn frame_payload(json: &[u8], compression: Compression) -> Result<Vec<u8>, WireError> {
    let payload = match compression {
        Compression::None => json.to_vec(),
        Compression::Zstd => zstd::bulk::compress(json, ZSTD_LEVEL).map_err(WireError::Compress)?,
    };
    let mut out = Vec::with_capacity(payload.len() + 4);
    // Map payloads are far below 4 GiB (clients refuse > 16 MiB), so the cast cannot truncate.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_prefix_and_zstd_frame() {
        let raw = encode_message(&MapResponse::keep_alive(), Compression::None).unwrap();
        let body = br#"{"KeepAlive":true}"#;
        assert_eq!(&raw[..4], &(body.len() as u32).to_le_bytes());
        assert_eq!(&raw[4..], body);

        let z = encode_message(&MapResponse::keep_alive(), Compression::Zstd).unwrap();
        let n = u32::from_le_bytes(z[..4].try_into().unwrap()) as usize;
        assert_eq!(n, z.len() - 4);
        assert_eq!(&z[4..8], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
        assert_eq!(zstd::stream::decode_all(&z[4..]).unwrap(), body);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::{MapRequest, RegisterRequest, from_go_json};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn framing_round_trips(body in proptest::collection::vec(any::<u8>(), 0..20_000), zstd in any::<bool>()) {
            let compression = if zstd { Compression::Zstd } else { Compression::None };
            let framed = frame_payload(&body, compression).unwrap();
            let n = u32::from_le_bytes(framed[..4].try_into().unwrap()) as usize;
            prop_assert_eq!(n, framed.len() - 4);
            let payload = if zstd { zstd::stream::decode_all(&framed[4..]).unwrap() } else { framed[4..].to_vec() };
            prop_assert_eq!(payload, body);
        }

        #[test]
        fn arbitrary_request_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = from_go_json::<RegisterRequest>("RegisterRequest", &body);
            let _ = from_go_json::<MapRequest>("MapRequest", &body);
        }

        #[test]
        fn arbitrary_json_shapes_never_panic(key in "[A-Za-z]{1,12}", n in any::<i64>(), s in ".{0,40}") {
            for body in [
                format!(r#"{{"{key}":{n}}}"#),
                format!(r#"{{"Hostinfo":{{"{key}":"{}"}},"NodeKey":{n}}}"#, s.replace(['"', '\\'], "")),
                format!(r#"{{"Endpoints":[{n}],"Version":{n}}}"#),
            ] {
                let _ = from_go_json::<MapRequest>("MapRequest", body.as_bytes());
                let _ = from_go_json::<RegisterRequest>("RegisterRequest", body.as_bytes());
            }
        }
    }
}
