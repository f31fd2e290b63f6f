//! The relay end to end over in-memory pipes, driven by the independent test client.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tailwarden_derp::{AdmitAll, ClientAdmission, DerpConfig, DerpServer};
use tokio::io::{AsyncReadExt, DuplexStream};

const SERVER_SECRET: [u8; 32] = [0x5e; 32];

fn server_with(admission: Arc<dyn ClientAdmission>, config: DerpConfig) -> Arc<DerpServer> {
    Arc::new(DerpServer::with_config(SERVER_SECRET, admission, config))
}

fn server() -> Arc<DerpServer> {
    server_with(Arc::new(AdmitAll), DerpConfig::default())
}

/// Start serving one in-memory connection and return the client end.
fn pipe(server: &Arc<DerpServer>) -> DuplexStream {
    pipe_sized(server, 256 * 1024)
}

fn pipe_sized(server: &Arc<DerpServer>, buffer: usize) -> DuplexStream {
    let (client, server_end) = tokio::io::duplex(buffer);
    tokio::spawn(Arc::clone(server).serve_connection(server_end));
    client
}

async fn client(server: &Arc<DerpServer>, seed: u8) -> TestClient<DuplexStream> {
    TestClient::connect(pipe(server), seed).await
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn handshake_server_key_then_server_info() {
    let s = server();
    let mut io = pipe(&s);
    let key = read_server_key(&mut io).await;
    assert_eq!(key, s.public_key());
    // TestClient::connect asserts ServerInfo is the very next frame and reads {"version":2}.
    let c = TestClient::connect(pipe(&s), 1).await;
    assert_eq!(c.server_key, s.public_key());
    eventually("registration", || s.is_connected(&public(1))).await;
    assert_eq!(s.stats().clients_connected.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn tailscale_rs_snake_case_client_info_is_accepted() {
    let s = server();
    let json = br#"{"version":2,"can_ack_pings":true,"is_prober":false,"mesh_key":null,"future_field":{"x":1}}"#;
    TestClient::connect_with_json(pipe(&s), 2, json).await;
    let empty = TestClient::connect_with_json(pipe(&s), 3, b"{}").await;
    assert_eq!(empty.key, public(3));
}

#[tokio::test]
async fn packet_from_a_reaches_b_with_a_as_source() {
    let s = server();
    let mut a = client(&s, 1).await;
    let mut b = client(&s, 2).await;
    let payload = b"wireguard packet \x00\x01\x02".to_vec();
    a.send_packet(b.key, &payload).await;
    let (src, got) = b.recv_packet().await;
    assert_eq!(src, a.key);
    assert_eq!(got, payload);
    // And back.
    b.send_packet(a.key, b"reply").await;
    assert_eq!(a.recv_packet().await, (b.key, b"reply".to_vec()));
    assert_eq!(s.stats().packets_forwarded.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn max_size_packet_and_empty_packet_are_relayed() {
    let s = server();
    let mut a = client(&s, 1).await;
    let mut b = client(&s, 2).await;
    let big: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    a.send_packet(b.key, &big).await;
    assert_eq!(b.recv_packet().await, (a.key, big));
    a.send_packet(b.key, b"").await;
    assert_eq!(b.recv_packet().await, (a.key, Vec::new()));
}

#[tokio::test]
async fn frames_sent_with_client_info_in_one_write_are_not_lost() {
    // NotePreferred and a SendPacket right behind ClientInfo, before ServerInfo is read.
    let s = server();
    let mut b = client(&s, 2).await;
    let mut io = pipe(&s);
    let sk = secret(1);
    let server_key = read_server_key(&mut io).await;
    send_client_info(&mut io, &sk, server_key, br#"{"version":2}"#).await;
    write_raw(&mut io, NOTE_PREFERRED, &[1]).await.unwrap();
    let mut body = b.key.to_vec();
    body.extend_from_slice(b"early");
    write_raw(&mut io, SEND_PACKET, &body).await.unwrap();
    let (t, _) = read_raw(&mut io).await.unwrap();
    assert_eq!(t, SERVER_INFO);
    assert_eq!(b.recv_packet().await, (public(1), b"early".to_vec()));
}

#[tokio::test]
async fn unknown_destination_gets_peer_gone_not_here() {
    let s = server();
    let mut a = client(&s, 1).await;
    let nobody = [0x99u8; 32];
    a.send_packet(nobody, b"lost").await;
    let (t, body) = a.recv().await;
    assert_eq!(t, PEER_GONE);
    let mut want = nobody.to_vec();
    want.push(0x01);
    assert_eq!(body, want);
    let st = s.stats().snapshot();
    assert_eq!(st.packets_dropped, 1);
    assert_eq!(st.packets_dropped_unknown_dest, 1);
    assert_eq!(st.packets_forwarded, 0);
}

#[tokio::test]
async fn not_here_replies_are_rate_limited_to_a_burst_of_three() {
    let s = server();
    let mut a = client(&s, 1).await;
    for i in 0..6u8 {
        a.send_packet([0x80 + i; 32], b"x").await;
    }
    let before = a.frames_before_pong().await;
    assert_eq!(before.len(), 3, "burst of 3, then limited: {before:?}");
    assert!(before.iter().all(|(t, b)| *t == PEER_GONE && b[32] == 0x01));
    assert_eq!(s.stats().packets_dropped_unknown_dest.load(Ordering::Relaxed), 6);
}

#[tokio::test]
async fn disconnect_tells_only_the_peers_it_sent_to() {
    let s = server();
    let mut a = client(&s, 1).await;
    let mut b = client(&s, 2).await;
    let mut c = client(&s, 3).await;
    a.send_packet(b.key, b"hello b").await;
    assert_eq!(b.recv_packet().await.0, a.key);
    let a_key = a.key;
    drop(a);
    let (t, body) = b.recv().await;
    assert_eq!(t, PEER_GONE);
    let mut want = a_key.to_vec();
    want.push(0x00);
    assert_eq!(body, want, "PeerGone(A, disconnected)");
    assert!(c.frames_before_pong().await.is_empty(), "C never heard from A");
    eventually("A unregistered", || !s.is_connected(&a_key)).await;
}

#[tokio::test]
async fn ping_gets_pong_with_the_first_eight_bytes() {
    let s = server();
    let mut a = client(&s, 1).await;
    a.ping(b"12345678extra").await;
    assert_eq!(a.recv().await, (PONG, b"12345678".to_vec()));
}

#[tokio::test]
async fn short_ping_closes_the_connection() {
    let s = server();
    let mut a = client(&s, 1).await;
    a.ping(b"1234567").await;
    a.expect_closed().await;
}

#[tokio::test]
async fn admission_refusal_closes_the_connection() {
    let refused = public(66);
    let admission = move |key: &[u8; 32]| *key != refused;
    let s = server_with(Arc::new(admission), DerpConfig::default());
    let mut io = pipe(&s);
    let server_key = read_server_key(&mut io).await;
    send_client_info(&mut io, &secret(66), server_key, br#"{"version":2}"#).await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(RECV_TIMEOUT, io.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("clean close");
    assert_eq!(n, 0, "no ServerInfo (or anything else) for a refused client");
    assert!(!s.is_connected(&refused));
    assert_eq!(s.stats().clients_refused.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats().handshakes_failed.load(Ordering::Relaxed), 0);
    // Other keys are still admitted.
    client(&s, 7).await;
}

#[tokio::test]
async fn client_info_sealed_to_the_wrong_key_is_rejected() {
    let s = server();
    let mut io = pipe(&s);
    read_server_key(&mut io).await;
    send_client_info(&mut io, &secret(1), public(9), br#"{"version":2}"#).await;
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(!s.is_connected(&public(1)));
    assert_eq!(s.stats().handshakes_failed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn first_frame_other_than_client_info_is_rejected() {
    let s = server();
    let mut io = pipe(&s);
    read_server_key(&mut io).await;
    write_raw(&mut io, PING, b"12345678").await.unwrap();
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn oversize_frame_closes_the_connection() {
    let s = server();
    let mut a = client(&s, 1).await;
    // Header only: a SendPacket claiming 64 KiB + 33 bytes.
    let mut header = vec![SEND_PACKET];
    header.extend_from_slice(&(65536u32 + 33).to_be_bytes());
    tokio::io::AsyncWriteExt::write_all(&mut a.io, &header).await.unwrap();
    a.expect_closed().await;
}

#[tokio::test]
async fn unknown_frame_types_are_skipped() {
    let s = server();
    let mut a = client(&s, 1).await;
    let mut b = client(&s, 2).await;
    write_raw(&mut a.io, 0x0c, &[0xee; 300]).await.unwrap();
    write_raw(&mut a.io, 0xfe, b"").await.unwrap();
    a.send_packet(b.key, b"after unknown").await;
    assert_eq!(b.recv_packet().await, (a.key, b"after unknown".to_vec()));
}

#[tokio::test]
async fn mesh_frames_are_refused() {
    let s = server();
    let mut a = client(&s, 1).await;
    write_raw(&mut a.io, WATCH_CONNS, b"").await.unwrap();
    a.expect_closed().await;
}

#[tokio::test]
async fn same_key_twice_newest_is_active_and_old_one_takes_over() {
    let s = server();
    let mut old = client(&s, 1).await;
    let mut new = client(&s, 1).await;
    let mut b = client(&s, 2).await;
    b.send_packet(old.key, b"one").await;
    assert_eq!(new.recv_packet().await, (b.key, b"one".to_vec()));
    assert!(old.frames_before_pong().await.is_empty(), "old connection gets nothing");
    drop(new);
    // The old connection stays and becomes the active one; B is not told the key is gone.
    let mut delivered = false;
    for _ in 0..200 {
        b.send_packet(old.key, b"two").await;
        let frames = b.frames_before_pong().await;
        assert!(frames.iter().all(|(t, _)| *t != PEER_GONE), "no PeerGone while a connection remains");
        let got = old.frames_before_pong().await;
        if got.iter().any(|f| *f == (RECV_PACKET, [b.key.to_vec(), b"two".to_vec()].concat())) {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(delivered, "packets reach the remaining connection");
    assert!(s.is_connected(&old.key));
}

#[tokio::test]
async fn full_queue_drops_the_oldest_packets() {
    let s = server();
    let mut a = client(&s, 1).await;
    // B's pipe holds a handful of bytes, so its queue fills while it does not read.
    let mut b = TestClient::connect(pipe_sized(&s, 256), 2).await;
    const N: u16 = 200;
    for i in 0..N {
        a.send_packet(b.key, &[i.to_be_bytes().as_slice(), &[0u8; 200]].concat()).await;
    }
    // Make sure the server has routed everything A sent before B starts reading.
    assert!(a.frames_before_pong().await.is_empty());
    let mut seqs = Vec::new();
    loop {
        let (src, payload) = b.recv_packet().await;
        assert_eq!(src, a.key);
        let seq = u16::from_be_bytes([payload[0], payload[1]]);
        seqs.push(seq);
        if seq == N - 1 {
            break;
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "delivered in order");
    let st = s.stats().snapshot();
    assert!(st.packets_dropped_queue_full > 0, "queue overflowed");
    assert_eq!(seqs.len() as u64 + st.packets_dropped_queue_full, u64::from(N), "every packet delivered or dropped");
    // Queue depth, plus what the server's 8 KiB write buffer and the 256-byte pipe held when the
    // writer got stuck (frames here are 5 + 32 + 202 = 239 bytes).
    let in_flight = 8192 / 239 + 256 / 239 + 6;
    assert!(seqs.len() <= 32 + in_flight, "at most the queue depth plus buffered frames: {}", seqs.len());
}

#[tokio::test]
async fn disco_packets_have_their_own_queue() {
    let s = server();
    let mut a = client(&s, 1).await;
    let mut b = TestClient::connect(pipe_sized(&s, 256), 2).await;
    let mut disco = "TS💬".as_bytes().to_vec();
    disco.extend_from_slice(&[7u8; 32 + 24 + 10]);
    // Get B's writer stuck and its data queue full, then send the disco packet, then flood the
    // data queue well past its depth. A shared queue would push the disco packet out.
    for i in 0..60u16 {
        a.send_packet(b.key, &[i.to_be_bytes().as_slice(), &[0u8; 200]].concat()).await;
    }
    assert!(a.frames_before_pong().await.is_empty());
    a.send_packet(b.key, &disco).await;
    for i in 60..160u16 {
        a.send_packet(b.key, &[i.to_be_bytes().as_slice(), &[0u8; 200]].concat()).await;
    }
    assert!(a.frames_before_pong().await.is_empty());
    let mut saw_disco = false;
    let mut last_seq = 0;
    while last_seq != 159 {
        let (_, payload) = b.recv_packet().await;
        if payload == disco {
            saw_disco = true;
        } else {
            last_seq = u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
    assert!(saw_disco, "disco packet was not pushed out by data packets");
}

#[tokio::test(start_paused = true)]
async fn keepalive_every_sixty_seconds_plus_jitter() {
    let s = server();
    let mut a = client(&s, 1).await;
    let start = tokio::time::Instant::now();
    let (t, body) = read_raw(&mut a.io).await.unwrap();
    let waited = start.elapsed();
    assert_eq!((t, body.len()), (KEEP_ALIVE, 0));
    assert!(waited >= Duration::from_secs(60) && waited <= Duration::from_secs(65), "{waited:?}");
    let start = tokio::time::Instant::now();
    let (t, _) = read_raw(&mut a.io).await.unwrap();
    assert_eq!(t, KEEP_ALIVE);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(60) && waited <= Duration::from_secs(65), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn handshake_times_out_after_ten_seconds() {
    let s = server();
    let mut io = pipe(&s);
    read_server_key(&mut io).await;
    let start = tokio::time::Instant::now();
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.unwrap();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(11), "{waited:?}");
    assert_eq!(s.stats().handshakes_failed.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn slow_reader_is_disconnected_after_the_write_timeout() {
    let s = server();
    let mut a = client(&s, 1).await;
    let b = TestClient::connect(pipe_sized(&s, 128), 2).await;
    for _ in 0..10 {
        a.send_packet(b.key, &[1u8; 500]).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(s.is_connected(&b.key), "still within the write timeout");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!s.is_connected(&b.key), "disconnected after 2 s stuck on one write");
    assert_eq!(s.stats().write_timeouts.load(Ordering::Relaxed), 1);
    drop(b);
}

#[tokio::test]
async fn shutdown_closes_connections() {
    let s = server();
    let mut a = client(&s, 1).await;
    let mut b = client(&s, 2).await;
    eventually("both registered", || s.stats().clients_connected.load(Ordering::Relaxed) == 2).await;
    s.shutdown();
    a.expect_closed().await;
    b.expect_closed().await;
    eventually("all unregistered", || s.stats().clients_connected.load(Ordering::Relaxed) == 0).await;
    // A connection made after shutdown is closed before the handshake.
    let mut io = pipe(&s);
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}
