//! Behaviour tests on a small hand-built tailnet, independent of the conformance vectors.

use serde_json::{Value, json};
use tailwarden_policy::{Node, PolicyError, Tailnet, User, compile};

fn node(id: u64, name: &str, user: Option<u64>, tags: &[&str], last: u8, routes: &[&str]) -> Node {
    Node {
        id,
        name: name.into(),
        user,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ipv4: Some(format!("100.64.0.{last}").parse().unwrap()),
        ipv6: Some(format!("fd7a:115c:a1e0::{last:x}").parse().unwrap()),
        routable_ips: routes.iter().map(|r| r.parse().unwrap()).collect(),
        approved_routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
    }
}

fn tailnet() -> Tailnet {
    Tailnet {
        users: vec![
            User { id: 1, login: "odin@example.com".into(), admin: true, owner: true },
            User { id: 2, login: "thor@example.org".into(), admin: true, owner: false },
        ],
        nodes: vec![
            node(1, "router", None, &["tag:router"], 1, &["10.33.0.0/16"]),
            node(2, "server", None, &["tag:server"], 2, &[]),
            node(3, "laptop", Some(1), &[], 3, &[]),
            node(4, "phone", Some(1), &[], 4, &[]),
            node(5, "desk", Some(2), &[], 9, &[]),
        ],
        domains: vec!["example.com".into()],
    }
}

const HEADER: &str = r#""tagOwners": {"tag:router": ["odin@example.com"], "tag:server": ["odin@example.com"]},
  "groups": {"group:admins": ["odin@example.com"]},"#;

fn filter(policy: &str, name: &str) -> Value {
    let c = compile(policy, &tailnet()).unwrap_or_else(|e| panic!("{e}"));
    serde_json::to_value(c.filter_for(c.node_index(name).unwrap())).unwrap()
}

#[test]
fn acl_rules_reach_only_their_destinations() {
    let policy = format!(
        r#"{{ {HEADER}
  // HuJSON: comments and trailing commas
  "acls": [{{"action": "accept", "src": ["group:admins"], "dst": ["tag:server:22,443",],}}],
}}"#
    );
    let want = json!([{
        "SrcIPs": ["100.64.0.3", "100.64.0.4", "fd7a:115c:a1e0::3", "fd7a:115c:a1e0::4"],
        "DstPorts": [
            {"IP": "100.64.0.2", "Ports": {"First": 22, "Last": 22}},
            {"IP": "100.64.0.2", "Ports": {"First": 443, "Last": 443}},
            {"IP": "fd7a:115c:a1e0::2", "Ports": {"First": 22, "Last": 22}},
            {"IP": "fd7a:115c:a1e0::2", "Ports": {"First": 443, "Last": 443}},
        ],
    }]);
    assert_eq!(filter(&policy, "server"), want);
    assert_eq!(filter(&policy, "laptop"), json!([]));
}

#[test]
fn wildcard_sources_include_subnet_routes() {
    let policy = format!(r#"{{ {HEADER} "grants": [{{"src": ["*"], "dst": ["tag:server"], "ip": ["tcp:80"]}}]}}"#);
    let rules = filter(&policy, "server");
    let srcs = rules[0]["SrcIPs"].as_array().unwrap();
    assert!(srcs.contains(&json!("10.33.0.0/16")));
    assert!(srcs.contains(&json!("100.64.0.0-100.115.91.255")));
    assert_eq!(rules[0]["IPProto"], json!([6]));
}

#[test]
fn autogroup_self_is_per_user() {
    let policy = format!(
        r#"{{ {HEADER} "acls": [{{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}}]}}"#
    );
    let laptop = filter(&policy, "laptop");
    assert_eq!(laptop[0]["SrcIPs"], json!(["100.64.0.3", "100.64.0.4", "fd7a:115c:a1e0::3", "fd7a:115c:a1e0::4"]));
    let desk = filter(&policy, "desk");
    assert_eq!(desk[0]["SrcIPs"], json!(["100.64.0.9", "fd7a:115c:a1e0::9"]));
}

#[test]
fn rejections_use_tailscale_wording() {
    let cases = [
        (
            r#"{"acls": [{"action": "accept", "src": ["tag:nope"], "dst": ["*:*"]}]}"#,
            r#"src=tag not found: "tag:nope""#,
        ),
        (r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:self"]}]}"#, "invalid first integer"),
        (
            r#"{"grants": [{"src": ["*"], "dst": ["autogroup:self"], "ip": ["*"]}]}"#,
            "autogroup:self can only be used with users, groups, or supported autogroups",
        ),
        (r#"{"grants": [{"src": ["*"], "dst": ["0.0.0.0/0"], "ip": ["*"]}]}"#, "to allow all IP addresses"),
        (r#"{"grants": [{"src": ["*"], "dst": ["*"]}]}"#, "ip and app can not both be empty"),
        (
            r#"{"grants": [{"src": ["*"], "dst": ["*"], "app": {"tailscale.com/cap/x": [{}]}}]}"#,
            "must not be in the tailscale.com domain",
        ),
        (
            r#"{"grants": [{"src": ["user:*@example.org"], "dst": ["*"], "ip": ["*"]}]}"#,
            "example.org is not associated with this Tailnet",
        ),
        (
            r#"{"ssh": [{"action": "deny", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"]}]}"#,
            r#""deny" is not a valid action"#,
        ),
        (
            r#"{"ssh": [{"action": "check", "checkPeriod": "169h", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"]}]}"#,
            "checkPeriod 169h0m0s is above the max (168h)",
        ),
        (r#"{"acls": [], "tests": [{"src": "odin@example.com", "accept": ["tag:server:22"]}]}"#, "test(s) failed"),
    ];
    for (policy, want) in cases {
        let err = compile(policy, &tailnet()).err().unwrap_or_else(|| panic!("accepted: {policy}"));
        assert!(err.to_string().contains(want), "{policy}: got {err}, want {want}");
    }
}

#[test]
fn syntax_errors_have_positions() {
    let err = compile("{\n  \"acls\": [\n    {\"action\": \"accept\" \"src\": []}\n  ]\n}", &tailnet()).err().unwrap();
    match err {
        PolicyError::Syntax(e) => assert_eq!((e.line, e.column), (3, 25), "{e}"),
        other => panic!("{other}"),
    }
}

#[test]
fn ssh_rules_and_tests() {
    let policy = format!(
        r#"{{ {HEADER}
  "acls": [{{"action": "accept", "src": ["*"], "dst": ["*:*"]}}],
  "ssh": [{{"action": "check", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root", "autogroup:nonroot"]}}],
  "sshTests": [{{"src": "odin@example.com", "dst": ["tag:server"], "check": ["root", "ubuntu"]}}]}}"#
    );
    let c = compile(&policy, &tailnet()).unwrap_or_else(|e| panic!("{e}"));
    let rules = serde_json::to_value(c.ssh_rules_for(c.node_index("server").unwrap(), "https://ctl")).unwrap();
    assert_eq!(rules[0]["sshUsers"], json!({"*": "=", "root": "root"}));
    assert_eq!(
        rules[0]["action"]["holdAndDelegate"],
        json!("https://ctl/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER")
    );
    assert_eq!(rules[0]["principals"].as_array().unwrap().len(), 6);
    assert!(c.ssh_rules_for(c.node_index("laptop").unwrap(), "https://ctl").is_empty());
}

#[test]
fn peers_and_routes() {
    let policy = format!(
        r#"{{ {HEADER} "acls": [{{"action": "accept", "src": ["group:admins"], "dst": ["10.33.0.0/16:*"]}}]}}"#
    );
    let c = compile(&policy, &tailnet()).unwrap();
    let (router, laptop, desk) =
        (c.node_index("router").unwrap(), c.node_index("laptop").unwrap(), c.node_index("desk").unwrap());
    assert_eq!(c.peers(laptop), vec![router]);
    assert!(c.peers(desk).is_empty());
    let view = c.route_view(laptop, router);
    assert_eq!(view.primary_routes, vec!["10.33.0.0/16".parse().unwrap()]);
    assert!(view.allowed_ips.contains(&"10.33.0.0/16".parse().unwrap()));
}
