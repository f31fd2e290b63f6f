//! Reference and combination checks Tailscale applies after parsing.

use crate::alias::{Alias, AutoGroup};
use crate::error::{PolicyError, Side};
use crate::model::Policy;
use crate::tailnet::Tailnet;

/// How a tag reference is worded when it is undefined.
#[derive(Clone, Copy)]
enum TagCtx {
    Src,
    AclDst,
    Plain,
}

impl Policy {
    fn check_ref(&self, alias: &Alias, tag_ctx: TagCtx, errs: &mut Vec<PolicyError>) {
        match alias {
            Alias::Host(h) if !self.hosts.contains_key(h) => errs.push(PolicyError::HostNotDefined(h.clone())),
            Alias::Group(g) if !self.groups.contains_key(g) => errs.push(PolicyError::GroupNotDefined(g.clone())),
            Alias::Tag(t) if !self.tag_owners.contains_key(t) => errs.push(match tag_ctx {
                TagCtx::Src => PolicyError::SrcTagNotFound(t.clone()),
                TagCtx::AclDst => PolicyError::DstTagNotFound(t.clone()),
                TagCtx::Plain => PolicyError::TagNotFound(t.clone()),
            }),
            _ => {}
        }
    }

    fn check_src(&self, alias: &Alias, errs: &mut Vec<PolicyError>) {
        if let Alias::AutoGroup(g) = alias {
            match g {
                AutoGroup::Internet => errs.push(PolicyError::InternetAsSource),
                AutoGroup::SelfDevices => errs.push(PolicyError::SelfAsSource),
                AutoGroup::Member | AutoGroup::Tagged | AutoGroup::DangerAll => {}
                other => errs.push(PolicyError::AutogroupSide { group: other.as_str().to_string(), side: Side::Src }),
            }
        }
        self.check_ref(alias, TagCtx::Src, errs);
    }

    fn check_dst(&self, alias: &Alias, tag_ctx: TagCtx, errs: &mut Vec<PolicyError>) {
        if let Alias::AutoGroup(g) = alias {
            match g {
                AutoGroup::DangerAll => errs.push(PolicyError::DangerAllAsDst),
                AutoGroup::Internet | AutoGroup::Member | AutoGroup::Tagged | AutoGroup::SelfDevices => {}
                other => errs.push(PolicyError::AutogroupSide { group: other.as_str().to_string(), side: Side::Dst }),
            }
        }
        self.check_ref(alias, tag_ctx, errs);
    }

    /// Checks references (groups, tags, hosts), where each autogroup may appear, and the
    /// source/destination combinations Tailscale forbids. Every problem is reported.
    pub fn validate(&self) -> Result<(), PolicyError> {
        into_result(self.problems(None))
    }

    /// [`Policy::validate`] plus the checks that depend on the tailnet (associated domains).
    pub fn validate_for(&self, tailnet: &Tailnet) -> Result<(), PolicyError> {
        into_result(self.problems(Some(tailnet)))
    }

    fn check_domain(alias: &Alias, tailnet: Option<&Tailnet>, prefix: &'static str, errs: &mut Vec<PolicyError>) {
        if let (Alias::UserDomain(d), Some(t)) = (alias, tailnet)
            && !t.domains.iter().any(|x| x.eq_ignore_ascii_case(d))
        {
            errs.push(PolicyError::DomainNotAssociated { prefix, domain: d.clone() });
        }
    }

    fn problems(&self, tailnet: Option<&Tailnet>) -> Vec<PolicyError> {
        let mut errs = Vec::new();
        let rule_aliases = self
            .acls
            .iter()
            .flat_map(|a| a.src.iter().chain(a.dst.iter().map(|(d, _)| d)))
            .chain(self.grants.iter().flat_map(|g| g.src.iter().chain(&g.dst)));
        for alias in rule_aliases {
            Self::check_domain(alias, tailnet, "", &mut errs);
        }
        for acl in &self.acls {
            for src in &acl.src {
                self.check_src(src, &mut errs);
            }
            for (dst, _) in &acl.dst {
                self.check_dst(dst, TagCtx::AclDst, &mut errs);
            }
            if !acl.proto.has_ports
                && acl.dst.iter().flat_map(|(_, p)| p).any(|p| *p != tailwarden_wire::PortRange::ANY)
            {
                errs.push(PolicyError::ProtocolPorts(acl.proto.name.clone()));
            }
            let has_self = acl.dst.iter().any(|(d, _)| *d == Alias::AutoGroup(AutoGroup::SelfDevices));
            if has_self
                && !acl.src.iter().all(|s| {
                    matches!(
                        s,
                        Alias::User(_) | Alias::Group(_) | Alias::Wildcard | Alias::AutoGroup(AutoGroup::Member)
                    )
                })
            {
                errs.push(PolicyError::SelfSources);
            }
        }
        for grant in &self.grants {
            if grant.ip.is_empty() && grant.app.is_empty() {
                errs.push(PolicyError::GrantEmpty);
            }
            for cap in grant.app.keys() {
                if cap.contains("://") {
                    errs.push(PolicyError::CapName(cap.clone()));
                } else if cap.starts_with("tailscale.com/") && !USER_GRANTABLE_CAPS.contains(&cap.as_str()) {
                    errs.push(PolicyError::CapTailscaleDomain(cap.clone()));
                }
            }
            if !grant.app.is_empty() && grant.dst.contains(&Alias::AutoGroup(AutoGroup::Internet)) {
                errs.push(PolicyError::AppWithInternet);
            }
            if let Some(Alias::Prefix(p)) =
                grant.dst.iter().find(|d| matches!(d, Alias::Prefix(p) if p.prefix_len() == 0))
            {
                errs.push(PolicyError::DefaultRouteDst(p.to_string()));
            }
            for src in &grant.src {
                self.check_src(src, &mut errs);
            }
            for dst in &grant.dst {
                self.check_dst(dst, TagCtx::Plain, &mut errs);
            }
            for via in &grant.via {
                if !self.tag_owners.contains_key(via) {
                    errs.push(PolicyError::ViaTagNotFound(via.clone()));
                }
            }
            let has_self = grant.dst.contains(&Alias::AutoGroup(AutoGroup::SelfDevices));
            if has_self
                && !grant
                    .src
                    .iter()
                    .all(|s| matches!(s, Alias::User(_) | Alias::Group(_) | Alias::AutoGroup(AutoGroup::Member)))
            {
                errs.push(PolicyError::SelfSources);
            }
        }
        for owners in self.tag_owners.values() {
            for owner in owners {
                if owner.starts_with("group:") && !self.groups.contains_key(owner) {
                    errs.push(PolicyError::GroupNotDefined(owner.clone()));
                } else if owner.starts_with("tag:") && !self.tag_owners.contains_key(owner) {
                    errs.push(PolicyError::TagNotFound(owner.clone()));
                }
            }
        }
        let approvers = self.auto_approvers.routes.iter().flat_map(|(_, a)| a).chain(&self.auto_approvers.exit_node);
        for approver in approvers {
            if matches!(approver, Alias::Group(_) | Alias::Tag(_)) {
                self.check_ref(approver, TagCtx::Plain, &mut errs);
            }
        }
        self.ssh_problems(tailnet, &mut errs);
        self.node_attr_problems(&mut errs);
        errs
    }
}

fn into_result(mut errs: Vec<PolicyError>) -> Result<(), PolicyError> {
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.remove(0)),
        _ => Err(PolicyError::Invalid(errs)),
    }
}

/// `tailscale.com/cap/*` capabilities a policy may grant (others are set by the control plane).
pub const USER_GRANTABLE_CAPS: &[&str] = &[
    "tailscale.com/cap/drive",
    "tailscale.com/cap/relay",
    "tailscale.com/cap/webui",
    "tailscale.com/cap/kubernetes",
    "tailscale.com/cap/tsidp",
    "tailscale.com/cap/secrets",
];
