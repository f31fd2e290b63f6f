//! Indexes over the tailnet that aliases are resolved through, and the reverse question the
//! incremental compiler asks: which node-selecting aliases hold a given node.
//!
//! Both are kept up to date node by node, so resolving `tag:web` or a user's devices costs the
//! size of the answer rather than a scan of the tailnet.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use crate::alias::{Alias, AutoGroup};
use crate::model::Policy;
use crate::tailnet::{Node, Tailnet};

/// Nodes by the attributes aliases select them by.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeIndex {
    /// Untagged nodes by owning user.
    pub(crate) by_user: HashMap<u64, BTreeSet<usize>>,
    /// Nodes by tag.
    pub(crate) by_tag: HashMap<String, BTreeSet<usize>>,
    /// Every node address.
    pub(crate) by_addr: BTreeMap<IpAddr, usize>,
    /// Node id → index.
    pub(crate) by_id: HashMap<u64, usize>,
    /// Untagged nodes (`autogroup:member`).
    pub(crate) untagged: BTreeSet<usize>,
    /// Tagged nodes (`autogroup:tagged`).
    pub(crate) tagged: BTreeSet<usize>,
    /// Login → the first user with it (as [`Tailnet::user_by_login`] finds it).
    pub(crate) login_user: HashMap<String, u64>,
    /// Every node address as rules spell it, formatted once.
    addr_text: HashMap<IpAddr, String, BuildHasherDefault<AddrHasher>>,
}

/// A multiply-rotate hash for node addresses (and sets of them), which rendering a large rule
/// looks up once per address. The addresses are the control plane's own allocations, so the
/// flooding resistance of the default hasher buys nothing here.
#[derive(Default)]
pub(crate) struct AddrHasher(u64);

impl AddrHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        // The multiply mixes only upwards, and addresses differ in their last bytes: fold the
        // high bits down so the table's bucket bits vary too.
        let x = (self.0 ^ (self.0 >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n.into());
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n.into());
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
}

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
            Alias::Wildcard | Alias::Host(_) | Alias::Prefix(_) | Alias::AutoGroup(AutoGroup::Internet | AutoGroup::DangerAll)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::hash::{BuildHasher, BuildHasherDefault};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::AddrHasher;

    /// Consecutive node addresses land in different buckets (the low bits hash tables index
    /// by differ), in both families.
    #[test]
    fn addr_hasher_spreads_consecutive_addresses() {
        let hasher = BuildHasherDefault::<AddrHasher>::default();
        let v4 = (1..=4096u32).map(|n| IpAddr::V4(Ipv4Addr::from(0x6440_0000 + n)));
        let v6 = (1..=4096u128).map(|n| IpAddr::V6(Ipv6Addr::from(0xfd7a_115c_a1e0_u128 << 80 | n)));
        for family in [v4.collect::<Vec<_>>(), v6.collect()] {
            let buckets: BTreeSet<u64> = family.iter().map(|a| hasher.hash_one(a) & 0xfff).collect();
            assert!(buckets.len() > 2048, "{} of 4096 buckets used", buckets.len());
        }
    }
}
