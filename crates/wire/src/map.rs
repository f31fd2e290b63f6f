//! `/machine/map`: the request that opens a map stream or updates endpoints, and the messages streamed back.

use crate::{ChallengeKey, DerpMap, DiscoKey, DnsConfig, FilterRule, Hostinfo, MachineKey, NodeKey, gotime};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Go `tailcfg.MapRequest` (decode with [`crate::from_go_json`]).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct MapRequest {
    /// Client capability version.
    #[serde(rename = "version", default)]
    pub version: u16,
    /// `"zstd"` or empty.
    #[serde(rename = "compress", default)]
    pub compress: String,
    /// Client wants keep-alive messages.
    #[serde(rename = "keepalive", default)]
    pub keep_alive: bool,
    /// The node this request is for.
    #[serde(rename = "nodekey", default)]
    pub node_key: NodeKey,
    /// Current disco key.
    #[serde(rename = "discokey", default)]
    pub disco_key: DiscoKey,
    /// Long poll.
    #[serde(rename = "stream", default)]
    pub stream: bool,
    /// Current Hostinfo (tailscale-rs spells the key `HostInfo`; matching is case-insensitive).
    #[serde(rename = "hostinfo", default)]
    pub hostinfo: Option<Hostinfo>,
    /// Direct UDP endpoints.
    #[serde(rename = "endpoints", default)]
    pub endpoints: Option<Vec<String>>,
    /// Types of the endpoints (parallel array).
    #[serde(rename = "endpointtypes", default)]
    pub endpoint_types: Option<Vec<i64>>,
    /// The client does not need peers.
    #[serde(rename = "omitpeers", default)]
    pub omit_peers: bool,
    /// Informational flags.
    #[serde(rename = "debugflags", default)]
    pub debug_flags: Option<Vec<String>>,
}

impl MapRequest {
    /// True when the client asked for zstd-compressed messages.
    pub fn wants_zstd(&self) -> bool {
        self.compress == "zstd"
    }
}

/// Go `tailcfg.MapResponse`. Absent fields mean "unchanged" within a stream, so everything is optional.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MapResponse {
    /// Keep-alive only.
    #[serde(rename = "KeepAlive", skip_serializing_if = "std::ops::Not::not")]
    pub keep_alive: bool,
    /// Liveness probe or c2n request.
    #[serde(rename = "PingRequest", skip_serializing_if = "Option::is_none")]
    pub ping_request: Option<PingRequest>,
    /// The self node.
    #[serde(rename = "Node", skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// Relay map.
    #[serde(rename = "DERPMap", skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<DerpMap>,
    /// Complete peer list; must be non-empty when present (an empty list wipes tailscale-rs's peers).
    #[serde(rename = "Peers", skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<Node>>,
    /// Upserted peers.
    #[serde(rename = "PeersChanged", skip_serializing_if = "Vec::is_empty")]
    pub peers_changed: Vec<Node>,
    /// Removed peer IDs.
    #[serde(rename = "PeersRemoved", skip_serializing_if = "Vec::is_empty")]
    pub peers_removed: Vec<i64>,
    /// Light peer updates.
    #[serde(rename = "PeersChangedPatch", skip_serializing_if = "Vec::is_empty")]
    pub peers_changed_patch: Vec<PeerChange>,
    /// Peer online flags.
    #[serde(rename = "OnlineChange", skip_serializing_if = "BTreeMap::is_empty")]
    pub online_change: BTreeMap<i64, bool>,
    /// Peer last-seen updates.
    #[serde(rename = "PeerSeenChange", skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_seen_change: BTreeMap<i64, bool>,
    /// DNS settings.
    #[serde(rename = "DNSConfig", skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    /// Tailnet name.
    #[serde(rename = "Domain", skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Whether clients should report their services.
    #[serde(rename = "CollectServices", skip_serializing_if = "Option::is_none")]
    pub collect_services: Option<bool>,
    /// Packet filter for inbound traffic; `Some(vec![])` blocks everything.
    #[serde(rename = "PacketFilter", skip_serializing_if = "Option::is_none")]
    pub packet_filter: Option<Vec<FilterRule>>,
    /// Profiles of the users referenced by self and peers (cumulative on the client).
    #[serde(rename = "UserProfiles", skip_serializing_if = "Vec::is_empty")]
    pub user_profiles: Vec<UserProfile>,
    /// Tailscale SSH policy.
    #[serde(rename = "SSHPolicy", skip_serializing_if = "Option::is_none")]
    pub ssh_policy: Option<Value>,
    /// Server clock, for skew correction.
    #[serde(rename = "ControlTime", with = "gotime::optional", skip_serializing_if = "Option::is_none")]
    pub control_time: Option<OffsetDateTime>,
    /// Client debug settings.
    #[serde(rename = "Debug", skip_serializing_if = "Option::is_none")]
    pub debug: Option<DebugSettings>,
}

impl MapResponse {
    /// The keep-alive message; its JSON is exactly `{"KeepAlive":true}`, which Go clients special-case.
    pub fn keep_alive() -> MapResponse {
        MapResponse { keep_alive: true, ..Default::default() }
    }
}

/// Go `tailcfg.Debug` (the part we use).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DebugSettings {
    /// Stop uploading logs to Tailscale's log service.
    #[serde(rename = "DisableLogTail", skip_serializing_if = "std::ops::Not::not")]
    pub disable_log_tail: bool,
}

/// Go `tailcfg.PingRequest`. tailscale-rs requires `URLIsNoise` and `Types` to be present.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PingRequest {
    /// Where to report.
    #[serde(rename = "URL")]
    pub url: String,
    /// Report over the Noise channel.
    #[serde(rename = "URLIsNoise")]
    pub url_is_noise: bool,
    /// Log the ping.
    #[serde(rename = "Log", skip_serializing_if = "std::ops::Not::not")]
    pub log: bool,
    /// Ping types; empty means a HEAD request to `URL`.
    #[serde(rename = "Types")]
    pub types: String,
}

/// Go `tailcfg.Node`: the self node or a peer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Node {
    /// Node ID.
    #[serde(rename = "ID")]
    pub id: i64,
    /// String form of the ID.
    #[serde(rename = "StableID")]
    pub stable_id: String,
    /// FQDN with trailing dot.
    #[serde(rename = "Name")]
    pub name: String,
    /// Owner user ID.
    #[serde(rename = "User")]
    pub user: i64,
    /// WireGuard key.
    #[serde(rename = "Key")]
    pub key: NodeKey,
    /// Key expiry; `None` = never.
    #[serde(rename = "KeyExpiry", with = "gotime::zero_is_none")]
    pub key_expiry: Option<OffsetDateTime>,
    /// Machine key.
    #[serde(rename = "Machine")]
    pub machine: MachineKey,
    /// Disco key.
    #[serde(rename = "DiscoKey")]
    pub disco_key: DiscoKey,
    /// Exactly `[IPv4/32, IPv6/128]`.
    #[serde(rename = "Addresses")]
    pub addresses: Vec<IpNet>,
    /// Addresses plus routed prefixes.
    #[serde(rename = "AllowedIPs")]
    pub allowed_ips: Vec<IpNet>,
    /// Direct UDP endpoints.
    #[serde(rename = "Endpoints", skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Home DERP region.
    #[serde(rename = "HomeDERP", skip_serializing_if = "is_zero_u32")]
    pub home_derp: u32,
    /// Client description (Go spelling `Hostinfo`; never `HostInfo`).
    #[serde(rename = "Hostinfo")]
    pub hostinfo: Hostinfo,
    /// Creation time.
    #[serde(rename = "Created", with = "gotime::zero_is_none")]
    pub created: Option<OffsetDateTime>,
    /// Capability version of the node.
    #[serde(rename = "Cap", skip_serializing_if = "is_zero_u16")]
    pub cap: u16,
    /// ACL tags.
    #[serde(rename = "Tags", skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Subnet routes this node is primary for.
    #[serde(rename = "PrimaryRoutes", skip_serializing_if = "Vec::is_empty")]
    pub primary_routes: Vec<IpNet>,
    /// Last time online (only for offline peers).
    #[serde(rename = "LastSeen", with = "gotime::optional", skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<OffsetDateTime>,
    /// Online now.
    #[serde(rename = "Online", skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// Admitted to the tailnet.
    #[serde(rename = "MachineAuthorized")]
    pub machine_authorized: bool,
    /// Node attributes (self) or peer capabilities.
    #[serde(rename = "CapMap", skip_serializing_if = "BTreeMap::is_empty")]
    pub cap_map: BTreeMap<String, Vec<Value>>,
    /// Key expired.
    #[serde(rename = "Expired", skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

/// Go `tailcfg.PeerChange`: a light update of one peer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeerChange {
    /// The peer.
    #[serde(rename = "NodeID")]
    pub node_id: i64,
    /// New home region.
    #[serde(rename = "DERPRegion", skip_serializing_if = "Option::is_none")]
    pub derp_region: Option<u32>,
    /// New endpoints (replaces the list).
    #[serde(rename = "Endpoints", skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    /// New node key.
    #[serde(rename = "Key", skip_serializing_if = "Option::is_none")]
    pub key: Option<NodeKey>,
    /// New disco key.
    #[serde(rename = "DiscoKey", skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<DiscoKey>,
    /// Online flag.
    #[serde(rename = "Online", skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// Last seen time.
    #[serde(rename = "LastSeen", with = "gotime::optional", skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<OffsetDateTime>,
    /// New key expiry.
    #[serde(rename = "KeyExpiry", with = "gotime::optional", skip_serializing_if = "Option::is_none")]
    pub key_expiry: Option<OffsetDateTime>,
}

/// Go `tailcfg.UserProfile`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserProfile {
    /// User ID.
    #[serde(rename = "ID")]
    pub id: i64,
    /// Login name.
    #[serde(rename = "LoginName")]
    pub login_name: String,
    /// Display name.
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    /// Avatar URL.
    #[serde(rename = "ProfilePicURL", skip_serializing_if = "String::is_empty")]
    pub profile_pic_url: String,
}

/// Go `tailcfg.EarlyNoise`: sent inside the Noise channel before HTTP/2.
#[derive(Clone, Debug, Serialize)]
pub struct EarlyNoise {
    /// A fresh random challenge public key.
    #[serde(rename = "nodeKeyChallenge")]
    pub node_key_challenge: ChallengeKey,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_go_json;

    fn sample_node(id: i64) -> Node {
        Node {
            id,
            stable_id: id.to_string(),
            name: format!("n{id}.tailnet.example."),
            user: 1,
            key: NodeKey([id as u8; 32]),
            machine: MachineKey([1; 32]),
            disco_key: DiscoKey([2; 32]),
            addresses: vec!["100.64.0.1/32".parse().unwrap(), "fd7a:115c:a1e0::1/128".parse().unwrap()],
            allowed_ips: vec!["100.64.0.1/32".parse().unwrap(), "fd7a:115c:a1e0::1/128".parse().unwrap()],
            home_derp: 900,
            hostinfo: Hostinfo { hostname: "n".into(), os: "linux".into(), ..Default::default() },
            machine_authorized: true,
            cap_map: BTreeMap::from([("disable-captive-portal-detection".to_string(), vec![])]),
            ..Default::default()
        }
    }

    #[test]
    fn full_map_parses_with_tailscale_rs() {
        let resp = MapResponse {
            node: Some(sample_node(1)),
            peers: Some(vec![sample_node(2), sample_node(3)]),
            derp_map: Some(DerpMap::default()),
            dns_config: Some(DnsConfig::default()),
            domain: "tailnet.example".into(),
            collect_services: Some(false),
            packet_filter: Some(vec![FilterRule::allow_all()]),
            user_profiles: vec![UserProfile {
                id: 1,
                login_name: "a".into(),
                display_name: "a".into(),
                ..Default::default()
            }],
            control_time: Some(OffsetDateTime::now_utc()),
            debug: Some(DebugSettings { disable_log_tail: true }),
            ..Default::default()
        };
        let json = serde_json::to_string(&resp).unwrap();
        let parsed: ts_control_serde::MapResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.peers.as_ref().map(Vec::len), Some(2));
        assert!(!json.contains("null"), "tailscale-rs rejects null collections: {json}");
        assert!(json.contains("\"Hostinfo\""));
    }

    #[test]
    fn delta_parses_with_tailscale_rs() {
        let resp = MapResponse {
            peers_changed_patch: vec![PeerChange { node_id: 2, online: Some(false), ..Default::default() }],
            online_change: BTreeMap::from([(2, false)]),
            peers_removed: vec![3],
            ..Default::default()
        };
        let json = serde_json::to_string(&resp).unwrap();
        assert!(!json.contains("\"Peers\""));
        let parsed: ts_control_serde::MapResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.online_change.len(), 1);
    }

    #[test]
    fn keep_alive_is_exact() {
        assert_eq!(serde_json::to_string(&MapResponse::keep_alive()).unwrap(), r#"{"KeepAlive":true}"#);
    }

    #[test]
    fn parses_tailscale_rs_map_request() {
        let body = format!(
            r#"{{"Version":130,"NodeKey":"nodekey:{k}","DiscoKey":"discokey:{k}","Stream":true,"KeepAlive":true,
            "HostInfo":{{"Hostname":"rs1","NetInfo":{{"PreferredDerp":900}}}}}}"#,
            k = "22".repeat(32)
        );
        let r: MapRequest = from_go_json("MapRequest", body.as_bytes()).unwrap();
        assert!(r.stream && r.keep_alive && !r.wants_zstd());
        assert_eq!(r.hostinfo.unwrap().preferred_derp(), Some(900));
        assert!(r.endpoints.is_none());
    }
}
