//! The control protocol end to end in one process: a client built from Tailscale's own Noise initiator
//! (`ts_control_noise`) speaks HTTP/2 to the real router; responses are checked with tailscale-rs's parser.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tailwarden_control::admin::NewKeyRequest;
use tailwarden_control::keys::ServerKeys;
use tailwarden_control::{Control, Settings};
use tailwarden_store::Store;
use tailwarden_types::TenantId;
use tailwarden_wire::{DerpMap, DerpNode, DerpRegion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ts_keys::{MachineKeyPair, NodeKeyPair};

const T: TenantId = TenantId::DEFAULT;

struct TestServer {
    control: Arc<Control>,
    addr: std::net::SocketAddr,
    server_pub: ts_keys::MachinePublicKey,
}

async fn start(settings: Settings) -> TestServer {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let keys = ServerKeys::random();
    let server_pub: ts_keys::MachinePublicKey = keys.noise_public_text().parse().unwrap();
    let control = Control::new(store, settings, keys).await.unwrap();
    let _gc = control.spawn_background();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tailwarden_control::noise_http::routes(control.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    TestServer { control, addr, server_pub }
}

fn settings() -> Settings {
    let node = DerpNode {
        name: "999a".into(),
        region_id: 999,
        host_name: "127.0.0.1".into(),
        ipv4: "127.0.0.1".into(),
        ipv6: "none".into(),
        derp_port: 8443,
        insecure_for_tests: true,
        ..Default::default()
    };
    let region = DerpRegion {
        region_id: 999,
        region_code: "tw".into(),
        region_name: "test".into(),
        nodes: vec![node],
        ..Default::default()
    };
    Settings::for_tests(DerpMap { regions: [(999, region)].into(), omit_default_regions: false })
}

/// One client machine with a Noise connection carrying HTTP/2.
struct Client {
    node: NodeKeyPair,
    h2: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(server: &TestServer, machine: &MachineKeyPair, node: NodeKeyPair) -> Client {
        let capver = ts_capabilityversion::CapabilityVersion::CURRENT;
        let prologue = format!("Tailscale Control Protocol v{}", u16::from(capver));
        let (hs, init) = ts_control_noise::Handshake::initialize(&prologue, machine, &server.server_pub, capver);
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let req = format!(
            "POST /ts2021 HTTP/1.1\r\nHost: {}\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {init}\r\n\r\n",
            server.addr
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut io = hs.complete(tcp, machine).await.unwrap();
        let mut early = [0u8; 9];
        io.read_exact(&mut early).await.unwrap();
        assert_eq!(&early[..5], b"\xff\xff\xffTS", "early payload first");
        let mut json = vec![0u8; u32::from_be_bytes(early[5..].try_into().unwrap()) as usize];
        io.read_exact(&mut json).await.unwrap();
        let (h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
        tokio::spawn(conn);
        Client { node, h2 }
    }

    fn node_key(&self) -> String {
        self.node.public.to_string()
    }

    async fn post(&mut self, path: &str, body: Value) -> (u16, hyper::body::Incoming) {
        let req = http::Request::post(path)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let resp = self.h2.send_request(req).await.unwrap();
        (resp.status().as_u16(), resp.into_body())
    }

    async fn register(&mut self, auth_key: &str, hostname: &str) -> Value {
        let body = json!({"Version": 130, "NodeKey": self.node_key(), "Auth": {"AuthKey": auth_key}, "Hostinfo": {"Hostname": hostname}});
        let (status, body) = self.post("/machine/register", body).await;
        assert_eq!(status, 200);
        let bytes = body.collect().await.unwrap().to_bytes();
        let _: ts_control_serde::RegisterResponse = serde_json::from_slice(&bytes).expect("tailscale-rs parses it");
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn stream(&mut self, compress: &str) -> MapStream {
        let body = json!({"Version": 130, "NodeKey": self.node_key(), "DiscoKey": format!("discokey:{}", "ab".repeat(32)),
            "Stream": true, "KeepAlive": true, "Compress": compress, "Hostinfo": {"Hostname": "x", "NetInfo": {"PreferredDERP": 999}}});
        let (status, body) = self.post("/machine/map", body).await;
        assert_eq!(status, 200);
        MapStream { body, buf: Vec::new(), zstd: compress == "zstd" }
    }
}

struct MapStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    zstd: bool,
}

impl MapStream {
    /// The next message, within `wait`.
    async fn next(&mut self, wait: Duration) -> Value {
        tokio::time::timeout(wait, async {
            loop {
                if self.buf.len() >= 4 {
                    let n = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
                    if self.buf.len() >= 4 + n {
                        let payload: Vec<u8> = self.buf.drain(..4 + n).skip(4).collect();
                        let json = if self.zstd { zstd::stream::decode_all(&payload[..]).unwrap() } else { payload };
                        let _: ts_control_serde::MapResponse =
                            serde_json::from_slice(&json).expect("tailscale-rs parses every message");
                        return serde_json::from_slice(&json).unwrap();
                    }
                }
                let frame = self.body.frame().await.expect("stream open").unwrap();
                if let Ok(data) = frame.into_data() {
                    self.buf.extend_from_slice(&data);
                }
            }
        })
        .await
        .expect("message arrives in time")
    }

    /// Skips messages until one satisfies `pred`.
    async fn until(&mut self, wait: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.next(left).await;
            if pred(&msg) {
                return msg;
            }
        }
    }
}

async fn key(server: &TestServer, user: &str, reusable: bool, ephemeral: bool) -> String {
    let u = server.control.create_user(T, user, "", "").await.unwrap();
    let (_, secret) = server
        .control
        .create_pre_auth_key(T, NewKeyRequest { user: Some(u.id), reusable, ephemeral, ..Default::default() })
        .await
        .unwrap();
    secret
}

fn patch_for<'a>(msg: &'a Value, id: &Value) -> Option<&'a Value> {
    msg["PeersChangedPatch"].as_array()?.iter().find(|p| p["NodeID"] == *id)
}

/// What a delta says about node `id`: its patch, or its whole entry in `PeersChanged` (changes collected in one
/// window fold into the whole node when it was resent anyway).
fn change_for<'a>(msg: &'a Value, id: &Value) -> Option<&'a Value> {
    patch_for(msg, id).or_else(|| msg["PeersChanged"].as_array()?.iter().find(|p| p["ID"] == *id))
}

const SEC: Duration = Duration::from_secs(1);

#[tokio::test]
async fn first_map_is_complete_and_changes_arrive_as_deltas_within_a_second() {
    let server = start(settings()).await;
    let k = key(&server, "alice", true, false).await;
    let mut a = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    let reg = a.register(&k, "alpha").await;
    assert_eq!(reg["MachineAuthorized"], true);
    assert_eq!(reg["Error"], "");
    let mut b = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    b.register(&k, "beta").await;

    let mut sa = a.stream("").await;
    let first = sa.next(SEC).await;
    let me = &first["Node"];
    assert_eq!(me["Name"], "alpha.tailnet.internal.");
    assert_eq!(me["MachineAuthorized"], true);
    assert_eq!(me["Addresses"].as_array().unwrap().len(), 2);
    assert!(me["CapMap"].get("disable-captive-portal-detection").is_some());
    assert_eq!(first["DERPMap"]["Regions"]["999"]["Nodes"][0]["DERPPort"], 8443);
    assert_eq!(first["PacketFilter"][0]["SrcIPs"][0], "*");
    assert_eq!(first["DNSConfig"]["Domains"][0], "tailnet.internal");
    assert_eq!(first["Debug"]["DisableLogTail"], true);
    let peers = first["Peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["Name"], "beta.tailnet.internal.");
    assert_eq!(peers[0]["Online"], false);
    let b_id = peers[0]["ID"].clone();
    assert!(first["UserProfiles"].as_array().unwrap().iter().any(|p| p["LoginName"] == "alice"));

    // B comes online: A gets a patch, not a full map.
    let mut sb = b.stream("zstd").await;
    let b_first = sb.next(SEC).await;
    assert_eq!(b_first["Peers"][0]["Name"], "alpha.tailnet.internal.", "zstd stream decodes");
    let online = sa.until(SEC, |m| change_for(m, &b_id).is_some_and(|c| c["Online"] == true)).await;
    assert!(online.get("Peers").is_none(), "a delta never carries Peers");

    // A lite update with new endpoints reaches A as a patch.
    let lite = json!({"Version": 130, "NodeKey": b.node_key(), "OmitPeers": true, "Stream": false, "Endpoints": ["192.0.2.7:41641", "[fe80::1]:1"]});
    let (status, _) = b.post("/machine/map", lite).await;
    assert_eq!(status, 200);
    let eps = sa.until(SEC, |m| patch_for(m, &b_id).is_some_and(|p| p.get("Endpoints").is_some())).await;
    assert_eq!(
        patch_for(&eps, &b_id).unwrap()["Endpoints"],
        json!(["192.0.2.7:41641"]),
        "link-local endpoints dropped"
    );

    // B's stream ends: A sees it offline, with a last-seen time.
    drop(sb);
    drop(b);
    let offline = sa.until(SEC * 2, |m| patch_for(m, &b_id).is_some_and(|p| p["Online"] == false)).await;
    assert!(patch_for(&offline, &b_id).unwrap()["LastSeen"].is_string());

    // A new node appears as PeersChanged; deleting it sends PeersRemoved.
    let mut c = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    c.register(&k, "gamma").await;
    let added = sa.until(SEC, |m| m["PeersChanged"].is_array()).await;
    let c_node = &added["PeersChanged"][0];
    assert_eq!(c_node["Name"], "gamma.tailnet.internal.");
    let c_id = c_node["ID"].as_i64().unwrap();
    server.control.delete_node(T, tailwarden_types::NodeId(c_id)).await.unwrap();
    let removed = sa.until(SEC, |m| m["PeersRemoved"].is_array()).await;
    assert_eq!(removed["PeersRemoved"], json!([c_id]));
}

#[tokio::test]
async fn garbage_gets_errors_not_panics() {
    let server = start(settings()).await;
    let upgrade = "Upgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n";
    let cases = [
        ("no upgrade", "POST /ts2021 HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        ("bad base64", format!("POST /ts2021 HTTP/1.1\r\nHost: x\r\n{upgrade}X-Tailscale-Handshake: !!!\r\n\r\n")),
        ("short init", format!("POST /ts2021 HTTP/1.1\r\nHost: x\r\n{upgrade}X-Tailscale-Handshake: AAAA\r\n\r\n")),
        (
            "forged init",
            format!("POST /ts2021 HTTP/1.1\r\nHost: x\r\n{upgrade}X-Tailscale-Handshake: {}\r\n\r\n", forged_init()),
        ),
    ];
    for (what, req) in cases {
        let resp = raw_request(server.addr, &req).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
    }
    let key = raw_request(server.addr, "GET /key?v=130 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(key.contains("\"publicKey\":\"mkey:") && key.contains("legacyPublicKey"), "{key}");

    // Inside the Noise channel: malformed JSON, unknown node, too-old client.
    let mut c = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    let req = http::Request::post("/machine/register").body(Full::new(Bytes::from_static(b"{not json"))).unwrap();
    let resp = c.h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("RegisterRequest"), "error names the message");
    let (status, _) = c.post("/machine/map", json!({"Version": 130, "NodeKey": c.node_key(), "Stream": true})).await;
    assert_eq!(status, 404, "unknown node");
    let (status, _) = c.post("/machine/map", json!({"Version": 90, "NodeKey": c.node_key()})).await;
    assert_eq!(status, 400, "client too old");
    let reg = c.register("", "x").await;
    assert!(reg["AuthURL"].as_str().unwrap().contains("/register/"), "no key: interactive login URL");
    let body = json!({"Version": 100, "NodeKey": c.node_key()});
    let (_, b) = c.post("/machine/register", body).await;
    let v: Value = serde_json::from_slice(&b.collect().await.unwrap().to_bytes()).unwrap();
    assert!(v["Error"].as_str().unwrap().contains("too old"), "{v}");
    let (status, _) = c.post("/machine/some-unknown-endpoint", json!({})).await;
    assert_eq!(status, 501);
}

fn forged_init() -> String {
    use base64::Engine;
    let mut init = vec![0u8; 101];
    init[0..2].copy_from_slice(&130u16.to_be_bytes());
    init[2] = 1;
    init[3..5].copy_from_slice(&96u16.to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(init)
}

/// Sends raw bytes and returns what the server answers before closing (or the first chunk).
async fn raw_request(addr: std::net::SocketAddr, req: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(SEC, tcp.read(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out[..n]).to_string()
}

#[tokio::test]
async fn logout_ephemeral_collection_and_restart_path() {
    let mut s = settings();
    s.ephemeral_inactivity_timeout = Duration::from_millis(300);
    let server = start(s).await;
    let reusable = key(&server, "dave", true, false).await;
    let u = server.control.list_users(T).await.unwrap()[0].id;
    let (_, eph) = server
        .control
        .create_pre_auth_key(T, NewKeyRequest { user: Some(u), ephemeral: true, ..Default::default() })
        .await
        .unwrap();

    let mut watcher = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    watcher.register(&reusable, "watcher").await;
    let mut sw = watcher.stream("").await;
    sw.next(SEC).await;

    // An ephemeral node that goes away is deleted after the inactivity timeout and leaves every peer's map.
    let mut e = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    e.register(&eph, "temp").await;
    let added = sw.until(SEC, |m| m["PeersChanged"].is_array()).await;
    let e_id = added["PeersChanged"][0]["ID"].clone();
    let se = e.stream("").await;
    drop(se);
    drop(e);
    let gone = sw.until(SEC * 5, |m| m["PeersRemoved"].is_array()).await;
    assert_eq!(gone["PeersRemoved"][0], e_id);
    assert!(server.control.list_nodes(T, None).await.unwrap().iter().all(|n| n.record.given_name != "temp"));

    // A restarted client (same machine and node key, no auth key) is recognised without re-auth.
    let machine = MachineKeyPair::random();
    let node = NodeKeyPair::random();
    let mut r = Client::connect(&server, &machine, node.clone()).await;
    r.register(&reusable, "roamer").await;
    let mut r2 = Client::connect(&server, &machine, node.clone()).await;
    let again = r2.register("", "roamer").await;
    assert_eq!(again["MachineAuthorized"], true);
    assert_eq!(again["AuthURL"], "");

    // Logout (expiry in the past) expires the node; its next register says the key expired.
    let body = json!({"Version": 130, "NodeKey": r2.node_key(), "Expiry": "1970-01-01T00:02:03Z"});
    let (status, _) = r2.post("/machine/register", body).await;
    assert_eq!(status, 200);
    let after = r2.register("", "roamer").await;
    assert_eq!(after["NodeKeyExpired"], true);

    // Another machine cannot use that node key.
    let mut thief = Client::connect(&server, &MachineKeyPair::random(), node).await;
    let stolen = thief.register("", "roamer").await;
    assert_ne!(stolen["MachineAuthorized"], true);
}

#[tokio::test]
async fn websocket_variant_carries_the_same_protocol() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = start(settings()).await;
    let k = key(&server, "erin", false, false).await;
    let machine = MachineKeyPair::random();
    let node = NodeKeyPair::random();
    let capver = ts_capabilityversion::CapabilityVersion::CURRENT;
    let prologue = format!("Tailscale Control Protocol v{}", u16::from(capver));
    let (hs, init) = ts_control_noise::Handshake::initialize(&prologue, &machine, &server.server_pub, capver);
    let init = init.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    let mut req = format!("ws://{}/ts2021?X-Tailscale-Handshake={init}", server.addr).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "tailscale-control-protocol".parse().unwrap());
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "tailscale-control-protocol");
    let io = hs.complete(tailwarden_derp::http::WebSocketByteStream::new(ws), &machine).await.unwrap();
    let (h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let mut c = Client { node, h2 };
    let reg = c.register(&k, "browser").await;
    assert_eq!(reg["MachineAuthorized"], true);
    let mut s = c.stream("").await;
    assert_eq!(s.next(SEC).await["Node"]["Name"], "browser.tailnet.internal.");

    // Without the subprotocol the upgrade is refused.
    let mut bad = format!("ws://{}/ts2021?X-Tailscale-Handshake=AAAA", server.addr).into_client_request().unwrap();
    bad.headers_mut().remove("Sec-WebSocket-Protocol");
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    assert!(tokio_tungstenite::client_async(bad, tcp).await.is_err());
}

#[tokio::test]
async fn node_key_rotation_and_keep_alives() {
    let mut s = settings();
    s.keep_alive_interval = Duration::from_millis(100);
    let server = start(s).await;
    let k = key(&server, "frank", true, false).await;
    let mut w = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    w.register(&k, "watcher").await;
    let mut sw = w.stream("").await;
    sw.next(SEC).await;
    let ka = sw.until(SEC, |m| m.get("KeepAlive").is_some()).await;
    assert_eq!(ka, json!({"KeepAlive": true}), "keep-alive is exactly the message Go clients special-case");

    let machine = MachineKeyPair::random();
    let old = NodeKeyPair::random();
    let mut r = Client::connect(&server, &machine, old.clone()).await;
    r.register(&k, "rotor").await;
    let added = sw.until(SEC, |m| m["PeersChanged"].is_array()).await;
    let (id, ip) = (added["PeersChanged"][0]["ID"].clone(), added["PeersChanged"][0]["Addresses"].clone());

    // Rotate: new node key, old key named, no auth key. Same node, same addresses; peers learn the new key.
    let new = NodeKeyPair::random();
    let body = json!({"Version": 130, "NodeKey": new.public.to_string(), "OldNodeKey": old.public.to_string(), "Hostinfo": {"Hostname": "rotor"}});
    let (status, b) = r.post("/machine/register", body).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&b.collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["MachineAuthorized"], true, "{v}");
    let changed =
        sw.until(SEC, |m| m["PeersChanged"].as_array().is_some_and(|p| p[0]["Key"] == new.public.to_string())).await;
    assert_eq!(changed["PeersChanged"][0]["ID"], id);
    assert_eq!(changed["PeersChanged"][0]["Addresses"], ip);

    // The old key no longer opens a map; the new one does.
    let (status, _) =
        r.post("/machine/map", json!({"Version": 130, "NodeKey": old.public.to_string(), "Stream": false})).await;
    assert_eq!(status, 404);
    r.node = new;
    let mut sr = r.stream("").await;
    assert_eq!(sr.next(SEC).await["Node"]["ID"], id);
}

#[tokio::test]
async fn policy_limits_peers_and_filters_and_changes_arrive_as_deltas() {
    let server = start(settings()).await;
    let ka = key(&server, "alice", true, false).await;
    let kb = key(&server, "bob", true, false).await;
    let mut a = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    a.register(&ka, "a").await;
    let mut b = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    b.register(&kb, "b").await;
    let mut c = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    c.register(&kb, "c").await;
    let ip = |name: &str| {
        let nodes = node_ips(&server);
        nodes.into_iter().find(|(n, _)| n == name).map(|(_, ip)| ip).unwrap()
    };
    let (ip_a, ip_b) = (ip("a"), ip("b"));

    // Only a → b:80. b sees a (it must accept a's packets); a sees b; c sees nobody.
    let policy = r#"{
        // HuJSON: comments and trailing commas are fine
        "acls": [ {"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]}, ],
    }"#;
    let info = server.control.set_policy(T, policy).await.unwrap();
    assert_eq!(info.policy, policy);

    let mut sa = a.stream("").await;
    let mut sb = b.stream("").await;
    let mut sc = c.stream("").await;
    let first_a = sa.next(SEC).await;
    let first_b = sb.next(SEC).await;
    let first_c = sc.next(SEC).await;
    let names = |m: &Value| -> Vec<String> {
        m["Peers"]
            .as_array()
            .map(|p| p.iter().map(|n| n["Name"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(names(&first_a), vec!["b.tailnet.internal.", "c.tailnet.internal."]);
    assert_eq!(names(&first_b), vec!["a.tailnet.internal."]);
    assert!(names(&first_c).contains(&"a.tailnet.internal.".to_string()));
    assert_eq!(first_a["PacketFilter"], json!([]), "a accepts nothing inbound");
    let fb = &first_b["PacketFilter"][0];
    assert!(fb["SrcIPs"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().starts_with(&ip_a)), "{fb}");
    assert_eq!(fb["DstPorts"][0]["Ports"], json!({"First": 80, "Last": 80}));
    assert!(fb["DstPorts"].as_array().unwrap().iter().any(|d| d["IP"].as_str().unwrap().starts_with(&ip_b)), "{fb}");

    // Administrators can ask why: b's filter admits a on 80 only, and a sees b.
    let id = |name: &str| {
        let control = server.control.clone();
        let name = name.to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(control.list_nodes(T, None))
                .unwrap()
                .into_iter()
                .find(|v| v.record.given_name == name)
                .unwrap()
                .record
                .id
        })
        .join()
        .unwrap()
    };
    let (id_a, id_b, id_c) = (id("a"), id("b"), id("c"));
    let yes = server.control.can_reach(T, id_a, id_b, 80, 6).await.unwrap();
    assert!(yes.allowed && yes.visible);
    assert_eq!(yes.rule.unwrap().dst_ports[0].ports.first, 80);
    assert!(!server.control.can_reach(T, id_a, id_b, 81, 6).await.unwrap().allowed);
    assert!(!server.control.can_reach(T, id_b, id_a, 80, 6).await.unwrap().allowed);
    assert_eq!(server.control.debug_node(T, id_b).await.unwrap().peers, vec![id_a]);
    assert!(server.control.debug_node(T, id_c).await.unwrap().peers.contains(&id_a));

    // A policy whose tests fail is refused; the old one stays in force.
    let failing = r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]}],
        "tests": [{"src": "bob@", "accept": ["alice@:22"]}]}"#;
    let err = server.control.set_policy(T, failing).await.unwrap_err();
    assert!(err.to_string().contains("test"), "{err}");
    assert_eq!(server.control.policy(T).await.unwrap().policy, policy);
    let err = server
        .control
        .set_policy(T, r#"{"acls": [{"action": "accept", "src": ["group:nope"], "dst": ["*:*"]}]}"#)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("group:nope"), "{err}");

    // Allowing b → a too reaches a as a new packet filter, without reconnecting.
    let both = r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]},
                            {"action": "accept", "src": ["bob@"], "dst": ["alice@:22"]}]}"#;
    server.control.set_policy(T, both).await.unwrap();
    let delta = sa.until(SEC, |m| m.get("PacketFilter").is_some()).await;
    assert!(delta.get("Peers").is_none());
    assert_eq!(delta["PacketFilter"][0]["DstPorts"][0]["Ports"], json!({"First": 22, "Last": 22}));

    // Removing every rule: b loses a, a's filter stays empty.
    server.control.set_policy(T, r#"{"acls": []}"#).await.unwrap();
    let gone = sb.until(SEC, |m| m["PeersRemoved"].is_array()).await;
    assert_eq!(gone["PeersRemoved"].as_array().unwrap().len(), 1);
    assert_eq!(gone["PacketFilter"], json!([]));
}

/// (given name, IPv4) of every node.
fn node_ips(server: &TestServer) -> Vec<(String, String)> {
    let control = server.control.clone();
    let views = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(control.list_nodes(T, None))
            .unwrap()
    })
    .join()
    .unwrap();
    views.into_iter().map(|v| (v.record.given_name, v.record.ipv4.unwrap().to_string())).collect()
}

#[tokio::test]
async fn new_dns_records_and_derp_maps_reach_every_session_in_both_encodings() {
    let server = start(settings()).await;
    let k = key(&server, "alice", true, false).await;
    let mut a = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    a.register(&k, "alpha").await;
    let mut b = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    b.register(&k, "beta").await;
    let mut sa = a.stream("").await;
    let mut sb = b.stream("zstd").await;
    assert!(sa.next(SEC).await["DNSConfig"].get("ExtraRecords").is_none());
    sb.next(SEC).await;

    let record = tailwarden_wire::DnsRecord {
        name: "grafana.example.com".into(),
        record_type: "A".into(),
        value: "100.64.0.9".into(),
    };
    assert!(server.control.set_extra_records(vec![record.clone()]));
    assert!(!server.control.set_extra_records(vec![record]), "the same records are no change");
    for stream in [&mut sa, &mut sb] {
        let msg = stream.until(SEC, |m| m.get("DNSConfig").is_some()).await;
        assert_eq!(
            msg["DNSConfig"]["ExtraRecords"],
            json!([{"Name": "grafana.example.com", "Type": "A", "Value": "100.64.0.9"}])
        );
        assert_eq!(msg["DNSConfig"]["Domains"][0], "tailnet.internal");
    }

    let mut map = server.control.settings().derp_map.get().as_ref().clone();
    map.regions.get_mut(&999).unwrap().nodes[0].derp_port = 9443;
    assert!(server.control.set_derp_map(map.clone()));
    assert!(!server.control.set_derp_map(map));
    for stream in [&mut sa, &mut sb] {
        let msg = stream.until(SEC, |m| m.get("DERPMap").is_some()).await;
        assert_eq!(msg["DERPMap"]["Regions"]["999"]["Nodes"][0]["DERPPort"], 9443);
    }

    // A session opened afterwards starts with the new values.
    let mut c = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    c.register(&k, "gamma").await;
    let first = c.stream("").await.next(SEC).await;
    assert_eq!(first["DERPMap"]["Regions"]["999"]["Nodes"][0]["DERPPort"], 9443);
    assert_eq!(first["DNSConfig"]["ExtraRecords"][0]["Name"], "grafana.example.com");
}

/// Map requests update the tailnet at once and the store a little later; an administrator's change made in between
/// must not bring back the store's older copy of what the client reported (here: its advertised route and
/// endpoint, right before the route is approved).
#[tokio::test]
async fn admin_changes_keep_what_the_client_just_reported() {
    let server = start(settings()).await;
    let k = key(&server, "alice", true, false).await;
    let mut router = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    router.register(&k, "router").await;
    let mut viewer = Client::connect(&server, &MachineKeyPair::random(), NodeKeyPair::random()).await;
    viewer.register(&k, "viewer").await;
    let mut sv = viewer.stream("").await;
    let first = sv.next(SEC).await;
    let router_id = first["Peers"][0]["ID"].clone();

    let body = json!({"Version": 130, "NodeKey": router.node_key(), "DiscoKey": format!("discokey:{}", "cd".repeat(32)),
        "Stream": true, "KeepAlive": true, "Endpoints": ["192.0.2.7:41641"],
        "Hostinfo": {"Hostname": "router", "RoutableIPs": ["192.0.2.0/24"]}});
    let (status, _router_stream) = router.post("/machine/map", body).await;
    assert_eq!(status, 200);
    let id = tailwarden_types::NodeId(router_id.as_i64().unwrap());
    server.control.approve_routes(T, id, &["192.0.2.0/24".to_string()]).await.unwrap();

    let msg = sv
        .until(2 * SEC, |m| {
            change_for(m, &router_id)
                .is_some_and(|n| n["AllowedIPs"].as_array().is_some_and(|a| a.iter().any(|p| p == "192.0.2.0/24")))
        })
        .await;
    let node = change_for(&msg, &router_id).unwrap();
    assert_eq!(node["PrimaryRoutes"], json!(["192.0.2.0/24"]), "{node}");
    assert_eq!(node["Endpoints"], json!(["192.0.2.7:41641"]), "{node}");
    let listed = server.control.get_node(T, id).await.unwrap();
    assert_eq!(listed.record.endpoints, vec!["192.0.2.7:41641"]);
}
