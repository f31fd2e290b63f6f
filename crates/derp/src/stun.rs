//! STUN (RFC 5389) Binding Requests and responses: a pure parser and encoder, plus the UDP loop.
//!
//! Only the Binding subset Tailscale uses. Requests are accepted with or without the SOFTWARE and
//! FINGERPRINT attributes (Tailscale clients send both; other tools often send neither); a
//! FINGERPRINT that is present must be the last attribute and must be correct. The response
//! carries a single XOR-MAPPED-ADDRESS and nothing else, IPv4 addresses unmapped from
//! v4-mapped IPv6.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// The STUN magic cookie.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// The 12-byte transaction ID of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

/// Why a datagram is not an acceptable Binding Request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Shorter than the 20-byte header.
    #[error("STUN message of {len} bytes is shorter than the 20-byte header")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// Not a Binding Request (or not STUN at all: the top two bits are set).
    #[error("STUN message type {message_type:#06x} is not a Binding Request")]
    NotBindingRequest {
        /// The message type field.
        message_type: u16,
    },
    /// The magic cookie is wrong (an RFC 3489 client or not STUN).
    #[error("STUN magic cookie {cookie:#010x} is wrong")]
    BadMagicCookie {
        /// The cookie field.
        cookie: u32,
    },
    /// The header's length field disagrees with the datagram or is not a multiple of 4.
    #[error("STUN length field {declared} does not match the {actual} bytes after the header")]
    LengthMismatch {
        /// The header's length field.
        declared: u16,
        /// Bytes actually after the header.
        actual: usize,
    },
    /// An attribute runs past the end of the message.
    #[error("STUN attribute at offset {offset} runs past the end of the message")]
    AttributeOverrun {
        /// Offset of the attribute header.
        offset: usize,
    },
    /// FINGERPRINT is malformed or not the last attribute.
    #[error("STUN FINGERPRINT is malformed or not the last attribute")]
    BadFingerprint,
    /// FINGERPRINT does not match the message.
    #[error("STUN FINGERPRINT {actual:#010x} does not match the expected {expected:#010x}")]
    FingerprintMismatch {
        /// Value computed over the message.
        expected: u32,
        /// Value in the attribute.
        actual: u32,
    },
}

/// Check that `packet` is a well-formed Binding Request and return its transaction ID.
pub fn parse_binding_request(packet: &[u8]) -> Result<TransactionId, StunError> {
    let Some(header) = packet.get(..HEADER_LEN) else {
        return Err(StunError::TooShort { len: packet.len() });
    };
    let message_type = u16::from_be_bytes([header[0], header[1]]);
    if message_type != BINDING_REQUEST {
        return Err(StunError::NotBindingRequest { message_type });
    }
    let declared = u16::from_be_bytes([header[2], header[3]]);
    let actual = packet.len() - HEADER_LEN;
    if usize::from(declared) != actual || declared % 4 != 0 {
        return Err(StunError::LengthMismatch { declared, actual });
    }
    if header[4..8] != MAGIC_COOKIE {
        let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        return Err(StunError::BadMagicCookie { cookie });
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&header[8..HEADER_LEN]);

    let mut offset = HEADER_LEN;
    while offset < packet.len() {
        let Some(attr) = packet.get(offset..offset + 4) else {
            return Err(StunError::AttributeOverrun { offset });
        };
        let attr_type = u16::from_be_bytes([attr[0], attr[1]]);
        let attr_len = usize::from(u16::from_be_bytes([attr[2], attr[3]]));
        let value_start = offset + 4;
        let padded = attr_len.div_ceil(4) * 4;
        let Some(value) = packet.get(value_start..value_start + attr_len) else {
            return Err(StunError::AttributeOverrun { offset });
        };
        let next = value_start + padded;
        if next > packet.len() {
            return Err(StunError::AttributeOverrun { offset });
        }
        if attr_type == ATTR_FINGERPRINT {
            if attr_len != 4 || next != packet.len() {
                return Err(StunError::BadFingerprint);
            }
            let actual = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
            let expected = crc32fast::hash(&packet[..offset]) ^ FINGERPRINT_XOR;
            if actual != expected {
                return Err(StunError::FingerprintMismatch { expected, actual });
            }
        }
        offset = next;
    }
    Ok(TransactionId(txid))
}

/// A Binding Success response for `txid` telling the client it was seen at `addr`.
///
/// 32 bytes for an IPv4 address (including v4-mapped IPv6), 44 for IPv6.
pub fn binding_response(txid: TransactionId, addr: SocketAddr) -> Vec<u8> {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let (family, addr_bytes): (u8, Vec<u8>) = match ip {
        IpAddr::V4(v4) => (0x01, v4.octets().iter().zip(MAGIC_COOKIE).map(|(a, k)| a ^ k).collect()),
        IpAddr::V6(v6) => {
            let key = MAGIC_COOKIE.iter().chain(txid.0.iter());
            (0x02, v6.octets().iter().zip(key).map(|(a, k)| a ^ k).collect())
        }
    };
    let value_len = 4 + addr_bytes.len();
    let port = addr.port() ^ 0x2112;

    let mut out = Vec::with_capacity(HEADER_LEN + 4 + value_len);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    // 4 + 8 or 4 + 20: always fits a u16.
    out.extend_from_slice(&((4 + value_len) as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(&txid.0);
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.push(0);
    out.push(family);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&addr_bytes);
    out
}

/// Answer Binding Requests on `socket` forever. Anything else is ignored; receive and send
/// errors are logged and the loop goes on. Drop or abort the future to stop it.
pub async fn serve_stun(socket: UdpSocket) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(error) => {
                tracing::debug!(%error, "STUN receive failed");
                // Back off a little so a persistent error cannot spin the loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(packet) = buf.get(..n) else { continue };
        match parse_binding_request(packet) {
            Ok(txid) => {
                let response = binding_response(txid, src);
                if let Err(error) = socket.send_to(&response, src).await {
                    tracing::debug!(%error, %src, "STUN send failed");
                }
            }
            Err(error) => tracing::trace!(%error, %src, "ignoring non-Binding STUN datagram"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const TXID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    /// A Tailscale-style request built by hand: header, SOFTWARE "tailnode", FINGERPRINT.
    fn tailscale_request() -> Vec<u8> {
        let mut p = vec![0x00, 0x01, 0x00, 0x14, 0x21, 0x12, 0xA4, 0x42];
        p.extend_from_slice(&TXID);
        p.extend_from_slice(&[0x80, 0x22, 0x00, 0x08]);
        p.extend_from_slice(b"tailnode");
        let crc = crc32fast::hash(&p) ^ 0x5354_554E;
        p.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
        p.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(p.len(), 40);
        p
    }

    #[test]
    fn parses_tailscale_request() {
        assert_eq!(parse_binding_request(&tailscale_request()), Ok(TransactionId(TXID)));
    }

    #[test]
    fn parses_bare_request() {
        let mut p = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        p.extend_from_slice(&TXID);
        assert_eq!(parse_binding_request(&p), Ok(TransactionId(TXID)));
    }

    #[test]
    fn parses_request_with_odd_length_software_padded() {
        let mut p = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xA4, 0x42];
        p.extend_from_slice(&TXID);
        p.extend_from_slice(&[0x80, 0x22, 0x00, 0x05]);
        p.extend_from_slice(b"hello\0\0\0");
        assert_eq!(parse_binding_request(&p), Ok(TransactionId(TXID)));
    }

    #[test]
    fn rejects_bad_fingerprint() {
        let mut p = tailscale_request();
        p[39] ^= 0xff;
        assert!(matches!(parse_binding_request(&p), Err(StunError::FingerprintMismatch { .. })));
        // Tampering with the body also breaks the fingerprint.
        let mut p = tailscale_request();
        p[24] = b'X';
        assert!(matches!(parse_binding_request(&p), Err(StunError::FingerprintMismatch { .. })));
    }

    #[test]
    fn rejects_malformed() {
        let good = tailscale_request();
        assert_eq!(parse_binding_request(&good[..19]), Err(StunError::TooShort { len: 19 }));
        let mut p = good.clone();
        p[1] = 0x11;
        assert_eq!(parse_binding_request(&p), Err(StunError::NotBindingRequest { message_type: 0x0011 }));
        let mut p = good.clone();
        p[4] = 0;
        assert!(matches!(parse_binding_request(&p), Err(StunError::BadMagicCookie { .. })));
        assert!(matches!(parse_binding_request(&good[..36]), Err(StunError::LengthMismatch { .. })));
        // Attribute length pointing past the end.
        let mut p = good.clone();
        p[22..24].copy_from_slice(&[0x00, 0x40]);
        assert!(matches!(parse_binding_request(&p), Err(StunError::AttributeOverrun { offset: 20 })));
        // FINGERPRINT not last.
        let mut p = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xA4, 0x42];
        p.extend_from_slice(&TXID);
        p.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b'a', b'b', b'c', b'd']);
        assert_eq!(parse_binding_request(&p), Err(StunError::BadFingerprint));
    }

    #[test]
    fn ipv4_response_bytes() {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 32853);
        let got = binding_response(TransactionId(TXID), addr);
        // Expected bytes worked out by hand:
        // port 32853 = 0x8055; 0x8055 ^ 0x2112 = 0xA147
        // 192.0.2.1 = c0 00 02 01 XOR 21 12 a4 42 = e1 12 a6 43
        let mut want = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xA4, 0x42];
        want.extend_from_slice(&TXID);
        want.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xA1, 0x47, 0xE1, 0x12, 0xA6, 0x43]);
        assert_eq!(got, want);
        assert_eq!(got.len(), 32);
    }

    #[test]
    fn v4_mapped_source_is_answered_as_ipv4() {
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()), 32853);
        let plain = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 32853);
        assert_eq!(binding_response(TransactionId(TXID), mapped), binding_response(TransactionId(TXID), plain));
    }

    #[test]
    fn ipv6_response_bytes() {
        let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let got = binding_response(TransactionId(TXID), SocketAddr::new(IpAddr::V6(ip), 1));
        // 2001:0db8:0000...0001 XOR 2112a442 0102030405060708090a0b0c:
        // 20^21=01 01^12=13 0d^a4=a9 b8^42=fa | 00^01..00^0b = 01..0b | 01^0c = 0d
        let xored = [0x01, 0x13, 0xa9, 0xfa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x0d];
        let mut want = vec![0x01, 0x01, 0x00, 0x18, 0x21, 0x12, 0xA4, 0x42];
        want.extend_from_slice(&TXID);
        // port 1 ^ 0x2112 = 0x2113
        want.extend_from_slice(&[0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0x21, 0x13]);
        want.extend_from_slice(&xored);
        assert_eq!(got, want);
        assert_eq!(got.len(), 44);
    }

    #[tokio::test]
    async fn serve_stun_answers_and_survives_garbage() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let task = tokio::spawn(serve_stun(server));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"garbage", server_addr).await.unwrap();
        client.send_to(&[], server_addr).await.unwrap();
        client.send_to(&tailscale_request(), server_addr).await.unwrap();
        let mut buf = [0u8; 128];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("STUN reply within 5 s")
            .unwrap();
        let me = client.local_addr().unwrap();
        assert_eq!(&buf[..n], &binding_response(TransactionId(TXID), me)[..]);
        assert!(!task.is_finished());
        task.abort();
    }
}
