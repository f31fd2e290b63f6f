//! Transport records: `[0x04][u16 BE ciphertext length][ChaCha20-Poly1305 ciphertext + tag]`.

use crate::NoiseError;
use bytes::{Buf, BufMut, BytesMut};
use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit, Nonce};
use std::ops::Deref;
use ts_noise::core::{Role, Session};

/// Largest record on the wire, header included.
pub const MAX_RECORD: usize = 4096;
const HEADER: usize = 3;
const TAG: usize = 16;
/// Largest plaintext in one record.
pub const MAX_PLAINTEXT: usize = MAX_RECORD - HEADER - TAG;
const MSG_RECORD: u8 = 0x04;

struct Direction {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl Direction {
    fn new(key: &chacha20poly1305::Key) -> Direction {
        Direction { cipher: ChaCha20Poly1305::new(key), counter: 0 }
    }

    /// Tailscale's nonce: four zero bytes, then the counter big-endian (the Noise spec says little-endian).
    fn next_nonce(&mut self) -> Result<Nonce, NoiseError> {
        if self.counter == u64::MAX {
            return Err(NoiseError::NonceExhausted);
        }
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        Ok(n.into())
    }
}

/// Encrypts and decrypts records for one side of a session.
pub struct RecordCodec {
    tx: Direction,
    rx: Direction,
}

impl RecordCodec {
    /// Keys for the server (the handshake responder).
    pub fn responder(session: Session) -> RecordCodec {
        Self::from_session(session)
    }

    /// Keys for whichever role the session was created in (tests drive the initiator side too).
    pub fn from_session(session: Session) -> RecordCodec {
        let (tx, rx) = match session.role {
            Role::Initiator => (&session.initiator_to_responder, &session.responder_to_initiator),
            Role::Responder => (&session.responder_to_initiator, &session.initiator_to_responder),
        };
        RecordCodec { tx: Direction::new(tx), rx: Direction::new(rx) }
    }

    /// Appends `plaintext` to `out` as one or more records.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut BytesMut) -> Result<(), NoiseError> {
        self.seal_parts(&[plaintext], out)
    }

    /// Appends the concatenation of `parts` to `out` as one or more records without building it: each record is
    /// filled before the next starts, so records break where they would for one slice holding all the parts.
    pub fn seal_parts<P: Deref<Target = [u8]>>(&mut self, parts: &[P], out: &mut BytesMut) -> Result<(), NoiseError> {
        let mut parts = parts.iter().map(|p| &**p).filter(|p| !p.is_empty());
        let mut current = parts.next().unwrap_or_default();
        while !current.is_empty() {
            let nonce = self.tx.next_nonce()?;
            let header = out.len();
            out.put_u8(MSG_RECORD);
            out.put_u16(0);
            let start = out.len();
            let mut room = MAX_PLAINTEXT;
            while room > 0 && !current.is_empty() {
                let n = current.len().min(room);
                out.put_slice(&current[..n]);
                current = &current[n..];
                room -= n;
                if current.is_empty() {
                    current = parts.next().unwrap_or_default();
                }
            }
            let len = (out.len() - start + TAG) as u16;
            out[header + 1..start].copy_from_slice(&len.to_be_bytes());
            let tag = self
                .tx
                .cipher
                .encrypt_in_place_detached(&nonce, &[], &mut out[start..])
                .map_err(|_| NoiseError::Decrypt)?;
            out.put_slice(&tag);
        }
        Ok(())
    }

    /// Takes one complete record off the front of `buf` and decrypts it. `Ok(None)` means more bytes are needed.
    /// An empty plaintext is legal and returned as an empty buffer.
    pub fn open(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, NoiseError> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        if buf[0] != MSG_RECORD {
            return Err(NoiseError::UnexpectedType(buf[0]));
        }
        let len = u16::from_be_bytes([buf[1], buf[2]]) as usize;
        if !(TAG..=MAX_RECORD - HEADER).contains(&len) {
            return Err(NoiseError::BadRecordSize { len, max: MAX_RECORD - HEADER });
        }
        if buf.len() < HEADER + len {
            return Ok(None);
        }
        buf.advance(HEADER);
        let mut body = buf.split_to(len);
        let tag = body.split_off(len - TAG);
        let nonce = self.rx.next_nonce()?;
        self.rx
            .cipher
            .decrypt_in_place_detached(&nonce, &[], &mut body, tag.as_ref().into())
            .map_err(|_| NoiseError::Decrypt)?;
        Ok(Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One side of a session with fixed test keys.
    fn session(role: Role) -> Session {
        Session {
            initiator_to_responder: chacha20poly1305::Key::from([7u8; 32]),
            responder_to_initiator: chacha20poly1305::Key::from([9u8; 32]),
            role,
        }
    }

    /// Our server side and our client side.
    fn pair() -> (RecordCodec, RecordCodec) {
        (RecordCodec::from_session(session(Role::Responder)), RecordCodec::from_session(session(Role::Initiator)))
    }

    /// Our server side against Tailscale's own client-side codec from tailscale-rs, which a real client uses.
    fn with_tailscale() -> (RecordCodec, ts_control_noise::BiCodec) {
        (RecordCodec::from_session(session(Role::Responder)), ts_control_noise::BiCodec::from(session(Role::Initiator)))
    }

    #[test]
    fn large_writes_are_split_at_the_record_limit() {
        let (mut server, mut client) = pair();
        let data = vec![0x5a; MAX_PLAINTEXT * 2 + 10];
        let mut wire = BytesMut::new();
        server.seal(&data, &mut wire).unwrap();
        assert_eq!(wire.len(), data.len() + 3 * (HEADER + TAG));
        let mut got = Vec::new();
        while let Some(chunk) = client.open(&mut wire).unwrap() {
            assert!(chunk.len() <= MAX_PLAINTEXT);
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, data);
    }

    #[test]
    fn short_oversize_and_foreign_records_are_errors_not_panics() {
        let (_, mut client) = pair();
        for bad in [&[0x04, 0x00, 0x05, 1, 2, 3, 4, 5][..], &[0x04, 0x10, 0x00], &[0x03, 0x00, 0x01, b'x']] {
            let mut buf = BytesMut::from(bad);
            assert!(client.open(&mut buf).is_err(), "{bad:?}");
        }
        let mut forged = BytesMut::from(&[0x04, 0x00, 0x10][..]);
        forged.extend_from_slice(&[0u8; 16]);
        assert!(matches!(client.open(&mut forged), Err(NoiseError::Decrypt)));
    }

    #[test]
    fn nonce_is_big_endian_like_tailscale() {
        use tokio_util::codec::{Decoder, Encoder};
        let (mut ours, mut theirs) = with_tailscale();
        for i in 0..3u8 {
            let mut wire = BytesMut::new();
            ours.seal(&[i; 100], &mut wire).unwrap();
            let got = theirs.decode(&mut wire).unwrap().unwrap();
            assert_eq!(&got[..], &[i; 100]);
            let mut back = BytesMut::new();
            theirs.encode(vec![i + 10; 50], &mut back).unwrap();
            assert_eq!(&ours.open(&mut back).unwrap().unwrap()[..], &[i + 10; 50]);
        }
    }

    proptest! {
        #[test]
        fn sealed_parts_are_full_records_tailscale_opens_to_their_concatenation(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2 * MAX_PLAINTEXT), 0..5),
        ) {
            use tokio_util::codec::Decoder;
            let (mut ours, mut theirs) = with_tailscale();
            let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let concatenated = parts.concat();
            let mut wire = BytesMut::new();
            ours.seal_parts(&slices, &mut wire).unwrap();
            let mut records = Vec::new();
            while let Some(record) = theirs.decode(&mut wire).unwrap() {
                records.push(record);
            }
            prop_assert!(wire.is_empty());
            prop_assert_eq!(records.len(), concatenated.len().div_ceil(MAX_PLAINTEXT));
            if let Some((_, full)) = records.split_last() {
                prop_assert!(full.iter().all(|r| r.len() == MAX_PLAINTEXT));
            }
            prop_assert_eq!(records.concat(), concatenated);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let (_, mut client) = pair();
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..4 {
                match client.open(&mut buf) {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }
    }
}
