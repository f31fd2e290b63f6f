//! Pre-auth keys of a tenant. Consuming a key happens inside [`TenantStore::register_node`].

use crate::error::{Conflict, Entity, Result, StoreError};
use crate::records::{NewPreAuthKey, PreAuthKeyRecord, PreAuthKeyRow, now_ms, pak_cols, sorted_json_list};
use crate::store::{TenantStore, read_db, transaction, write_db};
use tailwarden_types::{PreAuthKeyId, UserId};

impl TenantStore<'_> {
    /// Stores a pre-auth key. Fails with [`StoreError::NotFound`] if `user_id` is not a user of this tenant and
    /// with [`Conflict::KeyPrefix`] if the prefix exists (in any tenant).
    pub async fn create_pre_auth_key(&self, key: NewPreAuthKey) -> Result<PreAuthKeyRecord> {
        let tid = self.tid();
        let tags = sorted_json_list(key.tags.iter().map(|t| t.as_str()));
        let now = now_ms();
        let row: Result<PreAuthKeyRow> = transaction!(self.store, |conn| {
            if let Some(user) = key.user_id {
                let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 AND id = $2")
                    .bind(tid)
                    .bind(user.0)
                    .fetch_optional(&mut *conn)
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::not_found(Entity::User, user.0));
                }
            }
            let row = sqlx::query_as(concat!(
                "INSERT INTO pre_auth_keys \
                 (tenant_id, user_id, prefix, hash, reusable, ephemeral, used_count, tags, expiration_ms, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9) RETURNING ",
                pak_cols!()
            ))
            .bind(tid)
            .bind(key.user_id.map(|u| u.0))
            .bind(&key.prefix)
            .bind(&key.hash)
            .bind(key.reusable)
            .bind(key.ephemeral)
            .bind(&tags)
            .bind(key.expiration_ms)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            Ok(row)
        });
        match row {
            Ok(row) => row.try_into(),
            Err(e) => Err(self.missing_tenant(e.or_conflict(|| Conflict::KeyPrefix))),
        }
    }

    /// The tenant's pre-auth keys (only `user`'s if given), by id.
    pub async fn list_pre_auth_keys(&self, user: Option<UserId>) -> Result<Vec<PreAuthKeyRecord>> {
        let rows: Vec<PreAuthKeyRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                pak_cols!(),
                " FROM pre_auth_keys WHERE tenant_id = $1 AND ($2 IS NULL OR user_id = $2) ORDER BY id"
            ))
            .bind(self.tid())
            .bind(user.map(|u| u.0))
            .fetch_all(db)
            .await?
        });
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// The key with this prefix, if it belongs to this tenant.
    pub async fn pre_auth_key_by_prefix(&self, prefix: &str) -> Result<Option<PreAuthKeyRecord>> {
        let row: Option<PreAuthKeyRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", pak_cols!(), " FROM pre_auth_keys WHERE tenant_id = $1 AND prefix = $2"))
                .bind(self.tid())
                .bind(prefix)
                .fetch_optional(db)
                .await?
        });
        row.map(TryInto::try_into).transpose()
    }

    /// The key with this id, if it belongs to this tenant.
    pub async fn pre_auth_key_by_id(&self, id: PreAuthKeyId) -> Result<Option<PreAuthKeyRecord>> {
        let row: Option<PreAuthKeyRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", pak_cols!(), " FROM pre_auth_keys WHERE tenant_id = $1 AND id = $2"))
                .bind(self.tid())
                .bind(id.0)
                .fetch_optional(db)
                .await?
        });
        row.map(TryInto::try_into).transpose()
    }

    /// Makes the key unusable from `now_ms` on (an earlier expiration is kept).
    pub async fn expire_pre_auth_key(&self, id: PreAuthKeyId, now_ms: i64) -> Result<()> {
        let done = write_db!(self.store, |db| {
            sqlx::query(
                "UPDATE pre_auth_keys SET expiration_ms = $3 \
                 WHERE tenant_id = $1 AND id = $2 AND (expiration_ms IS NULL OR expiration_ms > $3)",
            )
            .bind(self.tid())
            .bind(id.0)
            .bind(now_ms)
            .execute(db)
            .await?
            .rows_affected()
        });
        if done == 0 && self.pre_auth_key_by_id(id).await?.is_none() {
            return Err(StoreError::not_found(Entity::PreAuthKey, id.0));
        }
        Ok(())
    }

    /// Deletes the key. Nodes registered with it keep working; their `auth_key_id` becomes `None`.
    pub async fn delete_pre_auth_key(&self, id: PreAuthKeyId) -> Result<()> {
        let done = write_db!(self.store, |db| {
            sqlx::query("DELETE FROM pre_auth_keys WHERE tenant_id = $1 AND id = $2")
                .bind(self.tid())
                .bind(id.0)
                .execute(db)
                .await?
                .rows_affected()
        });
        if done == 0 {
            return Err(StoreError::not_found(Entity::PreAuthKey, id.0));
        }
        Ok(())
    }
}
