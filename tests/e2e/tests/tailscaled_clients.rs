//! The official `tailscaled` (v1.96, userspace networking) next to the Go tsnet client, inside a loopback-only
//! namespace (run via `tests/netns.sh`): key expiry logs a client out, a subnet router's approved route carries
//! traffic, and a subnet served by two routers fails over when its primary goes away.

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

/// The subnet behind the routers: tests/netns.sh puts 192.0.2.1 on lo.
const SUBNET: &str = "192.0.2.0/24";

/// A host behind the routers: a listener on 192.0.2.1 answering with a token, which the unprivileged consumer
/// cannot reach directly (its own packets to the subnet are refused, as for a client on another network), so only
/// the tailnet path through a router can. Returns the URL and the token.
fn host_behind_routers(tmp: &std::path::Path) -> anyhow::Result<(String, String)> {
    // The consumer runs unprivileged and needs to reach its state directory below this one.
    std::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let target = std::net::TcpListener::bind("192.0.2.1:0")?;
    let url = format!("http://{}/", target.local_addr()?);
    let token = format!("behind-the-router-{}-{}", std::process::id(), target.local_addr()?.port());
    serve_http(target, token.clone());
    let rule = format!(
        "table inet tw_subnet_test {{\n chain output {{\n  type filter hook output priority -10; policy accept;\n  meta skuid {NOBODY} ip daddr {SUBNET} reject\n }}\n}}\n"
    );
    let nft = std::process::Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn();
    let mut nft = nft.map_err(|e| anyhow::anyhow!("this test needs nft (apt-get install nftables): {e}"))?;
    nft.stdin.take().expect("piped").write_all(rule.as_bytes())?;
    anyhow::ensure!(nft.wait()?.success(), "installing the nftables rule failed");
    Ok((url, token))
}

/// Node `name`'s entry in `nodes list-routes`.
fn listed_routes(server: &Server, name: &str) -> anyhow::Result<serde_json::Value> {
    let all: serde_json::Value = serde_json::from_str(&server.cli(&["nodes", "list-routes", "-o", "json"])?)?;
    all.as_array()
        .and_then(|a| a.iter().find(|n| n["givenName"] == name).cloned())
        .ok_or_else(|| anyhow::anyhow!("{name} not listed"))
}

#[test]
fn subnet_router_route_is_listed_approved_and_carries_traffic() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (url, token) = host_behind_routers(tmp.path())?;
    let subnet = SUBNET;
    let server = Server::start(tmp.path())?;
    let key = server.user_and_key("alice", &["--reusable"])?;

    let router = Tailscaled::start(&tmp.path().join("router"), None, None)?;
    router.up(&server, &key, "router", &[&format!("--advertise-routes={subnet}")])?;
    let proxy = local_port();
    let client = Tailscaled::start(&tmp.path().join("client"), Some(NOBODY), Some(proxy))?;
    client.up(&server, &key, "client", &["--accept-routes"])?;

    // Advertised, not approved: listed as available only, and the consumer cannot reach the subnet.
    let id = node_id(&server, "router")?;
    let routes = |server: &Server| listed_routes(server, "router");
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

#[test]
fn a_subnet_served_by_two_routers_fails_over_when_the_primary_goes_away() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (url, token) = host_behind_routers(tmp.path())?;
    let server = Server::start(tmp.path())?;
    let key = server.user_and_key("alice", &["--reusable"])?;
    let advertise = format!("--advertise-routes={SUBNET}");
    let first = Tailscaled::start(&tmp.path().join("first"), None, None)?;
    first.up(&server, &key, "first", &[&advertise])?;
    let second = Tailscaled::start(&tmp.path().join("second"), None, None)?;
    second.up(&server, &key, "second", &[&advertise])?;
    let proxy = local_port();
    let client = Tailscaled::start(&tmp.path().join("client"), Some(NOBODY), Some(proxy))?;
    client.up(&server, &key, "client", &["--accept-routes"])?;
    for name in ["first", "second"] {
        let id = node_id(&server, name)?;
        retry("route advertised", JOIN, || {
            anyhow::ensure!(listed_routes(&server, name)?["availableRoutes"] == serde_json::json!([SUBNET]), "not yet");
            Ok(())
        })?;
        server.cli(&["nodes", "approve-routes", "-i", &id, "-r", SUBNET])?;
    }

    // Both serve the subnet; the first registered is its primary, and only it carries the route.
    let carries = |name: &str| -> anyhow::Result<bool> {
        let p = Tailscaled::peer(&client.status()?, name).ok_or_else(|| anyhow::anyhow!("{name} not a peer"))?;
        Ok(p["PrimaryRoutes"] == serde_json::json!([SUBNET]))
    };
    retry("the first router is primary", Duration::from_secs(30), || {
        anyhow::ensure!(carries("first")? && !carries("second")?, "{}", client.status()?["Peer"]);
        Ok(())
    })?;
    let page = retry("client -> subnet host through the first router", JOIN, || get_via_proxy(proxy, &url))
        .map_err(|e| anyhow::anyhow!("{e:#}\nclient log:\n{}", client.log()))?;
    assert_eq!(page, token);

    // The primary goes away: the second takes the subnet over, and traffic follows.
    drop(first);
    retry("the second router takes over", Duration::from_secs(30), || {
        anyhow::ensure!(carries("second")? && !carries("first")?, "{}", client.status()?["Peer"]);
        Ok(())
    })?;
    let page = retry("client -> subnet host through the second router", JOIN, || get_via_proxy(proxy, &url))
        .map_err(|e| anyhow::anyhow!("{e:#}\nclient log:\n{}\nsecond log:\n{}", client.log(), second.log()))?;
    assert_eq!(page, token);
    Ok(())
}
