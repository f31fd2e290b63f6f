//! The policy's `tests` block: reachability assertions checked against the compiled filters.
//! A policy whose tests fail (or are malformed) is rejected with `test(s) failed`.

use serde_json::Value;
use tailwarden_wire::{FilterRule, PortRange};

use crate::alias::{Alias, AutoGroup, parse_alias, parse_alias_with_ports};
use crate::compile::CompiledPolicy;
use crate::error::PolicyError;
use crate::ipset::{IpSet, parse_pattern};
use crate::model::Policy;

/// One `tests` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyTest {
    /// Source alias, as written.
    pub src: String,
    /// Protocol name (`tcp`, `udp`, `sctp`) or empty for the default set.
    pub proto: String,
    /// Destinations (`alias:port`) that must be reachable.
    pub accept: Vec<String>,
    /// Destinations that must not be reachable.
    pub deny: Vec<String>,
}

fn str_list(v: &Value, path: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| PolicyError::Type { path: path.to_string(), expected: "an array of strings" })
            })
            .collect(),
        _ => Err(PolicyError::Type { path: path.to_string(), expected: "an array of strings" }),
    }
}

/// Parses the `tests` member.
pub fn parse_tests(v: &Value) -> Result<Vec<PolicyTest>, PolicyError> {
    let Some(list) = v.as_array() else {
        return if v.is_null() {
            Ok(Vec::new())
        } else {
            Err(PolicyError::Type { path: "tests".into(), expected: "an array" })
        };
    };
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let path = format!("tests[{i}]");
        let Some(obj) = t.as_object() else {
            return Err(PolicyError::Type { path, expected: "an object" });
        };
        let mut test = PolicyTest { src: String::new(), proto: String::new(), accept: Vec::new(), deny: Vec::new() };
        for (k, val) in obj {
            match k.to_ascii_lowercase().as_str() {
                "src" => {
                    test.src = val
                        .as_str()
                        .ok_or_else(|| PolicyError::Type { path: format!("{path}.src"), expected: "a string" })?
                        .trim()
                        .to_string()
                }
                "proto" => {
                    test.proto = val
                        .as_str()
                        .ok_or_else(|| PolicyError::Type { path: format!("{path}.proto"), expected: "a string" })?
                        .to_ascii_lowercase()
                }
                "accept" => test.accept = str_list(val, &format!("{path}.accept"))?,
                "deny" => test.deny = str_list(val, &format!("{path}.deny"))?,
                _ => return Err(PolicyError::UnknownField { path, field: k.clone() }),
            }
        }
        out.push(test);
    }
    Ok(out)
}

fn proto_numbers(proto: &str) -> Vec<u8> {
    match proto {
        "tcp" | "6" => vec![6],
        "udp" | "17" => vec![17],
        "sctp" | "132" => vec![132],
        _ => vec![6, 17, 1, 58],
    }
}

/// Why one test destination is malformed.
fn check_destination(policy: &Policy, dst: &str) -> Result<(Alias, PortRange), String> {
    let (alias, ports) = parse_alias_with_ports(dst).map_err(|e| e.to_string())?;
    if alias == Alias::AutoGroup(AutoGroup::Internet) {
        return Err("autogroup:internet not valid as a test destination".into());
    }
    if ports.len() != 1 || ports[0].first != ports[0].last {
        return Err("test destination port must be a single port".into());
    }
    let multi_host = |p: &ipnet::IpNet| p.prefix_len() < p.max_prefix_len();
    match &alias {
        Alias::Prefix(_) if dst.contains('/') => {
            return Err("test destination must be a single host, not a CIDR range".into());
        }
        Alias::Host(h) if policy.hosts.get(h).is_some_and(multi_host) => {
            return Err("test destination must be a single host, not a CIDR range".into());
        }
        _ => {}
    }
    Ok((alias, ports[0]))
}

fn rule_allows(rule: &FilterRule, src: &ipnet::IpNet, protos: &[u8], dst: &IpSet, port: PortRange) -> bool {
    let src_ok = rule.src_ips.iter().any(|s| parse_pattern(s).is_some_and(|set| set.overlaps_prefix(src)));
    let proto_ok = rule.ip_proto.is_empty() || rule.ip_proto.iter().any(|p| protos.contains(p));
    src_ok
        && proto_ok
        && rule.dst_ports.iter().any(|d| {
            d.ports.first <= port.first
                && port.last <= d.ports.last
                && parse_pattern(&d.ip).is_some_and(|set| dst.prefixes().iter().any(|p| set.overlaps_prefix(p)))
        })
}

impl CompiledPolicy {
    /// Runs the `tests` block; `Err(PolicyError::TestsFailed)` lists every failed assertion.
    pub fn run_tests(&self) -> Result<(), PolicyError> {
        let policy = self.policy();
        let tests = &policy.tests;
        let mut failures = Vec::new();
        for (i, t) in tests.iter().enumerate() {
            if t.accept.is_empty() && t.deny.is_empty() {
                failures.push(format!("test {i}: test entry must have at least one of \"accept\" or \"deny\""));
            }
            if !matches!(t.proto.as_str(), "" | "tcp" | "udp" | "sctp" | "6" | "17" | "132") {
                failures.push(format!("test {i}: test protocol must be tcp, udp, sctp, or empty: {:?}", t.proto));
            }
            for (kind, list) in [("accept", &t.accept), ("deny", &t.deny)] {
                for dst in list {
                    if let Err(e) = check_destination(policy, dst) {
                        failures.push(format!("test {i}, {kind} {dst:?}: {e}"));
                    }
                }
            }
        }
        if !failures.is_empty() {
            return Err(PolicyError::TestsFailed(failures));
        }
        let rules = self.all_rules();
        for t in tests {
            let src = match parse_alias(&t.src) {
                Ok(a) => self.resolve_alias(&a).unwrap_or_default(),
                Err(e) => {
                    failures.push(format!("{}: invalid source: {e}", t.src));
                    continue;
                }
            };
            if src.is_empty() {
                failures.push(format!("{}: source resolved to no IP addresses", t.src));
                continue;
            }
            let protos = proto_numbers(&t.proto);
            for (want, list) in [(true, &t.accept), (false, &t.deny)] {
                for dst in list {
                    let Ok((alias, port)) = check_destination(policy, dst) else { continue };
                    let dst_set = self.resolve_alias(&alias).unwrap_or_default();
                    if dst_set.is_empty() {
                        failures.push(format!("{} -> {dst}: destination resolved to no IP addresses", t.src));
                        continue;
                    }
                    let allowed =
                        src.prefixes().iter().all(|s| rules.iter().any(|r| rule_allows(r, s, &protos, &dst_set, port)));
                    if allowed != want {
                        let (w, g) = if want { ("ALLOWED", "DENIED") } else { ("DENIED", "ALLOWED") };
                        failures.push(format!("{} -> {dst}: expected {w}, got {g}", t.src));
                    }
                }
            }
        }
        if failures.is_empty() { Ok(()) } else { Err(PolicyError::TestsFailed(failures)) }
    }
}
