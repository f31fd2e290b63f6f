//! `tls_letsencrypt_*`, `acme_url` and `acme_email`: Headscale's spellings decode, mistakes name their key.

use std::net::SocketAddr;
use std::path::Path;
use tailwarden_config::*;

fn load(yaml: &str) -> Config {
    Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{yaml}\n{e}")).0
}

fn error_paths(yaml: &str) -> Vec<(String, String)> {
    match Config::from_yaml_str(yaml) {
        Ok((cfg, _)) => panic!("expected errors for:\n{yaml}\ngot {cfg:#?}"),
        Err(ConfigError::Invalid(errors)) => errors.into_iter().map(|e| (e.path, e.message)).collect(),
        Err(other) => panic!("expected field errors, got {other}"),
    }
}

#[test]
fn off_by_default() {
    let cfg = load("");
    assert_eq!(cfg.letsencrypt.hostname, None);
    assert_eq!(cfg.letsencrypt.directory_url, LETS_ENCRYPT_PRODUCTION);
    assert_eq!(cfg.letsencrypt.challenge_type, AcmeChallenge::Http01);
    assert_eq!(cfg.letsencrypt.listen, "0.0.0.0:80".parse::<SocketAddr>().unwrap());
    assert!(cfg.tls_self_signed);
}

#[test]
fn headscale_keys_decode() {
    let cfg = load(
        "tls_letsencrypt_hostname: HS.Example.com.\n\
         tls_letsencrypt_cache_dir: /var/lib/tw/cache\n\
         tls_letsencrypt_challenge_type: HTTP-01\n\
         tls_letsencrypt_listen: \":http\"\n\
         acme_url: https://127.0.0.1:14000/dir\n\
         acme_email: admin@example.com\n\
         tls_letsencrypt_ca_path: /etc/tw/pebble.pem\n",
    );
    let le = &cfg.letsencrypt;
    assert_eq!(le.hostname.as_deref(), Some("hs.example.com"), "lower-cased, trailing dot dropped");
    assert_eq!(le.cache_dir, Path::new("/var/lib/tw/cache"));
    assert_eq!(le.listen, "0.0.0.0:80".parse::<SocketAddr>().unwrap());
    assert_eq!(le.directory_url, "https://127.0.0.1:14000/dir");
    assert_eq!(le.email, "admin@example.com");
    assert_eq!(le.ca_path.as_deref(), Some(Path::new("/etc/tw/pebble.pem")));
    assert!(!cfg.tls_self_signed, "an ACME certificate replaces the self-signed default");
    assert!(!cfg.derp.server.insecure_for_tests);
}

#[test]
fn named_and_numeric_listen_ports() {
    let cfg = load("tls_letsencrypt_listen: 127.0.0.1:https\n");
    assert_eq!(cfg.letsencrypt.listen, "127.0.0.1:443".parse::<SocketAddr>().unwrap());
    let cfg = load("tls_letsencrypt_listen: 127.0.0.1:5002\n");
    assert_eq!(cfg.letsencrypt.listen, "127.0.0.1:5002".parse::<SocketAddr>().unwrap());
}

#[test]
fn cache_dir_resolves_against_the_config_file() {
    let sources = Sources {
        yaml: Some("tls_letsencrypt_hostname: hs.example.com\ntls_letsencrypt_cache_dir: acme\n".to_owned()),
        file: Some("/etc/tw/config.yaml".into()),
        env: Default::default(),
    };
    let loaded = Config::from_sources(&sources).unwrap();
    assert_eq!(loaded.0.letsencrypt.cache_dir, Path::new("/etc/tw/acme"));
}

#[test]
fn mistakes_name_their_key() {
    let errors = error_paths("tls_letsencrypt_hostname: 192.0.2.1\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "tls_letsencrypt_hostname");
    assert!(errors[0].1.contains("IP address"), "{errors:?}");

    let errors = error_paths("tls_letsencrypt_hostname: https://hs.example.com:443\n");
    assert_eq!(errors[0].0, "tls_letsencrypt_hostname");

    let errors = error_paths("tls_letsencrypt_challenge_type: TLS-ALPN-01\n");
    assert_eq!(errors[0].0, "tls_letsencrypt_challenge_type");
    assert!(errors[0].1.contains("not supported"), "{errors:?}");

    let errors = error_paths("acme_url: acme.example.com/directory\n");
    assert_eq!(errors[0].0, "acme_url");

    let errors = error_paths("tls_letsencrypt_hostname: hs.example.com\ntls_self_signed: true\n");
    assert_eq!(errors[0].0, "tls_self_signed");

    let errors = error_paths(
        "tls_letsencrypt_hostname: hs.example.com\ntls_cert_path: /c.pem\ntls_key_path: /k.pem\ntls_self_signed: false\n",
    );
    assert_eq!(errors[0].0, "tls_letsencrypt_hostname");

    let errors = error_paths("tls_letsencrypt_hostname: hs.example.com\nlisten_addr: 0.0.0.0:80\n");
    assert_eq!(errors[0].0, "tls_letsencrypt_listen", "{errors:?}");
}

#[test]
fn listen_conflict_only_matters_when_acme_is_on() {
    load("listen_addr: 0.0.0.0:80\n");
}
