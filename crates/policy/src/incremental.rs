//! Applying one node's change to a compiled policy in place, and saying which nodes' outputs
//! (peers, packet filter, SSH policy) it may have changed.
//!
//! A node change can only alter the resolution of the aliases that hold the node before or
//! after it, so only the grants and SSH rules naming those aliases are recompiled; rules naming
//! addresses keep their text and only learn whether the node's addresses fall inside them. The
//! pairs of nodes that may talk are then unchanged except for pairs with the changed node, so
//! the nodes whose outputs can differ are the node itself, its peers before and after, the
//! servers of SSH rules that name it, and — because a merge key keeps the position of its
//! first rule — the nodes holding rules whose key's first position moved.
//!
//! Changes that touch routes (approval, primary election, `via` steering, exit nodes) or
//! `disable-ipv4` recompile everything: they are rare and their effects reach across the
//! tailnet.

use std::collections::BTreeSet;

use crate::compile::CompiledPolicy;
use crate::index::node_keys;
use crate::tailnet::{Node, Tailnet};

/// Which nodes' compiled outputs a change may have altered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Affected {
    /// Only these node indexes (ascending).
    Nodes(Vec<usize>),
    /// The policy was recompiled from scratch: any node's output may differ.
    All,
}

impl CompiledPolicy {
    /// The index of the node with this id (deleted nodes have none).
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.index.by_id.get(&id).copied()
    }

    /// Adds the node, or replaces the node with the same id, and returns whose outputs may have
    /// changed. A new node gets the next index; indexes of other nodes never move.
    pub fn update_node(&mut self, node: Node) -> Affected {
        let slot = self.index_of(node.id);
        self.change(slot, node)
    }

    /// Removes the node with this id. Its index stays taken by a node nothing selects, so the
    /// other nodes' indexes do not move.
    pub fn remove_node(&mut self, id: u64) -> Affected {
        let Some(i) = self.index_of(id) else { return Affected::Nodes(Vec::new()) };
        let affected = self.change(Some(i), Node::vacant(id));
        self.index.by_id.remove(&id);
        affected
    }

    /// Whether [`CompiledPolicy::update_node`] with this node changes the compiled policy in
    /// place, rather than recompiling everything (changes touching routes or `disable-ipv4`).
    pub fn applies_in_place(&self, node: &Node) -> bool {
        let slot = self.index_of(node.id);
        self.route_free(slot, node)
            && slot.is_none_or(|i| {
                let old = &self.tailnet.nodes[i];
                self.route_free(Some(i), old) && !self.attrs[i].iter().any(|a| a == "disable-ipv4")
            })
    }

    fn change(&mut self, slot: Option<usize>, node: Node) -> Affected {
        if !self.applies_in_place(&node) {
            return self.recompile_with(slot, node);
        }
        let i = slot.unwrap_or(self.tailnet.nodes.len());
        let old = slot.map(|i| self.tailnet.nodes[i].clone()).unwrap_or_else(|| Node::vacant(node.id));
        let mut affected: BTreeSet<usize> = BTreeSet::from([i]);
        if slot.is_some() {
            affected.extend(self.peers(i));
        }
        let mut keys = node_keys(&self.tailnet, &old);
        keys.extend(node_keys(&self.tailnet, &node));
        keys.sort();
        keys.dedup();
        let grants = self.grant_deps.items(&keys);
        let ssh_rules = self.ssh_deps.items(&keys);

        // Merge keys of the grants about to be recompiled, with their first positions now.
        let key_firsts = |policy: &CompiledPolicy| -> Vec<(usize, Option<(usize, usize)>)> {
            let mut v: Vec<(usize, Option<(usize, usize)>)> = grants
                .iter()
                .flat_map(|&g| policy.grant(g).2.iter().flatten().copied().collect::<Vec<_>>())
                .map(|k| (k, policy.key_first(k)))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let firsts_before = key_firsts(self);
        let holders_before: Vec<(usize, Vec<usize>)> =
            firsts_before.iter().map(|(k, _)| (*k, self.key_holders(*k))).collect();
        let ssh_before: Vec<usize> = ssh_rules.iter().flat_map(|&k| self.ssh[k].dst_nodes.clone()).collect();

        if slot.is_some() {
            self.reach_mut().detach(i);
        }
        let addrs = node.addrs();
        self.put_node(i, node.clone());
        let (self_only, recompiled): (Vec<usize>, Vec<usize>) = grants.iter().partition(|&&g| self.grant(g).1);
        for &g in &self_only {
            self.update_self_grant(g, &old, &node);
        }
        self.recompile_grants(&recompiled);
        // Rules naming addresses keep their text; the node may fall inside them.
        let address_rows: Vec<usize> = self
            .address_grants
            .iter()
            .filter(|g| !grants.contains(g))
            .flat_map(|&g| self.grant_rows(g).collect::<Vec<_>>())
            .collect();
        for row in address_rows {
            self.reach_mut().attach(row, i, &addrs);
        }
        // Every `autogroup:self` expansion of the node's user lists the user's devices.
        let mut users: Vec<u64> = old.user.into_iter().chain(node.user).collect();
        users.dedup();
        let self_grants: Vec<usize> = self.self_grants().filter(|g| !recompiled.contains(g)).collect();
        for g in self_grants {
            for &u in &users {
                self.uninstall_self_rows(g, u);
                self.install_self_rows(g, u);
            }
        }
        for &k in &ssh_rules {
            let resolved = self.resolve_ssh(&self.policy.ssh[k]);
            self.ssh[k] = resolved;
            affected.extend(self.ssh[k].dst_nodes.iter().copied());
        }
        if !ssh_rules.is_empty() {
            affected.extend(ssh_before);
            for u in &users {
                affected.extend(self.index.by_user.get(u).into_iter().flatten().copied());
            }
        }
        let firsts_after = key_firsts(self);
        let moved: BTreeSet<usize> = firsts_before
            .iter()
            .chain(&firsts_after)
            .filter(|(k, first)| self.key_first(*k) != *first)
            .map(|(k, _)| *k)
            .collect();
        for k in moved {
            affected.extend(self.key_holders(k));
            affected.extend(self.per_node_key_holders(k));
            affected
                .extend(holders_before.iter().filter(|(h, _)| *h == k).flat_map(|(_, nodes)| nodes.iter().copied()));
        }
        affected.extend(self.peers(i));
        Affected::Nodes(affected.into_iter().collect())
    }

    /// Applies the change to a copy of the tailnet and compiles it from scratch, keeping every
    /// node's index.
    fn recompile_with(&mut self, slot: Option<usize>, node: Node) -> Affected {
        let mut tailnet: Tailnet = self.source_tailnet();
        match slot {
            Some(i) => tailnet.nodes[i] = node,
            None => tailnet.nodes.push(node),
        }
        let vacant: Vec<u64> = tailnet
            .nodes
            .iter()
            .filter(|n| n.addrs().is_empty() && self.index_of(n.id).is_none())
            .map(|n| n.id)
            .collect();
        *self = CompiledPolicy::new(&self.policy.clone(), &tailnet);
        for id in vacant {
            if self.index.by_id.get(&id).is_some_and(|&i| self.tailnet.nodes[i].addrs().is_empty()) {
                self.index.by_id.remove(&id);
            }
        }
        Affected::All
    }
}

#[cfg(test)]
mod tests {
    use super::Affected;
    use crate::{CompiledPolicy, Node, Policy, Tailnet, User};

    /// A small deterministic generator, so the property test needs no extra crates and replays
    /// the same sequences everywhere.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const USERS: u64 = 5;
    const TAGS: [&str; 3] = ["tag:web", "tag:db", "tag:ops"];

    fn random_node(rng: &mut Rng, id: u64) -> Node {
        let tagged = rng.below(3) == 0;
        let mut tags = Vec::new();
        if tagged {
            tags.push(TAGS[rng.below(TAGS.len())].to_string());
            if rng.below(3) == 0 {
                let t = TAGS[rng.below(TAGS.len())].to_string();
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
        }
        let routes: Vec<ipnet::IpNet> = if rng.below(8) == 0 {
            vec![format!("10.{}.0.0/16", rng.below(3)).parse().expect("test prefix")]
        } else {
            Vec::new()
        };
        Node {
            id,
            name: format!("n{id}"),
            user: if tagged { None } else { Some(1 + rng.below(USERS as usize) as u64) },
            tags,
            ipv4: format!("100.64.{}.{}", id / 200, id % 200 + 1).parse().ok(),
            ipv6: format!("fd7a:115c:a1e0::{id:x}").parse().ok(),
            approved_routes: if rng.below(2) == 0 { routes.clone() } else { Vec::new() },
            routable_ips: routes,
        }
    }

    const POLICIES: &[&str] = &[
        r#""acls": [
            {"action": "accept", "src": ["group:dev"], "dst": ["tag:web:80,443"]},
            {"action": "accept", "src": ["group:ops", "tag:ops"], "dst": ["*:22"]},
            {"action": "accept", "src": ["u1@example.com"], "dst": ["tag:db:5432", "u2@example.com:*"]},
            {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
            {"action": "accept", "proto": "udp", "src": ["group:dev"], "dst": ["tag:web:53"]},
            {"action": "accept", "src": ["group:dev"], "dst": ["10.1.0.0/16:*"]}
        ],
        "ssh": [
            {"action": "accept", "src": ["group:ops"], "dst": ["tag:web", "tag:db"], "users": ["root"]},
            {"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}
        ]"#,
        r#""grants": [
            {"src": ["group:dev"], "dst": ["tag:web"], "ip": ["tcp:80"]},
            {"src": ["autogroup:tagged"], "dst": ["autogroup:tagged"], "ip": ["*"]},
            {"src": ["group:dev"], "dst": ["tag:db"], "app": {"example.com/cap/db": [{"role": "ro"}]}},
            {"src": ["*"], "dst": ["autogroup:self"], "ip": ["22"]}
        ]"#,
        r#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]"#,
    ];

    fn policy(body: &str) -> Policy {
        let text = format!(
            r#"{{
                "groups": {{"group:dev": ["u1@example.com", "u2@example.com", "u3@example.com"], "group:ops": ["u4@example.com"]}},
                "tagOwners": {{"tag:web": ["group:ops"], "tag:db": ["group:ops"], "tag:ops": ["group:ops"]}},
                {body}
            }}"#
        );
        Policy::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Every node's outputs, keyed by node id, computed from a compiled policy.
    fn outputs(c: &CompiledPolicy) -> Vec<(u64, Vec<u64>, String, String)> {
        let mut out: Vec<_> = c
            .tailnet()
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| c.index_of(n.id).is_some())
            .map(|(i, n)| {
                let mut peers: Vec<u64> = c.peers(i).into_iter().map(|p| c.tailnet().nodes[p].id).collect();
                peers.sort_unstable();
                let filter = serde_json::to_string(&c.filter_for(i)).expect("filters serialize");
                let ssh = serde_json::to_string(&c.ssh_rules_for(i, "https://control")).expect("ssh serializes");
                (n.id, peers, filter, ssh)
            })
            .collect();
        out.sort();
        out
    }

    /// Replaying random node changes through [`CompiledPolicy::update_node`] and
    /// [`CompiledPolicy::remove_node`] gives every node exactly what compiling the resulting
    /// tailnet from scratch gives, and nodes outside the reported affected set keep their
    /// outputs.
    #[test]
    fn incremental_changes_match_full_recompiles() {
        for (p, body) in POLICIES.iter().enumerate() {
            let policy = policy(body);
            for seed in 0..12u64 {
                let mut rng = Rng(seed * 7919 + p as u64);
                let users = (1..=USERS)
                    .map(|id| User { id, login: format!("u{id}@example.com"), admin: id == 1, owner: id == 1 })
                    .collect();
                let mut live = Tailnet { users, nodes: Vec::new(), domains: vec!["example.com".into()] };
                let mut next_id = 1;
                for _ in 0..8 {
                    live.nodes.push(random_node(&mut rng, next_id));
                    next_id += 1;
                }
                let mut inc = CompiledPolicy::new(&policy, &live);
                for step in 0..25 {
                    let before = outputs(&inc);
                    let affected = match rng.below(4) {
                        0 if !live.nodes.is_empty() => {
                            let k = rng.below(live.nodes.len());
                            let gone = live.nodes.remove(k);
                            inc.remove_node(gone.id)
                        }
                        1 => {
                            let n = random_node(&mut rng, next_id);
                            next_id += 1;
                            live.nodes.push(n.clone());
                            inc.update_node(n)
                        }
                        _ if !live.nodes.is_empty() => {
                            let k = rng.below(live.nodes.len());
                            let id = live.nodes[k].id;
                            let mut n = random_node(&mut rng, id);
                            n.ipv4 = live.nodes[k].ipv4;
                            n.ipv6 = live.nodes[k].ipv6;
                            live.nodes[k] = n.clone();
                            inc.update_node(n)
                        }
                        _ => continue,
                    };
                    let full = CompiledPolicy::new(&policy, &live);
                    let after = outputs(&inc);
                    assert_eq!(after, outputs(&full), "policy {p} seed {seed} step {step}");
                    if let Affected::Nodes(nodes) = affected {
                        let touched: Vec<u64> = nodes.iter().map(|&i| inc.tailnet().nodes[i].id).collect();
                        for now in &after {
                            if touched.contains(&now.0) {
                                continue;
                            }
                            let was = before.iter().find(|b| b.0 == now.0);
                            assert_eq!(
                                was,
                                Some(now),
                                "policy {p} seed {seed} step {step}: node {} changed unreported",
                                now.0
                            );
                        }
                    }
                }
            }
        }
    }
}
