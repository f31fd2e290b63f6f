//! The typed settings. Field names follow the YAML keys; each field's doc names its key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A tailwarden configuration: Headscale's `config.yaml` keys plus a few extensions.
///
/// [`Config::default`] is a working loopback setup that needs no file. [`Config::load`] reads a file, applies
/// environment overrides and validates the result.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The directory default file paths are derived from: `$TAILWARDEN_STATE_DIR`, else `./tailwarden-data`.
    /// Not a YAML key.
    pub state_dir: PathBuf,
    /// `server_url`: the URL clients connect to (`http://` or `https://`).
    pub server_url: String,
    /// `listen_addr`: where the HTTP server (control protocol, API, web) listens.
    pub listen_addr: SocketAddr,
    /// `metrics_listen_addr`: where `/metrics` and `/debug` listen; `None` (an empty value) disables it.
    pub metrics_listen_addr: Option<SocketAddr>,
    /// `tls_listen_addr` (tailwarden): an additional HTTPS listener serving the same routes, with the configured
    /// or self-signed certificate; `None` (an empty value) disables it.
    pub tls_listen_addr: Option<SocketAddr>,
    /// `tls_self_signed` (tailwarden): serve a generated self-signed certificate (for the names from
    /// [`Config::tls_subject_names`]). Defaults to true when neither `tls_cert_path` nor `tls_key_path` is set.
    pub tls_self_signed: bool,
    /// `tls_cert_path`: PEM certificate chain; relative paths are resolved against the config file's directory.
    pub tls_cert_path: Option<PathBuf>,
    /// `tls_key_path`: PEM private key for `tls_cert_path`.
    pub tls_key_path: Option<PathBuf>,
    /// `tls_letsencrypt_*`, `acme_url`, `acme_email`: certificates from an ACME CA (Let's Encrypt); active when
    /// `tls_letsencrypt_hostname` is set.
    pub letsencrypt: LetsEncryptConfig,
    /// `trusted_proxies`: reverse proxies whose forwarded-for headers are believed (host bits cleared; `/0`
    /// rejected).
    pub trusted_proxies: Vec<IpNet>,
    /// `noise`: the control protocol's key.
    pub noise: NoiseConfig,
    /// `prefixes`: address ranges nodes get their addresses from.
    pub prefixes: PrefixesConfig,
    /// `derp`: relay servers offered to clients and the embedded one.
    pub derp: DerpConfig,
    /// `node`: node lifecycle.
    pub node: NodeConfig,
    /// `preauth_keys`: pre-auth key lifecycle.
    pub preauth_keys: PreAuthKeysConfig,
    /// `database`: where state is kept.
    pub database: DatabaseConfig,
    /// `log`: log level and format.
    pub log: LogConfig,
    /// `policy`: where the access policy comes from.
    pub policy: PolicyConfig,
    /// `dns`: MagicDNS and resolver settings pushed to clients.
    pub dns: DnsConfig,
    /// `unix_socket`: the socket the local CLI uses without authentication.
    pub unix_socket: PathBuf,
    /// `unix_socket_permission`: the socket's file mode, octal in the file (`"0770"`).
    pub unix_socket_permission: u32,
    /// `oidc`: OpenID Connect login; active when `oidc.issuer` is set.
    pub oidc: OidcConfig,
    /// `logtail.enabled`: let clients send their logs to Tailscale's log service.
    pub logtail: Toggle,
    /// `taildrop.enabled`: offer Taildrop file sharing.
    pub taildrop: Toggle,
    /// `auto_update.enabled`: tell clients to auto-update by default.
    pub auto_update: Toggle,
    /// `randomize_client_port`: legacy server-wide default for `randomizeClientPort`, which Headscale moved into
    /// the policy file; accepted with a deprecation warning.
    pub randomize_client_port: bool,
    /// `cli`: how the CLI reaches a remote server.
    pub cli: CliConfig,
    /// `tuning.batch_change_delay`: how long the server collects changes before sending them to clients, so a
    /// burst reaches each client as one message. Headscale's default is 800ms; tailwarden's is 100ms.
    pub batch_change_delay: Duration,
}

/// `noise.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoiseConfig {
    /// `noise.private_key_path`: the server's machine key; generated when missing.
    pub private_key_path: PathBuf,
}

/// `prefixes.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixesConfig {
    /// `prefixes.v4`; `None` (an empty value) means no IPv4 addresses. At least one family is required.
    pub v4: Option<Ipv4Net>,
    /// `prefixes.v6`; `None` (an empty value) means no IPv6 addresses.
    pub v6: Option<Ipv6Net>,
    /// `prefixes.allocation`.
    pub allocation: IpAllocation,
}

/// `tls_letsencrypt_*`, `acme_url`, `acme_email`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LetsEncryptConfig {
    /// `tls_letsencrypt_hostname`: the name to obtain a certificate for; `None` (empty) disables ACME.
    pub hostname: Option<String>,
    /// `tls_letsencrypt_cache_dir`: where the ACME account and the certificate are kept across restarts.
    pub cache_dir: PathBuf,
    /// `tls_letsencrypt_challenge_type`: how the CA checks control of the hostname.
    pub challenge_type: AcmeChallenge,
    /// `tls_letsencrypt_listen`: where the HTTP-01 responder listens (`:http` is port 80 on all addresses).
    pub listen: SocketAddr,
    /// `acme_url`: the ACME directory; Let's Encrypt's production directory by default.
    pub directory_url: String,
    /// `acme_email`: contact address registered with the ACME account; empty registers none.
    pub email: String,
    /// `tls_letsencrypt_ca_path` (tailwarden): PEM CA certificates trusted for the connection to `acme_url`,
    /// besides the built-in and system roots; for private or test CAs.
    pub ca_path: Option<PathBuf>,
}

/// `tls_letsencrypt_challenge_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `HTTP-01`: the CA fetches `http://<hostname>/.well-known/acme-challenge/<token>` from
    /// `tls_letsencrypt_listen`.
    Http01,
}

/// How node addresses are picked (`prefixes.allocation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpAllocation {
    /// `sequential`: the next free address after the last one given.
    Sequential,
    /// `random`: a random free address.
    Random,
}

/// `derp.*`
#[derive(Clone, Debug, PartialEq)]
pub struct DerpConfig {
    /// `derp.server`: the embedded DERP relay and STUN server.
    pub server: DerpServerConfig,
    /// `derp.urls`: DERP maps (JSON) fetched over HTTP(S). Empty by default so nothing reaches the internet.
    pub urls: Vec<String>,
    /// `derp.paths`: local DERP map files (YAML).
    pub paths: Vec<PathBuf>,
    /// `derp.auto_update_enabled`: refresh `urls` and `paths` periodically.
    pub auto_update_enabled: bool,
    /// `derp.update_frequency`: how often to refresh.
    pub update_frequency: Duration,
}

/// `derp.server.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerpServerConfig {
    /// `derp.server.enabled`: run the embedded DERP server (on by default in tailwarden; off in Headscale).
    pub enabled: bool,
    /// `derp.server.region_id`: the embedded region's id; it wins over a region with the same id from
    /// `urls`/`paths`.
    pub region_id: u32,
    /// `derp.server.region_code`: short region name shown by clients.
    pub region_code: String,
    /// `derp.server.region_name`: long region name shown by clients.
    pub region_name: String,
    /// `derp.server.verify_clients`: only relay for nodes of this server.
    pub verify_clients: bool,
    /// `derp.server.stun_listen_addr`: the UDP STUN address; required when the server is enabled.
    pub stun_listen_addr: Option<SocketAddr>,
    /// `derp.server.private_key_path`: the DERP server's key; generated when missing.
    pub private_key_path: PathBuf,
    /// `derp.server.automatically_add_embedded_derp_region`: add the embedded region to the DERP map.
    pub automatically_add_embedded_derp_region: bool,
    /// `derp.server.ipv4`: public IPv4 address advertised in the DERP map.
    pub ipv4: Option<Ipv4Addr>,
    /// `derp.server.ipv6`: public IPv6 address advertised in the DERP map.
    pub ipv6: Option<Ipv6Addr>,
    /// `derp.server.insecure_for_tests` (tailwarden): set `InsecureForTests` on the embedded region's node so
    /// clients skip certificate verification. Defaults to [`Config::tls_self_signed`].
    pub insecure_for_tests: bool,
}

/// `node.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// `node.expiry`: default key expiry for untagged nodes; `None` (written `0`) means nodes do not expire.
    pub expiry: Option<Duration>,
    /// `node.ephemeral`.
    pub ephemeral: EphemeralConfig,
    /// `node.routes`.
    pub routes: NodeRoutesConfig,
}

/// `node.ephemeral.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EphemeralConfig {
    /// `node.ephemeral.inactivity_timeout` (formerly `ephemeral_node_inactivity_timeout`): how long an ephemeral
    /// node may be offline before it is deleted; must exceed 65s.
    pub inactivity_timeout: Duration,
}

/// `node.routes.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRoutesConfig {
    /// `node.routes.ha`.
    pub ha: HaProbeConfig,
}

/// `node.routes.ha.*`: health probing of subnet routers that share a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaProbeConfig {
    /// `node.routes.ha.probe_interval`: zero disables probing; otherwise at least 2s.
    pub probe_interval: Duration,
    /// `node.routes.ha.probe_timeout`: at least 1s and less than the interval.
    pub probe_timeout: Duration,
}

/// `preauth_keys.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreAuthKeysConfig {
    /// `preauth_keys.revoked_retention`: how long a revoked key stays listed before deletion; zero disables
    /// deletion.
    pub revoked_retention: Duration,
}

/// `database.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `database.type`.
    pub kind: DatabaseType,
    /// `database.debug`: log SQL statements.
    pub debug: bool,
    /// `database.sqlite`.
    pub sqlite: SqliteConfig,
    /// `database.postgres`.
    pub postgres: PostgresConfig,
}

/// `database.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseType {
    /// `sqlite` (or `sqlite3`).
    Sqlite,
    /// `postgres`.
    Postgres,
}

/// `database.sqlite.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteConfig {
    /// `database.sqlite.path`; created if missing.
    pub path: PathBuf,
    /// `database.sqlite.write_ahead_log`.
    pub write_ahead_log: bool,
    /// `database.sqlite.wal_autocheckpoint`: WAL pages before an automatic checkpoint; 0 disables.
    pub wal_autocheckpoint: u32,
}

/// `database.postgres.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `database.postgres.host`: a host name, an IP address, or a Unix socket directory (starting with `/`).
    pub host: String,
    /// `database.postgres.port`; `None` uses the driver's default (5432).
    pub port: Option<u16>,
    /// `database.postgres.name`: the database.
    pub name: String,
    /// `database.postgres.user`.
    pub user: String,
    /// `database.postgres.pass`.
    pub pass: Secret,
    /// `database.postgres.ssl`: `true` (require), `false` (disable) or a libpq `sslmode`.
    pub ssl: PgSslMode,
    /// `database.postgres.max_open_conns`.
    pub max_open_conns: u32,
    /// `database.postgres.max_idle_conns`.
    pub max_idle_conns: u32,
    /// `database.postgres.conn_max_idle_time_secs`.
    pub conn_max_idle_time_secs: u64,
}

/// libpq's `sslmode` values (`database.postgres.ssl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgSslMode {
    /// `disable` (also `false`).
    Disable,
    /// `allow`.
    Allow,
    /// `prefer`.
    Prefer,
    /// `require` (also `true`).
    Require,
    /// `verify-ca`.
    VerifyCa,
    /// `verify-full`.
    VerifyFull,
}

impl PgSslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PgSslMode::Disable => "disable",
            PgSslMode::Allow => "allow",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }
}

/// `log.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `log.level`.
    pub level: LogLevel,
    /// `log.format`.
    pub format: LogFormat,
}

/// `log.level`: Headscale's (zerolog's) level names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn` (also `warning`).
    Warn,
    /// `error`.
    Error,
    /// `fatal`: only errors are logged.
    Fatal,
    /// `panic`: only errors are logged.
    Panic,
    /// `disabled` (also `off`): nothing is logged.
    Disabled,
}

impl LogLevel {
    /// The equivalent `tracing` filter directive: `trace`, `debug`, `info`, `warn`, `error` or `off`.
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Fatal | LogLevel::Panic => "error",
            LogLevel::Disabled => "off",
        }
    }
}

/// `log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `text` (also an empty value).
    Text,
    /// `json`.
    Json,
}

/// `policy.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// `policy.mode`.
    pub mode: PolicyMode,
    /// `policy.path`: the HuJSON policy file in `file` mode; `None` (empty) means no policy (allow all).
    pub path: Option<PathBuf>,
}

/// `policy.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyMode {
    /// `file`: read from `policy.path`.
    File,
    /// `database`: stored in the database, changed through the API or CLI.
    Database,
}

/// `dns.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// `dns.magic_dns`: resolve node names under `base_domain`.
    pub magic_dns: bool,
    /// `dns.base_domain`: the MagicDNS domain; must not be, or be a parent of, the server_url host.
    pub base_domain: String,
    /// `dns.override_local_dns`: make clients use `nameservers.global` instead of their own resolvers; requires
    /// at least one global nameserver.
    pub override_local_dns: bool,
    /// `dns.nameservers`.
    pub nameservers: Nameservers,
    /// `dns.search_domains`: search domains after `base_domain`.
    pub search_domains: Vec<String>,
    /// `dns.extra_records`: additional A/AAAA records.
    pub extra_records: Vec<DnsRecord>,
    /// `dns.extra_records_path`: a JSON file of records, watched for changes; exclusive with `extra_records`.
    pub extra_records_path: Option<PathBuf>,
}

/// `dns.nameservers.*`
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Nameservers {
    /// `dns.nameservers.global`: IP addresses or DoH/DoT URLs.
    pub global: Vec<String>,
    /// `dns.nameservers.split`: per-domain nameservers.
    pub split: BTreeMap<String, Vec<String>>,
}

/// One entry of `dns.extra_records`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// `name`: the fully qualified name.
    pub name: String,
    /// `type` and `value`: the address (an `A` record holds an IPv4 address, `AAAA` an IPv6 one).
    pub value: IpAddr,
}

impl DnsRecord {
    /// `A` or `AAAA`.
    pub fn record_type(&self) -> &'static str {
        if self.value.is_ipv4() { "A" } else { "AAAA" }
    }
}

/// `oidc.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcConfig {
    /// `oidc.only_start_if_oidc_is_available`: refuse to start while the provider is unreachable.
    pub only_start_if_oidc_is_available: bool,
    /// `oidc.issuer`: the provider's URL; OIDC is on when this is set.
    pub issuer: Option<String>,
    /// `oidc.client_id`.
    pub client_id: String,
    /// `oidc.client_secret`, or the contents of `oidc.client_secret_path` (trimmed) when that is set.
    pub client_secret: Secret,
    /// `oidc.client_secret_path`, with `$VAR`/`${VAR}` expanded; read at load time.
    pub client_secret_path: Option<PathBuf>,
    /// `oidc.use_expiry_from_token`: expire nodes when the ID token expires instead of after `node.expiry`.
    pub use_expiry_from_token: bool,
    /// `oidc.scope`.
    pub scope: Vec<String>,
    /// `oidc.email_verified_required`: only take verified email addresses.
    pub email_verified_required: bool,
    /// `oidc.extra_params`: extra query parameters for the authorization endpoint.
    pub extra_params: BTreeMap<String, String>,
    /// `oidc.allowed_domains`: email domains allowed to log in (empty: any).
    pub allowed_domains: Vec<String>,
    /// `oidc.allowed_users`: email addresses allowed to log in (empty: any).
    pub allowed_users: Vec<String>,
    /// `oidc.allowed_groups`: groups of which a user must be in at least one (empty: any).
    pub allowed_groups: Vec<String>,
    /// `oidc.pkce`.
    pub pkce: PkceConfig,
}

/// `oidc.pkce.*`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkceConfig {
    /// `oidc.pkce.enabled`.
    pub enabled: bool,
    /// `oidc.pkce.method`.
    pub method: PkceMethod,
}

/// `oidc.pkce.method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PkceMethod {
    /// `plain`.
    Plain,
    /// `S256`.
    S256,
}

/// A section whose only key is `enabled` (`logtail`, `taildrop`, `auto_update`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Toggle {
    /// `<section>.enabled`.
    pub enabled: bool,
}

/// `cli.*`: how `tailwarden` CLI verbs reach a remote server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliConfig {
    /// `cli.address`: a remote server; empty uses `unix_socket`.
    pub address: String,
    /// `cli.api_key`.
    pub api_key: Secret,
    /// `cli.timeout`.
    pub timeout: Duration,
    /// `cli.insecure`: skip certificate verification for `address`.
    pub insecure: bool,
}

/// A secret string that `Debug` does not print.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(\"\")" } else { "Secret(<redacted>)" })
    }
}
