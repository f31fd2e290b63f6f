#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
pub mod identity;
pub mod logins;
mod provider;

pub use error::{HttpError, OidcError};
pub use identity::{AccessRules, Identity, Refusal, UserProfile};
pub use provider::{Authorization, CALLBACK_PATH, Callback, Login, OidcProvider, error_chain};
