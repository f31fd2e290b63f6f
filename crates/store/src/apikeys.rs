//! Management API keys of a tenant.

use crate::error::{Conflict, Entity, Result, StoreError};
use crate::records::{ApiKeyRecord, ApiKeyRow, api_key_cols, now_ms};
use crate::store::{TenantStore, read_db, write_db};
use tailwarden_types::ApiKeyId;

impl TenantStore<'_> {
    /// Stores an API key (`prefix` and `hash` from [`crate::secret::GeneratedSecret`]). Fails with
    /// [`Conflict::KeyPrefix`] if the prefix exists in any tenant.
    pub async fn create_api_key(&self, prefix: &str, hash: &[u8], expiration_ms: Option<i64>) -> Result<ApiKeyRecord> {
        let row: Result<ApiKeyRow> = write_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "INSERT INTO api_keys (tenant_id, prefix, hash, expiration_ms, last_seen_ms, created_ms) \
                 VALUES ($1, $2, $3, $4, NULL, $5) RETURNING ",
                api_key_cols!()
            ))
            .bind(self.tid())
            .bind(prefix)
            .bind(hash)
            .bind(expiration_ms)
            .bind(now_ms())
            .fetch_one(db)
            .await
            .map_err(StoreError::from)
        });
        row.map(Into::into).map_err(|e| self.missing_tenant(e.or_conflict(|| Conflict::KeyPrefix)))
    }

    /// The tenant's API keys, by id.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows: Vec<ApiKeyRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", api_key_cols!(), " FROM api_keys WHERE tenant_id = $1 ORDER BY id"))
                .bind(self.tid())
                .fetch_all(db)
                .await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The key with this prefix, if it belongs to this tenant.
    pub async fn api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKeyRecord>> {
        let row: Option<ApiKeyRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", api_key_cols!(), " FROM api_keys WHERE tenant_id = $1 AND prefix = $2"))
                .bind(self.tid())
                .bind(prefix)
                .fetch_optional(db)
                .await?
        });
        Ok(row.map(Into::into))
    }

    /// Makes the key invalid from `now_ms` on (an earlier expiration is kept).
    pub async fn expire_api_key(&self, id: ApiKeyId, now_ms: i64) -> Result<()> {
        self.api_key_update(
            id,
            "UPDATE api_keys SET expiration_ms = CASE WHEN expiration_ms IS NULL OR expiration_ms > $3 \
             THEN $3 ELSE expiration_ms END WHERE tenant_id = $1 AND id = $2",
            now_ms,
        )
        .await
    }

    /// Records that the key was used at `now_ms`.
    pub async fn touch_api_key(&self, id: ApiKeyId, now_ms: i64) -> Result<()> {
        self.api_key_update(id, "UPDATE api_keys SET last_seen_ms = $3 WHERE tenant_id = $1 AND id = $2", now_ms).await
    }

    /// Deletes the key.
    pub async fn delete_api_key(&self, id: ApiKeyId) -> Result<()> {
        let done = write_db!(self.store, |db| {
            sqlx::query("DELETE FROM api_keys WHERE tenant_id = $1 AND id = $2")
                .bind(self.tid())
                .bind(id.0)
                .execute(db)
                .await?
                .rows_affected()
        });
        if done == 0 {
            return Err(StoreError::not_found(Entity::ApiKey, id.0));
        }
        Ok(())
    }

    async fn api_key_update(&self, id: ApiKeyId, sql: &'static str, ms: i64) -> Result<()> {
        let done = write_db!(self.store, |db| {
            sqlx::query(sql).bind(self.tid()).bind(id.0).bind(ms).execute(db).await?.rows_affected()
        });
        if done == 0 {
            return Err(StoreError::not_found(Entity::ApiKey, id.0));
        }
        Ok(())
    }
}
