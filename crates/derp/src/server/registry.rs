//! Who is connected, and who has sent to whom. Pure bookkeeping under the server's mutex.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::outbox::Outbox;
use crate::Key;

/// One admitted connection as other connections see it.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    /// Unique per server, increasing in connection order.
    pub(crate) id: u64,
    /// The client's node key.
    pub(crate) key: Key,
    /// Where other clients' packets for this one are queued.
    pub(crate) outbox: Outbox,
    /// Last NotePreferred value (informational).
    pub(crate) preferred: AtomicBool,
}

impl ConnHandle {
    pub(crate) fn new(id: u64, key: Key, depth: usize) -> Self {
        Self { id, key, outbox: Outbox::new(depth), preferred: AtomicBool::new(false) }
    }
}

/// Connected clients by key, and the keys each client key has sent packets to.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Connections per key, oldest first; the last one is active.
    clients: HashMap<Key, Vec<Arc<ConnHandle>>>,
    /// Destinations each source key has delivered packets to while connected.
    sent_to: HashMap<Key, BTreeSet<Key>>,
}

impl Registry {
    /// Add a connection; it becomes the active one for its key.
    pub(crate) fn register(&mut self, conn: Arc<ConnHandle>) {
        self.clients.entry(conn.key).or_default().push(conn);
    }

    /// The connection packets for `key` are delivered to: the newest one.
    pub(crate) fn active(&self, key: &Key) -> Option<&Arc<ConnHandle>> {
        self.clients.get(key).and_then(|conns| conns.last())
    }

    /// Whether any connection for `key` is registered.
    pub(crate) fn is_connected(&self, key: &Key) -> bool {
        self.clients.contains_key(key)
    }

    /// Remember that `src` delivered a packet to `dst`.
    pub(crate) fn note_sent(&mut self, src: Key, dst: Key) {
        self.sent_to.entry(src).or_default().insert(dst);
    }

    /// Remove connection `id` of `key`. If that was the key's last connection, forget what it
    /// sent to and return the active connections of those destinations (in key order), which
    /// should be told the key is gone.
    pub(crate) fn unregister(&mut self, key: &Key, id: u64) -> Vec<Arc<ConnHandle>> {
        let Some(conns) = self.clients.get_mut(key) else {
            return Vec::new();
        };
        conns.retain(|c| c.id != id);
        if !conns.is_empty() {
            return Vec::new();
        }
        self.clients.remove(key);
        let Some(dsts) = self.sent_to.remove(key) else {
            return Vec::new();
        };
        dsts.iter().filter_map(|dst| self.active(dst).cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: u64, key: u8) -> Arc<ConnHandle> {
        Arc::new(ConnHandle::new(id, [key; 32], 4))
    }

    #[test]
    fn newest_connection_is_active_and_older_takes_over_when_it_closes() {
        let mut r = Registry::default();
        r.register(conn(1, 7));
        r.register(conn(2, 7));
        assert_eq!(r.active(&[7; 32]).map(|c| c.id), Some(2));
        assert!(r.unregister(&[7; 32], 2).is_empty());
        assert_eq!(r.active(&[7; 32]).map(|c| c.id), Some(1));
        r.unregister(&[7; 32], 1);
        assert!(r.active(&[7; 32]).is_none());
        assert!(!r.is_connected(&[7; 32]));
    }

    #[test]
    fn last_disconnect_returns_connected_destinations_only() {
        let mut r = Registry::default();
        r.register(conn(1, 1));
        r.register(conn(2, 2));
        r.register(conn(3, 3));
        r.note_sent([1; 32], [3; 32]);
        r.note_sent([1; 32], [2; 32]);
        r.note_sent([1; 32], [9; 32]); // not connected
        r.note_sent([2; 32], [1; 32]);
        let told: Vec<_> = r.unregister(&[1; 32], 1).iter().map(|c| c.key[0]).collect();
        assert_eq!(told, [2, 3]);
        // Reconnecting and disconnecting again does not repeat old notifications.
        r.register(conn(4, 1));
        assert!(r.unregister(&[1; 32], 4).is_empty());
    }

    #[test]
    fn duplicate_key_disconnect_does_not_notify_while_another_connection_remains() {
        let mut r = Registry::default();
        r.register(conn(1, 1));
        r.register(conn(2, 1));
        r.register(conn(3, 2));
        r.note_sent([1; 32], [2; 32]);
        assert!(r.unregister(&[1; 32], 2).is_empty());
        assert_eq!(r.unregister(&[1; 32], 1).len(), 1);
    }

    #[test]
    fn unregistering_unknown_is_harmless() {
        let mut r = Registry::default();
        assert!(r.unregister(&[5; 32], 99).is_empty());
    }
}
