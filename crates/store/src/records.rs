//! Owned row types returned by the store, the inputs of its compound writes, and their database row mappings.
//!
//! Every timestamp is unix milliseconds UTC (`…_ms`). JSON columns are TEXT in both backends.

use crate::error::{Result, StoreError};
use serde::Serialize;
use std::net::{Ipv4Addr, Ipv6Addr};
use tailwarden_types::{ApiKeyId, DnsLabel, NodeId, PreAuthKeyId, Tag, TenantId, UserId};

/// A tenant (tailnet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantRecord {
    /// Its id; the default tenant is [`TenantId::DEFAULT`].
    pub id: TenantId,
    /// Unique name.
    pub name: String,
    /// Creation time.
    pub created_ms: i64,
}

/// A user of a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    /// Its id.
    pub id: UserId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// Unique (per tenant) login name.
    pub name: String,
    /// Human-readable name.
    pub display_name: String,
    /// E-mail address, possibly empty.
    pub email: String,
    /// The OIDC `iss`+`sub` identity, for users created by OIDC login.
    pub provider_identifier: Option<String>,
    /// Creation time.
    pub created_ms: i64,
    /// Last modification time.
    pub updated_ms: i64,
}

/// A pre-auth key. The secret itself is never stored; `hash` is compared with [`crate::secret::verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreAuthKeyRecord {
    /// Its id.
    pub id: PreAuthKeyId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// The user nodes registered with it belong to; `None` for keys that only hand out tags.
    pub user_id: Option<UserId>,
    /// Clear-text lookup prefix (unique across tenants).
    pub prefix: String,
    /// Hash of the full key; not serialized so it never reaches API responses.
    #[serde(skip_serializing)]
    pub hash: Vec<u8>,
    /// Whether it may be used more than once.
    pub reusable: bool,
    /// Whether nodes registered with it are ephemeral.
    pub ephemeral: bool,
    /// How many registrations used it.
    pub used_count: i64,
    /// Tags given to nodes registered with it, sorted.
    pub tags: Vec<String>,
    /// When it stops being usable.
    pub expiration_ms: Option<i64>,
    /// Creation time.
    pub created_ms: i64,
}

impl PreAuthKeyRecord {
    /// Whether a registration at `now_ms` could use it (the store re-checks this atomically when it is used).
    pub fn usable_at(&self, now_ms: i64) -> bool {
        (self.reusable || self.used_count == 0) && self.expiration_ms.is_none_or(|e| e > now_ms)
    }
}

/// How a node was registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterMethod {
    /// With a pre-auth key.
    AuthKey,
    /// Approved by an administrator on the command line (interactive web login).
    Cli,
    /// Through an OIDC login.
    Oidc,
}

impl RegisterMethod {
    /// The stored spelling: `authkey`, `cli` or `oidc`.
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterMethod::AuthKey => "authkey",
            RegisterMethod::Cli => "cli",
            RegisterMethod::Oidc => "oidc",
        }
    }

    fn parse(s: &str) -> Option<RegisterMethod> {
        match s {
            "authkey" => Some(RegisterMethod::AuthKey),
            "cli" => Some(RegisterMethod::Cli),
            "oidc" => Some(RegisterMethod::Oidc),
            _ => None,
        }
    }
}

/// A node (device).
///
/// `hostinfo` is kept as the JSON text the client sent: the store does not interpret it, and the control layer
/// deserializes it straight into its own wire type. Lists the store does understand are typed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    /// Its id (also the netmap `ID`).
    pub id: NodeId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// `mkey:…`, unique per tenant.
    pub machine_key: String,
    /// `nodekey:…`, unique across tenants.
    pub node_key: String,
    /// `discokey:…`, empty until the client reports one.
    pub disco_key: String,
    /// Tailnet IPv4 address, if IPv4 is enabled.
    pub ipv4: Option<Ipv4Addr>,
    /// Tailnet IPv6 address, if IPv6 is enabled.
    pub ipv6: Option<Ipv6Addr>,
    /// The host name the client reported.
    pub hostname: String,
    /// The DNS label the node is known by in MagicDNS, unique per tenant.
    pub given_name: String,
    /// The owning user; tagged nodes may have none.
    pub user_id: Option<UserId>,
    /// ACL tags, sorted.
    pub tags: Vec<String>,
    /// The client's `Hostinfo` as JSON text.
    pub hostinfo: String,
    /// The client's reported endpoints (`ip:port`).
    pub endpoints: Vec<String>,
    /// Subnet routes an administrator (or an auto-approver) approved, sorted.
    pub approved_routes: Vec<String>,
    /// When the node key expires; `None` never.
    pub expiry_ms: Option<i64>,
    /// When the node was last connected.
    pub last_seen_ms: Option<i64>,
    /// Whether the node is deleted when it goes offline.
    pub ephemeral: bool,
    /// How it was registered.
    pub register_method: RegisterMethod,
    /// The pre-auth key used by its latest registration, if any and not deleted since.
    pub auth_key_id: Option<PreAuthKeyId>,
    /// Creation time.
    pub created_ms: i64,
    /// Last modification time.
    pub updated_ms: i64,
}

/// A management API key. The secret itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    /// Its id.
    pub id: ApiKeyId,
    /// The tenant it grants access to.
    pub tenant_id: TenantId,
    /// Clear-text lookup prefix (unique across tenants).
    pub prefix: String,
    /// Hash of the full key; not serialized.
    #[serde(skip_serializing)]
    pub hash: Vec<u8>,
    /// When it stops being valid.
    pub expiration_ms: Option<i64>,
    /// When it was last used.
    pub last_seen_ms: Option<i64>,
    /// Creation time.
    pub created_ms: i64,
}

/// One version of a tenant's policy; the one with the highest id is in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyRecord {
    /// Version id, increasing.
    pub id: i64,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The policy text (HuJSON) exactly as submitted.
    pub data: String,
    /// When this version was stored.
    pub created_ms: i64,
}

/// One audit-log entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Its id, increasing.
    pub id: i64,
    /// The tenant.
    pub tenant_id: TenantId,
    /// When it happened.
    pub at_ms: i64,
    /// Who did it (user name, `api-key:<prefix>`, `system`, …).
    pub actor: String,
    /// What was done (`node.register`, `user.delete`, …).
    pub action: String,
    /// Structured details.
    pub detail: serde_json::Value,
}

/// Input of [`crate::TenantStore::create_pre_auth_key`]. `prefix` and `hash` come from
/// [`crate::secret::GeneratedSecret`].
#[derive(Clone, Debug)]
pub struct NewPreAuthKey {
    /// Owner of nodes registered with the key; `None` for a tags-only key.
    pub user_id: Option<UserId>,
    /// Whether the key may be used more than once.
    pub reusable: bool,
    /// Whether nodes registered with it are ephemeral.
    pub ephemeral: bool,
    /// Tags given to nodes registered with it.
    pub tags: Vec<Tag>,
    /// When it stops being usable.
    pub expiration_ms: Option<i64>,
    /// Lookup prefix.
    pub prefix: String,
    /// Hash of the full key.
    pub hash: Vec<u8>,
}

/// Consumes one use of a pre-auth key inside [`crate::TenantStore::register_node`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreAuthKeyUse {
    /// The key (found by prefix and verified by the caller).
    pub id: PreAuthKeyId,
    /// The time of use, compared against the key's expiration.
    pub now_ms: i64,
}

/// Input of [`crate::TenantStore::register_node`].
#[derive(Clone, Debug)]
pub struct NodeRegistration {
    /// `mkey:…`: identifies the device; a known one is a re-login.
    pub machine_key: String,
    /// `nodekey:…`.
    pub node_key: String,
    /// `discokey:…`, or empty.
    pub disco_key: String,
    /// The host name the client reported.
    pub hostname: String,
    /// The wanted given name; a suffix is appended if another node has it (new nodes only).
    pub given_name: DnsLabel,
    /// The owning user.
    pub user_id: Option<UserId>,
    /// ACL tags.
    pub tags: Vec<Tag>,
    /// The client's `Hostinfo` as JSON text.
    pub hostinfo: String,
    /// Key expiry.
    pub expiry_ms: Option<i64>,
    /// Whether the node is ephemeral.
    pub ephemeral: bool,
    /// How it registers.
    pub register_method: RegisterMethod,
    /// The pre-auth key to consume, if registering with one.
    pub auth_key: Option<PreAuthKeyUse>,
    /// The time of registration (`created_ms`/`updated_ms`).
    pub now_ms: i64,
}

/// Result of [`crate::TenantStore::register_node`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegisteredNode {
    /// The node as stored.
    pub node: NodeRecord,
    /// `true` for a new node, `false` for a re-login of a known machine key.
    pub created: bool,
}

/// What a map request changes on a node; `None` fields are left as they are.
#[derive(Clone, Debug, Default)]
pub struct NodeSessionUpdate {
    /// New disco key.
    pub disco_key: Option<String>,
    /// New `Hostinfo` JSON text.
    pub hostinfo: Option<String>,
    /// New endpoints.
    pub endpoints: Option<Vec<String>>,
    /// Time the node was seen.
    pub last_seen_ms: Option<i64>,
}

// ---- database rows -------------------------------------------------------------------------------------------

/// Column lists, shared by every query that reads a whole row, so the row structs below always match.
macro_rules! tenant_cols {
    () => {
        "id, name, created_ms"
    };
}
macro_rules! user_cols {
    () => {
        "id, tenant_id, name, display_name, email, provider_identifier, created_ms, updated_ms"
    };
}
macro_rules! pak_cols {
    () => {
        "id, tenant_id, user_id, prefix, hash, reusable, ephemeral, used_count, tags, expiration_ms, created_ms"
    };
}
macro_rules! node_cols {
    () => {
        "id, tenant_id, machine_key, node_key, disco_key, ipv4, ipv6, hostname, given_name, user_id, tags, \
         hostinfo, endpoints, approved_routes, expiry_ms, last_seen_ms, ephemeral, register_method, auth_key_id, \
         created_ms, updated_ms"
    };
}
macro_rules! api_key_cols {
    () => {
        "id, tenant_id, prefix, hash, expiration_ms, last_seen_ms, created_ms"
    };
}
macro_rules! policy_cols {
    () => {
        "id, tenant_id, data, created_ms"
    };
}
macro_rules! audit_cols {
    () => {
        "id, tenant_id, at_ms, actor, action, detail"
    };
}
pub(crate) use {api_key_cols, audit_cols, node_cols, pak_cols, policy_cols, tenant_cols, user_cols};

#[derive(sqlx::FromRow)]
pub(crate) struct TenantRow {
    id: i64,
    name: String,
    created_ms: i64,
}

impl From<TenantRow> for TenantRecord {
    fn from(r: TenantRow) -> Self {
        TenantRecord { id: TenantId(r.id), name: r.name, created_ms: r.created_ms }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: i64,
    tenant_id: i64,
    name: String,
    display_name: String,
    email: String,
    provider_identifier: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        UserRecord {
            id: UserId(r.id),
            tenant_id: TenantId(r.tenant_id),
            name: r.name,
            display_name: r.display_name,
            email: r.email,
            provider_identifier: r.provider_identifier,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PreAuthKeyRow {
    id: i64,
    tenant_id: i64,
    user_id: Option<i64>,
    prefix: String,
    hash: Vec<u8>,
    reusable: bool,
    ephemeral: bool,
    used_count: i64,
    tags: String,
    expiration_ms: Option<i64>,
    created_ms: i64,
}

impl TryFrom<PreAuthKeyRow> for PreAuthKeyRecord {
    type Error = StoreError;
    fn try_from(r: PreAuthKeyRow) -> Result<Self> {
        Ok(PreAuthKeyRecord {
            id: PreAuthKeyId(r.id),
            tenant_id: TenantId(r.tenant_id),
            user_id: r.user_id.map(UserId),
            prefix: r.prefix,
            hash: r.hash,
            reusable: r.reusable,
            ephemeral: r.ephemeral,
            used_count: r.used_count,
            tags: parse_string_list("pre_auth_keys", "tags", &r.tags)?,
            expiration_ms: r.expiration_ms,
            created_ms: r.created_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct NodeRow {
    id: i64,
    tenant_id: i64,
    machine_key: String,
    node_key: String,
    disco_key: String,
    ipv4: Option<String>,
    ipv6: Option<String>,
    hostname: String,
    given_name: String,
    user_id: Option<i64>,
    tags: String,
    hostinfo: String,
    endpoints: String,
    approved_routes: String,
    expiry_ms: Option<i64>,
    last_seen_ms: Option<i64>,
    ephemeral: bool,
    register_method: String,
    auth_key_id: Option<i64>,
    created_ms: i64,
    updated_ms: i64,
}

impl TryFrom<NodeRow> for NodeRecord {
    type Error = StoreError;
    fn try_from(r: NodeRow) -> Result<Self> {
        let corrupt = |column: &'static str, reason: String| StoreError::Corrupt { table: "nodes", column, reason };
        Ok(NodeRecord {
            id: NodeId(r.id),
            tenant_id: TenantId(r.tenant_id),
            machine_key: r.machine_key,
            node_key: r.node_key,
            disco_key: r.disco_key,
            ipv4: r
                .ipv4
                .map(|s| s.parse().map_err(|_| corrupt("ipv4", format!("{s:?} is not an IPv4 address"))))
                .transpose()?,
            ipv6: r
                .ipv6
                .map(|s| s.parse().map_err(|_| corrupt("ipv6", format!("{s:?} is not an IPv6 address"))))
                .transpose()?,
            hostname: r.hostname,
            given_name: r.given_name,
            user_id: r.user_id.map(UserId),
            tags: parse_string_list("nodes", "tags", &r.tags)?,
            hostinfo: r.hostinfo,
            endpoints: parse_string_list("nodes", "endpoints", &r.endpoints)?,
            approved_routes: parse_string_list("nodes", "approved_routes", &r.approved_routes)?,
            expiry_ms: r.expiry_ms,
            last_seen_ms: r.last_seen_ms,
            ephemeral: r.ephemeral,
            register_method: RegisterMethod::parse(&r.register_method)
                .ok_or_else(|| corrupt("register_method", format!("unknown method {:?}", r.register_method)))?,
            auth_key_id: r.auth_key_id.map(PreAuthKeyId),
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    id: i64,
    tenant_id: i64,
    prefix: String,
    hash: Vec<u8>,
    expiration_ms: Option<i64>,
    last_seen_ms: Option<i64>,
    created_ms: i64,
}

impl From<ApiKeyRow> for ApiKeyRecord {
    fn from(r: ApiKeyRow) -> Self {
        ApiKeyRecord {
            id: ApiKeyId(r.id),
            tenant_id: TenantId(r.tenant_id),
            prefix: r.prefix,
            hash: r.hash,
            expiration_ms: r.expiration_ms,
            last_seen_ms: r.last_seen_ms,
            created_ms: r.created_ms,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PolicyRow {
    id: i64,
    tenant_id: i64,
    data: String,
    created_ms: i64,
}

impl From<PolicyRow> for PolicyRecord {
    fn from(r: PolicyRow) -> Self {
        PolicyRecord { id: r.id, tenant_id: TenantId(r.tenant_id), data: r.data, created_ms: r.created_ms }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    tenant_id: i64,
    at_ms: i64,
    actor: String,
    action: String,
    detail: String,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> Result<Self> {
        Ok(AuditEntry {
            id: r.id,
            tenant_id: TenantId(r.tenant_id),
            at_ms: r.at_ms,
            actor: r.actor,
            action: r.action,
            detail: serde_json::from_str(&r.detail).map_err(|e| StoreError::Corrupt {
                table: "audit_log",
                column: "detail",
                reason: e.to_string(),
            })?,
        })
    }
}

fn parse_string_list(table: &'static str, column: &'static str, text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { table, column, reason: e.to_string() })
}

/// Sorted, de-duplicated JSON array text of `items`.
pub(crate) fn sorted_json_list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let set: std::collections::BTreeSet<String> = items.into_iter().map(Into::into).collect();
    json_list(set.iter())
}

/// JSON array text of `items`, in the given order.
pub(crate) fn json_list<'a, I: IntoIterator<Item = &'a String>>(items: I) -> String {
    let v: Vec<&String> = items.into_iter().collect();
    // Serializing a list of strings cannot fail.
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".to_string())
}

/// Checks that `text` is JSON before it is stored in a JSON column.
pub(crate) fn check_json(field: &'static str, text: &str) -> Result<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|source| StoreError::InvalidJson { field, source })
}

/// The current time in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
