//! Administrative actions reach real clients (tailscale-rs, in a loopback-only namespace): interactive login
//! completed with `nodes register`, renames and deletions seen by peers.

use std::time::Duration;
use tailwarden_e2e::{Server, rs_device};

async fn eventually<F, Fut>(what: &str, total: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + total;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("timed out: {what}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_login_rename_and_delete_reach_clients() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = Server::start(tmp.path())?;
    let key = server.user_and_key("alice", &["--reusable"])?;
    let rs1 = rs_device(&server, "rs1", Some(key.clone()), None).await?;
    let rs2 = rs_device(&server, "rs2", Some(key), None).await?;
    let ip2 = rs2.ipv4_addr().await?;
    eventually("rs1 sees rs2", Duration::from_secs(20), || async {
        rs1.peer_by_name("rs2").await.ok().flatten().is_some()
    })
    .await?;

    // Rename: the peer sees the new MagicDNS name.
    let id2 = server.node("rs2")?["id"].as_str().unwrap_or_default().to_string();
    server.cli(&["nodes", "rename", "-i", &id2, "renamed"])?;
    eventually("rs1 sees the new name", Duration::from_secs(10), || async {
        rs1.peer_by_name("renamed").await.ok().flatten().is_some_and(|p| p.tailnet_address.ipv4.addr() == ip2)
    })
    .await?;
    assert!(rs1.peer_by_name("rs2").await?.is_none(), "the old name is gone");

    // Interactive login: no key, the client gets a login URL; `nodes register` admits it and it proceeds.
    let rs3 = rs_device(&server, "rs3", None, None).await?;
    let url = match tokio::time::timeout(Duration::from_secs(20), rs3.is_authorized()).await?? {
        tailscale::AuthState::NotAuthorized(url) => url.to_string(),
        tailscale::AuthState::Authorized => anyhow::bail!("a keyless client must not be authorized"),
    };
    let reg_id = url.rsplit('/').next().unwrap_or_default().to_string();
    assert!(url.starts_with(&server.url) && url.contains("/register/"), "{url}");
    assert!(server.nodes()?.iter().all(|n| n["givenName"] != "rs3"), "nothing is written before the admin acts");
    server.cli(&["nodes", "register", "--user", "alice", "--key", &reg_id])?;
    let ip3 = tokio::time::timeout(Duration::from_secs(30), rs3.ipv4_addr()).await??;
    assert_eq!(tailwarden_e2e::ipv4_of(&server.node("rs3")?), Some(ip3));
    eventually("rs1 sees rs3", Duration::from_secs(10), || async {
        rs1.peer_by_name("rs3").await.ok().flatten().is_some()
    })
    .await?;

    // Delete: the node disappears from its peers' maps. Its client is stopped first: a running client whose key
    // is reusable would simply register again (as with Headscale) and take the freed address.
    assert!(rs2.shutdown(Some(Duration::from_secs(5))).await);
    server.cli(&["nodes", "delete", "-i", &id2])?;
    eventually("rs2 removed from rs1's map", Duration::from_secs(10), || async {
        rs1.peer_by_tailnet_ip(ip2.into()).await.ok().flatten().is_none()
    })
    .await?;
    assert!(rs1.peer_by_name("renamed").await?.is_none());
    assert!(server.nodes()?.iter().all(|n| n["givenName"] != "renamed"));
    rs1.shutdown(Some(Duration::from_secs(2))).await;
    rs3.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}
