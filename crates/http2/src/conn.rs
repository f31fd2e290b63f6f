//! One HTTP/2 connection: reading and checking frames, per-stream state, flow control, and writing responses.

use crate::frame::{
    DEFAULT_WINDOW, ErrorCode, FrameHeader, HEADER_LEN, Kind, MAX_FRAME_PAYLOAD, MAX_WINDOW, flags, put_goaway,
    put_header, put_rst_stream, put_settings, put_window_update, setting,
};
use crate::headers::{RequestHead, content_length, encode_response, encode_status};
use crate::{Http2Error, Limits, RequestBody};
use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response, StatusCode, request};
use http_body::Body;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::Service;
use tower::util::{Oneshot, ServiceExt};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Output beyond this waits for the socket before more frames are read or more response data is taken.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// A header block (HEADERS plus CONTINUATIONs) larger than this ends the connection: it is far past
/// `max_header_list` even uncompressed, so it can only be an attempt to make us buffer.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Frames read per round, and rounds per poll, before the connection yields to other tasks.
const FRAMES_PER_ROUND: usize = 16;
const ROUNDS_PER_POLL: usize = 32;

/// Serves HTTP/2 on `io` until the client closes it. Each request goes to a clone of `service` once its body has
/// arrived; its response is streamed back as the body yields data and the client's windows allow. What `io`,
/// `service` and its response bodies must be is spelled out once, on the [`Future`] impl of [`Serve`].
pub fn serve<IO, S: Service<Request<RequestBody>>, B>(io: IO, service: S, limits: Limits) -> Serve<IO, S, B> {
    Serve(Connection::new(io, service, limits))
}

/// The future [`serve`] returns: the connection's whole state, with nothing around it, so that an idle connection's
/// task is no larger than what the connection must remember (an `async fn` would also keep its arguments).
pub struct Serve<IO, S: Service<Request<RequestBody>>, B>(Connection<IO, S, B>);

impl<IO, S, B> Future for Serve<IO, S, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Unpin,
    S::Error: Display,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    type Output = Result<(), Http2Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().0.poll_run(cx)
    }
}

struct Connection<IO, S: Service<Request<RequestBody>>, B> {
    io: IO,
    service: S,
    limits: Limits,
    hpack: loona_hpack::Decoder<'static>,
    reader: FrameReader,
    /// Frames not yet written to `io`, from `out_sent` on.
    out: Vec<u8>,
    out_sent: usize,
    needs_flush: bool,
    streams: Vec<Stream<Oneshot<S, Request<RequestBody>>, B>>,
    /// What the client lets us send on the connection as a whole.
    send_window: i64,
    /// What the client may still send us before we credit it.
    recv_window: i64,
    /// `SETTINGS_INITIAL_WINDOW_SIZE` from the client: each new stream's send window.
    stream_initial_window: i64,
    /// Highest stream id the client has opened.
    last_stream: u32,
    /// A header block still waiting for its CONTINUATION frames.
    partial: Option<PartialHeaders>,
    settings_seen: bool,
    client_goaway: bool,
    /// Set when the connection is ending: the outcome, returned once the output (a GOAWAY, say) is written.
    closing: Option<Result<(), Http2Error>>,
}

struct PartialHeaders {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

struct Stream<F, B> {
    id: u32,
    send_window: i64,
    recv_window: i64,
    phase: Phase<F, B>,
}

enum Phase<F, B> {
    /// Headers arrived; the body is still coming. Boxed: a map stream spends its life in `Sending`, and the
    /// request head would make every stream slot several times larger.
    Receiving(Box<Incoming>),
    /// The whole request is with the service.
    Handling(Pin<Box<F>>),
    /// Response headers are sent; `pending` is body data taken from `body` and not yet sent.
    Sending { body: B, pending: Bytes, body_done: bool },
}

struct Incoming {
    head: request::Parts,
    body: BytesMut,
    declared_len: Option<u64>,
}

/// What became of a stream after it was driven.
enum Next {
    Keep,
    Remove,
}

impl<IO, S: Service<Request<RequestBody>>, B> Connection<IO, S, B> {
    fn new(io: IO, service: S, limits: Limits) -> Self {
        let mut hpack = loona_hpack::Decoder::new();
        hpack.set_max_allowed_table_size(4096);
        let mut out = Vec::new();
        // Our SETTINGS open the connection. A header table size of 0 asks the client not to index request headers,
        // so no dynamic table is kept per connection once it has seen this.
        put_settings(
            &mut out,
            &[
                (setting::MAX_CONCURRENT_STREAMS, limits.max_streams),
                (setting::HEADER_TABLE_SIZE, 0),
                (setting::MAX_HEADER_LIST_SIZE, u32::try_from(limits.max_header_list).unwrap_or(u32::MAX)),
            ],
        );
        Connection {
            io,
            service,
            limits,
            hpack,
            reader: FrameReader::default(),
            out,
            out_sent: 0,
            needs_flush: false,
            streams: Vec::new(),
            send_window: DEFAULT_WINDOW,
            recv_window: DEFAULT_WINDOW,
            stream_initial_window: DEFAULT_WINDOW,
            last_stream: 0,
            partial: None,
            settings_seen: false,
            client_goaway: false,
            closing: None,
        }
    }
}

impl<IO, S, B> Connection<IO, S, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone,
    S::Error: Display,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Http2Error>> {
        for _ in 0..ROUNDS_PER_POLL {
            let flushed = self.poll_write_out(cx)?.is_ready();
            if let Some(outcome) = self.closing.take() {
                if flushed {
                    return Poll::Ready(outcome);
                }
                self.closing = Some(outcome);
                return Poll::Pending;
            }
            if self.out.len() >= OUT_HIGH_WATER {
                // `flushed` is false: the socket is full and will wake us.
                return Poll::Pending;
            }
            let mut progress = false;
            for _ in 0..FRAMES_PER_ROUND {
                match self.reader.poll_frame(&mut self.io, cx) {
                    Poll::Ready(Ok(Some((header, payload)))) => {
                        progress = true;
                        if let Err(e) = self.on_frame(header, payload) {
                            self.fail(e);
                            break;
                        }
                        if self.out.len() >= OUT_HIGH_WATER {
                            break;
                        }
                    }
                    // The client closed the connection: nothing it asked for can reach it any more.
                    Poll::Ready(Ok(None)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Err(e @ Http2Error::Protocol { .. })) => {
                        self.fail(e);
                        break;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if self.closing.is_some() {
                continue;
            }
            progress |= self.poll_streams(cx);
            if self.client_goaway && self.streams.is_empty() {
                self.closing = Some(Ok(()));
                continue;
            }
            if !progress {
                // Everything that returned Pending above registered this task's waker.
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes buffered frames and flushes. Ready means nothing is left to write.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_sent += n;
            self.needs_flush = true;
        }
        // Released, not kept for the next write: an idle connection holds no output buffer.
        self.out = Vec::new();
        self.out_sent = 0;
        if self.needs_flush {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Ends the connection over a protocol error: a GOAWAY says why, then the connection closes.
    fn fail(&mut self, e: Http2Error) {
        if let Http2Error::Protocol { code, reason } = &e {
            put_goaway(&mut self.out, self.last_stream, *code, reason);
        }
        self.streams.clear();
        self.closing = Some(Err(e));
    }

    fn on_frame(&mut self, h: FrameHeader, payload: Vec<u8>) -> Result<(), Http2Error> {
        if let Some(partial) = &self.partial
            && (h.kind != Kind::Continuation || h.stream != partial.stream)
        {
            return Err(protocol(ErrorCode::Protocol, "header block interrupted before END_HEADERS"));
        }
        if !self.settings_seen && h.kind != Kind::Settings {
            return Err(protocol(ErrorCode::Protocol, "the client preface must end with a SETTINGS frame"));
        }
        match h.kind {
            Kind::Data => self.on_data(h, payload),
            Kind::Headers => self.on_headers(h, payload),
            Kind::Continuation => self.on_continuation(h, payload),
            Kind::Priority => {
                require_stream(&h, "PRIORITY on stream 0")?;
                if h.len != 5 {
                    self.reset(h.stream, ErrorCode::FrameSize);
                }
                Ok(())
            }
            Kind::RstStream => {
                require_stream(&h, "RST_STREAM on stream 0")?;
                require_len(&h, 4, "RST_STREAM payload is not 4 bytes")?;
                if h.stream > self.last_stream {
                    return Err(protocol(ErrorCode::Protocol, "RST_STREAM on a stream never opened"));
                }
                self.remove(h.stream);
                Ok(())
            }
            Kind::Settings => self.on_settings(h, &payload),
            Kind::PushPromise => Err(protocol(ErrorCode::Protocol, "clients may not send PUSH_PROMISE")),
            Kind::Ping => {
                require_connection(&h, "PING on a stream")?;
                require_len(&h, 8, "PING payload is not 8 bytes")?;
                if !h.has(flags::ACK) {
                    put_header(&mut self.out, 8, Kind::Ping, flags::ACK, 0);
                    self.out.extend_from_slice(&payload);
                }
                Ok(())
            }
            Kind::GoAway => {
                require_connection(&h, "GOAWAY on a stream")?;
                if h.len < 8 {
                    return Err(protocol(ErrorCode::FrameSize, "GOAWAY shorter than 8 bytes"));
                }
                self.client_goaway = true;
                Ok(())
            }
            Kind::WindowUpdate => self.on_window_update(h, &payload),
            Kind::Unknown(_) => Ok(()),
        }
    }

    fn on_settings(&mut self, h: FrameHeader, payload: &[u8]) -> Result<(), Http2Error> {
        require_connection(&h, "SETTINGS on a stream")?;
        if h.has(flags::ACK) {
            if h.len != 0 {
                return Err(protocol(ErrorCode::FrameSize, "SETTINGS acknowledgement with a payload"));
            }
            return Ok(());
        }
        if !h.len.is_multiple_of(6) {
            return Err(protocol(ErrorCode::FrameSize, "SETTINGS length is not a multiple of 6"));
        }
        for entry in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match id {
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(protocol(ErrorCode::Protocol, "SETTINGS_ENABLE_PUSH other than 0 or 1"));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > MAX_WINDOW {
                        return Err(protocol(ErrorCode::FlowControl, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1"));
                    }
                    let delta = value - self.stream_initial_window;
                    self.stream_initial_window = value;
                    for stream in &mut self.streams {
                        stream.send_window += delta;
                        if stream.send_window > MAX_WINDOW {
                            return Err(protocol(ErrorCode::FlowControl, "a stream window grew above 2^31-1"));
                        }
                    }
                }
                setting::MAX_FRAME_SIZE if !(16_384..=16_777_215).contains(&value) => {
                    return Err(protocol(ErrorCode::Protocol, "SETTINGS_MAX_FRAME_SIZE outside 2^14..2^24-1"));
                }
                // We send at most 16 KiB frames (every peer's minimum) and never index response headers, so the
                // client's frame size and header table size need no action; unknown settings must be ignored.
                _ => {}
            }
        }
        self.settings_seen = true;
        put_header(&mut self.out, 0, Kind::Settings, flags::ACK, 0);
        Ok(())
    }

    fn on_window_update(&mut self, h: FrameHeader, payload: &[u8]) -> Result<(), Http2Error> {
        require_len(&h, 4, "WINDOW_UPDATE payload is not 4 bytes")?;
        let increment = i64::from(u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff);
        if h.stream == 0 {
            if increment == 0 {
                return Err(protocol(ErrorCode::Protocol, "WINDOW_UPDATE of 0 on the connection"));
            }
            self.send_window += increment;
            if self.send_window > MAX_WINDOW {
                return Err(protocol(ErrorCode::FlowControl, "connection window grew above 2^31-1"));
            }
            return Ok(());
        }
        let Some(i) = self.find(h.stream) else {
            if h.stream > self.last_stream {
                return Err(protocol(ErrorCode::Protocol, "WINDOW_UPDATE on a stream never opened"));
            }
            return Ok(());
        };
        let stream = &mut self.streams[i];
        stream.send_window += increment;
        if increment == 0 {
            self.reset(h.stream, ErrorCode::Protocol);
        } else if stream.send_window > MAX_WINDOW {
            self.reset(h.stream, ErrorCode::FlowControl);
        }
        Ok(())
    }

    fn on_data(&mut self, h: FrameHeader, payload: Vec<u8>) -> Result<(), Http2Error> {
        require_stream(&h, "DATA on stream 0")?;
        // The whole payload, padding included, counts against both windows. Bodies are collected whole and bounded
        // by `max_body`, so the connection window is credited back at once: it only paces a client's bursts.
        let flow = h.len as i64;
        self.recv_window -= flow;
        if self.recv_window < 0 {
            return Err(protocol(ErrorCode::FlowControl, "DATA beyond the connection window"));
        }
        if flow > 0 {
            put_window_update(&mut self.out, 0, flow as u32);
            self.recv_window += flow;
        }
        let data = &payload[unpadded_range(&h, &payload)?];
        let Some(i) = self.find(h.stream) else {
            if h.stream > self.last_stream {
                return Err(protocol(ErrorCode::Protocol, "DATA on a stream never opened"));
            }
            // A stream we reset or answered early: the client may not have seen that yet.
            return Ok(());
        };
        let max_body = self.limits.max_body;
        let stream = &mut self.streams[i];
        let Phase::Receiving(incoming) = &mut stream.phase else {
            self.reset(h.stream, ErrorCode::StreamClosed);
            return Ok(());
        };
        stream.recv_window -= flow;
        if stream.recv_window < 0 {
            self.reset(h.stream, ErrorCode::FlowControl);
            return Ok(());
        }
        if incoming.body.len() + data.len() > max_body {
            self.respond_locally(h.stream, StatusCode::PAYLOAD_TOO_LARGE, !h.has(flags::END_STREAM));
            return Ok(());
        }
        incoming.body.extend_from_slice(data);
        if self.buffered_bodies() > 2 * max_body {
            // Each body is within the limit, but together they are more than one connection may make us hold.
            self.reset(h.stream, ErrorCode::EnhanceYourCalm);
            return Ok(());
        }
        if h.has(flags::END_STREAM) {
            self.start_handling(i);
        } else if flow > 0 {
            self.streams[i].recv_window += flow;
            put_window_update(&mut self.out, h.stream, flow as u32);
        }
        Ok(())
    }

    fn on_headers(&mut self, h: FrameHeader, mut payload: Vec<u8>) -> Result<(), Http2Error> {
        require_stream(&h, "HEADERS on stream 0")?;
        let mut content = unpadded_range(&h, &payload)?;
        if h.has(flags::PRIORITY) {
            if content.len() < 5 {
                return Err(protocol(ErrorCode::FrameSize, "HEADERS too short for its priority fields"));
            }
            content.start += 5;
        }
        // Keep just the header block fragment, in the frame's own allocation.
        payload.truncate(content.end);
        payload.drain(..content.start);
        let end_stream = h.has(flags::END_STREAM);
        if h.has(flags::END_HEADERS) {
            return self.on_header_block(h.stream, end_stream, &payload);
        }
        self.partial = Some(PartialHeaders { stream: h.stream, end_stream, block: payload });
        Ok(())
    }

    fn on_continuation(&mut self, h: FrameHeader, payload: Vec<u8>) -> Result<(), Http2Error> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(protocol(ErrorCode::Protocol, "CONTINUATION without a header block to continue"));
        };
        if partial.block.len() + payload.len() > MAX_HEADER_BLOCK {
            return Err(protocol(ErrorCode::EnhanceYourCalm, "header block larger than 64 KiB"));
        }
        partial.block.extend_from_slice(&payload);
        if h.has(flags::END_HEADERS)
            && let Some(PartialHeaders { stream, end_stream, block }) = self.partial.take()
        {
            return self.on_header_block(stream, end_stream, &block);
        }
        Ok(())
    }

    fn on_header_block(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), Http2Error> {
        // Decode even blocks we then refuse: the HPACK dynamic table must see every block to stay in step.
        let mut head = RequestHead::new(self.limits.max_header_list);
        self.hpack
            .decode_with_cb(block, |name, value| head.field(&name, &value))
            .map_err(|_| protocol(ErrorCode::Compression, "header block does not decode (HPACK)"))?;
        if id.is_multiple_of(2) {
            return Err(protocol(ErrorCode::Protocol, "client-opened streams must have odd ids"));
        }
        if let Some(i) = self.find(id) {
            // Trailers: allowed only to end a request body still arriving; their fields are not used.
            if !matches!(self.streams[i].phase, Phase::Receiving(_)) {
                self.reset(id, ErrorCode::StreamClosed);
            } else if !end_stream {
                return Err(protocol(ErrorCode::Protocol, "trailers without END_STREAM"));
            } else {
                self.start_handling(i);
            }
            return Ok(());
        }
        if id <= self.last_stream {
            return Err(protocol(ErrorCode::StreamClosed, "HEADERS on a closed stream"));
        }
        self.last_stream = id;
        if self.client_goaway {
            return Ok(());
        }
        if self.streams.len() >= self.limits.max_streams as usize {
            put_rst_stream(&mut self.out, id, ErrorCode::RefusedStream);
            return Ok(());
        }
        if head.list_size() > self.limits.max_header_list {
            self.respond_locally(id, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, !end_stream);
            return Ok(());
        }
        let parsed = head.finish().and_then(|parts| Ok((content_length(&parts.headers)?, parts)));
        let (declared_len, head) = match parsed {
            Ok(ok) => ok,
            Err(reason) => {
                tracing::debug!(stream = id, reason, "malformed HTTP/2 request");
                put_rst_stream(&mut self.out, id, ErrorCode::Protocol);
                return Ok(());
            }
        };
        if declared_len.is_some_and(|n| n > self.limits.max_body as u64) {
            self.respond_locally(id, StatusCode::PAYLOAD_TOO_LARGE, !end_stream);
            return Ok(());
        }
        let body = BytesMut::with_capacity(declared_len.unwrap_or(0) as usize);
        let phase = Phase::Receiving(Box::new(Incoming { head, body, declared_len }));
        let stream = Stream { id, send_window: self.stream_initial_window, recv_window: DEFAULT_WINDOW, phase };
        self.streams.push(stream);
        if end_stream {
            self.start_handling(self.streams.len() - 1);
        }
        Ok(())
    }

    /// The request on stream `i` is complete: hand it to the service.
    fn start_handling(&mut self, i: usize) {
        let stream = &mut self.streams[i];
        let Phase::Receiving(incoming) = &mut stream.phase else {
            return;
        };
        let Incoming { head, body, declared_len } = &mut **incoming;
        if declared_len.is_some_and(|n| n != body.len() as u64) {
            tracing::debug!(stream = stream.id, "request body length differs from its content-length");
            let id = stream.id;
            self.reset(id, ErrorCode::Protocol);
            return;
        }
        let head = std::mem::replace(head, Request::new(()).into_parts().0);
        let request = Request::from_parts(head, RequestBody::new(std::mem::take(body).freeze()));
        stream.phase = Phase::Handling(Box::pin(self.service.clone().oneshot(request)));
    }

    /// Answers a stream with a bare status, without the service. `reset_after` also stops the client sending the
    /// rest of its request body.
    fn respond_locally(&mut self, id: u32, status: StatusCode, reset_after: bool) {
        let mut block = Vec::new();
        encode_status(status, &mut block);
        put_header(&mut self.out, block.len(), Kind::Headers, flags::END_HEADERS | flags::END_STREAM, id);
        self.out.extend_from_slice(&block);
        if reset_after {
            put_rst_stream(&mut self.out, id, ErrorCode::NoError);
        }
        self.remove(id);
    }

    fn reset(&mut self, id: u32, code: ErrorCode) {
        put_rst_stream(&mut self.out, id, code);
        self.remove(id);
    }

    /// Request body bytes held for streams still receiving.
    fn buffered_bodies(&self) -> usize {
        let receiving = self.streams.iter().filter_map(|s| match &s.phase {
            Phase::Receiving(incoming) => Some(incoming.body.len()),
            _ => None,
        });
        receiving.sum()
    }

    fn find(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    /// Drops a stream's state; for a response in progress that drops its body, which is how a service learns the
    /// client went away.
    fn remove(&mut self, id: u32) {
        if let Some(i) = self.find(id) {
            self.streams.swap_remove(i);
        }
    }

    /// Drives every stream's service call and response body as far as windows and the output buffer allow.
    /// Returns whether anything was written.
    fn poll_streams(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.streams.len() && self.out.len() < OUT_HIGH_WATER {
            let before = self.out.len();
            let next = drive(&mut self.streams[i], &mut self.out, &mut self.send_window, cx);
            progress |= self.out.len() != before;
            match next {
                Next::Keep => i += 1,
                Next::Remove => {
                    self.streams.swap_remove(i);
                }
            }
        }
        progress
    }
}

/// Moves one stream along: its service call to response headers, then body data into DATA frames.
fn drive<F, B, E>(stream: &mut Stream<F, B>, out: &mut Vec<u8>, conn_window: &mut i64, cx: &mut Context<'_>) -> Next
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Display,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    if let Phase::Handling(call) = &mut stream.phase {
        let response = match call.as_mut().poll(cx) {
            Poll::Pending => return Next::Keep,
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(e)) => {
                tracing::debug!(stream = stream.id, error = %e, "service failed");
                put_rst_stream(out, stream.id, ErrorCode::Internal);
                return Next::Remove;
            }
        };
        let (head, body) = response.into_parts();
        let end = body.is_end_stream();
        put_headers(out, stream.id, &head, end);
        if end {
            return Next::Remove;
        }
        stream.phase = Phase::Sending { body, pending: Bytes::new(), body_done: false };
    }
    let Phase::Sending { body, pending, body_done } = &mut stream.phase else {
        return Next::Keep;
    };
    loop {
        if pending.is_empty() && !*body_done {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return Next::Keep,
                Poll::Ready(None) => *body_done = true,
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are dropped: nothing in the control protocol sends them.
                    if let Ok(data) = frame.into_data() {
                        *pending = data;
                    }
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(stream = stream.id, error = %e, "response body failed");
                    put_rst_stream(out, stream.id, ErrorCode::Internal);
                    return Next::Remove;
                }
            }
        }
        if pending.is_empty() {
            put_header(out, 0, Kind::Data, flags::END_STREAM, stream.id);
            return Next::Remove;
        }
        let allowed = (*conn_window).min(stream.send_window).min(MAX_FRAME_PAYLOAD as i64);
        if allowed <= 0 {
            // A WINDOW_UPDATE from the client will wake the connection.
            return Next::Keep;
        }
        let n = pending.len().min(allowed as usize);
        let end = n == pending.len() && (*body_done || body.is_end_stream());
        put_header(out, n, Kind::Data, if end { flags::END_STREAM } else { 0 }, stream.id);
        out.extend_from_slice(&pending[..n]);
        pending.advance(n);
        if pending.is_empty() {
            // An emptied `Bytes` still holds its buffer (a whole first map, or a delta shared with other sessions).
            *pending = Bytes::new();
        }
        *conn_window -= n as i64;
        stream.send_window -= n as i64;
        if end {
            return Next::Remove;
        }
        if out.len() >= OUT_HIGH_WATER {
            return Next::Keep;
        }
    }
}

/// Appends HEADERS (and CONTINUATIONs if the block is larger than a frame) for a response head.
fn put_headers(out: &mut Vec<u8>, id: u32, head: &http::response::Parts, end_stream: bool) {
    let mut block = Vec::new();
    encode_response(head, &mut block);
    let mut chunks = block.chunks(MAX_FRAME_PAYLOAD).peekable();
    let mut kind = Kind::Headers;
    let mut frame_flags = if end_stream { flags::END_STREAM } else { 0 };
    // An empty block still needs its HEADERS frame.
    let first: &[u8] = chunks.next().unwrap_or(&[]);
    let mut chunk = first;
    loop {
        let last = chunks.peek().is_none();
        if last {
            frame_flags |= flags::END_HEADERS;
        }
        put_header(out, chunk.len(), kind, frame_flags, id);
        out.extend_from_slice(chunk);
        match chunks.next() {
            Some(next) => chunk = next,
            None => break,
        }
        kind = Kind::Continuation;
        frame_flags = 0;
    }
}

/// Where a frame's content lies in its payload, padding excluded (RFC 9113 §6.1).
fn unpadded_range(h: &FrameHeader, payload: &[u8]) -> Result<std::ops::Range<usize>, Http2Error> {
    if !h.has(flags::PADDED) {
        return Ok(0..payload.len());
    }
    let Some(&pad) = payload.first() else {
        return Err(protocol(ErrorCode::FrameSize, "padded frame without a pad length"));
    };
    let end = (payload.len() - 1)
        .checked_sub(usize::from(pad))
        .ok_or_else(|| protocol(ErrorCode::Protocol, "padding longer than the frame"))?;
    Ok(1..end + 1)
}

fn protocol(code: ErrorCode, reason: &'static str) -> Http2Error {
    Http2Error::Protocol { code, reason }
}

fn require_stream(h: &FrameHeader, reason: &'static str) -> Result<(), Http2Error> {
    if h.stream == 0 {
        return Err(protocol(ErrorCode::Protocol, reason));
    }
    Ok(())
}

fn require_connection(h: &FrameHeader, reason: &'static str) -> Result<(), Http2Error> {
    if h.stream != 0 {
        return Err(protocol(ErrorCode::Protocol, reason));
    }
    Ok(())
}

fn require_len(h: &FrameHeader, len: usize, reason: &'static str) -> Result<(), Http2Error> {
    if h.len != len {
        return Err(protocol(ErrorCode::FrameSize, reason));
    }
    Ok(())
}

/// A frame header and its whole payload.
type Frame = (FrameHeader, Vec<u8>);

/// Reads the client preface, then one frame at a time. Only a frame in progress holds a buffer.
#[derive(Default)]
struct FrameReader {
    preface_done: usize,
    head: [u8; HEADER_LEN],
    head_len: usize,
    /// The payload being read: allocated at its exact length once the header is in.
    payload: Vec<u8>,
    payload_len: usize,
    header: Option<FrameHeader>,
}

impl FrameReader {
    /// The next frame, or `None` when the client closed the connection between frames.
    fn poll_frame<IO: AsyncRead + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>, Http2Error>> {
        while self.preface_done < PREFACE.len() {
            let mut buf = [0u8; PREFACE.len()];
            let want = PREFACE.len() - self.preface_done;
            let n = ready!(read_some(io, cx, &mut buf[..want]))?;
            if n == 0 {
                return Poll::Ready(if self.preface_done == 0 { Ok(None) } else { Err(Http2Error::BadPreface) });
            }
            if buf[..n] != PREFACE[self.preface_done..self.preface_done + n] {
                return Poll::Ready(Err(Http2Error::BadPreface));
            }
            self.preface_done += n;
        }
        loop {
            if let Some(header) = self.header {
                while self.payload_len < header.len {
                    let n = ready!(read_some(io, cx, &mut self.payload[self.payload_len..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(truncated()));
                    }
                    self.payload_len += n;
                }
                self.header = None;
                self.payload_len = 0;
                return Poll::Ready(Ok(Some((header, std::mem::take(&mut self.payload)))));
            }
            while self.head_len < HEADER_LEN {
                let n = ready!(read_some(io, cx, &mut self.head[self.head_len..]))?;
                if n == 0 {
                    return Poll::Ready(if self.head_len == 0 { Ok(None) } else { Err(truncated()) });
                }
                self.head_len += n;
            }
            self.head_len = 0;
            let header = FrameHeader::parse(&self.head);
            if header.len > MAX_FRAME_PAYLOAD {
                return Poll::Ready(Err(protocol(ErrorCode::FrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE")));
            }
            self.payload = vec![0; header.len];
            self.header = Some(header);
        }
    }
}

fn truncated() -> Http2Error {
    Http2Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside an HTTP/2 frame"))
}

fn read_some<IO: AsyncRead + Unpin>(io: &mut IO, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
    let mut rb = ReadBuf::new(buf);
    ready!(Pin::new(io).poll_read(cx, &mut rb))?;
    Poll::Ready(Ok(rb.filled().len()))
}
