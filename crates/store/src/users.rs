//! Users of a tenant.

use crate::error::{Conflict, Entity, Result, StoreError};
use crate::records::{UserRecord, UserRow, now_ms, user_cols};
use crate::store::{TenantStore, read_db, transaction, write_db};
use tailwarden_types::UserId;

impl TenantStore<'_> {
    /// Creates a user. Fails with [`Conflict::UserName`] if the name is taken in this tenant.
    pub async fn create_user(&self, name: &str, display_name: &str, email: &str) -> Result<UserRecord> {
        self.insert_user(name, display_name, email, None).await
    }

    /// Creates a user that logs in through OIDC with the given provider identity (unique per tenant).
    pub async fn create_user_with_identity(
        &self,
        name: &str,
        display_name: &str,
        email: &str,
        provider_identifier: &str,
    ) -> Result<UserRecord> {
        self.insert_user(name, display_name, email, Some(provider_identifier)).await
    }

    async fn insert_user(
        &self,
        name: &str,
        display_name: &str,
        email: &str,
        provider_identifier: Option<&str>,
    ) -> Result<UserRecord> {
        let now = now_ms();
        let row: Result<UserRow> = write_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "INSERT INTO users (tenant_id, name, display_name, email, provider_identifier, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING ",
                user_cols!()
            ))
            .bind(self.tid())
            .bind(name)
            .bind(display_name)
            .bind(email)
            .bind(provider_identifier)
            .bind(now)
            .fetch_one(db)
            .await
            .map_err(StoreError::from)
        });
        match row {
            Ok(row) => Ok(row.into()),
            Err(e) => Err(match e.unique_violation() {
                Some(d) if d.contains("provider_identifier") => {
                    StoreError::conflict(Conflict::ProviderIdentifier(provider_identifier.unwrap_or("").to_string()))
                }
                Some(_) => StoreError::conflict(Conflict::UserName(name.to_string())),
                None => self.missing_tenant(e),
            }),
        }
    }

    /// All users of the tenant, by id.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows: Vec<UserRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE tenant_id = $1 ORDER BY id"))
                .bind(self.tid())
                .fetch_all(db)
                .await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The user with this name, if any.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE tenant_id = $1 AND name = $2"))
                .bind(self.tid())
                .bind(name)
                .fetch_optional(db)
                .await?
        });
        Ok(row.map(Into::into))
    }

    /// The user with this id, if any.
    pub async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE tenant_id = $1 AND id = $2"))
                .bind(self.tid())
                .bind(id.0)
                .fetch_optional(db)
                .await?
        });
        Ok(row.map(Into::into))
    }

    /// The user with this OIDC identity, if any.
    pub async fn user_by_provider_identifier(&self, provider_identifier: &str) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                user_cols!(),
                " FROM users WHERE tenant_id = $1 AND provider_identifier = $2"
            ))
            .bind(self.tid())
            .bind(provider_identifier)
            .fetch_optional(db)
            .await?
        });
        Ok(row.map(Into::into))
    }

    /// Renames a user. Fails with [`Conflict::UserName`] if the new name is taken.
    pub async fn rename_user(&self, id: UserId, new_name: &str) -> Result<UserRecord> {
        let row: Result<Option<UserRow>> = write_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "UPDATE users SET name = $3, updated_ms = $4 WHERE tenant_id = $1 AND id = $2 RETURNING ",
                user_cols!()
            ))
            .bind(self.tid())
            .bind(id.0)
            .bind(new_name)
            .bind(now_ms())
            .fetch_optional(db)
            .await
            .map_err(StoreError::from)
        });
        match row {
            Ok(Some(row)) => Ok(row.into()),
            Ok(None) => Err(StoreError::not_found(Entity::User, id.0)),
            Err(e) => Err(e.or_conflict(|| Conflict::UserName(new_name.to_string()))),
        }
    }

    /// Sets a user's name, display name and email together (an OIDC login refreshing them from the provider's
    /// claims). Fails with [`Conflict::UserName`] if the name is taken by another user.
    pub async fn update_user_profile(
        &self,
        id: UserId,
        name: &str,
        display_name: &str,
        email: &str,
    ) -> Result<UserRecord> {
        let row: Result<Option<UserRow>> = write_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "UPDATE users SET name = $3, display_name = $4, email = $5, updated_ms = $6 \
                 WHERE tenant_id = $1 AND id = $2 RETURNING ",
                user_cols!()
            ))
            .bind(self.tid())
            .bind(id.0)
            .bind(name)
            .bind(display_name)
            .bind(email)
            .bind(now_ms())
            .fetch_optional(db)
            .await
            .map_err(StoreError::from)
        });
        match row {
            Ok(Some(row)) => Ok(row.into()),
            Ok(None) => Err(StoreError::not_found(Entity::User, id.0)),
            Err(e) => Err(e.or_conflict(|| Conflict::UserName(name.to_string()))),
        }
    }

    /// Deletes a user and, in the same transaction, its pre-auth keys. Refuses with
    /// [`StoreError::UserHasNodes`] while the user owns nodes.
    pub async fn delete_user(&self, id: UserId) -> Result<()> {
        let tid = self.tid();
        transaction!(self.store, |conn| {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE tenant_id = $1 AND user_id = $2")
                .bind(tid)
                .bind(id.0)
                .fetch_one(&mut *conn)
                .await?;
            if count > 0 {
                return Err(StoreError::UserHasNodes { user: id, count });
            }
            sqlx::query("DELETE FROM pre_auth_keys WHERE tenant_id = $1 AND user_id = $2")
                .bind(tid)
                .bind(id.0)
                .execute(&mut *conn)
                .await?;
            let deleted = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
                .bind(tid)
                .bind(id.0)
                .execute(&mut *conn)
                .await?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::not_found(Entity::User, id.0));
            }
            Ok(())
        })
    }

    /// Turns a foreign-key violation on `tenant_id` into "tenant not found".
    pub(crate) fn missing_tenant(&self, e: StoreError) -> StoreError {
        if e.is_foreign_key_violation() { StoreError::not_found(Entity::Tenant, self.tid()) } else { e }
    }
}
