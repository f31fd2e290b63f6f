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
    fn can_access(&self, a: usize, b: usize) -> bool {
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
        (0..self.tailnet().nodes.len())
            .filter(|&other| other != node && (self.can_access(node, other) || self.can_access(other, node)))
            .collect()
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
