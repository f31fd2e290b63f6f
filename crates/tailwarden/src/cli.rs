//! CLI verbs with Headscale's names and flags. They call the management API of a running server, so the CLI and
//! the REST API can never disagree: over the server's unix socket (`unix_socket`) by default, or over HTTP(S)
//! with an API key when `cli.address` is set (also through `HEADSCALE_CLI_ADDRESS`/`TAILWARDEN_CLI_ADDRESS` and
//! `HEADSCALE_CLI_API_KEY`/`TAILWARDEN_CLI_API_KEY`).

use anyhow::Context;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tailwarden_config::Config;

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user.
    #[command(alias = "c", alias = "new")]
    Create {
        /// The user name.
        name: String,
        /// Display name.
        #[arg(long = "display-name", short = 'd', default_value = "")]
        display_name: String,
        /// E-mail address.
        #[arg(long, short = 'e', default_value = "")]
        email: String,
    },
    /// List users.
    #[command(alias = "ls", alias = "show")]
    List {
        /// Only the user with this id.
        #[arg(long, short = 'i')]
        identifier: Option<i64>,
        /// Only the user with this name.
        #[arg(long, short = 'n')]
        name: Option<String>,
        /// Only users with this e-mail address.
        #[arg(long, short = 'e')]
        email: Option<String>,
    },
    /// Rename a user.
    #[command(alias = "mv")]
    Rename {
        /// The user's id.
        #[arg(long, short = 'i')]
        identifier: Option<i64>,
        /// The user's current name (instead of the id).
        #[arg(long, short = 'n')]
        name: Option<String>,
        /// The new name.
        #[arg(long = "new-name", short = 'r')]
        new_name: String,
    },
    /// Delete a user and its pre-auth keys; refused while the user owns nodes.
    #[command(alias = "delete")]
    Destroy {
        /// The user's id.
        #[arg(long, short = 'i')]
        identifier: Option<i64>,
        /// The user's name (instead of the id).
        #[arg(long, short = 'n')]
        name: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum PreauthkeysCommand {
    /// Create a pre-auth key; it is printed once and only its hash is stored.
    #[command(alias = "c", alias = "new")]
    Create(CreateKey),
    /// List pre-auth keys, optionally of one user.
    #[command(alias = "ls", alias = "show")]
    List {
        /// The user (name or id).
        #[arg(long, short = 'u')]
        user: Option<String>,
    },
    /// Expire a pre-auth key so it can no longer register nodes.
    #[command(alias = "revoke", alias = "exp", alias = "e")]
    Expire(KeyRef),
    /// Delete a pre-auth key (nodes registered with it stay).
    #[command(alias = "del", alias = "rm", alias = "d")]
    Delete(KeyRef),
}

#[derive(Args)]
pub struct CreateKey {
    /// The user (name or id) whose nodes the key registers.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// The key can be used more than once.
    #[arg(long)]
    reusable: bool,
    /// Nodes registered with the key are deleted when they go offline.
    #[arg(long)]
    ephemeral: bool,
    /// How long the key is valid (e.g. 1h, 24h, 90d); default 1h like Headscale.
    #[arg(long, short = 'e', default_value = "1h")]
    expiration: String,
    /// Tags for the registered nodes, comma-separated (tag:a,tag:b).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
}

/// A pre-auth key named by `--id`, or (Headscale ≤ 0.26) by `--user` and the key, its prefix or its id.
#[derive(Args)]
pub struct KeyRef {
    /// The key's id.
    #[arg(long, short = 'i')]
    id: Option<i64>,
    /// The key's owner (name or id); the key must belong to this user.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// The key (full, its prefix, or its id).
    key: Option<String>,
}

#[derive(Subcommand)]
pub enum ApikeysCommand {
    /// Create an API key; it is printed once and only its hash is stored.
    #[command(alias = "c", alias = "new")]
    Create {
        /// How long the key is valid (e.g. 90d, 24h).
        #[arg(long, short = 'e', default_value = "90d")]
        expiration: String,
    },
    /// List API keys.
    #[command(alias = "ls", alias = "show")]
    List,
    /// Expire an API key.
    #[command(alias = "revoke", alias = "exp", alias = "e")]
    Expire(ApiKeyRef),
    /// Delete an API key.
    #[command(alias = "remove", alias = "del")]
    Delete(ApiKeyRef),
}

/// An API key named by prefix (as listed, `hskey-api-PREFIX-***`, or bare) or by id.
#[derive(Args)]
pub struct ApiKeyRef {
    /// The key's prefix.
    #[arg(long, short = 'p')]
    prefix: Option<String>,
    /// The key's id.
    #[arg(long, short = 'i')]
    id: Option<i64>,
}

#[derive(Subcommand)]
pub enum NodesCommand {
    /// List nodes.
    #[command(alias = "ls", alias = "show")]
    List {
        /// Only nodes of this user (name or id).
        #[arg(long, short = 'u')]
        user: Option<String>,
    },
    /// List the subnet routes nodes advertise, which are approved, and which are served.
    #[command(name = "list-routes", alias = "lsr", alias = "routes")]
    ListRoutes {
        /// Only this node.
        #[arg(long, short = 'i')]
        identifier: Option<i64>,
    },
    /// Complete an interactive registration (the id shown on the client's login page).
    Register {
        /// Owner of the node.
        #[arg(long, short = 'u')]
        user: String,
        /// The registration id.
        #[arg(long, short = 'k')]
        key: String,
    },
    /// Delete a node.
    #[command(alias = "del")]
    Delete {
        /// Node id.
        #[arg(long, short = 'i')]
        identifier: i64,
    },
    /// Expire a node's key (logs the client out), or set or remove its expiry.
    #[command(alias = "logout", alias = "exp", alias = "e")]
    Expire {
        /// Node id.
        #[arg(long, short = 'i')]
        identifier: i64,
        /// Expire at this RFC 3339 time instead of now.
        #[arg(long, short = 'e')]
        expiry: Option<String>,
        /// Remove the expiry: the node's key never expires.
        #[arg(long, short = 'd')]
        disable: bool,
    },
    /// Rename a node (its MagicDNS name).
    Rename {
        /// Node id.
        #[arg(long, short = 'i')]
        identifier: i64,
        /// The new name.
        name: String,
    },
    /// Replace a node's tags.
    #[command(alias = "tags", alias = "t")]
    Tag {
        /// Node id.
        #[arg(long, short = 'i')]
        identifier: i64,
        /// The tags, comma-separated (tag:a,tag:b); none clears them.
        #[arg(long, short = 't', value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Replace the subnet routes approved for a node.
    #[command(name = "approve-routes")]
    ApproveRoutes {
        /// Node id.
        #[arg(long, short = 'i')]
        identifier: i64,
        /// The routes, comma-separated (10.0.0.0/8,192.168.0.0/24); an empty string removes all.
        #[arg(long, short = 'r', value_delimiter = ',')]
        routes: Vec<String>,
    },
}

/// Where the CLI sends its requests.
enum Target {
    /// The server's admin socket: no authentication, the socket's permissions decide.
    Unix(std::path::PathBuf),
    /// A server's public listener, with an API key.
    Remote(Remote),
}

struct Remote {
    https: bool,
    host: String,
    port: u16,
    /// Path prefix from the address (`https://example.com/headscale` → `/headscale`), without trailing `/`.
    base: String,
    api_key: String,
    insecure: bool,
}

impl Remote {
    /// Parses `cli.address`: a bare `host[:port]` means HTTPS, as in Headscale; `http://` and `https://` are
    /// honoured.
    fn parse(address: &str, api_key: &str, insecure: bool) -> anyhow::Result<Remote> {
        let (https, rest) = if let Some(r) = address.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = address.strip_prefix("http://") {
            (false, r)
        } else if address.contains("://") {
            anyhow::bail!("cli.address {address:?}: only http:// and https:// are supported");
        } else {
            (true, address)
        };
        let (authority, base) =
            rest.split_once('/').map_or((rest, String::new()), |(a, p)| (a, format!("/{}", p.trim_end_matches('/'))));
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').with_context(|| format!("cli.address {address:?}: unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().with_context(|| format!("cli.address {address:?}: bad port"))?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => {
                    (h.to_string(), p.parse().with_context(|| format!("cli.address {address:?}: bad port"))?)
                }
                None => (authority.to_string(), default_port),
            }
        };
        anyhow::ensure!(!host.is_empty(), "cli.address {address:?} has no host");
        anyhow::ensure!(
            !api_key.is_empty(),
            "cli.address is set but no API key is: set cli.api_key or HEADSCALE_CLI_API_KEY (create one with `tailwarden apikeys create` on the server)"
        );
        Ok(Remote { https, host, port, base, api_key: api_key.to_string(), insecure })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn target(config: &Config) -> anyhow::Result<Target> {
    if config.cli.address.is_empty() {
        Ok(Target::Unix(config.unix_socket.clone()))
    } else {
        Ok(Target::Remote(Remote::parse(&config.cli.address, config.cli.api_key.expose(), config.cli.insecure)?))
    }
}

/// A request to the management API; non-2xx answers become errors carrying the server's message.
async fn call(
    config: &Config,
    method: http::Method,
    path_and_query: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let target = target(config)?;
    let timeout = config.cli.timeout.max(std::time::Duration::from_secs(1));
    tokio::time::timeout(timeout, call_target(&target, method, path_and_query, body))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from the server within {timeout:?} (cli.timeout)"))?
}

async fn call_target(
    target: &Target,
    method: http::Method,
    path_and_query: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let builder = http::Request::builder().method(method).header(http::header::CONTENT_TYPE, "application/json");
    let (status, bytes) = match target {
        Target::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await.with_context(|| {
                format!("connecting to the server at {} (is `tailwarden serve` running?)", path.display())
            })?;
            let req = builder
                .uri(path_and_query)
                .header(http::header::HOST, "localhost")
                .body(Full::new(bytes::Bytes::from(body)))?;
            exchange(stream, req).await?
        }
        Target::Remote(r) => {
            let req = builder
                .uri(format!("{}{path_and_query}", r.base))
                .header(http::header::HOST, r.authority())
                .header(http::header::AUTHORIZATION, format!("Bearer {}", r.api_key))
                .body(Full::new(bytes::Bytes::from(body)))?;
            let tcp = tokio::net::TcpStream::connect((r.host.as_str(), r.port))
                .await
                .with_context(|| format!("connecting to {}", r.authority()))?;
            if r.https {
                let name = rustls::pki_types::ServerName::try_from(r.host.clone())
                    .with_context(|| format!("{:?} is not a valid TLS server name", r.host))?;
                let connector = tokio_rustls::TlsConnector::from(crate::tls::client_config(r.insecure)?);
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", r.authority()))?;
                exchange(tls, req).await?
            } else {
                exchange(tcp, req).await?
            }
        }
    };
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = value.get("message").and_then(Value::as_str).unwrap_or("request failed");
        anyhow::bail!("{msg} (HTTP {status})");
    }
    Ok(value)
}

async fn exchange<S>(
    stream: S,
    req: http::Request<Full<bytes::Bytes>>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    conn.abort();
    Ok((status, bytes))
}

fn print(output: &str, value: &Value, table: impl FnOnce(&Value) -> Vec<Vec<String>>) -> anyhow::Result<()> {
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(value)?),
        "json-line" => println!("{value}"),
        "yaml" => print!("{}", serde_yaml::to_string(value)?),
        "" => print_table(&table(value)),
        other => anyhow::bail!("unknown output format {other:?}: use json, json-line or yaml"),
    }
    Ok(())
}

fn print_table(rows: &[Vec<String>]) {
    let Some(cols) = rows.first().map(Vec::len) else { return };
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0)).collect();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", line.join(" | ").trim_end());
    }
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect()
}

fn rfc3339(t: time::OffsetDateTime) -> anyhow::Result<String> {
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

/// The user named by `--identifier` or `--name` (the API accepts either in the path).
fn user_ref(identifier: Option<i64>, name: Option<String>) -> anyhow::Result<String> {
    match (identifier, name) {
        (Some(id), None) => Ok(id.to_string()),
        (None, Some(name)) => Ok(name),
        (Some(_), Some(_)) => anyhow::bail!("give --identifier or --name, not both"),
        (None, None) => anyhow::bail!("--identifier (or --name) is required"),
    }
}

fn user_rows(users: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![vec!["ID".into(), "Name".into(), "Username".into(), "Email".into(), "Created".into()]];
    for u in users.as_array().into_iter().flatten() {
        rows.push(vec![s(u, "id"), s(u, "displayName"), s(u, "name"), s(u, "email"), s(u, "createdAt")]);
    }
    rows
}

pub async fn users(config: &Config, output: &str, cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Create { name, display_name, email } => {
            let v = call(
                config,
                http::Method::POST,
                "/api/v1/user",
                Some(json!({"name": name, "displayName": display_name, "email": email})),
            )
            .await?;
            print(output, &v["user"], |u| vec![vec!["User created".into(), s(u, "name"), format!("id {}", s(u, "id"))]])
        }
        UsersCommand::List { identifier, name, email } => {
            let mut q = Vec::new();
            if let Some(id) = identifier {
                q.push(format!("id={id}"));
            }
            if let Some(n) = name {
                q.push(format!("name={}", encode(&n)));
            }
            if let Some(e) = email {
                q.push(format!("email={}", encode(&e)));
            }
            let q = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
            let v = call(config, http::Method::GET, &format!("/api/v1/user{q}"), None).await?;
            print(output, &v["users"], user_rows)
        }
        UsersCommand::Rename { identifier, name, new_name } => {
            let user = user_ref(identifier, name)?;
            let v = call(
                config,
                http::Method::POST,
                &format!("/api/v1/user/{}/rename/{}", encode(&user), encode(&new_name)),
                None,
            )
            .await?;
            print(output, &v["user"], |u| vec![vec!["User renamed".into(), s(u, "name"), format!("id {}", s(u, "id"))]])
        }
        UsersCommand::Destroy { identifier, name, force } => {
            let user = user_ref(identifier, name)?;
            if !force && !confirm(&format!("Do you want to remove the user {user:?} and its pre-auth keys?"))? {
                anyhow::bail!("user not destroyed");
            }
            let v = call(config, http::Method::DELETE, &format!("/api/v1/user/{}", encode(&user)), None).await?;
            print(output, &v, |_| vec![vec!["User destroyed".into()]])
        }
    }
}

/// Asks on the terminal; without one (scripts), refuses so that `--force` is explicit.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    anyhow::ensure!(std::io::stdin().is_terminal(), "no terminal to confirm on: pass --force");
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

pub async fn preauthkeys(config: &Config, output: &str, cmd: PreauthkeysCommand) -> anyhow::Result<()> {
    match cmd {
        PreauthkeysCommand::Create(k) => {
            let ttl = tailwarden_config::parse_duration(&k.expiration)
                .with_context(|| format!("--expiration {:?}", k.expiration))?;
            let body = json!({
                "user": k.user,
                "reusable": k.reusable,
                "ephemeral": k.ephemeral,
                "expiration": rfc3339(time::OffsetDateTime::now_utc() + ttl)?,
                "aclTags": k.tags,
            });
            let v = call(config, http::Method::POST, "/api/v1/preauthkey", Some(body)).await?;
            if output.is_empty() {
                println!("{}", s(&v["preAuthKey"], "key"));
                Ok(())
            } else {
                print(output, &v["preAuthKey"], |_| Vec::new())
            }
        }
        PreauthkeysCommand::List { user } => {
            let q = user.map(|u| format!("?user={}", encode(&u))).unwrap_or_default();
            let v = call(config, http::Method::GET, &format!("/api/v1/preauthkey{q}"), None).await?;
            print(output, &v["preAuthKeys"], |keys| {
                let mut rows = vec![vec![
                    "ID".into(),
                    "Key".into(),
                    "Reusable".into(),
                    "Ephemeral".into(),
                    "Used".into(),
                    "Expiration".into(),
                    "Created".into(),
                    "Tags".into(),
                ]];
                for k in keys.as_array().into_iter().flatten() {
                    rows.push(vec![
                        s(k, "id"),
                        s(k, "key"),
                        s(k, "reusable"),
                        s(k, "ephemeral"),
                        s(k, "used"),
                        s(k, "expiration"),
                        s(k, "createdAt"),
                        strings(&k["aclTags"]).join(","),
                    ]);
                }
                rows
            })
        }
        PreauthkeysCommand::Expire(r) => {
            let v = call(config, http::Method::POST, "/api/v1/preauthkey/expire", Some(key_ref_json(&r)?)).await?;
            print(output, &v, |_| vec![vec!["Key expired".into()]])
        }
        PreauthkeysCommand::Delete(r) => {
            let mut q = Vec::new();
            for (k, val) in key_ref_json(&r)?.as_object().into_iter().flatten() {
                q.push(format!("{k}={}", encode(val.as_str().unwrap_or_default())));
            }
            let v = call(config, http::Method::DELETE, &format!("/api/v1/preauthkey?{}", q.join("&")), None).await?;
            print(output, &v, |_| vec![vec!["Key deleted".into()]])
        }
    }
}

fn key_ref_json(r: &KeyRef) -> anyhow::Result<Value> {
    let mut v = serde_json::Map::new();
    match (r.id, &r.key) {
        (Some(id), None) => {
            v.insert("id".into(), Value::String(id.to_string()));
        }
        (None, Some(key)) => {
            v.insert("key".into(), Value::String(key.clone()));
        }
        (Some(_), Some(_)) => anyhow::bail!("give --id or the key, not both"),
        (None, None) => anyhow::bail!("name the key: --id ID, or --user USER KEY"),
    }
    if let Some(u) = &r.user {
        v.insert("user".into(), Value::String(u.clone()));
    }
    Ok(Value::Object(v))
}

pub async fn apikeys(config: &Config, output: &str, cmd: ApikeysCommand) -> anyhow::Result<()> {
    match cmd {
        ApikeysCommand::Create { expiration } => {
            let ttl = tailwarden_config::parse_duration(&expiration)
                .with_context(|| format!("--expiration {expiration:?}"))?;
            let body = json!({ "expiration": rfc3339(time::OffsetDateTime::now_utc() + ttl)? });
            let v = call(config, http::Method::POST, "/api/v1/apikey", Some(body)).await?;
            if output.is_empty() {
                println!("{}", s(&v, "apiKey"));
                Ok(())
            } else {
                print(output, &v, |_| Vec::new())
            }
        }
        ApikeysCommand::List => {
            let v = call(config, http::Method::GET, "/api/v1/apikey", None).await?;
            print(output, &v["apiKeys"], |keys| {
                let mut rows =
                    vec![vec!["ID".into(), "Prefix".into(), "Expiration".into(), "Created".into(), "Last seen".into()]];
                for k in keys.as_array().into_iter().flatten() {
                    rows.push(vec![
                        s(k, "id"),
                        s(k, "prefix"),
                        s(k, "expiration"),
                        s(k, "createdAt"),
                        s(k, "lastSeen"),
                    ]);
                }
                rows
            })
        }
        ApikeysCommand::Expire(r) => {
            let body = match (&r.prefix, r.id) {
                (Some(p), None) => json!({ "prefix": p }),
                (None, Some(id)) => json!({ "id": id.to_string() }),
                _ => anyhow::bail!("give exactly one of --prefix and --id"),
            };
            let v = call(config, http::Method::POST, "/api/v1/apikey/expire", Some(body)).await?;
            print(output, &v, |_| vec![vec!["Key expired".into()]])
        }
        ApikeysCommand::Delete(r) => {
            let named = match (&r.prefix, r.id) {
                (Some(p), None) => p.clone(),
                (None, Some(id)) => id.to_string(),
                _ => anyhow::bail!("give exactly one of --prefix and --id"),
            };
            let v = call(config, http::Method::DELETE, &format!("/api/v1/apikey/{}", encode(&named)), None).await?;
            print(output, &v, |_| vec![vec!["Key deleted".into()]])
        }
    }
}

pub fn version(output: &str) -> anyhow::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    if output.is_empty() {
        println!("{version}");
        Ok(())
    } else {
        print(output, &json!({ "version": version }), |_| Vec::new())
    }
}

pub async fn health(config: &Config, output: &str) -> anyhow::Result<()> {
    let v = call(config, http::Method::GET, "/api/v1/health", None).await?;
    print(output, &v, |v| {
        let db = if v["databaseConnectivity"].as_bool() == Some(true) { "OK" } else { "FAILED" };
        vec![vec!["Database connectivity:".into(), db.into()]]
    })
}

fn node_rows(nodes: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "ID".into(),
        "Hostname".into(),
        "Name".into(),
        "User".into(),
        "IP addresses".into(),
        "Tags".into(),
        "Last seen".into(),
        "Connected".into(),
        "Expired".into(),
    ]];
    let now = time::OffsetDateTime::now_utc();
    for n in nodes.as_array().into_iter().flatten() {
        let ips: Vec<String> =
            n["ipAddresses"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
        let tags: Vec<String> =
            n["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
        let expired = n["expiry"]
            .as_str()
            .and_then(|e| time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok())
            .is_some_and(|e| e <= now);
        rows.push(vec![
            s(n, "id"),
            s(n, "name"),
            s(n, "givenName"),
            n.get("user").map(|u| s(u, "name")).unwrap_or_default(),
            ips.join(", "),
            tags.join(","),
            s(n, "lastSeen"),
            if n["online"].as_bool() == Some(true) { "online".into() } else { "offline".into() },
            if expired { "yes".into() } else { "no".into() },
        ]);
    }
    rows
}

fn route_rows(nodes: &Value) -> Vec<Vec<String>> {
    let mut rows =
        vec![vec!["ID".into(), "Hostname".into(), "Approved".into(), "Available".into(), "Serving (Primary)".into()]];
    for n in nodes.as_array().into_iter().flatten() {
        let available = strings(&n["availableRoutes"]);
        let approved = strings(&n["approvedRoutes"]);
        if available.is_empty() && approved.is_empty() {
            continue;
        }
        rows.push(vec![
            s(n, "id"),
            s(n, "givenName"),
            approved.join(", "),
            available.join(", "),
            strings(&n["subnetRoutes"]).join(", "),
        ]);
    }
    rows
}

pub async fn nodes(config: &Config, output: &str, cmd: NodesCommand) -> anyhow::Result<()> {
    match cmd {
        NodesCommand::List { user } => {
            let q = user.map(|u| format!("?user={}", encode(&u))).unwrap_or_default();
            let v = call(config, http::Method::GET, &format!("/api/v1/node{q}"), None).await?;
            print(output, &v["nodes"], node_rows)
        }
        NodesCommand::ListRoutes { identifier } => {
            let nodes = match identifier {
                Some(id) => Value::Array(vec![
                    call(config, http::Method::GET, &format!("/api/v1/node/{id}"), None).await?["node"].take(),
                ]),
                None => call(config, http::Method::GET, "/api/v1/node", None).await?["nodes"].take(),
            };
            print(output, &nodes, route_rows)
        }
        NodesCommand::Register { user, key } => {
            let v = call(
                config,
                http::Method::POST,
                &format!("/api/v1/node/register?user={}&key={}", encode(&user), encode(&key)),
                None,
            )
            .await?;
            print(output, &v["node"], |n| vec![vec!["Node".into(), s(n, "givenName"), "registered".into()]])
        }
        NodesCommand::Delete { identifier } => {
            call(config, http::Method::DELETE, &format!("/api/v1/node/{identifier}"), None).await?;
            println!("Node deleted");
            Ok(())
        }
        NodesCommand::Expire { identifier, expiry, disable } => {
            let body = match (disable, expiry) {
                (true, Some(_)) => anyhow::bail!("give --expiry or --disable, not both"),
                (true, None) => Some(json!({ "disableExpiry": true })),
                (false, Some(at)) => Some(json!({ "expiry": at })),
                (false, None) => None,
            };
            let v = call(config, http::Method::POST, &format!("/api/v1/node/{identifier}/expire"), body).await?;
            print(output, &v["node"], |n| {
                vec![vec!["Node".into(), s(n, "givenName"), "expiry updated".into(), s(n, "expiry")]]
            })
        }
        NodesCommand::Rename { identifier, name } => {
            let v =
                call(config, http::Method::POST, &format!("/api/v1/node/{identifier}/rename/{}", encode(&name)), None)
                    .await?;
            print(output, &v["node"], |n| vec![vec!["Node".into(), s(n, "givenName"), "renamed".into()]])
        }
        NodesCommand::Tag { identifier, tags } => {
            let tags: Vec<String> = tags.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
            let v = call(
                config,
                http::Method::POST,
                &format!("/api/v1/node/{identifier}/tags"),
                Some(json!({ "tags": tags })),
            )
            .await?;
            print(output, &v["node"], |n| {
                vec![vec!["Node".into(), s(n, "givenName"), "tags".into(), strings(&n["tags"]).join(",")]]
            })
        }
        NodesCommand::ApproveRoutes { identifier, routes } => {
            let routes: Vec<String> =
                routes.into_iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
            let v = call(
                config,
                http::Method::POST,
                &format!("/api/v1/node/{identifier}/approve_routes"),
                Some(json!({ "routes": routes })),
            )
            .await?;
            print(output, &v["node"], |n| {
                vec![vec![
                    "Node".into(),
                    s(n, "givenName"),
                    "approved routes".into(),
                    strings(&n["approvedRoutes"]).join(", "),
                ]]
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Remote;

    #[test]
    fn addresses_parse_like_headscale() {
        let r = Remote::parse("example.com:50443", "k", false).unwrap();
        assert_eq!((r.https, r.host.as_str(), r.port, r.base.as_str()), (true, "example.com", 50443, ""));
        let r = Remote::parse("http://127.0.0.1:8080/", "k", false).unwrap();
        assert_eq!((r.https, r.host.as_str(), r.port), (false, "127.0.0.1", 8080));
        let r = Remote::parse("https://[::1]/hs", "k", true).unwrap();
        assert_eq!(
            (r.https, r.host.as_str(), r.port, r.base.as_str(), r.authority()),
            (true, "::1", 443, "/hs", "[::1]:443".into())
        );
        assert!(Remote::parse("example.com", "", false).is_err(), "an address needs a key");
        assert!(Remote::parse("ftp://example.com", "k", false).is_err());
        assert!(Remote::parse("example.com:notaport", "k", false).is_err());
        assert!(Remote::parse(":80", "k", false).is_err());
    }
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Print the policy in force.
    Get,
    /// Replace the policy with a HuJSON file; refused (and nothing changes) if it is invalid or its tests fail.
    Set {
        /// The policy file.
        #[arg(long, short = 'f')]
        file: std::path::PathBuf,
    },
    /// Check a policy file against the running tailnet, including its tests, without applying it.
    Check {
        /// The policy file.
        #[arg(long, short = 'f')]
        file: std::path::PathBuf,
    },
}

pub async fn policy(config: &Config, output: &str, cmd: PolicyCommand) -> anyhow::Result<()> {
    let read =
        |path: &std::path::Path| std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()));
    match cmd {
        PolicyCommand::Get => {
            let v = call(config, http::Method::GET, "/api/v1/policy", None).await?;
            if output.is_empty() {
                println!("{}", v["policy"].as_str().unwrap_or_default());
                Ok(())
            } else {
                print(output, &v, |_| Vec::new())
            }
        }
        PolicyCommand::Set { file } => {
            let text = read(&file)?;
            call(config, http::Method::PUT, "/api/v1/policy", Some(serde_json::json!({ "policy": text }))).await?;
            println!("Policy updated.");
            Ok(())
        }
        PolicyCommand::Check { file } => {
            let text = read(&file)?;
            call(config, http::Method::POST, "/api/v1/policy/check", Some(serde_json::json!({ "policy": text })))
                .await?;
            println!("Policy is valid.");
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub enum DebugCommand {
    /// Show a node's compiled packet filter, SSH policy and visible peers.
    Node {
        /// Node id or name.
        #[arg(long, short = 'i')]
        identifier: String,
    },
    /// Answer "can SRC reach DST on PORT?" and show the rule of DST's packet filter that allows it.
    Reach {
        /// Source node (id or name).
        #[arg(long)]
        src: String,
        /// Destination node (id or name).
        #[arg(long)]
        dst: String,
        /// Destination port.
        #[arg(long)]
        port: u16,
        /// tcp, udp, icmp, sctp or a protocol number.
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
}

pub async fn debug(config: &Config, output: &str, cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Node { identifier } => {
            let v =
                call(config, http::Method::GET, &format!("/api/v1/debug/node/{}", encode(&identifier)), None).await?;
            if output.is_empty() {
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(())
            } else {
                print(output, &v, |_| Vec::new())
            }
        }
        DebugCommand::Reach { src, dst, port, proto } => {
            let q = format!(
                "/api/v1/debug/reach?src={}&dst={}&port={port}&proto={}",
                encode(&src),
                encode(&dst),
                encode(&proto)
            );
            let v = call(config, http::Method::GET, &q, None).await?;
            if !output.is_empty() {
                return print(output, &v, |_| Vec::new());
            }
            if v["allowed"].as_bool() == Some(true) {
                println!("allowed: {src} -> {dst}:{port}/{proto}\nby rule: {}", v["rule"]);
            } else {
                println!("denied: no rule of {dst}'s packet filter admits {src} on {port}/{proto}");
            }
            Ok(())
        }
    }
}
