//! Compilation: aliases resolved against a tailnet, rules turned into packet filter rules, and
//! the global rule list reduced to what concerns one node.
//!
//! `acls` entries are first rewritten as grants (one per destination), then every grant is
//! compiled once; rules that depend on the receiving node (`autogroup:self`, `via`) are kept
//! in a deferred form and expanded per node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use ipnet::IpNet;
use serde_json::Value;
use tailwarden_wire::{CapGrant, FilterRule, NetPortRange, PortRange};

use crate::alias::{Alias, AutoGroup};
use crate::index::{AddrHash, DependencyIndex, NodeIndex, alias_keys, has_address_alias};
use crate::ipset::{IpSet, Piece, parse_pattern};
use crate::model::{Grant, IpSpec, Policy};
use crate::netmap::{Holders, Matcher, Origin};
use crate::tailnet::{Node, Tailnet, is_exit_route};

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

/// The node attribute that takes a node's IPv4 address away.
const DISABLE_IPV4: &str = "disable-ipv4";

/// Per-node state derived from the policy: effective routes.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeRoutes {
    /// Approved (or auto-approved), advertised, non-exit routes.
    pub(crate) subnets: Vec<IpNet>,
    /// Whether the node is an approved exit node.
    pub(crate) exit: bool,
}

impl NodeRoutes {
    fn is_router(&self) -> bool {
        self.exit || !self.subnets.is_empty()
    }
}

#[derive(Clone, Debug)]
struct SelfGrant {
    /// The grant's sources that resolve, with what they resolve to.
    src_aliases: Vec<Alias>,
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
pub(crate) struct CompiledGrant {
    rules: Vec<FilterRule>,
    /// Per rule in `rules`: where its destinations point (empty for capability rules).
    dst_index: Vec<DstIndex>,
    /// Per rule in `rules`: its merge key (sources, protocols) as an index into `merge_keys`;
    /// `None` for capability rules, which never merge.
    rule_keys: Vec<Option<usize>>,
    /// Per rule in `rules`: its row in the reach index.
    rows: Vec<usize>,
    /// Rows of the `via` expansions (one set per router).
    via_rows: Vec<usize>,
    self_grant: Option<SelfGrant>,
    via: Option<ViaGrant>,
}

impl CompiledGrant {
    /// A grant whose only destination is `autogroup:self`: it has no shared rules, and a
    /// node change only moves that node in and out of its resolved sources.
    fn is_self_only(&self) -> bool {
        self.rules.is_empty() && self.via.is_none() && self.self_grant.is_some()
    }
}

/// A rule's source list as a merge key. Rules compiled together share one list per distinct
/// sources, so equality first compares pointers, and hashing reads only the ends of the list:
/// source lists of 15,000 addresses are common and would otherwise be hashed per rule.
#[derive(Clone, Debug)]
struct SourceList(Arc<[String]>);

impl PartialEq for SourceList {
    fn eq(&self, other: &SourceList) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for SourceList {}

impl std::hash::Hash for SourceList {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let list = &self.0;
        list.len().hash(state);
        list[..list.len().min(4)].hash(state);
        list[list.len().saturating_sub(4)..].hash(state);
    }
}

/// A policy compiled against one tailnet: ready to answer per-node questions.
///
/// Besides the compiled rules it keeps the indexes that make later node changes cheap (see
/// [`CompiledPolicy::update_node`]): nodes by user, tag and address; grants and SSH rules by the
/// aliases they name; and every rule's source and destination nodes.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub(crate) policy: Policy,
    pub(crate) tailnet: Tailnet,
    pub(crate) index: NodeIndex,
    /// Every grant: the policy's `grants`, each `acls` entry as grants, or the default grant.
    grant_defs: Vec<Grant>,
    /// Grants by the node-selecting aliases they name.
    pub(crate) grant_deps: DependencyIndex,
    /// Grants naming address aliases (`*`, CIDRs, hosts): their rows hold nodes by address.
    pub(crate) address_grants: Vec<usize>,
    approvers: Vec<(IpNet, IpSet)>,
    exit_approvers: IpSet,
    routes: Vec<NodeRoutes>,
    /// Nodes with effective routes (subnet or exit).
    routers: Vec<usize>,
    subnet_strings: Vec<String>,
    /// The approved subnet routes as one set (what `subnet_strings` match).
    subnet_set: IpSet,
    grants: Vec<CompiledGrant>,
    /// Grants expanded per node (`autogroup:self`, `via`), ascending.
    per_node_grants: BTreeSet<usize>,
    reach: crate::netmap::Reach,
    /// Rows of each `autogroup:self` expansion, by (grant, user).
    self_rows: BTreeMap<(usize, u64), Vec<usize>>,
    /// Every distinct (protocols, sources) of the shared network rules, numbered, so per-node
    /// merging compares numbers instead of source lists.
    merge_keys: HashMap<Vec<u8>, HashMap<SourceList, usize>>,
    /// Per merge key: the (grant, rule) positions of the shared rules carrying it.
    key_positions: Vec<BTreeSet<(usize, usize)>>,
    /// Per merge key: its first source, to find the per-node rules that may share it.
    key_first_src: Vec<Option<String>>,
    /// Per node: the policy attributes it carries.
    pub(crate) attrs: Vec<Vec<String>>,
    /// The IPv4 addresses `disable-ipv4` took away, by node index.
    dropped_v4: Vec<(usize, std::net::Ipv4Addr)>,
    /// SSH rules with their sources and destinations resolved.
    pub(crate) ssh: Vec<crate::ssh::ResolvedSsh>,
    /// SSH rules by the node-selecting aliases they name.
    pub(crate) ssh_deps: DependencyIndex,
}

pub(crate) struct Resolver<'a> {
    policy: &'a Policy,
    tailnet: &'a Tailnet,
    index: &'a NodeIndex,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(policy: &'a Policy, tailnet: &'a Tailnet, index: &'a NodeIndex) -> Resolver<'a> {
        Resolver { policy, tailnet, index }
    }

    /// Whether the alias stands for nodes (rather than literal addresses).
    fn is_node_alias(alias: &Alias) -> bool {
        !matches!(
            alias,
            Alias::Wildcard
                | Alias::Host(_)
                | Alias::Prefix(_)
                | Alias::AutoGroup(AutoGroup::Internet | AutoGroup::DangerAll)
        )
    }

    fn add_node(set: &mut IpSet, node: &Node) {
        for a in node.addrs() {
            set.add_addr(a);
        }
    }

    /// The addresses of these nodes.
    fn nodes_in(&self, nodes: &[usize]) -> IpSet {
        IpSet::from_addrs(nodes.iter().filter_map(|&i| self.tailnet.nodes.get(i)).flat_map(Node::addrs))
    }

    /// The nodes a node-selecting alias holds (those with an address), ascending; `None` for
    /// address aliases and aliases that resolve to nothing here.
    fn alias_nodes(&self, alias: &Alias) -> Option<Vec<usize>> {
        let users_nodes = |logins: &mut dyn Iterator<Item = &str>| -> Vec<usize> {
            logins.flat_map(|l| self.index.user_nodes(l)).collect()
        };
        let mut nodes: Vec<usize> = match alias {
            Alias::User(login) => self.index.user_nodes(login).collect(),
            Alias::UserDomain(domain) => {
                users_nodes(
                    &mut self.tailnet.users.iter().map(|u| u.login.as_str()).filter(|login| {
                        login.rsplit_once('@').map(|(_, d)| d).unwrap_or("").eq_ignore_ascii_case(domain)
                    }),
                )
            }
            Alias::Group(g) => users_nodes(&mut self.policy.groups.get(g).into_iter().flatten().map(String::as_str)),
            Alias::Tag(t) => self.index.by_tag.get(t).into_iter().flatten().copied().collect(),
            Alias::AutoGroup(AutoGroup::Member) => self.index.untagged.iter().copied().collect(),
            Alias::AutoGroup(AutoGroup::Tagged) => self.index.tagged.iter().copied().collect(),
            Alias::AutoGroup(g @ (AutoGroup::Admin | AutoGroup::Owner)) => {
                let admin = *g == AutoGroup::Admin;
                let users = self.tailnet.users.iter().filter(|u| if admin { u.admin } else { u.owner });
                users.flat_map(|u| self.index.by_user.get(&u.id).into_iter().flatten().copied()).collect()
            }
            _ => return None,
        };
        nodes.sort_unstable();
        nodes.dedup();
        nodes.retain(|&i| self.tailnet.nodes.get(i).is_some_and(|n| !n.addrs().is_empty()));
        Some(nodes)
    }

    /// The addresses an alias stands for; `None` when it names nothing resolvable here
    /// (`autogroup:self`, SSH-only autogroups, undefined hosts).
    pub(crate) fn resolve(&self, alias: &Alias) -> Option<IpSet> {
        if let Some(nodes) = self.alias_nodes(alias) {
            return Some(self.nodes_in(&nodes));
        }
        Some(match alias {
            Alias::Wildcard => tailscale_addresses(),
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
            Alias::AutoGroup(AutoGroup::Internet) => the_internet(),
            Alias::AutoGroup(AutoGroup::DangerAll) => everything(),
            _ => return None,
        })
    }
}

/// Every address, both families (what `*` means in a packet filter).
fn everything() -> IpSet {
    let mut set = IpSet::new();
    set.add_prefix(&net("0.0.0.0/0"));
    set.add_prefix(&net("::/0"));
    set
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

fn companion_rules(
    dst_strings: &[String],
    src_prefixes: &[String],
    app: &BTreeMap<String, Vec<Value>>,
) -> Vec<FilterRule> {
    COMPANION_CAPS
        .iter()
        .filter(|(orig, _)| app.contains_key(*orig))
        .map(|(_, companion)| FilterRule {
            src_ips: dst_strings.to_vec().into(),
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
        let mut grant_defs: Vec<Grant> = policy.grants.clone();
        for acl in &policy.acls {
            grant_defs.extend(acl_to_grants(acl));
        }
        if !policy.has_rules {
            // A policy with neither `acls` nor `grants` behaves like the default policy:
            // everything may reach everything, written out as the `*` ranges.
            grant_defs.push(Grant {
                src: vec![Alias::Wildcard],
                dst: vec![Alias::Wildcard],
                ip: vec![IpSpec { proto: Default::default(), ports: vec![PortRange::ANY] }],
                app: BTreeMap::new(),
                via: Vec::new(),
            });
        }
        let mut grant_deps = DependencyIndex::default();
        let mut address_grants = Vec::new();
        for (g, def) in grant_defs.iter().enumerate() {
            grant_deps.add(g, alias_keys(policy, def.src.iter().chain(&def.dst)));
            if has_address_alias(def.src.iter().chain(&def.dst)) {
                address_grants.push(g);
            }
        }
        let mut compiled = CompiledPolicy {
            policy: policy.clone(),
            tailnet: tailnet.clone(),
            index: NodeIndex::new(tailnet),
            grants: vec![CompiledGrant::default(); grant_defs.len()],
            grant_defs,
            grant_deps,
            address_grants,
            approvers: Vec::new(),
            exit_approvers: IpSet::new(),
            routes: Vec::new(),
            routers: Vec::new(),
            subnet_strings: Vec::new(),
            subnet_set: IpSet::new(),
            per_node_grants: BTreeSet::new(),
            reach: Default::default(),
            self_rows: BTreeMap::new(),
            merge_keys: HashMap::new(),
            key_positions: Vec::new(),
            key_first_src: Vec::new(),
            attrs: Vec::new(),
            dropped_v4: Vec::new(),
            ssh: Vec::new(),
            ssh_deps: DependencyIndex::default(),
        };
        // Node attributes first: `disable-ipv4` removes the node's IPv4 address from every
        // later computation.
        compiled.attrs = compiled.tailnet.nodes.iter().map(|n| compiled.attrs_of(n)).collect();
        for (i, (node, attrs)) in compiled.tailnet.nodes.iter_mut().zip(&compiled.attrs).enumerate() {
            if attrs.iter().any(|a| a == DISABLE_IPV4)
                && let Some(v4) = node.ipv4.take()
            {
                compiled.dropped_v4.push((i, v4));
            }
        }
        if !compiled.dropped_v4.is_empty() {
            compiled.index = NodeIndex::new(&compiled.tailnet);
        }
        let resolver = Resolver::new(policy, &compiled.tailnet, &compiled.index);
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
        for node in &compiled.tailnet.nodes {
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
        compiled.routers = (0..compiled.routes.len()).filter(|&i| compiled.routes[i].is_router()).collect();
        compiled.subnet_strings = compiled.approved_subnet_strings();
        for r in &compiled.routes {
            for p in &r.subnets {
                compiled.subnet_set.add_prefix(p);
            }
        }
        compiled.reach.grow(compiled.tailnet.nodes.len());
        let all: Vec<usize> = (0..compiled.grants.len()).collect();
        for (g, cg) in all.iter().copied().zip(compiled.compile_grants(&all)) {
            compiled.install_grant(g, cg);
        }
        let users: Vec<u64> = compiled.index.by_user.keys().copied().collect();
        let self_grants: Vec<usize> = compiled.self_grants().collect();
        for g in self_grants {
            for &u in &users {
                compiled.install_self_rows(g, u);
            }
        }
        compiled.resolve_all_ssh();
        compiled
    }

    /// The policy attributes (`nodeAttrs`, `randomizeClientPort`) that hold `node`.
    pub(crate) fn attrs_of(&self, node: &Node) -> Vec<String> {
        let mut attrs: Vec<String> = Vec::new();
        if self.policy.randomize_client_port {
            attrs.push("randomize-client-port".into());
        }
        for na in &self.policy.node_attrs {
            if na.targets.iter().any(|t| self.holds(t, node)) {
                for a in &na.attrs {
                    if !attrs.contains(a) {
                        attrs.push(a.clone());
                    }
                }
            }
        }
        attrs
    }

    /// Whether `alias` resolves to a set holding one of `node`'s addresses, decided from the
    /// node's own attributes (no resolution of the alias).
    pub(crate) fn holds(&self, alias: &Alias, node: &Node) -> bool {
        let login_is_users = |login: &str| {
            !node.is_tagged() && node.user.is_some() && self.index.login_user.get(login).copied() == node.user
        };
        let addr_in = |set: IpSet| node_in(node, &set);
        match alias {
            Alias::User(login) => login_is_users(login),
            Alias::UserDomain(domain) => self.tailnet.users.iter().any(|u| {
                u.login.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
                    && login_is_users(&u.login)
            }),
            Alias::Group(g) => self.policy.groups.get(g).into_iter().flatten().any(|l| login_is_users(l)),
            Alias::Tag(t) => node.tags.contains(t),
            Alias::AutoGroup(AutoGroup::Member) => !node.is_tagged() && !node.addrs().is_empty(),
            Alias::AutoGroup(AutoGroup::Tagged) => node.is_tagged() && !node.addrs().is_empty(),
            Alias::AutoGroup(AutoGroup::Admin | AutoGroup::Owner) => {
                let admin = *alias == Alias::AutoGroup(AutoGroup::Admin);
                !node.is_tagged()
                    && self
                        .tailnet
                        .users
                        .iter()
                        .any(|u| Some(u.id) == node.user && if admin { u.admin } else { u.owner })
            }
            Alias::AutoGroup(AutoGroup::SelfDevices | AutoGroup::NonRoot) => false,
            other => Resolver::new(&self.policy, &self.tailnet, &self.index).resolve(other).is_some_and(addr_in),
        }
    }

    /// Compiles grants `gs` against the current tailnet, sharing alias resolutions among them.
    fn compile_grants(&self, gs: &[usize]) -> Vec<CompiledWithTargets> {
        let resolver = Resolver::new(&self.policy, &self.tailnet, &self.index);
        let mut c = Resolutions::new(resolver, &self.subnet_strings, &self.subnet_set);
        gs.iter().map(|&g| compile_grant(&mut c, &self.grant_defs[g]).unwrap_or_default()).collect()
    }

    /// Grants with an `autogroup:self` destination, ascending.
    pub(crate) fn self_grants(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_node_grants.iter().copied().filter(|&g| self.grants[g].self_grant.is_some())
    }

    fn key_id(&mut self, rule: &FilterRule) -> usize {
        let by_src = self.merge_keys.entry(rule.ip_proto.clone()).or_default();
        let src = SourceList(rule.src_ips.clone());
        if let Some(&id) = by_src.get(&src) {
            return id;
        }
        let id = self.key_positions.len();
        by_src.insert(src, id);
        self.key_positions.push(BTreeSet::new());
        self.key_first_src.push(rule.src_ips.first().cloned());
        id
    }

    /// Makes `cg` grant `g`'s compiled form: numbers its merge keys and indexes its rules.
    fn install_grant(&mut self, g: usize, (mut cg, targets): CompiledWithTargets) {
        cg.rule_keys = Vec::with_capacity(cg.rules.len());
        for (r, rule) in cg.rules.iter().enumerate() {
            let key = rule.cap_grant.is_empty().then(|| self.key_id(rule));
            if let Some(id) = key {
                self.key_positions[id].insert((g, r));
            }
            cg.rule_keys.push(key);
        }
        let mut via_rules: Vec<(FilterRule, usize)> = Vec::new();
        if let Some(v) = &cg.via {
            for &i in &self.routers {
                let n = &self.tailnet.nodes[i];
                via_rules.extend(self.via_rules(v, i, n).into_iter().map(|r| (r, i)));
                // App-only via grants make no packet filter but still connect the sources with
                // the routers.
                if v.ip.is_empty() {
                    let dsts = self.via_dsts(v, i, n);
                    if !dsts.is_empty() {
                        let rule = FilterRule {
                            src_ips: v.src.strings().into(),
                            dst_ports: dsts
                                .into_iter()
                                .map(|d| NetPortRange { ip: d, ports: PortRange::ANY })
                                .collect(),
                            ip_proto: Vec::new(),
                            cap_grant: Vec::new(),
                        };
                        via_rules.push((rule, i));
                    }
                }
            }
        }
        let holders = Holders {
            by_addr: &self.index.by_addr,
            routers: &self.routers,
            routes: &self.routes,
            nodes: self.tailnet.nodes.len(),
        };
        let mut rows = Vec::with_capacity(cg.rules.len());
        for (r, rule) in cg.rules.iter().enumerate() {
            let row = match targets.get(r) {
                Some(Some((src, dst))) => holders.row_between(src, dst, Origin::Shared(g, r)),
                _ => holders.row(Matcher::from_rule(rule, None), Origin::Shared(g, r)),
            };
            rows.push(self.reach.insert_row(row));
        }
        cg.rows = rows;
        cg.via_rows = via_rules
            .into_iter()
            .map(|(rule, i)| self.reach.insert(&holders, Matcher::from_rule(&rule, Some(i)), Origin::PerNode))
            .collect();
        if cg.self_grant.is_some() || cg.via.is_some() {
            self.per_node_grants.insert(g);
        }
        self.grants[g] = cg;
    }

    /// Takes grant `g` out of the indexes (its `autogroup:self` rows included).
    fn uninstall_grant(&mut self, g: usize) {
        let cg = std::mem::take(&mut self.grants[g]);
        self.per_node_grants.remove(&g);
        for (r, key) in cg.rule_keys.iter().enumerate() {
            if let Some(id) = key {
                self.key_positions[*id].remove(&(g, r));
            }
        }
        for &id in cg.rows.iter().chain(&cg.via_rows) {
            self.reach.remove(id);
        }
        let users: Vec<u64> = self.self_rows.range((g, 0)..=(g, u64::MAX)).map(|((_, u), _)| *u).collect();
        for u in users {
            self.uninstall_self_rows(g, u);
        }
    }

    /// Indexes grant `g`'s `autogroup:self` expansion for `user`'s devices.
    pub(crate) fn install_self_rows(&mut self, g: usize, user: u64) {
        let Some(s) = &self.grants[g].self_grant else { return };
        let Some(&first) = self.index.by_user.get(&user).and_then(|set| set.iter().next()) else { return };
        let rules = self.self_rules(s, &self.tailnet.nodes[first]);
        let holders = Holders {
            by_addr: &self.index.by_addr,
            routers: &self.routers,
            routes: &self.routes,
            nodes: self.tailnet.nodes.len(),
        };
        let ids =
            rules.iter().map(|r| self.reach.insert(&holders, Matcher::from_rule(r, None), Origin::PerNode)).collect();
        self.self_rows.insert((g, user), ids);
    }

    pub(crate) fn uninstall_self_rows(&mut self, g: usize, user: u64) {
        for id in self.self_rows.remove(&(g, user)).into_iter().flatten() {
            self.reach.remove(id);
        }
    }

    /// The first (grant, rule) position of a merge key among the shared rules.
    pub(crate) fn key_first(&self, id: usize) -> Option<(usize, usize)> {
        self.key_positions.get(id).and_then(|p| p.first().copied())
    }

    /// The nodes the shared rules carrying merge key `id` are delivered to.
    pub(crate) fn key_holders(&self, id: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for &(g, r) in self.key_positions.get(id).into_iter().flatten() {
            if let Some(row) = self.grants[g].rows.get(r).and_then(|&row| self.reach.row(row)) {
                out.extend_from_slice(&row.dst_nodes);
            }
        }
        out
    }

    /// Nodes whose per-node rules (`autogroup:self`, `via`) may carry merge key `id`: a self
    /// rule's sources are one user's devices, so the user of the key's first source; and the
    /// routers when the policy has `via` grants.
    pub(crate) fn per_node_key_holders(&self, id: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let first = self.key_first_src.get(id).cloned().flatten();
        if let Some(addr) = first.and_then(|s| s.parse::<std::net::IpAddr>().ok())
            && let Some(&i) = self.index.by_addr.get(&addr)
            && let Some(u) = self.tailnet.nodes[i].user
        {
            out.extend(self.index.by_user.get(&u).into_iter().flatten().copied());
        }
        if self.grants.iter().any(|g| g.via.is_some()) {
            out.extend_from_slice(&self.routers);
        }
        out
    }

    pub(crate) fn grant(&self, g: usize) -> (&Grant, bool, &[Option<usize>]) {
        let cg = &self.grants[g];
        (&self.grant_defs[g], cg.is_self_only(), &cg.rule_keys)
    }

    /// Recompiles grants `gs` from the current tailnet and re-indexes them.
    pub(crate) fn recompile_grants(&mut self, gs: &[usize]) {
        let compiled = self.compile_grants(gs);
        for (&g, cg) in gs.iter().zip(compiled) {
            self.uninstall_grant(g);
            let has_self = cg.0.self_grant.is_some();
            self.install_grant(g, cg);
            if has_self {
                let users: Vec<u64> = self.index.by_user.keys().copied().collect();
                for u in users {
                    self.install_self_rows(g, u);
                }
            }
        }
    }

    /// Moves `node` in or out of the resolved sources of `autogroup:self` grant `g` (`add`: its
    /// current addresses join the sets of the aliases holding it) and re-indexes `user`'s rows.
    pub(crate) fn update_self_grant(&mut self, g: usize, old: &Node, new: &Node) {
        let Some(s) = &self.grants[g].self_grant else { return };
        let mut resolved = s.resolved_srcs.clone();
        for (alias, set) in s.src_aliases.iter().zip(resolved.iter_mut()) {
            if !Resolver::is_node_alias(alias) {
                continue;
            }
            for a in old.addrs() {
                set.remove_addr(a);
            }
            if self.holds(alias, new) {
                for a in new.addrs() {
                    set.add_addr(a);
                }
            }
        }
        if let Some(s) = &mut self.grants[g].self_grant {
            s.resolved_srcs = resolved;
        }
        let mut users: Vec<u64> = old.user.into_iter().chain(new.user).collect();
        users.dedup();
        for u in users {
            self.uninstall_self_rows(g, u);
            self.install_self_rows(g, u);
        }
    }

    pub(crate) fn matchers(&self) -> impl Iterator<Item = &crate::netmap::Matcher> {
        self.reach.rows().map(|r| &r.matcher)
    }

    pub(crate) fn reach(&self) -> &crate::netmap::Reach {
        &self.reach
    }

    pub(crate) fn reach_mut(&mut self) -> &mut crate::netmap::Reach {
        &mut self.reach
    }

    /// Rows of grant `g` (shared and `via`).
    pub(crate) fn grant_rows(&self, g: usize) -> impl Iterator<Item = usize> + '_ {
        self.grants[g].rows.iter().chain(&self.grants[g].via_rows).copied()
    }

    /// Whether a node change can be applied in place: anything touching routes (approval,
    /// primary election, `via`) or `disable-ipv4` recompiles everything.
    pub(crate) fn route_free(&self, i: Option<usize>, node: &Node) -> bool {
        node.routable_ips.is_empty()
            && node.approved_routes.is_empty()
            && i.is_none_or(|i| !self.routes.get(i).is_some_and(NodeRoutes::is_router))
            && !self.attrs_of(node).iter().any(|a| a == DISABLE_IPV4)
    }

    /// The tailnet as given to [`CompiledPolicy::new`] (with the addresses `disable-ipv4` hid),
    /// changed by every node update since.
    pub(crate) fn source_tailnet(&self) -> Tailnet {
        let mut tailnet = self.tailnet.clone();
        for &(i, v4) in &self.dropped_v4 {
            if let Some(n) = tailnet.nodes.get_mut(i) {
                n.ipv4 = Some(v4);
            }
        }
        tailnet
    }

    /// Sets node slot `i` (appending when `i` is the node count), keeping the node index, the
    /// reach index's size and the per-node tables in step.
    pub(crate) fn put_node(&mut self, i: usize, node: Node) -> Node {
        let attrs = self.attrs_of(&node);
        if i == self.tailnet.nodes.len() {
            self.tailnet.nodes.push(Node::vacant(node.id));
            self.attrs.push(Vec::new());
            self.routes.push(NodeRoutes::default());
            self.reach.grow(i + 1);
        }
        let old = std::mem::replace(&mut self.tailnet.nodes[i], node);
        self.index.remove(i, &old);
        self.index.add(i, &self.tailnet.nodes[i]);
        self.attrs[i] = attrs;
        old
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
        Resolver::new(&self.policy, &self.tailnet, &self.index).resolve(alias)
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
        let mut rules: Vec<FilterRule> = self.grants.iter().flat_map(|g| g.rules.iter().cloned()).collect();
        for (i, n) in self.tailnet.nodes.iter().enumerate() {
            for g in &self.grants {
                rules.extend(self.node_rules(g, i, n));
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
    ///
    /// Rules are merged by (sources, protocols) at the first rule with that key, then reduced to
    /// the destinations this node serves. Only the rules the reach index says may concern the
    /// node are looked at; a merge key keeps the position of its first shared rule even when
    /// that rule does not concern the node, which the recorded key positions give.
    pub fn filter_for(&self, node: usize) -> Vec<FilterRule> {
        let Some(n) = self.tailnet.nodes.get(node) else {
            return Vec::new();
        };
        let view = NodeView::new(self, node, n);
        // Exit nodes keep destinations that are merely part of the internet, which the reach
        // index does not record; they look at every rule.
        let mut shared: Vec<(usize, usize)> = if view.exit {
            self.grants.iter().enumerate().flat_map(|(g, cg)| (0..cg.rules.len()).map(move |r| (g, r))).collect()
        } else {
            self.reach
                .rows_reaching(node)
                .iter()
                .filter_map(|&id| match self.reach.row(id)?.origin {
                    Origin::Shared(g, r) => Some((g, r)),
                    Origin::PerNode => None,
                })
                .collect()
        };
        shared.sort_unstable();
        shared.dedup();
        let extra: Vec<(usize, Vec<FilterRule>)> = self
            .per_node_grants
            .iter()
            .map(|&g| (g, self.node_rules(&self.grants[g], node, n)))
            .filter(|(_, rules)| !rules.is_empty())
            .collect();
        type Position = (usize, u8, usize);
        struct Entry<'a> {
            pos: Position,
            rule: &'a FilterRule,
            dst_index: Option<&'a DstIndex>,
            key: Option<usize>,
        }
        let mut entries: Vec<Entry<'_>> = shared
            .iter()
            .map(|&(g, r)| {
                let cg = &self.grants[g];
                Entry { pos: (g, 0, r), rule: &cg.rules[r], dst_index: cg.dst_index.get(r), key: cg.rule_keys[r] }
            })
            .collect();
        for (g, rules) in &extra {
            entries.extend(rules.iter().enumerate().map(|(j, rule)| Entry {
                pos: (*g, 1, j),
                rule,
                dst_index: None,
                key: None,
            }));
        }
        entries.sort_by_key(|e| e.pos);

        #[derive(PartialEq, Eq, Hash)]
        enum SlotKey<'a> {
            Known(usize),
            Novel(&'a [String], &'a [u8]),
        }
        enum Slot<'a> {
            Net { src: &'a Arc<[String]>, proto: &'a [u8], dsts: Vec<NetPortRange> },
            Cap(FilterRule),
        }
        let mut slots: Vec<(Position, Slot<'_>)> = Vec::new();
        let mut by_key: HashMap<SlotKey<'_>, usize> = HashMap::new();
        for e in entries {
            let rule = e.rule;
            if !rule.cap_grant.is_empty() {
                slots.extend(view.reduce_caps(rule).map(|c| (e.pos, Slot::Cap(c))));
                continue;
            }
            let dsts: Vec<NetPortRange> = match e.dst_index {
                Some(index) => index.kept(&view).into_iter().map(|p| rule.dst_ports[p].clone()).collect(),
                None => rule.dst_ports.iter().filter(|d| view.keeps(d)).cloned().collect(),
            };
            let key = e.key.or_else(|| {
                self.merge_keys
                    .get(&rule.ip_proto)
                    .and_then(|by_src| by_src.get(&SourceList(rule.src_ips.clone())))
                    .copied()
            });
            let slot_key = match key {
                Some(id) => SlotKey::Known(id),
                None => SlotKey::Novel(&rule.src_ips, &rule.ip_proto),
            };
            if let Some(&i) = by_key.get(&slot_key) {
                if let (_, Slot::Net { dsts: have, .. }) = &mut slots[i] {
                    have.extend(dsts);
                }
                continue;
            }
            let first = key.and_then(|id| self.key_first(id)).map_or(e.pos, |(g, r)| e.pos.min((g, 0, r)));
            by_key.insert(slot_key, slots.len());
            slots.push((first, Slot::Net { src: &rule.src_ips, proto: &rule.ip_proto, dsts }));
        }
        slots.sort_by_key(|(pos, _)| *pos);
        slots
            .into_iter()
            .filter_map(|(_, slot)| match slot {
                Slot::Cap(rule) => Some(rule),
                Slot::Net { dsts, .. } if dsts.is_empty() => None,
                Slot::Net { src, proto, dsts } => Some(FilterRule {
                    src_ips: src.clone(),
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
        if n.is_tagged() {
            return Vec::new();
        }
        let Some(set) = n.user.and_then(|u| self.index.by_user.get(&u)) else { return Vec::new() };
        set.iter().filter_map(|&i| self.tailnet.nodes.get(i)).collect()
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
                        dst_ports.push(NetPortRange { ip: self.index.text(a), ports: *ports });
                    }
                }
            }
            if !dst_ports.is_empty() {
                rules.push(FilterRule {
                    src_ips: src.strings_keeping_by(&src, &|a| self.index.text(a)).into(),
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
            rules.push(FilterRule {
                src_ips: src.strings_keeping(&src).into(),
                dst_ports: Vec::new(),
                ip_proto: Vec::new(),
                cap_grant,
            });
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
        v.ip.iter()
            .map(|spec| FilterRule {
                src_ips: v.src_strings.clone().into(),
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
    /// The internet, for exit nodes only (empty otherwise).
    internet: IpSet,
    addrs: Vec<IpAddr>,
}

impl<'a> NodeView<'a> {
    fn new(policy: &'a CompiledPolicy, index: usize, n: &Node) -> NodeView<'a> {
        let exit = policy.is_exit_node(index);
        NodeView {
            subnets: policy.subnet_routes(index),
            exit,
            internet: if exit { the_internet() } else { IpSet::new() },
            addrs: n.addrs(),
        }
    }

    /// Whether the node keeps this destination: one of its addresses, a route it serves, or
    /// (for an exit node) a part of the internet.
    fn keeps(&self, d: &NetPortRange) -> bool {
        parse_pattern(&d.ip).is_some_and(|set| self.keeps_set(&set))
    }

    /// [`NodeView::keeps`] for a destination already parsed.
    fn keeps_set(&self, set: &IpSet) -> bool {
        self.addrs.iter().any(|a| set.contains(*a))
            || self.subnets.iter().any(|r| set.overlaps_prefix(r))
            || (self.exit && set.is_subset_of(&self.internet))
    }

    /// [`NodeView::keeps_set`] for a single address.
    fn keeps_addr(&self, a: IpAddr) -> bool {
        self.addrs.contains(&a)
            || self.subnets.iter().any(|r| r.contains(&a))
            || (self.exit && self.internet.contains(a))
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
                grants.push(CapGrant {
                    dsts: matching.iter().map(|p| p.to_string()).collect(),
                    cap_map: cg.cap_map.clone(),
                });
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
    fam(a).cmp(&fam(b)).then(a.prefix_len().cmp(&b.prefix_len())).then(a.addr().cmp(&b.addr()))
}

/// Merges network rules with identical sources and protocols (destinations concatenated in
/// order); capability rules pass through untouched.
#[cfg(test)]
fn merge_rules(rules: Vec<FilterRule>) -> Vec<FilterRule> {
    let mut out: Vec<FilterRule> = Vec::new();
    let mut index: BTreeMap<(Arc<[String]>, Vec<u8>), usize> = BTreeMap::new();
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

/// An alias resolved once per compilation.
struct ResolvedAlias {
    set: IpSet,
    /// For node-selecting aliases: the nodes holding the addresses.
    nodes: Option<Vec<usize>>,
}

/// A grant's sources resolved and rendered. Every grant written from one acl entry (and any
/// other grant with the same source list) shares it, so a 15,000-address `autogroup:member`
/// list is written out once.
struct Sources {
    has_wildcard: bool,
    has_danger_all: bool,
    /// The sources that resolve, with what they resolve to.
    aliases: Vec<Alias>,
    resolved: Vec<IpSet>,
    merged: IpSet,
    /// Addresses that came from node aliases (users, groups, tags, autogroups): Tailscale lists
    /// those one by one, while prefixes from hosts, CIDRs and `*` stay spans.
    node_addrs: IpSet,
    /// The network and capability rules' `SrcIPs`.
    strings: Arc<[String]>,
    /// What `strings` match.
    target: Rc<Target>,
}

/// Resolutions shared by the grants compiled together: a policy names the same groups, tags
/// and source lists many times.
struct Resolutions<'a> {
    resolver: Resolver<'a>,
    subnet_strings: &'a [String],
    subnet_set: &'a IpSet,
    aliases: HashMap<Alias, Option<Rc<ResolvedAlias>>>,
    sources: HashMap<Vec<Alias>, Option<Rc<Sources>>>,
    /// Rendered source lists by what they are made of (addresses, and which of them came from
    /// node aliases), for lists without `*` or `autogroup:danger-all`: `autogroup:member`
    /// combined with any group is still `autogroup:member`.
    source_strings: HashMap<(IpSet, IpSet), Arc<[String]>, AddrHash>,
    /// Destination aliases' strings, with what each stands for.
    dst_pieces: HashMap<Alias, Rc<[(String, Piece)]>>,
}

impl<'a> Resolutions<'a> {
    fn new(resolver: Resolver<'a>, subnet_strings: &'a [String], subnet_set: &'a IpSet) -> Resolutions<'a> {
        Resolutions {
            resolver,
            subnet_strings,
            subnet_set,
            aliases: HashMap::new(),
            sources: HashMap::new(),
            source_strings: HashMap::default(),
            dst_pieces: HashMap::new(),
        }
    }

    fn text(&self, a: IpAddr) -> String {
        self.resolver.index.text(a)
    }

    fn alias(&mut self, alias: &Alias) -> Option<Rc<ResolvedAlias>> {
        if let Some(known) = self.aliases.get(alias) {
            return known.clone();
        }
        let resolved = match self.resolver.alias_nodes(alias) {
            Some(nodes) => Some(ResolvedAlias { set: self.resolver.nodes_in(&nodes), nodes: Some(nodes) }),
            None => self.resolver.resolve(alias).map(|set| ResolvedAlias { set, nodes: None }),
        }
        .map(Rc::new);
        self.aliases.insert(alias.clone(), resolved.clone());
        resolved
    }

    /// `None` when the sources name `autogroup:self`, which no grant compiles.
    fn sources(&mut self, src: &[Alias]) -> Option<Rc<Sources>> {
        if let Some(known) = self.sources.get(src) {
            return known.clone();
        }
        let sources = self.compute_sources(src).map(Rc::new);
        self.sources.insert(src.to_vec(), sources.clone());
        sources
    }

    fn compute_sources(&mut self, src: &[Alias]) -> Option<Sources> {
        let has_wildcard = src.contains(&Alias::Wildcard);
        let has_danger_all = src.contains(&Alias::AutoGroup(AutoGroup::DangerAll));
        let mut aliases = Vec::new();
        let mut resolved = Vec::new();
        let mut merged = IpSet::new();
        let mut node_addrs = IpSet::new();
        let mut target = Target::default();
        for alias in src {
            if *alias == Alias::AutoGroup(AutoGroup::SelfDevices) {
                return None;
            }
            let Some(r) = self.alias(alias) else { continue };
            merged.extend(&r.set);
            if Resolver::is_node_alias(alias) {
                node_addrs.extend(&r.set);
            }
            target.add(&r);
            resolved.push(r.set.clone());
            aliases.push(alias.clone());
        }
        let mut sources = Sources {
            has_wildcard,
            has_danger_all,
            aliases,
            resolved,
            merged,
            node_addrs,
            strings: Arc::from(Vec::new()),
            target: Rc::new(Target::default()),
        };
        if sources.merged.is_empty() {
            return Some(sources);
        }
        if !has_wildcard && !has_danger_all {
            let key = (sources.merged.clone(), sources.node_addrs.clone());
            let strings = match self.source_strings.get(&key) {
                Some(known) => known.clone(),
                None => {
                    let strings: Arc<[String]> = sources.with_routes(self).into();
                    self.source_strings.insert(key, strings.clone());
                    strings
                }
            };
            target.finish();
            sources.strings = strings;
            sources.target = Rc::new(target);
            return Some(sources);
        }
        let mut strings = sources.with_routes(self);
        if has_wildcard {
            let mut seen: BTreeSet<String> = strings.iter().cloned().collect();
            for (alias, set) in sources.aliases.iter().zip(&sources.resolved) {
                if *alias == Alias::Wildcard {
                    continue;
                }
                for text in set.strings_keeping_by(&sources.node_addrs, &|a| self.text(a)) {
                    if seen.insert(text.clone()) {
                        strings.push(text);
                    }
                }
            }
        }
        if has_danger_all {
            target.add_addresses(&everything());
        } else if has_wildcard {
            target.add_addresses(self.subnet_set);
        }
        target.finish();
        sources.strings = strings.into();
        sources.target = Rc::new(target);
        Some(sources)
    }

    /// A destination alias's strings (`None` when it resolves to nothing here).
    fn dst_pieces(&mut self, alias: &Alias) -> Option<Rc<[(String, Piece)]>> {
        if let Some(known) = self.dst_pieces.get(alias) {
            return Some(known.clone());
        }
        let pieces: Vec<(String, Piece)> = if *alias == Alias::Wildcard {
            vec![("*".to_string(), Piece::Span(everything()))]
        } else {
            let r = self.alias(alias)?;
            if *alias == Alias::AutoGroup(AutoGroup::Internet) {
                r.set
                    .range_strings()
                    .into_iter()
                    .zip(r.set.ranges())
                    .map(|(text, (a, b))| {
                        let mut span = IpSet::new();
                        span.add_range(a, b);
                        (text, Piece::Span(span))
                    })
                    .collect()
            } else if r.nodes.is_some() {
                r.set.pieces_keeping_by(&r.set, &|a| self.text(a))
            } else {
                r.set
                    .prefixes()
                    .iter()
                    .map(|p| {
                        let piece = if p.prefix_len() == p.max_prefix_len() {
                            Piece::Addr(p.addr())
                        } else {
                            let mut set = IpSet::new();
                            set.add_prefix(p);
                            Piece::Span(set)
                        };
                        (host_string(p), piece)
                    })
                    .collect()
            }
        };
        let pieces: Rc<[(String, Piece)]> = pieces.into();
        self.dst_pieces.insert(alias.clone(), pieces.clone());
        Some(pieces)
    }
}

impl Sources {
    /// The sources' strings, with the approved subnet routes after `*` (a via grant's sources).
    fn with_routes(&self, c: &Resolutions<'_>) -> Vec<String> {
        if self.has_danger_all {
            return vec!["*".to_string()];
        }
        let mut v = self.merged.strings_keeping_by(&self.node_addrs, &|a| c.text(a));
        if self.has_wildcard {
            v.extend(c.subnet_strings.iter().cloned());
        }
        v
    }
}

/// One side of a rule for the reach index: its addresses, and the nodes holding them where
/// node aliases already say so.
#[derive(Clone, Debug, Default)]
pub(crate) struct Target {
    pub(crate) set: IpSet,
    /// Nodes selected by node aliases, ascending after [`Target::finish`].
    pub(crate) nodes: Vec<usize>,
    /// Addresses named as such (CIDRs, hosts, `*`): their holders are found by address.
    pub(crate) by_address: IpSet,
}

impl Target {
    fn add(&mut self, r: &ResolvedAlias) {
        match &r.nodes {
            Some(nodes) => {
                self.set.extend(&r.set);
                self.nodes.extend_from_slice(nodes);
            }
            None => self.add_addresses(&r.set),
        }
    }

    fn add_addresses(&mut self, set: &IpSet) {
        self.set.extend(set);
        self.by_address.extend(set);
    }

    fn finish(&mut self) {
        self.nodes.sort_unstable();
        self.nodes.dedup();
    }
}

/// Where a shared network rule's destinations point, so a node's entries are found without
/// testing every entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct DstIndex {
    /// Entries naming one address: (address, position), ascending.
    singles: Vec<(IpAddr, usize)>,
    /// Entries naming more (CIDRs, ranges, `*`): (position, addresses).
    spans: Vec<(usize, IpSet)>,
}

impl DstIndex {
    fn push(&mut self, position: usize, piece: &Piece) {
        match piece {
            Piece::Addr(a) => self.singles.push((*a, position)),
            Piece::Span(set) => self.spans.push((position, set.clone())),
        }
    }

    /// The positions of the entries `view`'s node keeps, ascending.
    fn kept(&self, view: &NodeView<'_>) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        if view.subnets.is_empty() && !view.exit {
            // Only the node's own addresses can match a single address.
            for a in &view.addrs {
                let from = self.singles.partition_point(|(b, _)| b < a);
                out.extend(self.singles[from..].iter().take_while(|(b, _)| b == a).map(|(_, p)| *p));
            }
        } else {
            out.extend(self.singles.iter().filter(|(a, _)| view.keeps_addr(*a)).map(|(_, p)| *p));
        }
        out.extend(self.spans.iter().filter(|(_, set)| view.keeps_set(set)).map(|(p, _)| *p));
        out.sort_unstable();
        out
    }
}

/// A compiled grant with, per rule, the two sides its reach row is built from (`None` for rules
/// whose row is read off the rule text).
pub(crate) type CompiledWithTargets = (CompiledGrant, Vec<Option<(Rc<Target>, Rc<Target>)>>);

fn compile_grant(c: &mut Resolutions<'_>, grant: &Grant) -> Option<CompiledWithTargets> {
    let src = c.sources(&grant.src)?;
    if !grant.via.is_empty() {
        if src.merged.is_empty() {
            return None;
        }
        let mut dsts = Vec::new();
        let mut internet = false;
        for d in &grant.dst {
            if *d == Alias::AutoGroup(AutoGroup::Internet) {
                internet = true;
            } else if let Some(r) = c.alias(d) {
                dsts.extend(r.set.prefixes());
            }
        }
        let via = ViaGrant {
            tags: grant.via.clone(),
            src: src.merged.clone(),
            dsts,
            internet,
            ip: grant.ip.clone(),
            src_strings: src.with_routes(c),
        };
        return Some((CompiledGrant { via: Some(via), ..Default::default() }, Vec::new()));
    }

    if grant.src.is_empty() || grant.dst.is_empty() {
        return None;
    }
    if src.resolved.is_empty() && grant.app.is_empty() {
        return None;
    }
    let src_strings = src.strings.clone();
    let self_alias = Alias::AutoGroup(AutoGroup::SelfDevices);
    let other: Vec<&Alias> = grant.dst.iter().filter(|d| **d != self_alias).collect();
    let mut cg = CompiledGrant::default();
    let mut targets = Vec::new();
    if !other.is_empty() {
        let mut dst_target = Target::default();
        let mut pieces = Vec::new();
        for d in &other {
            let Some(p) = c.dst_pieces(d) else { continue };
            if **d == Alias::Wildcard {
                dst_target.add_addresses(&everything());
            } else if let Some(r) = c.alias(d) {
                dst_target.add(&r);
            }
            pieces.push(p);
        }
        dst_target.finish();
        let dst_target = Rc::new(dst_target);
        for spec in &grant.ip {
            let mut dst_ports = Vec::new();
            let mut index = DstIndex::default();
            for (text, piece) in pieces.iter().flat_map(|p| p.iter()) {
                for p in &spec.ports {
                    index.push(dst_ports.len(), piece);
                    dst_ports.push(NetPortRange { ip: text.clone(), ports: *p });
                }
            }
            if !dst_ports.is_empty() && !src_strings.is_empty() {
                index.singles.sort_unstable();
                cg.rules.push(FilterRule {
                    src_ips: src_strings.clone(),
                    dst_ports,
                    ip_proto: spec.proto.numbers.clone(),
                    cap_grant: Vec::new(),
                });
                cg.dst_index.push(index);
                targets.push(Some((src.target.clone(), dst_target.clone())));
            }
        }
        if !grant.app.is_empty() {
            let mut cap_grant = Vec::new();
            let mut dst_strings = Vec::new();
            let mut cap_target = Target::default();
            for d in &other {
                let Some(r) = c.alias(d) else { continue };
                let singles = if Resolver::is_node_alias(d) { r.set.clone() } else { IpSet::new() };
                cap_grant.push(CapGrant {
                    dsts: r.set.prefixes_keeping(&singles).iter().map(|p| p.to_string()).collect(),
                    cap_map: grant.app.clone(),
                });
                dst_strings.extend(r.set.strings_keeping(&singles));
                cap_target.add(&r);
            }
            cap_target.finish();
            if !cap_grant.is_empty() {
                let src_prefixes: Vec<String> = src
                    .resolved
                    .iter()
                    .flat_map(|s| s.prefixes_keeping(&src.node_addrs))
                    .map(|p| p.to_string())
                    .collect();
                cg.rules.push(FilterRule {
                    src_ips: src_strings.clone(),
                    dst_ports: Vec::new(),
                    ip_proto: Vec::new(),
                    cap_grant,
                });
                cg.dst_index.push(DstIndex::default());
                targets.push(Some((src.target.clone(), Rc::new(cap_target))));
                if other.contains(&&Alias::Wildcard) {
                    dst_strings.extend(c.subnet_strings.iter().cloned());
                }
                for rule in companion_rules(&dst_strings, &src_prefixes, &grant.app) {
                    cg.rules.push(rule);
                    cg.dst_index.push(DstIndex::default());
                    targets.push(None);
                }
            }
        }
    }
    if grant.dst.contains(&self_alias) {
        cg.self_grant = Some(SelfGrant {
            src_aliases: src.aliases.clone(),
            resolved_srcs: src.resolved.clone(),
            ip: grant.ip.clone(),
            app: grant.app.clone(),
        });
    }
    Some((cg, targets))
}
