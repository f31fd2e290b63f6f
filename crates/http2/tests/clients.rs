//! The server against HTTP/2 clients written by others (hyper, and h2 driven directly for flow-control settings),
//! and against hand-made frames for what no well-behaved client sends.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tailwarden_http2::{Http2Error, Limits, RequestBody, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

type TestBody = BoxBody<Bytes, Infallible>;

/// Set when a `/forever` response body is dropped.
#[derive(Clone, Default)]
struct Probe(Arc<AtomicBool>);

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `len` bytes of a pattern that makes misordered or lost chunks visible.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// `/echo` returns the request body; `/stream?<n>` streams `n` pattern bytes in 10,000-byte chunks;
/// `/forever` sends one chunk and then never ends (dropping its body sets the probe).
async fn handle(probe: Probe, req: Request<RequestBody>) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("0").to_owned();
    let response = match path.as_str() {
        "/echo" => {
            let method = req.method().to_string();
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Response::builder()
                .header("x-method", method)
                .header("x-len", body.len().to_string())
                .body(Full::new(body).boxed())
        }
        "/stream" => {
            let data = pattern(query.parse().unwrap_or(0));
            let chunks: Vec<Result<http_body::Frame<Bytes>, Infallible>> =
                data.chunks(10_000).map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c)))).collect();
            Response::builder().body(StreamBody::new(futures_util::stream::iter(chunks)).boxed())
        }
        "/forever" => {
            let flag = DropFlag(probe.0.clone());
            let first = futures_util::stream::once(async { Ok(http_body::Frame::data(Bytes::from_static(b"hi"))) });
            let rest = futures_util::stream::unfold(flag, |flag| async move {
                std::future::pending::<()>().await;
                Some((Ok(http_body::Frame::data(Bytes::new())), flag))
            });
            Response::builder().body(StreamBody::new(futures_util::StreamExt::chain(first, rest)).boxed())
        }
        _ => Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::new()).boxed()),
    };
    Ok(response.unwrap())
}

fn start(limits: Limits) -> (DuplexStream, Probe, tokio::task::JoinHandle<Result<(), Http2Error>>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let probe = Probe::default();
    let p = probe.clone();
    let service = tower::service_fn(move |req| handle(p.clone(), req));
    (client, probe, tokio::spawn(serve(server, service, limits)))
}

async fn hyper_client(io: DuplexStream) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

fn post(path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post(format!("http://127.0.0.1{path}")).body(Full::new(Bytes::from(body))).unwrap()
}

/// Opens a `/forever` response and reads its first chunk, so the service's body is known to be streaming.
async fn open_forever(client: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>) -> hyper::body::Incoming {
    let resp = client.send_request(post("/forever", vec![])).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "hi");
    body
}

async fn body_of(resp: Response<hyper::body::Incoming>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn requests_and_bodies_round_trip_through_hyper() {
    let (io, _, _server) = start(Limits::default());
    let mut client = hyper_client(io).await;
    // Larger than the 65,535-byte initial windows: the server must credit them as the body arrives.
    for len in [0usize, 1, 5_000, 200_000] {
        let resp = client.send_request(post("/echo", pattern(len))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-method"], "POST");
        assert_eq!(resp.headers()["x-len"], len.to_string().as_str());
        assert_eq!(body_of(resp).await, pattern(len), "echo of {len} bytes");
    }
    let resp = client.send_request(post("/missing", vec![])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn concurrent_streams_each_get_their_own_response() {
    let (io, _, _server) = start(Limits::default());
    let client = hyper_client(io).await;
    let calls = (0..12usize).map(|i| {
        let mut client = client.clone();
        async move {
            let len = 30_000 * (i + 1);
            let req = Request::get(format!("http://127.0.0.1/stream?{len}")).body(Full::default()).unwrap();
            let resp = client.send_request(req).await.unwrap();
            (len, body_of(resp).await)
        }
    });
    for (len, body) in futures_util::future::join_all(calls).await {
        assert_eq!(body.len(), len);
        assert_eq!(body, pattern(len));
    }
}

/// h2 (the client side of the crate hyper uses) with a 1,000-byte stream window and the smallest connection window:
/// the client would fail the connection with FLOW_CONTROL_ERROR if a DATA frame overran either.
#[tokio::test]
async fn responses_wait_for_the_clients_windows() {
    let (io, _, _server) = start(Limits::default());
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(1_000)
        .initial_connection_window_size(65_535)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (resp, _) =
        client.send_request(Request::get("http://127.0.0.1/stream?300000").body(()).unwrap(), true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= 1_000, "a DATA frame of {} bytes overran the 1,000-byte window", chunk.len());
        got.extend_from_slice(&chunk);
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    assert_eq!(got, pattern(300_000));
}

#[tokio::test]
async fn a_client_reset_drops_the_response_body_and_the_connection_lives_on() {
    let (io, probe, _server) = start(Limits::default());
    let mut client = hyper_client(io).await;
    let body = open_forever(&mut client).await;
    assert!(!probe.0.load(Ordering::SeqCst));
    drop(body); // hyper sends RST_STREAM(CANCEL)
    tokio::time::timeout(Duration::from_secs(5), async {
        while !probe.0.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the response body is dropped after the client resets its stream");
    let resp = client.send_request(post("/echo", b"still here".to_vec())).await.unwrap();
    assert_eq!(body_of(resp).await, "still here");
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_before_the_service() {
    let limits = Limits { max_body: 10_000, ..Limits::default() };
    let (io, _, _server) = start(limits);
    let mut client = hyper_client(io).await;
    let resp = client.send_request(post("/echo", pattern(10_001))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = client.send_request(post("/echo", pattern(10_000))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_of(resp).await.len(), 10_000);
}

#[tokio::test]
async fn the_client_closing_ends_serve_and_drops_open_streams() {
    let (io, probe, server) = start(Limits::default());
    let mut client = hyper_client(io).await;
    let body = open_forever(&mut client).await;
    drop((body, client));
    let outcome = tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve returns").unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(probe.0.load(Ordering::SeqCst));
}

// ---- hand-made frames ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A request header block: `:method GET`, `:scheme http`, `:path /` from the static table, with a literal
/// `:authority` (RFC 7541 C.3.1).
const GET_ROOT: &[u8] = &[
    0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o',
    b'm',
];

struct Received {
    frames: Vec<RawFrame>,
    outcome: Result<(), Http2Error>,
}

impl Received {
    /// Every RST_STREAM the server sent: (stream, error code).
    fn resets(&self) -> Vec<(u32, u32)> {
        let resets = self.frames.iter().filter(|f| f.0 == 3);
        resets.map(|(_, _, stream, p)| (*stream, u32::from_be_bytes([p[0], p[1], p[2], p[3]]))).collect()
    }

    fn goaway(&self) -> Option<(u32, String)> {
        self.frames.iter().find(|f| f.0 == 7).map(|(_, _, _, p)| {
            (u32::from_be_bytes([p[4], p[5], p[6], p[7]]), String::from_utf8_lossy(&p[8..]).into_owned())
        })
    }
}

type RawFrame = (u8, u8, u32, Vec<u8>);

/// Splits complete frames off the front of `raw`.
fn parse_frames(raw: &mut Vec<u8>, into: &mut Vec<RawFrame>) {
    let mut at = 0;
    while raw.len() - at >= 9 {
        let r = &raw[at..];
        let len = usize::from(r[0]) << 16 | usize::from(r[1]) << 8 | usize::from(r[2]);
        if r.len() < 9 + len {
            break;
        }
        into.push((r[3], r[4], u32::from_be_bytes([r[5], r[6], r[7], r[8]]), r[9..9 + len].to_vec()));
        at += 9 + len;
    }
    raw.drain(..at);
}

/// Sends `input`, reads frames until `until` holds of them (or the server closes), then closes our side; returns
/// every frame the server wrote and how `serve` ended.
async fn exchange(limits: Limits, input: &[u8], until: impl Fn(&[RawFrame]) -> bool) -> Received {
    let (mut io, _, server) = start(limits);
    io.write_all(input).await.unwrap();
    let mut raw = Vec::new();
    let mut frames = Vec::new();
    let read = async {
        let mut closed = false;
        while !until(&frames) {
            let mut chunk = [0u8; 4096];
            let n = io.read(&mut chunk).await.unwrap();
            if n == 0 {
                closed = true;
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
            parse_frames(&mut raw, &mut frames);
        }
        if !closed {
            io.shutdown().await.unwrap();
            io.read_to_end(&mut raw).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("server answers or closes");
    parse_frames(&mut raw, &mut frames);
    assert!(raw.is_empty(), "server output ends inside a frame");
    let outcome = server.await.unwrap();
    Received { frames, outcome }
}

/// Waits for the server to close the connection itself.
fn until_closed(_: &[RawFrame]) -> bool {
    false
}

fn opened(after_settings: &[Vec<u8>]) -> Vec<u8> {
    let mut input = PREFACE.to_vec();
    input.extend(frame(4, 0, 0, &[]));
    for f in after_settings {
        input.extend_from_slice(f);
    }
    input
}

#[tokio::test]
async fn the_server_opens_with_settings_and_acknowledges_the_clients() {
    let limits = Limits { max_streams: 7, ..Limits::default() };
    let ping_acked = |f: &[RawFrame]| f.iter().any(|f| f.0 == 6 && f.1 == 1);
    let got = exchange(limits, &opened(&[frame(6, 0, 0, b"12345678")]), ping_acked).await;
    let (kind, flags, stream, payload) = &got.frames[0];
    assert_eq!((*kind, *flags, *stream), (4, 0, 0), "first frame is our SETTINGS");
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
        .collect();
    assert!(settings.contains(&(3, 7)), "MAX_CONCURRENT_STREAMS from the limits: {settings:?}");
    assert!(got.frames.iter().any(|f| f.0 == 4 && f.1 == 1 && f.3.is_empty()), "SETTINGS ACK");
    assert!(got.frames.iter().any(|f| f.0 == 6 && f.1 == 1 && f.3 == b"12345678"), "PING ACK echoes the payload");
    assert!(got.outcome.is_ok());
}

#[tokio::test]
async fn a_request_in_hand_made_frames_is_answered() {
    let answered = |f: &[RawFrame]| f.iter().any(|f| f.0 == 1 && f.2 == 1);
    let got = exchange(Limits::default(), &opened(&[frame(1, 0x4 | 0x1, 1, GET_ROOT)]), answered).await;
    // `/` is not a route of the test service: a HEADERS frame with :status 404 (static index 13) ends the stream.
    let headers = got.frames.iter().find(|f| f.0 == 1 && f.2 == 1).expect("a response on stream 1");
    assert_eq!(headers.3[0], 0x80 | 13);
}

/// A small block can reference one large table entry many times (an "HPACK bomb"): the request is refused with
/// 431 and the connection goes on.
#[tokio::test]
async fn a_header_list_past_the_limit_is_answered_431() {
    let mut block = GET_ROOT.to_vec();
    // Literal with incremental indexing, new name "x-a", a 3,000-byte value (RFC 7541 §5.1 integer: 127 + 2,873).
    block.extend_from_slice(&[0x40, 3, b'x', b'-', b'a', 0x7f, 0xb9, 0x16]);
    block.extend(std::iter::repeat_n(b'v', 3_000));
    // Then that entry, dynamic index 62, a hundred times: ~300 KB decoded from ~3 KB.
    block.extend(std::iter::repeat_n(0x80 | 62, 100));
    let answered = |f: &[RawFrame]| f.iter().any(|f| f.0 == 1 && f.2 == 3);
    let input = opened(&[frame(1, 0x5, 1, &block), frame(1, 0x5, 3, GET_ROOT)]);
    let got = exchange(Limits::default(), &input, answered).await;
    let status = |stream: u32| got.frames.iter().find(|f| f.0 == 1 && f.2 == stream).map(|f| f.3.clone());
    assert_eq!(status(1).unwrap(), [0x08, 3, b'4', b'3', b'1'], ":status 431, literal with the static name");
    assert_eq!(status(3).unwrap()[0], 0x80 | 13, "the next request is served (404 from the test service)");
    assert_eq!(got.goaway(), None);
}

#[tokio::test]
async fn protocol_violations_get_a_goaway_that_says_what_was_wrong() {
    let huge = vec![0u8; 16_385];
    let cases: Vec<(Vec<u8>, u32, &str)> = vec![
        ([PREFACE, &frame(6, 0, 0, b"12345678")].concat(), 0x1, "the client preface must end with a SETTINGS frame"),
        (opened(&[frame(4, 0, 0, &[0; 5])]), 0x6, "SETTINGS length is not a multiple of 6"),
        (opened(&[frame(4, 0, 0, &[0, 4, 0x80, 0, 0, 0])]), 0x3, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1"),
        (opened(&[frame(6, 0, 1, b"12345678")]), 0x1, "PING on a stream"),
        (opened(&[frame(6, 0, 0, b"1234")]), 0x6, "PING payload is not 8 bytes"),
        (opened(&[frame(0, 0, 0, b"x")]), 0x1, "DATA on stream 0"),
        (opened(&[frame(0, 0, 3, b"x")]), 0x1, "DATA on a stream never opened"),
        (opened(&[frame(1, 0x5, 2, GET_ROOT)]), 0x1, "client-opened streams must have odd ids"),
        (opened(&[frame(1, 0x5, 1, &[0xff, 0xff, 0xff, 0xff])]), 0x9, "header block does not decode (HPACK)"),
        (opened(&[frame(1, 0x5 | 0x8, 1, &[200, 1, 2])]), 0x1, "padding longer than the frame"),
        (
            opened(&[frame(1, 0x1, 1, GET_ROOT), frame(0, 0, 1, b"x")]),
            0x1,
            "header block interrupted before END_HEADERS",
        ),
        (opened(&[frame(9, 0x4, 1, GET_ROOT)]), 0x1, "CONTINUATION without a header block to continue"),
        (opened(&[frame(5, 0x4, 1, &[0, 0, 0, 2])]), 0x1, "clients may not send PUSH_PROMISE"),
        (opened(&[frame(8, 0, 0, &[0, 0, 0, 0])]), 0x1, "WINDOW_UPDATE of 0 on the connection"),
        (opened(&[frame(8, 0, 0, &[0x7f, 0xff, 0xff, 0xff])]), 0x3, "connection window grew above 2^31-1"),
        (opened(&[frame(3, 0, 5, &[0, 0, 0, 8])]), 0x1, "RST_STREAM on a stream never opened"),
        (opened(&[frame(0x0, 0, 1, &huge)]), 0x6, "frame larger than SETTINGS_MAX_FRAME_SIZE"),
        (opened(&[frame(1, 0x5, 3, GET_ROOT), frame(1, 0x5, 1, GET_ROOT)]), 0x5, "HEADERS on a closed stream"),
    ];
    for (input, code, reason) in cases {
        let got = exchange(Limits::default(), &input, until_closed).await;
        assert_eq!(got.goaway(), Some((code, reason.to_owned())), "case {reason:?}");
        match got.outcome {
            Err(Http2Error::Protocol { code: c, reason: r }) => assert_eq!((c as u32, r), (code, reason)),
            other => panic!("{reason}: serve ended with {other:?}"),
        }
    }
}

#[tokio::test]
async fn stream_level_problems_reset_only_that_stream() {
    let limits = Limits { max_streams: 1, ..Limits::default() };
    // A malformed request (no :path), then two valid ones while the first valid one is still open.
    let no_path = [0x82u8, 0x86];
    let got = exchange(
        limits,
        &opened(&[frame(1, 0x5, 1, &no_path), frame(1, 0x4, 3, GET_ROOT), frame(1, 0x4, 5, GET_ROOT)]),
        |f| f.iter().filter(|f| f.0 == 3).count() == 2,
    )
    .await;
    assert_eq!(
        got.resets(),
        [(1, 0x1), (5, 0x7)],
        "PROTOCOL_ERROR for the malformed one, REFUSED_STREAM past the limit"
    );
    assert_eq!(got.goaway(), None);
}

#[tokio::test]
async fn bodies_a_connection_is_still_sending_are_bounded_together() {
    let limits = Limits { max_body: 10_000, ..Limits::default() };
    let part = vec![7u8; 8_000];
    let mut frames = Vec::new();
    for id in [1, 3, 5] {
        frames.push(frame(1, 0x4, id, GET_ROOT));
        frames.push(frame(0, 0, id, &part));
    }
    let got = exchange(limits, &opened(&frames), |f| f.iter().any(|f| f.0 == 3)).await;
    assert_eq!(got.resets(), [(5, 0xb)], "24,000 bytes held at once is past 2 × 10,000: ENHANCE_YOUR_CALM");
    assert_eq!(got.goaway(), None);
}

#[tokio::test]
async fn a_bad_preface_is_reported() {
    let got = exchange(Limits::default(), b"GET / HTTP/1.1\r\n\r\n", until_closed).await;
    assert!(matches!(got.outcome, Err(Http2Error::BadPreface)), "{:?}", got.outcome);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Arbitrary frames after a valid opening never panic the server, and it always finishes once input ends.
    #[test]
    fn arbitrary_frames_never_panic(frames in proptest::collection::vec(
        (0u8..11, proptest::prelude::any::<u8>(), 0u32..8, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)),
        0..12,
    )) {
        let input = opened(&frames.iter().map(|(k, f, s, p)| frame(*k, *f, *s, p)).collect::<Vec<_>>());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let got = exchange(Limits::default(), &input, |_| true).await;
            if let Err(Http2Error::Io(e)) = &got.outcome {
                // Only a frame cut off by the end of input is an I/O error here.
                proptest::prop_assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
            }
            Ok(())
        })?;
    }
}
