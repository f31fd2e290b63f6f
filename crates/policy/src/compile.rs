//! Compilation: aliases resolved against a tailnet, rules turned into packet filter rules, and
//! the global rule list reduced to what concerns one node.
//!
//! `acls` entries are first rewritten as grants (one per destination), then every grant is
//! compiled once; rules that depend on the receiving node (`autogroup:self`, `via`) are kept
//! in a deferred form and expanded per node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;
use tailwarden_wire::{CapGrant, FilterRule, NetPortRange, PortRange};

use crate::alias::{Alias, AutoGroup};
use crate::ipset::{parse_pattern, IpSet};
use crate::model::{Grant, IpSpec, Policy};
use crate::tailnet::{is_exit_route, Node, Tailnet};

/// Capabilities that make the control plane emit a reversed companion rule, by original name.
const COMPANION_CAPS: &[(&str, &str)] = &[
    ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
    ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
];

fn net(text: &str) -> IpNet {
    // Invariant: only called with the constant, well-formed prefixes below.
    text.parse().unwrap_or_else(|_| IpNet::V4(Default::default()))
}

/// Every Tailscale address: `100.64.0.0/10` minus `100.115.92.0/23`, plus `fd7a:115c:a1e0::/48`.
pub fn tailscale_addresses() -> IpSet {
    let mut s = IpSet::new();
    s.add_prefix(&net("100.64.0.0/10"));
    s.remove_prefix(&net("100.115.92.0/23"));
    s.add_prefix(&net("fd7a:115c:a1e0::/48"));
    s
}

/// The public internet as `autogroup:internet` means it.
pub fn the_internet() -> IpSet {
    let mut s = IpSet::new();
    s.add_prefix(&net("0.0.0.0/0"));
    s.add_prefix(&net("2000::/3"));
    for p in [
        "fc00::/7",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fd7a:115c:a1e0::/48",
        "100.64.0.0/10",
        "fe80::/10",
        "169.254.0.0/16",
    ] {
        s.remove_prefix(&net(p));
    }
    s
}

/// Per-node state derived from the policy: effective routes.
#[derive(Clone, Debug, Default)]
struct NodeRoutes {
    /// Approved (or auto-approved), advertised, non-exit routes.
    subnets: Vec<IpNet>,
    /// Whether the node is an approved exit node.
    exit: bool,
}

#[derive(Clone, Debug)]
struct SelfGrant {
    resolved_srcs: Vec<IpSet>,
    ip: Vec<IpSpec>,
    app: BTreeMap<String, Vec<Value>>,
}

#[derive(Clone, Debug)]
pub(crate) struct ViaGrant {
    pub(crate) tags: Vec<String>,
    pub(crate) src: IpSet,
    pub(crate) dsts: Vec<IpNet>,
    internet: bool,
    ip: Vec<IpSpec>,
    src_strings: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct CompiledGrant {
    rules: Vec<FilterRule>,
    /// Per rule in `rules`: every address its `dst_ports` name, so a node outside it skips the
    /// rule without parsing each destination.
    rule_dsts: Vec<IpSet>,
    /// Per rule in `rules`: its merge key (sources, protocols) as an index into
    /// `merge_keys`.
    rule_keys: Vec<usize>,
    self_grant: Option<SelfGrant>,
    via: Option<ViaGrant>,
}

/// A policy compiled against one tailnet: ready to answer per-node questions.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    policy: Policy,
    tailnet: Tailnet,
    approvers: Vec<(IpNet, IpSet)>,
    exit_approvers: IpSet,
    routes: Vec<NodeRoutes>,
    grants: Vec<CompiledGrant>,
    matchers: Vec<crate::netmap::Matcher>,
    reach: crate::netmap::Reach,
    /// Every distinct (protocols, sources) of the shared rules, numbered, so per-node merging
    /// compares numbers instead of source lists.
    merge_keys: BTreeMap<Vec<u8>, BTreeMap<Vec<String>, usize>>,
    merge_key_count: usize,
    /// Per node: the policy attributes it carries.
    pub(crate) attrs: Vec<Vec<String>>,
}

struct Resolver<'a> {
    policy: &'a Policy,
    tailnet: &'a Tailnet,
    /// Each login's untagged nodes, built on first use: groups name users over and over.
    user_index: std::cell::OnceCell<BTreeMap<&'a str, Vec<usize>>>,
}

impl<'a> Resolver<'a> {
    fn new(policy: &'a Policy, tailnet: &'a Tailnet) -> Resolver<'a> {
        Resolver { policy, tailnet, user_index: std::cell::OnceCell::new() }
    }

    /// Whether the alias stands for nodes (rather than literal addresses).
    fn is_node_alias(alias: &Alias) -> bool {
        !matches!(alias, Alias::Wildcard | Alias::Host(_) | Alias::Prefix(_) | Alias::AutoGroup(AutoGroup::Internet | AutoGroup::DangerAll))
    }

    fn add_node(set: &mut IpSet, node: &Node) {
        for a in node.addrs() {
            set.add_addr(a);
        }
    }

    /// The untagged nodes of the user with this login (the first such user, as
    /// [`Tailnet::user_by_login`] finds it).
    fn user_nodes(&self, login: &str) -> IpSet {
        let index = self.user_index.get_or_init(|| {
            let mut by_id: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
            for (i, n) in self.tailnet.nodes.iter().enumerate() {
                if let (false, Some(u)) = (n.is_tagged(), n.user) {
                    by_id.entry(u).or_default().push(i);
                }
            }
            let mut by_login: BTreeMap<&'a str, Vec<usize>> = BTreeMap::new();
            for u in &self.tailnet.users {
                if !by_login.contains_key(u.login.as_str()) {
                    by_login.insert(u.login.as_str(), by_id.get(&u.id).cloned().unwrap_or_default());
                }
            }
            by_login
        });
        let mut set = IpSet::new();
        for &i in index.get(login).into_iter().flatten() {
            if let Some(n) = self.tailnet.nodes.get(i) {
                Self::add_node(&mut set, n);
            }
        }
        set
    }

    fn nodes_where(&self, pred: impl Fn(&Node) -> bool) -> IpSet {
        let mut set = IpSet::new();
        for n in self.tailnet.nodes.iter().filter(|n| pred(n)) {
            Self::add_node(&mut set, n);
        }
        set
    }

    /// The addresses an alias stands for; `None` when it names nothing resolvable here
    /// (`autogroup:self`, SSH-only autogroups, undefined hosts).
    fn resolve(&self, alias: &Alias) -> Option<IpSet> {
        Some(match alias {
            Alias::Wildcard => tailscale_addresses(),
            Alias::User(login) => self.user_nodes(login),
            Alias::UserDomain(domain) => {
                let mut set = IpSet::new();
                for u in &self.tailnet.users {
                    let user_domain = u.login.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                    if user_domain.eq_ignore_ascii_case(domain) {
                        set.extend(&self.user_nodes(&u.login));
                    }
                }
                set
            }
            Alias::Group(g) => {
                let mut set = IpSet::new();
                for u in self.policy.groups.get(g).into_iter().flatten() {
                    set.extend(&self.user_nodes(u));
                }
                set
            }
            Alias::Tag(t) => self.nodes_where(|n| n.tags.iter().any(|x| x == t)),
            Alias::Host(h) => {
                let mut set = IpSet::new();
                set.add_prefix(self.policy.hosts.get(h)?);
                set
            }
            Alias::Prefix(p) => {
                let mut set = IpSet::new();
                set.add_prefix(p);
                set
            }
            Alias::AutoGroup(g) => match g {
                AutoGroup::Internet => the_internet(),
                AutoGroup::Member => self.nodes_where(|n| !n.is_tagged()),
                AutoGroup::Tagged => self.nodes_where(Node::is_tagged),
                AutoGroup::DangerAll => {
                    let mut set = IpSet::new();
                    set.add_prefix(&net("0.0.0.0/0"));
                    set.add_prefix(&net("::/0"));
                    set
                }
                AutoGroup::Admin | AutoGroup::Owner => {
                    let admin = *g == AutoGroup::Admin;
                    let users: BTreeSet<u64> = self
                        .tailnet
                        .users
                        .iter()
                        .filter(|u| if admin { u.admin } else { u.owner })
                        .map(|u| u.id)
                        .collect();
                    self.nodes_where(|n| !n.is_tagged() && n.user.is_some_and(|u| users.contains(&u)))
                }
                AutoGroup::SelfDevices | AutoGroup::NonRoot => return None,
            },
        })
    }
}

fn node_in(node: &Node, set: &IpSet) -> bool {
    node.addrs().into_iter().any(|a| set.contains(a))
}

fn host_string(p: &IpNet) -> String {
    if p.prefix_len() == p.max_prefix_len() { p.addr().to_string() } else { p.to_string() }
}

fn acl_to_grants(acl: &crate::model::Acl) -> Vec<Grant> {
    let is_self = |a: &Alias| *a == Alias::AutoGroup(AutoGroup::SelfDevices);
    let has_non_autogroup = acl.dst.iter().any(|(a, _)| !matches!(a, Alias::AutoGroup(_)));
    let mut order: Vec<&(Alias, Vec<PortRange>)> = Vec::new();
    if has_non_autogroup {
        order.extend(acl.dst.iter().filter(|(a, _)| !is_self(a)));
        order.extend(acl.dst.iter().filter(|(a, _)| is_self(a)));
    } else {
        order.extend(acl.dst.iter());
    }
    order
        .into_iter()
        .map(|(alias, ports)| Grant {
            src: acl.src.clone(),
            dst: vec![alias.clone()],
            ip: vec![IpSpec { proto: acl.proto.clone(), ports: ports.clone() }],
            app: BTreeMap::new(),
            via: Vec::new(),
        })
        .collect()
}

fn companion_rules(dst_strings: &[String], src_prefixes: &[String], app: &BTreeMap<String, Vec<Value>>) -> Vec<FilterRule> {
    COMPANION_CAPS
        .iter()
        .filter(|(orig, _)| app.contains_key(*orig))
        .map(|(_, companion)| FilterRule {
            src_ips: dst_strings.to_vec(),
            dst_ports: Vec::new(),
            ip_proto: Vec::new(),
            cap_grant: vec![CapGrant {
                dsts: src_prefixes.to_vec(),
                cap_map: BTreeMap::from([(companion.to_string(), Vec::new())]),
            }],
        })
        .collect()
}

impl CompiledPolicy {
    /// Compiles `policy` (already validated) for `tailnet`. Route approval uses the nodes'
    /// approved routes plus the advertised routes the policy's `autoApprovers` allow.
    pub fn new(policy: &Policy, tailnet: &Tailnet) -> CompiledPolicy {
        let resolver = Resolver::new(policy, tailnet);
        let mut compiled = CompiledPolicy {
            policy: policy.clone(),
            tailnet: tailnet.clone(),
            approvers: Vec::new(),
            exit_approvers: IpSet::new(),
            routes: Vec::new(),
            grants: Vec::new(),
            matchers: Vec::new(),
            reach: Default::default(),
            merge_keys: BTreeMap::new(),
            merge_key_count: 0,
            attrs: Vec::new(),
        };
        // Node attributes first: `disable-ipv4` removes the node's IPv4 address from every
        // later computation.
        for node in &tailnet.nodes {
            let mut attrs: Vec<String> = Vec::new();
            if policy.randomize_client_port {
                attrs.push("randomize-client-port".into());
            }
            for na in &policy.node_attrs {
                let hit = na.targets.iter().any(|t| resolver.resolve(t).is_some_and(|s| node_in(node, &s)));
                if hit {
                    for a in &na.attrs {
                        if !attrs.contains(a) {
                            attrs.push(a.clone());
                        }
                    }
                }
            }
            compiled.attrs.push(attrs);
        }
        for (node, attrs) in compiled.tailnet.nodes.iter_mut().zip(&compiled.attrs) {
            if attrs.iter().any(|a| a == "disable-ipv4") {
                node.ipv4 = None;
            }
        }
        let tailnet = &compiled.tailnet.clone();
        let resolver = Resolver::new(policy, tailnet);
        let approvers: Vec<(IpNet, IpSet)> = policy
            .auto_approvers
            .routes
            .iter()
            .map(|(p, who)| {
                let mut set = IpSet::new();
                for a in who {
                    if let Some(s) = resolver.resolve(a) {
                        set.extend(&s);
                    }
                }
                (*p, set)
            })
            .collect();
        let mut exit_approvers = IpSet::new();
        for a in &policy.auto_approvers.exit_node {
            if let Some(s) = resolver.resolve(a) {
                exit_approvers.extend(&s);
            }
        }
        for node in &tailnet.nodes {
            let mut r = NodeRoutes::default();
            for route in &node.routable_ips {
                let approved = node.approved_routes.contains(route)
                    || if is_exit_route(route) {
                        node_in(node, &exit_approvers)
                    } else {
                        approvers.iter().any(|(p, who)| p.contains(route) && node_in(node, who))
                    };
                if !approved {
                    continue;
                }
                if is_exit_route(route) {
                    r.exit = true;
                } else if !r.subnets.contains(route) {
                    r.subnets.push(*route);
                }
            }
            compiled.routes.push(r);
        }
        compiled.approvers = approvers;
        compiled.exit_approvers = exit_approvers;
        let mut grants: Vec<Grant> = policy.grants.clone();
        for acl in &policy.acls {
            grants.extend(acl_to_grants(acl));
        }
        if !policy.has_rules {
            // A policy with neither `acls` nor `grants` behaves like the default policy:
            // everything may reach everything, written out as the `*` ranges.
            grants.push(Grant {
                src: vec![Alias::Wildcard],
                dst: vec![Alias::Wildcard],
                ip: vec![IpSpec { proto: Default::default(), ports: vec![PortRange::ANY] }],
                app: BTreeMap::new(),
                via: Vec::new(),
            });
        }
        let subnet_strings = compiled.approved_subnet_strings();
        for grant in &grants {
            if let Some(mut cg) = compile_grant(&resolver, grant, &subnet_strings) {
                cg.rule_dsts = cg
                    .rules
                    .iter()
                    .map(|r| {
                        let mut union = IpSet::new();
                        for set in r.dst_ports.iter().filter_map(|d| parse_pattern(&d.ip)) {
                            union.extend(&set);
                        }
                        union
                    })
                    .collect();
                for r in &cg.rules {
                    let by_src = compiled.merge_keys.entry(r.ip_proto.clone()).or_default();
                    let id = match by_src.get(r.src_ips.as_slice()) {
                        Some(&id) => id,
                        None => {
                            by_src.insert(r.src_ips.clone(), compiled.merge_key_count);
                            compiled.merge_key_count += 1;
                            compiled.merge_key_count - 1
                        }
                    };
                    cg.rule_keys.push(id);
                }
                compiled.grants.push(cg);
            }
        }
        compiled.matchers =
            compiled.all_rules_scoped().iter().map(|(r, only)| crate::netmap::Matcher::from_rule(r, *only)).collect();
        let subnets: Vec<&[IpNet]> = compiled.routes.iter().map(|r| r.subnets.as_slice()).collect();
        let exit: Vec<bool> = compiled.routes.iter().map(|r| r.exit).collect();
        let reach = crate::netmap::Reach::new(&compiled.matchers, &compiled.tailnet.nodes, &subnets, &exit);
        compiled.reach = reach;
        compiled
    }

    pub(crate) fn matchers(&self) -> &[crate::netmap::Matcher] {
        &self.matchers
    }

    pub(crate) fn reach(&self) -> &crate::netmap::Reach {
        &self.reach
    }

    fn approved_subnet_strings(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for r in &self.routes {
            for s in &r.subnets {
                let text = s.to_string();
                if seen.insert(text.clone()) {
                    out.push(text);
                }
            }
        }
        out
    }

    /// Resolves an alias against this tailnet with the policy's groups and hosts (`None` for aliases that only make
    /// sense per node, such as `autogroup:self`).
    pub fn resolve_alias(&self, alias: &Alias) -> Option<IpSet> {
        Resolver::new(&self.policy, &self.tailnet).resolve(alias)
    }

    /// The policy this was compiled from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether the policy's `autoApprovers` approve `route` when node `node` advertises it.
    pub fn auto_approves(&self, node: usize, route: &IpNet) -> bool {
        let Some(n) = self.tailnet.nodes.get(node) else { return false };
        if is_exit_route(route) {
            node_in(n, &self.exit_approvers)
        } else {
            self.approvers.iter().any(|(p, who)| p.contains(route) && node_in(n, who))
        }
    }

    /// Every network rule before per-node reduction: the shared rules plus each node's
    /// `autogroup:self` and `via` expansions.
    pub fn all_rules(&self) -> Vec<FilterRule> {
        self.all_rules_scoped().into_iter().map(|(r, _)| r).collect()
    }

    /// [`CompiledPolicy::all_rules`], each with the one node it is valid on (`via` rules
    /// only route through the router they were compiled for).
    fn all_rules_scoped(&self) -> Vec<(FilterRule, Option<usize>)> {
        let mut rules = Vec::new();
        for g in &self.grants {
            rules.extend(g.rules.iter().cloned().map(|r| (r, None)));
        }
        for (i, n) in self.tailnet.nodes.iter().enumerate() {
            for g in &self.grants {
                if let Some(s) = &g.self_grant {
                    rules.extend(self.self_rules(s, n).into_iter().map(|r| (r, None)));
                }
                if let Some(v) = &g.via {
                    rules.extend(self.via_rules(v, i, n).into_iter().map(|r| (r, Some(i))));
                    // App-only via grants make no packet filter but still connect the sources
                    // with the routers.
                    if v.ip.is_empty() {
                        let dsts = self.via_dsts(v, i, n);
                        if !dsts.is_empty() {
                            let rule = FilterRule {
                                src_ips: v.src.strings(),
                                dst_ports: dsts.into_iter().map(|d| NetPortRange { ip: d, ports: PortRange::ANY }).collect(),
                                ip_proto: Vec::new(),
                                cap_grant: Vec::new(),
                            };
                            rules.push((rule, Some(i)));
                        }
                    }
                }
            }
        }
        rules
    }

    /// The via grants, for route steering.
    pub(crate) fn via_grants(&self) -> impl Iterator<Item = &ViaGrant> {
        self.grants.iter().filter_map(|g| g.via.as_ref())
    }

    /// The tailnet this policy was compiled for.
    pub fn tailnet(&self) -> &Tailnet {
        &self.tailnet
    }

    /// Index of the node with this name.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.tailnet.nodes.iter().position(|n| n.name == name)
    }

    /// The node's effective subnet routes (approved or auto-approved, advertised, not exit routes).
    pub fn subnet_routes(&self, node: usize) -> &[IpNet] {
        self.routes.get(node).map(|r| r.subnets.as_slice()).unwrap_or(&[])
    }

    /// Whether the node is an approved exit node.
    pub fn is_exit_node(&self, node: usize) -> bool {
        self.routes.get(node).is_some_and(|r| r.exit)
    }

    /// The packet filter for node `node` (index into the tailnet's nodes): every rule whose
    /// destinations include the node's addresses or routes it serves, merged and reduced the
    /// way Tailscale delivers them. Unknown indexes get an empty filter.
    pub fn filter_for(&self, node: usize) -> Vec<FilterRule> {
        let Some(n) = self.tailnet.nodes.get(node) else {
            return Vec::new();
        };
        let view = NodeView::new(self, node, n);
        let generated: Vec<Vec<FilterRule>> = self.grants.iter().map(|g| self.node_rules(g, node, n)).collect();
        // Rules are merged by (sources, protocols) at the first rule with that key, then reduced
        // to the destinations this node serves. Reducing each rule before merging gives the same
        // result, and lets rules that cannot concern the node skip the per-destination parse;
        // a key whose destinations all drop out still holds its place until the end.
        enum Slot<'a> {
            Net { src: &'a [String], proto: &'a [u8], dsts: Vec<NetPortRange> },
            Cap(FilterRule),
        }
        let mut slots: Vec<Slot<'_>> = Vec::new();
        // Merge keys: shared rules carry a key number; per-node rules look theirs up, and those
        // no shared rule has are numbered after the shared ones.
        let mut slot_of: Vec<Option<usize>> = vec![None; self.merge_key_count];
        let mut novel: BTreeMap<(&[String], &[u8]), usize> = BTreeMap::new();
        for (g, extra) in self.grants.iter().zip(&generated) {
            let shared = g.rules.iter().zip(g.rule_dsts.iter().zip(&g.rule_keys).map(|(u, k)| (Some(u), Some(*k))));
            for (rule, (union, key_id)) in shared.chain(extra.iter().map(|r| (r, (None, None)))) {
                if !rule.cap_grant.is_empty() {
                    slots.extend(view.reduce_caps(rule).map(Slot::Cap));
                    continue;
                }
                let dsts: Vec<NetPortRange> = if union.is_some_and(|u| !view.may_hit(u)) {
                    Vec::new()
                } else {
                    rule.dst_ports.iter().filter(|d| view.keeps(d)).cloned().collect()
                };
                let key = (rule.src_ips.as_slice(), rule.ip_proto.as_slice());
                let key_id = key_id.or_else(|| {
                    self.merge_keys.get(key.1).and_then(|by_src| by_src.get(key.0)).copied()
                });
                let existing = match key_id {
                    Some(id) => slot_of.get(id).copied().flatten(),
                    None => novel.get(&key).copied(),
                };
                match existing {
                    Some(i) => {
                        if let Some(Slot::Net { dsts: have, .. }) = slots.get_mut(i) {
                            have.extend(dsts);
                        }
                    }
                    None => {
                        match key_id {
                            Some(id) => {
                                if let Some(cell) = slot_of.get_mut(id) {
                                    *cell = Some(slots.len());
                                }
                            }
                            None => {
                                novel.insert(key, slots.len());
                            }
                        }
                        slots.push(Slot::Net { src: key.0, proto: key.1, dsts });
                    }
                }
            }
        }
        slots
            .into_iter()
            .filter_map(|slot| match slot {
                Slot::Cap(rule) => Some(rule),
                Slot::Net { dsts, .. } if dsts.is_empty() => None,
                Slot::Net { src, proto, dsts } => Some(FilterRule {
                    src_ips: src.to_vec(),
                    dst_ports: dsts,
                    ip_proto: proto.to_vec(),
                    cap_grant: Vec::new(),
                }),
            })
            .collect()
    }

    /// [`CompiledPolicy::filter_for`] computed the direct way — every rule cloned, merged, then
    /// reduced — as the reference the faster path is tested against.
    #[cfg(test)]
    pub(crate) fn filter_for_reference(&self, node: usize) -> Vec<FilterRule> {
        let Some(n) = self.tailnet.nodes.get(node) else {
            return Vec::new();
        };
        let mut rules = Vec::new();
        for g in &self.grants {
            rules.extend(g.rules.iter().cloned());
            rules.extend(self.node_rules(g, node, n));
        }
        let view = NodeView::new(self, node, n);
        let mut out = Vec::new();
        for rule in merge_rules(rules) {
            if !rule.cap_grant.is_empty() {
                out.extend(view.reduce_caps(&rule));
                continue;
            }
            let dst_ports: Vec<NetPortRange> = rule.dst_ports.iter().filter(|d| view.keeps(d)).cloned().collect();
            if !dst_ports.is_empty() {
                out.push(FilterRule { dst_ports, ..rule });
            }
        }
        out
    }

    /// The rules a grant yields for one node only: its `autogroup:self` and `via` expansions.
    fn node_rules(&self, g: &CompiledGrant, index: usize, n: &Node) -> Vec<FilterRule> {
        let mut rules = Vec::new();
        if let Some(s) = &g.self_grant {
            rules.extend(self.self_rules(s, n));
        }
        if let Some(v) = &g.via {
            rules.extend(self.via_rules(v, index, n));
        }
        rules
    }

    fn same_user_nodes<'a>(&'a self, n: &Node) -> Vec<&'a Node> {
        if n.is_tagged() || n.user.is_none() {
            return Vec::new();
        }
        self.tailnet.nodes.iter().filter(|m| !m.is_tagged() && m.user == n.user).collect()
    }

    fn self_rules(&self, s: &SelfGrant, n: &Node) -> Vec<FilterRule> {
        let same = self.same_user_nodes(n);
        if same.is_empty() {
            return Vec::new();
        }
        let mut src = IpSet::new();
        for set in &s.resolved_srcs {
            for m in &same {
                if node_in(m, set) {
                    Resolver::add_node(&mut src, m);
                }
            }
        }
        if src.is_empty() {
            return Vec::new();
        }
        let mut rules = Vec::new();
        for spec in &s.ip {
            let mut dst_ports = Vec::new();
            for m in &same {
                for ports in &spec.ports {
                    for a in m.addrs() {
                        dst_ports.push(NetPortRange { ip: a.to_string(), ports: *ports });
                    }
                }
            }
            if !dst_ports.is_empty() {
                rules.push(FilterRule {
                    src_ips: src.strings_keeping(&src),
                    dst_ports,
                    ip_proto: spec.proto.numbers.clone(),
                    cap_grant: Vec::new(),
                });
            }
        }
        if !s.app.is_empty() {
            let mut cap_grant = Vec::new();
            let mut dst_strings = Vec::new();
            for m in &same {
                let dsts = m.addrs().iter().map(|a| IpNet::from(*a).to_string()).collect();
                dst_strings.extend(m.addrs().iter().map(|a| a.to_string()));
                cap_grant.push(CapGrant { dsts, cap_map: s.app.clone() });
            }
            rules.push(FilterRule { src_ips: src.strings_keeping(&src), dst_ports: Vec::new(), ip_proto: Vec::new(), cap_grant });
            let src_prefixes: Vec<String> = src.prefixes_keeping(&src).iter().map(|p| p.to_string()).collect();
            rules.extend(companion_rules(&dst_strings, &src_prefixes, &s.app));
        }
        rules
    }

    fn via_rules(&self, v: &ViaGrant, index: usize, n: &Node) -> Vec<FilterRule> {
        let dsts = self.via_dsts(v, index, n);
        if dsts.is_empty() {
            return Vec::new();
        }
        v.ip
            .iter()
            .map(|spec| FilterRule {
                src_ips: v.src_strings.clone(),
                dst_ports: dsts
                    .iter()
                    .flat_map(|d| spec.ports.iter().map(move |p| NetPortRange { ip: d.clone(), ports: *p }))
                    .collect(),
                ip_proto: spec.proto.numbers.clone(),
                cap_grant: Vec::new(),
            })
            .collect()
    }

    /// The destinations a via grant routes through node `index` (empty unless it carries a
    /// via tag and serves an overlapping route, or is an exit node for `autogroup:internet`).
    fn via_dsts(&self, v: &ViaGrant, index: usize, n: &Node) -> Vec<String> {
        if !v.tags.iter().any(|t| n.tags.contains(t)) {
            return Vec::new();
        }
        let subnets = self.subnet_routes(index);
        let mut dsts: Vec<String> = v
            .dsts
            .iter()
            .filter(|d| subnets.iter().any(|r| r.contains(*d) || d.contains(r)))
            .map(|d| d.to_string())
            .collect();
        if v.internet && self.is_exit_node(index) {
            dsts.extend(the_internet().prefixes().iter().map(|p| p.to_string()));
        }
        dsts
    }
}

/// What filter reduction needs to know about the receiving node.
struct NodeView<'a> {
    subnets: &'a [IpNet],
    exit: bool,
    internet: IpSet,
    addrs: Vec<IpAddr>,
}

impl<'a> NodeView<'a> {
    fn new(policy: &'a CompiledPolicy, index: usize, n: &Node) -> NodeView<'a> {
        NodeView {
            subnets: policy.subnet_routes(index),
            exit: policy.is_exit_node(index),
            internet: the_internet(),
            addrs: n.addrs(),
        }
    }

    /// Whether a destination set that holds every destination of a rule can hold one this
    /// node keeps (see [`NodeView::keeps`]); exit nodes keep internet-only sets, so they
    /// always look.
    fn may_hit(&self, union: &IpSet) -> bool {
        self.exit
            || self.addrs.iter().any(|a| union.contains(*a))
            || self.subnets.iter().any(|r| union.overlaps_prefix(r))
    }

    /// Whether the node keeps this destination: one of its addresses, a route it serves, or
    /// (for an exit node) a part of the internet.
    fn keeps(&self, d: &NetPortRange) -> bool {
        let Some(set) = parse_pattern(&d.ip) else {
            return false;
        };
        self.addrs.iter().any(|a| set.contains(*a))
            || self.subnets.iter().any(|r| set.overlaps_prefix(r))
            || (self.exit && set.is_subset_of(&self.internet))
    }

    /// A capability rule narrowed to the destinations this node serves; `None` when none is left.
    fn reduce_caps(&self, rule: &FilterRule) -> Option<FilterRule> {
        let mut grants = Vec::new();
        for cg in &rule.cap_grant {
            let parsed: Vec<IpNet> = cg.dsts.iter().filter_map(|d| d.parse::<IpNet>().ok()).collect();
            let mut matching: Vec<IpNet> = Vec::new();
            for d in &parsed {
                for a in &self.addrs {
                    if d.contains(a) {
                        matching.push(IpNet::from(*a));
                    }
                }
            }
            for d in &parsed {
                for r in self.subnets {
                    if d.contains(r) || r.contains(d) {
                        matching.push(*d);
                    }
                }
            }
            if !matching.is_empty() {
                matching.sort_by(prefix_order);
                matching.dedup();
                grants.push(CapGrant { dsts: matching.iter().map(|p| p.to_string()).collect(), cap_map: cg.cap_map.clone() });
            }
        }
        (!grants.is_empty()).then(|| FilterRule {
            src_ips: rule.src_ips.clone(),
            dst_ports: Vec::new(),
            ip_proto: Vec::new(),
            cap_grant: grants,
        })
    }
}

/// Go's `netip.Prefix.Compare`: family, then prefix length, then address.
fn prefix_order(a: &IpNet, b: &IpNet) -> std::cmp::Ordering {
    let fam = |p: &IpNet| matches!(p, IpNet::V6(_)) as u8;
    fam(a)
        .cmp(&fam(b))
        .then(a.prefix_len().cmp(&b.prefix_len()))
        .then(a.addr().cmp(&b.addr()))
}

/// Merges network rules with identical sources and protocols (destinations concatenated in
/// order); capability rules pass through untouched.
#[cfg(test)]
fn merge_rules(rules: Vec<FilterRule>) -> Vec<FilterRule> {
    let mut out: Vec<FilterRule> = Vec::new();
    let mut index: BTreeMap<(Vec<String>, Vec<u8>), usize> = BTreeMap::new();
    for rule in rules {
        if !rule.cap_grant.is_empty() {
            out.push(rule);
            continue;
        }
        let key = (rule.src_ips.clone(), rule.ip_proto.clone());
        if let Some(&i) = index.get(&key) {
            out[i].dst_ports.extend(rule.dst_ports);
        } else {
            index.insert(key, out.len());
            out.push(rule);
        }
    }
    out
}

fn compile_grant(r: &Resolver<'_>, grant: &Grant, subnet_strings: &[String]) -> Option<CompiledGrant> {
    let has_wildcard = grant.src.contains(&Alias::Wildcard);
    let has_danger_all = grant.src.contains(&Alias::AutoGroup(AutoGroup::DangerAll));
    let mut resolved_srcs = Vec::new();
    let mut non_wild = Vec::new();
    for src in &grant.src {
        if *src == Alias::AutoGroup(AutoGroup::SelfDevices) {
            return None;
        }
        if let Some(set) = r.resolve(src) {
            if *src != Alias::Wildcard {
                non_wild.push(set.clone());
            }
            resolved_srcs.push(set);
        }
    }
    let mut merged = IpSet::new();
    for s in &resolved_srcs {
        merged.extend(s);
    }
    // Addresses that came from node aliases (users, groups, tags, autogroups): Tailscale lists
    // those one by one, while prefixes from hosts, CIDRs and `*` stay spans.
    let mut node_addrs = IpSet::new();
    for src in grant.src.iter().filter(|a| Resolver::is_node_alias(a)) {
        if let Some(set) = r.resolve(src) {
            node_addrs.extend(&set);
        }
    }
    let src_with_routes = |merged: &IpSet| -> Vec<String> {
        if has_danger_all {
            return vec!["*".to_string()];
        }
        let mut v = merged.strings_keeping(&node_addrs);
        if has_wildcard {
            v.extend(subnet_strings.iter().cloned());
        }
        v
    };

    if !grant.via.is_empty() {
        if merged.is_empty() {
            return None;
        }
        let mut dsts = Vec::new();
        let mut internet = false;
        for d in &grant.dst {
            if *d == Alias::AutoGroup(AutoGroup::Internet) {
                internet = true;
            } else if let Some(set) = r.resolve(d) {
                dsts.extend(set.prefixes());
            }
        }
        return Some(CompiledGrant {
            via: Some(ViaGrant {
                tags: grant.via.clone(),
                src: merged.clone(),
                dsts,
                internet,
                ip: grant.ip.clone(),
                src_strings: src_with_routes(&merged),
            }),
            ..Default::default()
        });
    }

    if grant.src.is_empty() || grant.dst.is_empty() {
        return None;
    }
    if resolved_srcs.is_empty() && grant.app.is_empty() {
        return None;
    }
    let src_strings: Vec<String> = if merged.is_empty() {
        Vec::new()
    } else {
        let mut v = src_with_routes(&merged);
        if has_wildcard && !non_wild.is_empty() {
            let mut seen: BTreeSet<String> = v.iter().cloned().collect();
            for s in &non_wild {
                for text in s.strings_keeping(&node_addrs) {
                    if seen.insert(text.clone()) {
                        v.push(text);
                    }
                }
            }
        }
        v
    };

    let self_alias = Alias::AutoGroup(AutoGroup::SelfDevices);
    let other: Vec<&Alias> = grant.dst.iter().filter(|d| **d != self_alias).collect();
    let mut cg = CompiledGrant::default();
    if !other.is_empty() {
        for spec in &grant.ip {
            let mut dst_ports = Vec::new();
            for d in &other {
                if **d == Alias::Wildcard {
                    dst_ports.extend(spec.ports.iter().map(|p| NetPortRange { ip: "*".into(), ports: *p }));
                    continue;
                }
                let Some(set) = r.resolve(d) else { continue };
                let texts: Vec<String> = if **d == Alias::AutoGroup(AutoGroup::Internet) {
                    set.range_strings()
                } else if Resolver::is_node_alias(d) {
                    set.strings_keeping(&set)
                } else {
                    set.prefixes().iter().map(host_string).collect()
                };
                for t in texts {
                    for p in &spec.ports {
                        dst_ports.push(NetPortRange { ip: t.clone(), ports: *p });
                    }
                }
            }
            if !dst_ports.is_empty() && !src_strings.is_empty() {
                cg.rules.push(FilterRule {
                    src_ips: src_strings.clone(),
                    dst_ports,
                    ip_proto: spec.proto.numbers.clone(),
                    cap_grant: Vec::new(),
                });
            }
        }
        if !grant.app.is_empty() {
            let mut cap_grant = Vec::new();
            let mut dst_strings = Vec::new();
            for d in &other {
                let Some(set) = r.resolve(d) else { continue };
                let singles = if Resolver::is_node_alias(d) { set.clone() } else { IpSet::new() };
                cap_grant.push(CapGrant {
                    dsts: set.prefixes_keeping(&singles).iter().map(|p| p.to_string()).collect(),
                    cap_map: grant.app.clone(),
                });
                dst_strings.extend(set.strings_keeping(&singles));
            }
            if !cap_grant.is_empty() {
                let src_prefixes: Vec<String> =
                    resolved_srcs.iter().flat_map(|s| s.prefixes_keeping(&node_addrs)).map(|p| p.to_string()).collect();
                cg.rules.push(FilterRule {
                    src_ips: src_strings.clone(),
                    dst_ports: Vec::new(),
                    ip_proto: Vec::new(),
                    cap_grant,
                });
                if other.contains(&&Alias::Wildcard) {
                    dst_strings.extend(subnet_strings.iter().cloned());
                }
                cg.rules.extend(companion_rules(&dst_strings, &src_prefixes, &grant.app));
            }
        }
    }
    if grant.dst.contains(&self_alias) {
        cg.self_grant = Some(SelfGrant { resolved_srcs, ip: grant.ip.clone(), app: grant.app.clone() });
    }
    Some(cg)
}
