//! What the tailnet's policy lets each node see and receive: visible peers, packet filter, SSH policy and node
//! attributes. Without a policy every node sees every other and accepts everything (Headscale's default).
//!
//! The policy is compiled against the current nodes and users; this module translates our state into the policy
//! crate's plain model and answers per-node questions by node id.

use crate::tailnet::NodeEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tailwarden_policy::{CompiledPolicy, Policy, PolicyError, TailnetSettings};
use tailwarden_store::UserRecord;
use tailwarden_types::{NodeId, UserId};
use tailwarden_wire::FilterRule;
use serde_json::Value;

/// The policy in force and its compilation against the current tailnet.
#[derive(Default)]
pub(crate) struct PolicyView {
    policy: Option<Policy>,
    compiled: Option<CompiledPolicy>,
    index: HashMap<NodeId, usize>,
    ids: Vec<NodeId>,
}

/// What one node is given.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NodeGrants {
    pub peers: BTreeSet<NodeId>,
    pub filter: Vec<FilterRule>,
    pub ssh: Option<Value>,
}

/// The login a policy names a user by: the e-mail address when known, else Headscale's `name@` form.
pub(crate) fn policy_login(user: &UserRecord) -> String {
    if user.email.is_empty() { format!("{}@", user.name) } else { user.email.clone() }
}

/// Translates our state into the policy crate's tailnet model; node order is creation (id) order.
pub(crate) fn policy_tailnet(
    nodes: &BTreeMap<NodeId, NodeEntry>,
    users: &BTreeMap<UserId, UserRecord>,
) -> (tailwarden_policy::Tailnet, Vec<NodeId>) {
    let users_model = users
        .values()
        .map(|u| tailwarden_policy::User { id: u.id.0 as u64, login: policy_login(u), admin: false, owner: false })
        .collect();
    let mut ids = Vec::with_capacity(nodes.len());
    let nodes_model = nodes
        .values()
        .map(|n| {
            ids.push(n.record.id);
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
        })
        .collect();
    let domains = users
        .values()
        .filter_map(|u| u.email.split_once('@').map(|(_, d)| d.to_string()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    (tailwarden_policy::Tailnet { users: users_model, nodes: nodes_model, domains }, ids)
}

/// Parses, validates and compiles `text` against the tailnet and runs its `tests`/`sshTests`: the full check a
/// new policy must pass before it replaces the current one.
pub(crate) fn check(
    text: &str,
    nodes: &BTreeMap<NodeId, NodeEntry>,
    users: &BTreeMap<UserId, UserRecord>,
) -> Result<Policy, PolicyError> {
    let policy = Policy::parse(text)?;
    let (tailnet, _) = policy_tailnet(nodes, users);
    policy.validate_for(&tailnet)?;
    let compiled = CompiledPolicy::new(&policy, &tailnet);
    compiled.run_tests()?;
    compiled.run_ssh_tests()?;
    Ok(policy)
}

impl PolicyView {
    /// Replaces the policy (`None`: allow all); takes effect at the next [`PolicyView::rebuild`].
    pub fn replace(&mut self, policy: Option<Policy>) {
        self.policy = policy;
    }

    /// Recompiles after nodes or users changed.
    pub fn rebuild(&mut self, nodes: &BTreeMap<NodeId, NodeEntry>, users: &BTreeMap<UserId, UserRecord>) {
        let Some(policy) = &self.policy else {
            self.compiled = None;
            return;
        };
        let (tailnet, ids) = policy_tailnet(nodes, users);
        self.index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        self.ids = ids;
        self.compiled = Some(CompiledPolicy::new(policy, &tailnet));
    }

    /// What node `id` is given, among `all` nodes.
    pub fn grants(&self, id: NodeId, all: &BTreeMap<NodeId, NodeEntry>, control_url: &str) -> NodeGrants {
        let Some(compiled) = &self.compiled else {
            return NodeGrants {
                peers: all.keys().copied().filter(|p| *p != id).collect(),
                filter: vec![FilterRule::allow_all()],
                ssh: None,
            };
        };
        let Some(&i) = self.index.get(&id) else { return NodeGrants::default() };
        let peers = compiled.peers(i).into_iter().filter_map(|p| self.ids.get(p).copied()).filter(|p| *p != id).collect();
        let ssh_rules = compiled.ssh_rules_for(i, control_url);
        let ssh = (!ssh_rules.is_empty()).then(|| serde_json::json!({ "rules": ssh_rules }));
        NodeGrants { peers, filter: compiled.filter_for(i), ssh }
    }

    /// Node attributes from `nodeAttrs`, as `CapMap` entries of the self node.
    pub fn self_caps(&self, id: NodeId) -> BTreeMap<String, Vec<Value>> {
        let (Some(compiled), Some(&i)) = (&self.compiled, self.index.get(&id)) else { return BTreeMap::new() };
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
