//! What one simulated client knows about its peers, merged from its map stream with Go's semantics, and the
//! conditions ("expectations") a change must make true in a watcher's view.

use crate::stream::MapMessage;
use std::collections::HashMap;
use std::sync::Arc;

/// The tracked state of one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerState {
    /// Direct endpoints.
    pub endpoints: Vec<String>,
    /// Disco key text.
    pub disco_key: String,
    /// Online flag; `None` is unknown.
    pub online: Option<bool>,
}

/// A client's merged view of its network map.
#[derive(Debug, Default)]
pub struct PeerView {
    /// The self node's ID, from the first message.
    pub self_id: Option<i64>,
    peers: HashMap<i64, PeerState>,
}

impl PeerView {
    /// Merges one message: a non-empty `Peers` (or the first message's) replaces the peer set and, as in Go's
    /// client, makes `PeersChanged`/`PeersRemoved` of the same message moot; patches and online flags apply after.
    pub fn apply(&mut self, msg: &MapMessage) {
        let first = self.self_id.is_none();
        if let Some(node) = &msg.node {
            self.self_id = Some(node.id);
        }
        match &msg.peers {
            Some(all) if !all.is_empty() || first => {
                self.peers = all.iter().map(|n| (n.id, state_of(n))).collect();
            }
            _ => {
                for n in msg.peers_changed.iter().flatten() {
                    self.peers.insert(n.id, state_of(n));
                }
                for id in msg.peers_removed.iter().flatten() {
                    self.peers.remove(id);
                }
            }
        }
        for p in msg.peers_changed_patch.iter().flatten() {
            let Some(peer) = self.peers.get_mut(&p.node_id) else { continue };
            if let Some(eps) = &p.endpoints {
                peer.endpoints.clone_from(eps);
            }
            if let Some(k) = &p.disco_key {
                peer.disco_key.clone_from(k);
            }
            if p.online.is_some() {
                peer.online = p.online;
            }
        }
        for (id, online) in msg.online_change.iter().flatten() {
            if let Some(peer) = id.parse().ok().and_then(|id: i64| self.peers.get_mut(&id)) {
                peer.online = Some(*online);
            }
        }
    }

    /// A peer's state, if it is in the map.
    pub fn peer(&self, id: i64) -> Option<&PeerState> {
        self.peers.get(&id)
    }
}

fn state_of(n: &crate::stream::PeerNode) -> PeerState {
    PeerState {
        endpoints: n.endpoints.clone().unwrap_or_default(),
        disco_key: n.disco_key.clone().unwrap_or_default(),
        online: n.online,
    }
}

/// A condition a change must make true in a watcher's view; the moment it first holds is the delivery time.
#[derive(Clone, Debug)]
pub enum Expect {
    /// The peer is present and lists this endpoint.
    Endpoint {
        /// The changed node.
        peer: i64,
        /// Its new endpoint.
        endpoint: String,
    },
    /// The peer is present with this online flag.
    Online {
        /// The node that came up or went down.
        peer: i64,
        /// Its new state.
        online: bool,
    },
    /// The peer is present with this disco key (a restarted client).
    Disco {
        /// The restarted node.
        peer: i64,
        /// Its new disco key.
        key: String,
    },
    /// Every listed peer except the watcher itself is present (and online, if asked).
    Present {
        /// The peers (a whole group's list, shared by its watchers).
        peers: Arc<Vec<i64>>,
        /// Also require `Online: true`.
        online: bool,
    },
    /// None of the listed peers except the watcher itself is present.
    Absent {
        /// The peers.
        peers: Arc<Vec<i64>>,
    },
}

impl Expect {
    /// Whether `view` satisfies the condition.
    pub fn met(&self, view: &PeerView) -> bool {
        match self {
            Expect::Endpoint { peer, endpoint } => view.peer(*peer).is_some_and(|p| p.endpoints.contains(endpoint)),
            Expect::Online { peer, online } => view.peer(*peer).is_some_and(|p| p.online == Some(*online)),
            Expect::Disco { peer, key } => view.peer(*peer).is_some_and(|p| p.disco_key == *key),
            Expect::Present { peers, online } => peers
                .iter()
                .filter(|id| view.self_id != Some(**id))
                .all(|id| view.peer(*id).is_some_and(|p| !*online || p.online == Some(true))),
            Expect::Absent { peers } => {
                peers.iter().filter(|id| view.self_id != Some(**id)).all(|id| view.peer(*id).is_none())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(json: &str) -> MapMessage {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn merges_full_maps_deltas_and_patches_as_go_does() {
        let mut v = PeerView::default();
        v.apply(&msg(r#"{"Node":{"ID":1},"Peers":[{"ID":2,"Online":false},{"ID":3}]}"#));
        assert_eq!((v.self_id, v.peers.len()), (Some(1), 2));
        let eps = Expect::Endpoint { peer: 2, endpoint: "[2001:db8::5]:1".into() };
        assert!(!eps.met(&v));
        v.apply(&msg(r#"{"PeersChangedPatch":[{"NodeID":2,"Endpoints":["[2001:db8::5]:1"],"Online":true},{"NodeID":99,"Online":true}]}"#));
        assert!(eps.met(&v));
        assert!(Expect::Online { peer: 2, online: true }.met(&v));
        assert!(v.peer(99).is_none(), "a patch for an unknown peer is ignored");

        v.apply(&msg(
            r#"{"PeersChanged":[{"ID":4,"DiscoKey":"discokey:ab"}],"PeersRemoved":[3],"OnlineChange":{"4":true}}"#,
        ));
        assert!(Expect::Disco { peer: 4, key: "discokey:ab".into() }.met(&v));
        assert!(
            Expect::Present { peers: Arc::new(vec![1, 2, 4]), online: true }.met(&v),
            "the watcher itself is skipped"
        );
        assert!(Expect::Absent { peers: Arc::new(vec![3]) }.met(&v));

        // A non-empty Peers replaces everything and the same message's deltas are ignored; an empty one in a delta
        // is not "no peers".
        v.apply(&msg(r#"{"Peers":[{"ID":5}],"PeersRemoved":[5]}"#));
        assert_eq!((v.peers.len(), v.peer(5).is_some()), (1, true));
        v.apply(&msg(r#"{"Peers":[]}"#));
        assert_eq!(v.peers.len(), 1);
    }
}
