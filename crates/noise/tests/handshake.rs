//! Handshake and transport against tailscale-rs's own client-side Noise implementation.

use bytes::BytesMut;
use tailwarden_noise::{Initiation, NoiseStream, accept, early_payload};
use tailwarden_wire::ChallengeKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ts_keys::MachineKeyPair;

#[tokio::test]
async fn tailscale_rs_client_completes_handshake_and_exchanges_data() {
    let server_keys = MachineKeyPair::random();
    let client_keys = MachineKeyPair::random();
    let capver = ts_capabilityversion::CapabilityVersion::CURRENT;
    let prologue = format!("Tailscale Control Protocol v{}", u16::from(capver));
    let (hs, init_b64) = ts_control_noise::Handshake::initialize(&prologue, &client_keys, &server_keys.public, capver);

    let init = Initiation::from_header(&init_b64).unwrap();
    assert_eq!(init.version, u16::from(capver));
    let accepted = accept(&init, &server_keys.to_x25519_dalek()).unwrap();
    assert_eq!(
        accepted.machine_key.0,
        client_keys.public.to_x25519_dalek().to_bytes(),
        "server learns the client's machine key"
    );

    let (client_io, mut server_io) = tokio::io::duplex(1 << 16);
    server_io.write_all(&accepted.response).await.unwrap();
    let mut server = NoiseStream::new(server_io, accepted.codec, BytesMut::new());
    server.queue(&early_payload(ChallengeKey([3; 32]))).unwrap();
    server.write_all(b"hello from server").await.unwrap();
    // HTTP/2 hands a frame over as header and payload slices: both must arrive, in order, in one write.
    let payload = vec![7u8; 5000];
    let slices = [std::io::IoSlice::new(b"frame head|"), std::io::IoSlice::new(&payload)];
    assert_eq!(server.write_vectored(&slices).await.unwrap(), 11 + payload.len());
    server.flush().await.unwrap();

    let mut client = hs.complete(client_io, &client_keys).await.unwrap();
    let mut buf = vec![0u8; 9];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf[..5], b"\xff\xff\xffTS");
    let len = u32::from_be_bytes(buf[5..9].try_into().unwrap()) as usize;
    let mut json = vec![0u8; len];
    client.read_exact(&mut json).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["nodeKeyChallenge"], format!("chalpub:{}", "03".repeat(32)));
    let mut hello = vec![0u8; 17];
    client.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello from server");
    let mut frame = vec![0u8; 11 + payload.len()];
    client.read_exact(&mut frame).await.unwrap();
    assert_eq!(&frame[..11], b"frame head|");
    assert_eq!(&frame[11..], &payload[..]);

    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    client.write_all(&big).await.unwrap();
    client.flush().await.unwrap();
    let mut got = vec![0u8; big.len()];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, big);
}

#[test]
fn wrong_server_key_fails_cleanly() {
    let server_keys = MachineKeyPair::random();
    let other = MachineKeyPair::random();
    let client_keys = MachineKeyPair::random();
    let capver = ts_capabilityversion::CapabilityVersion::CURRENT;
    let (_hs, init_b64) = ts_control_noise::Handshake::initialize(
        &format!("Tailscale Control Protocol v{}", u16::from(capver)),
        &client_keys,
        &other.public,
        capver,
    );
    let init = Initiation::from_header(&init_b64).unwrap();
    assert!(accept(&init, &server_keys.to_x25519_dalek()).is_err());
}

#[test]
fn malformed_initiations_are_rejected() {
    assert!(Initiation::from_header("not base64!").is_err());
    assert!(Initiation::parse(&[0u8; 100]).is_err());
    let mut wrong_type = [0u8; 101];
    wrong_type[3] = 0;
    wrong_type[4] = 96;
    assert!(Initiation::parse(&wrong_type).is_err());
    wrong_type[2] = 1;
    assert!(Initiation::parse(&wrong_type).is_ok());
}
