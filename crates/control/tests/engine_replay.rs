//! The incremental engine against the naive path: random sequences of joins, deletions, tag changes, endpoint
//! updates, advertised and approved subnet routes and policy changes are applied while every node streams its map;
//! after each step, the view each session rebuilt from the deltas it received (peers with their endpoints, online
//! state, allowed IPs and primary routes; packet filter) equals a fresh full map computed from scratch for that node.
//! Route changes take the engine's recompiling path (the policy is compiled again and every session's view is
//! compared), the other node changes its in-place path.

use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tailwarden_control::admin::NewKeyRequest;
use tailwarden_control::keys::ServerKeys;
use tailwarden_control::{Control, Settings};
use tailwarden_store::Store;
use tailwarden_types::{NodeId, Tag, TenantId};
use tailwarden_wire::{AuthInfo, DerpMap, Hostinfo, MachineKey, MapRequest, NodeKey, RegisterRequest};

const T: TenantId = TenantId::DEFAULT;

/// What a client knows of one peer.
#[derive(Debug, PartialEq)]
struct Peer {
    endpoints: Value,
    online: Value,
    allowed_ips: Value,
    primary_routes: Value,
}

impl Peer {
    fn from_node(p: &Value) -> Peer {
        Peer {
            endpoints: p["Endpoints"].clone(),
            online: p["Online"].clone(),
            allowed_ips: p["AllowedIPs"].clone(),
            primary_routes: p["PrimaryRoutes"].clone(),
        }
    }
}

/// What a client knows, rebuilt from the messages it received.
#[derive(Debug, Default, PartialEq)]
struct View {
    peers: BTreeMap<i64, Peer>,
    filter: Value,
}

impl View {
    fn apply(&mut self, msg: &Value) {
        if let Some(peers) = msg["Peers"].as_array() {
            self.peers = peers.iter().map(|p| (p["ID"].as_i64().unwrap(), Peer::from_node(p))).collect();
        }
        for p in msg["PeersChanged"].as_array().into_iter().flatten() {
            self.peers.insert(p["ID"].as_i64().unwrap(), Peer::from_node(p));
        }
        for id in msg["PeersRemoved"].as_array().into_iter().flatten() {
            self.peers.remove(&id.as_i64().unwrap());
        }
        for p in msg["PeersChangedPatch"].as_array().into_iter().flatten() {
            if let Some(peer) = self.peers.get_mut(&p["NodeID"].as_i64().unwrap()) {
                if p.get("Endpoints").is_some() {
                    peer.endpoints = p["Endpoints"].clone();
                }
                if p.get("Online").is_some() {
                    peer.online = p["Online"].clone();
                }
            }
        }
        if msg.get("PacketFilter").is_some() {
            self.filter = msg["PacketFilter"].clone();
        }
    }
}

/// A streaming session read in the background into a shared view.
struct Session {
    view: Arc<std::sync::Mutex<View>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn frames(buf: &mut Vec<u8>) -> Vec<Value> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let n = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        if buf.len() < 4 + n {
            break;
        }
        let payload: Vec<u8> = buf.drain(..4 + n).skip(4).collect();
        out.push(serde_json::from_slice(&payload).expect("map messages are JSON"));
    }
    out
}

async fn open(control: &Arc<Control>, machine: MachineKey, node: NodeKey) -> Session {
    let req = MapRequest { version: 130, node_key: node, stream: true, ..Default::default() };
    let mut body = control.map(machine, req).await.into_body();
    let view = Arc::new(std::sync::Mutex::new(View::default()));
    let shared = view.clone();
    let task = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                for msg in frames(&mut buf) {
                    shared.lock().unwrap().apply(&msg);
                }
            }
        }
    });
    Session { view, task }
}

/// A fresh full map for the node, as the naive path builds it.
async fn full_view(control: &Arc<Control>, machine: MachineKey, node: NodeKey) -> View {
    let req = MapRequest { version: 130, node_key: node, ..Default::default() };
    let body = control.map(machine, req).await.into_body().collect().await.unwrap().to_bytes();
    let mut buf = body.to_vec();
    let mut view = View::default();
    for msg in frames(&mut buf) {
        view.apply(&msg);
    }
    view
}

/// Subnet routes nodes advertise and get approved, out of which the policies grant some.
const ROUTES: &[&str] = &["10.1.0.0/24", "10.1.1.0/24", "10.2.0.0/24"];

const POLICIES: &[&str] = &[
    r#"{"tagOwners": {"tag:web": ["u0@"], "tag:db": ["u0@"]},
        "acls": [{"action": "accept", "src": ["u1@", "u2@"], "dst": ["tag:web:80"]},
                 {"action": "accept", "src": ["tag:web"], "dst": ["tag:db:5432"]},
                 {"action": "accept", "src": ["u2@"], "dst": ["10.1.0.0/16:*"]},
                 {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}]}"#,
    r#"{"tagOwners": {"tag:web": ["u0@"], "tag:db": ["u0@"]},
        "acls": [{"action": "accept", "src": ["*"], "dst": ["tag:web:*"]},
                 {"action": "accept", "src": ["tag:db"], "dst": ["10.2.0.0/24:443"]}]}"#,
    r#"{"tagOwners": {"tag:web": ["u0@"], "tag:db": ["u0@"]},
        "acls": [{"action": "accept", "src": ["u0@", "tag:db"], "dst": ["u1@:22", "u2@:*"]}]}"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_rebuild_exactly_the_full_map() {
    let mut routed_peers = 0;
    for seed in 0..3u64 {
        let mut settings = Settings::for_tests(DerpMap::default());
        settings.map_coalesce_window = Duration::from_millis(20 * seed);
        let store = Store::open("sqlite::memory:").await.unwrap();
        let control = Control::new(store, settings, ServerKeys::random()).await.unwrap();
        let mut users = Vec::new();
        for u in 0..3 {
            let user = control.create_user(T, &format!("u{u}"), "", "").await.unwrap();
            let (_, key) = control
                .create_pre_auth_key(T, NewKeyRequest { user: Some(user.id), reusable: true, ..Default::default() })
                .await
                .unwrap();
            users.push(key);
        }
        control.set_policy(T, POLICIES[0]).await.unwrap();
        // Seeded, so a failing sequence replays the same.
        let mut rng = StdRng::seed_from_u64(seed);
        // Live nodes: (id, machine, node key, session).
        let mut nodes: Vec<(NodeId, MachineKey, NodeKey, Session)> = Vec::new();
        let mut next = 0;
        for step in 0..60 {
            match rng.gen_range(0..9) {
                0 | 1 if nodes.len() < 10 => {
                    let (machine, node) = (MachineKey(rand::random()), NodeKey(rand::random()));
                    let req = RegisterRequest {
                        version: 130,
                        node_key: node,
                        auth: Some(AuthInfo { auth_key: users[rng.gen_range(0..users.len())].clone() }),
                        hostinfo: Some(Hostinfo { hostname: format!("n{next}"), ..Default::default() }),
                        ..Default::default()
                    };
                    next += 1;
                    let resp = control.register(machine, req).await;
                    assert!(resp.error.is_empty(), "{}", resp.error);
                    let id = control.list_nodes(T, None).await.unwrap().iter().map(|v| v.record.id).max().unwrap();
                    let session = open(&control, machine, node).await;
                    nodes.push((id, machine, node, session));
                }
                2 if !nodes.is_empty() => {
                    let (id, ..) = nodes.remove(rng.gen_range(0..nodes.len()));
                    control.delete_node(T, id).await.unwrap();
                }
                3 if !nodes.is_empty() => {
                    let id = nodes[rng.gen_range(0..nodes.len())].0;
                    let tags: Vec<Tag> = match rng.gen_range(0..3) {
                        0 => Vec::new(),
                        1 => vec![Tag::parse("tag:web").unwrap()],
                        _ => vec![Tag::parse("tag:db").unwrap()],
                    };
                    control.set_tags(T, id, tags).await.unwrap();
                }
                4 if !nodes.is_empty() => {
                    let (_, machine, node, _) = &nodes[rng.gen_range(0..nodes.len())];
                    let eps = vec![format!("192.0.2.{}:41641", rng.gen_range(0..250) + 1)];
                    let req = MapRequest {
                        version: 130,
                        node_key: *node,
                        omit_peers: true,
                        endpoints: Some(eps),
                        ..Default::default()
                    };
                    control.map(*machine, req).await;
                }
                5 => {
                    control.set_policy(T, POLICIES[rng.gen_range(0..POLICIES.len())]).await.unwrap();
                }
                6 if !nodes.is_empty() => {
                    let (id, machine, node, _) = &nodes[rng.gen_range(0..nodes.len())];
                    let routes: Vec<String> =
                        ROUTES.iter().filter(|_| rng.gen_bool(0.5)).map(|r| r.to_string()).collect();
                    let hostname = format!("router-{}", id.0);
                    let req = MapRequest {
                        version: 130,
                        node_key: *node,
                        omit_peers: true,
                        hostinfo: Some(Hostinfo { hostname, routable_ips: routes, ..Default::default() }),
                        ..Default::default()
                    };
                    control.map(*machine, req).await;
                }
                7 if !nodes.is_empty() => {
                    let id = nodes[rng.gen_range(0..nodes.len())].0;
                    let routes: Vec<String> =
                        ROUTES.iter().filter(|_| rng.gen_bool(0.6)).map(|r| r.to_string()).collect();
                    control.approve_routes(T, id, &routes).await.unwrap();
                }
                _ => continue,
            }
            // Let the coalescing window pass and the sessions read what was sent.
            tokio::time::sleep(Duration::from_millis(20 * seed + 60)).await;
            for (id, machine, node, session) in &nodes {
                let want = full_view(&control, *machine, *node).await;
                routed_peers +=
                    want.peers.values().filter(|p| p.primary_routes.as_array().is_some_and(|r| !r.is_empty())).count();
                let got = session.view.lock().unwrap();
                assert_eq!(*got, want, "seed {seed} step {step}: node {id}");
            }
        }
    }
    assert!(routed_peers > 20, "the sequences hardly showed a peer routing a subnet: {routed_peers} times");
}

/// A session whose client stops reading must not hold up the others, and when it reads again it gets one fresh full
/// map instead of the backlog of deltas it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_falls_behind_catches_up_with_one_full_map() {
    let mut settings = Settings::for_tests(DerpMap::default());
    settings.map_coalesce_window = Duration::ZERO;
    let store = Store::open("sqlite::memory:").await.unwrap();
    let control = Control::new(store, settings, ServerKeys::random()).await.unwrap();
    let user = control.create_user(T, "u0", "", "").await.unwrap();
    let (_, key) = control
        .create_pre_auth_key(T, NewKeyRequest { user: Some(user.id), reusable: true, ..Default::default() })
        .await
        .unwrap();
    let mut nodes = Vec::new();
    for n in 0..3 {
        let (machine, node) = (MachineKey(rand::random()), NodeKey(rand::random()));
        let req = RegisterRequest {
            version: 130,
            node_key: node,
            auth: Some(AuthInfo { auth_key: key.clone() }),
            hostinfo: Some(Hostinfo { hostname: format!("n{n}"), ..Default::default() }),
            ..Default::default()
        };
        assert!(control.register(machine, req).await.error.is_empty());
        nodes.push((machine, node));
    }
    let [(slow_m, slow_k), (live_m, live_k), (changer_m, changer_k)] = nodes[..] else { unreachable!() };
    let changer = control.list_nodes(T, None).await.unwrap().iter().map(|v| v.record.id.0).max().unwrap();

    // Opened but never polled: its queue fills up.
    let req = MapRequest { version: 130, node_key: slow_k, stream: true, ..Default::default() };
    let mut slow = control.map(slow_m, req).await.into_body();
    let live = open(&control, live_m, live_k).await;

    let endpoint = |i: usize| format!("192.0.2.1:{}", 10_000 + i);
    let changes = 400;
    for i in 1..=changes {
        let req = MapRequest {
            version: 130,
            node_key: changer_k,
            omit_peers: true,
            endpoints: Some(vec![endpoint(i)]),
            ..Default::default()
        };
        assert!(control.map(changer_m, req).await.status().is_success());
    }
    let latest = serde_json::json!([endpoint(changes)]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while live.view.lock().unwrap().peers.get(&changer).map(|p| &p.endpoints) != Some(&latest) {
        assert!(tokio::time::Instant::now() < deadline, "the reading session never got the last change");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut messages = Vec::new();
    let mut buf = Vec::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_millis(300), slow.frame()).await {
        buf.extend_from_slice(&frame.into_data().unwrap());
        messages.extend(frames(&mut buf));
    }
    assert_eq!(messages.len(), 2, "first map and one catch-up map, not {} messages", messages.len());
    let catch_up = &messages[1];
    assert!(catch_up.get("Node").is_some(), "the catch-up message is a full map: {catch_up}");
    let peer = catch_up["Peers"].as_array().unwrap().iter().find(|p| p["ID"] == changer).unwrap();
    assert_eq!(peer["Endpoints"], latest);
}
