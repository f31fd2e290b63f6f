//! What the tailnet's policy lets each node see and receive: visible peers, packet filter, SSH policy and node
//! attributes. Without a policy every node sees every other and accepts everything (Headscale's default).
//!
//! The policy is compiled against the current nodes and users; this module translates our state into the policy
//! crate's plain model and answers per-node questions by node id.

use crate::tailnet::NodeEntry;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use tailwarden_policy::{Affected, CompiledPolicy, Policy, PolicyError, TailnetSettings};
use tailwarden_store::UserRecord;
use tailwarden_types::{NodeId, UserId};
use tailwarden_wire::FilterRule;

/// The policy in force and its compilation against the current tailnet.
#[derive(Clone, Default)]
pub(crate) struct PolicyView {
    policy: Option<Policy>,
    compiled: Option<CompiledPolicy>,
}

/// What one node is given.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NodeGrants {
    pub peers: BTreeSet<NodeId>,
    pub filter: Vec<FilterRule>,
    pub ssh: Option<Value>,
}

/// Whose view a node change may have altered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Impact {
    /// These nodes' packet filters or SSH policies may differ (peer sets change only in the
    /// changed node).
    Nodes(Vec<NodeId>),
    /// The policy was recompiled from scratch: compare every node's whole view.
    Everyone,
}

/// The login a policy names a user by: the e-mail address when known, else Headscale's `name@` form.
pub(crate) fn policy_login(user: &UserRecord) -> String {
    if user.email.is_empty() { format!("{}@", user.name) } else { user.email.clone() }
}

/// A node as the policy crate models it.
pub(crate) fn policy_node(n: &NodeEntry) -> tailwarden_policy::Node {
    let r = &n.record;
    tailwarden_policy::Node {
        id: r.id.0 as u64,
        name: r.given_name.clone(),
        user: if r.tags.is_empty() { r.user_id.map(|u| u.0 as u64) } else { None },
        tags: r.tags.clone(),
        ipv4: r.ipv4,
        ipv6: r.ipv6,
        routable_ips: n.hostinfo.routable_ips.iter().filter_map(|p| p.parse().ok()).collect(),
        approved_routes: r.approved_routes.iter().filter_map(|p| p.parse().ok()).collect(),
    }
}

/// Translates our state into the policy crate's tailnet model; node order is creation (id) order.
pub(crate) fn policy_tailnet(
    nodes: &BTreeMap<NodeId, NodeEntry>,
    users: &BTreeMap<UserId, UserRecord>,
) -> tailwarden_policy::Tailnet {
    let users_model = users
        .values()
        .map(|u| tailwarden_policy::User { id: u.id.0 as u64, login: policy_login(u), admin: false, owner: false })
        .collect();
    let domains = users
        .values()
        .filter_map(|u| u.email.split_once('@').map(|(_, d)| d.to_string()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    tailwarden_policy::Tailnet { users: users_model, nodes: nodes.values().map(policy_node).collect(), domains }
}

/// Parses, validates and compiles `text` against the tailnet and runs its `tests`/`sshTests`: the full check a
/// new policy must pass before it replaces the current one. The compilation is returned too, so applying the
/// policy need not compile it again.
pub(crate) fn check(
    text: &str,
    nodes: &BTreeMap<NodeId, NodeEntry>,
    users: &BTreeMap<UserId, UserRecord>,
) -> Result<(Policy, CompiledPolicy), PolicyError> {
    let policy = Policy::parse(text)?;
    let tailnet = policy_tailnet(nodes, users);
    policy.validate_for(&tailnet)?;
    let compiled = CompiledPolicy::new(&policy, &tailnet);
    compiled.run_tests()?;
    compiled.run_ssh_tests()?;
    Ok((policy, compiled))
}

impl PolicyView {
    /// `policy` (`None`: allow all) compiled against these nodes and users.
    pub fn compile(
        policy: Option<Policy>,
        nodes: &BTreeMap<NodeId, NodeEntry>,
        users: &BTreeMap<UserId, UserRecord>,
    ) -> PolicyView {
        let mut view = PolicyView { policy, compiled: None };
        view.rebuild(nodes, users);
        view
    }

    /// A policy and its compilation against the current nodes and users, as [`check`] made them.
    pub fn from_compiled(policy: Policy, compiled: CompiledPolicy) -> PolicyView {
        PolicyView { policy: Some(policy), compiled: Some(compiled) }
    }

    /// The policy in force (`None`: allow all).
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Recompiles from scratch (a new policy, or users changed).
    pub fn rebuild(&mut self, nodes: &BTreeMap<NodeId, NodeEntry>, users: &BTreeMap<UserId, UserRecord>) {
        self.compiled = self.policy.as_ref().map(|p| CompiledPolicy::new(p, &policy_tailnet(nodes, users)));
    }

    /// The ids of the nodes at `indexes`, leaving out the slots of deleted nodes (which keep their index, empty).
    fn ids(&self, compiled: &CompiledPolicy, indexes: impl IntoIterator<Item = usize>) -> Vec<NodeId> {
        let nodes = &compiled.tailnet().nodes;
        indexes
            .into_iter()
            .filter_map(|i| nodes.get(i).filter(|n| compiled.index_of(n.id) == Some(i)))
            .map(|n| NodeId(n.id as i64))
            .collect()
    }

    fn impact(&self, affected: Affected) -> Impact {
        match (affected, &self.compiled) {
            (Affected::Nodes(list), Some(c)) => Impact::Nodes(self.ids(c, list)),
            (Affected::All, _) | (_, None) => Impact::Everyone,
        }
    }

    /// Applies an added or changed node to the compiled policy in place.
    pub fn apply_node(&mut self, entry: &NodeEntry) -> Impact {
        let Some(c) = &mut self.compiled else { return Impact::Nodes(Vec::new()) };
        let affected = c.update_node(policy_node(entry));
        self.impact(affected)
    }

    /// Applies a deleted node to the compiled policy in place.
    pub fn remove_node(&mut self, id: NodeId) -> Impact {
        let Some(c) = &mut self.compiled else { return Impact::Nodes(Vec::new()) };
        let affected = c.remove_node(id.0 as u64);
        self.impact(affected)
    }

    /// Whether applying this node change would recompile everything (so a caller wanting to
    /// compare before and after must keep a copy first).
    pub fn recompiles_for(&self, entry: &NodeEntry) -> bool {
        self.compiled.as_ref().is_some_and(|c| !c.applies_in_place(&policy_node(entry)))
    }

    /// Whether deleting node `id` would recompile everything.
    pub fn recompiles_removing(&self, id: NodeId) -> bool {
        self.compiled.as_ref().is_some_and(|c| !c.applies_in_place(&tailwarden_policy::Node::vacant(id.0 as u64)))
    }

    /// The nodes `id` sees (and, symmetrically, that see it): with no policy, all other nodes in `all`; with one,
    /// the nodes the policy was told of. An earlier view (kept to compare against) thus still lists nodes deleted
    /// since, so the comparison finds them removed.
    pub fn peers_of(&self, id: NodeId, all: &BTreeMap<NodeId, NodeEntry>) -> Vec<NodeId> {
        match &self.compiled {
            None => all.keys().copied().filter(|p| *p != id).collect(),
            Some(c) => match c.index_of(id.0 as u64) {
                Some(i) => {
                    let mut peers = self.ids(c, c.peers(i));
                    peers.retain(|p| *p != id);
                    peers
                }
                None => Vec::new(),
            },
        }
    }

    /// The packet filter and SSH policy node `id` is given.
    pub fn filter_and_ssh(&self, id: NodeId, control_url: &str) -> (Vec<FilterRule>, Option<Value>) {
        let Some(compiled) = &self.compiled else { return (vec![FilterRule::allow_all()], None) };
        let Some(i) = compiled.index_of(id.0 as u64) else { return (Vec::new(), None) };
        let ssh_rules = compiled.ssh_rules_for(i, control_url);
        let ssh = (!ssh_rules.is_empty()).then(|| serde_json::json!({ "rules": ssh_rules }));
        (compiled.filter_for(i), ssh)
    }

    /// What node `id` is given, among `all` nodes.
    pub fn grants(&self, id: NodeId, all: &BTreeMap<NodeId, NodeEntry>, control_url: &str) -> NodeGrants {
        let (filter, ssh) = self.filter_and_ssh(id, control_url);
        NodeGrants { peers: self.peers_of(id, all).into_iter().collect(), filter, ssh }
    }

    /// Node attributes from `nodeAttrs`, as `CapMap` entries of the self node.
    pub fn self_caps(&self, id: NodeId) -> BTreeMap<String, Vec<Value>> {
        let Some((compiled, i)) = self.compiled.as_ref().and_then(|c| Some((c, c.index_of(id.0 as u64)?))) else {
            return BTreeMap::new();
        };
        compiled
            .self_cap_map(i, &TailnetSettings::default())
            .into_iter()
            .map(|(k, v)| {
                let values = match v {
                    Value::Null => Vec::new(),
                    Value::Array(items) => items,
                    other => vec![other],
                };
                (k, values)
            })
            .collect()
    }
}
