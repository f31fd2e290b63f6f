//! Mistakes are reported with their exact key path; all of them at once.

use tailwarden_config::*;

fn errors(yaml: &str) -> Vec<FieldError> {
    match Config::from_yaml_str(yaml) {
        Ok((cfg, _)) => panic!("expected errors for:\n{yaml}\ngot {cfg:#?}"),
        Err(ConfigError::Invalid(errors)) => errors,
        Err(other) => panic!("expected field errors, got {other}"),
    }
}

fn warnings(yaml: &str) -> Vec<Warning> {
    Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{yaml}\n{e}")).1
}

/// Exactly one error, at `path`, whose message contains `needle`.
fn single_error(yaml: &str, path: &str, needle: &str) {
    let errors = errors(yaml);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, path);
    assert!(errors[0].message.contains(needle), "{:?} should contain {needle:?}", errors[0].message);
}

#[test]
fn typo_in_key_is_a_warning_naming_the_full_path() {
    let w = warnings("dns:\n  magic_dnss: true\n");
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0].path, "dns.magic_dnss");
    assert_eq!(w[0].kind, WarningKind::UnknownKey { suggestion: Some("dns.magic_dns") });
    assert_eq!(w[0].to_string(), "dns.magic_dnss: unknown key, ignored (did you mean `dns.magic_dns`?)");

    let w = warnings("derp:\n  server:\n    regoin_id: 900\nlisten_adr: 127.0.0.1:1\nbogus: 1\n");
    let paths: Vec<&str> = w.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["derp.server.regoin_id", "listen_adr", "bogus"]);
    assert_eq!(w[2].kind, WarningKind::UnknownKey { suggestion: None });

    // A right key in the wrong section.
    let w = warnings("base_domain: example.net\n");
    assert_eq!(w[0].kind, WarningKind::UnknownKey { suggestion: Some("dns.base_domain") });
}

#[test]
fn bad_prefix() {
    single_error("prefixes:\n  v4: 100.64.0.0/33\n", "prefixes.v4", "\"100.64.0.0/33\" is not a valid IPv4 prefix");
    single_error("prefixes:\n  v6: 100.64.0.0/10\n", "prefixes.v6", "is not a valid IPv6 prefix");
    single_error("prefixes:\n  v4: \"\"\n  v6: \"\"\n", "prefixes", "at least one");
}

#[test]
fn non_standard_prefix_warns() {
    let w = warnings("prefixes:\n  v4: 10.0.0.0/8\n");
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0].path, "prefixes.v4");
    assert!(matches!(w[0].kind, WarningKind::NonStandardPrefix { standard: "100.64.0.0/10", .. }));
    // A subset of the standard range is fine.
    assert!(warnings("prefixes:\n  v4: 100.64.0.0/24\n  v6: fd7a:115c:a1e0:ab12::/64\n").is_empty());
}

#[test]
fn bad_duration() {
    single_error(
        "node:\n  ephemeral:\n    inactivity_timeout: 30x\n",
        "node.ephemeral.inactivity_timeout",
        "\"30x\" is not a valid duration: unknown unit \"x\"",
    );
    single_error("derp:\n  update_frequency: [1]\n", "derp.update_frequency", "expected a duration");
    single_error(
        "node:\n  ephemeral:\n    inactivity_timeout: 60s\n",
        "node.ephemeral.inactivity_timeout",
        "too short",
    );
    // The deprecated spelling is checked under its own name.
    single_error("ephemeral_node_inactivity_timeout: 10s\n", "ephemeral_node_inactivity_timeout", "too short");
}

#[test]
fn bad_database_type() {
    single_error("database:\n  type: mysql\n", "database.type", "must be \"sqlite\" or \"postgres\"");
}

#[test]
fn missing_port() {
    single_error("listen_addr: 127.0.0.1\n", "listen_addr", "missing port");
    single_error("metrics_listen_addr: \"::1\"\n", "metrics_listen_addr", "missing port");
    single_error("derp:\n  server:\n    stun_listen_addr: 0.0.0.0\n", "derp.server.stun_listen_addr", "missing port");
    single_error("listen_addr: example.com:80\n", "listen_addr", "not an IP address");
}

#[test]
fn listen_address_spellings() {
    let (cfg, _) =
        Config::from_yaml_str("listen_addr: \":8081\"\nmetrics_listen_addr: \"\"\ntls_listen_addr: localhost:8444\n")
            .unwrap();
    assert_eq!(cfg.listen_addr, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(cfg.metrics_listen_addr, None);
    assert_eq!(cfg.tls_listen_addr, Some("127.0.0.1:8444".parse().unwrap()));
    single_error("tls_listen_addr: 127.0.0.1:8080\n", "tls_listen_addr", "already used by listen_addr");
}

#[test]
fn server_url_and_base_domain_rules() {
    single_error("server_url: ftp://example.com\n", "server_url", "must start with http:// or https://");
    single_error("server_url: example.com:8080\n", "server_url", "must start with http:// or https://");
    single_error(
        "server_url: https://hs.example.com\ndns:\n  base_domain: example.com\n",
        "dns.base_domain",
        "must not be a parent domain of the server_url host",
    );
    single_error(
        "server_url: https://example.com\ndns:\n  base_domain: example.com\n",
        "dns.base_domain",
        "must differ",
    );
    single_error("dns:\n  base_domain: \"\"\n", "dns.base_domain", "must be set when dns.magic_dns is true");
    single_error("dns:\n  base_domain: ts.example.\n", "dns.base_domain", "must not end with a dot");
    // A sibling domain is fine, and so is a base domain with MagicDNS off.
    Config::from_yaml_str("server_url: https://hs.example.com\ndns:\n  base_domain: ts.example.com\n").unwrap();
    Config::from_yaml_str("dns:\n  magic_dns: false\n  base_domain: \"\"\n").unwrap();
}

#[test]
fn dns_details() {
    single_error("dns:\n  override_local_dns: true\n", "dns.nameservers.global", "at least one nameserver");
    single_error(
        "dns:\n  nameservers:\n    global: [1.1.1.1, not-a-server]\n",
        "dns.nameservers.global[1]",
        "is not a nameserver",
    );
    single_error(
        "dns:\n  nameservers:\n    split:\n      corp.example: [10.0.0.53, bogus]\n",
        "dns.nameservers.split.corp.example[1]",
        "is not a nameserver",
    );
    single_error(
        "dns:\n  extra_records:\n    - {name: a.example, type: A, value: \"::1\"}\n",
        "dns.extra_records[0].value",
        "not an IPv4 address",
    );
    single_error(
        "dns:\n  extra_records:\n    - {name: a.example, type: CNAME, value: b.example}\n",
        "dns.extra_records[0].type",
        "only A and AAAA",
    );
    let (cfg, _) = Config::from_yaml_str(
        "dns:\n  nameservers:\n    global: [1.1.1.1, \"https://dns.nextdns.io/abc123\"]\n    split:\n      \
         corp.example: [10.0.0.53]\n  \
         extra_records:\n    - name: grafana.example\n      type: A\n      value: 100.64.0.3\n",
    )
    .unwrap();
    assert_eq!(cfg.dns.nameservers.split["corp.example"], ["10.0.0.53"]);
    assert_eq!(cfg.dns.extra_records[0].value.to_string(), "100.64.0.3");
    assert_eq!(cfg.dns.extra_records[0].record_type(), "A");
}

#[test]
fn removed_and_renamed_keys() {
    single_error("oidc:\n  expiry: 180d\n", "oidc.expiry", "node.expiry");
    single_error("acl_policy_path: /etc/acl.hujson\n", "acl_policy_path", "use `policy.path`");
    // With the new key set too, the old one is only a note.
    let w = warnings("dns_config:\n  base_domain: old.example\ndns:\n  base_domain: new.example\n");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].kind, WarningKind::Superseded { by: "dns.base_domain" });

    let (cfg, w) =
        Config::from_yaml_str("ephemeral_node_inactivity_timeout: 10m\nrandomize_client_port: true\n").unwrap();
    assert_eq!(cfg.node.ephemeral.inactivity_timeout.as_secs(), 600);
    assert!(cfg.randomize_client_port);
    assert!(w.iter().all(|w| matches!(w.kind, WarningKind::Deprecated { .. })), "{w:#?}");
    assert_eq!(w.len(), 2);
}

#[test]
fn inert_keys_get_notes_only_when_they_ask_for_something() {
    let w = warnings("grpc_listen_addr: \"\"\ngrpc_allow_insecure: false\ndisable_check_updates: true\n");
    assert!(w.is_empty(), "{w:#?}");
    let w = warnings("grpc_listen_addr: 127.0.0.1:50443\ngrpc_allow_insecure: true\ntuning:\n  batcher_workers: 4\n");
    let paths: Vec<&str> = w.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["grpc_listen_addr", "grpc_allow_insecure", "tuning.batcher_workers"]);
    assert!(w.iter().all(|w| w.level() == Level::Info));
}

#[test]
fn several_mistakes_are_all_reported() {
    let yaml = "\
server_url: example.com
listen_addr: 127.0.0.1
prefixes:
  v4: 100.64.0.0/33
  allocation: round-robin
database:
  type: mysql
  sqlite:
    write_ahead_log: maybe
node:
  expiry: 1 day
  ephemeral:
    inactivity_timeout: 30x
dns:
  magic_dnss: true
  nameservers:
    global: [1.1.1.1, {x: 1}]
log:
  level: loud
derp:
  server:
    region_id: -1
unix_socket_permission: rwx
";
    let err = Config::from_yaml_str(yaml).unwrap_err();
    let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "database.sqlite.write_ahead_log",
            "database.type",
            "derp.server.region_id",
            "dns.nameservers.global[1]",
            "listen_addr",
            "log.level",
            "node.ephemeral.inactivity_timeout",
            "node.expiry",
            "prefixes.allocation",
            "prefixes.v4",
            "server_url",
            "unix_socket_permission",
        ],
        "{err}"
    );
    // Displayed one per line, each starting with its path.
    let text = err.to_string();
    assert_eq!(text.lines().count(), paths.len());
    for (line, path) in text.lines().zip(&paths) {
        assert!(line.starts_with(&format!("{path}: ")), "{line}");
    }
}

#[test]
fn type_mismatches_name_the_key() {
    single_error("derp:\n  server:\n    enabled: sometimes\n", "derp.server.enabled", "expected true or false");
    single_error("derp: [1, 2]\n", "derp", "expected a mapping");
    single_error("derp:\n  urls: https://a.example/map.json,ftp://b\n", "derp.urls[1]", "must start with http");
    single_error("trusted_proxies: [0.0.0.0/0]\n", "trusted_proxies[0]", "not allowed");
    single_error("database:\n  postgres:\n    port: 70000\n", "database.postgres.port", "not a port");
}

#[test]
fn cross_key_rules() {
    single_error("tls_cert_path: /etc/cert.pem\n", "tls_key_path", "must be set when tls_cert_path is set");
    single_error(
        "tls_cert_path: /c.pem\ntls_key_path: /k.pem\ntls_self_signed: true\n",
        "tls_self_signed",
        "cannot be true",
    );
    single_error(
        "derp:\n  server:\n    automatically_add_embedded_derp_region: false\n",
        "derp.server.automatically_add_embedded_derp_region",
        "derp.paths",
    );
    let err = errors("oidc:\n  issuer: https://id.example.com\n");
    let paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["oidc.client_id", "oidc.client_secret"]);
    single_error(
        "node:\n  routes:\n    ha:\n      probe_interval: 5s\n      probe_timeout: 5s\n",
        "node.routes.ha.probe_timeout",
        "must be less than",
    );
    let err =
        errors("oidc:\n  issuer: id.example.com\n  client_id: x\n  client_secret: y\n  pkce:\n    method: S512\n");
    let paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["oidc.pkce.method", "oidc.issuer"]);
}

#[test]
fn yaml_syntax_errors_are_not_field_errors() {
    let err = Config::from_yaml_str("server_url: [unclosed\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains("line"), "{err}");
}

#[test]
fn empty_file_is_the_defaults() {
    let (cfg, w) = Config::from_yaml_str("").unwrap();
    assert!(w.is_empty());
    assert_eq!(cfg.listen_addr, "127.0.0.1:8080".parse().unwrap());
    let (_, w) = Config::from_yaml_str("# only a comment\n---\n").unwrap();
    assert!(w.is_empty());
}

#[test]
fn keys_match_case_insensitively_like_headscale() {
    let (cfg, w) = Config::from_yaml_str("Listen_Addr: 127.0.0.1:9999\nDNS:\n  Base_Domain: ts.example.org\n").unwrap();
    assert!(w.is_empty(), "{w:#?}");
    assert_eq!(cfg.listen_addr.port(), 9999);
    assert_eq!(cfg.dns.base_domain, "ts.example.org");
}

#[test]
fn secrets_are_not_debug_printed() {
    let (cfg, _) = Config::from_yaml_str("database:\n  postgres:\n    pass: hunter2\n").unwrap();
    assert_eq!(cfg.database.postgres.pass.expose(), "hunter2");
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

#[test]
fn oidc_client_secret_from_file() {
    let dir = std::env::temp_dir().join(format!("tailwarden-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("oidc_client_secret"), "s3cret\n").unwrap();
    let yaml = "oidc:\n  issuer: https://id.example.com\n  client_id: tw\n  \
                client_secret_path: ${CREDENTIALS_DIRECTORY}/oidc_client_secret\n";
    let env = [("CREDENTIALS_DIRECTORY".to_owned(), dir.display().to_string())].into_iter().collect();
    let (cfg, _) = Config::from_sources(&Sources { yaml: Some(yaml.into()), file: None, env }).unwrap();
    assert_eq!(cfg.oidc.client_secret.expose(), "s3cret");
    assert_eq!(cfg.oidc.client_secret_path, Some(dir.join("oidc_client_secret")));
    std::fs::remove_dir_all(&dir).unwrap();

    single_error(
        "oidc:\n  client_secret: a\n  client_secret_path: /nonexistent\n",
        "oidc.client_secret_path",
        "mutually exclusive",
    );
    single_error("oidc:\n  client_secret_path: /nonexistent/secret\n", "oidc.client_secret_path", "cannot read");
}

#[test]
fn batch_change_delay_sets_the_coalescing_window() {
    let (cfg, _) = Config::from_yaml_str("tuning:\n  batch_change_delay: 250ms\n").expect("valid");
    assert_eq!(cfg.batch_change_delay, std::time::Duration::from_millis(250));
    let (default, _) = Config::from_yaml_str("").expect("valid");
    assert_eq!(default.batch_change_delay, std::time::Duration::from_millis(100));
    let err = Config::from_yaml_str("tuning:\n  batch_change_delay: soon\n").unwrap_err();
    assert!(err.to_string().contains("tuning.batch_change_delay"), "{err}");
}
