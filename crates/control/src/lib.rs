//! The control-plane core: node registration, per-tenant tailnet state, and map sessions.
//!
//! A [`Control`] owns the in-memory view of every tenant's tailnet, loaded from the store at start and written
//! through on every change. Registration (`/machine/register`) and map polls (`/machine/map`) arrive over the
//! ts2021 Noise channel ([`noise_http`]); each change becomes a delta that is encoded once per compression mode
//! and queued to every affected map session. Management operations (users, keys, nodes) live in [`admin`].
#![deny(missing_docs)]

pub mod admin;
mod error;
mod external_login;
pub mod keys;
mod live;
mod map_session;
pub mod noise_http;
mod policy_view;
pub mod reachability;
mod register;
mod render;
mod session_queue;
mod session_writes;
mod settings;
mod tailnet;

pub use error::ControlError;
pub use external_login::ExternalUser;
pub use settings::{DEFAULT_COALESCE_WINDOW, DnsSettings, Live, PolicySource, Settings};
pub use tailnet::{NodeView, TAGGED_DEVICES_USER_ID};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tailnet::Tailnet;
use tailwarden_store::{Store, StoreError};
use tailwarden_types::TenantId;

/// The control server's core state, shared by all connections.
pub struct Control {
    store: Store,
    settings: Settings,
    server_keys: keys::ServerKeys,
    tailnets: Mutex<BTreeMap<TenantId, Arc<Tailnet>>>,
    pending: Mutex<BTreeMap<String, register::PendingRegistration>>,
    session_writes: session_writes::SessionWrites,
}

impl Control {
    /// Loads every tenant's nodes and users from `store` and returns a ready control core.
    pub async fn new(
        store: Store,
        settings: Settings,
        server_keys: keys::ServerKeys,
    ) -> Result<Arc<Control>, ControlError> {
        let control = Arc::new(Control {
            store,
            settings,
            server_keys,
            tailnets: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(BTreeMap::new()),
            session_writes: Default::default(),
        });
        let tenants = control.store.system().list_tenants().await?;
        for tenant in tenants {
            let tailnet = Tailnet::load(&control.store, tenant.id).await?;
            if control.settings.policy_source == PolicySource::Database
                && let Some(stored) = control.store.tenant(tenant.id).latest_policy().await?
            {
                // It passed every check when it was stored; the tailnet may have changed since, so only parsing is
                // required here (a failing `tests` entry must not keep the server down).
                let policy = tailwarden_policy::Policy::parse(&stored.data)?;
                tailnet.set_policy(Some(policy), &stored.data, &control.settings);
            }
            let tailnet = Arc::new(tailnet);
            tailnet.spawn_flusher(control.settings.clone());
            control.tailnets_lock().insert(tenant.id, tailnet);
        }
        Ok(control)
    }

    /// The store this core writes through to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The server settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The server's long-term keys.
    pub fn server_keys(&self) -> &keys::ServerKeys {
        &self.server_keys
    }

    fn tailnets_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TenantId, Arc<Tailnet>>> {
        // A poisoned lock means a panic elsewhere already broke an invariant; continuing with the data is the
        // least harmful option for a server (the map itself is always consistent between statements).
        self.tailnets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tailnet of `tenant`, loading it on first use (tenants created after start).
    pub(crate) async fn tailnet(&self, tenant: TenantId) -> Result<Arc<Tailnet>, ControlError> {
        if let Some(t) = self.tailnets_lock().get(&tenant) {
            return Ok(t.clone());
        }
        let loaded = Arc::new(Tailnet::load(&self.store, tenant).await?);
        let mut tailnets = self.tailnets_lock();
        let tailnet = tailnets.entry(tenant).or_insert_with(|| {
            loaded.spawn_flusher(self.settings.clone());
            loaded
        });
        Ok(tailnet.clone())
    }

    /// Whether a DERP client with this node key may connect: a known node whose key has not expired.
    pub fn admits_derp_client(&self, node_key: &[u8; 32]) -> bool {
        let now = time::OffsetDateTime::now_utc();
        self.tailnets_lock().values().any(|t| t.has_valid_node_key(node_key, now))
    }

    /// Spawns the background jobs (ephemeral-node collection, writing map sessions' state) and returns their handle.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let control = self.clone();
        tokio::spawn(async move {
            tokio::join!(control.collect_ephemeral_nodes_forever(), control.session_writes.run(&control.store));
        })
    }

    /// Writes the map sessions' state still waiting in memory (disco keys, endpoints, hostinfo, last seen); called
    /// at shutdown.
    pub async fn flush_session_writes(&self) {
        self.session_writes.flush(&self.store).await;
    }

    async fn collect_ephemeral_nodes_forever(&self) {
        let timeout = self.settings.ephemeral_inactivity_timeout;
        let period = (timeout / 4).clamp(std::time::Duration::from_millis(200), std::time::Duration::from_secs(30));
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let tailnets: Vec<Arc<Tailnet>> = self.tailnets_lock().values().cloned().collect();
            for tailnet in tailnets {
                if let Err(e) = tailnet.collect_ephemeral(&self.store, &self.settings, timeout).await {
                    tracing::warn!(error = %e, tenant = %tailnet.tenant, "ephemeral node collection failed");
                }
            }
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        ControlError::Store(e)
    }
}

/// DERP admission backed by the control state: only known nodes may use the embedded relay.
pub struct DerpAdmission(pub Arc<Control>);

impl tailwarden_derp::ClientAdmission for DerpAdmission {
    fn admit(&self, node_key: &[u8; 32]) -> bool {
        self.0.admits_derp_client(node_key)
    }
}
