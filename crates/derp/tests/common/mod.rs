//! A tiny DERP client for tests. It does its own framing and its own NaCl box (straight from
//! `crypto_box`) rather than using the crate's codec, so the server is checked against an
//! independent implementation of the wire format.

#![allow(dead_code)]

use std::io;
use std::time::Duration;

use crypto_box::aead::Aead;
use crypto_box::aead::generic_array::GenericArray;
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const SERVER_KEY: u8 = 0x01;
pub const CLIENT_INFO: u8 = 0x02;
pub const SERVER_INFO: u8 = 0x03;
pub const SEND_PACKET: u8 = 0x04;
pub const RECV_PACKET: u8 = 0x05;
pub const KEEP_ALIVE: u8 = 0x06;
pub const NOTE_PREFERRED: u8 = 0x07;
pub const PEER_GONE: u8 = 0x08;
pub const WATCH_CONNS: u8 = 0x10;
pub const PING: u8 = 0x12;
pub const PONG: u8 = 0x13;

pub const MAGIC: &[u8] = "DERP🔑".as_bytes();

/// How long a test waits for any single frame before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

pub fn secret(seed: u8) -> SecretKey {
    SecretKey::from([seed; 32])
}

pub fn public(seed: u8) -> [u8; 32] {
    secret(seed).public_key().to_bytes()
}

pub async fn write_raw<S: AsyncWrite + Unpin>(io: &mut S, frame_type: u8, body: &[u8]) -> io::Result<()> {
    let mut frame = vec![frame_type];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    io.write_all(&frame).await?;
    io.flush().await
}

pub async fn read_raw<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    io.read_exact(&mut header).await?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    assert!(len <= 1 << 20, "server sent an oversize frame: {len}");
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok((header[0], body))
}

/// Read the ServerKey frame and return the server's key.
pub async fn read_server_key<S: AsyncRead + Unpin>(io: &mut S) -> [u8; 32] {
    let (t, body) = read_raw(io).await.expect("ServerKey frame");
    assert_eq!(t, SERVER_KEY, "server speaks first with ServerKey");
    assert_eq!(body.len(), 40);
    assert_eq!(&body[..8], MAGIC);
    body[8..40].try_into().unwrap()
}

/// Send a ClientInfo frame sealed with `secret` to `server_key`, carrying `json`.
pub async fn send_client_info<S: AsyncWrite + Unpin>(
    io: &mut S,
    secret: &SecretKey,
    server_key: [u8; 32],
    json: &[u8],
) {
    let nonce = [0x42u8; 24];
    let sealed =
        SalsaBox::new(&PublicKey::from(server_key), secret).encrypt(GenericArray::from_slice(&nonce), json).unwrap();
    let mut body = secret.public_key().to_bytes().to_vec();
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&sealed);
    write_raw(io, CLIENT_INFO, &body).await.unwrap();
}

/// Open a ServerInfo body and return its JSON.
pub fn open_server_info(secret: &SecretKey, server_key: [u8; 32], body: &[u8]) -> serde_json::Value {
    assert!(body.len() >= 24 + 16, "ServerInfo too short");
    let plain = SalsaBox::new(&PublicKey::from(server_key), secret)
        .decrypt(GenericArray::from_slice(&body[..24]), &body[24..])
        .expect("ServerInfo box opens with our key");
    serde_json::from_slice(&plain).expect("ServerInfo is JSON")
}

pub struct TestClient<S> {
    pub io: S,
    pub secret: SecretKey,
    pub key: [u8; 32],
    pub server_key: [u8; 32],
}

impl<S: AsyncRead + AsyncWrite + Unpin> TestClient<S> {
    /// Full handshake with Go's ClientInfo JSON; asserts ServerInfo is the very next frame.
    pub async fn connect(io: S, seed: u8) -> Self {
        Self::connect_with_json(io, seed, br#"{"version":2,"CanAckPings":true}"#).await
    }

    pub async fn connect_with_json(mut io: S, seed: u8, json: &[u8]) -> Self {
        let secret = secret(seed);
        let server_key = read_server_key(&mut io).await;
        send_client_info(&mut io, &secret, server_key, json).await;
        let (t, body) = tokio::time::timeout(RECV_TIMEOUT, read_raw(&mut io))
            .await
            .expect("ServerInfo in time")
            .expect("ServerInfo frame");
        assert_eq!(t, SERVER_INFO, "ServerInfo must be the very next frame");
        let info = open_server_info(&secret, server_key, &body);
        assert_eq!(info, serde_json::json!({"version": 2}));
        let key = secret.public_key().to_bytes();
        Self { io, secret, key, server_key }
    }

    pub async fn send_packet(&mut self, dst: [u8; 32], payload: &[u8]) {
        let mut body = dst.to_vec();
        body.extend_from_slice(payload);
        write_raw(&mut self.io, SEND_PACKET, &body).await.unwrap();
    }

    pub async fn ping(&mut self, data: &[u8]) {
        write_raw(&mut self.io, PING, data).await.unwrap();
    }

    /// Next frame other than KeepAlive, within [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> (u8, Vec<u8>) {
        loop {
            let frame = tokio::time::timeout(RECV_TIMEOUT, read_raw(&mut self.io))
                .await
                .expect("frame in time")
                .expect("connection open");
            if frame.0 != KEEP_ALIVE {
                return frame;
            }
        }
    }

    /// Expect a RecvPacket and return (source key, payload).
    pub async fn recv_packet(&mut self) -> ([u8; 32], Vec<u8>) {
        let (t, body) = self.recv().await;
        assert_eq!(t, RECV_PACKET, "expected RecvPacket, got type {t:#04x}");
        assert!(body.len() >= 32);
        (body[..32].try_into().unwrap(), body[32..].to_vec())
    }

    /// Send a Ping and return every non-keep-alive frame received before its Pong.
    pub async fn frames_before_pong(&mut self) -> Vec<(u8, Vec<u8>)> {
        self.ping(b"barrier!").await;
        let mut before = Vec::new();
        loop {
            let frame = self.recv().await;
            if frame == (PONG, b"barrier!".to_vec()) {
                return before;
            }
            before.push(frame);
        }
    }

    /// Wait for the server to close the connection (EOF or reset), within [`RECV_TIMEOUT`].
    pub async fn expect_closed(&mut self) {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, read_raw(&mut self.io)).await {
                Err(_) => panic!("connection still open"),
                Ok(Err(_)) => return,
                Ok(Ok((KEEP_ALIVE, _))) => {}
                Ok(Ok((t, _))) => panic!("expected close, got frame type {t:#04x}"),
            }
        }
    }
}
