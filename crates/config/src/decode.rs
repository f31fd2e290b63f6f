//! Turns the YAML tree into a [`Config`], one known key at a time. A value that cannot be converted is reported
//! with its key path and leaves the default in place, so every mistake is found in one pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_yaml::Value;

use crate::duration::{Spelling, parse_spelled};
use crate::error::{FieldError, Warning, WarningKind};
use crate::keys::{self, describe, key_text};
use crate::model::*;
use crate::net::parse_listen;

/// Decoding state: the tree, where values came from, and what was found.
pub(crate) struct Decoder<'a> {
    root: &'a Value,
    /// Which environment variable set which key.
    origins: &'a BTreeMap<&'static str, String>,
    /// The config file's directory, against which Headscale resolves relative key and database paths.
    base_dir: Option<&'a Path>,
    /// Looks up environment variables for `$VAR` expansion in `oidc.client_secret_path`.
    env: &'a dyn Fn(&str) -> Option<String>,
    pub errors: Vec<FieldError>,
    pub warnings: Vec<Warning>,
    /// Every key the decoder asked for; tests compare it with the key table.
    pub read: BTreeSet<&'static str>,
    /// Keys whose value came from a deprecated alias, mapped to the alias.
    pub aliases: BTreeMap<&'static str, &'static str>,
}

type Parsed<T> = Result<T, String>;

impl<'a> Decoder<'a> {
    pub(crate) fn new(
        root: &'a Value,
        origins: &'a BTreeMap<&'static str, String>,
        base_dir: Option<&'a Path>,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Decoder<'a> {
        Decoder {
            root,
            origins,
            base_dir,
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
            read: BTreeSet::new(),
            aliases: BTreeMap::new(),
        }
    }

    fn value(&mut self, path: &'static str) -> Option<&'a Value> {
        self.read.insert(path);
        keys::get(self.root, path)
    }

    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let mut message = message.into();
        let key = path.split('[').next().unwrap_or(&path);
        if let Some(var) = self.origins.get(key) {
            message.push_str(&format!(" (set by environment variable {var})"));
        }
        self.errors.push(FieldError::new(path, message));
    }

    /// Converts the value at `path` with `parse` into `target`, or records why not.
    fn field<T>(&mut self, path: &'static str, target: &mut T, parse: impl FnOnce(&Value) -> Parsed<T>) {
        if let Some(v) = self.value(path) {
            match parse(v) {
                Ok(x) => *target = x,
                Err(message) => self.fail(path, message),
            }
        }
    }

    fn string(&mut self, path: &'static str, target: &mut String) {
        self.field(path, target, text);
    }

    fn boolean(&mut self, path: &'static str, target: &mut bool) {
        self.field(path, target, boolean);
    }

    fn secret(&mut self, path: &'static str, target: &mut Secret) {
        self.field(path, target, |v| text(v).map(Secret::new));
    }

    fn list(&mut self, path: &'static str, target: &mut Vec<String>) {
        if let Some(items) = self.raw_list(path) {
            *target = items;
        }
    }

    fn raw_list(&mut self, path: &'static str) -> Option<Vec<String>> {
        let v = self.value(path)?;
        match list(v) {
            Ok(items) => Some(items),
            Err((Some(i), message)) => {
                self.fail(format!("{path}[{i}]"), message);
                None
            }
            Err((None, message)) => {
                self.fail(path, message);
                None
            }
        }
    }

    /// A string list whose items are then parsed one by one; errors name the item.
    fn parsed_list<T>(&mut self, path: &'static str, target: &mut Vec<T>, parse: impl Fn(&str) -> Parsed<T>) {
        let Some(items) = self.raw_list(path) else { return };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match parse(item) {
                Ok(x) => out.push(x),
                Err(message) => {
                    ok = false;
                    self.fail(format!("{path}[{i}]"), message);
                }
            }
        }
        if ok {
            *target = out;
        }
    }

    fn duration(&mut self, path: &'static str, target: &mut Duration) -> bool {
        let Some(v) = self.value(path) else { return false };
        let parsed = match v {
            Value::Number(n) => match n.as_u64() {
                Some(secs) => Ok((
                    Duration::from_secs(secs),
                    if secs == 0 { Spelling::Units } else { Spelling::BareSeconds(secs) },
                )),
                None => Err(format!("{n} is not a valid duration (use e.g. 30s, 5m, 1h30m, 7d)")),
            },
            Value::String(s) => parse_spelled(s).map_err(|e| format!("{s:?} is not a valid duration: {e}")),
            other => Err(format!("expected a duration such as 30m, found {}", describe(other))),
        };
        match parsed {
            Ok((d, spelling)) => {
                if let Spelling::BareSeconds(seconds) = spelling {
                    self.warnings.push(Warning::new(path, WarningKind::BareSeconds { seconds }));
                }
                *target = d;
                true
            }
            Err(message) => {
                self.fail(path, message);
                false
            }
        }
    }

    fn integer<T: TryFrom<u64>>(&mut self, path: &'static str, target: &mut T, range: &str) {
        self.field(path, target, |v| {
            let n = unsigned(v)?;
            T::try_from(n).map_err(|_| format!("{n} is out of range ({range})"))
        });
    }

    /// A file path; relative paths are resolved against the config file's directory when `resolve` is set.
    fn path(&mut self, path: &'static str, resolve: bool) -> Option<Option<PathBuf>> {
        let v = self.value(path)?;
        match text(v) {
            Ok(s) if s.trim().is_empty() => Some(None),
            Ok(s) => {
                let p = PathBuf::from(s.trim());
                Some(Some(match self.base_dir {
                    Some(base) if resolve && p.is_relative() => base.join(p),
                    _ => p,
                }))
            }
            Err(message) => {
                self.fail(path, message);
                None
            }
        }
    }

    /// A path that must not be empty.
    fn required_path(&mut self, path: &'static str, resolve: bool, target: &mut PathBuf) {
        match self.path(path, resolve) {
            Some(Some(p)) => *target = p,
            Some(None) => self.fail(path, "must not be empty"),
            None => {}
        }
    }

    fn optional_path(&mut self, path: &'static str, resolve: bool, target: &mut Option<PathBuf>) {
        if let Some(p) = self.path(path, resolve) {
            *target = p;
        }
    }

    /// An optional listen address; an empty value means `None`.
    fn optional_listen(&mut self, path: &'static str, target: &mut Option<SocketAddr>) {
        self.field(path, target, |v| {
            let s = text(v)?;
            if s.trim().is_empty() { Ok(None) } else { parse_listen(&s).map(Some) }
        });
    }

    /// Decodes every known key on top of `cfg` (which holds the defaults).
    pub(crate) fn decode(&mut self, cfg: &mut Config) {
        self.top_level(cfg);
        self.prefixes(&mut cfg.prefixes);
        self.derp(&mut cfg.derp);
        self.node(&mut cfg.node);
        self.duration("preauth_keys.revoked_retention", &mut cfg.preauth_keys.revoked_retention);
        self.database(&mut cfg.database);
        self.log(&mut cfg.log);
        self.policy(&mut cfg.policy);
        self.dns(&mut cfg.dns);
        self.oidc(&mut cfg.oidc);
        self.boolean("logtail.enabled", &mut cfg.logtail.enabled);
        self.boolean("taildrop.enabled", &mut cfg.taildrop.enabled);
        self.boolean("auto_update.enabled", &mut cfg.auto_update.enabled);
        self.boolean("randomize_client_port", &mut cfg.randomize_client_port);
        self.string("cli.address", &mut cfg.cli.address);
        self.secret("cli.api_key", &mut cfg.cli.api_key);
        self.duration("cli.timeout", &mut cfg.cli.timeout);
        self.boolean("cli.insecure", &mut cfg.cli.insecure);
        self.duration("tuning.batch_change_delay", &mut cfg.batch_change_delay);

        // Extensions whose defaults depend on other keys.
        let mut self_signed = None;
        self.field("tls_self_signed", &mut self_signed, |v| boolean(v).map(Some));
        cfg.tls_self_signed = self_signed
            .unwrap_or(cfg.tls_cert_path.is_none() && cfg.tls_key_path.is_none() && cfg.letsencrypt.hostname.is_none());
        let mut insecure = None;
        self.field("derp.server.insecure_for_tests", &mut insecure, |v| boolean(v).map(Some));
        cfg.derp.server.insecure_for_tests = insecure.unwrap_or(cfg.tls_self_signed);
    }

    fn top_level(&mut self, cfg: &mut Config) {
        self.field("server_url", &mut cfg.server_url, |v| text(v).map(|s| s.trim().trim_end_matches('/').to_owned()));
        self.field("listen_addr", &mut cfg.listen_addr, |v| {
            let s = text(v)?;
            if s.trim().is_empty() { Err("must not be empty".to_owned()) } else { parse_listen(&s) }
        });
        self.optional_listen("metrics_listen_addr", &mut cfg.metrics_listen_addr);
        self.optional_listen("tls_listen_addr", &mut cfg.tls_listen_addr);
        self.optional_path("tls_cert_path", true, &mut cfg.tls_cert_path);
        self.optional_path("tls_key_path", true, &mut cfg.tls_key_path);
        self.letsencrypt(&mut cfg.letsencrypt);
        self.parsed_list("trusted_proxies", &mut cfg.trusted_proxies, |s| {
            let net = match s.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => s.parse::<IpAddr>().map(IpNet::from).map_err(|_| format!("{s:?} is not an IP prefix"))?,
            };
            Ok(net.trunc())
        });
        self.required_path("noise.private_key_path", true, &mut cfg.noise.private_key_path);
        self.required_path("unix_socket", false, &mut cfg.unix_socket);
        self.field("unix_socket_permission", &mut cfg.unix_socket_permission, file_mode);
    }

    fn letsencrypt(&mut self, le: &mut LetsEncryptConfig) {
        self.field("tls_letsencrypt_hostname", &mut le.hostname, |v| acme_hostname(&text(v)?));
        self.required_path("tls_letsencrypt_cache_dir", true, &mut le.cache_dir);
        self.field("tls_letsencrypt_challenge_type", &mut le.challenge_type, |v| match text(v)?.trim() {
            "HTTP-01" => Ok(AcmeChallenge::Http01),
            "TLS-ALPN-01" => Err("TLS-ALPN-01 is not supported by tailwarden; use HTTP-01".to_owned()),
            other => Err(format!("must be \"HTTP-01\", found {other:?}")),
        });
        self.field("tls_letsencrypt_listen", &mut le.listen, |v| parse_listen(&named_port(&text(v)?)));
        self.field("acme_url", &mut le.directory_url, |v| {
            let s = text(v)?.trim().to_owned();
            if s.starts_with("https://") || s.starts_with("http://") {
                Ok(s)
            } else {
                Err(format!("{s:?} is not an http(s):// URL of an ACME directory"))
            }
        });
        self.field("acme_email", &mut le.email, |v| text(v).map(|s| s.trim().to_owned()));
        self.optional_path("tls_letsencrypt_ca_path", true, &mut le.ca_path);
    }

    fn prefixes(&mut self, p: &mut PrefixesConfig) {
        if let Some(v) = self.value("prefixes.v4") {
            match prefix::<Ipv4Net>(v, "IPv4", "100.64.0.0/10") {
                Ok(None) => p.v4 = None,
                Ok(Some(net)) => {
                    p.v4 = Some(net.trunc());
                    self.host_bits("prefixes.v4", net.to_string(), net.trunc().to_string());
                }
                Err(message) => self.fail("prefixes.v4", message),
            }
        }
        if let Some(v) = self.value("prefixes.v6") {
            match prefix::<Ipv6Net>(v, "IPv6", "fd7a:115c:a1e0::/48") {
                Ok(None) => p.v6 = None,
                Ok(Some(net)) => {
                    p.v6 = Some(net.trunc());
                    self.host_bits("prefixes.v6", net.to_string(), net.trunc().to_string());
                }
                Err(message) => self.fail("prefixes.v6", message),
            }
        }
        self.field("prefixes.allocation", &mut p.allocation, |v| match text(v)?.trim() {
            "sequential" => Ok(IpAllocation::Sequential),
            "random" => Ok(IpAllocation::Random),
            other => Err(format!("must be \"sequential\" or \"random\", found {other:?}")),
        });
    }

    fn host_bits(&mut self, path: &'static str, given: String, used: String) {
        if given != used {
            self.warnings.push(Warning::new(path, WarningKind::HostBitsSet { given, used }));
        }
    }

    fn derp(&mut self, d: &mut DerpConfig) {
        let s = &mut d.server;
        self.boolean("derp.server.enabled", &mut s.enabled);
        self.integer("derp.server.region_id", &mut s.region_id, "1 to 4294967295");
        self.string("derp.server.region_code", &mut s.region_code);
        self.string("derp.server.region_name", &mut s.region_name);
        self.boolean("derp.server.verify_clients", &mut s.verify_clients);
        self.optional_listen("derp.server.stun_listen_addr", &mut s.stun_listen_addr);
        self.required_path("derp.server.private_key_path", true, &mut s.private_key_path);
        self.boolean(
            "derp.server.automatically_add_embedded_derp_region",
            &mut s.automatically_add_embedded_derp_region,
        );
        self.field("derp.server.ipv4", &mut s.ipv4, |v| optional_parse::<Ipv4Addr>(v, "an IPv4 address"));
        self.field("derp.server.ipv6", &mut s.ipv6, |v| optional_parse::<Ipv6Addr>(v, "an IPv6 address"));
        self.list("derp.urls", &mut d.urls);
        self.parsed_list("derp.paths", &mut d.paths, |s| Ok(PathBuf::from(s)));
        self.boolean("derp.auto_update_enabled", &mut d.auto_update_enabled);
        self.duration("derp.update_frequency", &mut d.update_frequency);
    }

    fn node(&mut self, n: &mut NodeConfig) {
        let mut expiry = Duration::ZERO;
        if self.duration("node.expiry", &mut expiry) {
            n.expiry = (!expiry.is_zero()).then_some(expiry);
        }
        const NEW: &str = "node.ephemeral.inactivity_timeout";
        const OLD: &str = "ephemeral_node_inactivity_timeout";
        if self.value(NEW).is_some() {
            self.duration(NEW, &mut n.ephemeral.inactivity_timeout);
        } else if self.duration(OLD, &mut n.ephemeral.inactivity_timeout) {
            self.aliases.insert(NEW, OLD);
        }
        self.duration("node.routes.ha.probe_interval", &mut n.routes.ha.probe_interval);
        self.duration("node.routes.ha.probe_timeout", &mut n.routes.ha.probe_timeout);
    }

    fn database(&mut self, db: &mut DatabaseConfig) {
        self.field("database.type", &mut db.kind, |v| match text(v)?.trim() {
            "sqlite" | "sqlite3" => Ok(DatabaseType::Sqlite),
            "postgres" => Ok(DatabaseType::Postgres),
            other => Err(format!("must be \"sqlite\" or \"postgres\", found {other:?}")),
        });
        self.boolean("database.debug", &mut db.debug);
        self.required_path("database.sqlite.path", true, &mut db.sqlite.path);
        self.boolean("database.sqlite.write_ahead_log", &mut db.sqlite.write_ahead_log);
        self.integer("database.sqlite.wal_autocheckpoint", &mut db.sqlite.wal_autocheckpoint, "0 to 4294967295");
        let pg = &mut db.postgres;
        self.string("database.postgres.host", &mut pg.host);
        self.field("database.postgres.port", &mut pg.port, |v| {
            if let Value::String(s) = v
                && s.trim().is_empty()
            {
                return Ok(None);
            }
            let n = unsigned(v)?;
            match u16::try_from(n) {
                Ok(0) => Ok(None),
                Ok(port) => Ok(Some(port)),
                Err(_) => Err(format!("{n} is not a port (1-65535)")),
            }
        });
        self.string("database.postgres.name", &mut pg.name);
        self.string("database.postgres.user", &mut pg.user);
        self.secret("database.postgres.pass", &mut pg.pass);
        self.integer("database.postgres.max_open_conns", &mut pg.max_open_conns, "0 to 4294967295");
        self.integer("database.postgres.max_idle_conns", &mut pg.max_idle_conns, "0 to 4294967295");
        self.integer("database.postgres.conn_max_idle_time_secs", &mut pg.conn_max_idle_time_secs, "seconds");
        self.field("database.postgres.ssl", &mut pg.ssl, |v| {
            if let Ok(b) = boolean(v) {
                return Ok(if b { PgSslMode::Require } else { PgSslMode::Disable });
            }
            match text(v)?.trim() {
                "disable" => Ok(PgSslMode::Disable),
                "allow" => Ok(PgSslMode::Allow),
                "prefer" => Ok(PgSslMode::Prefer),
                "require" => Ok(PgSslMode::Require),
                "verify-ca" => Ok(PgSslMode::VerifyCa),
                "verify-full" => Ok(PgSslMode::VerifyFull),
                other => Err(format!(
                    "must be true, false, or an sslmode (disable, allow, prefer, require, verify-ca, verify-full), \
                     found {other:?}"
                )),
            }
        });
    }

    fn log(&mut self, l: &mut LogConfig) {
        self.field("log.level", &mut l.level, |v| match text(v)?.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            "fatal" => Ok(LogLevel::Fatal),
            "panic" => Ok(LogLevel::Panic),
            "disabled" | "off" => Ok(LogLevel::Disabled),
            other => {
                Err(format!("must be one of trace, debug, info, warn, error, fatal, panic, disabled; found {other:?}"))
            }
        });
        self.field("log.format", &mut l.format, |v| match text(v)?.trim() {
            "text" | "" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("must be \"text\" or \"json\", found {other:?}")),
        });
    }

    fn policy(&mut self, p: &mut PolicyConfig) {
        self.field("policy.mode", &mut p.mode, |v| match text(v)?.trim() {
            "file" => Ok(PolicyMode::File),
            "database" => Ok(PolicyMode::Database),
            other => Err(format!("must be \"file\" or \"database\", found {other:?}")),
        });
        // Headscale reads the policy path relative to the working directory, not the config file.
        self.optional_path("policy.path", false, &mut p.path);
    }

    fn dns(&mut self, d: &mut DnsConfig) {
        self.boolean("dns.magic_dns", &mut d.magic_dns);
        self.field("dns.base_domain", &mut d.base_domain, |v| text(v).map(|s| s.trim().to_owned()));
        self.boolean("dns.override_local_dns", &mut d.override_local_dns);
        self.list("dns.nameservers.global", &mut d.nameservers.global);
        if let Some(v) = self.value("dns.nameservers.split") {
            match split_nameservers(v) {
                Ok(split) => d.nameservers.split = split,
                Err((path, message)) => self.fail(format!("dns.nameservers.split{path}"), message),
            }
        }
        self.list("dns.search_domains", &mut d.search_domains);
        if let Some(v) = self.value("dns.extra_records") {
            self.extra_records(v, &mut d.extra_records);
        }
        self.optional_path("dns.extra_records_path", false, &mut d.extra_records_path);
    }

    fn extra_records(&mut self, v: &Value, target: &mut Vec<DnsRecord>) {
        match records("dns.extra_records", v, &mut self.warnings) {
            Ok(records) => *target = records,
            Err(errors) => {
                for e in errors {
                    self.fail(e.path, e.message);
                }
            }
        }
    }

    fn oidc(&mut self, o: &mut OidcConfig) {
        self.boolean("oidc.only_start_if_oidc_is_available", &mut o.only_start_if_oidc_is_available);
        self.field("oidc.issuer", &mut o.issuer, |v| {
            let s = text(v)?;
            Ok((!s.trim().is_empty()).then(|| s.trim().to_owned()))
        });
        self.string("oidc.client_id", &mut o.client_id);
        self.secret("oidc.client_secret", &mut o.client_secret);
        self.boolean("oidc.use_expiry_from_token", &mut o.use_expiry_from_token);
        self.list("oidc.scope", &mut o.scope);
        self.boolean("oidc.email_verified_required", &mut o.email_verified_required);
        if let Some(v) = self.value("oidc.extra_params") {
            match string_map(v) {
                Ok(map) => o.extra_params = map,
                Err((path, message)) => self.fail(format!("oidc.extra_params{path}"), message),
            }
        }
        self.list("oidc.allowed_domains", &mut o.allowed_domains);
        self.list("oidc.allowed_users", &mut o.allowed_users);
        self.list("oidc.allowed_groups", &mut o.allowed_groups);
        self.boolean("oidc.pkce.enabled", &mut o.pkce.enabled);
        self.field("oidc.pkce.method", &mut o.pkce.method, |v| match text(v)?.trim() {
            "plain" => Ok(PkceMethod::Plain),
            "S256" | "s256" => Ok(PkceMethod::S256),
            other => Err(format!("must be \"plain\" or \"S256\", found {other:?}")),
        });

        const PATH: &str = "oidc.client_secret_path";
        let Some(Some(raw)) = self.path(PATH, false) else { return };
        let expanded = PathBuf::from(expand_env(&raw.to_string_lossy(), self.env));
        if !o.client_secret.is_empty() {
            return self.fail(PATH, "oidc.client_secret and oidc.client_secret_path are mutually exclusive");
        }
        match std::fs::read_to_string(&expanded) {
            Ok(secret) => o.client_secret = Secret::new(secret.trim()),
            Err(e) => self.fail(PATH, format!("cannot read {}: {e}", expanded.display())),
        }
        o.client_secret_path = Some(expanded);
    }
}

/// A scalar as text (numbers and booleans are written out, as Headscale's viper does).
/// A list of A/AAAA records (`dns.extra_records`, or the file `dns.extra_records_path`); the keys of each record
/// are matched case-insensitively, as Go's JSON decoder does. Errors are located under `at`.
pub(crate) fn records(at: &str, v: &Value, warnings: &mut Vec<Warning>) -> Result<Vec<DnsRecord>, Vec<FieldError>> {
    let Value::Sequence(items) = v else {
        return Err(vec![FieldError::new(at, format!("expected a list of records, found {}", describe(v)))]);
    };
    let mut out = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let Value::Mapping(map) = item else {
            errors.push(FieldError::new(
                at,
                format!("expected a record with name, type and value, found {}", describe(item)),
            ));
            continue;
        };
        let mut fields: BTreeMap<String, &Value> = BTreeMap::new();
        for (k, v) in map {
            let name = key_text(k).unwrap_or_default().to_ascii_lowercase();
            if matches!(name.as_str(), "name" | "type" | "value") {
                fields.insert(name, v);
            } else {
                warnings.push(Warning::new(format!("{at}.{name}"), WarningKind::UnknownKey { suggestion: None }));
            }
        }
        let get = |f: &str| fields.get(f).map(|v| text(v)).transpose();
        let (name, kind, value) = match (get("name"), get("type"), get("value")) {
            (Ok(n), Ok(t), Ok(v)) => (n.unwrap_or_default(), t.unwrap_or_default(), v.unwrap_or_default()),
            _ => {
                errors.push(FieldError::new(at, "name, type and value must be strings"));
                continue;
            }
        };
        if name.trim().is_empty() {
            errors.push(FieldError::new(format!("{at}.name"), "must not be empty"));
            continue;
        }
        // Such a name is never a DNS name, and its JSON escape would make tailscale-rs drop the whole map message.
        if name.trim().chars().any(|c| c == '"' || c == '\\' || c.is_whitespace() || c.is_control()) {
            errors.push(FieldError::new(format!("{at}.name"), format!("{name:?} is not a DNS name")));
            continue;
        }
        let parsed = match kind.trim().to_ascii_uppercase().as_str() {
            "A" => value.trim().parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| "an IPv4 address for an A record"),
            "AAAA" => {
                value.trim().parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| "an IPv6 address for an AAAA record")
            }
            "" => value.trim().parse::<IpAddr>().map_err(|_| "an IP address"),
            other => {
                errors.push(FieldError::new(
                    format!("{at}.type"),
                    format!("only A and AAAA records are supported, found {other:?}"),
                ));
                continue;
            }
        };
        match parsed {
            Ok(ip) => out.push(DnsRecord { name: name.trim().to_owned(), value: ip }),
            Err(expected) => {
                errors.push(FieldError::new(format!("{at}.value"), format!("{value:?} is not {expected}")))
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn text(v: &Value) -> Parsed<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("expected a string, found {}", describe(other))),
    }
}

/// A boolean, also from the strings Go's `strconv.ParseBool` and YAML 1.1 accept.
fn boolean(v: &Value) -> Parsed<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "on" => Ok(true),
            "false" | "f" | "0" | "no" | "off" => Ok(false),
            other => Err(format!("expected true or false, found {other:?}")),
        },
        other => Err(format!("expected true or false, found {}", describe(other))),
    }
}

fn unsigned(v: &Value) -> Parsed<u64> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("expected a non-negative whole number, found {n}")),
        Value::String(s) => {
            s.trim().parse::<u64>().map_err(|_| format!("expected a non-negative whole number, found {s:?}"))
        }
        other => Err(format!("expected a whole number, found {}", describe(other))),
    }
}

/// A list of strings: a YAML sequence of scalars, or one string split on whitespace and commas (how list keys
/// arrive from environment variables). On error, the index of the bad item if it is one.
fn list(v: &Value) -> Result<Vec<String>, (Option<usize>, String)> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Sequence(_) | Value::Mapping(_) | Value::Null | Value::Tagged(_) => {
                    Err((Some(i), format!("expected a string, found {}", describe(item))))
                }
                scalar => text(scalar).map_err(|m| (Some(i), m)),
            })
            .collect(),
        Value::String(s) => {
            Ok(s.split(|c: char| c.is_whitespace() || c == ',').filter(|p| !p.is_empty()).map(str::to_owned).collect())
        }
        other => Err((None, format!("expected a list, found {}", describe(other)))),
    }
}

/// `dns.nameservers.split`: domain → nameservers (a list, or one string).
fn split_nameservers(v: &Value) -> Result<BTreeMap<String, Vec<String>>, (String, String)> {
    let Value::Mapping(map) = v else {
        return Err((String::new(), format!("expected a mapping of domain to nameservers, found {}", describe(v))));
    };
    let mut out = BTreeMap::new();
    for (k, servers) in map {
        let domain =
            key_text(k).ok_or_else(|| (String::new(), format!("a domain must be a string, found {}", describe(k))))?;
        let servers = match servers {
            Value::Null => Vec::new(),
            other => list(other)
                .map_err(|(i, m)| (format!(".{domain}{}", i.map(|i| format!("[{i}]")).unwrap_or_default()), m))?,
        };
        out.insert(domain, servers);
    }
    Ok(out)
}

/// A mapping of string to string (`oidc.extra_params`).
fn string_map(v: &Value) -> Result<BTreeMap<String, String>, (String, String)> {
    let Value::Mapping(map) = v else {
        return Err((String::new(), format!("expected a mapping, found {}", describe(v))));
    };
    let mut out = BTreeMap::new();
    for (k, value) in map {
        let name =
            key_text(k).ok_or_else(|| (String::new(), format!("a key must be a string, found {}", describe(k))))?;
        let value = text(value).map_err(|m| (format!(".{name}"), m))?;
        out.insert(name, value);
    }
    Ok(out)
}

/// `tls_letsencrypt_hostname`: a DNS name (lower-cased), or `None` when empty. IP addresses are refused because
/// Let's Encrypt issues only for names.
fn acme_hostname(s: &str) -> Parsed<Option<String>> {
    let name = s.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Ok(None);
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!("{name:?} is an IP address; a DNS name is required"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{name:?} is not a DNS name (expected e.g. headscale.example.com, without scheme or port)"
        ));
    }
    Ok(Some(name))
}

/// Go's named ports in a listen address (`:http`, `:https`), as Headscale's default `tls_letsencrypt_listen`
/// uses them.
fn named_port(s: &str) -> String {
    let s = s.trim();
    match s.rsplit_once(':') {
        Some((host, "http")) => format!("{host}:80"),
        Some((host, "https")) => format!("{host}:443"),
        _ => s.to_owned(),
    }
}

/// An optional prefix of one family; empty means `None`.
fn prefix<N: FromStr>(v: &Value, family: &str, example: &str) -> Parsed<Option<N>> {
    let s = text(v)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<N>().map(Some).map_err(|_| format!("{s:?} is not a valid {family} prefix (expected e.g. {example})"))
}

/// An optional parsed scalar; empty means `None`.
fn optional_parse<T: FromStr>(v: &Value, what: &str) -> Parsed<Option<T>> {
    let s = text(v)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<T>().map(Some).map_err(|_| format!("{s:?} is not {what}"))
}

/// A Unix file mode written in octal: `"0770"`, `"770"` or `"0o770"`. An unquoted YAML number such as `0770` is
/// read digit by digit as octal too, since that is what the writer meant.
fn file_mode(v: &Value) -> Parsed<u32> {
    let s = text(v)?;
    let s = s.trim();
    let digits = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")).unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.is_empty() => Ok(mode),
        _ => Err(format!("{s:?} is not an octal file mode such as \"0770\"")),
    }
}

/// Expands `$VAR` and `${VAR}` as Go's `os.ExpandEnv` does (unset variables become empty).
pub(crate) fn expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(braced) = after.strip_prefix('{')
            && let Some(end) = braced.find('}')
        {
            out.push_str(&env(&braced[..end]).unwrap_or_default());
            rest = &braced[end + 1..];
            continue;
        }
        let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        if len == 0 {
            out.push('$');
        } else {
            out.push_str(&env(&after[..len]).unwrap_or_default());
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}
