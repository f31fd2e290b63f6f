//! Fuzz the policy pipeline on untrusted text: the HuJSON parser, `Policy::parse`, validation
//! against a small fixed tailnet, compilation, the `tests`/`sshTests` blocks and every per-node
//! query. Inputs that are not UTF-8 are decoded lossily so the parsers still see them. Run with
//! `cargo +nightly fuzz run policy_parser` in crates/policy/fuzz.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailwarden_policy::{hujson, CompiledPolicy, Node, Policy, Tailnet, TailnetSettings, User};

fn node(id: u64, name: &str, user: Option<u64>, tags: &[&str], routes: &[&str], approved: &[&str]) -> Node {
    let parse = |r: &&str| r.parse().ok();
    Node {
        id,
        name: name.into(),
        user,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ipv4: format!("100.64.0.{id}").parse().ok(),
        ipv6: format!("fd7a:115c:a1e0::{id:x}").parse().ok(),
        routable_ips: routes.iter().filter_map(parse).collect(),
        approved_routes: approved.iter().filter_map(parse).collect(),
    }
}

/// Two users, a tagged subnet router that is also an exit node, a tagged server and two
/// user-owned nodes: enough for `autogroup:self`, `via`, routes and tags to do something.
fn tailnet() -> Tailnet {
    Tailnet {
        users: vec![
            User { id: 1, login: "odin@example.com".into(), admin: true, owner: true },
            User { id: 2, login: "thor@example.org".into(), admin: false, owner: false },
        ],
        nodes: vec![
            node(1, "router", None, &["tag:router"], &["10.33.0.0/16", "0.0.0.0/0", "::/0"], &["10.33.0.0/16"]),
            node(2, "server", None, &["tag:server"], &[], &[]),
            node(3, "laptop", Some(1), &[], &["192.168.1.0/24"], &[]),
            node(4, "phone", Some(1), &[], &[], &[]),
            node(5, "desk", Some(2), &[], &[], &[]),
        ],
        domains: vec!["example.com".into()],
    }
}

fuzz_target!(|data: &[u8]| {
    let text = match std::str::from_utf8(data) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(data),
    };

    let _ = hujson::parse(&text);
    let Ok(policy) = Policy::parse(&text) else {
        return;
    };
    let tailnet = tailnet();
    if policy.validate_for(&tailnet).is_err() {
        return;
    }
    let compiled = CompiledPolicy::new(&policy, &tailnet);
    let _ = compiled.run_tests();
    let _ = compiled.run_ssh_tests();
    let _ = compiled.all_rules();
    let settings = TailnetSettings::default();
    let count = tailnet.nodes.len();
    for i in 0..count {
        let _ = compiled.filter_for(i);
        let _ = compiled.ssh_rules_for(i, "https://control.example.com");
        let _ = compiled.peers(i);
        let _ = compiled.node_attrs_for(i);
        let _ = compiled.self_cap_map(i, &settings);
        for j in 0..count {
            let _ = compiled.route_view(i, j);
        }
    }
    // Out-of-range indexes must be answered, not panic.
    let _ = compiled.filter_for(count);
    let _ = compiled.peers(count);
    let _ = compiled.route_view(0, count);
});
