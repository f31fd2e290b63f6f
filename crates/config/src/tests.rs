//! Unit tests that need crate internals.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml::Value;

use crate::decode::{Decoder, expand_env};
use crate::keys::{KEYS, Status};
use crate::{Config, parse_duration};

/// Every key the table says is decoded is read by the decoder, and the decoder reads nothing else.
#[test]
fn key_table_matches_decoder() {
    let root = Value::Null;
    let origins = BTreeMap::new();
    let env = |_: &str| None;
    let mut decoder = Decoder::new(&root, &origins, None, &env);
    decoder.decode(&mut Config::with_state_dir("/s"));
    let table: Vec<&str> =
        KEYS.iter().filter(|k| matches!(k.status, Status::Used | Status::Deprecated { .. })).map(|k| k.path).collect();
    let mut table_sorted = table.clone();
    table_sorted.sort();
    let read: Vec<&str> = decoder.read.iter().copied().collect();
    assert_eq!(read, table_sorted);
}

/// The README's key table documents every key the loader knows.
#[test]
fn readme_documents_every_key() {
    let readme = include_str!("../README.md");
    let missing: Vec<&str> = KEYS.iter().map(|k| k.path).filter(|p| !readme.contains(&format!("`{p}`"))).collect();
    assert!(missing.is_empty(), "README.md does not mention: {missing:?}");
}

#[test]
fn key_paths_are_unique_and_lower_case() {
    let mut paths: Vec<&str> = KEYS.iter().map(|k| k.path).collect();
    assert!(
        paths.iter().all(|p| p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
    );
    paths.sort();
    let n = paths.len();
    paths.dedup();
    assert_eq!(paths.len(), n);
}

#[test]
fn durations() {
    let ok: &[(&str, Duration)] = &[
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("30m", Duration::from_secs(1800)),
        ("1h30m", Duration::from_secs(5400)),
        ("24h", Duration::from_secs(86400)),
        ("1.5h", Duration::from_secs(5400)),
        ("2h45m30s", Duration::from_secs(2 * 3600 + 45 * 60 + 30)),
        ("300ms", Duration::from_millis(300)),
        ("1m0.5s", Duration::from_millis(60_500)),
        ("10us", Duration::from_micros(10)),
        ("10µs", Duration::from_micros(10)),
        ("7ns", Duration::from_nanos(7)),
        (".5s", Duration::from_millis(500)),
        ("180d", Duration::from_secs(180 * 86400)),
        ("1w", Duration::from_secs(7 * 86400)),
        ("1y", Duration::from_secs(365 * 86400)),
        ("3600", Duration::from_secs(3600)),
        ("+5s", Duration::from_secs(5)),
        (" 5m ", Duration::from_secs(300)),
    ];
    for (text, want) in ok {
        assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text:?}");
    }
    let bad: &[(&str, &str)] = &[
        ("", "empty duration"),
        ("-5m", "must not be negative"),
        ("30x", "unknown unit \"x\""),
        ("1h30", "missing unit after \"30\""),
        ("5 m", "unknown unit \" m\""),
        ("h", "expected a number"),
        ("1.2.3s", "missing unit"),
        ("99999999999999999999999h", "too large"),
    ];
    for (text, want) in bad {
        let got = parse_duration(text).expect_err(text).to_string();
        assert!(got.contains(want), "{text:?}: {got:?} should contain {want:?}");
    }
}

#[test]
fn duration_format_round_trips() {
    for text in ["0s", "1h30m", "30m", "45s", "500ms", "1m30.5s", "7ns", "168h"] {
        let d = parse_duration(text).unwrap();
        assert_eq!(crate::format_duration(d), text);
        assert_eq!(parse_duration(&crate::format_duration(d)).unwrap(), d);
    }
}

#[test]
fn env_expansion_matches_go() {
    let env = |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| "/run/creds".to_owned());
    assert_eq!(expand_env("${CREDENTIALS_DIRECTORY}/oidc", &env), "/run/creds/oidc");
    assert_eq!(expand_env("$CREDENTIALS_DIRECTORY/x", &env), "/run/creds/x");
    assert_eq!(expand_env("/a/$UNSET/b", &env), "/a//b");
    assert_eq!(expand_env("cost$", &env), "cost$");
}

/// The spellings people use for file modes mean what was written. (serde_yaml keeps an unquoted `0770` as the
/// string "0770"; an unquoted `770` is a number whose digits are read as octal, as Headscale does.)
#[test]
fn unquoted_file_modes() {
    for (yaml, mode) in [
        ("unix_socket_permission: 0770", 0o770),
        ("unix_socket_permission: \"0770\"", 0o770),
        ("unix_socket_permission: 770", 0o770),
        ("unix_socket_permission: \"0o750\"", 0o750),
    ] {
        let (cfg, _) = Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(cfg.unix_socket_permission, mode, "{yaml}");
    }
}
