//! What a provider says about a person, who may log in (`oidc.allowed_*`), and which tailwarden user they become.
//! Pure: no I/O, so every rule is tested on plain values.

use tailwarden_config::OidcConfig;

/// The claims about one login, taken from the verified ID token and, where the provider answers, its userinfo
/// endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `email`.
    pub email: Option<String>,
    /// `email_verified`; absent counts as unverified.
    pub email_verified: bool,
    /// `preferred_username`.
    pub preferred_username: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `groups`.
    pub groups: Vec<String>,
}

impl Identity {
    /// The stable key of this person: `iss` and `sub` joined by one slash, as Headscale stores it, so a database
    /// moved from Headscale keeps matching its users.
    pub fn provider_identifier(&self) -> String {
        format!("{}/{}", self.issuer.trim_end_matches('/'), self.subject.trim_start_matches('/'))
    }

    /// Overlays the userinfo endpoint's answer: each claim it carries wins, the ID token's value stays otherwise.
    /// Callers must only pass userinfo for the same subject.
    pub fn overlay(mut self, userinfo: Identity) -> Identity {
        if let Some(email) = userinfo.email {
            self.email = Some(email);
            self.email_verified = userinfo.email_verified;
        }
        self.preferred_username = userinfo.preferred_username.or(self.preferred_username);
        self.name = userinfo.name.or(self.name);
        if !userinfo.groups.is_empty() {
            self.groups = userinfo.groups;
        }
        self
    }
}

/// Why a login was refused by the allow-lists.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `oidc.allowed_groups` is set and the person is in none of them.
    #[error("you are not in any of the groups allowed to log in")]
    NotInAllowedGroup,
    /// An email allow-list is set, `oidc.email_verified_required` is on, and the provider did not verify the address.
    #[error("your email address is not verified by the identity provider")]
    UnverifiedEmail,
    /// `oidc.allowed_domains` is set and the address is in none of them (or there is no address).
    #[error("the email domain of {email:?} is not allowed to log in")]
    DomainNotAllowed {
        /// The address the provider gave, empty when it gave none.
        email: String,
    },
    /// `oidc.allowed_users` is set and the address is not in it.
    #[error("{email:?} is not allowed to log in")]
    UserNotAllowed {
        /// The address the provider gave, empty when it gave none.
        email: String,
    },
    /// The provider gave neither a usable `preferred_username` nor a trusted email address to name the user by.
    #[error("the identity provider gave no usable user name (preferred_username or a verified email)")]
    NoUserName,
}

/// The `oidc.*` rules deciding who may log in and how their user is named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules {
    /// `oidc.allowed_domains`, lower-cased.
    pub allowed_domains: Vec<String>,
    /// `oidc.allowed_users`, lower-cased.
    pub allowed_users: Vec<String>,
    /// `oidc.allowed_groups`, compared exactly: group names are the provider's identifiers.
    pub allowed_groups: Vec<String>,
    /// `oidc.email_verified_required`.
    pub email_verified_required: bool,
}

/// The user a login maps to, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserProfile {
    /// [`Identity::provider_identifier`]: how the user is found again on the next login.
    pub provider_identifier: String,
    /// The login name: `preferred_username`, else the trusted email address.
    pub name: String,
    /// `name`, else the login name.
    pub display_name: String,
    /// The email address when it can be trusted, else empty.
    pub email: String,
}

impl AccessRules {
    /// The rules of an `oidc` configuration section.
    pub fn from_config(config: &OidcConfig) -> AccessRules {
        let lower = |v: &[String]| v.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
        AccessRules {
            allowed_domains: lower(&config.allowed_domains),
            allowed_users: lower(&config.allowed_users),
            allowed_groups: config.allowed_groups.clone(),
            email_verified_required: config.email_verified_required,
        }
    }

    /// Applies the allow-lists in Headscale's order: groups, then (with a trusted address) domains and users. Email
    /// addresses and domains are compared without regard to ASCII case, as mail systems treat them.
    pub fn check(&self, identity: &Identity) -> Result<(), Refusal> {
        if !self.allowed_groups.is_empty() && !identity.groups.iter().any(|g| self.allowed_groups.contains(g)) {
            return Err(Refusal::NotInAllowedGroup);
        }
        if self.allowed_domains.is_empty() && self.allowed_users.is_empty() {
            return Ok(());
        }
        if !self.email_trusted(identity) {
            return Err(Refusal::UnverifiedEmail);
        }
        let email = identity.email.as_deref().unwrap_or_default().trim().to_ascii_lowercase();
        if !self.allowed_domains.is_empty() {
            let domain = email.rsplit_once('@').map(|(_, d)| d);
            if !domain.is_some_and(|d| self.allowed_domains.iter().any(|a| a == d)) {
                return Err(Refusal::DomainNotAllowed { email });
            }
        }
        if !self.allowed_users.is_empty() && !self.allowed_users.contains(&email) {
            return Err(Refusal::UserNotAllowed { email });
        }
        Ok(())
    }

    /// The user record an allowed identity maps to. The email address is only taken when verified (or when
    /// verification is not required), so an unverified claim cannot borrow someone else's address.
    pub fn profile(&self, identity: &Identity) -> Result<UserProfile, Refusal> {
        let email = identity
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| self.email_trusted(identity) && is_plausible_email(e))
            .unwrap_or_default();
        let name = identity
            .preferred_username
            .as_deref()
            .map(str::trim)
            .filter(|n| is_valid_user_name(n))
            .or(Some(email).filter(|e| !e.is_empty()))
            .ok_or(Refusal::NoUserName)?;
        let display_name = identity.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).unwrap_or(name);
        Ok(UserProfile {
            provider_identifier: identity.provider_identifier(),
            name: name.to_string(),
            display_name: display_name.to_string(),
            email: email.to_string(),
        })
    }

    fn email_trusted(&self, identity: &Identity) -> bool {
        !self.email_verified_required || identity.email_verified
    }
}

/// tailwarden's rule for user names (as for `users create`): non-empty, no whitespace or control characters.
fn is_valid_user_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// One `@` with something on both sides and no whitespace: enough to refuse junk without rejecting real addresses.
fn is_plausible_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            issuer: "http://127.0.0.1:9000/".into(),
            subject: "alice-sub".into(),
            email: Some("Alice@Example.com".into()),
            email_verified: true,
            preferred_username: Some("alice".into()),
            name: Some("Alice Liddell".into()),
            groups: vec!["staff".into(), "vpn".into()],
        }
    }

    fn rules(domains: &[&str], users: &[&str], groups: &[&str]) -> AccessRules {
        let mut config = tailwarden_config::Config::default().oidc;
        config.allowed_domains = domains.iter().map(|s| s.to_string()).collect();
        config.allowed_users = users.iter().map(|s| s.to_string()).collect();
        config.allowed_groups = groups.iter().map(|s| s.to_string()).collect();
        AccessRules::from_config(&config)
    }

    #[test]
    fn empty_lists_allow_everyone() {
        let r = rules(&[], &[], &[]);
        assert_eq!(r.check(&alice()), Ok(()));
        let nobody = Identity { email: None, email_verified: false, groups: vec![], ..alice() };
        assert_eq!(r.check(&nobody), Ok(()), "no email is fine without email lists");
    }

    #[test]
    fn domains_match_the_part_after_the_last_at_ignoring_case() {
        let r = rules(&["example.com"], &[], &[]);
        assert_eq!(r.check(&alice()), Ok(()));
        let other = Identity { email: Some("mallory@evil.example".into()), ..alice() };
        assert_eq!(r.check(&other), Err(Refusal::DomainNotAllowed { email: "mallory@evil.example".into() }));
        let suffix = Identity { email: Some("eve@notexample.com".into()), ..alice() };
        assert!(r.check(&suffix).is_err(), "a suffix is not the domain");
        let subdomain = Identity { email: Some("eve@sub.example.com".into()), ..alice() };
        assert!(r.check(&subdomain).is_err(), "subdomains are not included");
        let none = Identity { email: None, ..alice() };
        assert_eq!(r.check(&none), Err(Refusal::DomainNotAllowed { email: String::new() }));
    }

    #[test]
    fn users_are_whole_addresses() {
        let r = rules(&[], &["alice@example.com", "bob@example.com"], &[]);
        assert_eq!(r.check(&alice()), Ok(()));
        let carol = Identity { email: Some("carol@example.com".into()), ..alice() };
        assert_eq!(r.check(&carol), Err(Refusal::UserNotAllowed { email: "carol@example.com".into() }));
    }

    #[test]
    fn domains_and_users_both_apply() {
        let r = rules(&["example.com"], &["bob@example.com"], &[]);
        assert_eq!(r.check(&alice()), Err(Refusal::UserNotAllowed { email: "alice@example.com".into() }));
        let bob = Identity { email: Some("bob@example.com".into()), ..alice() };
        assert_eq!(r.check(&bob), Ok(()));
    }

    #[test]
    fn groups_need_one_exact_match() {
        assert_eq!(rules(&[], &[], &["admins", "vpn"]).check(&alice()), Ok(()));
        assert_eq!(rules(&[], &[], &["VPN"]).check(&alice()), Err(Refusal::NotInAllowedGroup));
        let lonely = Identity { groups: vec![], ..alice() };
        assert_eq!(rules(&[], &[], &["vpn"]).check(&lonely), Err(Refusal::NotInAllowedGroup));
    }

    #[test]
    fn groups_are_checked_before_email() {
        let r = rules(&["example.com"], &[], &["admins"]);
        let unverified = Identity { email_verified: false, ..alice() };
        assert_eq!(r.check(&unverified), Err(Refusal::NotInAllowedGroup));
    }

    #[test]
    fn unverified_email_fails_email_lists_only_when_verification_is_required() {
        let unverified = Identity { email_verified: false, ..alice() };
        let mut r = rules(&["example.com"], &[], &[]);
        assert_eq!(r.check(&unverified), Err(Refusal::UnverifiedEmail));
        assert_eq!(rules(&[], &[], &["vpn"]).check(&unverified), Ok(()), "no email list, no email check");
        r.email_verified_required = false;
        assert_eq!(r.check(&unverified), Ok(()));
    }

    #[test]
    fn profile_takes_username_name_and_email() {
        let p = rules(&[], &[], &[]).profile(&alice()).unwrap();
        assert_eq!(
            p,
            UserProfile {
                provider_identifier: "http://127.0.0.1:9000/alice-sub".into(),
                name: "alice".into(),
                display_name: "Alice Liddell".into(),
                email: "Alice@Example.com".into(),
            }
        );
    }

    #[test]
    fn provider_identifier_joins_with_one_slash() {
        let id = Identity { issuer: "https://idp.example".into(), subject: "/42".into(), ..alice() };
        assert_eq!(id.provider_identifier(), "https://idp.example/42");
        let id = Identity { issuer: "https://idp.example/realms/x/".into(), subject: "42".into(), ..alice() };
        assert_eq!(id.provider_identifier(), "https://idp.example/realms/x/42");
    }

    #[test]
    fn profile_falls_back_to_trusted_email_then_refuses() {
        let r = rules(&[], &[], &[]);
        let no_username = Identity { preferred_username: Some("Alice L".into()), name: None, ..alice() };
        let p = r.profile(&no_username).unwrap();
        assert_eq!((p.name.as_str(), p.display_name.as_str()), ("Alice@Example.com", "Alice@Example.com"));

        let unverified = Identity { preferred_username: None, email_verified: false, ..alice() };
        assert_eq!(r.profile(&unverified), Err(Refusal::NoUserName));

        let kept_out = Identity { email_verified: false, ..alice() };
        let p = r.profile(&kept_out).unwrap();
        assert_eq!((p.name.as_str(), p.email.as_str()), ("alice", ""), "an unverified address is not stored");

        let mut lax = r.clone();
        lax.email_verified_required = false;
        assert_eq!(lax.profile(&kept_out).unwrap().email, "Alice@Example.com");
        let junk = Identity { email: Some("not an address".into()), ..alice() };
        assert_eq!(lax.profile(&junk).unwrap().email, "");
    }

    #[test]
    fn userinfo_overrides_present_claims_only() {
        let token = Identity { groups: vec![], name: None, ..alice() };
        let info = Identity {
            email: Some("alice@corp.example".into()),
            email_verified: false,
            preferred_username: None,
            name: Some("Alice".into()),
            groups: vec!["vpn".into()],
            ..Identity::default()
        };
        let merged = token.overlay(info);
        assert_eq!(merged.email.as_deref(), Some("alice@corp.example"));
        assert!(!merged.email_verified, "verification goes with the address it belongs to");
        assert_eq!(merged.preferred_username.as_deref(), Some("alice"));
        assert_eq!(merged.name.as_deref(), Some("Alice"));
        assert_eq!(merged.groups, vec!["vpn".to_string()]);
        assert_eq!(merged.subject, "alice-sub");
    }
}
