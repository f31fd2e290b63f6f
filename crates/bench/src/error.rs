//! The generator's errors. Failures of single simulated clients are counted in the report, not raised; these are
//! what ends a client's attempt or the whole run.

use std::time::Duration;

/// Anything that can go wrong talking to the server or setting up a run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A URL the generator cannot use.
    #[error("{what} {url:?}: {reason}")]
    BadUrl {
        /// Which option.
        what: &'static str,
        /// The value given.
        url: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Socket-level failure.
    #[error("{during}: {source}")]
    Io {
        /// What the client was doing.
        during: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// HTTP framing failure (HTTP/1.1 outside Noise, HTTP/2 inside).
    #[error("{during}: {source}")]
    Http {
        /// What the client was doing.
        during: &'static str,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// A request could not be built (a bad header or URI value from the options).
    #[error("building the {during} request: {source}")]
    Request {
        /// Which request.
        during: &'static str,
        /// The cause.
        #[source]
        source: http::Error,
    },
    /// The server answered with an unexpected status.
    #[error("{during}: HTTP {status}: {body}")]
    Status {
        /// Which request.
        during: &'static str,
        /// The status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// JSON that does not parse as the expected message.
    #[error("decoding {what}: {source}")]
    Json {
        /// Which message.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A zstd payload that does not decompress.
    #[error("decompressing a map message: {0}")]
    Zstd(#[source] std::io::Error),
    /// A map-stream length prefix beyond what any client accepts.
    #[error("map message of {len} bytes exceeds the 16 MiB clients accept")]
    MessageTooLarge {
        /// The announced length.
        len: usize,
    },
    /// The server's `/key` answer lacks a usable Noise key.
    #[error("server Noise key {0:?} is not an mkey")]
    ServerKey(String),
    /// The ts2021 upgrade was refused.
    #[error("ts2021 upgrade refused: {0}")]
    Upgrade(String),
    /// The Noise handshake failed.
    #[error("Noise handshake: {0}")]
    Noise(#[source] ts_control_noise::Error),
    /// The server did not send the early payload every current server sends before HTTP/2.
    #[error("no early payload after the Noise handshake")]
    EarlyPayload,
    /// `/machine/register` answered with an error or without admitting the node.
    #[error("register refused: {0}")]
    Register(String),
    /// The map stream ended.
    #[error("map stream ended before the first message")]
    StreamEnded,
    /// An operation exceeded its deadline.
    #[error("{during} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        during: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The options ask for something the scenario cannot do.
    #[error("{0}")]
    Options(&'static str),
}
