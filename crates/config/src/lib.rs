#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod decode;
mod defaults;
mod derived;
mod duration;
mod error;
mod extra_records;
mod keys;
mod load;
mod model;
mod net;
mod validate;

pub use defaults::{DEFAULT_STATE_DIR, LETS_ENCRYPT_PRODUCTION, STATE_DIR_ENV, TAILSCALE_V4_RANGE, TAILSCALE_V6_RANGE};
pub use duration::{DurationError, format_duration, parse_duration};
pub use error::{ConfigError, FieldError, Level, Warning, WarningKind};
pub use extra_records::{ExtraRecordsError, read_extra_records};
pub use load::{Loaded, Sources};
pub use model::*;

/// Every key path the loader recognises (including deprecated, renamed, removed and ignored ones), in the
/// order of Headscale's example file. Useful for tooling such as a `configtest` command.
pub fn known_keys() -> impl Iterator<Item = &'static str> {
    keys::KEYS.iter().map(|k| k.path)
}

/// The environment variables that override a key, in order of precedence (`TAILWARDEN_…` then `HEADSCALE_…`),
/// or `None` if the key is unknown or cannot be set from the environment (free-form maps and record lists).
pub fn env_vars_for(key: &str) -> Option<[String; 2]> {
    let k = keys::lookup(key)?;
    matches!(k.kind, keys::Kind::Scalar | keys::Kind::List).then(|| keys::env_names(k.path))
}

#[cfg(test)]
mod tests;
