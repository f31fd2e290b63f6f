//! `tailwarden-bench`: a protocol-level load generator for Tailscale control servers.
//!
//! Each simulated client is what a Tailscale client looks like to control: one TCP connection, the ts2021 Noise
//! handshake done by Tailscale's own initiator, HTTP/2 inside, `/machine/register` with a pre-auth key, a streaming
//! `/machine/map` with zstd, and endpoint updates as further map requests. Because it speaks only the protocol and
//! Headscale's management API, the same run works against tailwarden and Headscale. The crate README defines every
//! scenario and metric.
#![deny(missing_docs)]

mod api;
mod client;
mod error;
mod http1;
mod metrics;
mod report;
mod run;
mod stream;
mod topology;
mod view;
mod watch;

pub use error::BenchError;
pub use metrics::Summary;
pub use report::{ChangeStats, ErrorCounts, JoinStats, Report, ServerStats, SettleStats};
pub use run::{Layout, Options, Phase, Plan, run};
pub use stream::Compression;
