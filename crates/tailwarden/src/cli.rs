//! CLI verbs with Headscale's names and flags. They call the management API of a running server over its unix
//! socket (`unix_socket` in the config), so the CLI and the REST API can never disagree.

use anyhow::Context;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tailwarden_config::Config;

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user.
    Create {
        /// The user name.
        name: String,
        /// Display name.
        #[arg(long = "display-name", short = 'd', default_value = "")]
        display_name: String,
        /// E-mail address.
        #[arg(long, default_value = "")]
        email: String,
    },
    /// List users.
    #[command(alias = "ls")]
    List,
}

#[derive(Subcommand)]
pub enum PreauthkeysCommand {
    /// Create a pre-auth key; it is printed once and only its hash is stored.
    Create(CreateKey),
    /// List pre-auth keys of a user.
    #[command(alias = "ls")]
    List {
        /// The user (name or id).
        #[arg(long, short = 'u')]
        user: Option<String>,
    },
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

#[derive(Subcommand)]
pub enum NodesCommand {
    /// List nodes.
    #[command(alias = "ls")]
    List {
        /// Only nodes of this user (name or id).
        #[arg(long, short = 'u')]
        user: Option<String>,
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
    Delete {
        /// Node id.
        #[arg(long, short = 'i')]
        identifier: i64,
    },
    /// Expire a node's key (logs the client out).
    Expire {
        /// Node id.
        #[arg(long, short = 'i')]
        identifier: i64,
    },
    /// Rename a node (its MagicDNS name).
    Rename {
        /// Node id.
        #[arg(long, short = 'i')]
        identifier: i64,
        /// The new name.
        name: String,
    },
}

/// A request to the management API over the unix socket.
async fn call(config: &Config, method: http::Method, path_and_query: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let path = &config.unix_socket;
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .with_context(|| format!("connecting to the server at {} (is `tailwarden serve` running?)", path.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = value.get("message").and_then(Value::as_str).unwrap_or("request failed");
        anyhow::bail!("{msg} (HTTP {status})");
    }
    Ok(value)
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
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0)).collect();
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
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

pub async fn users(config: &Config, output: &str, cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Create { name, display_name, email } => {
            let v = call(config, http::Method::POST, "/api/v1/user", Some(serde_json::json!({"name": name, "displayName": display_name, "email": email}))).await?;
            print(output, &v["user"], |u| vec![vec!["User created".into(), s(u, "name"), format!("id {}", s(u, "id"))]])
        }
        UsersCommand::List => {
            let v = call(config, http::Method::GET, "/api/v1/user", None).await?;
            print(output, &v["users"], |users| {
                let mut rows = vec![vec!["ID".into(), "Name".into(), "Username".into(), "Email".into(), "Created".into()]];
                for u in users.as_array().into_iter().flatten() {
                    rows.push(vec![s(u, "id"), s(u, "displayName"), s(u, "name"), s(u, "email"), s(u, "createdAt")]);
                }
                rows
            })
        }
    }
}

pub async fn preauthkeys(config: &Config, output: &str, cmd: PreauthkeysCommand) -> anyhow::Result<()> {
    match cmd {
        PreauthkeysCommand::Create(k) => {
            let ttl = tailwarden_config::parse_duration(&k.expiration).with_context(|| format!("--expiration {:?}", k.expiration))?;
            let expires = time::OffsetDateTime::now_utc() + ttl;
            let body = serde_json::json!({
                "user": k.user,
                "reusable": k.reusable,
                "ephemeral": k.ephemeral,
                "expiration": expires.format(&time::format_description::well_known::Rfc3339)?,
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
                let mut rows = vec![vec!["ID".into(), "Key".into(), "Reusable".into(), "Ephemeral".into(), "Used".into(), "Expiration".into(), "Created".into(), "Tags".into()]];
                for k in keys.as_array().into_iter().flatten() {
                    let tags: Vec<String> = k["aclTags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
                    rows.push(vec![s(k, "id"), s(k, "key"), s(k, "reusable"), s(k, "ephemeral"), s(k, "used"), s(k, "expiration"), s(k, "createdAt"), tags.join(",")]);
                }
                rows
            })
        }
    }
}

fn node_rows(nodes: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![vec!["ID".into(), "Hostname".into(), "Name".into(), "User".into(), "IP addresses".into(), "Tags".into(), "Last seen".into(), "Connected".into(), "Expired".into()]];
    let now = time::OffsetDateTime::now_utc();
    for n in nodes.as_array().into_iter().flatten() {
        let ips: Vec<String> = n["ipAddresses"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
        let tags: Vec<String> = n["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
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

pub async fn nodes(config: &Config, output: &str, cmd: NodesCommand) -> anyhow::Result<()> {
    match cmd {
        NodesCommand::List { user } => {
            let q = user.map(|u| format!("?user={}", encode(&u))).unwrap_or_default();
            let v = call(config, http::Method::GET, &format!("/api/v1/node{q}"), None).await?;
            print(output, &v["nodes"], node_rows)
        }
        NodesCommand::Register { user, key } => {
            let v = call(config, http::Method::POST, &format!("/api/v1/node/register?user={}&key={}", encode(&user), encode(&key)), None).await?;
            print(output, &v["node"], |n| vec![vec!["Node".into(), s(n, "givenName"), "registered".into()]])
        }
        NodesCommand::Delete { identifier } => {
            call(config, http::Method::DELETE, &format!("/api/v1/node/{identifier}"), None).await?;
            println!("Node deleted");
            Ok(())
        }
        NodesCommand::Expire { identifier } => {
            let v = call(config, http::Method::POST, &format!("/api/v1/node/{identifier}/expire"), None).await?;
            print(output, &v["node"], |n| vec![vec!["Node".into(), s(n, "givenName"), "expired".into()]])
        }
        NodesCommand::Rename { identifier, name } => {
            let v = call(config, http::Method::POST, &format!("/api/v1/node/{identifier}/rename/{}", encode(&name)), None).await?;
            print(output, &v["node"], |n| vec![vec!["Node".into(), s(n, "givenName"), "renamed".into()]])
        }
    }
}
