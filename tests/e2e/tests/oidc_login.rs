//! OIDC login end to end: a real OpenID provider (npm `oidc-provider`, `tests/oidc/provider.mjs`), the real server,
//! and a tailscale-rs client waiting on its login URL, inside the loopback-only namespace. A cookie-keeping HTTP
//! client plays the browser: it follows the redirects and submits the provider's login and consent forms.

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tailwarden_e2e::{Server, local_port, rs_device, server_binary, workspace_root};

const CLIENT_ID: &str = "tailwarden";
const CLIENT_SECRET: &str = "tailwarden-test-secret";

/// `node tests/oidc/provider.mjs` on a loopback port.
struct Provider {
    child: Child,
    port: u16,
}

impl Provider {
    fn start(port: u16, redirect_uri: &str, dir: &Path) -> anyhow::Result<Provider> {
        let script_dir = workspace_root().join("tests/oidc");
        anyhow::ensure!(
            script_dir.join("node_modules/oidc-provider").is_dir(),
            "tests/oidc/node_modules is missing: run `npm ci` in tests/oidc (scripts/test.sh does)"
        );
        let child = Command::new("node")
            .arg("provider.mjs")
            .arg(port.to_string())
            .arg(redirect_uri)
            .current_dir(&script_dir)
            .stdout(std::fs::File::create(dir.join("provider.log"))?)
            .stderr(std::fs::File::create(dir.join("provider.err"))?)
            .spawn()
            .context("starting node (is Node.js installed?)")?;
        let provider = Provider { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if tailwarden_e2e::http_get_local(port, "/.well-known/openid-configuration").is_ok() {
                return Ok(provider);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "oidc-provider did not come up: {}",
            std::fs::read_to_string(dir.join("provider.err")).unwrap_or_default()
        )
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oidc_yaml(issuer: &str, only_start_if_available: bool) -> String {
    format!(
        "oidc:\n  only_start_if_oidc_is_available: {only_start_if_available}\n  issuer: {issuer}\n\
         \x20 client_id: {CLIENT_ID}\n  client_secret: {CLIENT_SECRET}\n\
         \x20 scope: [openid, profile, email, groups]\n\
         \x20 extra_params:\n    login_hint: alice\n\
         \x20 allowed_domains: [example.com]\n  allowed_groups: [vpn-users]\n\
         \x20 pkce:\n    enabled: true\n    method: S256\n"
    )
}

/// What the browser ended on.
struct Landing {
    status: reqwest::StatusCode,
    url: String,
    body: String,
}

/// The `action` of the first form in `html`.
fn form_action(html: &str) -> Option<String> {
    let start = html.find("<form")?;
    let rest = &html[start..];
    let at = rest.find("action=\"")? + "action=\"".len();
    let end = rest[at..].find('"')?;
    Some(rest[at..at + end].replace("&amp;", "&"))
}

/// Logs in at the provider as `account` in a fresh browser (its own cookie jar), starting from the device's login
/// URL; returns the page the browser ends on.
async fn browser_login(auth_url: &str, provider_port: u16, account: &str) -> anyhow::Result<Landing> {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::limited(10))
        .timeout(Duration::from_secs(20))
        .build()?;
    let mut response = browser.get(auth_url).send().await?;
    // At most a login and a consent form stand between the device's URL and the callback.
    for _ in 0..3 {
        let on_provider = response.url().port() == Some(provider_port);
        let url = response.url().clone();
        let status = response.status();
        let body = response.text().await?;
        if !on_provider {
            return Ok(Landing { status, url: url.to_string(), body });
        }
        let action = form_action(&body).with_context(|| format!("no form on the provider's page {url}: {body}"))?;
        let target = url.join(&action)?;
        response = if body.contains("name=\"login\"") {
            browser.post(target).form(&[("prompt", "login"), ("login", account), ("password", "unused")]).send().await?
        } else {
            browser.post(target).form(&[("prompt", "consent")]).send().await?
        };
    }
    bail!("still at the provider after three forms")
}

fn users(server: &Server) -> anyhow::Result<Vec<Value>> {
    let v: Value = serde_json::from_str(&server.cli(&["users", "list", "-o", "json"])?)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_login_admits_allowed_users_and_refuses_others() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let provider_port = local_port();
    let issuer = format!("http://127.0.0.1:{provider_port}");
    // The provider is started after the server (it needs the server's callback URL), so the server must start
    // without it and discover it on the first login.
    let server = Server::start_with(tmp.path(), &oidc_yaml(&issuer, false))?;
    assert!(server.log().contains("OIDC provider unavailable"), "the failed discovery is reported: {}", server.log());
    let provider = Provider::start(provider_port, &format!("{}/oidc/callback", server.url), tmp.path())?;
    assert_eq!(provider.issuer(), issuer);

    let device = rs_device(&server, "oidc-laptop", None, None).await?;
    let auth_url = match tokio::time::timeout(Duration::from_secs(20), device.is_authorized()).await?? {
        tailscale::AuthState::NotAuthorized(url) => url.to_string(),
        tailscale::AuthState::Authorized => bail!("a keyless client must not be authorized"),
    };
    assert!(auth_url.starts_with(&format!("{}/register/", server.url)), "{auth_url}");

    // The redirect carries the code flow's parameters, PKCE, the configured scopes and extra parameters.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let redirect = no_redirects.get(&auth_url).send().await?;
    assert_eq!(redirect.status(), reqwest::StatusCode::FOUND);
    let location = reqwest::Url::parse(redirect.headers()["location"].to_str()?)?;
    assert!(location.as_str().starts_with(&format!("{issuer}/auth?")), "{location}");
    let query: std::collections::BTreeMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(query.get("response_type").map(String::as_str), Some("code"));
    assert_eq!(query.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(query.get("redirect_uri"), Some(&format!("{}/oidc/callback", server.url)));
    assert_eq!(query.get("scope").map(String::as_str), Some("openid profile email groups"));
    assert_eq!(query.get("code_challenge_method").map(String::as_str), Some("S256"));
    assert_eq!(query.get("login_hint").map(String::as_str), Some("alice"));
    for param in ["state", "nonce", "code_challenge"] {
        assert!(query.get(param).is_some_and(|v| v.len() >= 16), "{param} missing or short: {location}");
    }
    let cookie = redirect.headers()["set-cookie"].to_str()?;
    assert!(cookie.contains(query["state"].as_str()) && cookie.contains("HttpOnly"), "{cookie}");

    // A callback that did not come from the browser that started the login is refused.
    let forged =
        no_redirects.get(format!("{}/oidc/callback?code=x&state={}", server.url, query["state"])).send().await?;
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);

    // Outside allowed_domains: refused, nothing written.
    let mallory = browser_login(&auth_url, provider_port, "mallory-0002").await?;
    assert!(mallory.url.starts_with(&format!("{}/oidc/callback", server.url)), "{}", mallory.url);
    assert_eq!(mallory.status, reqwest::StatusCode::FORBIDDEN, "{}", mallory.body);
    assert!(mallory.body.contains("mallory@evil.example") && mallory.body.contains("not allowed"), "{}", mallory.body);
    // Inside the domain but in none of allowed_groups: refused too.
    let bob = browser_login(&auth_url, provider_port, "bob-0003").await?;
    assert_eq!(bob.status, reqwest::StatusCode::FORBIDDEN, "{}", bob.body);
    assert!(bob.body.contains("groups"), "{}", bob.body);
    assert!(server.nodes()?.is_empty(), "refused logins register no node");
    assert!(users(&server)?.is_empty(), "refused logins create no user");
    assert!(matches!(device.is_authorized().await?, tailscale::AuthState::NotAuthorized(_)));

    // An allowed account: the waiting device comes up, owned by the user made from the claims.
    let alice = browser_login(&auth_url, provider_port, "alice-0001").await?;
    assert_eq!(alice.status, reqwest::StatusCode::OK, "{}", alice.body);
    assert!(alice.body.contains("Alice Liddell") && alice.body.contains("oidc-laptop"), "{}", alice.body);
    let ip = tokio::time::timeout(Duration::from_secs(30), device.ipv4_addr()).await??;
    let node = server.node("oidc-laptop")?;
    assert_eq!(tailwarden_e2e::ipv4_of(&node), Some(ip));
    assert_eq!(node["user"]["name"], "alice");
    assert_eq!(node["registerMethod"], "REGISTER_METHOD_OIDC");
    let users = users(&server)?;
    assert_eq!(users.len(), 1, "{users:#?}");
    assert_eq!(users[0]["name"], "alice");
    assert_eq!(users[0]["displayName"], "Alice Liddell");
    assert_eq!(users[0]["email"], "alice@example.com");
    assert_eq!(users[0]["providerId"], format!("{issuer}/alice-0001"), "keyed by iss and sub");
    assert_eq!(users[0]["provider"], "oidc");

    // The login URL is spent: using it again neither redirects to the provider nor registers anything.
    let again = no_redirects.get(&auth_url).send().await?;
    assert_eq!(again.status(), reqwest::StatusCode::NOT_FOUND);
    assert_eq!(server.nodes()?.len(), 1);
    device.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}

#[test]
fn oidc_unavailable_provider_stops_start_when_required() -> anyhow::Result<()> {
    tailwarden_e2e::assert_isolated()?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (http, closed) = (local_port(), local_port());
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server_url: http://127.0.0.1:{http}\nlisten_addr: 127.0.0.1:{http}\n\
             noise:\n  private_key_path: {d}/noise.key\n\
             database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n\
             derp:\n  server:\n    enabled: false\n    private_key_path: {d}/derp.key\n  urls: []\n\
             unix_socket: {d}/tailwarden.sock\n{oidc}",
            d = dir.display(),
            oidc = oidc_yaml(&format!("http://127.0.0.1:{closed}"), true)
        ),
    )?;
    let mut child = Command::new(server_binary())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the server kept running without its OIDC provider");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut stderr)?;
    assert!(!status.success());
    assert!(stderr.contains("only_start_if_oidc_is_available") && stderr.contains("discovery"), "{stderr}");
    assert!(!dir.join("tailwarden.sock").exists(), "no listener came up");
    Ok(())
}
