//! Netmap facts derived from a compiled policy: which nodes see each other, which routes each
//! peer carries, and the peer capabilities the control plane adds.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::Value;

use crate::compile::{CompiledPolicy, NodeRoutes, Target, the_internet};
use crate::ipset::{IpSet, parse_pattern};
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
    pub(crate) fn new(srcs: IpSet, dsts: IpSet, only: Option<usize>) -> Matcher {
        Matcher { srcs, dsts, only }
    }

    pub(crate) fn from_rule(rule: &tailwarden_wire::FilterRule, only: Option<usize>) -> Matcher {
        let mut srcs = IpSet::new();
        for s in rule.src_ips.iter() {
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

/// Where a matcher row came from: a shared rule of a grant (by rule position) or a per-node
/// expansion (`autogroup:self`, `via`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `grants[g].rules[r]`.
    Shared(usize, usize),
    /// A rule generated for particular nodes.
    PerNode,
}

/// One indexed matcher: the nodes its sources and destinations hold.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) matcher: Matcher,
    pub(crate) origin: Origin,
    /// The nodes its sources hold (addresses or overlapping subnet routes).
    pub(crate) src_nodes: RowNodes,
    /// The nodes its destinations hold (addresses, overlapping subnet routes, or exit nodes when
    /// the destinations cover the internet).
    pub(crate) dst_nodes: RowNodes,
}

/// A row's nodes, ascending, and — once the list is long enough that one bit per node of the
/// tailnet takes at most eight times the list's room — the same as a bitmap, which peer sets
/// are built from a word at a time (much faster than setting the bits one by one).
#[derive(Clone, Debug, Default)]
pub(crate) struct RowNodes {
    list: Vec<usize>,
    bits: Vec<u64>,
}

impl RowNodes {
    fn new(list: Vec<usize>, nodes: usize) -> RowNodes {
        let mut row = RowNodes { list, bits: Vec::new() };
        row.index_if_dense(nodes);
        row
    }

    fn index_if_dense(&mut self, nodes: usize) {
        if !self.bits.is_empty() || self.list.len() * 8 * 64 < nodes {
            return;
        }
        for &n in &self.list {
            set_bit(&mut self.bits, n);
        }
    }

    fn insert(&mut self, node: usize, nodes: usize) {
        if let Err(at) = self.list.binary_search(&node) {
            self.list.insert(at, node);
            if self.bits.is_empty() {
                self.index_if_dense(nodes);
            } else {
                set_bit(&mut self.bits, node);
            }
        }
    }

    fn remove(&mut self, node: usize) {
        if let Ok(at) = self.list.binary_search(&node) {
            self.list.remove(at);
            if let Some(w) = self.bits.get_mut(node / 64) {
                *w &= !(1u64 << (node % 64));
            }
        }
    }
}

impl std::ops::Deref for RowNodes {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        &self.list
    }
}

fn set_bit(words: &mut Vec<u64>, node: usize) {
    if node / 64 >= words.len() {
        words.resize(node / 64 + 1, 0);
    }
    words[node / 64] |= 1u64 << (node % 64);
}

/// What deciding "which nodes does this set hold" needs: nodes by address, and the routers,
/// which are matched by their routes too (there are few of them).
pub(crate) struct Holders<'a> {
    pub(crate) by_addr: &'a BTreeMap<std::net::IpAddr, usize>,
    pub(crate) routers: &'a [usize],
    pub(crate) routes: &'a [NodeRoutes],
    /// How many node slots the tailnet has.
    pub(crate) nodes: usize,
}

impl Holders<'_> {
    fn subnets(&self, i: usize) -> &[IpNet] {
        self.routes.get(i).map(|r| r.subnets.as_slice()).unwrap_or(&[])
    }

    fn exit(&self, i: usize) -> bool {
        self.routes.get(i).is_some_and(|r| r.exit)
    }

    fn of(&self, set: &IpSet, extra: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let mut out = Vec::new();
        for (lo, hi) in set.ranges() {
            out.extend(self.by_addr.range(lo..=hi).map(|(_, i)| *i));
        }
        out.extend(self.routers.iter().copied().filter(|&i| extra(i)));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// [`Holders::of`] for a rule side whose node aliases already name their nodes: only the
    /// addresses named as such are looked up.
    fn of_target(&self, target: &Target, extra: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let mut out = target.nodes.clone();
        for (lo, hi) in target.by_address.ranges() {
            out.extend(self.by_addr.range(lo..=hi).map(|(_, i)| *i));
        }
        out.extend(self.routers.iter().copied().filter(|&i| extra(i)));
        if out.len() > target.nodes.len() {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// The row of a rule going from `src` to `dst`.
    pub(crate) fn row_between(&self, src: &Target, dst: &Target, origin: Origin) -> Row {
        let src_nodes = self.of_target(src, &|i| self.subnets(i).iter().any(|r| src.set.overlaps_prefix(r)));
        let matcher = Matcher::new(src.set.clone(), dst.set.clone(), None);
        let internet = self.routers.iter().any(|&i| self.exit(i)) && matcher.dsts_is_internet();
        let dst_nodes = self.of_target(dst, &|i| {
            self.subnets(i).iter().any(|r| dst.set.overlaps_prefix(r)) || (self.exit(i) && internet)
        });
        Row {
            matcher,
            origin,
            src_nodes: RowNodes::new(src_nodes, self.nodes),
            dst_nodes: RowNodes::new(dst_nodes, self.nodes),
        }
    }

    pub(crate) fn row(&self, matcher: Matcher, origin: Origin) -> Row {
        let src_nodes = self.of(&matcher.srcs, &|i| self.subnets(i).iter().any(|r| matcher.srcs.overlaps_prefix(r)));
        let internet = self.routers.iter().any(|&i| self.exit(i)) && matcher.dsts_is_internet();
        let dst_nodes = self.of(&matcher.dsts, &|i| {
            self.subnets(i).iter().any(|r| matcher.dsts.overlaps_prefix(r)) || (self.exit(i) && internet)
        });
        Row {
            matcher,
            origin,
            src_nodes: RowNodes::new(src_nodes, self.nodes),
            dst_nodes: RowNodes::new(dst_nodes, self.nodes),
        }
    }
}

/// Every matcher with the nodes it holds, and the same inverted per node, so a peer set is read
/// off the rows a node appears in instead of testing every pair. Rows live in a slab so that a
/// grant recompiled after a node change replaces only its own rows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reach {
    rows: Vec<Option<Row>>,
    free: Vec<usize>,
    /// Per node: the rows whose sources hold it.
    as_src: Vec<Vec<usize>>,
    /// Per node: the rows whose destinations hold it.
    as_dst: Vec<Vec<usize>>,
}

impl Reach {
    /// Makes room for `count` nodes.
    pub(crate) fn grow(&mut self, count: usize) {
        if self.as_src.len() < count {
            self.as_src.resize(count, Vec::new());
            self.as_dst.resize(count, Vec::new());
        }
    }

    /// Indexes a matcher; returns its row id.
    pub(crate) fn insert(&mut self, holders: &Holders<'_>, matcher: Matcher, origin: Origin) -> usize {
        self.insert_row(holders.row(matcher, origin))
    }

    /// Indexes a row; returns its id.
    pub(crate) fn insert_row(&mut self, row: Row) -> usize {
        let id = self.free.pop().unwrap_or_else(|| {
            self.rows.push(None);
            self.rows.len() - 1
        });
        for &i in row.src_nodes.iter() {
            self.as_src[i].push(id);
        }
        for &i in row.dst_nodes.iter() {
            self.as_dst[i].push(id);
        }
        self.rows[id] = Some(row);
        id
    }

    /// Drops a row; returns it.
    pub(crate) fn remove(&mut self, id: usize) -> Option<Row> {
        let row = self.rows.get_mut(id)?.take()?;
        for &i in row.src_nodes.iter() {
            self.as_src[i].retain(|r| *r != id);
        }
        for &i in row.dst_nodes.iter() {
            self.as_dst[i].retain(|r| *r != id);
        }
        self.free.push(id);
        Some(row)
    }

    pub(crate) fn row(&self, id: usize) -> Option<&Row> {
        self.rows.get(id).and_then(Option::as_ref)
    }

    /// Every live row.
    pub(crate) fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().flatten()
    }

    /// The rows whose destinations hold `node`.
    pub(crate) fn rows_reaching(&self, node: usize) -> &[usize] {
        self.as_dst.get(node).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Takes `node` out of every row.
    pub(crate) fn detach(&mut self, node: usize) {
        for id in std::mem::take(&mut self.as_src[node]) {
            if let Some(Some(row)) = self.rows.get_mut(id) {
                row.src_nodes.remove(node);
            }
        }
        for id in std::mem::take(&mut self.as_dst[node]) {
            if let Some(Some(row)) = self.rows.get_mut(id) {
                row.dst_nodes.remove(node);
            }
        }
    }

    /// Adds `node` (not a router) to row `id` wherever one of its addresses falls in the row's
    /// sources or destinations.
    pub(crate) fn attach(&mut self, id: usize, node: usize, addrs: &[std::net::IpAddr]) {
        let Some(Some(row)) = self.rows.get_mut(id) else { return };
        if addrs.iter().any(|a| row.matcher.srcs.contains(*a)) && row.src_nodes.binary_search(&node).is_err() {
            row.src_nodes.insert(node, self.as_src.len());
            self.as_src[node].push(id);
        }
        if addrs.iter().any(|a| row.matcher.dsts.contains(*a)) && row.dst_nodes.binary_search(&node).is_err() {
            row.dst_nodes.insert(node, self.as_src.len());
            self.as_dst[node].push(id);
        }
    }

    /// The nodes `node` shares a row with, in either direction (honouring `via` rows' router).
    ///
    /// Few candidates are sorted; many (rules naming most of the tailnet make the lists long
    /// and overlapping) are collected into a bitmap over the nodes and read off in order.
    pub(crate) fn peers(&self, node: usize) -> Vec<usize> {
        let mut lists: Vec<&RowNodes> = Vec::new();
        let mut routers: Vec<usize> = Vec::new();
        for &id in self.as_src.get(node).into_iter().flatten() {
            let Some(row) = self.row(id) else { continue };
            match row.matcher.only {
                None => lists.push(&row.dst_nodes),
                Some(o) => {
                    if row.dst_nodes.binary_search(&o).is_ok() {
                        routers.push(o);
                    }
                }
            }
        }
        for &id in self.as_dst.get(node).into_iter().flatten() {
            let Some(row) = self.row(id) else { continue };
            if row.matcher.only.is_none_or(|o| o == node) {
                lists.push(&row.src_nodes);
            }
        }
        let candidates: usize = routers.len() + lists.iter().map(|l| l.len()).sum::<usize>();
        // A bitmap costs a pass over one word per 64 nodes; sorting costs a few steps per candidate.
        if candidates * 16 < self.as_src.len() / 64 {
            let mut out = routers;
            for l in lists {
                out.extend_from_slice(l);
            }
            out.sort_unstable();
            out.dedup();
            out.retain(|&p| p != node);
            return out;
        }
        let mut seen = NodeBits::new(self.as_src.len());
        for o in routers {
            seen.insert(o);
        }
        for l in lists {
            seen.insert_all(l);
        }
        seen.remove(node);
        seen.into_sorted()
    }
}

/// A set of node indexes as one bit per node.
struct NodeBits {
    words: Vec<u64>,
}

impl NodeBits {
    fn new(nodes: usize) -> NodeBits {
        NodeBits { words: vec![0; nodes.div_ceil(64)] }
    }

    fn insert(&mut self, node: usize) {
        set_bit(&mut self.words, node);
    }

    fn insert_all(&mut self, nodes: &RowNodes) {
        if nodes.bits.is_empty() {
            for &n in nodes.iter() {
                self.insert(n);
            }
            return;
        }
        if self.words.len() < nodes.bits.len() {
            self.words.resize(nodes.bits.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&nodes.bits) {
            *mine |= theirs;
        }
    }

    fn remove(&mut self, node: usize) {
        if let Some(w) = self.words.get_mut(node / 64) {
            *w &= !(1u64 << (node % 64));
        }
    }

    fn into_sorted(self) -> Vec<usize> {
        // Baseline x86-64 counts bits in software: skip the (in large tailnets, most) empty words.
        let count = self.words.iter().filter(|w| **w != 0).map(|w| w.count_ones() as usize).sum();
        let mut out = Vec::with_capacity(count);
        for (w, &word) in self.words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                out.push(w * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
        out
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
        self.matchers().any(|m| {
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
        self.matchers().any(|m| {
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
        self.reach().peers(node)
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
        let plain_access =
            |v: &Node| self.matchers().any(|m| m.only.is_none() && any_in(v, &m.srcs) && m.dsts.overlaps_prefix(route));
        if let Some(v) = viewer.and_then(|v| nodes.get(v))
            && !plain_access(v)
        {
            for via in self.via_grants() {
                if !any_in(v, &via.src) || !via.dsts.iter().any(|d| d.contains(route) || route.contains(d)) {
                    continue;
                }
                if let Some(i) =
                    (0..nodes.len()).find(|&i| serves(i) && via.tags.iter().any(|t| nodes[i].tags.contains(t)))
                {
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
    use std::collections::BTreeSet;

    use crate::ipset::IpSet;
    use crate::{Node, Policy, Tailnet, User};

    use super::{CompiledPolicy, Matcher, Origin, Reach, Row, RowNodes};

    /// Peer sets read off rows of every size — few candidates (sorted), sparse lists and dense
    /// row bitmaps (collected in a bitmap), `via` rows — equal the union of the rows, before and
    /// after a node is detached.
    #[test]
    fn peers_union_rows_of_every_size() {
        const NODES: usize = 5000;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut reach = Reach::default();
        reach.grow(NODES);
        let mut rows: Vec<(Vec<usize>, Vec<usize>, Option<usize>)> = Vec::new();
        for r in 0..120 {
            let size = |r: usize| [1, 2, 40, 300, 4000][r % 5];
            // Long rows hold only the first half of the nodes, so the rest see few candidates.
            let mut list = |len: usize| -> Vec<usize> {
                let among = if len > 100 { NODES / 2 } else { NODES };
                let set: BTreeSet<usize> = (0..len).map(|_| next(among)).collect();
                set.into_iter().collect()
            };
            let (src, dst) = (list(size(r)), list(size(r / 5)));
            let only = (r % 17 == 0).then(|| dst[0]);
            let row = Row {
                matcher: Matcher::new(IpSet::new(), IpSet::new(), only),
                origin: Origin::PerNode,
                src_nodes: RowNodes::new(src.clone(), NODES),
                dst_nodes: RowNodes::new(dst.clone(), NODES),
            };
            reach.insert_row(row);
            rows.push((src, dst, only));
        }
        let want = |rows: &[(Vec<usize>, Vec<usize>, Option<usize>)], node: usize| -> Vec<usize> {
            let mut out = BTreeSet::new();
            for (src, dst, only) in rows {
                let (in_src, in_dst) = (src.binary_search(&node).is_ok(), dst.binary_search(&node).is_ok());
                match only {
                    None if in_src => out.extend(dst),
                    Some(o) if in_src && dst.binary_search(o).is_ok() => {
                        out.insert(*o);
                    }
                    _ => {}
                }
                if in_dst && only.is_none_or(|o| o == node) {
                    out.extend(src);
                }
            }
            out.remove(&node);
            out.into_iter().collect()
        };
        let mut sample: Vec<usize> = (0..200).map(|_| next(NODES)).chain([0, NODES - 1]).collect();
        sample.extend(
            rows.iter()
                .filter(|(src, dst, _)| src.len() <= 2 && dst.len() <= 2)
                .flat_map(|(src, dst, _)| src.iter().chain(dst)),
        );
        for &n in &sample {
            assert_eq!(reach.peers(n), want(&rows, n), "node {n}");
        }
        let gone = rows.iter().max_by_key(|(src, _, _)| src.len()).map(|(src, _, _)| src[7]).expect("rows");
        reach.detach(gone);
        for (src, dst, _) in &mut rows {
            src.retain(|&n| n != gone);
            dst.retain(|&n| n != gone);
        }
        for &n in sample.iter().chain([&gone]) {
            assert_eq!(reach.peers(n), want(&rows, n), "after detach, node {n}");
        }
    }

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
        let header =
            r#""tagOwners": {"tag:router": [], "tag:server": []}, "groups": {"group:a": ["odin@example.com"]},"#;
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
