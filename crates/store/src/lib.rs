#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod apikeys;
mod error;
pub mod ipalloc;
mod nodes;
mod policy;
mod preauth;
mod records;
pub mod secret;
mod store;
mod system;
mod users;
mod writer;

pub use error::{Conflict, Entity, Result, StoreError};
pub use records::{
    ApiKeyRecord, AuditEntry, NewPreAuthKey, NodeRecord, NodeRegistration, NodeSessionUpdate, PolicyRecord,
    PreAuthKeyRecord, PreAuthKeyUse, RegisterMethod, RegisteredNode, TenantRecord, UserRecord,
};
pub use store::{BackendKind, Store, StoreOptions, SystemStore, TenantStore};
