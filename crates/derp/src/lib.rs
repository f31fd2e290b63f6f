#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod crypto;
mod error;
pub mod frame;
pub mod http;
pub mod server;
pub mod stun;

pub use error::DerpError;
pub use server::{AdmitAll, ClientAdmission, DerpConfig, DerpServer, DerpStats, DerpStatsSnapshot};

/// A 32-byte Curve25519 public key as it appears on the wire (node keys, the DERP server key).
pub type Key = [u8; 32];

/// A 24-byte NaCl box nonce.
pub type Nonce = [u8; 24];
