//! The HTTP handlers behind a real hyper HTTP/1.1 server on 127.0.0.1: plain DERP upgrade
//! (GET and POST), DERP over WebSocket, the probe and captive-portal endpoints.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tailwarden_derp::http::{WebSocketByteStream, generate_204, handle_derp_upgrade, probe_response};
use tailwarden_derp::{AdmitAll, DerpServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A minimal router like the one the binary builds; owns its accept loop and connections.
struct TestHttpServer {
    addr: SocketAddr,
    derp: Arc<DerpServer>,
    _tasks: JoinSet<()>,
}

async fn start() -> TestHttpServer {
    let derp = Arc::new(DerpServer::new([0x33; 32], Arc::new(AdmitAll)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tasks = JoinSet::new();
    let d = Arc::clone(&derp);
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let d = Arc::clone(&d);
            conns.spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let d = Arc::clone(&d);
                    async move {
                        let resp: hyper::Response<Full<Bytes>> = match req.uri().path() {
                            "/derp" => handle_derp_upgrade(d, req),
                            "/derp/probe" | "/derp/latency-check" => probe_response(req.method()),
                            "/generate_204" => generate_204(&req),
                            _ => hyper::Response::builder().status(404).body(Full::default()).unwrap(),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    TestHttpServer { addr, derp, _tasks: tasks }
}

/// Send a raw HTTP/1.1 request and read the response head byte by byte, leaving whatever
/// follows (the DERP stream) unread on the socket.
async fn raw_request(addr: SocketAddr, request: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("response head");
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn derp_over_tcp(addr: SocketAddr, method: &str, seed: u8) -> TestClient<TcpStream> {
    let req = format!("{method} /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n");
    let (stream, head) = raw_request(addr, &req).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(header(&head, "upgrade"), Some("DERP"));
    assert_eq!(header(&head, "derp-version"), Some("2"));
    TestClient::connect(stream, seed).await
}

#[tokio::test]
async fn go_get_and_rust_post_upgrades_relay_over_tcp() {
    let srv = start().await;
    let mut go = derp_over_tcp(srv.addr, "GET", 1).await;
    let mut rs = derp_over_tcp(srv.addr, "POST", 2).await;
    assert_eq!(go.server_key, srv.derp.public_key());
    go.send_packet(rs.key, b"from go").await;
    assert_eq!(rs.recv_packet().await, (go.key, b"from go".to_vec()));
    rs.send_packet(go.key, b"from rs").await;
    assert_eq!(go.recv_packet().await, (rs.key, b"from rs".to_vec()));
}

#[tokio::test]
async fn public_key_header_matches_server_key_frame() {
    let srv = start().await;
    let (mut stream, head) = raw_request(
        srv.addr,
        "POST http://127.0.0.1/derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: derp\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let key = read_server_key(&mut stream).await;
    assert_eq!(header(&head, "derp-public-key"), Some(hex::encode(key).as_str()));
}

#[tokio::test]
async fn no_upgrade_is_426() {
    let srv = start().await;
    let (mut stream, head) =
        raw_request(srv.addr, "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    assert_eq!(body, "DERP requires connection upgrade");
}

#[tokio::test]
async fn derp_over_websocket_talks_to_derp_over_tcp() {
    let srv = start().await;
    let mut tcp = derp_over_tcp(srv.addr, "GET", 1).await;

    let stream = TcpStream::connect(srv.addr).await.unwrap();
    let mut request = format!("ws://{}/derp", srv.addr).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "derp".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(request, stream).await.expect("WebSocket handshake");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "derp");
    let mut ws = TestClient::connect(WebSocketByteStream::new(ws), 2).await;

    ws.send_packet(tcp.key, b"via websocket").await;
    assert_eq!(tcp.recv_packet().await, (ws.key, b"via websocket".to_vec()));
    let big = vec![0xabu8; 60_000];
    tcp.send_packet(ws.key, &big).await;
    assert_eq!(ws.recv_packet().await, (tcp.key, big));
}

#[tokio::test]
async fn latency_check_and_generate_204_over_keepalive_connection() {
    let srv = start().await;
    let mut stream = TcpStream::connect(srv.addr).await.unwrap();
    // Several sequential requests on one HTTP/1.1 connection, as tailscale-rs does.
    for path in ["/derp/latency-check", "/derp/probe", "/derp/latency-check"] {
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&head, "content-length"), Some("0"));
    }
    let (_, head) =
        raw_request(srv.addr, "GET /generate_204 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Tailscale-Challenge: abc123\r\n\r\n")
            .await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert_eq!(header(&head, "x-tailscale-response"), Some("response abc123"));
    let (_, head) = raw_request(srv.addr, "POST /derp/probe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
}
