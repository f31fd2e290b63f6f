//! Headscale's own example configuration loads cleanly and means the same thing.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tailwarden_config::*;

fn example_path() -> PathBuf {
    // Read at run time (cargo and nextest set it): a test binary reused from another checkout of the same commit
    // carries that checkout's path in `env!`.
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    dir.join("tests/data/headscale-config-example.yaml")
}

fn load_example() -> (Config, Vec<Warning>) {
    let path = example_path();
    let yaml = std::fs::read_to_string(&path).unwrap();
    // No process environment, so a stray HEADSCALE_* variable cannot change the result.
    Config::from_sources(&Sources { yaml: Some(yaml), file: Some(path), env: Default::default() })
        .unwrap_or_else(|e| panic!("Headscale's example config must load:\n{e}"))
}

#[test]
fn loads_without_errors_or_unknown_keys() {
    let (_, warnings) = load_example();
    let unknown: Vec<String> =
        warnings.iter().filter(|w| matches!(w.kind, WarningKind::UnknownKey { .. })).map(ToString::to_string).collect();
    assert!(unknown.is_empty(), "unknown keys: {unknown:#?}");
    // Nothing in the example is a mistake; only informational notes may remain.
    let loud: Vec<String> = warnings.iter().filter(|w| w.level() == Level::Warn).map(ToString::to_string).collect();
    assert!(loud.is_empty(), "unexpected warnings: {loud:#?}");
    // The GORM section is accepted with one note.
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.path == "database.gorm" && matches!(w.kind, WarningKind::NotActedOn { .. }))
            .count(),
        1
    );
}

#[test]
fn values_mean_the_same_thing() {
    let (cfg, _) = load_example();
    assert_eq!(cfg.server_url, "http://127.0.0.1:8080");
    assert_eq!(cfg.listen_addr, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(cfg.metrics_listen_addr, Some("127.0.0.1:9090".parse().unwrap()));
    assert!(cfg.trusted_proxies.is_empty());
    assert_eq!(cfg.noise.private_key_path, PathBuf::from("/var/lib/headscale/noise_private.key"));

    assert_eq!(cfg.prefixes.v4.unwrap().to_string(), "100.64.0.0/10");
    assert_eq!(cfg.prefixes.v6.unwrap().to_string(), "fd7a:115c:a1e0::/48");
    assert_eq!(cfg.prefixes.allocation, IpAllocation::Sequential);

    let derp = &cfg.derp;
    assert!(!derp.server.enabled);
    assert_eq!(derp.server.region_id, 999);
    assert_eq!(derp.server.region_code, "headscale");
    assert_eq!(derp.server.region_name, "Headscale Embedded DERP");
    assert!(derp.server.verify_clients);
    assert_eq!(derp.server.stun_listen_addr, Some("0.0.0.0:3478".parse().unwrap()));
    assert_eq!(derp.server.ipv4, Some(Ipv4Addr::new(198, 51, 100, 1)));
    assert_eq!(derp.server.ipv6, Some("2001:db8::1".parse::<Ipv6Addr>().unwrap()));
    assert_eq!(derp.urls, ["https://controlplane.tailscale.com/derpmap/default"]);
    assert!(derp.paths.is_empty());
    assert!(derp.auto_update_enabled);
    assert_eq!(derp.update_frequency, Duration::from_secs(3 * 3600));

    assert_eq!(cfg.node.expiry, None);
    assert_eq!(cfg.node.ephemeral.inactivity_timeout, Duration::from_secs(30 * 60));
    assert_eq!(cfg.node.routes.ha.probe_interval, Duration::from_secs(10));
    assert_eq!(cfg.node.routes.ha.probe_timeout, Duration::from_secs(5));

    assert_eq!(cfg.database.kind, DatabaseType::Sqlite);
    assert_eq!(cfg.database.sqlite.path, PathBuf::from("/var/lib/headscale/db.sqlite"));
    assert!(cfg.database.sqlite.write_ahead_log);
    assert_eq!(cfg.database.sqlite.wal_autocheckpoint, 1000);
    assert_eq!(cfg.database_url(), "sqlite:///var/lib/headscale/db.sqlite?mode=rwc");

    assert_eq!(cfg.tls_cert_path, None);
    assert!(cfg.tls_self_signed, "no certificate configured, so tailwarden falls back to a self-signed one");
    assert_eq!(cfg.log, LogConfig { level: LogLevel::Info, format: LogFormat::Text });
    assert_eq!(cfg.policy, PolicyConfig { mode: PolicyMode::File, path: None });

    let dns = &cfg.dns;
    assert!(dns.magic_dns);
    assert_eq!(dns.base_domain, "example.com");
    assert!(dns.override_local_dns);
    assert_eq!(dns.nameservers.global, ["1.1.1.1", "1.0.0.1", "2606:4700:4700::1111", "2606:4700:4700::1001"]);
    assert!(dns.nameservers.split.is_empty());
    assert!(dns.search_domains.is_empty());
    assert!(dns.extra_records.is_empty());

    assert_eq!(cfg.unix_socket, PathBuf::from("/var/run/headscale/headscale.sock"));
    assert_eq!(cfg.unix_socket_permission, 0o770);
    assert_eq!(cfg.oidc.issuer, None);
    assert!(!cfg.logtail.enabled);
    assert!(cfg.taildrop.enabled);
    assert!(!cfg.auto_update.enabled);
}

/// `Config::load` reads the file itself; relative paths in a config resolve against the file's directory.
#[test]
fn load_from_file_and_resolve_relative_paths() {
    let (cfg, _) = Config::load(example_path()).unwrap();
    assert_eq!(cfg.derp.server.region_id, 999);

    let dir = Path::new("/etc/tailwarden");
    let yaml = "noise:\n  private_key_path: keys/noise.key\ndatabase:\n  sqlite:\n    path: db.sqlite\n\
                policy:\n  path: policy.hujson\n";
    let (cfg, _) = Config::from_sources(&Sources {
        yaml: Some(yaml.into()),
        file: Some(dir.join("config.yaml")),
        env: Default::default(),
    })
    .unwrap();
    assert_eq!(cfg.noise.private_key_path, dir.join("keys/noise.key"));
    assert_eq!(cfg.database.sqlite.path, dir.join("db.sqlite"));
    // As in Headscale, the policy path is relative to the working directory.
    assert_eq!(cfg.policy.path, Some(PathBuf::from("policy.hujson")));
}
