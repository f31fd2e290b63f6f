//! tailwarden's policy engine: Tailscale policy files (HuJSON) parsed, validated, resolved
//! against a tailnet and compiled into what each node receives.
//!
//! The crate is pure: no I/O, no clocks, no async. The pipeline is
//! [`hujson::parse`] → [`Policy::from_value`] → [`Policy::validate`] → [`CompiledPolicy::new`]
//! → [`CompiledPolicy::run_tests`] → [`CompiledPolicy::filter_for`]; [`compile`] runs every
//! step up to the tests.
//!
//! Semantics follow Tailscale's hosted control plane as captured in the conformance vectors
//! (`shared/conformance`), using Headscale's policy v2 as a reading guide.
//!
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod alias;
mod compile;
mod duration;
pub mod error;
pub mod hujson;
mod incremental;
mod index;
pub mod ipset;
pub mod model;
pub mod netmap;
pub mod nodeattrs;
pub mod ssh;
pub mod tailnet;
pub mod tests_block;
mod validate;

pub use compile::{CompiledPolicy, tailscale_addresses, the_internet};
pub use error::{PolicyError, PortError};
pub use incremental::Affected;
pub use model::Policy;
pub use netmap::RouteView;
pub use nodeattrs::TailnetSettings;
pub use tailnet::{Node, Tailnet, User};
pub use validate::USER_GRANTABLE_CAPS;

/// Parses, validates and compiles policy text for a tailnet.
pub fn compile(text: &str, tailnet: &Tailnet) -> Result<CompiledPolicy, PolicyError> {
    let policy = Policy::parse(text)?;
    policy.validate_for(tailnet)?;
    let compiled = CompiledPolicy::new(&policy, tailnet);
    compiled.run_tests()?;
    compiled.run_ssh_tests()?;
    Ok(compiled)
}
