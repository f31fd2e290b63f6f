//! `/machine/register`: pre-auth key login, restart of a known node, key rotation, logout, and interactive
//! login (AuthURL + follow-up long poll, completed by an administrator).

use crate::render::{self, now_ms};
use crate::tailnet::{NodeEntry, SessionFields, Tailnet};
use crate::{Control, ControlError};
use std::sync::Arc;
use std::time::Duration;
use tailwarden_store::secret::{self, SecretKind};
use tailwarden_store::{NodeRegistration, PreAuthKeyUse, RegisterMethod, StoreError};
use tailwarden_types::{DnsLabel, Tag, TenantId, UserId};
use tailwarden_wire::{
    Hostinfo, Login, MIN_CAPABILITY_VERSION, MachineKey, NodeKey, RegisterRequest, RegisterResponse, User,
};
use time::OffsetDateTime;
use tokio::sync::watch;

/// How long an interactive registration waits for an administrator before the client is given a fresh URL.
const PENDING_TTL: Duration = Duration::from_secs(15 * 60);

/// An interactive registration waiting for `nodes register --key <id>`.
pub(crate) struct PendingRegistration {
    machine_key: MachineKey,
    node_key: NodeKey,
    hostinfo: Hostinfo,
    ephemeral: bool,
    created: std::time::Instant,
    /// Set to the outcome once an administrator acts.
    outcome: watch::Sender<Option<Result<TenantId, String>>>,
}

impl Control {
    /// Handles one register request from the machine authenticated by the Noise channel.
    pub async fn register(&self, machine: MachineKey, req: RegisterRequest) -> RegisterResponse {
        match self.register_inner(machine, req).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::info!(machine = %machine, error = %e, "registration refused");
                RegisterResponse::error(e.to_string())
            }
        }
    }

    async fn register_inner(
        &self,
        machine: MachineKey,
        req: RegisterRequest,
    ) -> Result<RegisterResponse, ControlError> {
        if req.version < MIN_CAPABILITY_VERSION {
            return Err(ControlError::ClientTooOld { version: req.version, min: MIN_CAPABILITY_VERSION });
        }
        if req.node_key.is_zero() {
            return Err(ControlError::Invalid { what: "register request has no node key".into() });
        }
        let now = OffsetDateTime::now_utc();
        // Clients may send an auth key together with a past expiry; the expiry (logout) wins.
        if let Some(expiry) = req.expiry
            && expiry <= now
        {
            return self.logout(machine, &req).await;
        }
        let auth_key = req.auth.as_ref().map(|a| a.auth_key.trim()).unwrap_or_default();
        if !auth_key.is_empty() {
            return self.register_with_key(machine, &req, auth_key).await;
        }
        if let Some((tailnet, node)) = self.find_node(&req.node_key)
            && node.machine_key == machine
        {
            return Ok(self.node_response(&tailnet, &node, now));
        }
        if !req.old_node_key.is_zero()
            && let Some((tailnet, node)) = self.find_node(&req.old_node_key)
            && node.machine_key == machine
            && !node.is_expired(now)
        {
            let record =
                self.store.tenant(tailnet.tenant).rotate_node_key(node.record.id, &req.node_key.to_string()).await?;
            tailnet.upsert_node(record, SessionFields::KeepMemory, &self.settings);
            let node = tailnet.node(node.record.id).ok_or_else(|| unknown(&req.node_key))?;
            return Ok(self.node_response(&tailnet, &node, now));
        }
        self.interactive(machine, &req).await
    }

    /// Finds the node holding `key` in any tenant.
    pub(crate) fn find_node(&self, key: &NodeKey) -> Option<(Arc<Tailnet>, NodeEntry)> {
        let tailnets: Vec<Arc<Tailnet>> = self.tailnets_lock().values().cloned().collect();
        tailnets.into_iter().find_map(|t| t.node_by_key(key).map(|n| (t, n)))
    }

    async fn register_with_key(
        &self,
        machine: MachineKey,
        req: &RegisterRequest,
        presented: &str,
    ) -> Result<RegisterResponse, ControlError> {
        let invalid = || ControlError::Invalid { what: "invalid auth key".into() };
        let (prefix, hash) = secret::parse_presented(SecretKind::PreAuthKey, presented).map_err(|_| invalid())?;
        let tenant = self.store.system().tenant_of_pre_auth_key(&prefix).await?.ok_or_else(invalid)?;
        let key = self.store.tenant(tenant).pre_auth_key_by_prefix(&prefix).await?.ok_or_else(invalid)?;
        if !secret::verify(&key.hash, &hash) {
            return Err(invalid());
        }
        let now = now_ms();
        if key.expiration_ms.is_some_and(|e| e <= now) {
            return Err(ControlError::Invalid { what: "auth key expired".into() });
        }
        if !key.reusable && key.used_count > 0 {
            return Err(ControlError::Invalid { what: "auth key already used".into() });
        }
        let tags = key
            .tags
            .iter()
            .map(|t| Tag::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ControlError::Invalid { what: format!("auth key carries an invalid tag: {e}") })?;
        let hostinfo = req.hostinfo.clone().unwrap_or_default();
        let registration = NodeRegistration {
            machine_key: machine.to_string(),
            node_key: req.node_key.to_string(),
            disco_key: String::new(),
            hostname: hostinfo.hostname.clone(),
            given_name: given_name_for(&hostinfo),
            user_id: key.user_id,
            tags,
            hostinfo: serde_json::to_string(&hostinfo).unwrap_or_default(),
            expiry_ms: self.default_expiry_ms(now),
            ephemeral: req.ephemeral || key.ephemeral,
            register_method: RegisterMethod::AuthKey,
            auth_key: Some(PreAuthKeyUse { id: key.id, now_ms: now }),
            now_ms: now,
        };
        let registered = match self.store.tenant(tenant).register_node(registration).await {
            Ok(r) => r,
            Err(StoreError::PreAuthKeyUnusable { .. }) => {
                return Err(ControlError::Invalid { what: "auth key already used or expired".into() });
            }
            Err(e) => return Err(e.into()),
        };
        let tailnet = self.tailnet(tenant).await?;
        let id = registered.node.id;
        tracing::info!(node = %id, tenant = %tenant, created = registered.created, "node registered with pre-auth key");
        tailnet.upsert_node(registered.node, SessionFields::FromRecord, &self.settings);
        let node = tailnet.node(id).ok_or_else(|| unknown(&req.node_key))?;
        Ok(self.node_response(&tailnet, &node, OffsetDateTime::now_utc()))
    }

    pub(crate) fn default_expiry_ms(&self, now: i64) -> Option<i64> {
        self.settings.node_expiry.map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }

    async fn logout(&self, machine: MachineKey, req: &RegisterRequest) -> Result<RegisterResponse, ControlError> {
        let (tailnet, node) = self
            .find_node(&req.node_key)
            .filter(|(_, n)| n.machine_key == machine)
            .ok_or_else(|| unknown(&req.node_key))?;
        let scope = self.store.tenant(tailnet.tenant);
        if node.record.ephemeral {
            scope.delete_node(node.record.id).await?;
            tailnet.remove_node(node.record.id, &self.settings);
            tracing::info!(node = %node.record.id, "ephemeral node logged out and deleted");
            let mut resp = self.node_response(&tailnet, &node, OffsetDateTime::now_utc());
            resp.node_key_expired = true;
            return Ok(resp);
        }
        let record = scope.set_node_expiry(node.record.id, Some(now_ms())).await?;
        tailnet.upsert_node(record, SessionFields::KeepMemory, &self.settings);
        tracing::info!(node = %node.record.id, "node logged out");
        let node = tailnet.node(node.record.id).ok_or_else(|| unknown(&req.node_key))?;
        Ok(self.node_response(&tailnet, &node, OffsetDateTime::now_utc()))
    }

    /// The success reply for a node: owner, login, and whether its key expired.
    fn node_response(&self, tailnet: &Tailnet, node: &NodeEntry, now: OffsetDateTime) -> RegisterResponse {
        let user_id = render::display_user(node);
        let user = node.record.user_id.filter(|_| node.record.tags.is_empty()).and_then(|u| tailnet.user(u));
        let (login_name, display_name, created) = match &user {
            Some(u) => (
                render::clean(&u.name),
                render::clean(if u.display_name.is_empty() { &u.name } else { &u.display_name }),
                render::ms_to_time(u.created_ms),
            ),
            None => ("tagged-devices".to_string(), "Tagged Devices".to_string(), None),
        };
        RegisterResponse {
            user: User { id: user_id, display_name: display_name.clone(), profile_pic_url: String::new(), created },
            login: Login {
                id: user_id,
                provider: "tailwarden".into(),
                login_name,
                display_name,
                profile_pic_url: String::new(),
            },
            node_key_expired: node.is_expired(now),
            machine_authorized: true,
            auth_url: String::new(),
            error: String::new(),
        }
    }

    async fn interactive(&self, machine: MachineKey, req: &RegisterRequest) -> Result<RegisterResponse, ControlError> {
        if let Some(id) = req.followup.rsplit('/').next().filter(|_| !req.followup.is_empty()) {
            let waiter = {
                let pending = self.pending_lock();
                pending.get(id).filter(|p| p.machine_key == machine).map(|p| p.outcome.subscribe())
            };
            if let Some(mut rx) = waiter {
                let outcome = rx.wait_for(Option::is_some).await.map(|v| v.clone());
                self.pending_lock().remove(id);
                return match outcome {
                    Ok(Some(Ok(tenant))) => {
                        let tailnet = self.tailnet(tenant).await?;
                        let node = tailnet.node_by_key(&req.node_key).ok_or_else(|| unknown(&req.node_key))?;
                        Ok(self.node_response(&tailnet, &node, OffsetDateTime::now_utc()))
                    }
                    Ok(Some(Err(message))) => Err(ControlError::Invalid { what: message }),
                    // The sender only goes away when the entry expired: start over with a new URL.
                    _ => self.new_pending(machine, req),
                };
            }
        }
        self.new_pending(machine, req)
    }

    fn new_pending(&self, machine: MachineKey, req: &RegisterRequest) -> Result<RegisterResponse, ControlError> {
        let id = random_id();
        let (outcome, _) = watch::channel(None);
        let mut pending = self.pending_lock();
        pending.retain(|_, p| p.created.elapsed() < PENDING_TTL);
        pending.insert(
            id.clone(),
            PendingRegistration {
                machine_key: machine,
                node_key: req.node_key,
                hostinfo: req.hostinfo.clone().unwrap_or_default(),
                ephemeral: req.ephemeral,
                created: std::time::Instant::now(),
                outcome,
            },
        );
        let base = self.settings.server_url.trim_end_matches('/');
        Ok(RegisterResponse { auth_url: format!("{base}/register/{id}"), ..Default::default() })
    }

    /// Whether an interactive registration with this id is waiting.
    pub fn pending_registration_exists(&self, id: &str) -> bool {
        self.pending_lock().contains_key(id)
    }

    /// Completes the interactive registration `id` for `user` (the `nodes register` command): writes the node and
    /// wakes the waiting client.
    pub async fn complete_registration(
        &self,
        tenant: TenantId,
        id: &str,
        user: UserId,
    ) -> Result<crate::NodeView, ControlError> {
        let expiry_ms = self.default_expiry_ms(now_ms());
        self.finish_pending(tenant, id, user, expiry_ms, RegisterMethod::Cli).await
    }

    /// Writes the node of the pending registration `id` for `user` and wakes the waiting client.
    pub(crate) async fn finish_pending(
        &self,
        tenant: TenantId,
        id: &str,
        user: UserId,
        expiry_ms: Option<i64>,
        method: RegisterMethod,
    ) -> Result<crate::NodeView, ControlError> {
        let (machine_key, node_key, hostinfo, ephemeral) = {
            let pending = self.pending_lock();
            let p = pending.get(id).ok_or_else(|| ControlError::UnknownRegistration { id: id.to_string() })?;
            (p.machine_key, p.node_key, p.hostinfo.clone(), p.ephemeral)
        };
        let scope = self.store.tenant(tenant);
        scope
            .user_by_id(user)
            .await?
            .ok_or_else(|| ControlError::Invalid { what: format!("user {user} does not exist") })?;
        let now = now_ms();
        let registered = scope
            .register_node(NodeRegistration {
                machine_key: machine_key.to_string(),
                node_key: node_key.to_string(),
                disco_key: String::new(),
                hostname: hostinfo.hostname.clone(),
                given_name: given_name_for(&hostinfo),
                user_id: Some(user),
                tags: Vec::new(),
                hostinfo: serde_json::to_string(&hostinfo).unwrap_or_default(),
                expiry_ms,
                ephemeral,
                register_method: method,
                auth_key: None,
                now_ms: now,
            })
            .await?;
        let tailnet = self.tailnet(tenant).await?;
        let view = crate::NodeView { record: registered.node.clone(), online: false };
        tailnet.upsert_node(registered.node, SessionFields::FromRecord, &self.settings);
        if let Some(p) = self.pending_lock().get(id) {
            p.outcome.send_replace(Some(Ok(tenant)));
        }
        Ok(view)
    }

    fn pending_lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, PendingRegistration>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unknown(key: &NodeKey) -> ControlError {
    ControlError::UnknownNode { node_key: key.to_string() }
}

fn given_name_for(hostinfo: &Hostinfo) -> DnsLabel {
    DnsLabel::sanitize(&hostinfo.hostname).or_else(|| DnsLabel::parse("node")).expect("\"node\" is a valid DNS label")
}

fn random_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..24).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}
