//! Rules on the typed settings, including the ones that relate several keys. These mirror Headscale's start-up
//! checks, plus tailwarden's own for its extensions.

use std::net::SocketAddr;
use std::time::Duration;

use crate::defaults::{TAILSCALE_V4_RANGE, TAILSCALE_V6_RANGE, v4_range, v6_range};
use crate::duration::DisplayDuration;
use crate::error::{ConfigError, FieldError, Warning, WarningKind};
use crate::model::*;
use crate::net::{check_domain, check_nameserver, parse_http_url};

/// Ephemeral nodes must be allowed to miss a keep-alive (60s) and a little more before they are deleted.
const MIN_EPHEMERAL_INACTIVITY: Duration = Duration::from_secs(65);

impl Config {
    /// Checks the settings. `Ok` carries the warnings; `Err` lists every invalid setting.
    ///
    /// [`Config::load`] runs this already; call it after changing a [`Config`] in code.
    pub fn validate(&self) -> Result<Vec<Warning>, ConfigError> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        self.check(&mut errors, &mut warnings);
        if errors.is_empty() { Ok(warnings) } else { Err(ConfigError::Invalid(errors)) }
    }

    pub(crate) fn check(&self, errors: &mut Vec<FieldError>, warnings: &mut Vec<Warning>) {
        let mut err = |path: &str, message: String| errors.push(FieldError::new(path, message));

        let server = parse_http_url(&self.server_url);
        if let Err(message) = &server {
            err("server_url", message.clone());
        }

        // Listeners must not collide (STUN is UDP, so it may share a port number).
        let tcp: [(&str, Option<SocketAddr>); 4] = [
            ("listen_addr", Some(self.listen_addr)),
            ("metrics_listen_addr", self.metrics_listen_addr),
            ("tls_listen_addr", self.tls_listen_addr),
            ("tls_letsencrypt_listen", self.letsencrypt.hostname.is_some().then_some(self.letsencrypt.listen)),
        ];
        for (i, (path, addr)) in tcp.iter().enumerate() {
            let Some(addr) = addr else { continue };
            if let Some((other, _)) = tcp[..i].iter().find(|(_, a)| a.is_some_and(|a| a == *addr && a.port() != 0)) {
                err(path, format!("{addr} is already used by {other}"));
            }
        }

        // TLS.
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(_), None) => err("tls_key_path", "must be set when tls_cert_path is set".to_owned()),
            (None, Some(_)) => err("tls_cert_path", "must be set when tls_key_path is set".to_owned()),
            _ => {}
        }
        if self.tls_self_signed && (self.tls_cert_path.is_some() || self.tls_key_path.is_some()) {
            err("tls_self_signed", "cannot be true when tls_cert_path/tls_key_path are set".to_owned());
        }
        if self.letsencrypt.hostname.is_some() {
            if self.tls_cert_path.is_some() {
                err("tls_letsencrypt_hostname", "cannot be combined with tls_cert_path/tls_key_path".to_owned());
            }
            if self.tls_self_signed {
                err("tls_self_signed", "cannot be true when tls_letsencrypt_hostname is set".to_owned());
            }
        }

        for (i, net) in self.trusted_proxies.iter().enumerate() {
            if net.prefix_len() == 0 {
                err(&format!("trusted_proxies[{i}]"), format!("{net}: 0.0.0.0/0 and ::/0 are not allowed"));
            }
        }

        if self.noise.private_key_path.as_os_str().is_empty() {
            err("noise.private_key_path", "must not be empty".to_owned());
        }

        // Prefixes.
        if self.prefixes.v4.is_none() && self.prefixes.v6.is_none() {
            err("prefixes", "at least one of prefixes.v4 and prefixes.v6 must be set".to_owned());
        }
        if let Some(v4) = self.prefixes.v4
            && !v4_range().contains(&v4)
        {
            warnings.push(Warning::new(
                "prefixes.v4",
                WarningKind::NonStandardPrefix { prefix: v4.to_string(), standard: TAILSCALE_V4_RANGE },
            ));
        }
        if let Some(v6) = self.prefixes.v6
            && !v6_range().contains(&v6)
        {
            warnings.push(Warning::new(
                "prefixes.v6",
                WarningKind::NonStandardPrefix { prefix: v6.to_string(), standard: TAILSCALE_V6_RANGE },
            ));
        }

        // DERP.
        let s = &self.derp.server;
        if s.enabled {
            if s.stun_listen_addr.is_none() {
                err("derp.server.stun_listen_addr", "must be set when derp.server.enabled is true".to_owned());
            }
            if s.region_id == 0 {
                err("derp.server.region_id", "must be at least 1".to_owned());
            }
            if s.region_code.trim().is_empty() {
                err("derp.server.region_code", "must not be empty".to_owned());
            }
            if s.private_key_path.as_os_str().is_empty() {
                err("derp.server.private_key_path", "must not be empty".to_owned());
            }
            if !s.automatically_add_embedded_derp_region && self.derp.paths.is_empty() {
                err(
                    "derp.server.automatically_add_embedded_derp_region",
                    "false requires the embedded server's region to be described in a file under derp.paths".to_owned(),
                );
            }
            if s.automatically_add_embedded_derp_region
                && server.as_ref().is_ok_and(|u| !u.https)
                && self.tls_listen_addr.is_none()
            {
                warnings.push(Warning::new("derp.server.enabled", WarningKind::DerpWithoutTls));
            }
            if s.insecure_for_tests && !self.tls_self_signed {
                warnings
                    .push(Warning::new("derp.server.insecure_for_tests", WarningKind::InsecureDerpWithRealCertificate));
            }
        }
        for (i, url) in self.derp.urls.iter().enumerate() {
            if let Err(message) = parse_http_url(url) {
                err(&format!("derp.urls[{i}]"), message);
            }
        }
        if self.derp.auto_update_enabled && self.derp.update_frequency.is_zero() {
            err("derp.update_frequency", "must be more than 0s when derp.auto_update_enabled is true".to_owned());
        }
        let embedded = s.enabled && s.automatically_add_embedded_derp_region;
        if !embedded && self.derp.urls.is_empty() && self.derp.paths.is_empty() {
            warnings.push(Warning::new("derp", WarningKind::EmptyDerpMap));
        }

        // Node lifecycle.
        let timeout = self.node.ephemeral.inactivity_timeout;
        if timeout <= MIN_EPHEMERAL_INACTIVITY {
            err(
                "node.ephemeral.inactivity_timeout",
                format!(
                    "{} is too short; it must be more than {} (a missed keep-alive)",
                    DisplayDuration(timeout),
                    DisplayDuration(MIN_EPHEMERAL_INACTIVITY)
                ),
            );
        }
        let ha = &self.node.routes.ha;
        if !ha.probe_interval.is_zero() {
            if ha.probe_interval < Duration::from_secs(2) {
                err(
                    "node.routes.ha.probe_interval",
                    format!("{} must be at least 2s (or 0 to disable probing)", DisplayDuration(ha.probe_interval)),
                );
            }
            if ha.probe_timeout < Duration::from_secs(1) {
                err(
                    "node.routes.ha.probe_timeout",
                    format!("{} must be at least 1s", DisplayDuration(ha.probe_timeout)),
                );
            } else if ha.probe_timeout >= ha.probe_interval {
                err(
                    "node.routes.ha.probe_timeout",
                    format!(
                        "{} must be less than node.routes.ha.probe_interval ({})",
                        DisplayDuration(ha.probe_timeout),
                        DisplayDuration(ha.probe_interval)
                    ),
                );
            }
        }

        // Database.
        if self.database.kind == DatabaseType::Sqlite && self.database.sqlite.path.as_os_str().is_empty() {
            err("database.sqlite.path", "must not be empty".to_owned());
        }

        self.check_dns(server.ok().map(|u| u.host), &mut err);

        if self.unix_socket.as_os_str().is_empty() {
            err("unix_socket", "must not be empty".to_owned());
        }
        if self.unix_socket_permission > 0o777 {
            err(
                "unix_socket_permission",
                format!("{:o} is not a file mode (at most 0777)", self.unix_socket_permission),
            );
        }

        // OIDC is on when an issuer is set.
        if let Some(issuer) = &self.oidc.issuer {
            if let Err(message) = parse_http_url(issuer) {
                err("oidc.issuer", message);
            }
            if self.oidc.client_id.trim().is_empty() {
                err("oidc.client_id", "is required when oidc.issuer is set".to_owned());
            }
            if self.oidc.client_secret.is_empty() {
                err(
                    "oidc.client_secret",
                    "oidc.client_secret or oidc.client_secret_path is required when oidc.issuer is set".to_owned(),
                );
            }
        }
    }

    fn check_dns(&self, server_host: Option<String>, err: &mut impl FnMut(&str, String)) {
        let dns = &self.dns;
        let base = dns.base_domain.as_str();
        if base.is_empty() {
            if dns.magic_dns {
                err("dns.base_domain", "must be set when dns.magic_dns is true".to_owned());
            }
        } else if let Err(message) = check_domain(base) {
            err("dns.base_domain", message);
        } else if let Some(host) = server_host {
            // MagicDNS takes over base_domain on every client; a server_url inside it would become unreachable.
            let base = base.to_ascii_lowercase();
            if host == base {
                err("dns.base_domain", format!("must differ from the server_url host {host:?}"));
            } else if host.ends_with(&format!(".{base}")) {
                err(
                    "dns.base_domain",
                    format!(
                        "must not be a parent domain of the server_url host {host:?} (clients could not reach the \
                         server)"
                    ),
                );
            }
        }
        if dns.override_local_dns && dns.nameservers.global.is_empty() {
            err(
                "dns.nameservers.global",
                "must list at least one nameserver when dns.override_local_dns is true".to_owned(),
            );
        }
        for (i, ns) in dns.nameservers.global.iter().enumerate() {
            if let Err(message) = check_nameserver(ns) {
                err(&format!("dns.nameservers.global[{i}]"), message);
            }
        }
        for (domain, servers) in &dns.nameservers.split {
            if let Err(message) = check_domain(domain) {
                err(&format!("dns.nameservers.split.{domain}"), message);
            }
            for (i, ns) in servers.iter().enumerate() {
                if let Err(message) = check_nameserver(ns) {
                    err(&format!("dns.nameservers.split.{domain}[{i}]"), message);
                }
            }
        }
        for (i, domain) in dns.search_domains.iter().enumerate() {
            if let Err(message) = check_domain(domain) {
                err(&format!("dns.search_domains[{i}]"), message);
            }
        }
        if !dns.extra_records.is_empty() && dns.extra_records_path.is_some() {
            err(
                "dns.extra_records_path",
                "dns.extra_records and dns.extra_records_path are mutually exclusive".to_owned(),
            );
        }
    }
}
