//! The store's error type.

use crate::ipalloc::AllocError;
use serde::Serialize;
use tailwarden_types::{PreAuthKeyId, UserId};

/// What kind of row an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Entity {
    /// A tenant.
    Tenant,
    /// A user.
    User,
    /// A node.
    Node,
    /// A pre-auth key.
    PreAuthKey,
    /// An API key.
    ApiKey,
}

/// Which uniqueness rule a write would have broken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Conflict {
    /// A tenant with this name exists.
    TenantName(String),
    /// A user with this name exists in the tenant.
    UserName(String),
    /// A user with this OIDC identity exists in the tenant.
    ProviderIdentifier(String),
    /// A node with this given name exists in the tenant.
    GivenName(String),
    /// A node with this machine key exists in the tenant.
    MachineKey,
    /// A node with this node key exists (node keys are unique across tenants: they identify DERP clients).
    NodeKey,
    /// A pre-auth or API key with this prefix exists.
    KeyPrefix,
    /// The address is assigned to another node of the tenant.
    Address,
    /// Another uniqueness rule, named by its constraint or columns as the database reported them.
    Other {
        /// The database's description of the violated constraint.
        constraint: String,
    },
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::TenantName(n) => write!(f, "tenant name {n:?} is taken"),
            Conflict::UserName(n) => write!(f, "user name {n:?} is taken"),
            Conflict::ProviderIdentifier(n) => write!(f, "provider identifier {n:?} belongs to another user"),
            Conflict::GivenName(n) => write!(f, "node name {n:?} is taken"),
            Conflict::MachineKey => f.write_str("machine key is already registered"),
            Conflict::NodeKey => f.write_str("node key is already in use"),
            Conflict::KeyPrefix => f.write_str("key prefix is already in use"),
            Conflict::Address => f.write_str("address is already assigned"),
            Conflict::Other { constraint } => write!(f, "unique constraint violated: {constraint}"),
        }
    }
}

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No row of `entity` with `id` exists in the tenant.
    #[error("{entity:?} {id} not found")]
    NotFound {
        /// The kind of row.
        entity: Entity,
        /// Its id.
        id: i64,
    },
    /// A uniqueness rule would be broken.
    #[error("conflict: {what}")]
    Conflict {
        /// Which rule.
        what: Conflict,
    },
    /// The pre-auth key does not exist in the tenant, is expired, or is single-use and already used.
    #[error("pre-auth key {id} is unknown, expired or already used")]
    PreAuthKeyUnusable {
        /// The key that was presented.
        id: PreAuthKeyId,
    },
    /// The user still owns nodes and cannot be deleted.
    #[error("user {user} still owns {count} node(s)")]
    UserHasNodes {
        /// The user.
        user: UserId,
        /// How many nodes it owns.
        count: i64,
    },
    /// No free address is left in a configured prefix.
    #[error(transparent)]
    AddressPoolExhausted(#[from] AllocError),
    /// A value to be stored as JSON is not valid JSON.
    #[error("{field} is not valid JSON: {source}")]
    InvalidJson {
        /// The field.
        field: &'static str,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A stored value could not be read back (written by something other than this crate, or corrupted).
    #[error("corrupt value in {table}.{column}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The URL names neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported database URL scheme {scheme:?}: use sqlite://path, sqlite::memory: or postgres://…")]
    UnsupportedUrl {
        /// The scheme that was given (text before the first ':').
        scheme: String,
    },
    /// A write kept colliding with concurrent writers and was given up.
    #[error("gave up after {attempts} attempts because of concurrent writers: {what}")]
    Contended {
        /// How many times the transaction ran.
        attempts: u32,
        /// The last conflict seen.
        what: Conflict,
    },
    /// Migrating the schema failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The thread write transactions run on could not be started, or has stopped.
    #[error("store writer thread: {0}")]
    Writer(std::io::Error),
}

impl StoreError {
    pub(crate) fn not_found(entity: Entity, id: i64) -> StoreError {
        StoreError::NotFound { entity, id }
    }

    pub(crate) fn conflict(what: Conflict) -> StoreError {
        StoreError::Conflict { what }
    }

    /// The unique-violation description (constraint name on PostgreSQL, message on SQLite), if this is one.
    pub(crate) fn unique_violation(&self) -> Option<String> {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Some(db.constraint().map(str::to_string).unwrap_or_else(|| db.message().to_string()))
            }
            _ => None,
        }
    }

    /// Whether this is a foreign-key violation (a referenced tenant or user does not exist).
    pub(crate) fn is_foreign_key_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation())
    }

    /// Maps a unique violation to `what` (when the statement has a single uniqueness rule that can fire).
    pub(crate) fn or_conflict(self, what: impl FnOnce() -> Conflict) -> StoreError {
        if self.unique_violation().is_some() { StoreError::conflict(what()) } else { self }
    }
}

/// Names the uniqueness rule of the `nodes` table a violation description points at.
///
/// PostgreSQL reports constraint names (`nodes_tenant_id_given_name_key`), SQLite reports columns
/// (`UNIQUE constraint failed: nodes.tenant_id, nodes.given_name`); both contain the column name.
pub(crate) fn classify_node_conflict(description: &str, given_name: &str) -> Conflict {
    if description.contains("given_name") {
        Conflict::GivenName(given_name.to_string())
    } else if description.contains("machine_key") {
        Conflict::MachineKey
    } else if description.contains("node_key") {
        Conflict::NodeKey
    } else if description.contains("ipv4") || description.contains("ipv6") {
        Conflict::Address
    } else {
        Conflict::Other { constraint: description.to_string() }
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
