//! Netmap facts derived from a compiled policy: which nodes see each other, which routes each
//! peer carries, and the peer capabilities the control plane adds.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::Value;

use crate::compile::{the_internet, CompiledPolicy};
use crate::ipset::{parse_pattern, IpSet};
use crate::tailnet::Node;

/// A rule reduced to "who may talk to what", for visibility decisions.
#[derive(Clone, Debug)]
pub(crate) struct Matcher {
    srcs: IpSet,
    dsts: IpSet,
    /// For `via` rules: the router the destinations are reached through.
    only: Option<usize>,
}

impl Matcher {
    pub(crate) fn from_rule(rule: &tailwarden_wire::FilterRule, only: Option<usize>) -> Matcher {
        let mut srcs = IpSet::new();
        for s in &rule.src_ips {
            if let Some(set) = parse_pattern(s) {
                srcs.extend(&set);
            }
        }
        let mut dsts = IpSet::new();
        for d in &rule.dst_ports {
            if let Some(set) = parse_pattern(&d.ip) {
                dsts.extend(&set);
            }
        }
        for cg in &rule.cap_grant {
            for d in &cg.dsts {
                if let Some(set) = parse_pattern(d) {
                    dsts.extend(&set);
                }
            }
        }
        Matcher { srcs, dsts, only }
    }

    fn dsts_is_internet(&self) -> bool {
        let all4: IpNet = IpNet::V4(Default::default());
        let all6: IpNet = IpNet::V6(Default::default());
        let mut full4 = IpSet::new();
        full4.add_prefix(&all4);
        let mut full6 = IpSet::new();
        full6.add_prefix(&all6);
        full4.is_subset_of(&self.dsts) || full6.is_subset_of(&self.dsts) || the_internet().is_subset_of(&self.dsts)
    }
}

/// The nodes each matcher's sources and destinations hold, and the same inverted per node, so
/// a peer set is read off the matchers a node appears in instead of testing every pair.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reach {
    /// Per matcher: the nodes its sources hold (addresses or overlapping subnet routes).
    src_nodes: Vec<Vec<usize>>,
    /// Per matcher: the nodes its destinations hold (addresses, overlapping subnet routes, or
    /// exit nodes when the destinations cover the internet).
    dst_nodes: Vec<Vec<usize>>,
    /// Per node: the matchers whose sources hold it.
    as_src: Vec<Vec<usize>>,
    /// Per node: the matchers whose destinations hold it.
    as_dst: Vec<Vec<usize>>,
}

impl Reach {
    /// Indexes `matchers` against `nodes`; `subnets` and `exit` give each node's effective
    /// routes (see [`CompiledPolicy::subnet_routes`] and [`CompiledPolicy::is_exit_node`]).
    pub(crate) fn new(matchers: &[Matcher], nodes: &[Node], subnets: &[&[IpNet]], exit: &[bool]) -> Reach {
        let mut by_addr: Vec<(std::net::IpAddr, usize)> =
            nodes.iter().enumerate().flat_map(|(i, n)| n.addrs().into_iter().map(move |a| (a, i))).collect();
        by_addr.sort_unstable();
        // Routers and exit nodes are matched by their routes too; there are few of them.
        let routers: Vec<usize> =
            (0..nodes.len()).filter(|&i| !subnets[i].is_empty() || exit[i]).collect();
        let holders = |set: &IpSet, extra: &dyn Fn(usize) -> bool| -> Vec<usize> {
            let mut out = Vec::new();
            for (lo, hi) in set.ranges() {
                let start = by_addr.partition_point(|(a, _)| *a < lo);
                out.extend(by_addr[start..].iter().take_while(|(a, _)| *a <= hi).map(|(_, i)| *i));
            }
            out.extend(routers.iter().copied().filter(|&i| extra(i)));
            out.sort_unstable();
            out.dedup();
            out
        };
        let mut reach = Reach {
            src_nodes: Vec::with_capacity(matchers.len()),
            dst_nodes: Vec::with_capacity(matchers.len()),
            as_src: vec![Vec::new(); nodes.len()],
            as_dst: vec![Vec::new(); nodes.len()],
        };
        for (mi, m) in matchers.iter().enumerate() {
            let src = holders(&m.srcs, &|i| subnets[i].iter().any(|r| m.srcs.overlaps_prefix(r)));
            let internet = routers.iter().any(|&i| exit[i]) && m.dsts_is_internet();
            let dst = holders(&m.dsts, &|i| {
                subnets[i].iter().any(|r| m.dsts.overlaps_prefix(r)) || (exit[i] && internet)
            });
            for &i in &src {
                reach.as_src[i].push(mi);
            }
            for &i in &dst {
                reach.as_dst[i].push(mi);
            }
            reach.src_nodes.push(src);
            reach.dst_nodes.push(dst);
        }
        reach
    }
}

/// What a viewer receives about one node (itself or a peer).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteView {
    /// The node's Tailscale addresses as host prefixes.
    pub addresses: Vec<IpNet>,
    /// AllowedIPs: addresses plus the routes the viewer may use through this node.
    pub allowed_ips: Vec<IpNet>,
    /// PrimaryRoutes: the subnet routes this node is the elected router for.
    pub primary_routes: Vec<IpNet>,
    /// Peer capabilities (e.g. `suggest-exit-node` on exit nodes).
    pub cap_map: BTreeMap<String, Value>,
}

fn any_in(node: &Node, set: &IpSet) -> bool {
    node.addrs().into_iter().any(|a| set.contains(a))
}

impl CompiledPolicy {
    /// Whether some rule lets node `a` reach node `b`, tested rule by rule: the reference
    /// [`CompiledPolicy::peers`] is checked against.
    #[cfg(test)]
    pub(crate) fn can_access(&self, a: usize, b: usize) -> bool {
        let (Some(na), Some(nb)) = (self.tailnet().nodes.get(a), self.tailnet().nodes.get(b)) else {
            return false;
        };
        let (src_routes, dst_routes) = (self.subnet_routes(a), self.subnet_routes(b));
        let dst_exit = self.is_exit_node(b);
        self.matchers().iter().any(|m| {
            let src_ok = any_in(na, &m.srcs) || src_routes.iter().any(|r| m.srcs.overlaps_prefix(r));
            src_ok
                && m.only.is_none_or(|o| o == b)
                && (any_in(nb, &m.dsts)
                    || dst_routes.iter().any(|r| m.dsts.overlaps_prefix(r))
                    || (dst_exit && m.dsts_is_internet()))
        })
    }

    /// Whether `viewer` may use `route` (some rule lets it reach the route, lets the route reach
    /// it, or — for a subnet router — connects its own subnets with the route).
    pub fn can_access_route(&self, viewer: usize, route: &IpNet) -> bool {
        let Some(n) = self.tailnet().nodes.get(viewer) else { return false };
        let own = self.subnet_routes(viewer);
        // A router serving the same prefix needs the primary's route to fail over.
        if own.contains(route) {
            return true;
        }
        let exit = self.is_exit_node(viewer);
        let everything = [IpNet::V4(Default::default()), IpNet::V6(Default::default())];
        self.matchers().iter().any(|m| {
            (any_in(n, &m.srcs) && m.dsts.overlaps_prefix(route))
                || (m.srcs.overlaps_prefix(route) && any_in(n, &m.dsts))
                || (own.iter().any(|r| m.srcs.overlaps_prefix(r)) && m.dsts.overlaps_prefix(route))
                || (m.srcs.overlaps_prefix(route) && own.iter().any(|r| m.dsts.overlaps_prefix(r)))
                || (exit && m.srcs.overlaps_prefix(route) && everything.iter().any(|r| m.dsts.overlaps_prefix(r)))
        })
    }

    /// The nodes (indexes) in `node`'s netmap: every other node it may reach or that may
    /// reach it.
    pub fn peers(&self, node: usize) -> Vec<usize> {
        let count = self.tailnet().nodes.len();
        let (reach, matchers) = (self.reach(), self.matchers());
        let (Some(as_src), Some(as_dst)) = (reach.as_src.get(node), reach.as_dst.get(node)) else {
            return Vec::new();
        };
        let mut peer = vec![false; count];
        // Nodes this one reaches: the destinations of every matcher it is a source of.
        for &m in as_src {
            let only = matchers[m].only;
            for &b in &reach.dst_nodes[m] {
                if only.is_none_or(|o| o == b) {
                    peer[b] = true;
                }
            }
        }
        // Nodes that reach this one: the sources of every matcher it is a destination of.
        for &m in as_dst {
            if matchers[m].only.is_none_or(|o| o == node) {
                for &a in &reach.src_nodes[m] {
                    peer[a] = true;
                }
            }
        }
        peer[node] = false;
        (0..count).filter(|&i| peer[i]).collect()
    }

    /// The node's subnet routes for which it is the elected primary router: the earliest
    /// created node serving the prefix.
    pub fn primary_routes(&self, node: usize) -> Vec<IpNet> {
        self.primary_routes_for(None, node)
    }

    /// Which node serves `route` for `viewer`: a `via` grant covering the viewer steers it to
    /// the earliest created router carrying one of the grant's via tags; otherwise the
    /// tailnet-wide primary (earliest created router).
    fn primary_router(&self, viewer: Option<usize>, route: &IpNet) -> Option<usize> {
        let nodes = &self.tailnet().nodes;
        let serves = |i: usize| self.subnet_routes(i).contains(route);
        // Steering applies only to viewers that reach the route through via grants alone; a
        // plain grant to the route keeps the tailnet-wide primary.
        let plain_access = |v: &Node| {
            self.matchers().iter().any(|m| m.only.is_none() && any_in(v, &m.srcs) && m.dsts.overlaps_prefix(route))
        };
        if let Some(v) = viewer.and_then(|v| nodes.get(v))
            && !plain_access(v)
        {
            for via in self.via_grants() {
                if !any_in(v, &via.src) || !via.dsts.iter().any(|d| d.contains(route) || route.contains(d)) {
                    continue;
                }
                if let Some(i) = (0..nodes.len()).find(|&i| serves(i) && via.tags.iter().any(|t| nodes[i].tags.contains(t))) {
                    return Some(i);
                }
            }
        }
        (0..nodes.len()).find(|&i| serves(i))
    }

    fn primary_routes_for(&self, viewer: Option<usize>, node: usize) -> Vec<IpNet> {
        self.subnet_routes(node).iter().filter(|r| self.primary_router(viewer, r) == Some(node)).copied().collect()
    }

    /// What `viewer` receives about `node` (`viewer == node` for the self view).
    pub fn route_view(&self, viewer: usize, node: usize) -> RouteView {
        let Some(n) = self.tailnet().nodes.get(node) else {
            return RouteView::default();
        };
        // A viewer with `disable-ipv4` talks to everyone over IPv6 only.
        let v6_only = self.node_attrs_for(viewer).iter().any(|a| a == "disable-ipv4");
        let addresses: Vec<IpNet> =
            n.addrs().into_iter().filter(|a| !(v6_only && a.is_ipv4())).map(IpNet::from).collect();
        let mut allowed_ips = addresses.clone();
        let mut primary;
        if viewer == node {
            primary = self.primary_routes(node);
            allowed_ips.extend(self.subnet_routes(node).iter().copied());
        } else {
            primary = self.primary_routes_for(Some(viewer), node);
            primary.retain(|r| self.can_access_route(viewer, r));
            allowed_ips.extend(primary.iter().copied());
        }
        let mut cap_map = BTreeMap::new();
        if self.is_exit_node(node) {
            allowed_ips.push(IpNet::V4(Default::default()));
            allowed_ips.push(IpNet::V6(Default::default()));
            if viewer != node {
                cap_map.insert("suggest-exit-node".to_string(), Value::Null);
            }
        }
        RouteView { addresses, allowed_ips, primary_routes: primary, cap_map }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Node, Policy, Tailnet, User};

    use super::CompiledPolicy;

    fn node(id: u64, user: Option<u64>, tags: &[&str], routes: &[&str]) -> Node {
        let routes: Vec<ipnet::IpNet> = routes.iter().map(|r| r.parse().expect("test prefix")).collect();
        Node {
            id,
            name: format!("n{id}"),
            user,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ipv4: format!("100.64.0.{id}").parse().ok(),
            ipv6: format!("fd7a:115c:a1e0::{id:x}").parse().ok(),
            routable_ips: routes.clone(),
            approved_routes: routes,
        }
    }

    /// The indexed peer sets equal the pairwise definition, and the packet filters the
    /// merge-then-reduce definition, on a tailnet with subnet routers, an exit node, `via`
    /// grants, capability grants and `autogroup:self`.
    #[test]
    fn peers_and_filters_match_reference() {
        let tailnet = Tailnet {
            users: vec![
                User { id: 1, login: "odin@example.com".into(), admin: true, owner: true },
                User { id: 2, login: "thor@example.com".into(), admin: false, owner: false },
            ],
            nodes: vec![
                node(1, None, &["tag:router"], &["10.1.0.0/16", "0.0.0.0/0", "::/0"]),
                node(2, None, &["tag:router"], &["10.1.0.0/16"]),
                node(3, None, &["tag:server"], &[]),
                node(4, Some(1), &[], &[]),
                node(5, Some(1), &[], &["192.168.7.0/24"]),
                node(6, Some(2), &[], &[]),
                node(7, None, &["tag:server", "tag:router"], &["10.2.0.0/16"]),
            ],
            domains: vec!["example.com".into()],
        };
        let header = r#""tagOwners": {"tag:router": [], "tag:server": []}, "groups": {"group:a": ["odin@example.com"]},"#;
        let bodies = [
            r#""acls": [{"action": "accept", "src": ["group:a"], "dst": ["tag:server:22"]}]"#,
            r#""acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*", "10.1.2.0/24:443"]}]"#,
            r#""acls": [{"action": "accept", "src": ["thor@example.com"], "dst": ["autogroup:internet:*"]}]"#,
            r#""acls": [{"action": "accept", "src": ["192.168.7.0/24"], "dst": ["tag:server:*"]}]"#,
            r#""grants": [{"src": ["autogroup:member"], "dst": ["10.1.0.0/16"], "ip": ["*"], "via": ["tag:router"]}]"#,
            r#""grants": [{"src": ["*"], "dst": ["*"], "ip": ["*"]}]"#,
            r#""acls": []"#,
            r#""acls": [{"action": "accept", "src": ["group:a"], "dst": ["tag:server:22"]}, {"action": "accept", "src": ["thor@example.com"], "dst": ["tag:router:80"]}, {"action": "accept", "src": ["group:a"], "dst": ["tag:router:443", "10.2.0.0/16:*"]}]"#,
            r#""grants": [{"src": ["group:a"], "dst": ["tag:server", "10.1.0.0/16"], "app": {"tailscale.com/cap/drive": [{}]}}, {"src": ["*"], "dst": ["autogroup:self"], "ip": ["22"]}]"#,
        ];
        for body in bodies {
            let text = format!("{{ {header} {body} }}");
            let policy = Policy::parse(&text).unwrap_or_else(|e| panic!("{body}: {e}"));
            let compiled = CompiledPolicy::new(&policy, &tailnet);
            let count = tailnet.nodes.len();
            for a in 0..=count {
                let want: Vec<usize> = (0..count)
                    .filter(|&b| b != a && (compiled.can_access(a, b) || compiled.can_access(b, a)))
                    .collect();
                assert_eq!(compiled.peers(a), want, "{body}: node {a}");
                assert_eq!(compiled.filter_for(a), compiled.filter_for_reference(a), "{body}: node {a}");
            }
        }
    }
}
