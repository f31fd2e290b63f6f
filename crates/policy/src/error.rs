//! The policy engine's error type. Variants carry the offending values; `Display` produces the
//! wording Tailscale's control plane uses, so messages can be compared with captured answers.

use crate::hujson::HuJsonError;

/// Why a port specification was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// A port that is not a decimal integer.
    #[error("invalid first integer")]
    NotInteger,
    /// A port above 65535.
    #[error("port number out of range")]
    OutOfRange,
    /// A single port 0.
    #[error("first port must be >0, or use '*' for wildcard")]
    Zero,
    /// `a-b` with a > b.
    #[error("invalid port range: first port is greater than last port")]
    Inverted,
    /// A malformed range such as `1-2-3`.
    #[error("invalid port range format")]
    Format,
}

/// Where an alias appears, for the wording of errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A rule source.
    Src,
    /// A rule destination.
    Dst,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Src => "src",
            Side::Dst => "dst",
        })
    }
}

/// Every way a policy can be rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not valid HuJSON.
    #[error("parsing policy: {0}")]
    Syntax(#[from] HuJsonError),
    /// A member has the wrong JSON type.
    #[error("{path}: expected {expected}")]
    Type {
        /// Where, e.g. `acls[0].src`.
        path: String,
        /// What was expected, e.g. `an array of strings`.
        expected: &'static str,
    },
    /// An unknown member in an object whose members are fixed.
    #[error("{path}: unknown field {field:?}")]
    UnknownField {
        /// The enclosing object.
        path: String,
        /// The member name.
        field: String,
    },
    /// An ACL action other than `accept`.
    #[error("action={0:?} is not supported")]
    AclAction(String),
    /// A string that is not a valid alias.
    #[error("invalid alias format: {0:?}")]
    InvalidAlias(String),
    /// A `tag:` alias whose name does not start with a letter.
    #[error("tag names must start with a letter, after 'tag:' (got {0:?})")]
    TagName(String),
    /// An autogroup Tailscale does not know.
    #[error(
        "invalid autogroup: got {0:?}, must be one of [autogroup:internet autogroup:member autogroup:nonroot autogroup:tagged autogroup:self autogroup:danger-all autogroup:admin autogroup:owner]"
    )]
    UnknownAutogroup(String),
    /// A destination without `:ports`.
    #[error("dst={0:?}: hostport must contain a colon")]
    MissingPort(String),
    /// A destination starting with a colon.
    #[error("dst={0:?}: input cannot start with a colon character")]
    LeadingColon(String),
    /// A destination ending with a colon.
    #[error("dst={0:?}: input cannot end with a colon character")]
    TrailingColon(String),
    /// Brackets around something other than an IPv6 address.
    #[error("dst={0:?}: square brackets are only valid around IPv6 addresses")]
    Brackets(String),
    /// A destination whose port part is invalid.
    #[error("dst={dst:?}: port range {ports:?}: {error}")]
    DstPorts {
        /// The destination as written.
        dst: String,
        /// The port part.
        ports: String,
        /// The problem.
        error: PortError,
    },
    /// A grant `ip` entry whose port part is invalid.
    #[error("port range {ports:?}: {error}")]
    IpPorts {
        /// The port part.
        ports: String,
        /// The problem.
        error: PortError,
    },
    /// A grant `ip` entry with more than one colon.
    #[error("expected only one colon in Internet protocol and port type, got {0:?}")]
    IpFormat(String),
    /// `*` as a protocol.
    #[error("proto name \"*\" not known; use protocol number 0-255 or protocol name (icmp, tcp, udp, etc.)")]
    ProtocolWildcard,
    /// An unknown protocol name.
    #[error("invalid protocol number: {0:?} must be a known protocol name or valid protocol number 0-255")]
    Protocol(String),
    /// A protocol number above 255.
    #[error("protocol number out of range (0-255): {0}")]
    ProtocolRange(String),
    /// A protocol number written with a leading zero.
    #[error("leading 0 not permitted in protocol number: {0:?}")]
    ProtocolLeadingZero(String),
    /// Specific ports with a protocol that has no ports.
    #[error("protocol does not support specific ports: {0:?}, only \"*\" is allowed")]
    ProtocolPorts(String),
    /// A rule source tag not defined in `tagOwners`.
    #[error("src=tag not found: {0:?}")]
    SrcTagNotFound(String),
    /// An ACL destination tag not defined in `tagOwners`.
    #[error("dst={0:?}: tag not found: {0:?}")]
    DstTagNotFound(String),
    /// A tag referenced elsewhere but not defined in `tagOwners`.
    #[error("tag not found: {0:?}")]
    TagNotFound(String),
    /// A `via` tag not defined in `tagOwners`.
    #[error("tag {0:?} not found")]
    ViaTagNotFound(String),
    /// A group used but not defined.
    #[error("group not defined in policy: {0:?}")]
    GroupNotDefined(String),
    /// A group with a group member.
    #[error("groups[{group:?}]: {member:?}: group members cannot be recursive")]
    GroupRecursive {
        /// The group.
        group: String,
        /// The offending member.
        member: String,
    },
    /// A group member that is not a user.
    #[error("groups[{group:?}]: username must contain @, got: {member:?}")]
    GroupMember {
        /// The group.
        group: String,
        /// The offending member.
        member: String,
    },
    /// A group name without the `group:` prefix.
    #[error("group must start with 'group:', got: {0:?}")]
    GroupName(String),
    /// A host alias used but not defined.
    #[error("host not defined in policy: {0:?}")]
    HostNotDefined(String),
    /// A `hosts` entry whose value is not an address or prefix.
    #[error("hostname contains invalid IP address: hostname {name:?} address {value:?}")]
    HostAddress {
        /// Host name.
        name: String,
        /// The value.
        value: String,
    },
    /// A `hosts` key that is not a valid host name.
    #[error("invalid hostname: {0:?}")]
    HostName(String),
    /// `autogroup:self` as a source.
    #[error("\"autogroup:self\" not valid on the src side of a rule")]
    SelfAsSource,
    /// `autogroup:internet` as a source.
    #[error("autogroup:internet can only be used in ACL destinations")]
    InternetAsSource,
    /// `autogroup:danger-all` as a destination.
    #[error("cannot use autogroup:danger-all as a dst")]
    DangerAllAsDst,
    /// An autogroup that cannot appear on this side.
    #[error("autogroup not supported for ACL {}: {group:?}", if *.side == Side::Src { "sources" } else { "destinations" })]
    AutogroupSide {
        /// The autogroup.
        group: String,
        /// Source or destination.
        side: Side,
    },
    /// `autogroup:self` with a source that is not a user, group or `autogroup:member`.
    #[error("autogroup:self can only be used with users, groups, or supported autogroups")]
    SelfSources,
    /// A grant with neither `ip` nor `app`.
    #[error("ip and app can not both be empty")]
    GrantEmpty,
    /// A `via` entry that is not a tag.
    #[error("via can only be a tag, got {0:?}")]
    ViaNotTag(String),
    /// A capability name containing a URL scheme.
    #[error("capability name must have the form {{domain}}/{{path}}: {0:?}")]
    CapName(String),
    /// A capability in the reserved `tailscale.com` domain.
    #[error("capability name must not be in the tailscale.com domain: {0:?}")]
    CapTailscaleDomain(String),
    /// An app grant whose destination is `autogroup:internet`.
    #[error("cannot use app grants with autogroup:internet")]
    AppWithInternet,
    /// A grant destination `0.0.0.0/0` or `::/0`.
    #[error("dst {0:?}: to allow all IP addresses, use \"*\" or \"autogroup:internet\"")]
    DefaultRouteDst(String),
    /// An auto-approver or tag owner that is not a user, group or tag.
    #[error("{path}: invalid owner {value:?}")]
    Owner {
        /// Where.
        path: String,
        /// The value.
        value: String,
    },
    /// `user:*@<domain>` (or `localpart:*@<domain>`) naming a domain the tailnet does not own.
    #[error("{prefix}{domain} is not associated with this Tailnet and cannot be used in user:*@<domain> expressions")]
    DomainNotAssociated {
        /// `[ssh] ` when found in an SSH rule, else empty.
        prefix: &'static str,
        /// The domain as written.
        domain: String,
    },
    /// The policy's `tests` failed or are malformed; one line per failed assertion.
    #[error("test(s) failed:\n{}", .0.join("\n"))]
    TestsFailed(Vec<String>),
    /// An SSH action other than `accept` or `check`.
    #[error("{0:?} is not a valid action")]
    SshAction(String),
    /// An SSH rule without an action.
    #[error("action must be specified")]
    SshActionMissing,
    /// An SSH rule without users.
    #[error("users must be specified")]
    SshUsersMissing,
    /// An SSH user that can never be a login name (`""`, `*`).
    #[error("user {0:?} is not valid")]
    SshUser(String),
    /// An empty `acceptEnv` entry.
    #[error("acceptEnv values cannot be empty")]
    AcceptEnvEmpty,
    /// An alias kind SSH rules do not accept on this side.
    #[error("alias not supported for SSH {side}: {alias:?}")]
    SshAlias {
        /// `source` or `destination`.
        side: &'static str,
        /// The alias as written.
        alias: String,
    },
    /// A `hosts` alias as an SSH destination.
    #[error("invalid dst {0:?}")]
    SshHostDst(String),
    /// Tagged sources reaching a user's devices.
    #[error(
        "tags in SSH source cannot access user-owned devices ({0}); use autogroup:tagged or specific tags as destinations instead"
    )]
    SshTagToUser(String),
    /// A user destination with sources other than that user.
    #[error(
        "user destination requires source to contain only that same user {0:?}; use autogroup:self instead for same-user SSH access"
    )]
    SshUserDstSameUser(String),
    /// `autogroup:self` with tagged sources.
    #[error("autogroup:self destination requires source to contain only users or groups, not tags or autogroup:tagged")]
    SshSelfNeedsUsers,
    /// `autogroup:member` with tagged sources.
    #[error("tags in SSH source cannot access autogroup:member (user-owned devices)")]
    SshTagToMember,
    /// An unparsable duration.
    #[error("{0}")]
    Duration(String),
    /// `checkPeriod` on an `accept` rule.
    #[error("checkPeriod is only valid with action \"check\"")]
    CheckPeriodNotCheck,
    /// A negative `checkPeriod`.
    #[error("checkPeriod {0} must be a positive duration")]
    CheckPeriodNegative(String),
    /// A `checkPeriod` over a week.
    #[error("checkPeriod {0} is above the max (168h)")]
    CheckPeriodTooLong(String),
    /// A malformed `sshTests` entry.
    #[error("test(s) failed: {0}")]
    SshTestsInvalid(String),
    /// A target or address that is neither a defined name nor an address.
    #[error("{0:?}: invalid address")]
    InvalidAddress(String),
    /// An unusable `ipPool` entry.
    #[error("IPPool({pool}): {reason}")]
    IpPool {
        /// The prefix.
        pool: String,
        /// Why.
        reason: &'static str,
    },
    /// Several problems found by validation, in policy order.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PolicyError>),
    /// An `autoApprovers.routes` key that is not a prefix.
    #[error("autoApprovers.routes: invalid prefix {0:?}")]
    RoutePrefix(String),
}
