//! One tenant's tailnet in memory: its nodes, users and open map sessions, and the fan-out of changes.
//!
//! Every change is applied here after the store has committed it. The compiled policy says which nodes see the
//! changed node and whose packet filter may differ, so a change costs the number of sessions it concerns, not the
//! size of the tailnet. Changes are not sent at once: each affected session collects them for a short window
//! (`Settings::map_coalesce_window`), then every session with the same collected changes gets the same message,
//! encoded and compressed once. Queues are bounded: a session that falls behind loses its queued deltas and receives
//! a fresh full map instead, so a slow client never blocks the others.

use crate::policy_view::{self, Impact, NodeGrants, PolicyView};
use crate::render::{self, now_ms};
use crate::session_queue::{QueueReceiver, QueueSender, session_queue};
use crate::{ControlError, Settings};
use ipnet::IpNet;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tailwarden_store::{NodeRecord, Store, UserRecord};
use tailwarden_types::{NodeId, TenantId, UserId};
use tailwarden_wire::framing::{Compression, frame_payload};
use tailwarden_wire::{DiscoKey, Hostinfo, MachineKey, MapResponse, Node, NodeKey, PeerChange};
use time::OffsetDateTime;
use tokio::sync::Notify;

/// The user ID tagged nodes are shown under (the same value Headscale uses, so imported clients see no change).
pub const TAGGED_DEVICES_USER_ID: i64 = 2_147_455_555;

/// Deltas a session may have queued before it is considered lagging.
const SESSION_QUEUE: usize = 256;

/// A node with its stored record and the parsed, runtime-only parts.
#[derive(Clone, Debug)]
pub(crate) struct NodeEntry {
    pub record: NodeRecord,
    pub hostinfo: Hostinfo,
    pub node_key: NodeKey,
    pub machine_key: MachineKey,
    pub disco_key: DiscoKey,
    pub online: bool,
    pub cap: u16,
}

impl NodeEntry {
    /// The routes the node serves: approved by an administrator and advertised by the node (subnets and exit routes).
    pub fn served_routes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.record
            .approved_routes
            .iter()
            .filter(|route| self.hostinfo.routable_ips.contains(route))
            .filter_map(|route| route.parse::<IpNet>().ok())
    }

    /// Whether the node serves a subnet route, and so takes part in electing primary routers.
    fn serves_subnets(&self) -> bool {
        self.served_routes().any(|net| net.prefix_len() != 0)
    }

    /// Parses the stored record. The store only holds values this server wrote, so a failure means outside
    /// damage: it is logged and the field treated as unset (a zero key never matches a client), rather than
    /// taking the whole tailnet down.
    pub fn from_record(record: NodeRecord) -> NodeEntry {
        fn parsed<T: Default>(what: &str, id: NodeId, r: Result<T, impl std::fmt::Display>) -> T {
            r.unwrap_or_else(|e| {
                tracing::warn!(node = %id, field = what, error = %e, "stored node field is unreadable");
                T::default()
            })
        }
        let id = record.id;
        let hostinfo =
            parsed("hostinfo", id, tailwarden_wire::from_go_json("stored Hostinfo", record.hostinfo.as_bytes()));
        NodeEntry {
            hostinfo,
            node_key: parsed("node_key", id, record.node_key.parse()),
            machine_key: parsed("machine_key", id, record.machine_key.parse()),
            // A node that has not streamed a map yet has no disco key.
            disco_key: if record.disco_key.is_empty() {
                DiscoKey::default()
            } else {
                parsed("disco_key", id, record.disco_key.parse())
            },
            online: false,
            cap: 0,
            record,
        }
    }

    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.record.expiry_ms.and_then(render::ms_to_time).is_some_and(|e| e <= now)
    }
}

/// Whose session state (disco key, hostinfo, endpoints, last seen) wins when a stored node record is applied.
pub(crate) enum SessionFields {
    /// The record's: a registration, carrying what the client just reported.
    FromRecord,
    /// Memory's: any other write. Map requests update memory first and the store a little later
    /// (`session_writes`), so the store's copy may be behind.
    KeepMemory,
}

/// What the management API shows for a node.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeView {
    /// The stored node.
    pub record: NodeRecord,
    /// Whether it has an open map session.
    pub online: bool,
}

/// A message queued to a session: length-prefixed, possibly compressed.
pub(crate) type Frame = bytes::Bytes;

struct SessionHandle {
    id: u64,
    compression: Compression,
    queue: QueueSender,
    /// The packet filter and SSH policy the client was last sent: the base for its next delta.
    filter: Vec<tailwarden_wire::FilterRule>,
    ssh: Option<serde_json::Value>,
}

/// The receiving end of a map session.
pub(crate) struct SessionReceiver {
    pub id: u64,
    pub queue: QueueReceiver,
}

#[derive(Default)]
struct State {
    /// Changed only through `node_mut`, `put_node` and `take_node`, which keep `rendered` true to it.
    nodes: BTreeMap<NodeId, NodeEntry>,
    /// Nodes as their peers see them, serialised for the full maps that showed them, until they change.
    rendered: FxHashMap<NodeId, RenderedPeer>,
    /// Node key → node, for the per-request lookups (map, register, DERP admission).
    by_key: HashMap<NodeKey, NodeId>,
    users: BTreeMap<UserId, UserRecord>,
    /// Keyed by server-assigned ids, so a fast unkeyed hash is safe here (and below); `by_key` holds client-chosen
    /// keys and keeps the default keyed one.
    sessions: FxHashMap<NodeId, SessionHandle>,
    next_session: u64,
    policy: PolicyView,
    /// The policy's source text, as `policy get` shows it.
    policy_text: String,
    /// The primary router of each subnet route some online node serves (see [`elect_primaries`]).
    primaries: BTreeMap<IpNet, NodeId>,
    /// Counts changes to `nodes` and `users`, what a compiled policy depends on: a policy compiled while checking
    /// it is applied as it is only if this has not moved since.
    revision: u64,
    /// Changes collected for the next flush, per session.
    pending: FxHashMap<NodeId, Pending>,
    /// The changes `Pending::events` refer to.
    events: Vec<Event>,
}

/// A node serialised as a peer, and whether it had expired then (the one part of a peer's rendering that changes by
/// itself, with time).
struct RenderedPeer {
    json: bytes::Bytes,
    expired: bool,
}

impl State {
    /// Node `id`, to change: its serialised form is dropped first, so no later map shows it as it was.
    fn node_mut(&mut self, id: NodeId) -> Option<&mut NodeEntry> {
        self.rendered.remove(&id);
        self.revision += 1;
        self.nodes.get_mut(&id)
    }

    /// Stores a new or replaced node; returns the node it replaced.
    fn put_node(&mut self, entry: NodeEntry) -> Option<NodeEntry> {
        self.rendered.remove(&entry.record.id);
        self.revision += 1;
        self.nodes.insert(entry.record.id, entry)
    }

    fn take_node(&mut self, id: NodeId) -> Option<NodeEntry> {
        self.rendered.remove(&id);
        self.revision += 1;
        self.nodes.remove(&id)
    }

    fn put_user(&mut self, user: UserRecord) {
        self.revision += 1;
        self.users.insert(user.id, user);
    }

    fn take_user(&mut self, id: UserId) {
        self.revision += 1;
        self.users.remove(&id);
    }

    /// Puts `view` in force and queues to every session what it changes.
    fn install_policy(&mut self, view: PolicyView) {
        let old = std::mem::replace(&mut self.policy, view);
        Tailnet::resync_everyone(self, &old, None);
    }

    /// Node `id` as its peers see it, serialised once and then shared by every full map that shows it. Every viewer
    /// sees a peer alike, so at N nodes that see each other this saves serialising N nodes for every map.
    fn peer_json(&mut self, id: NodeId, settings: &Settings, now: OffsetDateTime) -> Option<bytes::Bytes> {
        let entry = self.nodes.get(&id)?;
        let expired = entry.is_expired(now);
        if let Some(r) = self.rendered.get(&id)
            && r.expired == expired
        {
            return Some(r.json.clone());
        }
        let json =
            bytes::Bytes::from(serde_json::to_vec(&render::node(entry, settings, false, now, &self.primaries)).ok()?);
        self.rendered.insert(id, RenderedPeer { json: json.clone(), expired });
        Some(json)
    }
}

/// A full map: the message, and its peers already serialised (see `State::peer_json`).
pub(crate) struct FullMap {
    pub msg: MapResponse,
    pub peers: Vec<bytes::Bytes>,
}

impl FullMap {
    pub fn encode(&self, compression: Compression) -> Result<Vec<u8>, tailwarden_wire::WireError> {
        tailwarden_wire::framing::encode_message_with_peers(&self.msg, &self.peers, compression)
    }
}

/// A change to one node as its viewers receive it.
#[derive(Clone, Debug)]
enum Event {
    /// The node became visible or changed: send it whole.
    Changed(NodeId),
    /// The node is gone from the viewer's map.
    Removed(NodeId),
    /// Small field changes (endpoints, DERP home, online).
    Patch(PeerChange),
}

/// What one session is owed at the next flush.
#[derive(Default)]
struct Pending {
    /// Changes to nodes it sees, in order, as indexes into `State::events`. Sessions that collected the same list get
    /// the same message.
    events: Vec<usize>,
    /// Its packet filter or SSH policy may have changed.
    recheck: bool,
    /// Its own node changed.
    self_changed: bool,
}

/// A policy that passed [`Tailnet::check_policy`], with its compilation against the tailnet as it was then.
pub struct CheckedPolicy {
    policy: tailwarden_policy::Policy,
    compiled: tailwarden_policy::CompiledPolicy,
    revision: u64,
}

/// A tenant's tailnet.
pub(crate) struct Tailnet {
    pub tenant: TenantId,
    state: Mutex<State>,
    /// Signalled when changes are pending.
    dirty: Arc<Notify>,
}

/// Encodes a message at most once per compression mode.
struct EncodeOnce<'a> {
    msg: &'a MapResponse,
    json: Option<Vec<u8>>,
    frames: BTreeMap<Compression, Frame>,
}

impl<'a> EncodeOnce<'a> {
    fn new(msg: &'a MapResponse) -> Self {
        EncodeOnce { msg, json: None, frames: BTreeMap::new() }
    }

    fn frame(&mut self, compression: Compression) -> Option<Frame> {
        if let Some(f) = self.frames.get(&compression) {
            return Some(f.clone());
        }
        if self.json.is_none() {
            self.json = serde_json::to_vec(self.msg).ok();
        }
        let frame = bytes::Bytes::from(frame_payload(self.json.as_ref()?, compression).ok()?);
        self.frames.insert(compression, frame.clone());
        Some(frame)
    }
}

impl Tailnet {
    pub async fn load(store: &Store, tenant: TenantId) -> Result<Tailnet, ControlError> {
        let scope = store.tenant(tenant);
        let mut state = State::default();
        for u in scope.list_users().await? {
            state.put_user(u);
        }
        for n in scope.list_nodes().await? {
            let entry = NodeEntry::from_record(n);
            state.by_key.insert(entry.node_key, entry.record.id);
            state.put_node(entry);
        }
        Ok(Tailnet { tenant, state: Mutex::new(state), dirty: Arc::new(Notify::new()) })
    }

    /// Starts the task that sends collected changes: `window` after the first change of a burst, everything collected
    /// goes out together. It ends when the tailnet is dropped.
    pub fn spawn_flusher(self: &Arc<Self>, settings: Settings) {
        let weak = Arc::downgrade(self);
        let dirty = self.dirty.clone();
        tokio::spawn(async move {
            loop {
                dirty.notified().await;
                tokio::time::sleep(settings.map_coalesce_window).await;
                let Some(tailnet) = weak.upgrade() else { return };
                tailnet.flush(&settings);
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // See `Control::tailnets_lock` for why a poisoned lock is entered anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn has_valid_node_key(&self, key: &[u8; 32], now: OffsetDateTime) -> bool {
        let st = self.lock();
        st.by_key.get(&NodeKey(*key)).and_then(|id| st.nodes.get(id)).is_some_and(|n| !n.is_expired(now))
    }

    pub fn node_by_key(&self, key: &NodeKey) -> Option<NodeEntry> {
        let st = self.lock();
        st.by_key.get(key).and_then(|id| st.nodes.get(id)).cloned()
    }

    pub fn node(&self, id: NodeId) -> Option<NodeEntry> {
        self.lock().nodes.get(&id).cloned()
    }

    pub fn user(&self, id: UserId) -> Option<UserRecord> {
        self.lock().users.get(&id).cloned()
    }

    pub fn views(&self) -> Vec<NodeView> {
        self.lock().nodes.values().map(|n| NodeView { record: n.record.clone(), online: n.online }).collect()
    }

    pub fn upsert_user(&self, user: UserRecord, settings: &Settings) {
        let mut st = self.lock();
        st.put_user(user);
        let view = PolicyView::compile(st.policy.policy().cloned(), &st.nodes, &st.users);
        st.install_policy(view);
        self.changed(&mut st, settings);
    }

    /// Forgets a deleted user (the store refuses to delete users that still own nodes).
    pub fn remove_user(&self, id: UserId) {
        self.lock().take_user(id);
    }

    /// Queues `event` to every session that sees `subject` (`viewers`).
    fn queue_event(st: &mut State, viewers: &[NodeId], event: Event) {
        let index = st.events.len();
        let mut used = false;
        for v in viewers {
            if st.sessions.contains_key(v) {
                st.pending.entry(*v).or_default().events.push(index);
                used = true;
            }
        }
        if used {
            st.events.push(event);
        }
    }

    /// Marks sessions whose packet filter or SSH policy may have changed.
    fn queue_recheck(st: &mut State, nodes: impl IntoIterator<Item = NodeId>) {
        for n in nodes {
            if st.sessions.contains_key(&n) {
                st.pending.entry(n).or_default().recheck = true;
            }
        }
    }

    /// Sends what was collected now (no window) or wakes the flusher.
    fn changed(&self, st: &mut State, settings: &Settings) {
        if st.pending.is_empty() {
            return;
        }
        if settings.map_coalesce_window.is_zero() {
            Self::flush_locked(st, settings);
        } else {
            self.dirty.notify_one();
        }
    }

    /// Sends every session what it collected.
    pub fn flush(&self, settings: &Settings) {
        Self::flush_locked(&mut self.lock(), settings);
    }

    fn flush_locked(st: &mut State, settings: &Settings) {
        let now = OffsetDateTime::now_utc();
        let pending = std::mem::take(&mut st.pending);
        let events = std::mem::take(&mut st.events);
        let mut shared: FxHashMap<(Compression, Vec<usize>), Option<Frame>> = FxHashMap::default();
        for (id, p) in pending {
            if !st.sessions.contains_key(&id) {
                continue;
            }
            // A re-check usually finds the filter unchanged (e.g. a join under a `*` rule re-checks every peer);
            // then the session shares the common message below instead of getting one encoded for it alone.
            let (mut filter, mut ssh) = (None, None);
            if p.recheck {
                let (new_filter, new_ssh) = st.policy.filter_and_ssh(id, &settings.server_url);
                if let Some(session) = st.sessions.get_mut(&id) {
                    if new_filter != session.filter {
                        session.filter = new_filter.clone();
                        filter = Some(new_filter);
                    }
                    if new_ssh != session.ssh {
                        session.ssh = new_ssh.clone();
                        ssh = Some(new_ssh.unwrap_or_else(|| serde_json::json!({ "rules": [] })));
                    }
                }
            }
            let Some(session) = st.sessions.get(&id) else { continue };
            if filter.is_none() && ssh.is_none() && !p.self_changed {
                // Only changes to other nodes: every session that collected the same ones shares one encoding.
                if p.events.is_empty() {
                    continue;
                }
                let key = (session.compression, p.events);
                let frame = match shared.get(&key) {
                    Some(f) => f.clone(),
                    None => {
                        let msg = Self::events_message(st, &events, &key.1, settings, now);
                        let frame = EncodeOnce::new(&msg).frame(key.0);
                        shared.insert(key, frame.clone());
                        frame
                    }
                };
                if let Some(frame) = frame {
                    session.queue.send(frame);
                }
                continue;
            }
            // Its own view changed too: one message of its own, so peers and the filter that admits them arrive
            // together.
            let mut msg = Self::events_message(st, &events, &p.events, settings, now);
            msg.packet_filter = filter;
            msg.ssh_policy = ssh;
            if p.self_changed
                && let Some(me) = st.nodes.get(&id)
            {
                let node = Self::self_node(st, me, settings, now);
                if !msg.user_profiles.iter().any(|u| u.id == node.user) {
                    msg.user_profiles.push(render::user_profile(node.user, &st.users));
                }
                msg.node = Some(node);
            }
            if let Some(frame) = EncodeOnce::new(&msg).frame(session.compression) {
                session.queue.send(frame);
            }
        }
    }

    /// One message for a list of events: the last word on each node wins, and patches to nodes sent whole or
    /// removed are dropped.
    fn events_message(
        st: &State,
        events: &[Event],
        list: &[usize],
        settings: &Settings,
        now: OffsetDateTime,
    ) -> MapResponse {
        enum Last {
            Changed,
            Removed,
        }
        let mut last: BTreeMap<NodeId, Last> = BTreeMap::new();
        let mut patches: BTreeMap<NodeId, PeerChange> = BTreeMap::new();
        for e in list.iter().filter_map(|&i| events.get(i)) {
            match e {
                Event::Changed(n) => {
                    last.insert(*n, Last::Changed);
                    patches.remove(n);
                }
                Event::Removed(n) => {
                    last.insert(*n, Last::Removed);
                    patches.remove(n);
                }
                Event::Patch(p) => {
                    let n = NodeId(p.node_id);
                    if last.contains_key(&n) {
                        continue;
                    }
                    match patches.get_mut(&n) {
                        Some(have) => merge_patch(have, p),
                        None => {
                            patches.insert(n, p.clone());
                        }
                    }
                }
            }
        }
        let mut msg = MapResponse::default();
        for (n, what) in last {
            match (what, st.nodes.get(&n)) {
                (Last::Changed, Some(entry)) => {
                    msg.peers_changed.push(render::node(entry, settings, false, now, &st.primaries))
                }
                _ => msg.peers_removed.push(n.0),
            }
        }
        msg.peers_changed_patch = patches.into_values().collect();
        let profile_ids: BTreeSet<i64> = msg.peers_changed.iter().map(|n| n.user).collect();
        msg.user_profiles = profile_ids.into_iter().map(|u| render::user_profile(u, &st.users)).collect();
        msg
    }

    /// The self node as its owner sees it, with the policy's node attributes.
    fn self_node(st: &State, entry: &NodeEntry, settings: &Settings, now: OffsetDateTime) -> Node {
        let mut node = render::node(entry, settings, true, now, &st.primaries);
        node.cap_map.extend(st.policy.self_caps(entry.record.id));
        node
    }

    /// Queues, for every session, the difference between what `old` gave it and what the current policy gives it:
    /// peers added or removed, and a check of its packet filter and SSH policy. `changed` names a node whose own
    /// rendering changed: sessions that keep seeing it get it again, and its own session gets its new self node.
    fn resync_everyone(st: &mut State, old: &PolicyView, changed: Option<NodeId>) {
        let sessions: Vec<NodeId> = st.sessions.keys().copied().collect();
        let mut changed_events: HashMap<NodeId, usize> = HashMap::new();
        let mut removed_events: HashMap<NodeId, usize> = HashMap::new();
        for id in sessions {
            let mut before = old.peers_of(id, &st.nodes);
            let mut after = st.policy.peers_of(id, &st.nodes);
            // Usually in order already (indexes follow ids), which the sort notices in one pass.
            before.sort_unstable();
            after.sort_unstable();
            let (mut resend, gone) = sorted_difference(&before, &after);
            if let Some(c) = changed
                && c != id
                && before.binary_search(&c).is_ok()
                && after.binary_search(&c).is_ok()
            {
                resend.push(c);
            }
            let mut list = Vec::new();
            for n in resend {
                let e = *changed_events.entry(n).or_insert_with(|| {
                    st.events.push(Event::Changed(n));
                    st.events.len() - 1
                });
                list.push(e);
            }
            for n in gone {
                let e = *removed_events.entry(n).or_insert_with(|| {
                    st.events.push(Event::Removed(n));
                    st.events.len() - 1
                });
                list.push(e);
            }
            let p = st.pending.entry(id).or_default();
            p.events.extend(list);
            p.recheck = true;
            if changed == Some(id) {
                p.self_changed = true;
            }
        }
    }

    /// Replaces the policy (`None`: allow all) and updates every session.
    pub fn set_policy(&self, policy: Option<tailwarden_policy::Policy>, text: &str, settings: &Settings) {
        let mut st = self.lock();
        let view = PolicyView::compile(policy, &st.nodes, &st.users);
        st.policy_text = text.to_string();
        st.install_policy(view);
        self.changed(&mut st, settings);
    }

    /// Replaces the policy with one [`Tailnet::check_policy`] passed, reusing its compilation unless nodes or users
    /// changed in between.
    pub fn apply_checked_policy(&self, checked: CheckedPolicy, text: &str, settings: &Settings) {
        let mut st = self.lock();
        let view = if checked.revision == st.revision {
            PolicyView::from_compiled(checked.policy, checked.compiled)
        } else {
            PolicyView::compile(Some(checked.policy), &st.nodes, &st.users)
        };
        st.policy_text = text.to_string();
        st.install_policy(view);
        self.changed(&mut st, settings);
    }

    /// What node `id` is given under the current policy (for administrators' debugging).
    pub fn grants_of(&self, id: NodeId, settings: &Settings) -> Option<NodeGrants> {
        let st = self.lock();
        st.nodes.contains_key(&id).then(|| st.policy.grants(id, &st.nodes, &settings.server_url))
    }

    /// The text of the policy in force (empty: none).
    pub fn policy_text(&self) -> String {
        self.lock().policy_text.clone()
    }

    /// Checks a candidate policy against the current tailnet without applying it.
    pub fn check_policy(&self, text: &str) -> Result<CheckedPolicy, tailwarden_policy::PolicyError> {
        let st = self.lock();
        let (policy, compiled) = policy_view::check(text, &st.nodes, &st.users)?;
        Ok(CheckedPolicy { policy, compiled, revision: st.revision })
    }

    /// Applies a node that was just registered or changed in the store and tells everyone.
    pub fn upsert_node(&self, record: NodeRecord, session: SessionFields, settings: &Settings) {
        let mut st = self.lock();
        let mut entry = NodeEntry::from_record(record);
        if let Some(old) = st.nodes.get(&entry.record.id) {
            entry.online = old.online;
            entry.cap = old.cap;
            if let SessionFields::KeepMemory = session {
                entry.disco_key = old.disco_key;
                entry.hostinfo = old.hostinfo.clone();
                let (new, old) = (&mut entry.record, &old.record);
                new.disco_key.clone_from(&old.disco_key);
                new.hostinfo.clone_from(&old.hostinfo);
                new.hostname.clone_from(&old.hostname);
                new.endpoints.clone_from(&old.endpoints);
                new.last_seen_ms = old.last_seen_ms;
            }
        }
        let id = entry.record.id;
        if let Some(old) = st.nodes.get(&id)
            && old.node_key != entry.node_key
        {
            let old_key = old.node_key;
            st.by_key.remove(&old_key);
        }
        st.by_key.insert(entry.node_key, id);
        let old = st.put_node(entry);
        Self::node_updated(&mut st, id, old.as_ref());
        self.changed(&mut st, settings);
    }

    /// Elects primary routers again after a router came online, went offline, changed its routes or was deleted,
    /// and sends every router whose primary routes changed, whole, to the sessions that see it (and its own session
    /// its new self node). `except` is a node the caller sends whole anyway.
    fn update_primaries(st: &mut State, except: Option<NodeId>) {
        let elected = elect_primaries(&st.nodes, &st.primaries);
        if elected == st.primaries {
            return;
        }
        let mut changed: BTreeSet<NodeId> = BTreeSet::new();
        for (net, id) in st.primaries.iter().chain(elected.iter()) {
            if st.primaries.get(net) != elected.get(net) {
                changed.insert(*id);
            }
        }
        st.primaries = elected;
        for id in changed {
            if Some(id) == except || !st.nodes.contains_key(&id) {
                continue;
            }
            st.rendered.remove(&id);
            let viewers = st.policy.peers_of(id, &st.nodes);
            Self::queue_event(st, &viewers, Event::Changed(id));
            if st.sessions.contains_key(&id) {
                st.pending.entry(id).or_default().self_changed = true;
            }
        }
    }

    /// Works out what node `id`'s change means, after `st.nodes` holds its new state (`old`: its state before, `None`
    /// for a new node): the policy is updated in place, sessions that see it (before or after) get it whole or lose
    /// it, sessions whose filter may differ re-check it, and its own session gets its new peers and self node.
    fn node_updated(st: &mut State, id: NodeId, old: Option<&NodeEntry>) {
        let Some(new) = st.nodes.get(&id).cloned() else { return };
        if new.serves_subnets() || old.is_some_and(NodeEntry::serves_subnets) {
            Self::update_primaries(st, Some(id));
        }
        let model = |e: &NodeEntry| {
            let mut n = policy_view::policy_node(e);
            n.name.clear();
            n
        };
        let relevant = old.is_none_or(|o| model(o) != model(&new));
        let before = if old.is_some() { st.policy.peers_of(id, &st.nodes) } else { Vec::new() };
        if relevant {
            let snapshot = st.policy.recompiles_for(&new).then(|| st.policy.clone());
            match st.policy.apply_node(&new) {
                Impact::Everyone => {
                    let old_view = snapshot.unwrap_or_else(|| st.policy.clone());
                    Self::resync_everyone(st, &old_view, Some(id));
                    return;
                }
                Impact::Nodes(list) => Self::queue_recheck(st, list),
            }
        }
        let after = st.policy.peers_of(id, &st.nodes);
        Self::queue_visibility(st, id, &before, &after);
    }

    /// Queues node `id` (whose rendering changed) to the sessions that see it, its removal to those that stopped
    /// seeing it, and to its own session the peers it gained or lost.
    fn queue_visibility(st: &mut State, id: NodeId, before: &[NodeId], after: &[NodeId]) {
        let (mut b, mut a) = (before.to_vec(), after.to_vec());
        b.sort_unstable();
        a.sort_unstable();
        let (gained, gone) = sorted_difference(&b, &a);
        Self::queue_event(st, after, Event::Changed(id));
        Self::queue_event(st, &gone, Event::Removed(id));
        if st.sessions.contains_key(&id) {
            let mut list = Vec::new();
            for n in gained {
                st.events.push(Event::Changed(n));
                list.push(st.events.len() - 1);
            }
            for &n in &gone {
                st.events.push(Event::Removed(n));
                list.push(st.events.len() - 1);
            }
            let p = st.pending.entry(id).or_default();
            p.events.extend(list);
            p.recheck = true;
            p.self_changed = true;
        }
    }

    /// Forgets a deleted node, ends its session and removes it from every peer's map.
    pub fn remove_node(&self, id: NodeId, settings: &Settings) -> Option<NodeEntry> {
        let mut st = self.lock();
        if !st.nodes.contains_key(&id) {
            return None;
        }
        let before = st.policy.peers_of(id, &st.nodes);
        let snapshot = st.policy.recompiles_removing(id).then(|| st.policy.clone());
        let removed = st.take_node(id);
        if let Some(r) = &removed {
            st.by_key.remove(&r.node_key);
            if r.serves_subnets() {
                Self::update_primaries(&mut st, None);
            }
        }
        st.sessions.remove(&id);
        st.pending.remove(&id);
        match st.policy.remove_node(id) {
            Impact::Everyone => {
                let old_view = snapshot.unwrap_or_else(|| st.policy.clone());
                Self::resync_everyone(&mut st, &old_view, None);
            }
            Impact::Nodes(list) => {
                Self::queue_recheck(&mut st, list);
                Self::queue_event(&mut st, &before, Event::Removed(id));
            }
        }
        self.changed(&mut st, settings);
        removed
    }

    /// Applies what a map request reports (disco key, endpoints, hostinfo, capability version) and sends peers the
    /// smallest delta that describes it. Returns whether anything changed.
    pub fn apply_client_update(
        &self,
        id: NodeId,
        disco_key: DiscoKey,
        endpoints: Option<Vec<String>>,
        hostinfo: Option<Hostinfo>,
        cap: u16,
        settings: &Settings,
    ) -> bool {
        let mut st = self.lock();
        // The node's previous state is only needed when hostinfo changed (then it may be a full node change); most
        // map requests report endpoints or nothing new.
        let hostinfo = hostinfo.filter(|h| st.nodes.get(&id).is_some_and(|e| *h != e.hostinfo));
        let old = if hostinfo.is_some() { st.nodes.get(&id).cloned() } else { None };
        let Some(entry) = st.node_mut(id) else { return false };
        entry.cap = cap;
        let mut patch = PeerChange { node_id: id.0, ..Default::default() };
        let mut patched = false;
        if !disco_key.is_zero() && disco_key != entry.disco_key {
            entry.disco_key = disco_key;
            entry.record.disco_key = disco_key.to_string();
            patch.disco_key = Some(disco_key);
            patched = true;
        }
        if let Some(eps) = endpoints.map(sanitize_endpoints)
            && eps != entry.record.endpoints
        {
            entry.record.endpoints = eps.clone();
            patch.endpoints = Some(eps);
            patched = true;
        }
        let mut full_change = false;
        if let Some(h) = hostinfo {
            let old_derp = entry.hostinfo.preferred_derp();
            // Only the home region changing is expressible as a patch; anything else needs the whole node.
            let mut without_netinfo = h.clone();
            without_netinfo.net_info = entry.hostinfo.net_info.clone();
            full_change = without_netinfo != entry.hostinfo;
            if h.preferred_derp() != old_derp && h.preferred_derp().is_some() {
                patch.derp_region = h.preferred_derp();
                patched = true;
            }
            entry.record.hostinfo = serde_json::to_string(&h).unwrap_or_default();
            entry.record.hostname = h.hostname.clone();
            entry.hostinfo = h;
        }
        if full_change {
            // Hostinfo can change what the policy grants (advertised routes): treat it like any node change.
            Self::node_updated(&mut st, id, old.as_ref());
        } else if patched {
            let viewers = st.policy.peers_of(id, &st.nodes);
            Self::queue_event(&mut st, &viewers, Event::Patch(patch));
        }
        self.changed(&mut st, settings);
        full_change || patched
    }

    /// Opens a map session for `id`, replacing (and thereby closing) any previous one, and marks the node online.
    /// Returns the receiver and the first message.
    pub fn open_session(
        &self,
        id: NodeId,
        compression: Compression,
        settings: &Settings,
    ) -> Option<(SessionReceiver, FullMap)> {
        let now = OffsetDateTime::now_utc();
        let mut st = self.lock();
        let entry = st.node_mut(id)?;
        let was_online = std::mem::replace(&mut entry.online, true);
        if !was_online && entry.serves_subnets() {
            // Before the first map, so its self node already shows the routes it now carries.
            Self::update_primaries(&mut st, None);
        }
        st.next_session += 1;
        let session_id = st.next_session;
        let (tx, rx) = session_queue(SESSION_QUEUE);
        let grants = st.policy.grants(id, &st.nodes, &settings.server_url);
        let first = Self::full_map_locked(&mut st, id, &grants, settings, now)?;
        let NodeGrants { filter, ssh, .. } = grants;
        st.sessions.insert(id, SessionHandle { id: session_id, compression, queue: tx, filter, ssh });
        st.pending.remove(&id);
        if !was_online {
            let patch = PeerChange { node_id: id.0, online: Some(true), ..Default::default() };
            let viewers = st.policy.peers_of(id, &st.nodes);
            Self::queue_event(&mut st, &viewers, Event::Patch(patch));
            self.changed(&mut st, settings);
        }
        Some((SessionReceiver { id: session_id, queue: rx }, first))
    }

    fn full_map_locked(
        st: &mut State,
        id: NodeId,
        grants: &NodeGrants,
        settings: &Settings,
        now: OffsetDateTime,
    ) -> Option<FullMap> {
        st.nodes.get(&id)?;
        // `grants.peers` is ordered by id, as clients expect the list.
        let peers: Vec<bytes::Bytes> = grants.peers.iter().filter_map(|&p| st.peer_json(p, settings, now)).collect();
        let peer_users = grants.peers.iter().filter_map(|p| st.nodes.get(p)).map(render::display_user);
        let me = st.nodes.get(&id)?;
        let self_node = Self::self_node(st, me, settings, now);
        let msg = render::full_map(self_node, peer_users, grants, &st.users, settings, now);
        Some(FullMap { msg, peers })
    }

    /// A fresh full map for `id` (one-shot requests and sessions that fell behind); a session's delta base is
    /// reset to what this map contains.
    pub fn full_map(&self, id: NodeId, settings: &Settings) -> Option<FullMap> {
        let mut st = self.lock();
        let grants = st.policy.grants(id, &st.nodes, &settings.server_url);
        let map = Self::full_map_locked(&mut st, id, &grants, settings, OffsetDateTime::now_utc())?;
        if let Some(session) = st.sessions.get_mut(&id) {
            session.filter = grants.filter;
            session.ssh = grants.ssh;
            st.pending.remove(&id);
        }
        Some(map)
    }

    /// Ends session `session_id` of `id` if it is still the current one; the node goes offline. Returns the time
    /// to record as last seen, if the node went offline.
    pub fn close_session(&self, id: NodeId, session_id: u64, settings: &Settings) -> Option<i64> {
        let mut st = self.lock();
        if st.sessions.get(&id).is_none_or(|s| s.id != session_id) {
            return None;
        }
        st.sessions.remove(&id);
        st.pending.remove(&id);
        let now = now_ms();
        let entry = st.node_mut(id)?;
        entry.online = false;
        entry.record.last_seen_ms = Some(now);
        let router = entry.serves_subnets();
        let patch =
            PeerChange { node_id: id.0, online: Some(false), last_seen: render::ms_to_time(now), ..Default::default() };
        let viewers = st.policy.peers_of(id, &st.nodes);
        Self::queue_event(&mut st, &viewers, Event::Patch(patch));
        if router {
            Self::update_primaries(&mut st, None);
        }
        self.changed(&mut st, settings);
        Some(now)
    }

    /// Deletes ephemeral nodes that have been offline longer than `timeout`.
    pub async fn collect_ephemeral(
        &self,
        store: &Store,
        settings: &Settings,
        timeout: Duration,
    ) -> Result<(), ControlError> {
        let cutoff = now_ms() - i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let doomed: Vec<NodeId> = self
            .lock()
            .nodes
            .values()
            .filter(|n| {
                n.record.ephemeral && !n.online && n.record.last_seen_ms.unwrap_or(n.record.created_ms) < cutoff
            })
            .map(|n| n.record.id)
            .collect();
        for id in doomed {
            store.tenant(self.tenant).delete_node(id).await?;
            if self.remove_node(id, settings).is_some() {
                tracing::info!(node = %id, tenant = %self.tenant, "deleted inactive ephemeral node");
            }
        }
        Ok(())
    }

    /// Queues `msg` to every open session, encoded once per compression mode: server-wide changes (DNS
    /// configuration, DERP map) that every node receives alike.
    pub fn broadcast(&self, msg: &MapResponse) {
        let st = self.lock();
        let mut enc = EncodeOnce::new(msg);
        for session in st.sessions.values() {
            if let Some(frame) = enc.frame(session.compression) {
                session.queue.send(frame);
            }
        }
    }
}

/// Elects the primary router of every subnet route an online node serves, as Headscale does: a primary that is still
/// online and still serves the route stays (so routes do not flap between routers), otherwise the online router with
/// the lowest id takes over. A route no online node serves has no primary. Exit routes are not elected: every exit
/// node is offered.
fn elect_primaries(nodes: &BTreeMap<NodeId, NodeEntry>, current: &BTreeMap<IpNet, NodeId>) -> BTreeMap<IpNet, NodeId> {
    let mut elected: BTreeMap<IpNet, NodeId> = BTreeMap::new();
    // `nodes` is in id order, so the first router seen for a route has the lowest id.
    for (id, entry) in nodes.iter().filter(|(_, e)| e.online) {
        for net in entry.served_routes().filter(|net| net.prefix_len() != 0) {
            let incumbent = current.get(&net) == Some(id);
            match elected.entry(net) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(*id);
                }
                std::collections::btree_map::Entry::Occupied(mut o) if incumbent => {
                    o.insert(*id);
                }
                std::collections::btree_map::Entry::Occupied(_) => {}
            }
        }
    }
    elected
}

/// What only `after` holds and what only `before` holds, of two ascending lists without duplicates (a merge: peer
/// lists of ~100 nodes, compared for every session when the policy changes, cost a pass each instead of building
/// two ordered sets).
fn sorted_difference(before: &[NodeId], after: &[NodeId]) -> (Vec<NodeId>, Vec<NodeId>) {
    let (mut gained, mut lost) = (Vec::new(), Vec::new());
    let (mut b, mut a) = (before.iter().peekable(), after.iter().peekable());
    loop {
        match (b.peek(), a.peek()) {
            (Some(x), Some(y)) if x == y => {
                b.next();
                a.next();
            }
            (Some(x), Some(y)) if x < y => lost.extend(b.next()),
            (Some(_), Some(_)) | (None, Some(_)) => gained.extend(a.next()),
            (Some(_), None) => lost.extend(b.next()),
            (None, None) => return (gained, lost),
        }
    }
}

/// Folds a later patch into an earlier one for the same node: fields the later one sets win.
fn merge_patch(have: &mut PeerChange, later: &PeerChange) {
    let later = later.clone();
    if later.key.is_some() {
        have.key = later.key;
    }
    if later.key_expiry.is_some() {
        have.key_expiry = later.key_expiry;
    }
    if later.derp_region.is_some() {
        have.derp_region = later.derp_region;
    }
    if later.endpoints.is_some() {
        have.endpoints = later.endpoints;
    }
    if later.disco_key.is_some() {
        have.disco_key = later.disco_key;
    }
    if later.online.is_some() {
        have.online = later.online;
    }
    if later.last_seen.is_some() {
        have.last_seen = later.last_seen;
    }
}

/// Drops endpoints peers cannot use: unparsable ones and IPv6 link-local or zoned addresses.
fn sanitize_endpoints(eps: Vec<String>) -> Vec<String> {
    eps.into_iter()
        .filter(|e| match e.parse::<std::net::SocketAddr>() {
            Ok(std::net::SocketAddr::V6(a)) => (a.ip().segments()[0] & 0xffc0) != 0xfe80 && a.scope_id() == 0,
            Ok(_) => true,
            Err(_) => false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::net::Ipv4Addr;
    use tailwarden_store::RegisterMethod;

    fn tailnet() -> Tailnet {
        Tailnet { tenant: TenantId::DEFAULT, state: Mutex::new(State::default()), dirty: Arc::new(Notify::new()) }
    }

    #[test]
    fn sorted_difference_agrees_with_set_difference() {
        let ids = |v: &[i64]| v.iter().copied().map(NodeId).collect::<Vec<_>>();
        assert_eq!(sorted_difference(&ids(&[1, 3, 5]), &ids(&[2, 3, 6])), (ids(&[2, 6]), ids(&[1, 5])));
        assert_eq!(sorted_difference(&[], &ids(&[4])), (ids(&[4]), Vec::new()));
        assert_eq!(sorted_difference(&ids(&[4]), &[]), (Vec::new(), ids(&[4])));
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..500 {
            let mut pick = || {
                let set: BTreeSet<NodeId> = (0..rng.gen_range(0..40)).map(|_| NodeId(rng.gen_range(0..60))).collect();
                set
            };
            let (before, after) = (pick(), pick());
            let (gained, lost) = sorted_difference(
                &before.iter().copied().collect::<Vec<_>>(),
                &after.iter().copied().collect::<Vec<_>>(),
            );
            assert_eq!(gained, after.difference(&before).copied().collect::<Vec<_>>());
            assert_eq!(lost, before.difference(&after).copied().collect::<Vec<_>>());
        }
    }

    fn record(id: i64, expiry_ms: Option<i64>) -> NodeRecord {
        let byte = u8::try_from(id).unwrap();
        NodeRecord {
            id: NodeId(id),
            tenant_id: TenantId::DEFAULT,
            machine_key: MachineKey([byte; 32]).to_string(),
            node_key: NodeKey([byte; 32]).to_string(),
            disco_key: String::new(),
            ipv4: Some(Ipv4Addr::new(100, 64, 0, byte)),
            ipv6: None,
            hostname: format!("host-{id}"),
            given_name: format!("host-{id}"),
            user_id: Some(UserId(1 + id % 2)),
            tags: Vec::new(),
            hostinfo: "{}".into(),
            endpoints: Vec::new(),
            approved_routes: Vec::new(),
            expiry_ms,
            last_seen_ms: None,
            ephemeral: false,
            register_method: RegisterMethod::AuthKey,
            auth_key_id: None,
            created_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_000,
        }
    }

    /// A full map rendered from scratch, every peer serialised anew: what the cached path must equal.
    fn naive_full_map(tailnet: &Tailnet, id: NodeId, settings: &Settings) -> Option<serde_json::Value> {
        let st = tailnet.lock();
        let now = OffsetDateTime::now_utc();
        let me = st.nodes.get(&id)?;
        let grants = st.policy.grants(id, &st.nodes, &settings.server_url);
        let peers: Vec<Node> =
            grants.peers.iter().map(|p| render::node(&st.nodes[p], settings, false, now, &st.primaries)).collect();
        let users = peers.iter().map(|p| p.user).collect::<Vec<_>>();
        let mut msg =
            render::full_map(Tailnet::self_node(&st, me, settings, now), users, &grants, &st.users, settings, now);
        msg.peers = (!peers.is_empty()).then_some(peers);
        Some(without_control_time(serde_json::to_value(&msg).unwrap()))
    }

    fn cached_full_map(tailnet: &Tailnet, id: NodeId, settings: &Settings) -> Option<serde_json::Value> {
        let framed = tailnet.full_map(id, settings)?.encode(Compression::None).unwrap();
        Some(without_control_time(serde_json::from_slice(&framed[4..]).unwrap()))
    }

    /// The two maps are built a moment apart.
    fn without_control_time(mut v: serde_json::Value) -> serde_json::Value {
        v.as_object_mut().unwrap().remove("ControlTime");
        v
    }

    #[test]
    fn cached_peers_match_fresh_rendering_through_random_changes() {
        let settings = Settings::for_tests(Default::default());
        let tailnet = tailnet();
        let mut rng = StdRng::seed_from_u64(7);
        let mut sessions: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut checked_peers = 0;
        for step in 0..400 {
            let id = NodeId(rng.gen_range(1..=8));
            match rng.gen_range(0..6) {
                0 => {
                    let expiry = [None, Some(1), Some(now_ms() + 3_600_000)][rng.gen_range(0..3)];
                    tailnet.upsert_node(record(id.0, expiry), SessionFields::KeepMemory, &settings);
                }
                1 => {
                    let endpoints = vec![format!("192.0.2.{}:{}", id.0, 40_000 + step)];
                    let hostinfo =
                        rng.gen_bool(0.3).then(|| Hostinfo { hostname: format!("h{step}"), ..Default::default() });
                    let disco = if rng.gen_bool(0.3) { DiscoKey([rng.r#gen(); 32]) } else { DiscoKey::default() };
                    tailnet.apply_client_update(
                        id,
                        disco,
                        Some(endpoints),
                        hostinfo,
                        rng.gen_range(100..120),
                        &settings,
                    );
                }
                2 => {
                    if let Some((receiver, _)) = tailnet.open_session(id, Compression::None, &settings) {
                        sessions.insert(id, receiver.id);
                    }
                }
                3 => {
                    if let Some(session) = sessions.remove(&id) {
                        tailnet.close_session(id, session, &settings);
                    }
                }
                4 => {
                    tailnet.remove_node(id, &settings);
                    sessions.remove(&id);
                }
                _ => {}
            }
            for viewer in 1..=8 {
                let viewer = NodeId(viewer);
                let cached = cached_full_map(&tailnet, viewer, &settings);
                assert_eq!(cached, naive_full_map(&tailnet, viewer, &settings), "step {step}, viewer {viewer}");
                checked_peers += cached.and_then(|m| m["Peers"].as_array().map(Vec::len)).unwrap_or(0);
            }
        }
        assert!(checked_peers > 1000, "the sequence kept tailnets too small to test the cache: {checked_peers} peers");
    }

    fn router(id: i64, routes: &[&str]) -> NodeRecord {
        let mut r = record(id, None);
        r.approved_routes = routes.iter().map(|s| s.to_string()).collect();
        r.hostinfo = serde_json::json!({ "RoutableIPs": routes }).to_string();
        r
    }

    #[test]
    fn primary_routers_are_online_sticky_and_lowest_id_first() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let mut nodes = BTreeMap::new();
        for (id, routes, online) in [
            (1, &["10.0.0.0/24", "0.0.0.0/0"][..], false),
            (2, &["10.0.0.0/24", "10.9.0.0/16"][..], true),
            (3, &["10.0.0.0/24", "0.0.0.0/0"][..], true),
        ] {
            let mut entry = NodeEntry::from_record(router(id, routes));
            entry.online = online;
            nodes.insert(NodeId(id), entry);
        }
        let want =
            |pairs: &[(&str, i64)]| pairs.iter().map(|(n, id)| (net(n), NodeId(*id))).collect::<BTreeMap<_, _>>();
        // Node 1 is offline; exit routes are never elected.
        let first = elect_primaries(&nodes, &BTreeMap::new());
        assert_eq!(first, want(&[("10.0.0.0/24", 2), ("10.9.0.0/16", 2)]));
        // A primary that is still online keeps its routes when a lower id comes online.
        nodes.get_mut(&NodeId(1)).unwrap().online = true;
        let current = want(&[("10.0.0.0/24", 3), ("10.9.0.0/16", 2)]);
        assert_eq!(elect_primaries(&nodes, &current), current);
        // Failover to the lowest online id; a route nobody online serves has no primary.
        nodes.get_mut(&NodeId(2)).unwrap().online = false;
        nodes.get_mut(&NodeId(3)).unwrap().online = false;
        assert_eq!(elect_primaries(&nodes, &current), want(&[("10.0.0.0/24", 1)]));
        // Approved but no longer advertised: not served.
        nodes.get_mut(&NodeId(1)).unwrap().hostinfo.routable_ips.clear();
        assert_eq!(elect_primaries(&nodes, &current), BTreeMap::new());
    }

    /// Two routers for one subnet: peers route through one; when it goes offline they are told to use the other,
    /// and it keeps the route when the first comes back.
    #[test]
    fn a_subnet_fails_over_to_the_other_router_and_stays_there() {
        let settings = Settings { map_coalesce_window: Duration::ZERO, ..Settings::for_tests(Default::default()) };
        let tailnet = tailnet();
        for node in [record(1, None), router(2, &["10.0.0.0/24"]), router(3, &["10.0.0.0/24"])] {
            tailnet.upsert_node(node, SessionFields::FromRecord, &settings);
        }
        let (a, _) = tailnet.open_session(NodeId(2), Compression::None, &settings).unwrap();
        let (_b, _) = tailnet.open_session(NodeId(3), Compression::None, &settings).unwrap();
        let (mut viewer, first) = tailnet.open_session(NodeId(1), Compression::None, &settings).unwrap();
        let routes_of = |peer: &serde_json::Value| (peer["AllowedIPs"].clone(), peer["PrimaryRoutes"].clone());
        let addr = |id: u8| format!("100.64.0.{id}/32");
        let serving = |id: u8| (serde_json::json!([addr(id), "10.0.0.0/24"]), serde_json::json!(["10.0.0.0/24"]));
        let standing_by = |id: u8| (serde_json::json!([addr(id)]), serde_json::Value::Null);
        let peers: Vec<serde_json::Value> = first.peers.iter().map(|p| serde_json::from_slice(p).unwrap()).collect();
        assert_eq!(routes_of(&peers[0]), serving(2), "{}", peers[0]);
        assert_eq!(routes_of(&peers[1]), standing_by(3), "{}", peers[1]);

        // The pending messages the viewer has, merged: the last rendering of each peer.
        let drain = |viewer: &mut SessionReceiver| {
            let mut last = BTreeMap::new();
            while let Some(frame) = viewer.queue.try_recv() {
                let msg: serde_json::Value = serde_json::from_slice(&frame[4..]).unwrap();
                for p in msg["PeersChanged"].as_array().into_iter().flatten() {
                    last.insert(p["ID"].as_i64().unwrap(), routes_of(p));
                }
            }
            last
        };
        tailnet.close_session(NodeId(2), a.id, &settings);
        let changed = drain(&mut viewer);
        assert_eq!(changed.get(&2), Some(&standing_by(2)), "{changed:?}");
        assert_eq!(changed.get(&3), Some(&serving(3)), "{changed:?}");

        let (_a, _) = tailnet.open_session(NodeId(2), Compression::None, &settings).unwrap();
        let changed = drain(&mut viewer);
        assert!(!changed.contains_key(&3), "the new primary keeps the route: {changed:?}");
        let full = cached_full_map(&tailnet, NodeId(1), &settings).unwrap();
        assert_eq!(routes_of(&full["Peers"][1]), serving(3));
        assert_eq!(routes_of(&full["Peers"][0]), standing_by(2));
    }

    /// A checked policy is applied with the compilation made while checking it, unless the tailnet changed in
    /// between: then that compilation would not know of the new node.
    #[test]
    fn a_checked_policy_is_compiled_again_when_nodes_changed_meanwhile() {
        let settings = Settings { map_coalesce_window: Duration::ZERO, ..Settings::for_tests(Default::default()) };
        let tailnet = tailnet();
        tailnet.upsert_node(record(1, None), SessionFields::FromRecord, &settings);
        tailnet.upsert_node(record(2, None), SessionFields::FromRecord, &settings);
        let text = r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#;
        let peers = |id: i64| tailnet.grants_of(NodeId(id), &settings).unwrap().peers.into_iter().collect::<Vec<_>>();

        let unchanged = tailnet.check_policy(text).unwrap();
        tailnet.apply_checked_policy(unchanged, text, &settings);
        assert_eq!(peers(1), vec![NodeId(2)]);
        assert_eq!(tailnet.policy_text(), text);

        let stale = tailnet.check_policy(text).unwrap();
        tailnet.upsert_node(record(3, None), SessionFields::FromRecord, &settings);
        tailnet.apply_checked_policy(stale, text, &settings);
        assert_eq!(peers(1), vec![NodeId(2), NodeId(3)]);
        assert_eq!(peers(3), vec![NodeId(1), NodeId(2)]);
    }

    /// Deleting a subnet router recompiles the policy; its peers must still be told it is gone.
    #[test]
    fn peers_hear_of_a_deletion_that_recompiles_the_policy() {
        let settings = Settings { map_coalesce_window: Duration::ZERO, ..Settings::for_tests(Default::default()) };
        let tailnet = tailnet();
        tailnet.upsert_node(record(1, None), SessionFields::FromRecord, &settings);
        let mut router = record(2, None);
        router.approved_routes = vec!["10.0.0.0/24".into()];
        router.hostinfo = r#"{"RoutableIPs":["10.0.0.0/24"]}"#.into();
        tailnet.upsert_node(router, SessionFields::FromRecord, &settings);
        let text = r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#;
        tailnet.set_policy(Some(tailwarden_policy::Policy::parse(text).unwrap()), text, &settings);
        assert!(tailnet.lock().policy.recompiles_removing(NodeId(2)), "the test needs a deletion that recompiles");
        let (mut session, first) = tailnet.open_session(NodeId(1), Compression::None, &settings).unwrap();
        assert_eq!(first.peers.len(), 1);
        tailnet.remove_node(NodeId(2), &settings);
        let mut removed = Vec::new();
        while let Some(frame) = session.queue.try_recv() {
            let msg: serde_json::Value = serde_json::from_slice(&frame[4..]).unwrap();
            removed.extend(msg["PeersRemoved"].as_array().into_iter().flatten().cloned());
        }
        assert_eq!(removed, vec![serde_json::json!(2)]);
    }

    #[test]
    fn a_cached_peer_shows_its_key_expiring() {
        let settings = Settings::for_tests(Default::default());
        let tailnet = tailnet();
        tailnet.upsert_node(record(1, None), SessionFields::FromRecord, &settings);
        tailnet.upsert_node(record(2, Some(now_ms() + 300)), SessionFields::FromRecord, &settings);
        let peer = |m: Option<serde_json::Value>| m.unwrap()["Peers"][0].clone();
        let before = peer(cached_full_map(&tailnet, NodeId(1), &settings));
        assert_eq!(before["Expired"], serde_json::Value::Null, "not expired yet: {before}");
        std::thread::sleep(Duration::from_millis(400));
        let after = peer(cached_full_map(&tailnet, NodeId(1), &settings));
        assert_eq!(after["Expired"], serde_json::json!(true), "the cached rendering outlived the key: {after}");
    }
}
