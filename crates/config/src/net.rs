//! Parsers and checks for addresses, URLs and domain names. Each returns a message meant to follow `key: `.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Parses a listen address as Headscale (Go's `net.Listen`) writes it: `IP:PORT`, `[IPv6]:PORT`,
/// `localhost:PORT`, or `:PORT` for every interface (read as `0.0.0.0:PORT`). Host names other than
/// `localhost` are rejected because they would need resolving.
pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let s = text.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if s.parse::<IpAddr>().is_ok() {
        let hint = if s.contains(':') { format!("[{s}]:PORT") } else { format!("{s}:PORT") };
        return Err(format!("missing port in {s:?} (write {hint})"));
    }
    let (host, port) = if let Some(bracketed) = s.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(format!("{s:?} has an unclosed '['"));
        };
        match after.strip_prefix(':') {
            Some(port) => (host, port),
            None => return Err(format!("missing port in {s:?} (write [{host}]:PORT)")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => return Err(format!("missing port in {s:?} (expected HOST:PORT, e.g. 127.0.0.1:8080)")),
        }
    };
    if port.is_empty() {
        return Err(format!("missing port in {s:?}"));
    }
    let port: u16 = port.parse().map_err(|_| format!("invalid port {port:?} in {s:?} (expected 0-65535)"))?;
    let ip = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>().map_err(|_| {
            format!("{host:?} in {s:?} is not an IP address (listen addresses take an IP, `localhost` or nothing)")
        })?
    };
    Ok(SocketAddr::new(ip, port))
}

/// The parts of an `http://` or `https://` URL that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    pub https: bool,
    /// Without brackets for IPv6 literals.
    pub host: String,
    pub port: Option<u16>,
}

/// Parses an absolute `http://` or `https://` URL with a host.
pub(crate) fn parse_http_url(text: &str) -> Result<HttpUrl, String> {
    let bad = |why: &str| format!("{text:?} is not a valid http(s) URL: {why}");
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!("{text:?} must start with http:// or https://"));
    };
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        _ => return Err(format!("{text:?} must start with http:// or https://")),
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else { return Err(bad("unclosed '['")) };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("invalid IPv6 address in brackets"));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(bad("unexpected text after ']'")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    if !host.contains(':') && !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
        return Err(bad("invalid character in host"));
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| bad("invalid port"))?),
    };
    Ok(HttpUrl { https, host: host.to_ascii_lowercase(), port })
}

/// Checks a DNS name such as a MagicDNS base domain or a search domain: dot-separated labels of letters, digits,
/// `-` and `_`, no trailing dot.
pub(crate) fn check_domain(name: &str) -> Result<(), String> {
    if name.ends_with('.') {
        return Err(format!("{name:?} must not end with a dot"));
    }
    if name.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("{name:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("{name:?} has a label longer than 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("{name:?} is not a valid domain name (letters, digits, '-' and '.' only)"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{name:?} has a label starting or ending with '-'"));
        }
    }
    Ok(())
}

/// Checks a nameserver as Tailscale clients take it: an IP address, `IP:PORT`, or a `https://` (DoH),
/// `http://` or `tls://` (DoT) URL.
pub(crate) fn check_nameserver(ns: &str) -> Result<(), String> {
    if ns.parse::<IpAddr>().is_ok() || ns.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    if let Some((scheme, rest)) = ns.split_once("://")
        && matches!(scheme, "https" | "http" | "tls")
        && !rest.is_empty()
    {
        return Ok(());
    }
    Err(format!("{ns:?} is not a nameserver (expected an IP address or an https:// or tls:// URL)"))
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes only the bytes that would end or corrupt a sqlx SQLite path: `%`, `?` and `#`.
pub(crate) fn percent_encode_sqlite_path(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}
