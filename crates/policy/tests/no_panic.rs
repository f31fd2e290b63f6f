//! Property tests: no input makes the HuJSON parser, the policy parser or the compiler panic.

use proptest::prelude::*;
use tailwarden_policy::{Node, Policy, Tailnet, User, compile, hujson};

fn tailnet() -> Tailnet {
    Tailnet {
        users: vec![User { id: 1, login: "odin@example.com".into(), admin: true, owner: true }],
        nodes: vec![
            Node {
                id: 1,
                name: "a".into(),
                user: Some(1),
                tags: vec![],
                ipv4: Some("100.64.0.1".parse().unwrap()),
                ipv6: Some("fd7a:115c:a1e0::1".parse().unwrap()),
                routable_ips: vec!["10.0.0.0/8".parse().unwrap(), "0.0.0.0/0".parse().unwrap()],
                approved_routes: vec!["10.0.0.0/8".parse().unwrap()],
            },
            Node {
                id: 2,
                name: "b".into(),
                user: None,
                tags: vec!["tag:x".into()],
                ipv4: Some("100.64.0.2".parse().unwrap()),
                ipv6: None,
                routable_ips: vec![],
                approved_routes: vec![],
            },
        ],
        domains: vec!["example.com".into()],
    }
}

/// Fragments that make random documents look like policies often enough to reach deep code.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"acls\"",
    "\"grants\"",
    "\"ssh\"",
    "\"tests\"",
    "\"sshTests\"",
    "\"src\"",
    "\"dst\"",
    "\"ip\"",
    "\"app\"",
    "\"via\"",
    "\"users\"",
    "\"action\"",
    "\"accept\"",
    "\"check\"",
    "\"*\"",
    "\"*:*\"",
    "\"tag:x\"",
    "\"tag:x:22\"",
    "\"autogroup:self:*\"",
    "\"autogroup:member\"",
    "\"group:g\"",
    "\"groups\"",
    "\"hosts\"",
    "\"tagOwners\"",
    "\"odin@example.com\"",
    "\"10.0.0.0/8:80-90\"",
    "\"tcp:22\"",
    "\"checkPeriod\"",
    "\"1h\"",
    "\"root\"",
    "\"localpart:*@example.com\"",
    "// c\n",
    "/* c */",
    "null",
    "1",
    "\"[fd7a::1]:22\"",
    "\"proto\"",
    "\"icmp\"",
    "\"autoApprovers\"",
    "\"routes\"",
    "\"exitNode\"",
];

proptest! {
    #[test]
    fn hujson_never_panics(s in "\\PC{0,200}") {
        let _ = hujson::parse(&s);
    }

    #[test]
    fn policy_never_panics(s in "\\PC{0,200}") {
        let _ = Policy::parse(&s);
    }

    #[test]
    fn token_soup_never_panics(picks in proptest::collection::vec(0..TOKENS.len(), 0..60)) {
        let text: String = picks.iter().map(|&i| TOKENS[i]).collect();
        if let Ok(c) = compile(&text, &tailnet()) {
            for i in 0..2 {
                let _ = c.filter_for(i);
                let _ = c.ssh_rules_for(i, "https://unused");
                let _ = c.peers(i);
                let _ = c.route_view(0, i);
            }
        }
    }

    #[test]
    fn structured_policies_never_panic(
        src in proptest::sample::select(vec!["*", "tag:x", "odin@example.com", "autogroup:member", "group:g", "10.1.2.3", "user:*@example.com"]),
        dst in proptest::sample::select(vec!["*:*", "tag:x:22", "autogroup:self:*", "autogroup:internet:443", "10.0.0.0/8:1-65535", "h:80"]),
        proto in proptest::sample::select(vec!["", "tcp", "udp", "icmp", "47"]),
    ) {
        let text = format!(
            r#"{{"groups":{{"group:g":["odin@example.com"]}},"hosts":{{"h":"10.1.0.0/16"}},"tagOwners":{{"tag:x":[]}},
               "acls":[{{"action":"accept","proto":"{proto}","src":["{src}"],"dst":["{dst}"]}}]}}"#
        );
        if let Ok(c) = compile(&text, &tailnet()) {
            let _ = c.filter_for(0);
            let _ = c.filter_for(1);
        }
    }
}
