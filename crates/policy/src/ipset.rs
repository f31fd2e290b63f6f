//! Sets of IP addresses kept as sorted, merged inclusive ranges, per address family.
//!
//! This is the value every alias resolves to. Rendering follows Tailscale's packet-filter
//! spelling: a single address is bare, a range that is exactly a CIDR is written as one, and
//! anything else is written `first-last`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A set of IPv4 and IPv6 addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpSet {
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
}

fn prefix_bounds(net: &IpNet) -> (bool, u128, u128) {
    match net {
        IpNet::V4(n) => {
            let first = u32::from(n.network()) as u128;
            let last = u32::from(n.broadcast()) as u128;
            (false, first, last)
        }
        IpNet::V6(n) => {
            let first = u128::from(n.network());
            let last = u128::from(n.broadcast());
            (true, first, last)
        }
    }
}

fn addr_value(addr: IpAddr) -> (bool, u128) {
    match addr {
        IpAddr::V4(a) => (false, u32::from(a) as u128),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

fn value_addr(v6: bool, v: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        // Invariant: IPv4 ranges only ever hold values below 2^32.
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

fn insert(ranges: &mut Vec<(u128, u128)>, first: u128, last: u128) {
    // Sets are mostly built in ascending order (nodes by address), so appending at or after
    // the last range is the common case; anything else re-sorts and re-merges.
    match ranges.last_mut() {
        None => {
            ranges.push((first, last));
            return;
        }
        Some(prev) if first > prev.1.saturating_add(1) => {
            ranges.push((first, last));
            return;
        }
        Some(prev) if first >= prev.0 => {
            prev.1 = prev.1.max(last);
            return;
        }
        Some(_) => {}
    }
    ranges.push((first, last));
    normalize(ranges);
}

/// Adds sorted, disjoint `theirs` to sorted, disjoint `mine` in one pass.
fn union(mine: &mut Vec<(u128, u128)>, theirs: &[(u128, u128)]) {
    let (Some(&last), Some(&(first, _))) = (mine.last(), theirs.first()) else {
        mine.extend_from_slice(theirs);
        return;
    };
    if first > last.1.saturating_add(1) {
        mine.extend_from_slice(theirs);
        return;
    }
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(mine.len() + theirs.len());
    let (mut i, mut j) = (0, 0);
    while i < mine.len() || j < theirs.len() {
        let (a, b) = if j == theirs.len() || (i < mine.len() && mine[i] <= theirs[j]) {
            i += 1;
            mine[i - 1]
        } else {
            j += 1;
            theirs[j - 1]
        };
        match out.last_mut() {
            Some(prev) if a <= prev.1.saturating_add(1) => prev.1 = prev.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *mine = out;
}

/// Sorts ranges and merges the overlapping or adjacent ones.
fn normalize(ranges: &mut Vec<(u128, u128)>) {
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges.iter() {
        if let Some(prev) = merged.last_mut()
            && (a <= prev.1 || a == prev.1.saturating_add(1))
        {
            if b > prev.1 {
                prev.1 = b;
            }
            continue;
        }
        merged.push((a, b));
    }
    *ranges = merged;
}

fn remove(ranges: &mut Vec<(u128, u128)>, first: u128, last: u128) {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for &(a, b) in ranges.iter() {
        if b < first || a > last {
            out.push((a, b));
            continue;
        }
        if a < first {
            out.push((a, first - 1));
        }
        if b > last {
            out.push((last + 1, b));
        }
    }
    *ranges = out;
}

/// Largest CIDR block starting at `a` and ending at or before `b`, as a prefix length.
fn largest_block(a: u128, b: u128, bits: u32) -> u32 {
    let mut len = bits;
    while len > 0 {
        let size_bits = bits - (len - 1);
        let mask = if size_bits >= 128 { u128::MAX } else { (1u128 << size_bits) - 1 };
        if a & mask != 0 {
            break;
        }
        let end = a.checked_add(mask);
        match end {
            Some(e) if e <= b => len -= 1,
            _ => break,
        }
    }
    len
}

fn net_from(v6: bool, v: u128, len: u32) -> IpNet {
    match value_addr(v6, v) {
        IpAddr::V4(a) => IpNet::V4(ipnet::Ipv4Net::new_assert(a, len as u8)),
        IpAddr::V6(a) => IpNet::V6(ipnet::Ipv6Net::new_assert(a, len as u8)),
    }
}

/// One string of a set's text form, with what it stands for.
#[derive(Clone, Debug)]
pub(crate) enum Piece {
    /// A single address.
    Addr(IpAddr),
    /// A CIDR or `first-last` range.
    Span(IpSet),
}

/// One range in Tailscale's spelling: a bare address, a CIDR when it is exactly one, or
/// `first-last`.
fn range_text(v6: bool, a: u128, b: u128) -> String {
    if a == b {
        return value_addr(v6, a).to_string();
    }
    let bits = if v6 { 128 } else { 32 };
    let len = largest_block(a, b, bits);
    let size_bits = bits - len;
    let last = if size_bits >= 128 { u128::MAX } else { a + ((1u128 << size_bits) - 1) };
    if last == b { net_from(v6, a, len).to_string() } else { format!("{}-{}", value_addr(v6, a), value_addr(v6, b)) }
}

impl IpSet {
    /// The empty set.
    pub fn new() -> IpSet {
        IpSet::default()
    }

    /// The set of these addresses, sorted once instead of merged one by one.
    pub(crate) fn from_addrs(addrs: impl IntoIterator<Item = IpAddr>) -> IpSet {
        let mut set = IpSet::new();
        for a in addrs {
            let (v6, v) = addr_value(a);
            set.family(v6).push((v, v));
        }
        normalize(&mut set.v4);
        normalize(&mut set.v6);
        set
    }

    fn family(&mut self, v6: bool) -> &mut Vec<(u128, u128)> {
        if v6 { &mut self.v6 } else { &mut self.v4 }
    }

    /// Adds one address.
    pub fn add_addr(&mut self, addr: IpAddr) {
        let (v6, v) = addr_value(addr);
        insert(self.family(v6), v, v);
    }

    /// Adds every address of a prefix (host bits are ignored).
    pub fn add_prefix(&mut self, net: &IpNet) {
        let (v6, a, b) = prefix_bounds(net);
        insert(self.family(v6), a, b);
    }

    /// Adds an inclusive range; both ends must be of the same family (otherwise nothing is added).
    pub fn add_range(&mut self, first: IpAddr, last: IpAddr) {
        let (f6, a) = addr_value(first);
        let (l6, b) = addr_value(last);
        if f6 == l6 && a <= b {
            insert(self.family(f6), a, b);
        }
    }

    /// Removes one address.
    pub fn remove_addr(&mut self, addr: IpAddr) {
        let (v6, v) = addr_value(addr);
        remove(self.family(v6), v, v);
    }

    /// Removes every address of a prefix.
    pub fn remove_prefix(&mut self, net: &IpNet) {
        let (v6, a, b) = prefix_bounds(net);
        remove(self.family(v6), a, b);
    }

    /// Adds every address of another set.
    pub fn extend(&mut self, other: &IpSet) {
        for (mine, theirs) in [(&mut self.v4, &other.v4), (&mut self.v6, &other.v6)] {
            match theirs.as_slice() {
                [] => {}
                [(a, b)] => insert(mine, *a, *b),
                _ => union(mine, theirs),
            }
        }
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (v6, v) = addr_value(addr);
        let ranges = if v6 { &self.v6 } else { &self.v4 };
        // Ranges are sorted and disjoint: the only candidate is the last one starting at or
        // before `v`.
        let i = ranges.partition_point(|&(a, _)| a <= v);
        i > 0 && v <= ranges[i - 1].1
    }

    /// Whether any address of `net` is in the set.
    pub fn overlaps_prefix(&self, net: &IpNet) -> bool {
        let (v6, first, last) = prefix_bounds(net);
        let ranges = if v6 { &self.v6 } else { &self.v4 };
        // Sorted and disjoint, so range ends ascend too: the first range ending at or after
        // `first` is the only one that can overlap.
        let i = ranges.partition_point(|&(_, b)| b < first);
        ranges.get(i).is_some_and(|&(a, _)| a <= last)
    }

    /// Whether every address of this set is in `other`.
    pub fn is_subset_of(&self, other: &IpSet) -> bool {
        // Both lists are sorted and disjoint: the only range that can hold (a, b) is the last
        // one starting at or before a.
        let sub = |mine: &[(u128, u128)], theirs: &[(u128, u128)]| {
            mine.iter().all(|&(a, b)| {
                let i = theirs.partition_point(|&(c, _)| c <= a);
                i > 0 && b <= theirs[i - 1].1
            })
        };
        sub(&self.v4, &other.v4) && sub(&self.v6, &other.v6)
    }

    /// The inclusive ranges, IPv4 first, each family ascending.
    pub fn ranges(&self) -> Vec<(IpAddr, IpAddr)> {
        let v4 = self.v4.iter().map(|&(a, b)| (value_addr(false, a), value_addr(false, b)));
        let v6 = self.v6.iter().map(|&(a, b)| (value_addr(true, a), value_addr(true, b)));
        v4.chain(v6).collect()
    }

    /// The minimal list of CIDR prefixes covering exactly this set, IPv4 first.
    pub fn prefixes(&self) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (v6, ranges, bits) in [(false, &self.v4, 32u32), (true, &self.v6, 128u32)] {
            for &(a, b) in ranges {
                let mut cur = a;
                loop {
                    let len = largest_block(cur, b, bits);
                    out.push(net_from(v6, cur, len));
                    let size_bits = bits - len;
                    let last = if size_bits >= 128 { u128::MAX } else { cur + ((1u128 << size_bits) - 1) };
                    if last >= b {
                        break;
                    }
                    cur = last + 1;
                }
            }
        }
        out
    }

    /// Tailscale's text form: one string per range (bare address, CIDR, or `first-last`).
    pub fn strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (v6, ranges) in [(false, &self.v4), (true, &self.v6)] {
            out.extend(ranges.iter().map(|&(a, b)| range_text(v6, a, b)));
        }
        out
    }

    /// Like [`IpSet::strings`], but a range made only of addresses in `singles` is written as
    /// those addresses one by one: Tailscale lists node addresses individually even when they
    /// happen to be adjacent, and only writes spans for prefixes and ranges it was given.
    pub fn strings_keeping(&self, singles: &IpSet) -> Vec<String> {
        self.strings_keeping_by(singles, &|a| a.to_string())
    }

    /// [`IpSet::strings_keeping`] with single addresses written by `text` (a cache of node
    /// addresses' spellings: formatting IPv6 dominates compiling large rules).
    pub fn strings_keeping_by(&self, singles: &IpSet, text: &dyn Fn(IpAddr) -> String) -> Vec<String> {
        let mut out = Vec::new();
        self.each_piece_keeping(singles, |v6, a, b| {
            out.push(if a == b { text(value_addr(v6, a)) } else { range_text(v6, a, b) });
        });
        out
    }

    /// [`IpSet::strings_keeping_by`], each string with the addresses it stands for.
    pub(crate) fn pieces_keeping_by(&self, singles: &IpSet, text: &dyn Fn(IpAddr) -> String) -> Vec<(String, Piece)> {
        let mut out = Vec::new();
        self.each_piece_keeping(singles, |v6, a, b| {
            if a == b {
                let addr = value_addr(v6, a);
                out.push((text(addr), Piece::Addr(addr)));
            } else {
                let mut span = IpSet::new();
                insert(span.family(v6), a, b);
                out.push((range_text(v6, a, b), Piece::Span(span)));
            }
        });
        out
    }

    /// Calls `each(v6, first, last)` for every string [`IpSet::strings_keeping`] writes: single
    /// addresses as `first == last`, anything else as one span.
    fn each_piece_keeping(&self, singles: &IpSet, mut each: impl FnMut(bool, u128, u128)) {
        for (v6, ranges) in [(false, &self.v4), (true, &self.v6)] {
            let theirs = if v6 { &singles.v6 } else { &singles.v4 };
            for &(a, b) in ranges {
                let i = theirs.partition_point(|&(c, _)| c <= a);
                let within = i > 0 && b <= theirs[i - 1].1;
                if a != b && b - a < 4096 && within {
                    for v in a..=b {
                        each(v6, v, v);
                    }
                } else {
                    each(v6, a, b);
                }
            }
        }
    }

    /// Like [`IpSet::prefixes`], with ranges made only of addresses in `singles` split into
    /// one host prefix per address (see [`IpSet::strings_keeping`]).
    pub fn prefixes_keeping(&self, singles: &IpSet) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (v6, ranges, bits) in [(false, &self.v4, 32u32), (true, &self.v6, 128u32)] {
            for &(a, b) in ranges {
                let mut one = IpSet::new();
                insert(if v6 { &mut one.v6 } else { &mut one.v4 }, a, b);
                if a != b && b - a < 4096 && one.is_subset_of(singles) {
                    out.extend((a..=b).map(|v| net_from(v6, v, bits)));
                } else {
                    out.extend(one.prefixes());
                }
            }
        }
        out
    }

    /// Every range written `first-last` (Tailscale's spelling of `autogroup:internet`).
    pub fn range_strings(&self) -> Vec<String> {
        self.ranges().into_iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect()
    }
}

/// Parses a packet-filter address pattern: `*`, an address, a CIDR or a `first-last` range.
pub fn parse_pattern(text: &str) -> Option<IpSet> {
    let mut set = IpSet::new();
    if text == "*" {
        set.add_prefix(&"0.0.0.0/0".parse().ok()?);
        set.add_prefix(&"::/0".parse().ok()?);
        return Some(set);
    }
    if let Some((a, b)) = text.split_once('-') {
        set.add_range(a.parse().ok()?, b.parse().ok()?);
        return (!set.is_empty()).then_some(set);
    }
    if text.contains('/') {
        set.add_prefix(&text.parse().ok()?);
        return Some(set);
    }
    set.add_addr(text.parse().ok()?);
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> IpSet {
        let mut s = IpSet::new();
        for i in items {
            s.extend(&parse_pattern(i).unwrap());
        }
        s
    }

    #[test]
    fn strings_use_tailscale_forms() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["100.64.0.1"], &["100.64.0.1"]),
            (&["100.64.0.2", "100.64.0.3"], &["100.64.0.2/31"]),
            (&["100.64.0.1", "100.64.0.2"], &["100.64.0.1-100.64.0.2"]),
            (&["10.0.0.0/8", "10.33.0.0/16"], &["10.0.0.0/8"]),
            (&["fd7a:115c:a1e0::1", "100.64.0.1"], &["100.64.0.1", "fd7a:115c:a1e0::1"]),
        ];
        for (input, want) in cases {
            assert_eq!(set(input).strings(), want.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn prefixes_cover_ranges() {
        let s = set(&["100.64.0.0-100.115.91.255"]);
        let p = s.prefixes();
        let mut back = IpSet::new();
        for n in &p {
            back.add_prefix(n);
        }
        assert_eq!(back, s);
        assert_eq!(p[0].to_string(), "100.64.0.0/11");
        let all = set(&["::/0"]);
        assert_eq!(all.prefixes()[0].to_string(), "::/0");
    }

    #[test]
    fn remove_splits() {
        let mut s = set(&["100.64.0.0/10"]);
        s.remove_prefix(&"100.115.92.0/23".parse().unwrap());
        assert_eq!(s.strings(), vec!["100.64.0.0-100.115.91.255", "100.115.94.0-100.127.255.255"]);
    }
}
