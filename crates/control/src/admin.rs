//! Management operations on users, pre-auth keys and nodes, shared by the REST API and the CLI. Each one writes
//! through the store and then updates the in-memory tailnet so connected clients see the effect.

use crate::render::now_ms;
use crate::{Control, ControlError, NodeView};
use tailwarden_store::secret::{GeneratedSecret, SecretKind};
use tailwarden_store::{NewPreAuthKey, PreAuthKeyRecord, UserRecord};
use tailwarden_types::{DnsLabel, NodeId, Tag, TenantId, UserId};

/// Parameters of a new pre-auth key.
#[derive(Clone, Debug, Default)]
pub struct NewKeyRequest {
    /// Owner of the nodes registered with it (`None`: tags-only key, tags required).
    pub user: Option<UserId>,
    /// Usable more than once.
    pub reusable: bool,
    /// Nodes are deleted when they go offline.
    pub ephemeral: bool,
    /// Expiry as unix milliseconds; `None` = never.
    pub expiration_ms: Option<i64>,
    /// Tags for the nodes.
    pub tags: Vec<Tag>,
}

impl Control {
    /// Creates a user.
    pub async fn create_user(&self, tenant: TenantId, name: &str, display_name: &str, email: &str) -> Result<UserRecord, ControlError> {
        if name.trim().is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ControlError::Invalid { what: format!("invalid user name {name:?}: must be non-empty without spaces") });
        }
        let user = self.store.tenant(tenant).create_user(name, display_name, email).await?;
        self.tailnet(tenant).await?.upsert_user(user.clone());
        Ok(user)
    }

    /// Lists users.
    pub async fn list_users(&self, tenant: TenantId) -> Result<Vec<UserRecord>, ControlError> {
        Ok(self.store.tenant(tenant).list_users().await?)
    }

    /// Finds a user by name.
    pub async fn user_by_name(&self, tenant: TenantId, name: &str) -> Result<UserRecord, ControlError> {
        self.store
            .tenant(tenant)
            .user_by_name(name)
            .await?
            .ok_or_else(|| ControlError::Invalid { what: format!("user {name:?} does not exist") })
    }

    /// Creates a pre-auth key; returns the record and the secret, which is shown once and never stored.
    pub async fn create_pre_auth_key(&self, tenant: TenantId, req: NewKeyRequest) -> Result<(PreAuthKeyRecord, String), ControlError> {
        if req.user.is_none() && req.tags.is_empty() {
            return Err(ControlError::Invalid { what: "a pre-auth key needs a user or at least one tag".into() });
        }
        if let Some(exp) = req.expiration_ms
            && exp <= now_ms()
        {
            return Err(ControlError::Invalid { what: "expiration is in the past".into() });
        }
        let secret = GeneratedSecret::new(SecretKind::PreAuthKey, &mut rand::rngs::OsRng);
        let record = self
            .store
            .tenant(tenant)
            .create_pre_auth_key(NewPreAuthKey {
                user_id: req.user,
                reusable: req.reusable,
                ephemeral: req.ephemeral,
                tags: req.tags,
                expiration_ms: req.expiration_ms,
                prefix: secret.prefix.clone(),
                hash: secret.hash.clone(),
            })
            .await?;
        Ok((record, secret.display))
    }

    /// Lists pre-auth keys, optionally of one user.
    pub async fn list_pre_auth_keys(&self, tenant: TenantId, user: Option<UserId>) -> Result<Vec<PreAuthKeyRecord>, ControlError> {
        Ok(self.store.tenant(tenant).list_pre_auth_keys(user).await?)
    }

    /// Lists nodes with their online state, optionally of one user.
    pub async fn list_nodes(&self, tenant: TenantId, user: Option<UserId>) -> Result<Vec<NodeView>, ControlError> {
        let mut views = self.tailnet(tenant).await?.views();
        if let Some(u) = user {
            views.retain(|v| v.record.user_id == Some(u));
        }
        Ok(views)
    }

    /// Deletes a node: it disappears from every peer's map and its session ends.
    pub async fn delete_node(&self, tenant: TenantId, id: NodeId) -> Result<(), ControlError> {
        self.store.tenant(tenant).delete_node(id).await?;
        self.tailnet(tenant).await?.remove_node(id);
        Ok(())
    }

    /// Expires a node's key now: the client is logged out and peers mark it expired.
    pub async fn expire_node(&self, tenant: TenantId, id: NodeId) -> Result<NodeView, ControlError> {
        let record = self.store.tenant(tenant).set_node_expiry(id, Some(now_ms())).await?;
        self.apply_node(tenant, record).await
    }

    /// Renames a node (its MagicDNS name).
    pub async fn rename_node(&self, tenant: TenantId, id: NodeId, name: &str) -> Result<NodeView, ControlError> {
        let label = DnsLabel::parse(name).ok_or_else(|| ControlError::Invalid {
            what: format!("invalid node name {name:?}: use lower-case letters, digits and '-', at most 63"),
        })?;
        let record = self.store.tenant(tenant).rename_node(id, label).await?;
        self.apply_node(tenant, record).await
    }

    async fn apply_node(&self, tenant: TenantId, record: tailwarden_store::NodeRecord) -> Result<NodeView, ControlError> {
        let tailnet = self.tailnet(tenant).await?;
        let id = record.id;
        tailnet.upsert_node(record, &self.settings);
        let entry = tailnet.node(id).ok_or_else(|| ControlError::Invalid { what: format!("node {id} vanished") })?;
        Ok(NodeView { record: entry.record, online: entry.online })
    }
}
