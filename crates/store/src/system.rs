//! Cross-tenant operations: the only queries that do not bind a tenant id.

use crate::error::{Conflict, Result, StoreError};
use crate::records::{NodeRecord, NodeRow, TenantRecord, TenantRow, node_cols, now_ms, tenant_cols};
use crate::store::{SystemStore, read_db, write_db};
use tailwarden_types::TenantId;

impl SystemStore<'_> {
    /// Every tenant, by id.
    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows: Vec<TenantRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", tenant_cols!(), " FROM tenants ORDER BY id")).fetch_all(db).await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Creates a tenant. Fails with [`Conflict::TenantName`] if the name is taken.
    pub async fn create_tenant(&self, name: &str) -> Result<TenantRecord> {
        let row: Result<TenantRow> = write_db!(self.store, |db| {
            sqlx::query_as(concat!("INSERT INTO tenants (name, created_ms) VALUES ($1, $2) RETURNING ", tenant_cols!()))
                .bind(name)
                .bind(now_ms())
                .fetch_one(db)
                .await
                .map_err(StoreError::from)
        });
        row.map(Into::into).map_err(|e| e.or_conflict(|| Conflict::TenantName(name.to_string())))
    }

    /// The tenant with this name, if any.
    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantRecord>> {
        let row: Option<TenantRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", tenant_cols!(), " FROM tenants WHERE name = $1"))
                .bind(name)
                .fetch_optional(db)
                .await?
        });
        Ok(row.map(Into::into))
    }

    /// The tenant a presented pre-auth key belongs to (prefixes are unique across tenants), so registration can
    /// pick the tenant scope before verifying the key.
    pub async fn tenant_of_pre_auth_key(&self, prefix: &str) -> Result<Option<TenantId>> {
        self.tenant_of("SELECT tenant_id FROM pre_auth_keys WHERE prefix = $1", prefix).await
    }

    /// The tenant a presented API key belongs to.
    pub async fn tenant_of_api_key(&self, prefix: &str) -> Result<Option<TenantId>> {
        self.tenant_of("SELECT tenant_id FROM api_keys WHERE prefix = $1", prefix).await
    }

    /// The node holding this node key in any tenant (node keys identify DERP clients, which carry no tenant).
    pub async fn node_by_node_key(&self, node_key: &str) -> Result<Option<NodeRecord>> {
        let row: Option<NodeRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", node_cols!(), " FROM nodes WHERE node_key = $1"))
                .bind(node_key)
                .fetch_optional(db)
                .await?
        });
        row.map(TryInto::try_into).transpose()
    }

    async fn tenant_of(&self, sql: &'static str, prefix: &str) -> Result<Option<TenantId>> {
        let id: Option<i64> =
            read_db!(self.store, |db| sqlx::query_scalar(sql).bind(prefix).fetch_optional(db).await?);
        Ok(id.map(TenantId))
    }
}
