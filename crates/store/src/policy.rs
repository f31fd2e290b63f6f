//! Versioned policies and the audit log of a tenant.

use crate::error::{Result, StoreError};
use crate::records::{AuditEntry, AuditRow, PolicyRecord, PolicyRow, audit_cols, now_ms, policy_cols};
use crate::store::{TenantStore, read_db, write_db};

impl TenantStore<'_> {
    /// The policy in force (the latest stored version), if any was stored.
    pub async fn latest_policy(&self) -> Result<Option<PolicyRecord>> {
        let row: Option<PolicyRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                policy_cols!(),
                " FROM policies WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1"
            ))
            .bind(self.tid())
            .fetch_optional(db)
            .await?
        });
        Ok(row.map(Into::into))
    }

    /// Stores a new policy version (the caller validates `data` first); it becomes the latest.
    pub async fn put_policy(&self, data: &str, now_ms: i64) -> Result<PolicyRecord> {
        let row: Result<PolicyRow> = write_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "INSERT INTO policies (tenant_id, data, created_ms) VALUES ($1, $2, $3) RETURNING ",
                policy_cols!()
            ))
            .bind(self.tid())
            .bind(data)
            .bind(now_ms)
            .fetch_one(db)
            .await
            .map_err(StoreError::from)
        });
        row.map(Into::into).map_err(|e| self.missing_tenant(e))
    }

    /// Appends an audit entry stamped with the current time.
    pub async fn append_audit(&self, actor: &str, action: &str, detail: &serde_json::Value) -> Result<AuditEntry> {
        let detail = detail.to_string();
        let row: Result<AuditRow> = write_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "INSERT INTO audit_log (tenant_id, at_ms, actor, action, detail) VALUES ($1, $2, $3, $4, $5) \
                 RETURNING ",
                audit_cols!()
            ))
            .bind(self.tid())
            .bind(now_ms())
            .bind(actor)
            .bind(action)
            .bind(&detail)
            .fetch_one(db)
            .await
            .map_err(StoreError::from)
        });
        row.map_err(|e| self.missing_tenant(e))?.try_into()
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn list_audit(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                audit_cols!(),
                " FROM audit_log WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(self.tid())
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?
        });
        rows.into_iter().map(TryInto::try_into).collect()
    }
}
