//! Identifiers and validated names shared by every tailwarden crate.
//!
//! Everything here is plain data: no I/O, no async. IDs are newtypes so a node id can never be passed where a
//! user id is expected, and names are validated once at the edge (`Tag::parse`, `DnsLabel::sanitize`).
#![deny(missing_docs)]

mod ids;
mod names;

pub use ids::{ApiKeyId, NodeId, PreAuthKeyId, TenantId, UserId};
pub use names::{DnsLabel, NameError, Tag};
