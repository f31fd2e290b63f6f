//! The `ssh` section: parsing, validation, per-node compilation into Tailscale SSH rules, and
//! the `sshTests` block.
//!
//! The output types mirror Go's `tailcfg.SSHRule` JSON (lowerCamel keys).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::alias::{Alias, AutoGroup, parse_alias};
use crate::compile::CompiledPolicy;
use crate::duration;
use crate::error::PolicyError;
use crate::index::{DependencyIndex, alias_keys};
use crate::ipset::IpSet;
use crate::model::Policy;
use crate::tailnet::Tailnet;

/// The longest `checkPeriod` Tailscale accepts: one week.
const CHECK_PERIOD_MAX_NS: i64 = 7 * 24 * 3_600_000_000_000;

/// An SSH rule's action in the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SshActionKind {
    /// Allow.
    Accept,
    /// Allow after a fresh check with the control server.
    Check,
}

/// `checkPeriod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckPeriod {
    /// Check on every connection.
    Always,
    /// Re-check after this many nanoseconds.
    Nanos(i64),
}

/// One `ssh` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshPolicyRule {
    /// `action`; `None` when missing or empty (rejected by validation).
    pub action: Option<SshActionKind>,
    /// `src`.
    pub src: Vec<Alias>,
    /// `dst`.
    pub dst: Vec<Alias>,
    /// `users`, as written.
    pub users: Vec<String>,
    /// `checkPeriod`.
    pub check_period: Option<CheckPeriod>,
    /// `acceptEnv`.
    pub accept_env: Vec<String>,
}

/// One `sshTests` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTest {
    /// `src` (a single alias); `None` when empty.
    pub src: Option<Alias>,
    /// `dst`.
    pub dst: Vec<Alias>,
    /// Login users that must be accepted.
    pub accept: Vec<String>,
    /// Login users that must be denied.
    pub deny: Vec<String>,
    /// Login users that must go through `check`.
    pub check: Vec<String>,
}

/// `tailcfg.SSHPrincipal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SshPrincipal {
    /// Source node address.
    #[serde(rename = "nodeIP")]
    pub node_ip: String,
}

/// `tailcfg.SSHAction`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SshAction {
    /// Allow the session.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub accept: bool,
    /// Ask the control server (URL with placeholders) before allowing.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hold_and_delegate: String,
    /// Allow agent forwarding.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_agent_forwarding: bool,
    /// Allow local port forwarding.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_local_port_forwarding: bool,
    /// Allow remote port forwarding.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote_port_forwarding: bool,
}

/// `tailcfg.SSHRule`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SshRule {
    /// Who may connect.
    pub principals: Vec<SshPrincipal>,
    /// SSH user → local user (`=` keeps the name, empty denies).
    pub ssh_users: BTreeMap<String, String>,
    /// What happens.
    pub action: SshAction,
    /// Environment variable globs the client may send.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accept_env: Vec<String>,
}

fn type_err(path: &str, expected: &'static str) -> PolicyError {
    PolicyError::Type { path: path.to_string(), expected }
}

fn str_list(v: &Value, path: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| type_err(path, "an array of strings")))
            .collect(),
        _ => Err(type_err(path, "an array of strings")),
    }
}

fn ssh_aliases(v: &Value, path: &str, dst: bool) -> Result<Vec<Alias>, PolicyError> {
    let mut out = Vec::new();
    for s in str_list(v, path)? {
        let alias = parse_alias(&s)?;
        let ok = match &alias {
            Alias::User(_) | Alias::UserDomain(_) | Alias::Tag(_) | Alias::AutoGroup(_) => true,
            Alias::Group(_) => !dst,
            Alias::Host(_) => dst,
            Alias::Wildcard | Alias::Prefix(_) => false,
        };
        if !ok {
            return Err(PolicyError::SshAlias { side: if dst { "destination" } else { "source" }, alias: s });
        }
        out.push(alias);
    }
    Ok(out)
}

/// Parses the `ssh` member.
pub fn parse_ssh(v: &Value) -> Result<Vec<SshPolicyRule>, PolicyError> {
    let Some(list) = v.as_array() else {
        return if v.is_null() { Ok(Vec::new()) } else { Err(type_err("ssh", "an array")) };
    };
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let path = format!("ssh[{i}]");
        let obj = r.as_object().ok_or_else(|| type_err(&path, "an object"))?;
        let mut rule = SshPolicyRule {
            action: None,
            src: Vec::new(),
            dst: Vec::new(),
            users: Vec::new(),
            check_period: None,
            accept_env: Vec::new(),
        };
        for (k, val) in obj {
            match k.to_ascii_lowercase().as_str() {
                "action" => {
                    let a = val.as_str().ok_or_else(|| type_err(&format!("{path}.action"), "a string"))?;
                    rule.action = match a.trim() {
                        "" => None,
                        "accept" => Some(SshActionKind::Accept),
                        "check" => Some(SshActionKind::Check),
                        _ => return Err(PolicyError::SshAction(a.to_string())),
                    };
                }
                "src" => rule.src = ssh_aliases(val, &format!("{path}.src"), false)?,
                "dst" => rule.dst = ssh_aliases(val, &format!("{path}.dst"), true)?,
                "users" => {
                    rule.users = str_list(val, &format!("{path}.users"))?.iter().map(|u| u.trim().to_string()).collect()
                }
                "acceptenv" => rule.accept_env = str_list(val, &format!("{path}.acceptEnv"))?,
                "checkperiod" => {
                    if val.is_null() {
                        continue;
                    }
                    let text = val.as_str().ok_or_else(|| type_err(&format!("{path}.checkPeriod"), "a string"))?;
                    rule.check_period = Some(if text == "always" {
                        CheckPeriod::Always
                    } else {
                        CheckPeriod::Nanos(duration::parse(text).map_err(PolicyError::Duration)?)
                    });
                }
                k if k.starts_with('#') => {}
                _ => return Err(PolicyError::UnknownField { path, field: k.to_string() }),
            }
        }
        out.push(rule);
    }
    Ok(out)
}

/// Parses the `sshTests` member.
pub fn parse_ssh_tests(v: &Value) -> Result<Vec<SshTest>, PolicyError> {
    let Some(list) = v.as_array() else {
        return if v.is_null() { Ok(Vec::new()) } else { Err(type_err("sshTests", "an array")) };
    };
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let path = format!("sshTests[{i}]");
        let obj = t.as_object().ok_or_else(|| type_err(&path, "an object"))?;
        let mut test = SshTest { src: None, dst: Vec::new(), accept: Vec::new(), deny: Vec::new(), check: Vec::new() };
        for (k, val) in obj {
            match k.to_ascii_lowercase().as_str() {
                "src" => {
                    let s = val.as_str().ok_or_else(|| type_err(&format!("{path}.src"), "a string"))?.trim();
                    if !s.is_empty() {
                        test.src = Some(parse_alias(s)?);
                    }
                }
                "dst" => {
                    test.dst = str_list(val, &format!("{path}.dst"))?
                        .iter()
                        .map(|s| parse_alias(s))
                        .collect::<Result<_, _>>()?
                }
                "accept" => test.accept = str_list(val, &format!("{path}.accept"))?,
                "deny" => test.deny = str_list(val, &format!("{path}.deny"))?,
                "check" => test.check = str_list(val, &format!("{path}.check"))?,
                _ => return Err(PolicyError::UnknownField { path, field: k.to_string() }),
            }
        }
        out.push(test);
    }
    Ok(out)
}

/// The domain of a `localpart:*@<domain>` entry, or `None` if the entry is not of that form
/// (then it is an ordinary login name).
fn localpart_domain(user: &str) -> Option<&str> {
    let pattern = user.strip_prefix("localpart:")?;
    let (local, domain) = pattern.rsplit_once('@')?;
    (local == "*" && !domain.is_empty()).then_some(domain)
}

impl Policy {
    /// Validation problems of the `ssh` and `sshTests` sections.
    pub(crate) fn ssh_problems(&self, tailnet: Option<&Tailnet>, errs: &mut Vec<PolicyError>) {
        let associated = |d: &str, case_insensitive: bool| {
            tailnet.is_none_or(|t| {
                t.domains.iter().any(|x| if case_insensitive { x.eq_ignore_ascii_case(d) } else { x == d })
            })
        };
        for rule in &self.ssh {
            if rule.action.is_none() {
                errs.push(PolicyError::SshActionMissing);
            }
            if rule.users.is_empty() {
                errs.push(PolicyError::SshUsersMissing);
            }
            for u in &rule.users {
                if u.is_empty() || u == "*" {
                    errs.push(PolicyError::SshUser(u.clone()));
                } else if let Some(d) = localpart_domain(u)
                    && !associated(d, false)
                {
                    errs.push(PolicyError::DomainNotAssociated { prefix: "", domain: d.to_string() });
                }
            }
            if rule.accept_env.iter().any(String::is_empty) {
                errs.push(PolicyError::AcceptEnvEmpty);
            }
            for src in &rule.src {
                match src {
                    Alias::AutoGroup(AutoGroup::Internet) => errs.push(PolicyError::InternetAsSource),
                    Alias::AutoGroup(AutoGroup::Member | AutoGroup::Tagged) => {}
                    Alias::AutoGroup(g) => errs.push(PolicyError::AutogroupSide {
                        group: g.as_str().to_string(),
                        side: crate::error::Side::Src,
                    }),
                    Alias::Group(g) if !self.groups.contains_key(g) => {
                        errs.push(PolicyError::GroupNotDefined(g.clone()))
                    }
                    Alias::Tag(t) if !self.tag_owners.contains_key(t) => errs.push(PolicyError::TagNotFound(t.clone())),
                    Alias::UserDomain(d) if !associated(d, true) => {
                        errs.push(PolicyError::DomainNotAssociated { prefix: "[ssh] ", domain: d.clone() })
                    }
                    _ => {}
                }
            }
            for dst in &rule.dst {
                match dst {
                    Alias::AutoGroup(AutoGroup::Internet) => errs.push(PolicyError::InternetAsSource),
                    Alias::AutoGroup(AutoGroup::Member | AutoGroup::Tagged | AutoGroup::SelfDevices) => {}
                    Alias::AutoGroup(g) => errs.push(PolicyError::AutogroupSide {
                        group: g.as_str().to_string(),
                        side: crate::error::Side::Dst,
                    }),
                    Alias::Tag(t) if !self.tag_owners.contains_key(t) => errs.push(PolicyError::TagNotFound(t.clone())),
                    Alias::Host(h) => errs.push(PolicyError::SshHostDst(h.clone())),
                    Alias::UserDomain(d) if !associated(d, true) => {
                        errs.push(PolicyError::DomainNotAssociated { prefix: "[ssh] ", domain: d.clone() })
                    }
                    _ => {}
                }
            }
            if let Some(e) = ssh_combination(&rule.src, &rule.dst) {
                errs.push(e);
            }
            if let Some(p) = rule.check_period {
                if rule.action != Some(SshActionKind::Check) {
                    errs.push(PolicyError::CheckPeriodNotCheck);
                } else if let CheckPeriod::Nanos(ns) = p {
                    if ns < 0 {
                        errs.push(PolicyError::CheckPeriodNegative(duration::format(ns)));
                    } else if ns > CHECK_PERIOD_MAX_NS {
                        errs.push(PolicyError::CheckPeriodTooLong(duration::format(ns)));
                    }
                }
            }
        }
        for t in &self.ssh_tests {
            if t.src.is_none() {
                errs.push(PolicyError::SshTestsInvalid("SSH tests entry must have a non-empty src".into()));
            }
            if t.dst.is_empty() {
                errs.push(PolicyError::SshTestsInvalid("SSH tests entry must have at least one dst".into()));
            }
            for d in &t.dst {
                let multi = |p: &ipnet::IpNet| p.prefix_len() < p.max_prefix_len();
                match d {
                    Alias::AutoGroup(AutoGroup::Internet) => errs.push(PolicyError::SshTestsInvalid(format!(
                        "SSH tests dst contains disallowed element {:?}",
                        d.to_string()
                    ))),
                    Alias::Prefix(p) if multi(p) => errs.push(PolicyError::SshTestsInvalid(format!(
                        "SSH tests dst contains disallowed element {:?}",
                        d.to_string()
                    ))),
                    Alias::Host(h) if self.hosts.get(h).is_some_and(multi) => errs.push(PolicyError::SshTestsInvalid(
                        format!("SSH tests dst contains disallowed element {:?}", d.to_string()),
                    )),
                    Alias::Tag(t) if !self.tag_owners.contains_key(t) => {
                        errs.push(PolicyError::SshTestsInvalid(format!("SSH tests dst contains unknown tag {t:?}")))
                    }
                    _ => {}
                }
            }
        }
    }
}

fn ssh_combination(src: &[Alias], dst: &[Alias]) -> Option<PolicyError> {
    let tagged = src.iter().any(|s| matches!(s, Alias::Tag(_) | Alias::AutoGroup(AutoGroup::Tagged)));
    let groups = src.iter().any(|s| matches!(s, Alias::Group(_) | Alias::AutoGroup(AutoGroup::Member)));
    let users: BTreeSet<&String> =
        src.iter().filter_map(|s| if let Alias::User(u) = s { Some(u) } else { None }).collect();
    for d in dst {
        match d {
            Alias::User(u) => {
                if tagged {
                    return Some(PolicyError::SshTagToUser(u.clone()));
                }
                if groups || users.len() != 1 || !users.contains(u) {
                    return Some(PolicyError::SshUserDstSameUser(u.clone()));
                }
            }
            Alias::AutoGroup(AutoGroup::SelfDevices) if tagged => return Some(PolicyError::SshSelfNeedsUsers),
            Alias::AutoGroup(AutoGroup::Member) if tagged => return Some(PolicyError::SshTagToMember),
            _ => {}
        }
    }
    None
}

fn principals_of(set: &IpSet) -> Vec<SshPrincipal> {
    let mut out = Vec::new();
    for (a, b) in set.ranges() {
        // Sources are node addresses, so ranges are tiny; walk them address by address.
        let mut cur = a;
        loop {
            out.push(SshPrincipal { node_ip: cur.to_string() });
            if cur == b || out.len() > 1 << 16 {
                break;
            }
            cur = match cur {
                IpAddr::V4(x) => IpAddr::V4((u32::from(x).wrapping_add(1)).into()),
                IpAddr::V6(x) => IpAddr::V6((u128::from(x).wrapping_add(1)).into()),
            };
        }
    }
    out
}

/// An SSH rule with its sources and destinations resolved against the tailnet, so the per-node
/// SSH policy is read off it without resolving anything.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResolvedSsh {
    src_set: IpSet,
    /// Every address the destinations other than `autogroup:self` name.
    dst_set: IpSet,
    has_other_dsts: bool,
    /// The nodes `dst_set` holds.
    pub(crate) dst_nodes: Vec<usize>,
    /// Source principals grouped by owning user (ascending id).
    by_user: BTreeMap<u64, Vec<SshPrincipal>>,
    /// Tagged source principals, repeated once per tag as the control plane does.
    tagged: Vec<SshPrincipal>,
    /// For `localpart:*@domain` users: each matching user's local part.
    localpart_by_user: BTreeMap<u64, String>,
    has_localpart: bool,
}

impl CompiledPolicy {
    fn nodes_of(&self, set: &IpSet) -> Vec<usize> {
        let mut out: Vec<usize> =
            set.ranges().into_iter().flat_map(|(lo, hi)| self.index.by_addr.range(lo..=hi).map(|(_, i)| *i)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    pub(crate) fn resolve_ssh(&self, rule: &SshPolicyRule) -> ResolvedSsh {
        let mut src_set = IpSet::new();
        for s in &rule.src {
            if let Some(set) = self.resolve_alias(s) {
                src_set.extend(&set);
            }
        }
        let localpart_domains: Vec<&str> = rule.users.iter().filter_map(|u| localpart_domain(u)).collect();
        let mut localpart_by_user: BTreeMap<u64, String> = BTreeMap::new();
        for d in &localpart_domains {
            for u in &self.tailnet().users {
                if let Some((local, dom)) = u.login.rsplit_once('@')
                    && dom.eq_ignore_ascii_case(d)
                {
                    localpart_by_user.insert(u.id, local.to_string());
                }
            }
        }
        let mut by_user: BTreeMap<u64, IpSet> = BTreeMap::new();
        let mut tagged = Vec::new();
        for i in self.nodes_of(&src_set) {
            let m = &self.tailnet().nodes[i];
            if m.is_tagged() {
                for _ in &m.tags {
                    tagged.extend(m.addrs().iter().map(|a| SshPrincipal { node_ip: a.to_string() }));
                }
            } else if let Some(u) = m.user {
                let set = by_user.entry(u).or_default();
                for a in m.addrs() {
                    set.add_addr(a);
                }
            }
        }
        let by_user = by_user.iter().map(|(u, s)| (*u, principals_of(s))).filter(|(_, p)| !p.is_empty()).collect();
        let self_dst = Alias::AutoGroup(AutoGroup::SelfDevices);
        let mut dst_set = IpSet::new();
        let mut has_other_dsts = false;
        for d in rule.dst.iter().filter(|d| **d != self_dst) {
            has_other_dsts = true;
            if let Some(set) = self.resolve_alias(d) {
                dst_set.extend(&set);
            }
        }
        ResolvedSsh {
            src_set,
            dst_nodes: self.nodes_of(&dst_set),
            dst_set,
            has_other_dsts,
            by_user,
            tagged,
            localpart_by_user,
            has_localpart: !localpart_domains.is_empty(),
        }
    }

    pub(crate) fn resolve_all_ssh(&mut self) {
        self.ssh = self.policy.ssh.iter().map(|r| self.resolve_ssh(r)).collect();
        self.ssh_deps = DependencyIndex::default();
        for (k, rule) in self.policy.ssh.iter().enumerate() {
            self.ssh_deps.add(k, alias_keys(&self.policy, rule.src.iter().chain(&rule.dst)));
        }
    }

    /// The SSH rules node `node` enforces as an SSH server, first match wins. `control_url` is
    /// the base of the `check` action's callback URL. Empty when the node gets no SSH policy.
    pub fn ssh_rules_for(&self, node: usize, control_url: &str) -> Vec<SshRule> {
        let policy = self.policy();
        let Some(n) = self.tailnet().nodes.get(node) else { return Vec::new() };
        let mut rules = Vec::new();
        for (rule, resolved) in policy.ssh.iter().zip(&self.ssh) {
            if resolved.src_set.is_empty() {
                continue;
            }
            let action = match rule.action {
                Some(SshActionKind::Accept) => SshAction {
                    accept: true,
                    allow_agent_forwarding: true,
                    allow_local_port_forwarding: true,
                    allow_remote_port_forwarding: true,
                    ..Default::default()
                },
                Some(SshActionKind::Check) => SshAction {
                    hold_and_delegate: format!(
                        "{control_url}/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER"
                    ),
                    ..Default::default()
                },
                None => continue,
            };
            let mut base_users = BTreeMap::new();
            if rule.users.iter().any(|u| u == "autogroup:nonroot") {
                base_users.insert("*".to_string(), "=".to_string());
            }
            let root = rule.users.iter().any(|u| u == "root");
            base_users.insert("root".to_string(), if root { "root".into() } else { String::new() });
            for u in &rule.users {
                if u != "root" && u != "autogroup:nonroot" && localpart_domain(u).is_none() {
                    base_users.insert(u.clone(), u.clone());
                }
            }
            let (by_user, tagged) = (&resolved.by_user, &resolved.tagged);
            let mut emit = |principals: Vec<SshPrincipal>, uid: Option<u64>| {
                rules.push(SshRule {
                    principals: principals.clone(),
                    ssh_users: base_users.clone(),
                    action: action.clone(),
                    accept_env: rule.accept_env.clone(),
                });
                if let Some(lp) = uid.and_then(|u| resolved.localpart_by_user.get(&u)) {
                    rules.push(SshRule {
                        principals,
                        ssh_users: BTreeMap::from([(lp.clone(), lp.clone())]),
                        action: action.clone(),
                        accept_env: rule.accept_env.clone(),
                    });
                }
            };
            let self_dst = Alias::AutoGroup(AutoGroup::SelfDevices);
            if rule.dst.contains(&self_dst)
                && !n.is_tagged()
                && let Some(uid) = n.user
                && let Some(p) = by_user.get(&uid)
            {
                emit(p.clone(), Some(uid));
            }
            if !resolved.has_other_dsts {
                continue;
            }
            if n.addrs().iter().any(|a| resolved.dst_set.contains(*a)) {
                if resolved.has_localpart {
                    for (uid, p) in by_user {
                        emit(p.clone(), Some(*uid));
                    }
                    if !tagged.is_empty() {
                        emit(tagged.clone(), None);
                    }
                } else {
                    let mut all: Vec<SshPrincipal> = by_user.values().flatten().cloned().collect();
                    all.extend(tagged.iter().cloned());
                    if !all.is_empty() {
                        emit(all, None);
                    }
                }
            } else if resolved.has_localpart && n.addrs().iter().any(|a| resolved.src_set.contains(*a)) {
                if n.is_tagged() {
                    let mut own = IpSet::new();
                    for a in n.addrs() {
                        own.add_addr(a);
                    }
                    emit(principals_of(&own), None);
                } else if let Some(uid) = n.user
                    && let Some(p) = by_user.get(&uid)
                {
                    emit(p.clone(), Some(uid));
                }
            }
        }
        // Check rules come before accept rules (most restrictive first); stable otherwise.
        rules.sort_by_key(|r| r.action.hold_and_delegate.is_empty());
        rules
    }

    /// Runs the `sshTests` block against the compiled SSH rules.
    pub fn run_ssh_tests(&self) -> Result<(), PolicyError> {
        let policy = self.policy();
        let mut failures = Vec::new();
        let mut cache: BTreeMap<usize, Vec<SshRule>> = BTreeMap::new();
        for t in &policy.ssh_tests {
            let Some(src) = &t.src else { continue };
            let label = src.to_string();
            let src_set = self.resolve_alias(src).unwrap_or_default();
            if src_set.is_empty() {
                failures.push(format!("{label}: source resolved to no IP addresses"));
                continue;
            }
            let src_addrs: Vec<IpAddr> =
                principals_of(&src_set).iter().filter_map(|p| p.node_ip.parse().ok()).collect();
            if t.accept.is_empty() && t.deny.is_empty() && t.check.is_empty() {
                failures.push(format!("{label}: no accept, deny, or check assertions specified"));
                continue;
            }
            let src_user = match src {
                Alias::User(login) => self.tailnet().user_by_login(login).map(|u| u.id),
                _ => None,
            };
            let mut dst_nodes: Vec<usize> = Vec::new();
            for d in &t.dst {
                let before = dst_nodes.len();
                let mut matched = false;
                for (i, m) in self.tailnet().nodes.iter().enumerate() {
                    let hit = if *d == Alias::AutoGroup(AutoGroup::SelfDevices) {
                        src_user.is_some() && !m.is_tagged() && m.user == src_user
                    } else {
                        let set = self.resolve_alias(d).unwrap_or_default();
                        m.addrs().iter().any(|a| set.contains(*a))
                    };
                    if hit {
                        matched = true;
                        if !dst_nodes.contains(&i) {
                            dst_nodes.push(i);
                        }
                    }
                }
                if !matched && dst_nodes.len() == before {
                    failures.push(format!("{label}: dst alias {:?} resolved to no nodes", d.to_string()));
                }
            }
            for (kind, users) in [(0, &t.accept), (1, &t.deny), (2, &t.check)] {
                for user in users {
                    for &dn in &dst_nodes {
                        let rules = cache.entry(dn).or_insert_with(|| self.ssh_rules_for(dn, ""));
                        let dst_name = &self.tailnet().nodes[dn].name;
                        for src_addr in &src_addrs {
                            let (a, c) = reachability(rules, *src_addr, user);
                            let failed = match kind {
                                0 => !a,
                                1 => a,
                                _ => !c,
                            };
                            if failed {
                                let what = [
                                    "expected ALLOWED, got DENIED",
                                    "expected DENIED, got ALLOWED",
                                    "expected ALLOWED via check",
                                ][kind];
                                failures.push(format!("{label}/{user} -> {dst_name}: {what}"));
                                break;
                            }
                        }
                    }
                }
            }
        }
        if failures.is_empty() { Ok(()) } else { Err(PolicyError::TestsFailed(failures)) }
    }
}

fn user_allowed(map: &BTreeMap<String, String>, user: &str) -> bool {
    if user.is_empty() {
        return false;
    }
    if let Some(v) = map.get(user) {
        return !v.is_empty();
    }
    if user == "root" {
        return false;
    }
    map.get("*").is_some_and(|v| !v.is_empty())
}

/// Whether any rule lets `src` in as `user` (accept or check), and whether one of them is a check.
fn reachability(rules: &[SshRule], src: IpAddr, user: &str) -> (bool, bool) {
    let (mut accept, mut check) = (false, false);
    for r in rules {
        if !r.principals.iter().any(|p| p.node_ip.parse::<IpAddr>().is_ok_and(|a| a == src)) {
            continue;
        }
        if !user_allowed(&r.ssh_users, user) {
            continue;
        }
        accept = true;
        if !r.action.hold_and_delegate.is_empty() {
            check = true;
        }
    }
    (accept, check)
}
