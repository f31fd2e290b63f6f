//! Interactive registrations completed by a login at an external identity provider (OIDC): the user is found by
//! its provider identity or created, its profile refreshed from the provider's claims, and the waiting client
//! admitted.

use crate::admin::check_user_name;
use crate::render::now_ms;
use crate::tailnet::SessionFields;
use crate::{Control, ControlError, NodeView};
use tailwarden_store::{Conflict, RegisterMethod, StoreError, UserRecord};
use tailwarden_types::TenantId;

/// A user as the identity provider describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExternalUser<'a> {
    /// The stable identity at the provider (OIDC: `iss` + `/` + `sub`); how the user is found on later logins.
    pub provider_identifier: &'a str,
    /// The login name.
    pub name: &'a str,
    /// The human-readable name.
    pub display_name: &'a str,
    /// The email address, possibly empty.
    pub email: &'a str,
}

impl Control {
    /// Completes the pending registration `id` for the user with this provider identity: creates the user on its
    /// first login, refreshes name, display name and email on later ones, then writes the node (expiring at
    /// `expiry_ms`, or after `node.expiry` when `None`) and wakes the waiting client.
    pub async fn complete_external_login(
        &self,
        tenant: TenantId,
        id: &str,
        user: ExternalUser<'_>,
        expiry_ms: Option<i64>,
    ) -> Result<(UserRecord, NodeView), ControlError> {
        // Checked first so a login for an expired registration leaves no trace.
        if !self.pending_registration_exists(id) {
            return Err(ControlError::UnknownRegistration { id: id.to_string() });
        }
        check_user_name(user.name)?;
        let record = self.upsert_external_user(tenant, user).await?;
        let expiry_ms = expiry_ms.or_else(|| self.default_expiry_ms(now_ms()));
        let node = self.finish_pending(tenant, id, record.id, expiry_ms, RegisterMethod::Oidc).await?;
        Ok((record, node))
    }

    async fn upsert_external_user(&self, tenant: TenantId, user: ExternalUser<'_>) -> Result<UserRecord, ControlError> {
        let scope = self.store.tenant(tenant);
        let tailnet = self.tailnet(tenant).await?;
        let existing = match scope.user_by_provider_identifier(user.provider_identifier).await? {
            Some(found) => found,
            None => {
                match scope
                    .create_user_with_identity(user.name, user.display_name, user.email, user.provider_identifier)
                    .await
                {
                    Ok(created) => {
                        tailnet.upsert_user(created.clone(), &self.settings);
                        return Ok(created);
                    }
                    // The same person finished two logins at once and the other created the user first.
                    Err(StoreError::Conflict { what: Conflict::ProviderIdentifier(_) }) => scope
                        .user_by_provider_identifier(user.provider_identifier)
                        .await?
                        .ok_or_else(|| ControlError::Invalid { what: "user vanished during login".into() })?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if (existing.name.as_str(), existing.display_name.as_str(), existing.email.as_str())
            == (user.name, user.display_name, user.email)
        {
            return Ok(existing);
        }
        let updated = scope.update_user_profile(existing.id, user.name, user.display_name, user.email).await?;
        tailnet.upsert_user(updated.clone(), &self.settings);
        if updated.name != existing.name {
            // Peers show the owner's login name on each node, so the user's nodes are sent again.
            for node in scope.list_nodes_of_user(existing.id).await? {
                tailnet.upsert_node(node, SessionFields::KeepMemory, &self.settings);
            }
        }
        Ok(updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;
    use crate::keys::ServerKeys;
    use std::sync::Arc;
    use std::time::Duration;
    use tailwarden_store::Store;
    use tailwarden_wire::{Hostinfo, MIN_CAPABILITY_VERSION, MachineKey, NodeKey, RegisterRequest};

    const T: TenantId = TenantId::DEFAULT;

    async fn control(node_expiry: Option<Duration>) -> Arc<Control> {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let mut settings = Settings::for_tests(Default::default());
        settings.node_expiry = node_expiry;
        Control::new(store, settings, ServerKeys::random()).await.unwrap()
    }

    /// Starts an interactive registration for a machine and returns its id.
    async fn pending(control: &Control, seed: u8, hostname: &str) -> String {
        let req = RegisterRequest {
            version: MIN_CAPABILITY_VERSION,
            node_key: NodeKey([seed; 32]),
            hostinfo: Some(Hostinfo { hostname: hostname.into(), ..Default::default() }),
            ..Default::default()
        };
        let resp = control.register(MachineKey([seed.wrapping_add(100); 32]), req).await;
        assert!(resp.error.is_empty(), "{}", resp.error);
        resp.auth_url.rsplit('/').next().unwrap().to_string()
    }

    fn alice<'a>(name: &'a str, email: &'a str) -> ExternalUser<'a> {
        ExternalUser { provider_identifier: "http://idp/alice-sub", name, display_name: "Alice Liddell", email }
    }

    #[tokio::test]
    async fn first_login_creates_the_user_and_the_node() {
        let control = control(Some(Duration::from_secs(3600))).await;
        let id = pending(&control, 1, "laptop").await;
        let before = now_ms();
        let (user, node) =
            control.complete_external_login(T, &id, alice("alice", "alice@example.com"), None).await.unwrap();
        assert_eq!(user.provider_identifier.as_deref(), Some("http://idp/alice-sub"));
        assert_eq!(
            (user.name.as_str(), user.display_name.as_str(), user.email.as_str()),
            ("alice", "Alice Liddell", "alice@example.com")
        );
        assert_eq!(node.record.user_id, Some(user.id));
        assert_eq!(node.record.register_method, RegisterMethod::Oidc);
        assert_eq!(node.record.hostname, "laptop");
        let expiry = node.record.expiry_ms.unwrap();
        assert!((before + 3_600_000..=now_ms() + 3_600_000).contains(&expiry), "node.expiry applies: {expiry}");
        assert!(control.tailnet(T).await.unwrap().node(node.record.id).is_some(), "the live tailnet has the node");
    }

    #[tokio::test]
    async fn later_logins_find_the_user_by_identity_and_refresh_its_profile() {
        let control = control(None).await;
        let first = pending(&control, 1, "laptop").await;
        let (user, _) =
            control.complete_external_login(T, &first, alice("alice", "alice@example.com"), None).await.unwrap();
        let second = pending(&control, 2, "phone").await;
        let token_expiry = now_ms() + 600_000;
        let (again, node) = control
            .complete_external_login(T, &second, alice("alice.l", "al@example.com"), Some(token_expiry))
            .await
            .unwrap();
        assert_eq!(again.id, user.id, "same identity, same user");
        assert_eq!((again.name.as_str(), again.email.as_str()), ("alice.l", "al@example.com"));
        assert_eq!(node.record.expiry_ms, Some(token_expiry), "the token's expiry wins over node.expiry");
        assert_eq!(control.store().tenant(T).list_users().await.unwrap().len(), 1);
        assert_eq!(control.tailnet(T).await.unwrap().user(user.id).unwrap().name, "alice.l");
    }

    #[tokio::test]
    async fn a_local_user_with_the_same_name_is_not_taken_over() {
        let control = control(None).await;
        let local = control.create_user(T, "alice", "", "").await.unwrap();
        let id = pending(&control, 1, "laptop").await;
        let err = control.complete_external_login(T, &id, alice("alice", "alice@example.com"), None).await.unwrap_err();
        assert!(
            matches!(err, ControlError::Store(StoreError::Conflict { what: Conflict::UserName(ref n) }) if n == "alice"),
            "{err:?}"
        );
        assert!(control.store().tenant(T).list_nodes().await.unwrap().is_empty(), "no node was written");
        assert_eq!(control.store().tenant(T).list_users().await.unwrap(), vec![local]);
        assert!(control.pending_registration_exists(&id), "the device can still be admitted by another login");
    }

    #[tokio::test]
    async fn unknown_registrations_and_bad_names_create_nothing() {
        let control = control(None).await;
        let err = control.complete_external_login(T, "nope", alice("alice", ""), None).await.unwrap_err();
        assert!(matches!(err, ControlError::UnknownRegistration { .. }), "{err:?}");
        let id = pending(&control, 1, "laptop").await;
        assert!(control.complete_external_login(T, &id, alice("a b", ""), None).await.is_err());
        assert!(control.store().tenant(T).list_users().await.unwrap().is_empty());
    }
}
