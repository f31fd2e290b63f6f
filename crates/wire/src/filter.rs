//! Packet filter rules (Go `tailcfg.FilterRule`), evaluated by the receiving node.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One rule: either network access (`DstPorts`, optional `IPProto`) or application capabilities (`CapGrant`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FilterRule {
    /// Source IPs, CIDRs, ranges, `*`, or `cap:<attr>`. Shared: the same source list often
    /// appears in many nodes' filters (it is the rule's merge key), so nodes share one copy.
    #[serde(rename = "SrcIPs")]
    pub src_ips: std::sync::Arc<[String]>,
    /// Allowed destinations; empty for capability rules.
    #[serde(rename = "DstPorts", skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<NetPortRange>,
    /// IP protocol numbers; empty means TCP, UDP, ICMPv4 and ICMPv6.
    #[serde(rename = "IPProto", skip_serializing_if = "Vec::is_empty")]
    pub ip_proto: Vec<u8>,
    /// Application capability grants; empty for network rules.
    #[serde(rename = "CapGrant", skip_serializing_if = "Vec::is_empty")]
    pub cap_grant: Vec<CapGrant>,
}

impl FilterRule {
    /// The rule that allows every source to reach every port: the default when no policy is configured.
    pub fn allow_all() -> FilterRule {
        FilterRule {
            src_ips: vec!["*".to_string()].into(),
            dst_ports: vec![NetPortRange { ip: "*".into(), ports: PortRange::ANY }],
            ip_proto: Vec::new(),
            cap_grant: Vec::new(),
        }
    }
}

/// A destination: address pattern plus port range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetPortRange {
    /// IP, CIDR, range or `*`.
    #[serde(rename = "IP")]
    pub ip: String,
    /// Inclusive port range.
    #[serde(rename = "Ports")]
    pub ports: PortRange,
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortRange {
    /// First port.
    #[serde(rename = "First")]
    pub first: u16,
    /// Last port.
    #[serde(rename = "Last")]
    pub last: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange { first: 0, last: 65535 };
}

/// Capabilities granted to sources for some destinations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CapGrant {
    /// Destination prefixes.
    #[serde(rename = "Dsts")]
    pub dsts: Vec<String>,
    /// Capability name → JSON values.
    #[serde(rename = "CapMap")]
    pub cap_map: BTreeMap<String, Vec<Value>>,
}
