//! Server side of HTTP/2 (RFC 9113) for the requests Tailscale clients make inside the ts2021 Noise channel.
//!
//! Why not hyper's HTTP/2 server (the `h2` crate): it allocates a 16 KiB write buffer, an 8 KiB read buffer and a
//! 4 KiB HPACK buffer for every connection at the handshake and keeps them for the connection's life, ~33 KiB with
//! its stream slabs, none of it configurable (`docs/benchmarks.md`, "Where a connected node's memory goes"). A
//! control server's connections are idle almost all the time, each holding one long-poll map stream, so that is
//! most of what a connected node costs. This server holds buffers only while there is something in them: a frame
//! being read, output not yet written. HPACK decoding (Huffman codes, the dynamic table) is `loona-hpack`'s.
//!
//! What it serves is what the control protocol needs, and no more: request bodies are collected whole (they are
//! small JSON documents, bounded by [`Limits::max_body`]) before the service sees the request; responses stream with
//! both flow-control windows honoured. There is no server push, no CONNECT, no trailers on responses, and priority
//! signals are read and ignored. Every request and response runs inside the one connection task, with no task
//! spawned per stream.
#![deny(missing_docs)]

mod conn;
mod frame;
mod headers;

pub use conn::{Serve, serve};
pub use frame::ErrorCode;

/// Body of the requests handed to the service: the whole request body, already read.
pub type RequestBody = http_body_util::Full<bytes::Bytes>;

/// What one connection may ask of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body; a larger one is answered `413 Payload Too Large` without reaching the service. The
    /// bodies a connection is still sending may add up to twice this; past that the stream that overflowed is reset
    /// (`ENHANCE_YOUR_CALM`).
    pub max_body: usize,
    /// Streams open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`); more are refused.
    pub max_streams: u32,
    /// Largest decoded request header list (`SETTINGS_MAX_HEADER_LIST_SIZE`); larger is answered `431`.
    pub max_header_list: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_body: 1 << 20, max_streams: 32, max_header_list: 16 * 1024 }
    }
}

/// Why a connection ended other than by the client closing it.
#[derive(Debug, thiserror::Error)]
pub enum Http2Error {
    /// Reading from or writing to the underlying stream failed.
    #[error("HTTP/2 connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The client did not begin with `PRI * HTTP/2.0…`.
    #[error("client did not open with the HTTP/2 connection preface")]
    BadPreface,
    /// The client broke the protocol; it was sent a GOAWAY with `code` and `reason`.
    #[error("HTTP/2 protocol error ({code:?}): {reason}")]
    Protocol {
        /// The error code sent in the GOAWAY.
        code: ErrorCode,
        /// What the client did wrong.
        reason: &'static str,
    },
}
