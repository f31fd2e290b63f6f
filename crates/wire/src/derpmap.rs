//! The DERP map: relay regions and their nodes (Go `tailcfg.DERPMap`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// All relay regions a client may use. Also the format of external DERP map files and URLs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpMap {
    /// Regions keyed by region ID (a decimal string in JSON).
    #[serde(rename = "Regions", alias = "regions", default)]
    pub regions: BTreeMap<u32, DerpRegion>,
    /// Hint for servers that merge maps; copied along by clients.
    #[serde(rename = "omitDefaultRegions", alias = "OmitDefaultRegions", default, skip_serializing_if = "is_false")]
    pub omit_default_regions: bool,
}

/// One relay region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpRegion {
    /// Region ID; 900–999 are reserved for self-hosted regions.
    #[serde(rename = "RegionID", alias = "regionid", alias = "RegionId")]
    pub region_id: u32,
    /// Short code, e.g. `tw`.
    #[serde(rename = "RegionCode", alias = "regioncode", default)]
    pub region_code: String,
    /// Human-readable name.
    #[serde(rename = "RegionName", alias = "regionname", default)]
    pub region_name: String,
    /// Latitude for UI and home-region heuristics.
    #[serde(rename = "Latitude", alias = "latitude", default, skip_serializing_if = "is_zero_f64")]
    pub latitude: f64,
    /// Longitude.
    #[serde(rename = "Longitude", alias = "longitude", default, skip_serializing_if = "is_zero_f64")]
    pub longitude: f64,
    /// Never measure nor choose as home; only reach peers homed there.
    #[serde(rename = "NoMeasureNoHome", alias = "nomeasurenohome", default, skip_serializing_if = "is_false")]
    pub no_measure_no_home: bool,
    /// Relay servers in priority order.
    #[serde(rename = "Nodes", alias = "nodes", default)]
    pub nodes: Vec<DerpNode>,
}

/// One relay server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpNode {
    /// Unique label such as `900a`.
    #[serde(rename = "Name", alias = "name")]
    pub name: String,
    /// Region this node belongs to.
    #[serde(rename = "RegionID", alias = "regionid", alias = "RegionId")]
    pub region_id: u32,
    /// TLS SNI / HTTP host name.
    #[serde(rename = "HostName", alias = "hostname", alias = "Hostname")]
    pub host_name: String,
    /// Expected certificate name, if it differs from `HostName`.
    #[serde(rename = "CertName", alias = "certname", default, skip_serializing_if = "String::is_empty")]
    pub cert_name: String,
    /// Fixed IPv4 address, or `none`.
    #[serde(rename = "IPv4", alias = "ipv4", default, skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    /// Fixed IPv6 address, or `none`.
    #[serde(rename = "IPv6", alias = "ipv6", default, skip_serializing_if = "String::is_empty")]
    pub ipv6: String,
    /// STUN port; 0 means 3478, -1 disables STUN.
    #[serde(rename = "STUNPort", alias = "stunport", default, skip_serializing_if = "is_zero_i32")]
    pub stun_port: i32,
    /// Only a STUN server, no DERP.
    #[serde(rename = "STUNOnly", alias = "stunonly", default, skip_serializing_if = "is_false")]
    pub stun_only: bool,
    /// DERP (TLS) port; 0 means 443.
    #[serde(rename = "DERPPort", alias = "derpport", default, skip_serializing_if = "is_zero_i32")]
    pub derp_port: i32,
    /// Skip TLS verification (loopback tests with self-signed certificates).
    #[serde(rename = "InsecureForTests", alias = "insecurefortests", default, skip_serializing_if = "is_false")]
    pub insecure_for_tests: bool,
    /// Send STUN here instead of the node's address.
    #[serde(rename = "STUNTestIP", alias = "stuntestip", default, skip_serializing_if = "String::is_empty")]
    pub stun_test_ip: String,
    /// Node answers captive-portal checks on port 80.
    #[serde(rename = "CanPort80", alias = "canport80", default, skip_serializing_if = "is_false")]
    pub can_port80: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headscale_style_file_and_writes_go_names() {
        let yaml_like = r#"{"Regions":{"900":{"RegionID":900,"RegionCode":"tw","RegionName":"x",
            "Nodes":[{"Name":"900a","RegionID":900,"HostName":"127.0.0.1","IPv4":"127.0.0.1","IPv6":"none",
            "STUNPort":3478,"DERPPort":8443,"InsecureForTests":true}]}}}"#;
        let m: DerpMap = serde_json::from_str(yaml_like).unwrap();
        let node = &m.regions[&900].nodes[0];
        assert_eq!(node.derp_port, 8443);
        assert!(node.insecure_for_tests);
        let out = serde_json::to_value(&m).unwrap();
        assert_eq!(out["Regions"]["900"]["Nodes"][0]["STUNPort"], 3478);
        assert!(out.get("omitDefaultRegions").is_none());
    }
}
