//! The official `tailscaled` (v1.96, userspace networking) next to the Go tsnet client, inside a loopback-only
//! namespace (run via `tests/netns.sh`): key expiry logs a client out, and a subnet router's approved route
//! carries traffic.

use std::io::{Read, Write};
use std::time::Duration;
use tailwarden_e2e::{GoNode, Server, Tailscaled, get_via_proxy, ipv4_of, local_port, retry};

const JOIN: Duration = Duration::from_secs(90);

fn node_id(server: &Server, name: &str) -> anyhow::Result<String> {
    Ok(server.node(name)?["id"].as_str().unwrap_or_default().to_string())
}

#[test]
fn nodes_expire_logs_the_client_out_and_peers_drop_it() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = Server::start(tmp.path())?;
    let key = server.user_and_key("alice", &["--reusable"])?;
    let token = format!("expire-{}", std::process::id());
    let _go1 = GoNode::start("serve", "go1", &server, &key, &tmp.path().join("go1"), &[&token])?;
    let go1_ip =
        retry("go1 registered", JOIN, || ipv4_of(&server.node("go1")?).ok_or_else(|| anyhow::anyhow!("no ip")))?;
    let proxy = local_port();
    let ts1 = Tailscaled::start(&tmp.path().join("ts1"), None, Some(proxy))?;
    ts1.up(&server, &key, "ts1", &[])?;
    let ts2 = Tailscaled::start(&tmp.path().join("ts2"), None, None)?;
    ts2.up(&server, &key, "ts2", &[])?;

    let url = format!("http://{go1_ip}/");
    let page = retry("ts1 -> go1 over the tailnet", JOIN, || get_via_proxy(proxy, &url))
        .map_err(|e| anyhow::anyhow!("{e:#}\nts1 log:\n{}", ts1.log()))?;
    assert_eq!(page, token);
    assert_eq!(ts1.status()?["BackendState"], "Running");
    let seen = retry("ts2 sees ts1", JOIN, || {
        Tailscaled::peer(&ts2.status()?, "ts1").ok_or_else(|| anyhow::anyhow!("not yet"))
    })?;
    assert_ne!(seen["Expired"], true);

    let id = node_id(&server, "ts1")?;
    server.cli(&["nodes", "expire", "-i", &id])?;

    // The client learns from its self node that its key expired: it needs a new login and takes its tunnel down.
    retry("ts1 needs login", Duration::from_secs(30), || {
        let st = ts1.status()?["BackendState"].clone();
        anyhow::ensure!(st == "NeedsLogin", "state {st}");
        Ok(())
    })?;
    assert!(get_via_proxy(proxy, &url).is_err(), "an expired client must not reach its peers");
    // Its peers mark it expired (and leave it out of their WireGuard configuration).
    let dropped = retry("ts2 marks ts1 expired", Duration::from_secs(30), || {
        let p = Tailscaled::peer(&ts2.status()?, "ts1").ok_or_else(|| anyhow::anyhow!("gone"))?;
        anyhow::ensure!(p["Expired"] == true, "not expired yet: {p}");
        Ok(p)
    })?;
    assert!(dropped["KeyExpiry"].is_string(), "{dropped}");
    let expiry = server.node("ts1")?["expiry"].clone();
    assert!(expiry.is_string(), "the server records the expiry: {expiry}");

    // Logging in again with a key restores access, under the same node.
    ts1.up(&server, &key, "ts1", &["--force-reauth"])?;
    let page = retry("ts1 -> go1 after re-login", JOIN, || get_via_proxy(proxy, &url))
        .map_err(|e| anyhow::anyhow!("{e:#}\nts1 log:\n{}", ts1.log()))?;
    assert_eq!(page, token);
    assert_eq!(node_id(&server, "ts1")?, id, "re-login keeps the node");
    Ok(())
}

/// Answers every HTTP request on `listener` with `body`.
fn serve_http(listener: std::net::TcpListener, body: String) {
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ =
                write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
}

/// Unprivileged user the route consumer runs as.
const NOBODY: u32 = 65534;

#[test]
fn subnet_router_route_is_listed_approved_and_carries_traffic() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // The consumer runs unprivileged and needs to reach its state directory below this one.
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let server = Server::start(tmp.path())?;
    let key = server.user_and_key("alice", &["--reusable"])?;

    // The subnet is 192.0.2.0/24: tests/netns.sh puts 192.0.2.1 on lo, and a listener there plays a host behind the
    // router. The consumer's own packets to the subnet are refused (as for a client on another network), so only
    // the tailnet path through the router can reach it.
    let subnet = "192.0.2.0/24";
    let target = std::net::TcpListener::bind("192.0.2.1:0")?;
    let url = format!("http://{}/", target.local_addr()?);
    let token = format!("behind-the-router-{}", std::process::id());
    serve_http(target, token.clone());
    let rule = format!(
        "table inet tw_subnet_test {{\n chain output {{\n  type filter hook output priority -10; policy accept;\n  meta skuid {NOBODY} ip daddr {subnet} reject\n }}\n}}\n"
    );
    let nft = std::process::Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn();
    let mut nft = nft.map_err(|e| anyhow::anyhow!("this test needs nft (apt-get install nftables): {e}"))?;
    nft.stdin.take().expect("piped").write_all(rule.as_bytes())?;
    anyhow::ensure!(nft.wait()?.success(), "installing the nftables rule failed");

    let router = Tailscaled::start(&tmp.path().join("router"), None, None)?;
    router.up(&server, &key, "router", &[&format!("--advertise-routes={subnet}")])?;
    let proxy = local_port();
    let client = Tailscaled::start(&tmp.path().join("client"), Some(NOBODY), Some(proxy))?;
    client.up(&server, &key, "client", &["--accept-routes"])?;

    // Advertised, not approved: listed as available only, and the consumer cannot reach the subnet.
    let id = node_id(&server, "router")?;
    let routes = |server: &Server| -> anyhow::Result<serde_json::Value> {
        let all: serde_json::Value = serde_json::from_str(&server.cli(&["nodes", "list-routes", "-o", "json"])?)?;
        all.as_array()
            .and_then(|a| a.iter().find(|n| n["givenName"] == "router").cloned())
            .ok_or_else(|| anyhow::anyhow!("router not listed"))
    };
    let listed = retry("router's route listed", JOIN, || {
        let r = routes(&server)?;
        anyhow::ensure!(r["availableRoutes"] == serde_json::json!([subnet]), "{r}");
        Ok(r)
    })?;
    assert_eq!(listed["approvedRoutes"], serde_json::json!([]), "{listed}");
    assert_eq!(listed["subnetRoutes"], serde_json::json!([]), "{listed}");
    let seen = retry("client sees router", JOIN, || {
        Tailscaled::peer(&client.status()?, "router").ok_or_else(|| anyhow::anyhow!("not yet"))
    })?;
    assert!(seen["PrimaryRoutes"].as_array().is_none_or(|r| r.is_empty()), "unapproved route handed out: {seen}");
    assert!(get_via_proxy(proxy, &url).is_err(), "the subnet must be unreachable before approval");

    server.cli(&["nodes", "approve-routes", "-i", &id, "-r", subnet])?;
    let approved = routes(&server)?;
    assert_eq!(approved["approvedRoutes"], serde_json::json!([subnet]), "{approved}");
    assert_eq!(approved["subnetRoutes"], serde_json::json!([subnet]), "{approved}");
    retry("client gets the route", Duration::from_secs(30), || {
        let p = Tailscaled::peer(&client.status()?, "router").ok_or_else(|| anyhow::anyhow!("router gone"))?;
        anyhow::ensure!(p["PrimaryRoutes"] == serde_json::json!([subnet]), "{p}");
        Ok(())
    })?;
    let page = retry("client -> subnet host through the router", JOIN, || get_via_proxy(proxy, &url))
        .map_err(|e| anyhow::anyhow!("{e:#}\nclient log:\n{}\nrouter log:\n{}", client.log(), router.log()))?;
    assert_eq!(page, token);
    Ok(())
}
