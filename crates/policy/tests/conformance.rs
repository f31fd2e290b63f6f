//! Conformance runner: every vector in the conformance directory (env
//! `TAILWARDEN_CONFORMANCE_DIR`, default `shared/conformance` next to the repository) is fed
//! through the engine and compared as `shared/conformance/README.md` prescribes.
//!
//! Prints one line per category and a final `conformance: N passed, M failed` line. A vector
//! passes when every check the engine implements passes; checks it does not implement yet are
//! counted as skipped (a passing vector with skipped checks is reported as `partial`). The test
//! fails only when fewer vectors pass than `tests/conformance-baseline.txt` records.
//!
//! `CONFORMANCE_FILTER=<substring>` restricts the run to matching ids; `CONFORMANCE_VERBOSE=1`
//! prints a diff for every failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;
use tailwarden_policy::{Node, RouteView, Tailnet, TailnetSettings, User, compile};

const IMPLEMENTED: &[&str] = &[
    "outcome",
    "error_message",
    "policy_tests_pass",
    "packet_filter_rules",
    "auto_approval",
    "peers",
    "peer_routes",
    "peer_cap_map",
    "self_routes",
    "ssh_rules",
    "self_cap_map",
    "reject_only",
];

fn net_set(v: &Value) -> BTreeSet<ipnet::IpNet> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str()?.parse::<ipnet::IpNet>().ok())
        .map(|n| n.trunc())
        .collect()
}

fn cap_map_norm(v: &Value) -> BTreeMap<String, Value> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, x)| (k.clone(), if x.is_null() { Value::Array(Vec::new()) } else { x.clone() }))
        .collect()
}

/// Compares a route view against the expectation (absent members take their defaults).
fn check_view(what: &str, exp: &Value, got: &RouteView, routes_check: bool, caps_check: bool) -> Result<(), String> {
    if routes_check {
        let addrs: BTreeSet<ipnet::IpNet> = if exp.get("addresses").is_some() {
            net_set(&exp["addresses"])
        } else {
            got.addresses.iter().copied().collect()
        };
        let want_allowed: BTreeSet<ipnet::IpNet> = if exp.get("allowed_ips").is_some() {
            net_set(&exp["allowed_ips"])
        } else {
            addrs.iter().copied().chain(net_set(&exp["routes"])).collect()
        };
        let got_allowed: BTreeSet<ipnet::IpNet> = got.allowed_ips.iter().copied().collect();
        if want_allowed != got_allowed {
            return Err(format!("{what}: AllowedIPs want {want_allowed:?} got {got_allowed:?}"));
        }
        let want_primary = net_set(&exp["primary_routes"]);
        let got_primary: BTreeSet<ipnet::IpNet> = got.primary_routes.iter().copied().collect();
        if want_primary != got_primary {
            return Err(format!("{what}: PrimaryRoutes want {want_primary:?} got {got_primary:?}"));
        }
    }
    if caps_check {
        let want = cap_map_norm(&exp["cap_map"]);
        let got: BTreeMap<String, Value> = cap_map_norm(&serde_json::to_value(&got.cap_map).unwrap_or(Value::Null));
        if want != got {
            return Err(format!("{what}: CapMap want {want:?} got {got:?}"));
        }
    }
    Ok(())
}

/// This crate's directory, read at run time (cargo and nextest set it): a test binary reused from another
/// checkout of the same commit carries that checkout's path in `env!`.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn conformance_dir() -> PathBuf {
    match std::env::var_os("TAILWARDEN_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => manifest_dir().join("../../../shared/conformance"),
    }
}

fn tailnet_of(v: &Value) -> Tailnet {
    let mut users = Vec::new();
    let mut by_name = BTreeMap::new();
    for u in v["users"].as_array().into_iter().flatten() {
        let id = u["id"].as_u64().unwrap_or(0);
        let roles: Vec<&str> = u["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        by_name.insert(u["name"].as_str().unwrap_or("").to_string(), id);
        users.push(User {
            id,
            login: u["email"].as_str().unwrap_or("").to_string(),
            admin: roles.contains(&"admin"),
            owner: roles.contains(&"owner"),
        });
    }
    let nets = |x: &Value| -> Vec<ipnet::IpNet> {
        x.as_array().into_iter().flatten().filter_map(|s| s.as_str()?.parse().ok()).collect()
    };
    let mut nodes: Vec<Node> = v["nodes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, n)| Node {
            id: n["id"].as_u64().unwrap_or(u64::MAX),
            name: name.clone(),
            user: n["user"].as_str().and_then(|u| by_name.get(u).copied()),
            tags: n["tags"].as_array().into_iter().flatten().filter_map(|t| Some(t.as_str()?.to_string())).collect(),
            ipv4: n["ipv4"].as_str().and_then(|s| s.parse().ok()),
            ipv6: n["ipv6"].as_str().and_then(|s| s.parse().ok()),
            routable_ips: nets(&n["routable_ips"]),
            approved_routes: nets(&n["approved_routes"]),
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    // The tailnet is named after its owner's login; that login's domain is the associated one.
    let domains = v["source"]["tailnet"].as_str().and_then(|t| t.rsplit_once('@')).map(|(_, d)| vec![d.to_string()]);
    Tailnet { users, nodes, domains: domains.unwrap_or_default() }
}

/// Tailnet settings as the capture configured them. `default-auto-update` is only sent in
/// captures from 14 April 2026 on (see the conformance README).
fn settings_of(v: &Value) -> TailnetSettings {
    let captured = v["source"]["captured_at"].as_str().unwrap_or("");
    let on = v["tailnet_settings"]["settings"]["devices_auto_updates_on"].as_bool().unwrap_or(false);
    TailnetSettings { default_auto_update: (captured >= "2026-04-14").then_some(on) }
}

/// Normalizes a filter rule for comparison: unordered members sorted, empties dropped,
/// capability values `null` and `[]` unified.
fn normalize_rule(rule: &Value) -> Value {
    let mut out = serde_json::Map::new();
    let sorted = |x: &Value| -> Value {
        let mut items: Vec<Value> = x.as_array().cloned().unwrap_or_default();
        items.sort_by_key(|a| a.to_string());
        Value::Array(items)
    };
    for key in ["SrcIPs", "DstPorts", "IPProto"] {
        if let Some(x) = rule.get(key).filter(|x| x.as_array().is_some_and(|a| !a.is_empty())) {
            out.insert(key.into(), sorted(x));
        }
    }
    if let Some(grants) = rule.get("CapGrant").and_then(Value::as_array).filter(|a| !a.is_empty()) {
        let grants = grants
            .iter()
            .map(|g| {
                let mut caps = serde_json::Map::new();
                for (k, val) in g.get("CapMap").and_then(Value::as_object).into_iter().flatten() {
                    caps.insert(k.clone(), if val.is_null() { Value::Array(Vec::new()) } else { val.clone() });
                }
                serde_json::json!({"Dsts": sorted(g.get("Dsts").unwrap_or(&Value::Null)), "CapMap": caps})
            })
            .collect();
        out.insert("CapGrant".into(), Value::Array(grants));
    }
    Value::Object(out)
}

fn normalize_rules(rules: &Value) -> Vec<Value> {
    rules.as_array().into_iter().flatten().map(normalize_rule).collect()
}

/// Normalizes SSH rules: principals unordered, empty members dropped, false flags dropped.
fn normalize_ssh(rules: &Value) -> Vec<Value> {
    rules
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut out = serde_json::Map::new();
            let mut principals: Vec<Value> = r["principals"].as_array().cloned().unwrap_or_default();
            principals.sort_by_key(|p| p.to_string());
            out.insert("principals".into(), Value::Array(principals));
            out.insert("sshUsers".into(), r["sshUsers"].clone());
            let action: serde_json::Map<String, Value> = r["action"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| !matches!(v, Value::Bool(false) | Value::Null) && *v != 0 && *v != "")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            out.insert("action".into(), Value::Object(action));
            if let Some(env) = r.get("acceptEnv").filter(|e| e.as_array().is_some_and(|a| !a.is_empty())) {
                out.insert("acceptEnv".into(), env.clone());
            }
            Value::Object(out)
        })
        .collect()
}

enum Verdict {
    Pass { skipped: usize },
    Fail(String),
}

fn run_vector(v: &Value) -> Verdict {
    let checks: Vec<&str> = v["checks"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let skipped = checks.iter().filter(|c| !IMPLEMENTED.contains(c)).count();
    let tailnet = tailnet_of(v);
    let policy = v["policy"].as_str().unwrap_or("");
    let expect_reject = v["expect"]["outcome"] == "reject";
    let result = compile(policy, &tailnet);
    match (&result, expect_reject) {
        (Ok(_), true) => {
            return Verdict::Fail(format!(
                "outcome: accepted, expected rejection: {}",
                v["expect"]["error"]["message"]
            ));
        }
        (Err(e), false) => return Verdict::Fail(format!("outcome: rejected ({e}), expected acceptance")),
        (Err(e), true) => {
            let want = v["expect"]["error"]["message"].as_str().unwrap_or("");
            // A vector may declare its message unmatchable (anonymisation changed it); its notes then
            // say to treat it as reject-only.
            let reject_only = v["notes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n.as_str().is_some_and(|n| n.contains("reject-only")));
            if checks.contains(&"error_message") && !reject_only && !e.to_string().contains(want) {
                return Verdict::Fail(format!("error_message: got {:?}, want substring {want:?}", e.to_string()));
            }
            return Verdict::Pass { skipped };
        }
        (Ok(_), false) => {}
    }
    let Ok(compiled) = result else { return Verdict::Fail("unreachable".into()) };
    if checks.contains(&"packet_filter_rules") {
        for (name, exp) in v["expect"]["nodes"].as_object().into_iter().flatten() {
            let Some(idx) = compiled.node_index(name) else {
                return Verdict::Fail(format!("packet_filter_rules: node {name} not in topology"));
            };
            let got = serde_json::to_value(compiled.filter_for(idx)).unwrap_or(Value::Null);
            let (got_n, want_n) = (normalize_rules(&got), normalize_rules(&exp["packet_filter_rules"]));
            if got_n != want_n {
                return Verdict::Fail(format!(
                    "packet_filter_rules: node {name}\n    want {}\n    got  {}",
                    Value::Array(want_n),
                    Value::Array(got_n)
                ));
            }
        }
    }
    let (peers_check, routes_check, caps_check) =
        (checks.contains(&"peers"), checks.contains(&"peer_routes"), checks.contains(&"peer_cap_map"));
    for (name, exp) in v["expect"]["nodes"].as_object().into_iter().flatten() {
        let Some(idx) = compiled.node_index(name) else { continue };
        let peers: BTreeMap<String, usize> =
            compiled.peers(idx).into_iter().map(|p| (compiled.tailnet().nodes[p].name.clone(), p)).collect();
        if peers_check {
            let want: BTreeSet<&String> = exp["peers"].as_object().into_iter().flatten().map(|(k, _)| k).collect();
            let got: BTreeSet<&String> = peers.keys().collect();
            if want != got {
                return Verdict::Fail(format!("peers: node {name}: want {want:?} got {got:?}"));
            }
        }
        if routes_check || caps_check {
            for (peer, view) in exp["peers"].as_object().into_iter().flatten() {
                let Some(&p) = peers.get(peer) else { continue };
                if let Err(e) = check_view(
                    &format!("node {name} peer {peer}"),
                    view,
                    &compiled.route_view(idx, p),
                    routes_check,
                    caps_check,
                ) {
                    return Verdict::Fail(format!("peer_routes/peer_cap_map: {e}"));
                }
            }
        }
        if checks.contains(&"ssh_rules") {
            let got = serde_json::to_value(compiled.ssh_rules_for(idx, "https://unused")).unwrap_or(Value::Null);
            let (got_n, want_n) = (normalize_ssh(&got), normalize_ssh(&exp["ssh_rules"]));
            if got_n != want_n {
                return Verdict::Fail(format!(
                    "ssh_rules: node {name}\n    want {}\n    got  {}",
                    Value::Array(want_n),
                    Value::Array(got_n)
                ));
            }
        }
        if checks.contains(&"self_cap_map") {
            // Keys describing tailnet state tailwarden does not model yet are dropped from both
            // sides, as the vector's `headscale` member lists them.
            let ignored: Vec<&str> =
                v["headscale"]["ignored_cap_keys"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let prefixes: Vec<&str> = v["headscale"]["ignored_cap_key_prefixes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let keep = |k: &String| !ignored.contains(&k.as_str()) && !prefixes.iter().any(|p| k.starts_with(p));
            let mut want = cap_map_norm(&exp["self"]["cap_map"]);
            want.retain(|k, _| keep(k));
            let got_raw = serde_json::to_value(compiled.self_cap_map(idx, &settings_of(v))).unwrap_or(Value::Null);
            let mut got = cap_map_norm(&got_raw);
            got.retain(|k, _| keep(k));
            if want != got {
                return Verdict::Fail(format!("self_cap_map: node {name}: want {want:?} got {got:?}"));
            }
        }
        if checks.contains(&"self_routes") {
            let view = exp.get("self").cloned().unwrap_or(Value::Null);
            if let Err(e) = check_view(&format!("node {name} self"), &view, &compiled.route_view(idx, idx), true, false)
            {
                return Verdict::Fail(format!("self_routes: {e}"));
            }
        }
    }
    if checks.contains(&"auto_approval") {
        for (i, node) in compiled.tailnet().nodes.iter().enumerate() {
            for route in &node.routable_ips {
                let want = node.approved_routes.contains(route);
                if compiled.auto_approves(i, route) != want {
                    return Verdict::Fail(format!(
                        "auto_approval: node {} route {route}: want approved={want}",
                        node.name
                    ));
                }
            }
        }
    }
    Verdict::Pass { skipped }
}

#[test]
fn conformance() {
    let dir = conformance_dir();
    let filter = std::env::var("CONFORMANCE_FILTER").ok();
    let verbose = std::env::var_os("CONFORMANCE_VERBOSE").is_some();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("conformance directory {} not readable; set TAILWARDEN_CONFORMANCE_DIR", dir.display());
    };
    let mut categories: Vec<PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    categories.sort();
    let (mut total_pass, mut total_fail) = (0usize, 0usize);
    for cat in &categories {
        let name = cat.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(cat).map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        let (mut pass, mut fail, mut partial) = (0, 0, 0);
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                println!("SKIP {}: not JSON", f.display());
                continue;
            };
            let id = v["id"].as_str().unwrap_or("?").to_string();
            if filter.as_ref().is_some_and(|flt| !id.contains(flt.as_str())) {
                continue;
            }
            if v["format"] != 1 {
                println!("SKIP {id}: unknown format {}", v["format"]);
                continue;
            }
            match run_vector(&v) {
                Verdict::Pass { skipped } => {
                    pass += 1;
                    if skipped > 0 {
                        partial += 1;
                    }
                }
                Verdict::Fail(why) => {
                    fail += 1;
                    if verbose {
                        println!("FAIL {id}: {why}");
                    }
                }
            }
        }
        if pass + fail > 0 {
            if partial > 0 {
                println!("{name}: {pass} passed ({partial} of them with skipped checks), {fail} failed");
            } else {
                println!("{name}: {pass} passed, {fail} failed");
            }
        }
        total_pass += pass;
        total_fail += fail;
    }
    println!("conformance: {total_pass} passed, {total_fail} failed");
    let baseline: usize = std::fs::read_to_string(manifest_dir().join("tests/conformance-baseline.txt"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if filter.is_none() && std::env::var_os("TAILWARDEN_CONFORMANCE_DIR").is_none() {
        assert!(total_pass >= baseline, "conformance regressed: {total_pass} passed, baseline {baseline}");
    }
}
