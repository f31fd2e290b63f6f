//! The set of known keys: what each one is, whether it is acted on, and how an environment variable maps to
//! it. Unknown keys, removed keys and accepted-but-inert keys are found by walking the YAML tree against it.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use crate::error::{FieldError, Warning, WarningKind};

/// What shape a key's value has; decides whether an environment variable can set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string, number or boolean.
    Scalar,
    /// A list of strings; from the environment, split on whitespace and commas.
    List,
    /// A free-form mapping (its own keys are data, not settings); not settable from the environment.
    Map,
    /// A list of structured entries; not settable from the environment.
    Records,
}

/// When an accepted-but-inert key gets an informational note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoteWhen {
    /// Whenever it is present.
    Present,
    /// When it asks for something: true, a non-empty string, a non-zero number, a non-empty list.
    Truthy,
    /// Once for the section, whenever any of its keys is present.
    Section(&'static str),
    /// Never: the key has no effect in Headscale either.
    Never,
}

/// What tailwarden does with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Decoded into [`crate::Config`].
    Used,
    /// Decoded and used, with a deprecation warning.
    Deprecated { replacement: &'static str },
    /// Renamed: an error unless the new key is also set, in which case this one is ignored with a note.
    Renamed { replacement: &'static str },
    /// Removed in Headscale; an error naming what to do instead.
    Removed { hint: &'static str },
    /// Accepted for compatibility; not decoded.
    Ignored { reason: &'static str, note: NoteWhen },
}

/// One known key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key {
    pub path: &'static str,
    pub kind: Kind,
    pub status: Status,
}

const fn key(path: &'static str, kind: Kind) -> Key {
    Key { path, kind, status: Status::Used }
}

const fn ignored(path: &'static str, kind: Kind, reason: &'static str, note: NoteWhen) -> Key {
    Key { path, kind, status: Status::Ignored { reason, note } }
}

const fn renamed(path: &'static str, kind: Kind, replacement: &'static str) -> Key {
    Key { path, kind, status: Status::Renamed { replacement } }
}

const fn removed(path: &'static str, hint: &'static str) -> Key {
    Key { path, kind: Kind::Scalar, status: Status::Removed { hint } }
}

use Kind::{List, Map, Records, Scalar};

const GRPC: &str = "tailwarden has no gRPC API (nor does current Headscale); use the REST API at /api/v1";
const GORM: &str = "GORM settings do not apply to tailwarden's database layer";
const TUNING: &str = "Headscale's internal tuning knobs do not map onto tailwarden's engine";

/// Every key tailwarden knows, in the order of Headscale's example file.
pub(crate) const KEYS: &[Key] = &[
    key("server_url", Scalar),
    key("listen_addr", Scalar),
    key("metrics_listen_addr", Scalar),
    ignored("grpc_listen_addr", Scalar, GRPC, NoteWhen::Truthy),
    ignored("grpc_allow_insecure", Scalar, GRPC, NoteWhen::Truthy),
    key("trusted_proxies", List),
    key("tls_listen_addr", Scalar),
    key("tls_self_signed", Scalar),
    key("noise.private_key_path", Scalar),
    key("prefixes.v4", Scalar),
    key("prefixes.v6", Scalar),
    key("prefixes.allocation", Scalar),
    key("derp.server.enabled", Scalar),
    key("derp.server.region_id", Scalar),
    key("derp.server.region_code", Scalar),
    key("derp.server.region_name", Scalar),
    key("derp.server.verify_clients", Scalar),
    key("derp.server.stun_listen_addr", Scalar),
    ignored(
        "derp.server.stun.enabled",
        Scalar,
        "STUN runs whenever the embedded DERP server does (Headscale ignores this key too)",
        NoteWhen::Never,
    ),
    key("derp.server.private_key_path", Scalar),
    key("derp.server.automatically_add_embedded_derp_region", Scalar),
    key("derp.server.ipv4", Scalar),
    key("derp.server.ipv6", Scalar),
    key("derp.server.insecure_for_tests", Scalar),
    key("derp.urls", List),
    key("derp.paths", List),
    key("derp.auto_update_enabled", Scalar),
    key("derp.update_frequency", Scalar),
    ignored("disable_check_updates", Scalar, "tailwarden never checks for updates", NoteWhen::Never),
    key("node.expiry", Scalar),
    key("node.ephemeral.inactivity_timeout", Scalar),
    key("node.routes.ha.probe_interval", Scalar),
    key("node.routes.ha.probe_timeout", Scalar),
    Key {
        path: "ephemeral_node_inactivity_timeout",
        kind: Scalar,
        status: Status::Deprecated { replacement: "`node.ephemeral.inactivity_timeout`" },
    },
    key("preauth_keys.revoked_retention", Scalar),
    key("database.type", Scalar),
    key("database.debug", Scalar),
    ignored("database.gorm.prepare_stmt", Scalar, GORM, NoteWhen::Section("database.gorm")),
    ignored("database.gorm.parameterized_queries", Scalar, GORM, NoteWhen::Section("database.gorm")),
    ignored("database.gorm.skip_err_record_not_found", Scalar, GORM, NoteWhen::Section("database.gorm")),
    ignored("database.gorm.slow_threshold", Scalar, GORM, NoteWhen::Section("database.gorm")),
    key("database.sqlite.path", Scalar),
    key("database.sqlite.write_ahead_log", Scalar),
    key("database.sqlite.wal_autocheckpoint", Scalar),
    key("database.postgres.host", Scalar),
    key("database.postgres.port", Scalar),
    key("database.postgres.name", Scalar),
    key("database.postgres.user", Scalar),
    key("database.postgres.pass", Scalar),
    key("database.postgres.max_open_conns", Scalar),
    key("database.postgres.max_idle_conns", Scalar),
    key("database.postgres.conn_max_idle_time_secs", Scalar),
    key("database.postgres.ssl", Scalar),
    key("acme_url", Scalar),
    key("acme_email", Scalar),
    key("tls_letsencrypt_hostname", Scalar),
    key("tls_letsencrypt_cache_dir", Scalar),
    key("tls_letsencrypt_challenge_type", Scalar),
    key("tls_letsencrypt_listen", Scalar),
    key("tls_letsencrypt_ca_path", Scalar),
    key("tls_cert_path", Scalar),
    key("tls_key_path", Scalar),
    key("log.level", Scalar),
    key("log.format", Scalar),
    key("policy.mode", Scalar),
    key("policy.path", Scalar),
    key("dns.magic_dns", Scalar),
    key("dns.base_domain", Scalar),
    key("dns.override_local_dns", Scalar),
    key("dns.nameservers.global", List),
    key("dns.nameservers.split", Map),
    key("dns.search_domains", List),
    key("dns.extra_records", Records),
    key("dns.extra_records_path", Scalar),
    key("unix_socket", Scalar),
    key("unix_socket_permission", Scalar),
    key("oidc.only_start_if_oidc_is_available", Scalar),
    key("oidc.issuer", Scalar),
    key("oidc.client_id", Scalar),
    key("oidc.client_secret", Scalar),
    key("oidc.client_secret_path", Scalar),
    key("oidc.use_expiry_from_token", Scalar),
    key("oidc.scope", List),
    key("oidc.email_verified_required", Scalar),
    key("oidc.extra_params", Map),
    key("oidc.allowed_domains", List),
    key("oidc.allowed_users", List),
    key("oidc.allowed_groups", List),
    key("oidc.pkce.enabled", Scalar),
    key("oidc.pkce.method", Scalar),
    key("logtail.enabled", Scalar),
    key("taildrop.enabled", Scalar),
    key("auto_update.enabled", Scalar),
    Key {
        path: "randomize_client_port",
        kind: Scalar,
        status: Status::Deprecated {
            replacement: "`\"randomizeClientPort\": true` at the top level of the policy file (Headscale 0.29 \
                          removed this key)",
        },
    },
    key("cli.address", Scalar),
    key("cli.api_key", Scalar),
    key("cli.timeout", Scalar),
    key("cli.insecure", Scalar),
    ignored("tuning.notifier_send_timeout", Scalar, TUNING, NoteWhen::Present),
    key("tuning.batch_change_delay", Scalar),
    ignored("tuning.node_mapsession_buffered_chan_size", Scalar, TUNING, NoteWhen::Present),
    ignored("tuning.batcher_workers", Scalar, TUNING, NoteWhen::Present),
    ignored("tuning.register_cache_expiration", Scalar, TUNING, NoteWhen::Present),
    ignored("tuning.register_cache_max_entries", Scalar, TUNING, NoteWhen::Present),
    ignored("tuning.node_store_batch_size", Scalar, TUNING, NoteWhen::Present),
    ignored("tuning.node_store_batch_timeout", Scalar, TUNING, NoteWhen::Present),
    renamed("acl_policy_path", Scalar, "policy.path"),
    renamed("dns_config.magic_dns", Scalar, "dns.magic_dns"),
    renamed("dns_config.base_domain", Scalar, "dns.base_domain"),
    renamed("dns_config.override_local_dns", Scalar, "dns.override_local_dns"),
    renamed("dns_config.nameservers", List, "dns.nameservers.global"),
    renamed("dns_config.restricted_nameservers", Map, "dns.nameservers.split"),
    renamed("dns_config.domains", List, "dns.search_domains"),
    renamed("dns_config.extra_records", Records, "dns.extra_records"),
    removed("dns.use_username_in_magic_dns", "removed in Headscale; MagicDNS names no longer include the user"),
    removed("dns_config.use_username_in_magic_dns", "removed in Headscale; MagicDNS names no longer include the user"),
    removed("oidc.expiry", "removed in Headscale; use `node.expiry` (it applies to every registration method)"),
    removed("oidc.strip_email_domain", "removed in Headscale 0.26"),
    removed("oidc.map_legacy_users", "removed in Headscale 0.26"),
];

/// The known key with exactly this (lower-case, dotted) path.
pub(crate) fn lookup(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// Whether `path` is a section: a proper prefix of some known key.
fn is_section(path: &str) -> bool {
    KEYS.iter().any(|k| k.path.len() > path.len() && k.path.starts_with(path) && k.path.as_bytes()[path.len()] == b'.')
}

/// The value at a dotted path, matching keys case-insensitively as Headscale (viper) does. `null` counts as
/// absent.
pub(crate) fn get<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let mut node = root;
    for part in path.split('.') {
        let map = node.as_mapping()?;
        node = map.iter().find(|(k, _)| key_text(k).is_some_and(|t| t.eq_ignore_ascii_case(part))).map(|(_, v)| v)?;
    }
    if node.is_null() { None } else { Some(node) }
}

/// A mapping key as text, if it is a scalar.
pub(crate) fn key_text(k: &Value) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Sets the value at a dotted path, creating (or replacing non-mapping) intermediate sections. An existing key
/// is matched case-insensitively and keeps its spelling.
pub(crate) fn set(root: &mut Value, path: &str, value: Value) {
    let mut node = root;
    for part in path.split('.') {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else { unreachable!("made a mapping just above") };
        let existing = map.keys().find(|k| key_text(k).is_some_and(|t| t.eq_ignore_ascii_case(part))).cloned();
        let k = existing.unwrap_or_else(|| Value::String(part.to_owned()));
        node = map.entry(k).or_insert(Value::Null);
    }
    *node = value;
}

/// The environment variable names for a key: `TAILWARDEN_` and `HEADSCALE_` followed by the path upper-cased
/// with `.` replaced by `_`, in order of precedence.
pub(crate) fn env_names(path: &str) -> [String; 2] {
    let tail = path.replace('.', "_").to_ascii_uppercase();
    [format!("TAILWARDEN_{tail}"), format!("HEADSCALE_{tail}")]
}

/// Writes environment overrides into the tree. Returns which variable set which key.
pub(crate) fn apply_env(root: &mut Value, env: &BTreeMap<String, String>) -> BTreeMap<&'static str, String> {
    let mut origins = BTreeMap::new();
    for k in KEYS {
        if !matches!(k.kind, Kind::Scalar | Kind::List) {
            continue;
        }
        if let Some((name, value)) = env_names(k.path).into_iter().find_map(|n| env.get(&n).map(|v| (n, v.clone()))) {
            set(root, k.path, Value::String(value));
            origins.insert(k.path, name);
        }
    }
    origins
}

/// Walks the tree: warns about unknown keys, deprecated and renamed ones, notes inert ones, and reports removed
/// keys and non-mapping sections as errors.
pub(crate) fn check_keys(root: &Value, warnings: &mut Vec<Warning>, errors: &mut Vec<FieldError>) {
    let mut noted_sections = Vec::new();
    walk(root, "", root, warnings, errors, &mut noted_sections);
}

fn walk(
    node: &Value,
    prefix: &str,
    root: &Value,
    warnings: &mut Vec<Warning>,
    errors: &mut Vec<FieldError>,
    noted_sections: &mut Vec<&'static str>,
) {
    let Some(map) = node.as_mapping() else {
        if !node.is_null() {
            let path = if prefix.is_empty() { "config" } else { prefix };
            errors.push(FieldError::new(path, format!("expected a mapping of keys, found {}", describe(node))));
        }
        return;
    };
    for (k, v) in map {
        let Some(name) = key_text(k) else {
            let at = if prefix.is_empty() { "config" } else { prefix };
            errors.push(FieldError::new(at, format!("a key must be a plain string, found {}", describe(k))));
            continue;
        };
        let path = if prefix.is_empty() {
            name.to_ascii_lowercase()
        } else {
            format!("{prefix}.{}", name.to_ascii_lowercase())
        };
        if let Some(known) = lookup(&path) {
            on_known_key(known, v, root, warnings, errors, noted_sections);
        } else if is_section(&path) {
            walk(v, &path, root, warnings, errors, noted_sections);
        } else {
            warnings.push(Warning::new(path.clone(), WarningKind::UnknownKey { suggestion: suggest(&path) }));
        }
    }
}

fn on_known_key(
    known: &'static Key,
    value: &Value,
    root: &Value,
    warnings: &mut Vec<Warning>,
    errors: &mut Vec<FieldError>,
    noted_sections: &mut Vec<&'static str>,
) {
    if value.is_null() {
        return;
    }
    match known.status {
        Status::Used => {}
        Status::Deprecated { replacement } => {
            warnings.push(Warning::new(known.path, WarningKind::Deprecated { replacement }))
        }
        Status::Renamed { replacement } => {
            if get(root, replacement).is_some() {
                warnings.push(Warning::new(known.path, WarningKind::Superseded { by: replacement }));
            } else {
                errors.push(FieldError::new(known.path, format!("this key was renamed; use `{replacement}`")));
            }
        }
        Status::Removed { hint } => errors.push(FieldError::new(known.path, format!("this key was {hint}"))),
        Status::Ignored { reason, note } => {
            let path = match note {
                NoteWhen::Present => Some(known.path),
                NoteWhen::Truthy if truthy(value) => Some(known.path),
                NoteWhen::Section(section) if !noted_sections.contains(&section) => {
                    noted_sections.push(section);
                    Some(section)
                }
                _ => None,
            };
            if let Some(path) = path {
                warnings.push(Warning::new(path, WarningKind::NotActedOn { reason }));
            }
        }
    }
}

/// Whether a value asks for something.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.trim().is_empty() && !s.eq_ignore_ascii_case("false"),
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        Value::Tagged(t) => truthy(&t.value),
    }
}

/// A short description of a value's type for error messages.
pub(crate) fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The known key most similar to an unknown one, if any is close.
fn suggest(path: &str) -> Option<&'static str> {
    let last = path.rsplit('.').next().unwrap_or(path);
    let leaf = |k: &str| k.rsplit('.').next().unwrap_or(k).to_owned();
    let candidates = || KEYS.iter().filter(|k| matches!(k.status, Status::Used | Status::Ignored { .. }));
    let same_leaf = candidates().filter(|k| leaf(k.path) == last).count();
    candidates()
        .map(|k| {
            // Compare whole paths, and also the last segment alone so a right key in the wrong section is found.
            let whole = edit_distance(path, k.path);
            let moved = if same_leaf == 1 && leaf(k.path) == last { 1 } else { usize::MAX };
            (whole.min(moved), k.path)
        })
        .filter(|(d, k)| *d <= (k.len() / 4).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
