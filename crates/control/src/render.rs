//! Turning tailnet state into wire messages: nodes, user profiles, DNS configuration and full maps.
//! Pure functions of their inputs.

use crate::Settings;
use crate::tailnet::{NodeEntry, TAGGED_DEVICES_USER_ID};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use tailwarden_store::UserRecord;
use tailwarden_types::{NodeId, UserId};
use tailwarden_wire::{DebugSettings, DnsConfig, DnsResolver, MapResponse, Node, UserProfile};
use time::OffsetDateTime;

pub(crate) fn ms_to_time(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

pub(crate) fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The user ID a node shows: its owner, or the shared "tagged-devices" user for tagged nodes.
pub(crate) fn display_user(entry: &NodeEntry) -> i64 {
    if !entry.record.tags.is_empty() {
        return TAGGED_DEVICES_USER_ID;
    }
    entry.record.user_id.map_or(TAGGED_DEVICES_USER_ID, |u| u.0)
}

/// The node's fully qualified MagicDNS name, with trailing dot.
pub(crate) fn fqdn(given_name: &str, settings: &Settings) -> String {
    if settings.dns.base_domain.is_empty() {
        format!("{given_name}.")
    } else {
        format!("{given_name}.{}.", settings.dns.base_domain)
    }
}

/// Renders a node as its peers (or, with `is_self`, the node itself) see it. Of its subnet routes, only those it is
/// the primary router for (`primaries`, prefix → router) are in its `AllowedIPs` and `PrimaryRoutes`: with two
/// routers for one subnet, clients send to one of them. Exit routes are always in `AllowedIPs`.
pub(crate) fn node(
    entry: &NodeEntry,
    settings: &Settings,
    is_self: bool,
    now: OffsetDateTime,
    primaries: &BTreeMap<IpNet, NodeId>,
) -> Node {
    let r = &entry.record;
    let mut addresses: Vec<IpNet> = Vec::with_capacity(2);
    if let Some(v4) = r.ipv4 {
        addresses.push(IpNet::from(IpAddr::V4(v4)));
    }
    if let Some(v6) = r.ipv6 {
        addresses.push(IpNet::from(IpAddr::V6(v6)));
    }
    let mut allowed_ips = addresses.clone();
    let mut primary_routes = Vec::new();
    for net in entry.served_routes() {
        if net.prefix_len() == 0 {
            allowed_ips.push(net);
        } else if primaries.get(&net) == Some(&r.id) {
            allowed_ips.push(net);
            primary_routes.push(net);
        }
    }
    let key_expiry = r.expiry_ms.and_then(ms_to_time);
    let expired = key_expiry.is_some_and(|e| e <= now);
    let mut cap_map = BTreeMap::new();
    if is_self {
        if settings.disable_captive_portal_detection {
            cap_map.insert("disable-captive-portal-detection".to_string(), Vec::new());
        }
        if settings.randomize_client_port {
            cap_map.insert("randomize-client-port".to_string(), Vec::new());
        }
    }
    Node {
        id: r.id.0,
        stable_id: r.id.0.to_string(),
        name: fqdn(&r.given_name, settings),
        user: display_user(entry),
        key: entry.node_key,
        key_expiry,
        machine: entry.machine_key,
        disco_key: entry.disco_key,
        addresses,
        allowed_ips,
        endpoints: if is_self { Vec::new() } else { r.endpoints.clone() },
        home_derp: entry.hostinfo.preferred_derp().unwrap_or(0),
        hostinfo: entry.hostinfo.clone(),
        created: ms_to_time(r.created_ms),
        cap: entry.cap,
        tags: r.tags.clone(),
        primary_routes,
        last_seen: if is_self || entry.online { None } else { r.last_seen_ms.and_then(ms_to_time) },
        online: if is_self { None } else { Some(entry.online) },
        machine_authorized: true,
        cap_map,
        expired,
    }
}

/// The profile of a user, or of the synthetic "tagged-devices" user.
pub(crate) fn user_profile(id: i64, users: &BTreeMap<UserId, UserRecord>) -> UserProfile {
    match users.get(&UserId(id)) {
        Some(u) => UserProfile {
            id,
            login_name: clean(&u.name),
            display_name: clean(if u.display_name.is_empty() { &u.name } else { &u.display_name }),
            profile_pic_url: String::new(),
        },
        None => UserProfile {
            id,
            login_name: "tagged-devices".into(),
            display_name: "Tagged Devices".into(),
            profile_pic_url: String::new(),
        },
    }
}

/// tailscale-rs borrows these strings and fails on JSON escapes, so drop the characters that need them.
pub(crate) fn clean(s: &str) -> String {
    s.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect()
}

/// The DNS configuration every node receives.
pub(crate) fn dns_config(settings: &Settings) -> DnsConfig {
    let dns = &settings.dns;
    let resolvers = |addrs: &[String]| addrs.iter().map(|a| DnsResolver { addr: a.clone() }).collect::<Vec<_>>();
    let mut cfg = DnsConfig {
        resolvers: if dns.override_local_dns || !dns.global_nameservers.is_empty() {
            resolvers(&dns.global_nameservers)
        } else {
            Vec::new()
        },
        extra_records: dns.extra_records.get().to_vec(),
        ..Default::default()
    };
    for (domain, servers) in &dns.split_nameservers {
        cfg.routes.insert(domain.clone(), resolvers(servers));
    }
    if dns.magic_dns && !dns.base_domain.is_empty() {
        cfg.proxied = true;
        cfg.domains.push(dns.base_domain.clone());
        cfg.routes.entry(dns.base_domain.clone()).or_default();
    }
    for d in &dns.search_domains {
        if !cfg.domains.contains(d) {
            cfg.domains.push(d.clone());
        }
    }
    cfg
}

/// The complete first message of a map stream except its peers, which are spliced in already serialised
/// (`tailnet::FullMap`): the self node, the packet filter and SSH policy, DNS and DERP configuration, and the
/// profiles of the users the self node and its peers (`peer_users`) show.
pub(crate) fn full_map(
    me: Node,
    peer_users: impl IntoIterator<Item = i64>,
    grants: &crate::policy_view::NodeGrants,
    users: &BTreeMap<UserId, UserRecord>,
    settings: &Settings,
    now: OffsetDateTime,
) -> MapResponse {
    let mut profile_ids: BTreeSet<i64> = BTreeSet::from([me.user]);
    profile_ids.extend(peer_users);
    MapResponse {
        node: Some(me),
        derp_map: Some(settings.derp_map.get().as_ref().clone()),
        dns_config: Some(dns_config(settings)),
        domain: settings.dns.base_domain.clone(),
        collect_services: Some(false),
        packet_filter: Some(grants.filter.clone()),
        user_profiles: profile_ids.into_iter().map(|id| user_profile(id, users)).collect(),
        ssh_policy: grants.ssh.clone(),
        control_time: Some(now),
        debug: settings.disable_log_tail.then_some(DebugSettings { disable_log_tail: true }),
        ..Default::default()
    }
}
