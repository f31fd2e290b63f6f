//! Management operations on users, pre-auth keys and nodes, shared by the REST API and the CLI. Each one writes
//! through the store and then updates the in-memory tailnet so connected clients see the effect.

use crate::render::now_ms;
use crate::tailnet::SessionFields;
use crate::{Control, ControlError, NodeView};
use tailwarden_store::secret::{self, GeneratedSecret, SecretKind};
use tailwarden_store::{ApiKeyRecord, Entity, NewPreAuthKey, PreAuthKeyRecord, StoreError, UserRecord};
use tailwarden_types::{DnsLabel, NodeId, PreAuthKeyId, Tag, TenantId, UserId};

/// How often at most a key's last-seen time is written: every request would turn reads into writes.
const API_KEY_TOUCH_INTERVAL_MS: i64 = 60_000;

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
    pub async fn create_user(
        &self,
        tenant: TenantId,
        name: &str,
        display_name: &str,
        email: &str,
    ) -> Result<UserRecord, ControlError> {
        check_user_name(name)?;
        let user = self.store.tenant(tenant).create_user(name, display_name, email).await?;
        self.tailnet(tenant).await?.upsert_user(user.clone(), &self.settings);
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
    pub async fn create_pre_auth_key(
        &self,
        tenant: TenantId,
        req: NewKeyRequest,
    ) -> Result<(PreAuthKeyRecord, String), ControlError> {
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
    pub async fn list_pre_auth_keys(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
    ) -> Result<Vec<PreAuthKeyRecord>, ControlError> {
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
        self.tailnet(tenant).await?.remove_node(id, &self.settings);
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

    /// Sets a node's key expiry (`None`: never expires).
    pub async fn set_node_expiry(
        &self,
        tenant: TenantId,
        id: NodeId,
        expiry_ms: Option<i64>,
    ) -> Result<NodeView, ControlError> {
        let record = self.store.tenant(tenant).set_node_expiry(id, expiry_ms).await?;
        self.apply_node(tenant, record).await
    }

    /// One node with its online state.
    pub async fn get_node(&self, tenant: TenantId, id: NodeId) -> Result<NodeView, ControlError> {
        let entry =
            self.tailnet(tenant).await?.node(id).ok_or(StoreError::NotFound { entity: Entity::Node, id: id.0 })?;
        Ok(NodeView { record: entry.record, online: entry.online })
    }

    /// Replaces a node's tags; peers see it as a tagged device from then on.
    pub async fn set_tags(&self, tenant: TenantId, id: NodeId, tags: Vec<Tag>) -> Result<NodeView, ControlError> {
        let record = self.store.tenant(tenant).set_node_tags(id, tags).await?;
        self.apply_node(tenant, record).await
    }

    /// Replaces a node's approved subnet routes. Each must be a network address in CIDR form (`10.0.0.0/24`);
    /// routes the node also advertises become reachable through it.
    pub async fn approve_routes(
        &self,
        tenant: TenantId,
        id: NodeId,
        routes: &[String],
    ) -> Result<NodeView, ControlError> {
        let mut parsed = Vec::with_capacity(routes.len());
        for route in routes.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            let net: ipnet::IpNet = route.parse().map_err(|_| ControlError::Invalid {
                what: format!("route {route:?} is not a CIDR prefix such as 10.0.0.0/24"),
            })?;
            if net.trunc() != net {
                return Err(ControlError::Invalid {
                    what: format!("route {route:?} has host bits set; did you mean {}?", net.trunc()),
                });
            }
            parsed.push(net.to_string());
        }
        let record = self.store.tenant(tenant).set_approved_routes(id, parsed).await?;
        self.apply_node(tenant, record).await
    }

    /// Renames a user. Its nodes are re-sent to their peers so profiles show the new name.
    pub async fn rename_user(&self, tenant: TenantId, id: UserId, new_name: &str) -> Result<UserRecord, ControlError> {
        check_user_name(new_name)?;
        let scope = self.store.tenant(tenant);
        let user = scope.rename_user(id, new_name).await?;
        let tailnet = self.tailnet(tenant).await?;
        tailnet.upsert_user(user.clone(), &self.settings);
        for node in scope.list_nodes_of_user(id).await? {
            tailnet.upsert_node(node, SessionFields::KeepMemory, &self.settings);
        }
        Ok(user)
    }

    /// Deletes a user and its pre-auth keys; refused while the user owns nodes.
    pub async fn delete_user(&self, tenant: TenantId, id: UserId) -> Result<(), ControlError> {
        self.store.tenant(tenant).delete_user(id).await?;
        self.tailnet(tenant).await?.remove_user(id);
        Ok(())
    }

    /// The user with this id.
    pub async fn user_by_id(&self, tenant: TenantId, id: UserId) -> Result<UserRecord, ControlError> {
        Ok(self
            .store
            .tenant(tenant)
            .user_by_id(id)
            .await?
            .ok_or(StoreError::NotFound { entity: Entity::User, id: id.0 })?)
    }

    /// Finds a pre-auth key by its id, its prefix, the prefix as listings show it (`hskey-auth-PREFIX-***`) or
    /// the full key (which must then verify).
    pub async fn find_pre_auth_key(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<PreAuthKeyRecord>, ControlError> {
        let scope = self.store.tenant(tenant);
        let key = key.trim();
        if let Ok(id) = key.parse::<i64>() {
            return Ok(scope.pre_auth_key_by_id(PreAuthKeyId(id)).await?);
        }
        let (prefix, presented_hash) = presented_prefix(SecretKind::PreAuthKey, key);
        let record = scope.pre_auth_key_by_prefix(&prefix).await?;
        Ok(record.filter(|r| presented_hash.is_none_or(|h| secret::verify(&r.hash, &h))))
    }

    /// Makes a pre-auth key unusable from now on.
    pub async fn expire_pre_auth_key(&self, tenant: TenantId, id: PreAuthKeyId) -> Result<(), ControlError> {
        Ok(self.store.tenant(tenant).expire_pre_auth_key(id, now_ms()).await?)
    }

    /// Deletes a pre-auth key; nodes registered with it stay.
    pub async fn delete_pre_auth_key(&self, tenant: TenantId, id: PreAuthKeyId) -> Result<(), ControlError> {
        Ok(self.store.tenant(tenant).delete_pre_auth_key(id).await?)
    }

    /// Creates a management API key; returns the record and the key, which is shown once and never stored.
    pub async fn create_api_key(
        &self,
        tenant: TenantId,
        expiration_ms: Option<i64>,
    ) -> Result<(ApiKeyRecord, String), ControlError> {
        if let Some(exp) = expiration_ms
            && exp <= now_ms()
        {
            return Err(ControlError::Invalid { what: "expiration is in the past".into() });
        }
        let secret = GeneratedSecret::new(SecretKind::ApiKey, &mut rand::rngs::OsRng);
        let record = self.store.tenant(tenant).create_api_key(&secret.prefix, &secret.hash, expiration_ms).await?;
        Ok((record, secret.display))
    }

    /// Lists API keys.
    pub async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyRecord>, ControlError> {
        Ok(self.store.tenant(tenant).list_api_keys().await?)
    }

    /// Finds an API key by prefix, listed form (`hskey-api-PREFIX-***`), full key (which must then verify) or id.
    pub async fn find_api_key(&self, tenant: TenantId, key: &str) -> Result<Option<ApiKeyRecord>, ControlError> {
        let scope = self.store.tenant(tenant);
        let key = key.trim();
        let (prefix, presented_hash) = presented_prefix(SecretKind::ApiKey, key);
        let record = match scope.api_key_by_prefix(&prefix).await? {
            Some(r) => Some(r),
            None => match key.parse::<i64>() {
                Ok(id) => scope.list_api_keys().await?.into_iter().find(|k| k.id.0 == id),
                Err(_) => None,
            },
        };
        Ok(record.filter(|r| presented_hash.is_none_or(|h| secret::verify(&r.hash, &h))))
    }

    /// Makes an API key invalid from now on.
    pub async fn expire_api_key(&self, tenant: TenantId, key: &ApiKeyRecord) -> Result<(), ControlError> {
        Ok(self.store.tenant(tenant).expire_api_key(key.id, now_ms()).await?)
    }

    /// Deletes an API key.
    pub async fn delete_api_key(&self, tenant: TenantId, key: &ApiKeyRecord) -> Result<(), ControlError> {
        Ok(self.store.tenant(tenant).delete_api_key(key.id).await?)
    }

    /// Checks a presented API key (`hskey-api-…`): the tenant it grants access to, or `None` when it is
    /// malformed, unknown or expired. Records its use.
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<Option<TenantId>, ControlError> {
        let Ok((prefix, hash)) = secret::parse_presented(SecretKind::ApiKey, presented) else { return Ok(None) };
        let Some(tenant) = self.store.system().tenant_of_api_key(&prefix).await? else { return Ok(None) };
        let scope = self.store.tenant(tenant);
        let Some(record) = scope.api_key_by_prefix(&prefix).await? else { return Ok(None) };
        let now = now_ms();
        if !secret::verify(&record.hash, &hash) || record.expiration_ms.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        if record.last_seen_ms.is_none_or(|seen| now - seen >= API_KEY_TOUCH_INTERVAL_MS) {
            scope.touch_api_key(record.id, now).await?;
        }
        Ok(Some(tenant))
    }

    /// A cheap query proving the database answers.
    pub async fn database_ok(&self) -> bool {
        match self.store.system().list_tenants().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "health check: database query failed");
                false
            }
        }
    }

    async fn apply_node(
        &self,
        tenant: TenantId,
        record: tailwarden_store::NodeRecord,
    ) -> Result<NodeView, ControlError> {
        let tailnet = self.tailnet(tenant).await?;
        let id = record.id;
        tailnet.upsert_node(record, SessionFields::KeepMemory, &self.settings);
        let entry = tailnet.node(id).ok_or_else(|| ControlError::Invalid { what: format!("node {id} vanished") })?;
        Ok(NodeView { record: entry.record, online: entry.online })
    }
}

pub(crate) fn check_user_name(name: &str) -> Result<(), ControlError> {
    if name.trim().is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ControlError::Invalid {
            what: format!("invalid user name {name:?}: must be non-empty without spaces"),
        });
    }
    Ok(())
}

/// The lookup prefix of a key as an administrator may type it — the bare prefix, the listed form
/// (`hskey-…-PREFIX-***`) or the whole key — and, for a whole key, the hash to verify.
fn presented_prefix(kind: SecretKind, key: &str) -> (String, Option<Vec<u8>>) {
    if let Ok((prefix, hash)) = secret::parse_presented(kind, key) {
        return (prefix, Some(hash));
    }
    let rest = key.strip_prefix(kind.display_prefix()).unwrap_or(key);
    let prefix = rest.split('-').next().unwrap_or(rest).trim_end_matches('*');
    (prefix.to_string(), None)
}

#[cfg(test)]
mod tests {
    //! Management changes reach connected map sessions.

    use super::*;
    use crate::Settings;
    use crate::keys::ServerKeys;
    use serde_json::Value;
    use tailwarden_store::{NodeRegistration, RegisterMethod, Store};
    use tailwarden_wire::framing::Compression;

    const T: TenantId = TenantId::DEFAULT;

    async fn setup() -> (std::sync::Arc<Control>, NodeId, NodeId) {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let scope = store.tenant(T);
        let alice = scope.create_user("alice", "", "").await.unwrap();
        let mut ids = Vec::new();
        for (i, name) in ["n1", "n2"].into_iter().enumerate() {
            let hostinfo = serde_json::json!({"Hostname": name, "RoutableIPs": ["10.0.0.0/24"]}).to_string();
            let reg = NodeRegistration {
                machine_key: format!("mkey:{}", format!("{:02x}", i + 1).repeat(32)),
                node_key: format!("nodekey:{}", format!("{:02x}", i + 0x10).repeat(32)),
                disco_key: String::new(),
                hostname: name.into(),
                given_name: DnsLabel::parse(name).unwrap(),
                user_id: Some(alice.id),
                tags: vec![],
                hostinfo,
                expiry_ms: None,
                ephemeral: false,
                register_method: RegisterMethod::Cli,
                auth_key: None,
                now_ms: now_ms(),
            };
            ids.push(scope.register_node(reg).await.unwrap().node.id);
        }
        let control = Control::new(store, Settings::for_tests(Default::default()), ServerKeys::random()).await.unwrap();
        (control, ids[0], ids[1])
    }

    /// The next message queued to a session, decoded.
    async fn next(queue: &mut crate::session_queue::QueueReceiver) -> Value {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(1), queue.recv()).await.unwrap().unwrap();
        serde_json::from_slice(&frame[4..]).unwrap()
    }

    fn peer(msg: &Value, id: NodeId) -> &Value {
        msg["PeersChanged"].as_array().unwrap().iter().find(|p| p["ID"] == id.0).unwrap()
    }

    #[tokio::test]
    async fn admin_changes_reach_connected_peers() {
        let (control, n1, n2) = setup().await;
        let tailnet = control.tailnet(T).await.unwrap();
        // Online, so it can be elected primary router for the route it advertises.
        let (_router, _) = tailnet.open_session(n1, Compression::None, control.settings()).unwrap();
        let (mut session, _first) = tailnet.open_session(n2, Compression::None, control.settings()).unwrap();

        control.approve_routes(T, n1, &["10.0.0.0/24".into()]).await.unwrap();
        let msg = next(&mut session.queue).await;
        let p = peer(&msg, n1);
        assert!(p["AllowedIPs"].as_array().unwrap().contains(&"10.0.0.0/24".into()), "{msg}");
        assert_eq!(p["PrimaryRoutes"], serde_json::json!(["10.0.0.0/24"]));

        control.set_tags(T, n1, vec![Tag::parse("tag:web").unwrap()]).await.unwrap();
        let msg = next(&mut session.queue).await;
        assert_eq!(peer(&msg, n1)["Tags"], serde_json::json!(["tag:web"]));

        // n2 still belongs to alice: renaming her re-sends n2 with the new profile, to n2 itself.
        let alice = control.user_by_name(T, "alice").await.unwrap();
        control.rename_user(T, alice.id, "carol").await.unwrap();
        let mut seen = Vec::new();
        while !seen.iter().any(|m: &Value| m["UserProfiles"].to_string().contains("carol")) {
            assert!(seen.len() < 3, "no profile with the new name: {seen:?}");
            seen.push(next(&mut session.queue).await);
        }
        assert!(control.rename_user(T, alice.id, "bad name").await.is_err());

        let bob = control.create_user(T, "bob", "", "").await.unwrap();
        control.delete_user(T, bob.id).await.unwrap();
        assert!(tailnet.user(bob.id).is_none());
        assert!(control.delete_user(T, alice.id).await.is_err(), "alice owns nodes");
    }

    #[tokio::test]
    async fn routes_are_validated() {
        let (control, n1, _) = setup().await;
        for bad in ["10.0.0.1/24", "10.0.0.0/33", "nonsense", "10.0.0.0"] {
            assert!(control.approve_routes(T, n1, &[bad.into()]).await.is_err(), "{bad}");
        }
        let view = control.approve_routes(T, n1, &[" ::/0 ".into(), "0.0.0.0/0".into(), String::new()]).await.unwrap();
        assert_eq!(view.record.approved_routes, vec!["0.0.0.0/0".to_string(), "::/0".to_string()]);
    }

    #[test]
    fn typed_key_forms_name_the_prefix() {
        let k = GeneratedSecret::new(SecretKind::ApiKey, &mut rand::rngs::OsRng);
        let (prefix, hash) = presented_prefix(SecretKind::ApiKey, &k.display);
        assert_eq!((prefix.as_str(), hash.is_some()), (k.prefix.as_str(), true));
        let listed = format!("hskey-api-{}-***", k.prefix);
        assert_eq!(presented_prefix(SecretKind::ApiKey, &listed), (k.prefix.clone(), None));
        assert_eq!(presented_prefix(SecretKind::ApiKey, &k.prefix), (k.prefix.clone(), None));
        assert_eq!(presented_prefix(SecretKind::PreAuthKey, "").0, "");
    }
}

/// The policy in force for a tenant, as the API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PolicyInfo {
    /// The HuJSON text; empty when no policy is set (allow all).
    pub policy: String,
    /// When it was stored (database mode), unix milliseconds.
    pub updated_ms: Option<i64>,
}

impl Control {
    /// Checks a policy against the tenant's current tailnet, including its `tests` and `sshTests`, without
    /// applying it.
    pub async fn check_policy(&self, tenant: TenantId, text: &str) -> Result<(), ControlError> {
        self.tailnet(tenant).await?.check_policy(text)?;
        Ok(())
    }

    /// Replaces the tenant's policy after a full check; stored in the database unless `policy.mode` is `file`.
    /// A rejected policy changes nothing and the error says why.
    pub async fn set_policy(&self, tenant: TenantId, text: &str) -> Result<PolicyInfo, ControlError> {
        match &self.settings.policy_source {
            crate::PolicySource::Database => {}
            crate::PolicySource::File(path) => {
                return Err(ControlError::PolicyInFile { path: path.display().to_string() });
            }
            crate::PolicySource::AllowAll => {
                return Err(ControlError::PolicyInFile { path: "policy.path (unset)".into() });
            }
        }
        let tailnet = self.tailnet(tenant).await?;
        let checked = tailnet.check_policy(text)?;
        let record = self.store.tenant(tenant).put_policy(text, now_ms()).await?;
        tailnet.apply_checked_policy(checked, text, &self.settings);
        tracing::info!(%tenant, version = record.id, "policy updated");
        Ok(PolicyInfo { policy: record.data, updated_ms: Some(record.created_ms) })
    }

    /// Applies policy text read from the policy file (`policy.mode: file`); `None` removes the policy.
    pub async fn load_policy_file_text(&self, tenant: TenantId, text: Option<&str>) -> Result<(), ControlError> {
        let tailnet = self.tailnet(tenant).await?;
        match text {
            Some(text) => {
                let checked = tailnet.check_policy(text)?;
                tailnet.apply_checked_policy(checked, text, &self.settings);
            }
            None => tailnet.set_policy(None, "", &self.settings),
        }
        Ok(())
    }

    /// The policy in force.
    pub async fn policy(&self, tenant: TenantId) -> Result<PolicyInfo, ControlError> {
        let tailnet = self.tailnet(tenant).await?;
        let updated_ms = match self.settings.policy_source {
            crate::PolicySource::Database => self.store.tenant(tenant).latest_policy().await?.map(|p| p.created_ms),
            _ => None,
        };
        Ok(PolicyInfo { policy: tailnet.policy_text(), updated_ms })
    }
}

/// What one node receives under the current policy.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeDebug {
    /// The node.
    pub node: crate::NodeView,
    /// Ids of the peers it sees.
    pub peers: Vec<NodeId>,
    /// Its packet filter (what it accepts inbound).
    pub packet_filter: Vec<tailwarden_wire::FilterRule>,
    /// Its SSH policy, if any.
    pub ssh_policy: Option<serde_json::Value>,
}

/// The answer to "can `src` reach `dst` on `port`?".
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReachAnswer {
    /// Whether the connection is allowed.
    pub allowed: bool,
    /// The rule of the destination's packet filter that allows it.
    pub rule: Option<tailwarden_wire::FilterRule>,
    /// Whether the source sees the destination as a peer at all.
    pub visible: bool,
}

impl Control {
    /// The compiled packet filter, SSH policy and visible peers of a node.
    pub async fn debug_node(&self, tenant: TenantId, id: NodeId) -> Result<NodeDebug, ControlError> {
        let tailnet = self.tailnet(tenant).await?;
        let missing = || {
            ControlError::Store(tailwarden_store::StoreError::NotFound {
                entity: tailwarden_store::Entity::Node,
                id: id.0,
            })
        };
        let grants = tailnet.grants_of(id, &self.settings).ok_or_else(missing)?;
        let entry = tailnet.node(id).ok_or_else(missing)?;
        Ok(NodeDebug {
            node: NodeView { record: entry.record, online: entry.online },
            peers: grants.peers.into_iter().collect(),
            packet_filter: grants.filter,
            ssh_policy: grants.ssh,
        })
    }

    /// Whether node `src` may open a connection to node `dst` on `port` over IP protocol `proto`, judged by the
    /// destination's packet filter as the client enforces it, and the rule that allows it.
    pub async fn can_reach(
        &self,
        tenant: TenantId,
        src: NodeId,
        dst: NodeId,
        port: u16,
        proto: u8,
    ) -> Result<ReachAnswer, ControlError> {
        let from = self.debug_node(tenant, src).await?;
        let to = self.debug_node(tenant, dst).await?;
        let src_ips: Vec<std::net::IpAddr> =
            from.node.record.ipv4.map(Into::into).into_iter().chain(from.node.record.ipv6.map(Into::into)).collect();
        let dst_ips: Vec<std::net::IpAddr> =
            to.node.record.ipv4.map(Into::into).into_iter().chain(to.node.record.ipv6.map(Into::into)).collect();
        let rule = src_ips
            .iter()
            .flat_map(|s| dst_ips.iter().filter(|d| d.is_ipv4() == s.is_ipv4()).map(move |d| (*s, *d)))
            .find_map(|(s, d)| crate::reachability::allowing_rule(&to.packet_filter, s, d, port, proto).cloned());
        Ok(ReachAnswer { allowed: rule.is_some(), rule, visible: from.peers.contains(&dst) })
    }
}
