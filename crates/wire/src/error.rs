//! Errors from decoding client messages.

/// Why a client message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The body is not valid JSON or does not have the expected shape.
    #[error("invalid {message} JSON: {source}")]
    Json {
        /// Which message was being decoded (e.g. "RegisterRequest").
        message: &'static str,
        /// The underlying parse error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A map message was given pre-serialised peers while also holding peers of its own.
    #[error("a map message cannot take spliced peers when it already has a Peers list")]
    PeersTwice,
    /// A map-stream frame could not be compressed.
    #[error("compressing map message: {0}")]
    Compress(#[source] std::io::Error),
}
