//! Tailscale control-protocol messages as they appear on the wire.
//!
//! This crate owns the JSON shapes exchanged with clients (register, map, DERP map, DNS, packet filter), the text
//! forms of the public keys, and the framing of the map stream. It follows Go's `encoding/json` rules, which define
//! the protocol: output uses Go's exact key names and omits empty collections (tailscale-rs rejects `null` lists);
//! input is matched case-insensitively, as Go does, because tailscale-rs sends `HostInfo`, `PreferredDerp`, ….
//! See `docs/protocol.md` in the shared material for the reasoning behind each rule.
#![deny(missing_docs)]

mod derpmap;
mod dns;
mod error;
mod filter;
pub mod framing;
mod gojson;
pub mod gotime;
mod hostinfo;
mod keys;
mod map;
mod register;

pub use derpmap::{DerpMap, DerpNode, DerpRegion};
pub use dns::{DnsConfig, DnsRecord, DnsResolver};
pub use error::WireError;
pub use filter::{CapGrant, FilterRule, NetPortRange, PortRange};
pub use gojson::from_go_json;
pub use hostinfo::{Hostinfo, NetInfo, Service};
pub use keys::{ChallengeKey, DiscoKey, KeyParseError, MachineKey, NodeKey};
pub use map::{DebugSettings, EarlyNoise, MapRequest, MapResponse, Node, PeerChange, PingRequest, UserProfile};
pub use register::{AuthInfo, Login, RegisterRequest, RegisterResponse, User};

/// Lowest client capability version the server accepts (Tailscale v1.80, Headscale's floor too).
pub const MIN_CAPABILITY_VERSION: u16 = 113;

/// The capability version clients of Tailscale v1.90 report; used in tests and by the simulated client.
pub const CURRENT_CAPABILITY_VERSION: u16 = 130;
