//! Defaults: a loopback setup that works without a file and never reaches the internet.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::model::*;

/// The environment variable that moves the default state directory.
pub const STATE_DIR_ENV: &str = "TAILWARDEN_STATE_DIR";

/// The state directory used when [`STATE_DIR_ENV`] is not set: relative, so a quick start works without root.
pub const DEFAULT_STATE_DIR: &str = "./tailwarden-data";

/// Tailscale's IPv4 range (CGNAT); node addresses must come from inside it.
pub const TAILSCALE_V4_RANGE: &str = "100.64.0.0/10";

/// Tailscale's IPv6 range (its ULA prefix); node addresses must come from inside it.
pub const TAILSCALE_V6_RANGE: &str = "fd7a:115c:a1e0::/48";

pub(crate) fn v4_range() -> Ipv4Net {
    // Invariant: a constant, valid prefix.
    Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10).expect("valid constant prefix")
}

pub(crate) fn v6_range() -> Ipv6Net {
    // Invariant: a constant, valid prefix.
    Ipv6Net::new(std::net::Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0), 48).expect("valid constant prefix")
}

/// The state directory from an environment lookup: the value of [`STATE_DIR_ENV`] if set and non-empty, else
/// [`DEFAULT_STATE_DIR`].
pub(crate) fn state_dir_from(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    match env(STATE_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_STATE_DIR),
    }
}

/// Let's Encrypt's production ACME directory, the default `acme_url` (as in Headscale).
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

impl Default for Config {
    /// The loopback defaults, with file paths under `$TAILWARDEN_STATE_DIR` (or `./tailwarden-data`).
    fn default() -> Config {
        Config::with_state_dir(state_dir_from(|k| std::env::var(k).ok()))
    }
}

impl Config {
    /// The defaults with file paths under `state_dir`.
    pub fn with_state_dir(state_dir: impl AsRef<Path>) -> Config {
        let dir = state_dir.as_ref();
        Config {
            state_dir: dir.to_path_buf(),
            server_url: "http://127.0.0.1:8080".to_owned(),
            listen_addr: loopback(8080),
            metrics_listen_addr: Some(loopback(9090)),
            tls_listen_addr: Some(loopback(8443)),
            tls_self_signed: true,
            tls_cert_path: None,
            tls_key_path: None,
            letsencrypt: LetsEncryptConfig {
                hostname: None,
                cache_dir: dir.join("cache"),
                challenge_type: AcmeChallenge::Http01,
                listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80),
                directory_url: LETS_ENCRYPT_PRODUCTION.to_owned(),
                email: String::new(),
                ca_path: None,
            },
            trusted_proxies: Vec::new(),
            noise: NoiseConfig { private_key_path: dir.join("noise_private.key") },
            prefixes: PrefixesConfig {
                v4: Some(v4_range()),
                v6: Some(v6_range()),
                allocation: IpAllocation::Sequential,
            },
            derp: DerpConfig {
                server: DerpServerConfig {
                    enabled: true,
                    region_id: 999,
                    region_code: "headscale".to_owned(),
                    region_name: "Headscale Embedded DERP".to_owned(),
                    verify_clients: true,
                    stun_listen_addr: Some(loopback(3478)),
                    private_key_path: dir.join("derp_server_private.key"),
                    automatically_add_embedded_derp_region: true,
                    ipv4: None,
                    ipv6: None,
                    insecure_for_tests: true,
                },
                urls: Vec::new(),
                paths: Vec::new(),
                auto_update_enabled: false,
                update_frequency: Duration::from_secs(3 * 3600),
            },
            node: NodeConfig {
                expiry: None,
                ephemeral: EphemeralConfig { inactivity_timeout: Duration::from_secs(30 * 60) },
                routes: NodeRoutesConfig {
                    ha: HaProbeConfig {
                        probe_interval: Duration::from_secs(10),
                        probe_timeout: Duration::from_secs(5),
                    },
                },
            },
            preauth_keys: PreAuthKeysConfig { revoked_retention: Duration::from_secs(168 * 3600) },
            database: DatabaseConfig {
                kind: DatabaseType::Sqlite,
                debug: false,
                sqlite: SqliteConfig { path: dir.join("db.sqlite"), write_ahead_log: true, wal_autocheckpoint: 1000 },
                postgres: PostgresConfig {
                    host: String::new(),
                    port: None,
                    name: String::new(),
                    user: String::new(),
                    pass: Secret::default(),
                    ssl: PgSslMode::Disable,
                    max_open_conns: 10,
                    max_idle_conns: 10,
                    conn_max_idle_time_secs: 3600,
                },
            },
            log: LogConfig { level: LogLevel::Info, format: LogFormat::Text },
            policy: PolicyConfig { mode: PolicyMode::File, path: None },
            dns: DnsConfig {
                magic_dns: true,
                base_domain: "tailnet.internal".to_owned(),
                override_local_dns: false,
                nameservers: Nameservers { global: Vec::new(), split: BTreeMap::new() },
                search_domains: Vec::new(),
                extra_records: Vec::new(),
                extra_records_path: None,
            },
            unix_socket: dir.join("tailwarden.sock"),
            unix_socket_permission: 0o770,
            oidc: OidcConfig {
                only_start_if_oidc_is_available: true,
                issuer: None,
                client_id: String::new(),
                client_secret: Secret::default(),
                client_secret_path: None,
                use_expiry_from_token: false,
                scope: vec!["openid".to_owned(), "profile".to_owned(), "email".to_owned()],
                email_verified_required: true,
                extra_params: BTreeMap::new(),
                allowed_domains: Vec::new(),
                allowed_users: Vec::new(),
                allowed_groups: Vec::new(),
                pkce: PkceConfig { enabled: false, method: PkceMethod::S256 },
            },
            logtail: Toggle { enabled: false },
            taildrop: Toggle { enabled: true },
            auto_update: Toggle { enabled: false },
            randomize_client_port: false,
            cli: CliConfig {
                address: String::new(),
                api_key: Secret::default(),
                timeout: Duration::from_secs(5),
                insecure: false,
            },
            batch_change_delay: Duration::from_millis(100),
        }
    }
}
