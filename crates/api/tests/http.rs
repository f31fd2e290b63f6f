//! The management API over real HTTP: happy paths, unknown ids, bad input, API-key authentication, legacy
//! aliases, and the OpenAPI document's coverage of the router.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::Arc;
use tailwarden_control::keys::ServerKeys;
use tailwarden_control::{Control, Settings};
use tailwarden_store::{NodeRegistration, RegisterMethod, Store};
use tailwarden_types::{DnsLabel, TenantId};

const T: TenantId = TenantId::DEFAULT;

async fn control_with(store: Store) -> Arc<Control> {
    Control::new(store, Settings::for_tests(tailwarden_wire::DerpMap::default()), ServerKeys::random()).await.unwrap()
}

async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The unauthenticated routes, as on the admin socket.
async fn start() -> std::net::SocketAddr {
    let control = control_with(Store::open("sqlite::memory:").await.unwrap()).await;
    serve(tailwarden_api::routes(control, T)).await
}

/// A store with user `alice` (id 1) owning node `n1` (id 1, advertising 10.0.0.0/24 and 0.0.0.0/0) and `n2`.
async fn store_with_nodes() -> Store {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let scope = store.tenant(T);
    let alice = scope.create_user("alice", "", "").await.unwrap();
    for (i, name) in ["n1", "n2"].into_iter().enumerate() {
        let hostinfo = json!({"Hostname": name, "RoutableIPs": ["10.0.0.0/24", "0.0.0.0/0", "::/0"]}).to_string();
        scope
            .register_node(NodeRegistration {
                machine_key: format!("mkey:{}", format!("{:02x}", i + 1).repeat(32)),
                node_key: format!("nodekey:{}", format!("{:02x}", i + 0x10).repeat(32)),
                disco_key: String::new(),
                hostname: name.into(),
                given_name: DnsLabel::parse(name).unwrap(),
                user_id: Some(alice.id),
                tags: vec![],
                hostinfo,
                expiry_ms: None,
                ephemeral: false,
                register_method: RegisterMethod::Cli,
                auth_key: None,
                now_ms: 1_700_000_000_000,
            })
            .await
            .unwrap();
    }
    store
}

async fn call(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    call_with(addr, method, path, body, None).await
}

async fn call_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    bearer: Option<&str>,
) -> (u16, Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "x")
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Asserts an error response: the status and Headscale's `{code, message, details}` shape.
fn assert_error(got: &(u16, Value), status: u16, what: &str) {
    let (s, v) = got;
    assert_eq!(*s, status, "{what}: {v}");
    assert!(v["code"].is_u64() && v["details"].is_array(), "{what}: error shape {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: error has a message: {v}");
}

#[tokio::test]
async fn users_keys_and_nodes() {
    let a = start().await;
    let (s, v) = call(a, "POST", "/api/v1/user", r#"{"name":"alice","displayName":"Alice"}"#).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user"]["name"], "alice");
    assert_eq!(v["user"]["displayName"], "Alice");
    let id = v["user"]["id"].as_str().unwrap().to_string();

    let (s, v) = call(a, "POST", "/api/v1/user", r#"{"name":"alice"}"#).await;
    assert_eq!(s, 409, "duplicate user: {v}");
    assert!(
        v["message"].as_str().unwrap().contains("alice") || v["message"].as_str().unwrap().contains("exists"),
        "{v}"
    );

    let (s, v) = call(a, "GET", "/api/v1/user?name=alice", "").await;
    assert_eq!((s, v["users"].as_array().unwrap().len()), (200, 1));

    // The key is shown once, in full; listings show only the prefix.
    let (s, v) = call(
        a,
        "POST",
        "/api/v1/preauthkey",
        &json!({"user": id, "reusable": true, "aclTags": ["tag:web"]}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let key = v["preAuthKey"]["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("hskey-auth-") && key.len() > 60, "{key}");
    assert_eq!(v["preAuthKey"]["aclTags"], json!(["tag:web"]));
    let (_, v) = call(a, "GET", "/api/v1/preauthkey?user=alice", "").await;
    let listed = v["preAuthKeys"][0]["key"].as_str().unwrap();
    assert_ne!(listed, key);
    assert!(!listed.contains(&key[30..]), "the secret part is never listed");

    let (s, v) = call(a, "GET", "/api/v1/node", "").await;
    assert_eq!((s, v["nodes"].as_array().unwrap().len()), (200, 0));
}

#[tokio::test]
async fn bad_input_gets_json_errors() {
    let a = start().await;
    let cases = [
        ("POST", "/api/v1/user", "{not json", 400),
        ("POST", "/api/v1/user", r#"{"name":""}"#, 400),
        ("POST", "/api/v1/user", r#"{"name":"has space"}"#, 400),
        ("POST", "/api/v1/preauthkey", r#"{"user":"nobody"}"#, 404),
        ("POST", "/api/v1/preauthkey", r#"{"user":null}"#, 400),
        ("POST", "/api/v1/preauthkey", r#"{"user":[1]}"#, 400),
        ("GET", "/api/v1/node?user=nobody", "", 404),
        ("DELETE", "/api/v1/node/12345", "", 404),
        ("DELETE", "/api/v1/node/abc", "", 400),
        ("POST", "/api/v1/node/12345/expire", "", 404),
        ("POST", "/api/v1/node/12345/rename/NOT_VALID", "", 400),
        ("POST", "/api/v1/node/register?user=nobody&key=x", "", 404),
    ];
    for (method, path, body, want) in cases {
        let (s, v) = call(a, method, path, body).await;
        assert_eq!(s, want, "{method} {path} {body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: error has a message: {v}");
    }
    let (_, v) = call(a, "POST", "/api/v1/user", r#"{"name":"bob"}"#).await;
    let id = v["user"]["id"].as_str().unwrap();
    let (s, v) = call(a, "POST", "/api/v1/preauthkey", &json!({"user": id, "aclTags": ["nottag"]}).to_string()).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) =
        call(a, "POST", "/api/v1/preauthkey", &json!({"user": id, "expiration": "yesterday"}).to_string()).await;
    assert_eq!(s, 400, "{v}");
    let (s, _) =
        call(a, "POST", "/api/v1/preauthkey", &json!({"user": id, "expiration": "2001-01-01T00:00:00Z"}).to_string())
            .await;
    assert_eq!(s, 400, "expiration in the past");
}

#[tokio::test]
async fn api_keys_lifecycle() {
    let a = start().await;
    let (s, v) = call(a, "POST", "/api/v1/apikey", r#"{"expiration":"2999-01-01T00:00:00Z"}"#).await;
    assert_eq!(s, 200, "{v}");
    let key = v["apiKey"].as_str().unwrap().to_string();
    assert!(key.starts_with("hskey-api-"), "{key}");
    let prefix = key["hskey-api-".len()..].split('-').next().unwrap().to_string();
    // An empty body gets the default lifetime.
    let (s, v) = call(a, "POST", "/api/v1/apikey", "").await;
    assert_eq!(s, 200, "{v}");

    let (s, v) = call(a, "GET", "/api/v1/apikey", "").await;
    assert_eq!(s, 200);
    let keys = v["apiKeys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["prefix"], format!("hskey-api-{prefix}-***"));
    assert_eq!(keys[0]["expiration"], "2999-01-01T00:00:00Z");
    assert!(keys[0]["lastSeen"].is_null() && keys[0]["createdAt"].is_string() && keys[0]["id"] == "1", "{v}");
    assert!(!v.to_string().contains(&key[key.len() - 10..]), "the secret is never listed");

    // Expire by bare prefix, by listed form and by id; delete by prefix.
    assert_eq!(call(a, "POST", "/api/v1/apikey/expire", &json!({"prefix": prefix}).to_string()).await.0, 200);
    let (_, v) = call(a, "GET", "/api/v1/apikey", "").await;
    let exp = v["apiKeys"][0]["expiration"].as_str().unwrap();
    assert!(exp < "2999", "expired now: {exp}");
    assert_eq!(
        call(a, "POST", "/api/v1/apikey/expire", &json!({"prefix": format!("hskey-api-{prefix}-***")}).to_string())
            .await
            .0,
        200
    );
    assert_eq!(call(a, "POST", "/api/v1/apikey/expire", r#"{"id":"2"}"#).await.0, 200);
    assert_eq!(call(a, "DELETE", &format!("/api/v1/apikey/{prefix}"), "").await.0, 200);
    let (_, v) = call(a, "GET", "/api/v1/apikey", "").await;
    assert_eq!(v["apiKeys"].as_array().unwrap().len(), 1);

    assert_error(&call(a, "DELETE", &format!("/api/v1/apikey/{prefix}"), "").await, 404, "deleted twice");
    assert_error(
        &call(a, "POST", "/api/v1/apikey/expire", r#"{"prefix":"nosuchprefix"}"#).await,
        404,
        "unknown prefix",
    );
    assert_error(&call(a, "POST", "/api/v1/apikey/expire", "{}").await, 400, "no prefix");
    assert_error(&call(a, "POST", "/api/v1/apikey/expire", r#"{"prefix":"x","id":"2"}"#).await, 400, "both");
    assert_error(&call(a, "POST", "/api/v1/apikey", r#"{"expiration":"2001-01-01T00:00:00Z"}"#).await, 400, "past");
    assert_error(&call(a, "POST", "/api/v1/apikey", r#"{"expiration":"soon"}"#).await, 400, "not a time");
    assert_error(&call(a, "POST", "/api/v1/apikey", "[1,2").await, 400, "not JSON");
    // A full key that does not verify names no key.
    let forged = format!("hskey-api-{prefix}-{}", "A".repeat(key.len() - prefix.len() - "hskey-api--".len()));
    assert_error(
        &call(a, "POST", "/api/v1/apikey/expire", &json!({"prefix": forged}).to_string()).await,
        404,
        "forged",
    );
}

#[tokio::test]
async fn network_listener_requires_a_valid_api_key() {
    let control = control_with(Store::open("sqlite::memory:").await.unwrap()).await;
    let public = serve(tailwarden_api::authenticated_routes(control.clone())).await;
    let local = serve(tailwarden_api::routes(control, T)).await;
    let (_, v) = call(local, "POST", "/api/v1/apikey", "").await;
    let key = v["apiKey"].as_str().unwrap().to_string();

    let bad_keys = [
        None,
        Some(String::new()),
        Some("hskey-api-garbage".to_string()),
        Some(format!("{}x", &key)),
        Some(format!("hskey-api-{}-{}", "a".repeat(12), "b".repeat(64))),
        Some(key.replace("hskey-api-", "hskey-auth-")),
        Some("Ünïcödé".to_string()),
    ];
    for bad in &bad_keys {
        let got = call_with(public, "GET", "/api/v1/user", "", bad.as_deref()).await;
        assert_error(&got, 401, &format!("key {bad:?}"));
        assert_eq!(got.1["code"], 16);
    }
    // Basic auth is not a bearer token.
    let tcp = tokio::net::TcpStream::connect(public).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/api/v1/user")
        .header("host", "x")
        .header("authorization", format!("Basic {key}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 401);

    let (s, v) = call_with(public, "GET", "/api/v1/apikey", "", Some(&key)).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["apiKeys"][0]["lastSeen"].is_string(), "use is recorded: {v}");
    let (s, v) = call_with(public, "GET", "/api/v1/health", "", Some(&key)).await;
    assert_eq!((s, v), (200, json!({"databaseConnectivity": true})));
    let (s, v) = call_with(public, "POST", "/api/v1/user", r#"{"name":"remote"}"#, Some(&key)).await;
    assert_eq!(s, 200, "{v}");
    assert_error(&call_with(public, "GET", "/api/v1/health", "", None).await, 401, "health needs a key");
    let (s, v) = call(public, "GET", "/api/v1/openapi.json", "").await;
    assert_eq!(s, 200);
    assert_eq!(v["openapi"].as_str().map(|v| &v[..2]), Some("3."));

    // An expired key stops working; so does a deleted one.
    let prefix = key["hskey-api-".len()..].split('-').next().unwrap().to_string();
    call(local, "POST", "/api/v1/apikey/expire", &json!({"prefix": prefix}).to_string()).await;
    assert_error(&call_with(public, "GET", "/api/v1/user", "", Some(&key)).await, 401, "expired key");
    let (_, v) = call(local, "POST", "/api/v1/apikey", "").await;
    let key2 = v["apiKey"].as_str().unwrap().to_string();
    assert_eq!(call_with(public, "GET", "/api/v1/user", "", Some(&key2)).await.0, 200);
    let prefix2 = key2["hskey-api-".len()..].split('-').next().unwrap().to_string();
    call(local, "DELETE", &format!("/api/v1/apikey/{prefix2}"), "").await;
    assert_error(&call_with(public, "GET", "/api/v1/user", "", Some(&key2)).await, 401, "deleted key");
}

#[tokio::test]
async fn users_rename_and_destroy() {
    let a = serve(tailwarden_api::routes(control_with(store_with_nodes().await).await, T)).await;
    let (_, v) = call(a, "POST", "/api/v1/user", r#"{"name":"bob"}"#).await;
    let bob = v["user"]["id"].as_str().unwrap().to_string();
    call(a, "POST", "/api/v1/preauthkey", &json!({"user": bob}).to_string()).await;

    let (s, v) = call(a, "POST", "/api/v1/user/1/rename/carol", "").await;
    assert_eq!((s, &v["user"]["name"], &v["user"]["id"]), (200, &json!("carol"), &json!("1")), "{v}");
    let (_, v) = call(a, "GET", "/api/v1/node", "").await;
    assert_eq!(v["nodes"][0]["user"]["name"], "carol", "nodes show the new owner name");
    // Headscale ≤ 0.22 named the user by its old name in the path.
    let (s, v) = call(a, "POST", "/api/v1/user/carol/rename/alice", "").await;
    assert_eq!((s, &v["user"]["name"]), (200, &json!("alice")), "{v}");

    assert_error(&call(a, "POST", "/api/v1/user/1/rename/bob", "").await, 409, "name taken");
    assert_error(&call(a, "POST", "/api/v1/user/1/rename/has%20space", "").await, 400, "bad name");
    assert_error(&call(a, "POST", "/api/v1/user/999/rename/x", "").await, 404, "unknown user");

    assert_error(&call(a, "DELETE", "/api/v1/user/1", "").await, 409, "user owns nodes");
    assert_eq!(call(a, "GET", "/api/v1/user?id=1", "").await.1["users"].as_array().unwrap().len(), 1);
    let (s, v) = call(a, "DELETE", &format!("/api/v1/user/{bob}"), "").await;
    assert_eq!((s, v), (200, json!({})));
    let (_, v) = call(a, "GET", "/api/v1/preauthkey", "").await;
    assert_eq!(v["preAuthKeys"].as_array().unwrap().len(), 0, "keys go with the user: {v}");
    assert_error(&call(a, "DELETE", &format!("/api/v1/user/{bob}"), "").await, 404, "deleted twice");
    let (_, v) = call(a, "GET", "/api/v1/user", "").await;
    assert_eq!(v["users"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn pre_auth_keys_expire_and_delete() {
    let a = start().await;
    let (_, v) = call(a, "POST", "/api/v1/user", r#"{"name":"alice"}"#).await;
    let alice = v["user"]["id"].as_str().unwrap().to_string();
    call(a, "POST", "/api/v1/user", r#"{"name":"bob"}"#).await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        let (_, v) = call(
            a,
            "POST",
            "/api/v1/preauthkey",
            &json!({"user": alice, "reusable": true, "expiration": "2999-01-01T00:00:00Z"}).to_string(),
        )
        .await;
        keys.push((
            v["preAuthKey"]["id"].as_str().unwrap().to_string(),
            v["preAuthKey"]["key"].as_str().unwrap().to_string(),
        ));
    }
    let expired = |v: &Value, id: &str| {
        v["preAuthKeys"].as_array().unwrap().iter().find(|k| k["id"] == id).unwrap()["expiration"].as_str().unwrap()
            < "2999"
    };
    // Current Headscale: by id.
    assert_eq!(call(a, "POST", "/api/v1/preauthkey/expire", &json!({"id": keys[0].0}).to_string()).await.0, 200);
    // Older Headscale: user and full key.
    assert_eq!(
        call(a, "POST", "/api/v1/preauthkey/expire", &json!({"user": "alice", "key": keys[1].1}).to_string()).await.0,
        200
    );
    // The listed form names a key too.
    let (_, v) = call(a, "GET", "/api/v1/preauthkey", "").await;
    let listed = v["preAuthKeys"][2]["key"].as_str().unwrap().to_string();
    assert_eq!(
        call(a, "POST", "/api/v1/preauthkey/expire", &json!({"user": alice, "key": listed}).to_string()).await.0,
        200
    );
    let (_, v) = call(a, "GET", "/api/v1/preauthkey", "").await;
    assert!(
        expired(&v, &keys[0].0) && expired(&v, &keys[1].0) && expired(&v, &keys[2].0) && !expired(&v, &keys[3].0),
        "{v}"
    );

    assert_error(
        &call(a, "POST", "/api/v1/preauthkey/expire", &json!({"user": "bob", "key": keys[3].1}).to_string()).await,
        404,
        "another user's key",
    );
    assert_error(&call(a, "POST", "/api/v1/preauthkey/expire", r#"{"id":"999"}"#).await, 404, "unknown id");
    assert_error(&call(a, "POST", "/api/v1/preauthkey/expire", "{}").await, 400, "no key named");
    assert_error(&call(a, "POST", "/api/v1/preauthkey/expire", r#"{"id":{}}"#).await, 400, "id of the wrong type");
    let forged = format!("{}{}", &keys[3].1[..keys[3].1.len() - 4], "AAAA");
    assert_error(
        &call(a, "POST", "/api/v1/preauthkey/expire", &json!({"key": forged}).to_string()).await,
        404,
        "forged key",
    );

    assert_eq!(call(a, "DELETE", &format!("/api/v1/preauthkey?id={}", keys[0].0), "").await.0, 200);
    assert_eq!(call(a, "DELETE", &format!("/api/v1/preauthkey?user=alice&key={}", keys[1].1), "").await.0, 200);
    let (_, v) = call(a, "GET", "/api/v1/preauthkey", "").await;
    assert_eq!(v["preAuthKeys"].as_array().unwrap().len(), 2);
    assert_error(&call(a, "DELETE", &format!("/api/v1/preauthkey?id={}", keys[0].0), "").await, 404, "deleted twice");
    assert_error(&call(a, "DELETE", "/api/v1/preauthkey", "").await, 400, "no key named");
}

#[tokio::test]
async fn node_tags_routes_expiry_and_legacy_machine_aliases() {
    let a = serve(tailwarden_api::routes(control_with(store_with_nodes().await).await, T)).await;
    let (s, v) = call(a, "GET", "/api/v1/node/1", "").await;
    assert_eq!((s, &v["node"]["givenName"]), (200, &json!("n1")), "{v}");
    assert_eq!(v["node"]["availableRoutes"], json!(["10.0.0.0/24", "0.0.0.0/0", "::/0"]));

    let (s, v) = call(a, "POST", "/api/v1/node/1/tags", r#"{"tags":["tag:web","tag:db"]}"#).await;
    assert_eq!((s, &v["node"]["tags"]), (200, &json!(["tag:db", "tag:web"])), "{v}");
    let (s, v) =
        call(a, "POST", "/api/v1/node/1/approve_routes", r#"{"routes":["10.0.0.0/24","192.168.0.0/16"]}"#).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["node"]["approvedRoutes"], json!(["10.0.0.0/24", "192.168.0.0/16"]));
    assert_eq!(v["node"]["subnetRoutes"], json!(["10.0.0.0/24"]), "only advertised routes are served");
    let (s, v) = call(a, "POST", "/api/v1/node/1/approve_routes", r#"{"routes":[]}"#).await;
    assert_eq!((s, &v["node"]["approvedRoutes"]), (200, &json!([])), "{v}");

    let (s, v) = call(a, "POST", "/api/v1/node/2/expire", r#"{"expiry":"2999-01-01T00:00:00Z"}"#).await;
    assert_eq!((s, &v["node"]["expiry"]), (200, &json!("2999-01-01T00:00:00Z")), "{v}");
    let (s, v) = call(a, "POST", "/api/v1/node/2/expire", r#"{"disableExpiry":true}"#).await;
    assert_eq!((s, &v["node"]["expiry"]), (200, &Value::Null), "{v}");

    // Headscale ≤ 0.22 names.
    let (s, v) = call(a, "GET", "/api/v1/machine", "").await;
    assert_eq!(s, 200);
    let machines = v["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 2);
    for field in ["id", "givenName", "online", "lastSeen", "expiry", "ipAddresses", "user", "forcedTags"] {
        assert!(machines[0].get(field).is_some(), "machine has {field}: {v}");
    }
    let (s, v) = call(a, "GET", "/api/v1/machine?user=alice", "").await;
    assert_eq!((s, v["machines"].as_array().unwrap().len()), (200, 2));
    let (s, v) = call(a, "GET", "/api/v1/machine/2", "").await;
    assert_eq!((s, &v["machine"]["givenName"]), (200, &json!("n2")), "{v}");
    let (s, v) = call(a, "POST", "/api/v1/machine/2/tags", r#"{"tags":["tag:x"]}"#).await;
    assert_eq!((s, &v["machine"]["tags"]), (200, &json!(["tag:x"])), "{v}");
    let (s, v) = call(a, "POST", "/api/v1/machine/2/rename/web-2", "").await;
    assert_eq!((s, &v["machine"]["givenName"]), (200, &json!("web-2")), "{v}");
    let (s, v) = call(a, "POST", "/api/v1/machine/2/expire", "").await;
    assert!(s == 200 && v["machine"]["expiry"].as_str().is_some_and(|e| e < "2999"), "{v}");
    let (s, v) = call(a, "DELETE", "/api/v1/machine/2", "").await;
    assert_eq!((s, v), (200, json!({})));
    assert_error(&call(a, "GET", "/api/v1/machine/2", "").await, 404, "deleted machine");

    let cases = [
        ("POST", "/api/v1/node/1/tags", r#"{"tags":["web"]}"#, 400),
        ("POST", "/api/v1/node/1/tags", r#"{"tags":"tag:web"}"#, 400),
        ("POST", "/api/v1/node/999/tags", r#"{"tags":["tag:web"]}"#, 404),
        ("POST", "/api/v1/node/x/tags", r#"{"tags":[]}"#, 400),
        ("POST", "/api/v1/node/1/approve_routes", r#"{"routes":["10.0.0.1/24"]}"#, 400),
        ("POST", "/api/v1/node/1/approve_routes", r#"{"routes":["not a route"]}"#, 400),
        ("POST", "/api/v1/node/1/approve_routes", r#"{"routes":["10.0.0.0/33"]}"#, 400),
        ("POST", "/api/v1/node/999/approve_routes", r#"{"routes":[]}"#, 404),
        ("POST", "/api/v1/node/1/expire", r#"{"expiry":"tomorrow"}"#, 400),
        ("POST", "/api/v1/node/1/expire", r#"{"expiry":"2999-01-01T00:00:00Z","disableExpiry":true}"#, 400),
        ("GET", "/api/v1/node/99999999999999999999", "", 400),
        ("GET", "/api/v1/machine/999", "", 404),
        ("POST", "/api/v1/machine/1/rename/NOT_VALID", "", 400),
    ];
    for (method, path, body, want) in cases {
        assert_error(&call(a, method, path, body).await, want, &format!("{method} {path} {body}"));
    }
}

/// The `.route("path", method(..).method(..))` calls in the router's source, as (METHOD, path) pairs.
fn routes_in_source() -> Vec<(String, String)> {
    let src = include_str!("../src/lib.rs");
    let mut out = Vec::new();
    for (i, _) in src.match_indices(".route(") {
        // rustfmt puts a long call's path on a line of its own.
        let Some(rest) = src[i + ".route(".len()..].trim_start().strip_prefix('"') else { continue };
        let Some(end) = rest.find('"') else { continue };
        let path = rest[..end].to_string();
        // The method router runs to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let mut stop = rest.len();
        for (j, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        stop = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let expr = &rest[end..stop];
        for m in ["get", "post", "delete", "put", "patch"] {
            if expr.contains(&format!(" {m}(")) || expr.contains(&format!(".{m}(")) || expr.contains(&format!(",{m}("))
            {
                out.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn openapi_covers_every_route() {
    let doc: Value = serde_json::from_str(tailwarden_api::OPENAPI_JSON).expect("openapi.json is JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let routes = routes_in_source();
    assert!(routes.len() >= 25, "the source scan finds the routes: {routes:?}");
    for (method, path) in &routes {
        let op = &doc["paths"][path.as_str()][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is missing from openapi.json");
        assert!(op["summary"].is_string() && op["responses"].is_object(), "{method} {path}: summary and responses");
    }
    // And the other way round: everything documented is routed (axum answers unrouted paths with an empty 404
    // and unrouted methods with 405; the handlers answer with JSON).
    let a = serve(tailwarden_api::routes(control_with(store_with_nodes().await).await, T)).await;
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, _) in ops.as_object().unwrap() {
            documented.push((method.to_uppercase(), path.clone()));
            let concrete =
                path.replace("{id}", "999").replace("{name}", "x").replace("{new_name}", "x").replace("{prefix}", "x");
            let (s, v) = call(a, &method.to_uppercase(), &concrete, "{}").await;
            assert!(s != 405 && !(s == 404 && v.is_null()), "{method} {path} is documented but not routed ({s})");
        }
    }
    documented.sort();
    assert_eq!(documented, routes, "openapi.json documents exactly the routed operations");
}

#[tokio::test]
async fn garbage_gets_client_errors_never_server_errors() {
    let control = control_with(store_with_nodes().await).await;
    let public = serve(tailwarden_api::authenticated_routes(control.clone())).await;
    let local = serve(tailwarden_api::routes(control, T)).await;
    let (_, v) = call(local, "POST", "/api/v1/apikey", "").await;
    let key = v["apiKey"].as_str().unwrap().to_string();
    let bodies = [
        "",
        "null",
        "[]",
        "{",
        "\"x\"",
        "{\"tags\":[null]}",
        "{\"routes\":[1]}",
        "{\"id\":-1}",
        "{\"user\":1.5,\"key\":{}}",
        "{\"expiration\":5}",
        "\u{feff}{}",
    ];
    let ids = ["0", "-1", "%FF", "9223372036854775808", "a%2Fb", "..", "1"];
    for (method, path) in routes_in_source() {
        for id in ids {
            let concrete =
                path.replace("{id}", id).replace("{name}", id).replace("{new_name}", id).replace("{prefix}", id);
            for body in bodies {
                for (addr, bearer) in [(local, None), (public, Some(key.as_str()))] {
                    let (s, v) = call_with(addr, &method, &concrete, body, bearer).await;
                    assert!(s < 500, "{method} {concrete} {body:?}: {s} {v}");
                    if s >= 400 {
                        assert!(v["message"].is_string(), "{method} {concrete} {body:?}: JSON error, got {s} {v}");
                    }
                }
            }
        }
    }
    let (s, _) = call_with(local, "GET", "/api/v1/user?id=%FF&name=%00", "", None).await;
    assert!(s < 500);
}
