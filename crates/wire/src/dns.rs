//! DNS configuration pushed to clients (Go `tailcfg.DNSConfig`).

use serde::Serialize;
use std::collections::BTreeMap;

/// DNS settings for a node. Empty fields are omitted; an empty config (`{}`) clears the client's settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DnsConfig {
    /// Global resolvers.
    #[serde(rename = "Resolvers", skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<DnsResolver>,
    /// Split DNS: suffix → resolvers (an empty list means "answer with the built-in resolver").
    #[serde(rename = "Routes", skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, Vec<DnsResolver>>,
    /// Search domains, no trailing dot. Includes the MagicDNS base domain when MagicDNS is on.
    #[serde(rename = "Domains", skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// MagicDNS on.
    #[serde(rename = "Proxied", skip_serializing_if = "std::ops::Not::not")]
    pub proxied: bool,
    /// Names for which `tailscale cert` may obtain certificates.
    #[serde(rename = "CertDomains", skip_serializing_if = "Vec::is_empty")]
    pub cert_domains: Vec<String>,
    /// Extra A/AAAA records answered by MagicDNS.
    #[serde(rename = "ExtraRecords", skip_serializing_if = "Vec::is_empty")]
    pub extra_records: Vec<DnsRecord>,
}

/// A resolver address: an IP, IP:port, `https://` DoH URL or `tls://` address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DnsResolver {
    /// The address.
    #[serde(rename = "Addr")]
    pub addr: String,
}

/// An extra DNS record served by MagicDNS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DnsRecord {
    /// Fully qualified name without trailing dot.
    #[serde(rename = "Name", alias = "name")]
    pub name: String,
    /// Record type; empty means A or AAAA by the value's family.
    #[serde(rename = "Type", alias = "type", default, skip_serializing_if = "String::is_empty")]
    pub record_type: String,
    /// The record value (an IP address for A/AAAA).
    #[serde(rename = "Value", alias = "value")]
    pub value: String,
}
