//! `nodeAttrs` and `randomizeClientPort`: node capabilities the policy grants, merged with the
//! capabilities the control plane gives every node into the self CapMap.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::Value;

use crate::alias::{Alias, AutoGroup, parse_alias};
use crate::compile::CompiledPolicy;
use crate::error::PolicyError;
use crate::model::Policy;

/// One `nodeAttrs` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAttr {
    /// `target`: the nodes it applies to.
    pub targets: Vec<Alias>,
    /// `attr`: capability names.
    pub attrs: Vec<String>,
    /// `ipPool`: preferred address ranges (validated, not yet used for allocation).
    pub ip_pool: Vec<IpNet>,
}

/// Capabilities every node receives regardless of policy (Taildrop and Tailscale SSH).
pub const ALWAYS_CAPS: &[&str] = &["https://tailscale.com/cap/file-sharing", "https://tailscale.com/cap/ssh"];

/// Companion capabilities the control plane adds next to a granted attribute.
const ATTR_COMPANIONS: &[(&str, &[&str])] = &[(
    "funnel",
    &["https://tailscale.com/cap/funnel-ports?ports=443,8443,10000", "https://tailscale.com/cap/warn-funnel-no-https"],
)];

/// Parses the `nodeAttrs` member.
pub fn parse_node_attrs(v: &Value) -> Result<Vec<NodeAttr>, PolicyError> {
    let type_err = |path: String, expected| PolicyError::Type { path, expected };
    let Some(list) = v.as_array() else {
        return if v.is_null() { Ok(Vec::new()) } else { Err(type_err("nodeAttrs".into(), "an array")) };
    };
    let strings = |v: &Value, path: String| -> Result<Vec<String>, PolicyError> {
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Array(a) => a
                .iter()
                .map(|s| s.as_str().map(str::to_string).ok_or_else(|| type_err(path.clone(), "an array of strings")))
                .collect(),
            _ => Err(type_err(path, "an array of strings")),
        }
    };
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let path = format!("nodeAttrs[{i}]");
        let obj = entry.as_object().ok_or_else(|| type_err(path.clone(), "an object"))?;
        let mut attr = NodeAttr { targets: Vec::new(), attrs: Vec::new(), ip_pool: Vec::new() };
        for (k, val) in obj {
            match k.to_ascii_lowercase().as_str() {
                "target" => {
                    attr.targets = strings(val, format!("{path}.target"))?
                        .iter()
                        .map(|s| parse_alias(s))
                        .collect::<Result<_, _>>()?
                }
                "attr" => attr.attrs = strings(val, format!("{path}.attr"))?,
                "ippool" => {
                    for p in strings(val, format!("{path}.ipPool"))? {
                        attr.ip_pool.push(p.parse().map_err(|_| PolicyError::InvalidAddress(p.clone()))?);
                    }
                }
                k if k.starts_with('#') => {}
                _ => return Err(PolicyError::UnknownField { path, field: k.to_string() }),
            }
        }
        out.push(attr);
    }
    Ok(out)
}

impl Policy {
    /// Validation problems of `nodeAttrs`.
    pub(crate) fn node_attr_problems(&self, errs: &mut Vec<PolicyError>) {
        let cgnat: IpNet = "100.64.0.0/10".parse().unwrap_or(IpNet::V4(Default::default()));
        let reserved: Vec<IpNet> =
            ["100.100.100.0/24", "100.115.92.0/23"].iter().filter_map(|p| p.parse().ok()).collect();
        for na in &self.node_attrs {
            for t in &na.targets {
                match t {
                    Alias::Host(h) if !self.hosts.contains_key(h) => errs.push(PolicyError::InvalidAddress(h.clone())),
                    Alias::Group(g) if !self.groups.contains_key(g) => {
                        errs.push(PolicyError::GroupNotDefined(g.clone()))
                    }
                    Alias::Tag(tag) if !self.tag_owners.contains_key(tag) => {
                        errs.push(PolicyError::TagNotFound(tag.clone()))
                    }
                    Alias::AutoGroup(AutoGroup::Member | AutoGroup::Tagged | AutoGroup::Admin | AutoGroup::Owner) => {}
                    Alias::AutoGroup(g) => errs.push(PolicyError::AutogroupSide {
                        group: g.as_str().to_string(),
                        side: crate::error::Side::Dst,
                    }),
                    _ => {}
                }
            }
            for p in &na.ip_pool {
                let p = p.trunc();
                if !cgnat.contains(&p) {
                    errs.push(PolicyError::IpPool { pool: p.to_string(), reason: "network not within 100.64.0.0/10" });
                } else if reserved.iter().any(|r| r.contains(&p) || p.contains(r)) {
                    errs.push(PolicyError::IpPool { pool: p.to_string(), reason: "network within reserved range" });
                }
            }
        }
    }
}

/// Tailnet-wide settings that shape every node's CapMap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TailnetSettings {
    /// The `default-auto-update` capability value, when the control plane sends it.
    pub default_auto_update: Option<bool>,
}

impl CompiledPolicy {
    /// The policy attributes (`nodeAttrs`, `randomizeClientPort`) node `node` receives.
    pub fn node_attrs_for(&self, node: usize) -> Vec<String> {
        self.attrs.get(node).cloned().unwrap_or_default()
    }

    /// The node's own CapMap: policy attributes (with their companions), the capabilities every
    /// node gets, and tailnet settings.
    pub fn self_cap_map(&self, node: usize, settings: &TailnetSettings) -> BTreeMap<String, Value> {
        let mut caps = BTreeMap::new();
        for a in self.node_attrs_for(node) {
            for (attr, companions) in ATTR_COMPANIONS {
                if *attr == a {
                    for c in *companions {
                        caps.insert(c.to_string(), Value::Null);
                    }
                }
            }
            caps.insert(a, Value::Null);
        }
        for c in ALWAYS_CAPS {
            caps.insert(c.to_string(), Value::Null);
        }
        if let Some(on) = settings.default_auto_update {
            caps.insert("default-auto-update".into(), Value::Array(vec![Value::Bool(on)]));
        }
        caps
    }
}
