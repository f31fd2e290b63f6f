//! Evaluating a node's packet filter the way the receiving client does, to answer "can A reach B on port P, and
//! which rule allows it?" for administrators. Pure.

use ipnet::IpNet;
use std::net::IpAddr;
use tailwarden_wire::FilterRule;

/// IP protocol numbers a rule without `IPProto` covers (TCP, UDP, ICMPv4, ICMPv6), as in Tailscale.
const DEFAULT_PROTOS: [u8; 4] = [6, 17, 1, 58];

/// Whether `pattern` (`*`, an address, a prefix or an `a-b` range) contains `ip`.
fn pattern_contains(pattern: &str, ip: IpAddr) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some((a, b)) = pattern.split_once('-')
        && let (Ok(a), Ok(b)) = (a.parse::<IpAddr>(), b.parse::<IpAddr>())
    {
        return a.is_ipv4() == ip.is_ipv4() && a <= ip && ip <= b;
    }
    if let Ok(net) = pattern.parse::<IpNet>() {
        return net.contains(&ip);
    }
    pattern.parse::<IpAddr>().is_ok_and(|a| a == ip)
}

/// The first rule of `filter` (the receiver's packet filter) that admits a connection from `src` to `dst:port`
/// over IP protocol `proto`, if any.
pub fn allowing_rule(filter: &[FilterRule], src: IpAddr, dst: IpAddr, port: u16, proto: u8) -> Option<&FilterRule> {
    filter.iter().find(|rule| {
        let proto_ok =
            if rule.ip_proto.is_empty() { DEFAULT_PROTOS.contains(&proto) } else { rule.ip_proto.contains(&proto) };
        proto_ok
            && rule.src_ips.iter().any(|s| pattern_contains(s, src))
            && rule
                .dst_ports
                .iter()
                .any(|d| pattern_contains(&d.ip, dst) && d.ports.first <= port && port <= d.ports.last)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailwarden_wire::{NetPortRange, PortRange};

    fn rule(src: &[&str], dst: &str, ports: (u16, u16), proto: &[u8]) -> FilterRule {
        FilterRule {
            src_ips: src.iter().map(|s| s.to_string()).collect(),
            dst_ports: vec![NetPortRange { ip: dst.into(), ports: PortRange { first: ports.0, last: ports.1 } }],
            ip_proto: proto.to_vec(),
            cap_grant: Vec::new(),
        }
    }

    #[test]
    fn table() {
        let a: IpAddr = "100.64.0.1".parse().unwrap();
        let b: IpAddr = "100.64.0.2".parse().unwrap();
        let b6: IpAddr = "fd7a:115c:a1e0::2".parse().unwrap();
        let filter = vec![
            rule(&["100.64.0.1/32"], "100.64.0.2/32", (80, 80), &[]),
            rule(&["100.64.0.0-100.64.0.9"], "*", (22, 22), &[6]),
            rule(&["*"], "fd7a:115c:a1e0::2", (443, 443), &[]),
        ];
        let cases: [(IpAddr, IpAddr, u16, u8, Option<usize>); 8] = [
            (a, b, 80, 6, Some(0)),
            (a, b, 81, 6, None),
            (a, b, 80, 132, None),
            (b, a, 80, 6, None),
            (b, a, 22, 6, Some(1)),
            (b, a, 22, 17, None),
            (a, b6, 443, 17, Some(2)),
            ("100.64.0.10".parse().unwrap(), a, 22, 6, None),
        ];
        for (src, dst, port, proto, want) in cases {
            let got =
                allowing_rule(&filter, src, dst, port, proto).map(|r| filter.iter().position(|x| x == r).unwrap());
            assert_eq!(got, want, "{src} -> {dst}:{port}/{proto}");
        }
        assert!(allowing_rule(&[], a, b, 80, 6).is_none(), "an empty filter admits nothing");
        assert!(allowing_rule(&[FilterRule::allow_all()], a, b6, 1, 58).is_some());
    }
}
