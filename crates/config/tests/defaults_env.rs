//! Defaults, environment overrides and derived values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tailwarden_config::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn from_env(yaml: Option<&str>, pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    Config::from_sources(&Sources { yaml: yaml.map(str::to_owned), file: None, env: env(pairs) })
}

#[test]
fn defaults_validate_without_warnings() {
    let cfg = Config::with_state_dir("./tailwarden-data");
    let warnings = cfg.validate().unwrap_or_else(|e| panic!("defaults must validate:\n{e}"));
    assert!(warnings.is_empty(), "{warnings:#?}");
    // Loading nothing gives the same thing.
    let (loaded, warnings) = from_env(None, &[]).unwrap();
    assert_eq!(loaded, cfg);
    assert!(warnings.is_empty());
}

#[test]
fn defaults_are_loopback_and_offline() {
    let cfg = Config::with_state_dir("./tailwarden-data");
    let d = PathBuf::from("./tailwarden-data");
    assert_eq!(cfg.server_url, "http://127.0.0.1:8080");
    assert_eq!(cfg.listen_addr, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(cfg.metrics_listen_addr, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(cfg.tls_listen_addr, Some("127.0.0.1:8443".parse().unwrap()));
    assert!(cfg.tls_self_signed);
    assert_eq!(cfg.noise.private_key_path, d.join("noise_private.key"));
    assert_eq!(cfg.prefixes.v4.unwrap().to_string(), TAILSCALE_V4_RANGE);
    assert_eq!(cfg.prefixes.v6.unwrap().to_string(), TAILSCALE_V6_RANGE);
    assert_eq!(cfg.prefixes.allocation, IpAllocation::Sequential);
    assert_eq!(cfg.database.kind, DatabaseType::Sqlite);
    assert_eq!(cfg.database.sqlite.path, d.join("db.sqlite"));
    assert!(cfg.database.sqlite.write_ahead_log);
    let s = &cfg.derp.server;
    assert!(s.enabled && s.automatically_add_embedded_derp_region && s.verify_clients && s.insecure_for_tests);
    assert_eq!(
        (s.region_id, s.region_code.as_str(), s.region_name.as_str()),
        (999, "headscale", "Headscale Embedded DERP")
    );
    assert_eq!(s.stun_listen_addr, Some("127.0.0.1:3478".parse().unwrap()));
    assert_eq!(s.private_key_path, d.join("derp_server_private.key"));
    assert!(cfg.derp.urls.is_empty(), "the default must not point clients at Tailscale's public DERP map");
    assert!(cfg.derp.paths.is_empty());
    assert!(!cfg.derp.auto_update_enabled);
    assert_eq!(cfg.node.ephemeral.inactivity_timeout, Duration::from_secs(1800));
    assert!(cfg.dns.magic_dns);
    assert_eq!(cfg.dns.base_domain, "tailnet.internal");
    assert!(!cfg.dns.override_local_dns);
    assert!(cfg.dns.nameservers.global.is_empty());
    assert_eq!(cfg.unix_socket, d.join("tailwarden.sock"));
    assert_eq!(cfg.unix_socket_permission, 0o770);
    assert_eq!(cfg.log.level, LogLevel::Info);
    assert_eq!(cfg.log.format, LogFormat::Text);
    assert_eq!(cfg.policy.mode, PolicyMode::File);
    assert_eq!(cfg.policy.path, None);
    assert!(!cfg.logtail.enabled);
    assert!(!cfg.randomize_client_port);
    assert_eq!(cfg.database_url(), "sqlite://./tailwarden-data/db.sqlite?mode=rwc");
    assert_eq!(cfg.tls_subject_names(), ["127.0.0.1"]);
}

#[test]
fn state_dir_comes_from_the_environment() {
    let (cfg, _) = from_env(None, &[("TAILWARDEN_STATE_DIR", "/srv/tw")]).unwrap();
    assert_eq!(cfg.state_dir, PathBuf::from("/srv/tw"));
    assert_eq!(cfg.database.sqlite.path, PathBuf::from("/srv/tw/db.sqlite"));
    assert_eq!(cfg.noise.private_key_path, PathBuf::from("/srv/tw/noise_private.key"));
}

#[test]
fn env_overrides_file_values() {
    let yaml = "database:\n  type: sqlite\nlisten_addr: 127.0.0.1:8080\n";
    let (cfg, warnings) = from_env(
        Some(yaml),
        &[
            ("HEADSCALE_DATABASE_TYPE", "postgres"),
            ("HEADSCALE_DATABASE_POSTGRES_HOST", "db.internal"),
            ("HEADSCALE_DATABASE_POSTGRES_PORT", "5433"),
            ("TAILWARDEN_LISTEN_ADDR", "127.0.0.1:18080"),
            ("HEADSCALE_LISTEN_ADDR", "127.0.0.1:28080"),
            ("HEADSCALE_DNS_MAGIC_DNS", "false"),
            ("HEADSCALE_DNS_NAMESERVERS_GLOBAL", "1.1.1.1 9.9.9.9,8.8.8.8"),
            ("HEADSCALE_NODE_EPHEMERAL_INACTIVITY_TIMEOUT", "2h"),
            ("HEADSCALE_SOMETHING_ELSE", "ignored"),
        ],
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:#?}");
    assert_eq!(cfg.database.kind, DatabaseType::Postgres);
    assert_eq!(cfg.database.postgres.host, "db.internal");
    assert_eq!(cfg.database.postgres.port, Some(5433));
    assert_eq!(cfg.listen_addr.port(), 18080, "TAILWARDEN_ wins over HEADSCALE_");
    assert!(!cfg.dns.magic_dns);
    assert_eq!(cfg.dns.nameservers.global, ["1.1.1.1", "9.9.9.9", "8.8.8.8"]);
    assert_eq!(cfg.node.ephemeral.inactivity_timeout, Duration::from_secs(7200));
}

#[test]
fn env_errors_name_the_key_and_the_variable() {
    let err = from_env(None, &[("HEADSCALE_DATABASE_TYPE", "mysql"), ("TAILWARDEN_PREFIXES_V4", "100.64.0.0/33")])
        .unwrap_err();
    let errors = err.field_errors();
    assert_eq!(errors.len(), 2, "{err}");
    assert_eq!(errors[0].path, "prefixes.v4");
    assert!(errors[0].message.ends_with("(set by environment variable TAILWARDEN_PREFIXES_V4)"), "{}", errors[0]);
    assert_eq!(errors[1].path, "database.type");
    assert!(errors[1].message.contains("HEADSCALE_DATABASE_TYPE"));
}

#[test]
fn env_var_names() {
    assert_eq!(env_vars_for("database.type").unwrap(), ["TAILWARDEN_DATABASE_TYPE", "HEADSCALE_DATABASE_TYPE"]);
    assert_eq!(env_vars_for("dns.nameservers.split"), None);
    assert_eq!(env_vars_for("no.such.key"), None);
    assert!(known_keys().any(|k| k == "derp.server.insecure_for_tests"));
}

#[test]
fn extensions_follow_the_certificate_choice() {
    let (cfg, w) = Config::from_yaml_str("tls_cert_path: /etc/tw/cert.pem\ntls_key_path: /etc/tw/key.pem\n").unwrap();
    assert!(!cfg.tls_self_signed);
    assert!(!cfg.derp.server.insecure_for_tests);
    assert!(w.is_empty(), "{w:#?}");
    let (cfg, w) = Config::from_yaml_str("tls_self_signed: false\n").unwrap();
    assert!(!cfg.tls_self_signed && !cfg.derp.server.insecure_for_tests);
    assert!(w.is_empty());
    let (cfg, _) = Config::from_yaml_str("derp:\n  server:\n    insecure_for_tests: false\n").unwrap();
    assert!(cfg.tls_self_signed && !cfg.derp.server.insecure_for_tests);
}

#[test]
fn derp_warnings() {
    let (_, w) = Config::from_yaml_str("derp:\n  server:\n    enabled: false\n").unwrap();
    assert_eq!(w.iter().map(|w| &w.kind).collect::<Vec<_>>(), [&WarningKind::EmptyDerpMap]);
    let (_, w) = Config::from_yaml_str("tls_listen_addr: \"\"\n").unwrap();
    assert_eq!(w.iter().map(|w| &w.kind).collect::<Vec<_>>(), [&WarningKind::DerpWithoutTls]);
}

#[test]
fn database_urls() {
    let mut cfg = Config::with_state_dir("/var/lib/tw");
    assert_eq!(cfg.database_url(), "sqlite:///var/lib/tw/db.sqlite?mode=rwc");
    cfg.database.sqlite.path = PathBuf::from("/data/what?#%.db");
    assert_eq!(cfg.database_url(), "sqlite:///data/what%3F%23%25.db?mode=rwc");

    cfg.database.kind = DatabaseType::Postgres;
    let pg = &mut cfg.database.postgres;
    pg.host = "db.internal".into();
    pg.port = Some(5432);
    pg.name = "headscale".into();
    pg.user = "hs user".into();
    pg.pass = Secret::new("p@ss:w/rd%");
    pg.ssl = PgSslMode::Require;
    assert_eq!(
        cfg.database_url(),
        "postgres://hs%20user:p%40ss%3Aw%2Frd%25@db.internal:5432/headscale?sslmode=require"
    );

    let pg = &mut cfg.database.postgres;
    pg.host = "/var/run/postgresql".into();
    pg.port = None;
    pg.pass = Secret::default();
    pg.ssl = PgSslMode::Disable;
    assert_eq!(cfg.database_url(), "postgres://hs%20user@%2Fvar%2Frun%2Fpostgresql/headscale?sslmode=disable");

    let pg = &mut cfg.database.postgres;
    pg.host = "::1".into();
    pg.user = String::new();
    assert_eq!(cfg.database_url(), "postgres://[::1]/headscale?sslmode=disable");

    // From YAML, as Headscale writes `ssl`.
    let (cfg, _) = Config::from_yaml_str(
        "database:\n  type: postgres\n  postgres:\n    host: localhost\n    port: 5432\n    name: headscale\n    \
         user: foo\n    pass: bar\n    ssl: false\n",
    )
    .unwrap();
    assert_eq!(cfg.database_url(), "postgres://foo:bar@localhost:5432/headscale?sslmode=disable");
    let (cfg, _) = Config::from_yaml_str("database:\n  postgres:\n    ssl: verify-full\n").unwrap();
    assert_eq!(cfg.database.postgres.ssl, PgSslMode::VerifyFull);
}

#[test]
fn tls_subject_names_cover_server_and_listeners() {
    let (cfg, _) = Config::from_yaml_str(
        "server_url: https://HS.example.com:8443\nlisten_addr: 0.0.0.0:8080\ntls_listen_addr: 192.0.2.10:8443\n\
         derp:\n  server:\n    ipv6: 2001:db8::1\n",
    )
    .unwrap();
    assert_eq!(cfg.tls_subject_names(), ["192.0.2.10", "2001:db8::1", "hs.example.com"]);
    assert_eq!(cfg.server_host().as_deref(), Some("hs.example.com"));
}
