//! Hostinfo: what a client says about itself, relayed to its peers inside `Node`.
//!
//! Input arrives with lower-cased keys (see `gojson`), output uses Go's spelling. Fields we don't model are
//! dropped when relaying; the raw JSON is kept by the store.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

macro_rules! go_struct {
    ($(#[$doc:meta])* pub struct $name:ident { $( $(#[$fdoc:meta])* $go:literal $lower:literal $field:ident : $ty:ty, )* }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $(
                $(#[$fdoc])*
                #[serde(rename(serialize = $go, deserialize = $lower), default, skip_serializing_if = "Skip::skip")]
                pub $field: $ty,
            )*
        }
    };
}

/// Decides which values Go's `omitempty` would leave out.
trait Skip {
    fn skip(&self) -> bool;
}
impl Skip for String {
    fn skip(&self) -> bool {
        self.is_empty()
    }
}
impl Skip for bool {
    fn skip(&self) -> bool {
        !*self
    }
}
impl Skip for i64 {
    fn skip(&self) -> bool {
        *self == 0
    }
}
impl<T> Skip for Vec<T> {
    fn skip(&self) -> bool {
        self.is_empty()
    }
}
impl<K, V> Skip for BTreeMap<K, V> {
    fn skip(&self) -> bool {
        self.is_empty()
    }
}
impl<T> Skip for Option<T> {
    fn skip(&self) -> bool {
        self.is_none()
    }
}

go_struct! {
    /// Go `tailcfg.Hostinfo` (the subset a control server uses or relays).
    pub struct Hostinfo {
        /// Client version.
        "IPNVersion" "ipnversion" ipn_version: String,
        /// Log IDs.
        "FrontendLogID" "frontendlogid" frontend_log_id: String,
        /// Log IDs.
        "BackendLogID" "backendlogid" backend_log_id: String,
        /// Operating system.
        "OS" "os" os: String,
        /// OS version.
        "OSVersion" "osversion" os_version: String,
        /// Running in a container (tri-state).
        "Container" "container" container: Option<bool>,
        /// Environment code (`k8s`, `kn`, …).
        "Env" "env" env: String,
        /// Linux distribution.
        "Distro" "distro" distro: String,
        /// Distribution version.
        "DistroVersion" "distroversion" distro_version: String,
        /// Distribution code name.
        "DistroCodeName" "distrocodename" distro_code_name: String,
        /// Embedding application (tsnet).
        "App" "app" app: String,
        /// Has a desktop (tri-state).
        "Desktop" "desktop" desktop: Option<bool>,
        /// Package type.
        "Package" "package" package: String,
        /// Device model.
        "DeviceModel" "devicemodel" device_model: String,
        /// The host name the client asks for; source of the node's given name.
        "Hostname" "hostname" hostname: String,
        /// Blocks incoming connections.
        "ShieldsUp" "shieldsup" shields_up: bool,
        /// Node is shared in.
        "ShareeNode" "shareenode" sharee_node: bool,
        /// Logging disabled on this client.
        "NoLogsNoSupport" "nologsnosupport" no_logs_no_support: bool,
        /// Funnel ingress configured.
        "WireIngress" "wireingress" wire_ingress: bool,
        /// Funnel ingress enabled.
        "IngressEnabled" "ingressenabled" ingress_enabled: bool,
        /// Client allows remote updates.
        "AllowsUpdate" "allowsupdate" allows_update: bool,
        /// Machine type (uname -m).
        "Machine" "machine" machine: String,
        /// Go architecture.
        "GoArch" "goarch" go_arch: String,
        /// Go architecture variant.
        "GoArchVar" "goarchvar" go_arch_var: String,
        /// Go version.
        "GoVersion" "goversion" go_version: String,
        /// Advertised subnet and exit routes.
        "RoutableIPs" "routableips" routable_ips: Vec<String>,
        /// Tags the client asks for.
        "RequestTags" "requesttags" request_tags: Vec<String>,
        /// Wake-on-LAN MACs.
        "WoLMACs" "wolmacs" wol_macs: Vec<String>,
        /// Services the node offers (peerapi ports matter to peers).
        "Services" "services" services: Vec<Service>,
        /// Network conditions, including the home DERP region.
        "NetInfo" "netinfo" net_info: Option<NetInfo>,
        /// SSH host keys; non-empty means the node runs Tailscale SSH.
        "sshHostKeys" "sshhostkeys" ssh_host_keys: Vec<String>,
        /// Cloud provider.
        "Cloud" "cloud" cloud: String,
        /// Userspace networking.
        "Userspace" "userspace" userspace: Option<bool>,
        /// Userspace subnet router.
        "UserspaceRouter" "userspacerouter" userspace_router: Option<bool>,
        /// App connector.
        "AppConnector" "appconnector" app_connector: Option<bool>,
        /// Hash of services.
        "ServicesHash" "serviceshash" services_hash: String,
        /// Physical location, as given by the client.
        "Location" "location" location: Option<Value>,
    }
}

go_struct! {
    /// A service offered by a node.
    pub struct Service {
        /// `tcp`, `udp`, `peerapi4`, `peerapi6`, `peerapi-dns-proxy`.
        "Proto" "proto" proto: String,
        /// Port number.
        "Port" "port" port: i64,
        /// Free text.
        "Description" "description" description: String,
    }
}

go_struct! {
    /// Go `tailcfg.NetInfo`.
    pub struct NetInfo {
        /// NAT mapping varies by destination (tri-state).
        "MappingVariesByDestIP" "mappingvariesbydestip" mapping_varies_by_dest_ip: Option<bool>,
        /// Hairpinning works (tri-state).
        "HairPinning" "hairpinning" hair_pinning: Option<bool>,
        /// IPv6 works.
        "WorkingIPv6" "workingipv6" working_ipv6: Option<bool>,
        /// OS has IPv6.
        "OSHasIPv6" "oshasipv6" os_has_ipv6: Option<bool>,
        /// UDP works.
        "WorkingUDP" "workingudp" working_udp: Option<bool>,
        /// ICMPv4 works.
        "WorkingICMPv4" "workingicmpv4" working_icmpv4: Option<bool>,
        /// A port mapping exists.
        "HavePortMap" "haveportmap" have_port_map: bool,
        /// UPnP available.
        "UPnP" "upnp" upnp: Option<bool>,
        /// NAT-PMP available.
        "PMP" "pmp" pmp: Option<bool>,
        /// PCP available.
        "PCP" "pcp" pcp: Option<bool>,
        /// Home DERP region (0 = unknown).
        "PreferredDERP" "preferredderp" preferred_derp: i64,
        /// Link type (`wired`, `wifi`, `mobile`).
        "LinkType" "linktype" link_type: String,
        /// Latency per region, keyed `<id>-v4`/`<id>-v6`, in seconds.
        "DERPLatency" "derplatency" derp_latency: BTreeMap<String, f64>,
        /// Firewall mode.
        "FirewallMode" "firewallmode" firewall_mode: String,
    }
}

impl Hostinfo {
    /// The home DERP region the client reported, if any.
    pub fn preferred_derp(&self) -> Option<u32> {
        let id = self.net_info.as_ref()?.preferred_derp;
        u32::try_from(id).ok().filter(|&id| id > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_go_json;

    #[test]
    fn reads_both_client_spellings_and_writes_go_spelling() {
        let rs = r#"{"Hostname":"rs1","Os":"linux","RoutableIps":["10.0.0.0/24"],"NetInfo":{"PreferredDerp":900,"DerpLatency":{"900-v4":0.01}}}"#;
        let go = r#"{"Hostname":"go1","OS":"linux","RoutableIPs":["10.0.0.0/24"],"NetInfo":{"PreferredDERP":900,"WorkingUDP":null}}"#;
        for body in [rs, go] {
            let h: Hostinfo = from_go_json("Hostinfo", body.as_bytes()).unwrap();
            assert_eq!(h.os, "linux");
            assert_eq!(h.routable_ips, vec!["10.0.0.0/24".to_string()]);
            assert_eq!(h.preferred_derp(), Some(900));
            let out = serde_json::to_value(&h).unwrap();
            assert_eq!(out["OS"], "linux");
            assert_eq!(out["NetInfo"]["PreferredDERP"], 900);
            assert!(out.get("ShieldsUp").is_none(), "omitempty fields must be absent");
        }
    }

    #[test]
    fn accepts_any_env_string() {
        let h: Hostinfo = from_go_json("Hostinfo", br#"{"Env":"k8s","App":"a\u0026b"}"#).unwrap();
        assert_eq!(h.env, "k8s");
        assert_eq!(h.app, "a&b");
    }
}
