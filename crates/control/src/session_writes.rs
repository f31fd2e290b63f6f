//! Write-behind for the soft state map sessions report: disco keys, hostinfo, endpoints and last-seen times.
//!
//! Clients resend all of it on every map request, and the tailnet in memory is updated (and peers told) at once, so
//! the store copy only has to survive restarts. Writing it per request cost one commit per endpoint change and two
//! per join; here updates are merged per node and written by a background task in one transaction per tenant every
//! [`SessionWrites::INTERVAL`], and once more at shutdown. A crash loses at most one interval of updates, which the
//! clients send again when they reconnect.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tailwarden_store::{NodeSessionUpdate, Store};
use tailwarden_types::{NodeId, TenantId};
use tokio::sync::Notify;

/// Pending session updates, merged per node.
#[derive(Default)]
pub(crate) struct SessionWrites {
    pending: Mutex<HashMap<TenantId, HashMap<NodeId, NodeSessionUpdate>>>,
    queued: Notify,
}

impl SessionWrites {
    /// How long updates wait to be written together.
    pub const INTERVAL: Duration = Duration::from_millis(500);

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, HashMap<NodeId, NodeSessionUpdate>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `update` for node `id`; fields it sets replace earlier queued ones.
    pub fn queue(&self, tenant: TenantId, id: NodeId, update: NodeSessionUpdate) {
        let mut pending = self.lock();
        let slot = pending.entry(tenant).or_default().entry(id).or_default();
        if update.disco_key.is_some() {
            slot.disco_key = update.disco_key;
        }
        if update.hostinfo.is_some() {
            slot.hostinfo = update.hostinfo;
        }
        if update.endpoints.is_some() {
            slot.endpoints = update.endpoints;
        }
        if update.last_seen_ms.is_some() {
            slot.last_seen_ms = update.last_seen_ms;
        }
        drop(pending);
        self.queued.notify_one();
    }

    /// Writes everything queued, one transaction per tenant (rows of nodes deleted meanwhile match nothing). A
    /// failed batch is logged and dropped: the clients report the same state again on their next request.
    pub async fn flush(&self, store: &Store) {
        let batches = std::mem::take(&mut *self.lock());
        for (tenant, nodes) in batches {
            let updates: Vec<(NodeId, NodeSessionUpdate)> = nodes.into_iter().collect();
            let count = updates.len();
            if let Err(e) = store.tenant(tenant).update_node_sessions(updates).await {
                tracing::warn!(%tenant, nodes = count, error = %e, "writing map session state failed");
            }
        }
    }

    /// Writes queued updates every [`SessionWrites::INTERVAL`] while there are any; runs until the task is dropped.
    pub async fn run(&self, store: &Store) {
        loop {
            self.queued.notified().await;
            tokio::time::sleep(Self::INTERVAL).await;
            self.flush(store).await;
        }
    }
}
