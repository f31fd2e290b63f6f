//! Numeric identifiers. All are positive 64-bit integers assigned by the store and never reused.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A tenant (tailnet). Every stored row belongs to exactly one.
    TenantId
);
id_type!(
    /// A user within a tenant.
    UserId
);
id_type!(
    /// A node (device). Also the `ID` clients see in their netmap, so it must stay below 2^53.
    NodeId
);
id_type!(
    /// A pre-authentication key.
    PreAuthKeyId
);
id_type!(
    /// An API key for the management API.
    ApiKeyId
);

impl TenantId {
    /// The tenant a single-tenant install uses; created by the first migration.
    pub const DEFAULT: TenantId = TenantId(1);
}
