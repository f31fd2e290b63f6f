//! The CLI verbs against a running `tailwarden serve`: locally over the admin socket, and remotely over HTTP and
//! HTTPS with an API key (`cli.address` / `HEADSCALE_CLI_ADDRESS`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tailwarden_store::{NodeRegistration, RegisterMethod, Store};
use tailwarden_types::{DnsLabel, TenantId};

const BIN: &str = env!("CARGO_BIN_EXE_tailwarden");

/// A server process with its own state directory; killed and cleaned up on drop.
struct Server {
    child: Option<Child>,
    dir: PathBuf,
    http_port: u16,
    https_port: u16,
    stun_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The environment every process of one test shares; `HEADSCALE_*`/`TAILWARDEN_*` from outside are dropped.
fn command(server: &Server, extra: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("HEADSCALE_") || k.starts_with("TAILWARDEN_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TAILWARDEN_STATE_DIR", &server.dir)
        .env("TAILWARDEN_LISTEN_ADDR", format!("127.0.0.1:{}", server.http_port))
        .env("TAILWARDEN_TLS_LISTEN_ADDR", format!("127.0.0.1:{}", server.https_port))
        .env("TAILWARDEN_DERP_SERVER_STUN_LISTEN_ADDR", format!("127.0.0.1:{}", server.stun_port))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Pre-populates the database with user `alice` owning node `n1`, which advertises 10.0.0.0/24.
async fn seed(dir: &Path) {
    let url = format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display());
    let store = Store::open(&url).await.unwrap();
    let scope = store.tenant(TenantId::DEFAULT);
    let alice = scope.create_user("alice", "Alice", "").await.unwrap();
    scope
        .register_node(NodeRegistration {
            machine_key: format!("mkey:{}", "01".repeat(32)),
            node_key: format!("nodekey:{}", "02".repeat(32)),
            disco_key: String::new(),
            hostname: "n1".into(),
            given_name: DnsLabel::parse("n1").unwrap(),
            user_id: Some(alice.id),
            tags: vec![],
            hostinfo: r#"{"Hostname":"n1","RoutableIPs":["10.0.0.0/24","192.168.1.0/24"]}"#.into(),
            expiry_ms: None,
            ephemeral: false,
            register_method: RegisterMethod::Cli,
            auth_key: None,
            now_ms: 1_700_000_000_000,
        })
        .await
        .unwrap();
    store.close().await;
}

async fn start() -> Server {
    start_with(&[], |_| {}).await
}

/// Starts a server with extra environment for `serve`; `prepare` runs on the state directory first.
async fn start_with(serve_env: &[(&str, String)], prepare: impl FnOnce(&Path)) -> Server {
    let dir = std::env::temp_dir().join(format!("tw-cli-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    seed(&dir).await;
    prepare(&dir);
    let mut server =
        Server { child: None, dir, http_port: free_port(), https_port: free_port(), stun_port: free_port() };
    server.child = Some(command(&server, serve_env).arg("serve").stdout(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if run(&server, &[], &["health"]).status.success() {
            return server;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        if let Some(child) = &mut server.child {
            assert!(child.try_wait().unwrap().is_none(), "server exited");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run(server: &Server, env: &[(&str, String)], args: &[&str]) -> Output {
    command(server, env).args(args).output().unwrap()
}

/// Runs a verb that must succeed and returns its stdout.
fn ok(server: &Server, env: &[(&str, String)], args: &[&str]) -> String {
    let out = run(server, env, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?} failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Runs a verb that must fail and returns its stderr.
fn fails(server: &Server, env: &[(&str, String)], args: &[&str]) -> String {
    let out = run(server, env, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    stderr
}

fn json(server: &Server, env: &[(&str, String)], args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&ok(server, env, &args)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn management_verbs_over_the_socket() {
    let s = start().await;
    let none: &[(&str, String)] = &[];
    assert_eq!(ok(&s, none, &["version"]).trim(), env!("CARGO_PKG_VERSION"));
    assert!(ok(&s, none, &["health"]).contains("OK"));
    assert_eq!(json(&s, none, &["health"])["databaseConnectivity"], true);

    // users rename / destroy
    ok(&s, none, &["users", "create", "bob"]);
    ok(&s, none, &["users", "rename", "--identifier", "2", "--new-name", "robert"]);
    assert_eq!(json(&s, none, &["users", "list", "-i", "2"])[0]["name"], "robert");
    assert!(fails(&s, none, &["users", "rename", "-i", "2", "-r", "alice"]).contains("409"));
    assert!(fails(&s, none, &["users", "destroy", "-i", "2"]).contains("--force"), "no terminal: needs --force");
    assert!(fails(&s, none, &["users", "destroy", "-i", "1", "--force"]).contains("node"), "alice owns a node");
    ok(&s, none, &["users", "destroy", "--identifier", "2", "--force"]);
    assert_eq!(json(&s, none, &["users", "list"]).as_array().unwrap().len(), 1);

    // preauthkeys expire / delete, by the old (--user KEY) and the new (--id) forms
    let key = ok(&s, none, &["preauthkeys", "create", "--user", "alice", "--reusable", "--expiration", "24h"])
        .trim()
        .to_string();
    let key2 = json(&s, none, &["preauthkeys", "create", "-u", "1", "-e", "24h"])["id"].as_str().unwrap().to_string();
    ok(&s, none, &["preauthkeys", "expire", "--user", "alice", &key]);
    ok(&s, none, &["preauthkeys", "expire", "--id", &key2]);
    let keys = json(&s, none, &["preauthkeys", "list"]);
    let now = time::OffsetDateTime::now_utc();
    for k in keys.as_array().unwrap() {
        // Compare as times: RFC 3339 strings with different fraction lengths do not sort chronologically.
        let exp = time::OffsetDateTime::parse(
            k["expiration"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(exp <= now, "expired: {k}");
    }
    ok(&s, none, &["preauthkeys", "delete", "-i", &key2]);
    assert!(fails(&s, none, &["preauthkeys", "delete", "-i", &key2]).contains("404"));
    ok(&s, none, &["preauthkeys", "delete", "--user", "alice", &key]);
    assert_eq!(json(&s, none, &["preauthkeys", "list"]).as_array().unwrap().len(), 0);
    assert!(fails(&s, none, &["preauthkeys", "expire"]).contains("--id"));

    // nodes tag / approve-routes / list-routes / expire
    let node = json(&s, none, &["nodes", "tag", "-i", "1", "-t", "tag:b,tag:a"]);
    assert_eq!(node["tags"], serde_json::json!(["tag:a", "tag:b"]));
    assert!(fails(&s, none, &["nodes", "tag", "-i", "1", "-t", "nottag"]).contains("400"));
    assert!(fails(&s, none, &["nodes", "tag", "-i", "99", "-t", "tag:a"]).contains("404"));
    ok(&s, none, &["nodes", "approve-routes", "-i", "1", "-r", "10.0.0.0/24,172.16.0.0/12"]);
    let routes = json(&s, none, &["nodes", "list-routes"]);
    assert_eq!(routes[0]["approvedRoutes"], serde_json::json!(["10.0.0.0/24", "172.16.0.0/12"]));
    assert_eq!(routes[0]["subnetRoutes"], serde_json::json!(["10.0.0.0/24"]));
    let table = ok(&s, none, &["nodes", "list-routes", "-i", "1"]);
    assert!(table.contains("Approved") && table.contains("192.168.1.0/24"), "{table}");
    assert!(fails(&s, none, &["nodes", "approve-routes", "-i", "1", "-r", "10.0.0.1/24"]).contains("host bits"));
    ok(&s, none, &["nodes", "approve-routes", "-i", "1", "-r", ""]);
    assert_eq!(json(&s, none, &["nodes", "list"])[0]["approvedRoutes"], serde_json::json!([]));
    assert_eq!(
        json(&s, none, &["nodes", "expire", "-i", "1", "-e", "2999-01-01T00:00:00Z"])["expiry"],
        "2999-01-01T00:00:00Z"
    );
    assert!(json(&s, none, &["nodes", "expire", "-i", "1", "--disable"])["expiry"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_and_the_remote_cli() {
    let s = start().await;
    let none: &[(&str, String)] = &[];
    let key = ok(&s, none, &["apikeys", "create", "--expiration", "1d"]).trim().to_string();
    assert!(key.starts_with("hskey-api-"), "{key}");
    let listed = json(&s, none, &["apikeys", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0]["lastSeen"].is_null());

    // Plain HTTP on the public listener, configured through TAILWARDEN_CLI_*.
    let http = [
        ("TAILWARDEN_CLI_ADDRESS", format!("http://127.0.0.1:{}", s.http_port)),
        ("TAILWARDEN_CLI_API_KEY", key.clone()),
    ];
    let users = json(&s, &http, &["users", "list"]);
    assert_eq!(users[0]["name"], "alice");
    ok(&s, &http, &["users", "create", "remote-user"]);
    assert!(json(&s, none, &["apikeys", "list"])[0]["lastSeen"].is_string(), "use is recorded");

    // HTTPS (the self-signed listener, hence insecure) through HEADSCALE_CLI_*; a bare host:port means HTTPS.
    for address in [format!("https://127.0.0.1:{}", s.https_port), format!("127.0.0.1:{}", s.https_port)] {
        let https = [
            ("HEADSCALE_CLI_ADDRESS", address),
            ("HEADSCALE_CLI_API_KEY", key.clone()),
            ("HEADSCALE_CLI_INSECURE", "true".into()),
        ];
        assert_eq!(json(&s, &https, &["health"])["databaseConnectivity"], true);
        assert_eq!(json(&s, &https, &["nodes", "list"])[0]["givenName"], "n1");
    }
    // Without `insecure` the self-signed certificate is refused.
    let verified = [
        ("HEADSCALE_CLI_ADDRESS", format!("https://127.0.0.1:{}", s.https_port)),
        ("HEADSCALE_CLI_API_KEY", key.clone()),
        ("SSL_CERT_FILE", "/nonexistent".into()),
    ];
    fails(&s, &verified, &["users", "list"]);

    // Bad or missing keys.
    let wrong = [
        ("TAILWARDEN_CLI_ADDRESS", format!("http://127.0.0.1:{}", s.http_port)),
        ("TAILWARDEN_CLI_API_KEY", format!("{key}x")),
    ];
    assert!(fails(&s, &wrong, &["users", "list"]).contains("401"));
    let missing = [("TAILWARDEN_CLI_ADDRESS", format!("http://127.0.0.1:{}", s.http_port))];
    assert!(fails(&s, &missing, &["users", "list"]).contains("API key"));

    // A second key manages the first remotely: expire it, then delete it.
    let key2 = ok(&s, none, &["apikeys", "create"]).trim().to_string();
    let remote2 =
        [("TAILWARDEN_CLI_ADDRESS", format!("http://127.0.0.1:{}", s.http_port)), ("TAILWARDEN_CLI_API_KEY", key2)];
    let prefix = json(&s, none, &["apikeys", "list"])[0]["prefix"].as_str().unwrap().to_string();
    ok(&s, &remote2, &["apikeys", "expire", "--prefix", &prefix]);
    assert!(fails(&s, &http, &["users", "list"]).contains("401"), "expired key refused");
    ok(&s, &remote2, &["apikeys", "delete", "-p", &prefix]);
    assert_eq!(json(&s, &remote2, &["apikeys", "list"]).as_array().unwrap().len(), 1);
    assert!(fails(&s, &remote2, &["apikeys", "delete", "-p", &prefix]).contains("404"));
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_file_mode_reloads_on_change_and_refuses_api_changes() {
    let v1 = r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["alice@:22"]}]}"#;
    let v2 = r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["alice@:80"]}]}"#;
    let file = std::env::temp_dir().join(format!("tw-policy-{}-{}.hujson", std::process::id(), free_port()));
    std::fs::write(&file, v1).unwrap();
    let env = [("TAILWARDEN_POLICY_MODE", "file".to_string()), ("TAILWARDEN_POLICY_PATH", file.display().to_string())];
    let s = start_with(&env, |_| {}).await;
    let none: &[(&str, String)] = &[];
    assert_eq!(ok(&s, none, &["policy", "get"]).trim(), v1);

    // Edits are picked up; a broken edit is rejected and the last good policy stays.
    std::fs::write(&file, v2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok(&s, none, &["policy", "get"]).trim() != v2 {
        assert!(Instant::now() < deadline, "policy file change not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&file, r#"{"acls": [{"action": "accept", "src": ["group:missing"], "dst": ["*:*"]}]}"#).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ok(&s, none, &["policy", "get"]).trim(), v2);

    // In file mode the API cannot change the policy.
    let other = file.with_extension("other");
    std::fs::write(&other, v1).unwrap();
    assert!(fails(&s, none, &["policy", "set", "-f", other.to_str().unwrap()]).contains("file"));
    assert!(ok(&s, none, &["policy", "check", "-f", other.to_str().unwrap()]).contains("valid"));
    std::fs::write(&other, "{ not hujson").unwrap();
    let err = fails(&s, none, &["policy", "check", "-f", other.to_str().unwrap()]);
    assert!(err.contains("line"), "parse errors give a position: {err}");
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&other);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_policy_file_stops_the_server_with_the_reason() {
    let file = std::env::temp_dir().join(format!("tw-badpolicy-{}-{}.hujson", std::process::id(), free_port()));
    std::fs::write(&file, r#"{"acls": [{"action": "accept", "src": ["tag:nobody-owns-this"], "dst": ["*:*"]}]}"#)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tw-cli-bad-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = Server { child: None, dir, http_port: free_port(), https_port: free_port(), stun_port: free_port() };
    let env = [("TAILWARDEN_POLICY_MODE", "file".to_string()), ("TAILWARDEN_POLICY_PATH", file.display().to_string())];
    let out = command(&server, &env).arg("serve").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("policy.path") && stderr.contains("tag:nobody-owns-this"), "{stderr}");
    let _ = std::fs::remove_file(&file);
}
