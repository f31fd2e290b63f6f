//! Real Tailscale clients against the real server, inside a loopback-only namespace (run via `tests/netns.sh`).

use std::net::SocketAddr;
use std::time::Duration;
use tailwarden_e2e::{GoNode, Server, http_get_local, ipv4_of, local_port, retry, rs_device};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JOIN: Duration = Duration::from_secs(60);

/// Accepts one connection on `port` of `dev` and echoes what it reads, upper-cased.
async fn serve_upper(dev: &tailscale::Device, port: u16) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let ip = dev.ipv4_addr().await?;
    let listener = dev.tcp_listen(SocketAddr::new(ip.into(), port)).await?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut stream) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let text = String::from_utf8_lossy(&buf[..n]);
                            let reply = if text.starts_with("GET ") {
                                let body = "hello from tailscale-rs";
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                            } else {
                                text.to_uppercase()
                            };
                            if stream.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    }))
}

/// Connects from `dev` to `ip:port`, sends `msg`, returns the reply; retried while the path comes up.
async fn roundtrip(dev: &tailscale::Device, ip: std::net::Ipv4Addr, port: u16, msg: &str) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + JOIN;
    loop {
        let attempt = async {
            let mut s = dev.tcp_connect(SocketAddr::new(ip.into(), port)).await?;
            s.write_all(msg.as_bytes()).await?;
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).await?;
            anyhow::Ok(String::from_utf8(buf)?)
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(e)) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) if tokio::time::Instant::now() > deadline => anyhow::bail!("tcp roundtrip timed out"),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_clients_join_exchange_data_go_offline_and_survive_restart() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut server = Server::start(tmp.path())?;
    let key = server.user_and_key("alice", &["--reusable"])?;
    let key_file = tmp.path().join("rs2.json");

    let rs1 = rs_device(&server, "rs1", Some(key.clone()), None).await?;
    let rs2 = rs_device(&server, "rs2", Some(key.clone()), Some(&key_file)).await?;
    let ip1 = rs1.ipv4_addr().await?;
    let ip2 = rs2.ipv4_addr().await?;
    assert!(ip1.octets()[0] == 100 && ip2.octets()[0] == 100, "{ip1} {ip2}");
    assert_ne!(ip1, ip2);
    assert_eq!(ipv4_of(&server.node("rs2")?), Some(ip2), "CLI and client agree on the address");

    let _srv = serve_upper(&rs2, 7000).await?;
    assert_eq!(roundtrip(&rs1, ip2, 7000, "ping over derp").await?, "PING OVER DERP");

    // (d) A client that stops is shown offline.
    server.wait_nodes("both online", JOIN, |n| n.iter().all(|n| n["online"] == true))?;
    assert!(rs2.shutdown(Some(Duration::from_secs(5))).await);
    server.wait_nodes("rs2 offline", Duration::from_secs(10), |n| {
        n.iter().any(|n| n["givenName"] == "rs2" && n["online"] == false && !n["lastSeen"].is_null())
    })?;

    // (f) Restart: the server keeps its keys; rs2 comes back from its key file without an auth key, same IP.
    server.restart()?;
    let rs2 = rs_device(&server, "rs2", None, Some(&key_file)).await?;
    assert_eq!(rs2.ipv4_addr().await?, ip2, "same address after server restart, no re-auth");
    assert_eq!(server.nodes()?.len(), 2, "no duplicate node after re-login");
    let _srv = serve_upper(&rs2, 7001).await?;
    let rs3 = rs_device(&server, "rs3", Some(key), None).await?;
    assert_eq!(roundtrip(&rs3, ip2, 7001, "after restart").await?, "AFTER RESTART");
    rs1.shutdown(Some(Duration::from_secs(2))).await;
    rs2.shutdown(Some(Duration::from_secs(2))).await;
    rs3.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}

/// Tries to join with `key`; true when the client never gets an address (the server refused it).
async fn join_refused(server: &Server, hostname: &str, key: &str) -> bool {
    let Ok(dev) = rs_device(server, hostname, Some(key.to_string()), None).await else { return true };
    let got_ip = matches!(tokio::time::timeout(Duration::from_secs(8), dev.ipv4_addr()).await, Ok(Ok(_)));
    dev.shutdown(Some(Duration::from_secs(2))).await;
    !got_ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expired_and_used_keys_are_refused_and_write_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = Server::start(tmp.path())?;
    let one_time = server.user_and_key("bob", &[])?;
    let expiring = server.user_and_key("bob", &["--expiration", "1s"])?;

    let unknown = "hskey-auth-AAAAAAAAAAAA-0000000000000000000000000000000000000000000000000000000000000000";
    assert!(join_refused(&server, "intruder", unknown).await, "unknown key must be refused");
    assert!(join_refused(&server, "intruder", "garbage").await, "malformed key must be refused");
    assert!(server.log().contains("invalid auth key"), "the refusal says why");
    assert!(server.nodes()?.is_empty(), "a refused key writes no node");

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(join_refused(&server, "late", &expiring).await, "expired key refused");
    assert!(server.log().contains("auth key expired"));
    assert!(server.nodes()?.is_empty());

    let first = rs_device(&server, "first", Some(one_time.clone()), None).await?;
    first.ipv4_addr().await?;
    assert!(join_refused(&server, "second", &one_time).await, "one-time key cannot be reused");
    assert!(server.log().contains("auth key already used"));
    let nodes = server.nodes()?;
    assert_eq!(nodes.len(), 1, "{nodes:#?}");
    assert_eq!(nodes[0]["givenName"], "first");
    first.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_fetch_pages_and_talk_to_tailscale_rs_both_ways() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = Server::start(tmp.path())?;
    let key = server.user_and_key("carol", &["--reusable"])?;
    let token = format!("page-{}", std::process::id());

    let _go1 = GoNode::start("serve", "go1", &server, &key, &tmp.path().join("go1"), &[&token])?;
    let go1_ip =
        retry("go1 registered", JOIN, || ipv4_of(&server.node("go1")?).ok_or_else(|| anyhow::anyhow!("no ip")))?;

    let rs = rs_device(&server, "rs1", Some(key.clone()), None).await?;
    let rs_ip = rs.ipv4_addr().await?;
    let _srv = serve_upper(&rs, 8080).await?;

    // (b) go2 fetches go1's page over the tailnet.
    let to_go1 = local_port();
    let go2 = GoNode::start(
        "proxy",
        "go2",
        &server,
        &key,
        &tmp.path().join("go2"),
        &[&format!("{go1_ip}:80"), &to_go1.to_string()],
    )?;
    let page = retry("go2 -> go1 over the tailnet", Duration::from_secs(90), || http_get_local(to_go1, "/"))
        .map_err(|e| anyhow::anyhow!("{e:#}\ngo2 log:\n{}", go2.log()))?;
    assert_eq!(page, token);

    // (c) Go -> tailscale-rs: a Go node proxies to the Rust node's HTTP responder.
    let to_rs = local_port();
    let go3 = GoNode::start(
        "proxy",
        "go3",
        &server,
        &key,
        &tmp.path().join("go3"),
        &[&format!("{rs_ip}:8080"), &to_rs.to_string()],
    )?;
    let page = retry("go3 -> rs1 over the tailnet", Duration::from_secs(90), || http_get_local(to_rs, "/"))
        .map_err(|e| anyhow::anyhow!("{e:#}\ngo3 log:\n{}", go3.log()))?;
    assert_eq!(page, "hello from tailscale-rs");

    // (c) tailscale-rs -> Go: the Rust node fetches go1's page.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let body = loop {
        let attempt = async {
            let mut s = rs.tcp_connect(SocketAddr::new(go1_ip.into(), 80)).await?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: go1\r\nConnection: close\r\n\r\n").await?;
            let mut resp = Vec::new();
            s.read_to_end(&mut resp).await?;
            anyhow::Ok(String::from_utf8_lossy(&resp).to_string())
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(r)) if r.contains(&token) => break r,
            _ if tokio::time::Instant::now() > deadline => anyhow::bail!("rs1 -> go1 never succeeded"),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    rs.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}
