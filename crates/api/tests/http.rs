//! The management API over real HTTP: happy paths, unknown ids, bad input.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tailwarden_control::keys::ServerKeys;
use tailwarden_control::{Control, Settings};
use tailwarden_store::Store;
use tailwarden_types::TenantId;

async fn start() -> std::net::SocketAddr {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let control = Control::new(store, Settings::for_tests(tailwarden_wire::DerpMap::default()), ServerKeys::random()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tailwarden_api::routes(control, TenantId::DEFAULT);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn call(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "x")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
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
    assert!(v["message"].as_str().unwrap().contains("alice") || v["message"].as_str().unwrap().contains("exists"), "{v}");

    let (s, v) = call(a, "GET", "/api/v1/user?name=alice", "").await;
    assert_eq!((s, v["users"].as_array().unwrap().len()), (200, 1));

    // The key is shown once, in full; listings show only the prefix.
    let (s, v) = call(a, "POST", "/api/v1/preauthkey", &json!({"user": id, "reusable": true, "aclTags": ["tag:web"]}).to_string()).await;
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
    let (s, v) = call(a, "POST", "/api/v1/preauthkey", &json!({"user": id, "expiration": "yesterday"}).to_string()).await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = call(a, "POST", "/api/v1/preauthkey", &json!({"user": id, "expiration": "2001-01-01T00:00:00Z"}).to_string()).await;
    assert_eq!(s, 400, "expiration in the past");
}
