//! The policy document: parsed from HuJSON into typed rules, before validation.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::{Map, Value};
use tailwarden_wire::PortRange;

use crate::alias::{Alias, Protocol, parse_alias, parse_alias_with_ports, parse_ports, parse_prefix, parse_protocol};
use crate::error::PolicyError;

/// A legacy `acls` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    /// `proto` (default set when absent).
    pub proto: Protocol,
    /// `src`.
    pub src: Vec<Alias>,
    /// `dst`, each with its ports.
    pub dst: Vec<(Alias, Vec<PortRange>)>,
}

/// One entry of a grant's `ip` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpSpec {
    /// The protocol.
    pub proto: Protocol,
    /// The ports.
    pub ports: Vec<PortRange>,
}

/// A `grants` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// `src`.
    pub src: Vec<Alias>,
    /// `dst`.
    pub dst: Vec<Alias>,
    /// `ip`: network access.
    pub ip: Vec<IpSpec>,
    /// `app`: capability name → values.
    pub app: BTreeMap<String, Vec<Value>>,
    /// `via`: router tags steering the traffic, as written.
    pub via: Vec<String>,
}

/// `autoApprovers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoApprovers {
    /// Subnet prefix → who may advertise routes inside it.
    pub routes: Vec<(IpNet, Vec<Alias>)>,
    /// Who may advertise exit routes.
    pub exit_node: Vec<Alias>,
}

/// A parsed policy document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// `groups`: group name → user logins.
    pub groups: BTreeMap<String, Vec<String>>,
    /// `hosts`: name → prefix.
    pub hosts: BTreeMap<String, IpNet>,
    /// `tagOwners`: tag → owners as written.
    pub tag_owners: BTreeMap<String, Vec<String>>,
    /// `acls`, in order.
    pub acls: Vec<Acl>,
    /// `grants`, in order.
    pub grants: Vec<Grant>,
    /// `autoApprovers`.
    pub auto_approvers: AutoApprovers,
    /// `tests`: reachability assertions.
    pub tests: Vec<crate::tests_block::PolicyTest>,
    /// `nodeAttrs`.
    pub node_attrs: Vec<crate::nodeattrs::NodeAttr>,
    /// `randomizeClientPort`.
    pub randomize_client_port: bool,
    /// `ssh` rules.
    pub ssh: Vec<crate::ssh::SshPolicyRule>,
    /// `sshTests`.
    pub ssh_tests: Vec<crate::ssh::SshTest>,
    /// Whether the document has an `acls` or `grants` member at all (without either, everything is allowed).
    pub has_rules: bool,
}

fn type_err(path: &str, expected: &'static str) -> PolicyError {
    PolicyError::Type { path: path.to_string(), expected }
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, PolicyError> {
    v.as_object().ok_or_else(|| type_err(path, "an object"))
}

fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, PolicyError> {
    v.as_array().ok_or_else(|| type_err(path, "an array"))
}

fn strings(v: &Value, path: &str) -> Result<Vec<String>, PolicyError> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    as_array(v, path)?
        .iter()
        .map(|s| s.as_str().map(str::to_string).ok_or_else(|| type_err(path, "an array of strings")))
        .collect()
}

fn aliases(v: &Value, path: &str) -> Result<Vec<Alias>, PolicyError> {
    strings(v, path)?.iter().map(|s| parse_alias(s)).collect()
}

fn parse_acl(v: &Value, path: &str) -> Result<Acl, PolicyError> {
    let obj = as_object(v, path)?;
    let mut acl = Acl { proto: parse_protocol("")?, src: Vec::new(), dst: Vec::new() };
    for (key, value) in obj {
        match key.to_ascii_lowercase().as_str() {
            "action" => {
                let action = value.as_str().ok_or_else(|| type_err(&format!("{path}.action"), "a string"))?;
                if action != "accept" {
                    return Err(PolicyError::AclAction(action.to_string()));
                }
            }
            "proto" => {
                let proto = value.as_str().ok_or_else(|| type_err(&format!("{path}.proto"), "a string"))?;
                acl.proto = parse_protocol(proto)?;
            }
            "src" | "users" => acl.src = aliases(value, &format!("{path}.src"))?,
            "dst" | "ports" => {
                acl.dst = strings(value, &format!("{path}.dst"))?
                    .iter()
                    .map(|d| parse_alias_with_ports(d))
                    .collect::<Result<_, _>>()?
            }
            k if k.starts_with('#') => {}
            _ => return Err(PolicyError::UnknownField { path: path.to_string(), field: key.clone() }),
        }
    }
    Ok(acl)
}

fn parse_ip_spec(text: &str) -> Result<IpSpec, PolicyError> {
    if text == "*" {
        return Ok(IpSpec { proto: parse_protocol("")?, ports: vec![PortRange::ANY] });
    }
    let port_err = |ports: &str| {
        let ports = ports.to_string();
        move |error| PolicyError::IpPorts { ports, error }
    };
    if !text.contains(':') {
        let ports = parse_ports(text).map_err(port_err(text))?;
        return Ok(IpSpec { proto: parse_protocol("")?, ports });
    }
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 2 {
        return Err(PolicyError::IpFormat(text.to_string()));
    }
    let proto = parse_protocol(parts[0])?;
    let ports = parse_ports(parts[1]).map_err(port_err(parts[1]))?;
    Ok(IpSpec { proto, ports })
}

fn parse_grant(v: &Value, path: &str) -> Result<Grant, PolicyError> {
    let obj = as_object(v, path)?;
    let mut grant = Grant { src: Vec::new(), dst: Vec::new(), ip: Vec::new(), app: BTreeMap::new(), via: Vec::new() };
    for (key, value) in obj {
        match key.to_ascii_lowercase().as_str() {
            "src" => grant.src = aliases(value, &format!("{path}.src"))?,
            "dst" => grant.dst = aliases(value, &format!("{path}.dst"))?,
            "ip" => {
                grant.ip =
                    strings(value, &format!("{path}.ip"))?.iter().map(|s| parse_ip_spec(s)).collect::<Result<_, _>>()?
            }
            "app" => {
                if value.is_null() {
                    continue;
                }
                for (cap, values) in as_object(value, &format!("{path}.app"))? {
                    let list = match values {
                        Value::Array(a) => a.clone(),
                        Value::Null => Vec::new(),
                        other => vec![other.clone()],
                    };
                    grant.app.insert(cap.clone(), list);
                }
            }
            "via" => {
                for via in strings(value, &format!("{path}.via"))? {
                    let via = via.trim().to_string();
                    match parse_alias(&via) {
                        Ok(Alias::Tag(t)) => grant.via.push(t),
                        _ => return Err(PolicyError::ViaNotTag(via)),
                    }
                }
            }
            k if k.starts_with('#') => {}
            _ => return Err(PolicyError::UnknownField { path: path.to_string(), field: key.clone() }),
        }
    }
    Ok(grant)
}

fn parse_groups(v: &Value) -> Result<BTreeMap<String, Vec<String>>, PolicyError> {
    let mut out = BTreeMap::new();
    let obj = as_object(v, "groups")?;
    for name in obj.keys() {
        if !name.starts_with("group:") {
            return Err(PolicyError::GroupName(name.clone()));
        }
    }
    let mut names: Vec<&String> = obj.keys().collect();
    names.sort();
    for name in names.into_iter().rev() {
        let members = &obj[name.as_str()];
        let list = match members {
            Value::Array(a) => a,
            _ => return Err(type_err(&format!("groups[{name:?}]"), "an array of users")),
        };
        let mut users = Vec::new();
        for m in list {
            let Some(m) = m.as_str() else {
                return Err(type_err(&format!("groups[{name:?}]"), "an array of strings"));
            };
            if m.starts_with("group:") {
                return Err(PolicyError::GroupRecursive { group: name.clone(), member: m.to_string() });
            }
            users.push(m.to_string());
        }
        out.insert(name.clone(), users);
    }
    for (name, users) in &out {
        for u in users {
            if !u.contains('@') {
                return Err(PolicyError::GroupMember { group: name.clone(), member: u.clone() });
            }
        }
    }
    Ok(out)
}

fn parse_hosts(v: &Value) -> Result<BTreeMap<String, IpNet>, PolicyError> {
    let mut out = BTreeMap::new();
    for (name, value) in as_object(v, "hosts")? {
        if name.contains('@') || name.contains(':') || name.is_empty() {
            return Err(PolicyError::HostName(name.clone()));
        }
        let text = value.as_str().ok_or_else(|| type_err(&format!("hosts[{name:?}]"), "a string"))?;
        let prefix = parse_prefix(text)
            .ok_or_else(|| PolicyError::HostAddress { name: name.clone(), value: text.to_string() })?;
        out.insert(name.clone(), prefix);
    }
    Ok(out)
}

fn parse_auto_approvers(v: &Value) -> Result<AutoApprovers, PolicyError> {
    let mut out = AutoApprovers::default();
    for (key, value) in as_object(v, "autoApprovers")? {
        match key.to_ascii_lowercase().as_str() {
            "routes" => {
                for (prefix, who) in as_object(value, "autoApprovers.routes")? {
                    let net = prefix.parse::<IpNet>().map_err(|_| PolicyError::RoutePrefix(prefix.clone()))?.trunc();
                    out.routes.push((net, aliases(who, &format!("autoApprovers.routes[{prefix:?}]"))?));
                }
            }
            "exitnode" => out.exit_node = aliases(value, "autoApprovers.exitNode")?,
            _ => return Err(PolicyError::UnknownField { path: "autoApprovers".into(), field: key.clone() }),
        }
    }
    Ok(out)
}

/// Top-level policy sections (lower-cased) that are accepted and ignored.
const IGNORED_SECTIONS: &[&str] =
    &["ipsets", "postures", "defaultsrcposture", "derpmap", "disableipv4", "onecgnatroute", "attrs", "services"];

impl Policy {
    /// Parses policy text (HuJSON). This checks syntax and the shape of every member; it does
    /// not check references between members (see [`Policy::validate`](crate::Policy::validate)).
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let value = crate::hujson::parse(text)?;
        Policy::from_value(&value)
    }

    /// Builds a policy from an already-parsed JSON document.
    pub fn from_value(value: &Value) -> Result<Policy, PolicyError> {
        let obj = as_object(value, "policy")?;
        let mut policy = Policy::default();
        for (key, value) in obj {
            match key.to_ascii_lowercase().as_str() {
                "groups" if !value.is_null() => policy.groups = parse_groups(value)?,
                "hosts" if !value.is_null() => policy.hosts = parse_hosts(value)?,
                "tagowners" if !value.is_null() => {
                    for (tag, owners) in as_object(value, "tagOwners")? {
                        if !matches!(parse_alias(tag), Ok(Alias::Tag(_))) {
                            parse_alias(tag)?;
                            return Err(PolicyError::Owner { path: "tagOwners".into(), value: tag.clone() });
                        }
                        policy.tag_owners.insert(tag.clone(), strings(owners, &format!("tagOwners[{tag:?}]"))?);
                    }
                }
                "acls" => {
                    policy.has_rules |= !value.is_null();
                    if !value.is_null() {
                        for (i, acl) in as_array(value, "acls")?.iter().enumerate() {
                            policy.acls.push(parse_acl(acl, &format!("acls[{i}]"))?);
                        }
                    }
                }
                "grants" => {
                    policy.has_rules |= !value.is_null();
                    if !value.is_null() {
                        for (i, grant) in as_array(value, "grants")?.iter().enumerate() {
                            policy.grants.push(parse_grant(grant, &format!("grants[{i}]"))?);
                        }
                    }
                }
                "nodeattrs" => policy.node_attrs = crate::nodeattrs::parse_node_attrs(value)?,
                "randomizeclientport" => {
                    policy.randomize_client_port = match value {
                        Value::Bool(b) => *b,
                        Value::Null => false,
                        _ => return Err(type_err("randomizeClientPort", "a boolean")),
                    }
                }
                "ssh" => policy.ssh = crate::ssh::parse_ssh(value)?,
                "sshtests" => policy.ssh_tests = crate::ssh::parse_ssh_tests(value)?,
                "tests" => policy.tests = crate::tests_block::parse_tests(value)?,
                "autoapprovers" if !value.is_null() => policy.auto_approvers = parse_auto_approvers(value)?,
                "groups" | "hosts" | "tagowners" | "autoapprovers" => {}
                // Sections Tailscale accepts that tailwarden does not model yet; they do not
                // change what the modelled sections compile to.
                k if IGNORED_SECTIONS.contains(&k) || k.starts_with('#') => {}
                _ => return Err(PolicyError::UnknownField { path: "policy".into(), field: key.clone() }),
            }
        }
        Ok(policy)
    }
}
