//! Indexes over the tailnet that aliases are resolved through, and the reverse question the
//! incremental compiler asks: which node-selecting aliases hold a given node.
//!
//! Both are kept up to date node by node, so resolving `tag:web` or a user's devices costs the
//! size of the answer rather than a scan of the tailnet.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::alias::{Alias, AutoGroup};
use crate::model::Policy;
use crate::tailnet::{Node, Tailnet};

/// Nodes by the attributes aliases select them by.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeIndex {
    /// Untagged nodes by owning user.
    pub(crate) by_user: HashMap<u64, BTreeSet<usize>, AddrHash>,
    /// Nodes by tag.
    pub(crate) by_tag: HashMap<String, BTreeSet<usize>>,
    /// Every node address.
    pub(crate) by_addr: BTreeMap<IpAddr, usize>,
    /// Node id → index.
    pub(crate) by_id: HashMap<u64, usize, AddrHash>,
    /// Untagged nodes (`autogroup:member`).
    pub(crate) untagged: BTreeSet<usize>,
    /// Tagged nodes (`autogroup:tagged`).
    pub(crate) tagged: BTreeSet<usize>,
    /// Login → the first user with it (as [`Tailnet::user_by_login`] finds it).
    pub(crate) login_user: HashMap<String, u64>,
    /// Every node address as rules spell it, formatted once.
    addr_text: HashMap<IpAddr, String, AddrHash>,
}

/// The hasher for maps keyed by node addresses (and sets of them), which rendering a large rule
/// looks up once per address, and by node and user ids, which peer lists look up once per peer.
/// All are the control plane's own allocations, so the flooding resistance of the standard
/// library's hasher buys nothing here (rustc's own hasher).
pub(crate) type AddrHash = rustc_hash::FxBuildHasher;

impl NodeIndex {
    pub(crate) fn new(tailnet: &Tailnet) -> NodeIndex {
        let mut index = NodeIndex::default();
        for u in &tailnet.users {
            index.login_user.entry(u.login.clone()).or_insert(u.id);
        }
        for (i, n) in tailnet.nodes.iter().enumerate() {
            index.add(i, n);
        }
        index
    }

    pub(crate) fn add(&mut self, i: usize, n: &Node) {
        self.by_id.insert(n.id, i);
        for a in n.addrs() {
            self.by_addr.insert(a, i);
            self.addr_text.insert(a, a.to_string());
        }
        if n.is_tagged() {
            self.tagged.insert(i);
            for t in &n.tags {
                self.by_tag.entry(t.clone()).or_default().insert(i);
            }
        } else {
            self.untagged.insert(i);
            if let Some(u) = n.user {
                self.by_user.entry(u).or_default().insert(i);
            }
        }
    }

    pub(crate) fn remove(&mut self, i: usize, n: &Node) {
        if self.by_id.get(&n.id) == Some(&i) {
            self.by_id.remove(&n.id);
        }
        for a in n.addrs() {
            if self.by_addr.get(&a) == Some(&i) {
                self.by_addr.remove(&a);
                self.addr_text.remove(&a);
            }
        }
        self.tagged.remove(&i);
        self.untagged.remove(&i);
        for t in &n.tags {
            if let Some(set) = self.by_tag.get_mut(t) {
                set.remove(&i);
            }
        }
        if let Some(set) = n.user.and_then(|u| self.by_user.get_mut(&u)) {
            set.remove(&i);
        }
    }

    /// An address as rules spell it.
    pub(crate) fn text(&self, a: IpAddr) -> String {
        self.addr_text.get(&a).cloned().unwrap_or_else(|| a.to_string())
    }

    /// The untagged nodes of the user with this login.
    pub(crate) fn user_nodes(&self, login: &str) -> impl Iterator<Item = usize> + '_ {
        self.login_user.get(login).and_then(|u| self.by_user.get(u)).into_iter().flatten().copied()
    }
}

/// A node-selecting alias, reduced to what decides membership: a change to a node can only
/// change the resolution of aliases whose key the node carries (before or after the change).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum AliasKey {
    Login(String),
    Domain(String),
    Tag(String),
    Member,
    Tagged,
    Admin,
    Owner,
}

/// The keys of the node-selecting aliases in `aliases`; address aliases (`*`, CIDRs, hosts)
/// resolve to the same addresses whatever the nodes are, so they have none.
pub(crate) fn alias_keys<'a>(policy: &Policy, aliases: impl IntoIterator<Item = &'a Alias>) -> Vec<AliasKey> {
    let mut keys = Vec::new();
    for a in aliases {
        match a {
            Alias::User(login) => keys.push(AliasKey::Login(login.clone())),
            Alias::UserDomain(d) => keys.push(AliasKey::Domain(d.to_ascii_lowercase())),
            Alias::Group(g) => {
                keys.extend(policy.groups.get(g).into_iter().flatten().map(|l| AliasKey::Login(l.clone())));
            }
            Alias::Tag(t) => keys.push(AliasKey::Tag(t.clone())),
            Alias::AutoGroup(AutoGroup::Member) => keys.push(AliasKey::Member),
            Alias::AutoGroup(AutoGroup::Tagged) => keys.push(AliasKey::Tagged),
            Alias::AutoGroup(AutoGroup::Admin) => keys.push(AliasKey::Admin),
            Alias::AutoGroup(AutoGroup::Owner) => keys.push(AliasKey::Owner),
            _ => {}
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Whether an alias list names something only addresses decide (`*`, CIDRs, hosts, internet).
pub(crate) fn has_address_alias<'a>(aliases: impl IntoIterator<Item = &'a Alias>) -> bool {
    aliases.into_iter().any(|a| {
        matches!(
            a,
            Alias::Wildcard
                | Alias::Host(_)
                | Alias::Prefix(_)
                | Alias::AutoGroup(AutoGroup::Internet | AutoGroup::DangerAll)
        )
    })
}

/// The keys a node carries: every node-selecting alias that could hold it.
pub(crate) fn node_keys(tailnet: &Tailnet, node: &Node) -> Vec<AliasKey> {
    let mut keys = Vec::new();
    if node.is_tagged() {
        keys.push(AliasKey::Tagged);
        keys.extend(node.tags.iter().map(|t| AliasKey::Tag(t.clone())));
    } else {
        keys.push(AliasKey::Member);
        if let Some(u) = node.user.and_then(|id| tailnet.users.iter().find(|u| u.id == id)) {
            keys.push(AliasKey::Login(u.login.clone()));
            if let Some((_, d)) = u.login.rsplit_once('@') {
                keys.push(AliasKey::Domain(d.to_ascii_lowercase()));
            }
            if u.admin {
                keys.push(AliasKey::Admin);
            }
            if u.owner {
                keys.push(AliasKey::Owner);
            }
        }
    }
    keys
}

/// Item numbers (grants, SSH rules) by the alias keys they reference.
#[derive(Clone, Debug, Default)]
pub(crate) struct DependencyIndex {
    by_key: HashMap<AliasKey, Vec<usize>>,
}

impl DependencyIndex {
    pub(crate) fn add(&mut self, item: usize, keys: Vec<AliasKey>) {
        for k in keys {
            self.by_key.entry(k).or_default().push(item);
        }
    }

    /// The items referencing any of `keys`, ascending.
    pub(crate) fn items(&self, keys: &[AliasKey]) -> BTreeSet<usize> {
        keys.iter().filter_map(|k| self.by_key.get(k)).flatten().copied().collect()
    }
}
