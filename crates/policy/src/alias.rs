//! Aliases (the names rules use for sets of nodes or addresses), port lists and protocols.

use ipnet::IpNet;
use tailwarden_wire::PortRange;

use crate::error::{PolicyError, PortError};

/// The autogroups Tailscale defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AutoGroup {
    /// Public internet through exit nodes (destinations only).
    Internet,
    /// Every user-owned (untagged) node.
    Member,
    /// Every tagged node.
    Tagged,
    /// The source user's own nodes (destinations only).
    SelfDevices,
    /// Every address, Tailscale or not (sources only).
    DangerAll,
    /// Non-root SSH users (SSH `users` only).
    NonRoot,
    /// Nodes of tailnet admins.
    Admin,
    /// Nodes of the tailnet owner.
    Owner,
}

impl AutoGroup {
    /// Parses the part after `autogroup:`.
    pub fn parse(name: &str) -> Option<AutoGroup> {
        Some(match name {
            "internet" => AutoGroup::Internet,
            "member" => AutoGroup::Member,
            "tagged" => AutoGroup::Tagged,
            "self" => AutoGroup::SelfDevices,
            "danger-all" => AutoGroup::DangerAll,
            "nonroot" => AutoGroup::NonRoot,
            "admin" => AutoGroup::Admin,
            "owner" => AutoGroup::Owner,
            _ => return None,
        })
    }

    /// The policy spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            AutoGroup::Internet => "autogroup:internet",
            AutoGroup::Member => "autogroup:member",
            AutoGroup::Tagged => "autogroup:tagged",
            AutoGroup::SelfDevices => "autogroup:self",
            AutoGroup::DangerAll => "autogroup:danger-all",
            AutoGroup::NonRoot => "autogroup:nonroot",
            AutoGroup::Admin => "autogroup:admin",
            AutoGroup::Owner => "autogroup:owner",
        }
    }
}

/// One alias as written in a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Alias {
    /// `*`.
    Wildcard,
    /// A user login such as `odin@example.com`.
    User(String),
    /// `user:*@<domain>`: every user whose login is in the domain.
    UserDomain(String),
    /// `group:<name>`.
    Group(String),
    /// `tag:<name>`.
    Tag(String),
    /// `autogroup:<name>`.
    AutoGroup(AutoGroup),
    /// A name from `hosts`.
    Host(String),
    /// A literal address or CIDR (masked).
    Prefix(IpNet),
}

impl std::fmt::Display for Alias {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Alias::Wildcard => f.write_str("*"),
            Alias::User(s) | Alias::Group(s) | Alias::Tag(s) | Alias::Host(s) => f.write_str(s),
            Alias::UserDomain(d) => write!(f, "user:*@{d}"),
            Alias::AutoGroup(g) => f.write_str(g.as_str()),
            Alias::Prefix(p) => write!(f, "{p}"),
        }
    }
}

/// Parses an address or CIDR into a masked prefix.
pub fn parse_prefix(text: &str) -> Option<IpNet> {
    if text.contains('/') {
        text.parse::<IpNet>().ok().map(|n| n.trunc())
    } else {
        text.parse::<std::net::IpAddr>().ok().map(IpNet::from)
    }
}

/// Parses one alias (surrounding whitespace is ignored, as Tailscale does).
pub fn parse_alias(raw: &str) -> Result<Alias, PolicyError> {
    let s = raw.trim();
    if let Some(p) = parse_prefix(s) {
        return Ok(Alias::Prefix(p));
    }
    if s == "*" {
        return Ok(Alias::Wildcard);
    }
    if let Some(user) = s.strip_prefix("user:") {
        if let Some(domain) = user.strip_prefix("*@") {
            return Ok(Alias::UserDomain(domain.to_string()));
        }
        if user.contains('@') {
            return Ok(Alias::User(user.to_string()));
        }
        return Err(PolicyError::InvalidAlias(s.to_string()));
    }
    if s.contains('@') {
        return Ok(Alias::User(s.to_string()));
    }
    if s.starts_with("group:") {
        return Ok(Alias::Group(s.to_string()));
    }
    if let Some(name) = s.strip_prefix("tag:") {
        if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            return Err(PolicyError::TagName(s.to_string()));
        }
        return Ok(Alias::Tag(s.to_string()));
    }
    if let Some(name) = s.strip_prefix("autogroup:") {
        return AutoGroup::parse(name)
            .map(Alias::AutoGroup)
            .ok_or_else(|| PolicyError::UnknownAutogroup(s.to_string()));
    }
    if !s.is_empty() && !s.contains(':') {
        return Ok(Alias::Host(s.to_string()));
    }
    Err(PolicyError::InvalidAlias(s.to_string()))
}

fn parse_port(text: &str) -> Result<u16, PortError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        // Go's strconv.Atoi also accepts a sign; Tailscale treats "-" as a range separator first.
        return Err(PortError::NotInteger);
    }
    text.parse::<u32>().ok().filter(|p| *p <= 65535).map(|p| p as u16).ok_or(PortError::OutOfRange)
}

/// Parses a port list: `*`, `22`, `80,443`, `1000-2000`.
pub fn parse_ports(text: &str) -> Result<Vec<PortRange>, PortError> {
    if text == "*" {
        return Ok(vec![PortRange::ANY]);
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        if part.contains('-') {
            let pieces: Vec<&str> = part.split('-').filter(|p| !p.is_empty()).collect();
            if pieces.len() != 2 {
                return Err(PortError::Format);
            }
            let first = parse_port(pieces[0])?;
            let last = parse_port(pieces[1])?;
            if first > last {
                return Err(PortError::Inverted);
            }
            out.push(PortRange { first, last });
        } else {
            let port = parse_port(part)?;
            if port == 0 {
                return Err(PortError::Zero);
            }
            out.push(PortRange { first: port, last: port });
        }
    }
    Ok(out)
}

/// Splits `alias:ports` at the last colon (IPv6 may be bracketed: `[::1]:80`).
pub fn parse_alias_with_ports(raw: &str) -> Result<(Alias, Vec<PortRange>), PolicyError> {
    let original = raw;
    let mut input = raw.trim().to_string();
    if let Some(rest) = input.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return Err(PolicyError::Brackets(original.to_string()));
        };
        let host = &rest[..close];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(PolicyError::Brackets(original.to_string()));
        }
        let tail = &rest[close + 1..];
        if !(tail.starts_with(':') || tail.starts_with('/')) {
            return Err(PolicyError::Brackets(original.to_string()));
        }
        input = format!("{host}{tail}");
    }
    let Some(colon) = input.rfind(':') else {
        return Err(PolicyError::MissingPort(original.to_string()));
    };
    if colon == 0 {
        return Err(PolicyError::LeadingColon(original.to_string()));
    }
    if colon == input.len() - 1 {
        return Err(PolicyError::TrailingColon(original.to_string()));
    }
    let (dest, ports) = (&input[..colon], &input[colon + 1..]);
    let ports_parsed = parse_ports(ports).map_err(|error| PolicyError::DstPorts {
        dst: original.to_string(),
        ports: ports.to_string(),
        error,
    })?;
    Ok((parse_alias(dest)?, ports_parsed))
}

/// An IP protocol selector: empty means Tailscale's default set (TCP, UDP, ICMPv4, ICMPv6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Protocol {
    /// IANA numbers; empty for the default set.
    pub numbers: Vec<u8>,
    /// Whether ports other than `*` make sense (TCP, UDP, SCTP and the default set).
    pub has_ports: bool,
    /// The spelling used, for errors.
    pub name: String,
}

const NAMES: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipv4", 4),
    ("ip-in-ip", 4),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("sctp", 132),
    ("fc", 133),
];

/// Parses a protocol name or number; `""` is the default set.
pub fn parse_protocol(raw: &str) -> Result<Protocol, PolicyError> {
    let lower = raw.to_ascii_lowercase();
    if lower.is_empty() {
        return Ok(Protocol { numbers: Vec::new(), has_ports: true, name: String::new() });
    }
    let number = if let Some((_, n)) = NAMES.iter().find(|(name, _)| *name == lower) {
        *n
    } else {
        if lower == "*" {
            return Err(PolicyError::ProtocolWildcard);
        }
        if !lower.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PolicyError::Protocol(raw.to_string()));
        }
        if lower.starts_with('0') {
            return Err(PolicyError::ProtocolLeadingZero(raw.to_string()));
        }
        match lower.parse::<u8>() {
            Ok(n) => n,
            Err(_) => return Err(PolicyError::ProtocolRange(raw.to_string())),
        }
    };
    Ok(Protocol { numbers: vec![number], has_ports: matches!(number, 6 | 17 | 132), name: lower })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        assert_eq!(parse_alias(" odin@example.com").unwrap(), Alias::User("odin@example.com".into()));
        assert_eq!(parse_alias("10.1.2.3/8").unwrap(), Alias::Prefix("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_alias("webserver").unwrap(), Alias::Host("webserver".into()));
        assert!(matches!(parse_alias("tag:1x"), Err(PolicyError::TagName(_))));
        assert!(matches!(parse_alias("autogroup:nope"), Err(PolicyError::UnknownAutogroup(_))));
    }

    #[test]
    fn destinations() {
        let (a, p) = parse_alias_with_ports("tag:server:22,80-81").unwrap();
        assert_eq!(a, Alias::Tag("tag:server".into()));
        assert_eq!(p, vec![PortRange { first: 22, last: 22 }, PortRange { first: 80, last: 81 }]);
        let (a, _) = parse_alias_with_ports("[fd7a::1]:80").unwrap();
        assert_eq!(a, Alias::Prefix("fd7a::1/128".parse().unwrap()));
        let e = parse_alias_with_ports("autogroup:self").unwrap_err();
        assert_eq!(e.to_string(), "dst=\"autogroup:self\": port range \"self\": invalid first integer");
        let e = parse_alias_with_ports("tag:a:0").unwrap_err();
        assert!(e.to_string().contains("first port must be >0"));
    }
}
