//! One simulated client on the wire: TCP → `POST /ts2021` upgrade → Noise IK (Tailscale's own initiator) → early
//! payload → HTTP/2 with prior knowledge, then `/machine/register` and `/machine/map` requests as a Go client sends
//! them (capability version 130, zstd map stream, lite endpoint updates on the same connection).

use crate::BenchError;
use crate::http1::{self, BaseUrl};
use crate::stream::{Compression, Deframer, Received};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use ts_capabilityversion::CapabilityVersion;
use ts_keys::{MachineKeyPair, MachinePublicKey, NodeKeyPair};

/// The capability version every simulated client reports (Tailscale v1.90).
const CAPVER: CapabilityVersion = CapabilityVersion::CURRENT;

/// The magic that starts the early payload (`"\xff\xff\xffTS"`), never the start of an HTTP/2 frame.
const EARLY_MAGIC: &[u8; 5] = b"\xff\xff\xffTS";

/// Early payloads are a short JSON object; anything longer means the stream is not what we think.
const MAX_EARLY_PAYLOAD: usize = 64 << 10;

/// Reads the server's Noise public key from `GET /key`.
pub async fn server_key(control: &BaseUrl) -> Result<MachinePublicKey, BenchError> {
    let path = format!("/key?v={}", u16::from(CAPVER));
    let v = http1::json(control, http::Method::GET, &path, None, None, "GET /key").await?;
    let text = v["publicKey"].as_str().unwrap_or_default();
    text.parse().map_err(|_| BenchError::ServerKey(text.to_string()))
}

/// A simulated device's long-lived identity.
pub struct Identity {
    /// Machine key: the Noise static key.
    pub machine: MachineKeyPair,
    /// Node key: the WireGuard key the node registers.
    pub node: NodeKeyPair,
    /// Requested host name.
    pub hostname: String,
}

impl Identity {
    /// Fresh random keys.
    pub fn random(hostname: String) -> Identity {
        Identity { machine: MachineKeyPair::random(), node: NodeKeyPair::random(), hostname }
    }

    fn node_key(&self) -> String {
        self.node.public.to_string()
    }

    /// Sent identically with register, map and lite requests, so only endpoints and disco keys ever differ.
    fn hostinfo(&self) -> Value {
        json!({ "Hostname": self.hostname, "OS": "linux", "IPNVersion": "tailwarden-bench", "App": "tailwarden-bench" })
    }
}

/// A fresh disco key, as a client generates on every start (only its public half ever travels to control).
pub fn random_disco_key() -> String {
    ts_keys::DiscoPublicKey::random().to_string()
}

/// Where and how the simulated clients connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// Control server base URL.
    pub control: BaseUrl,
    /// Its Noise key.
    pub server_key: MachinePublicKey,
    /// Map-stream encoding to ask for.
    pub compression: Compression,
}

/// Aborts the task when dropped, so a client's tasks end with it.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An open Noise connection carrying HTTP/2. Dropping it closes the TCP connection at once.
pub struct Connection {
    h2: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    control: BaseUrl,
    compression: Compression,
    _driver: AbortOnDrop,
}

impl Connection {
    /// Connects from `source` (any local address when `None`) and completes the ts2021 handshake.
    pub async fn open(target: &Target, id: &Identity, source: Option<IpAddr>) -> Result<Connection, BenchError> {
        let prologue = format!("Tailscale Control Protocol v{}", u16::from(CAPVER));
        let (hs, init) = ts_control_noise::Handshake::initialize(&prologue, &id.machine, &target.server_key, CAPVER);
        let mut tcp = dial(target.control.addr, source).await?;
        let upgrade = format!(
            "POST {}/ts2021 HTTP/1.1\r\nHost: {}\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {init}\r\n\r\n",
            target.control.prefix, target.control.authority
        );
        tcp.write_all(upgrade.as_bytes())
            .await
            .map_err(|source| BenchError::Io { during: "sending the ts2021 upgrade", source })?;
        let head = read_head(&mut tcp).await?;
        if !head.starts_with("HTTP/1.1 101") {
            return Err(BenchError::Upgrade(head.lines().next().unwrap_or_default().to_string()));
        }
        let mut io = hs.complete(tcp, &id.machine).await.map_err(BenchError::Noise)?;
        let mut early = [0u8; 9];
        io.read_exact(&mut early)
            .await
            .map_err(|source| BenchError::Io { during: "reading the early payload", source })?;
        if &early[..5] != EARLY_MAGIC {
            return Err(BenchError::EarlyPayload);
        }
        let len = u32::from_be_bytes([early[5], early[6], early[7], early[8]]) as usize;
        if len > MAX_EARLY_PAYLOAD {
            return Err(BenchError::EarlyPayload);
        }
        // The challenge inside is unused by current clients too; it only has to be consumed.
        let mut challenge = vec![0u8; len];
        io.read_exact(&mut challenge)
            .await
            .map_err(|source| BenchError::Io { during: "reading the early payload", source })?;
        let (h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|source| BenchError::Http { during: "HTTP/2 handshake", source })?;
        let driver = AbortOnDrop(tokio::spawn(async move {
            // Its end (error or EOF) shows up as a failed request or an ended map stream.
            let _ = conn.await;
        }));
        Ok(Connection { h2, control: target.control.clone(), compression: target.compression, _driver: driver })
    }

    async fn post(
        &mut self,
        path: &str,
        body: Value,
        during: &'static str,
    ) -> Result<http::Response<Incoming>, BenchError> {
        let req = http::Request::post(self.control.url(path))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|source| BenchError::Request { during, source })?;
        let resp = self.h2.send_request(req).await.map_err(|source| BenchError::Http { during, source })?;
        if resp.status() != http::StatusCode::OK {
            let status = resp.status().as_u16();
            let text = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).chars().take(300).collect());
            return Err(BenchError::Status { during, status, body: text.unwrap_or_default() });
        }
        Ok(resp)
    }

    /// Registers the node: with a pre-auth key when joining, without one when restarting with stored state.
    pub async fn register(&mut self, id: &Identity, auth_key: Option<&str>) -> Result<(), BenchError> {
        const DURING: &str = "POST /machine/register";
        let mut body = json!({
            "Version": u16::from(CAPVER),
            "NodeKey": id.node_key(),
            "OldNodeKey": ts_keys::NodePublicKey::from_bytes([0; 32]).to_string(),
            "Expiry": "0001-01-01T00:00:00Z",
            "Followup": "",
            "Hostinfo": id.hostinfo(),
        });
        if let Some(k) = auth_key {
            body["Auth"] = json!({ "AuthKey": k });
        }
        let resp = self.post("/machine/register", body, DURING).await?;
        let bytes =
            resp.into_body().collect().await.map_err(|source| BenchError::Http { during: DURING, source })?.to_bytes();
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|source| BenchError::Json { what: "RegisterResponse", source })?;
        let error = v["Error"].as_str().unwrap_or_default();
        if !error.is_empty() {
            return Err(BenchError::Register(error.to_string()));
        }
        if v["MachineAuthorized"] != true || v["NodeKeyExpired"] == true {
            return Err(BenchError::Register(format!(
                "not admitted (AuthURL {:?})",
                v["AuthURL"].as_str().unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Opens the streaming map poll and waits for its first message.
    pub async fn open_map(
        &mut self,
        id: &Identity,
        disco: &str,
        endpoints: &[String],
    ) -> Result<MapStream, BenchError> {
        let body = json!({
            "Version": u16::from(CAPVER),
            "NodeKey": id.node_key(),
            "DiscoKey": disco,
            "Stream": true,
            "KeepAlive": true,
            "Compress": self.compression.request_value(),
            "Hostinfo": id.hostinfo(),
            "Endpoints": endpoints,
            "EndpointTypes": vec![2; endpoints.len()],
        });
        let resp = self.post("/machine/map", body, "POST /machine/map (stream)").await?;
        Ok(MapStream { body: resp.into_body(), deframer: Deframer::new(self.compression) })
    }

    /// Reports new endpoints the way Go clients do: a non-streaming map request with `OmitPeers`.
    pub async fn lite_update(&mut self, id: &Identity, disco: &str, endpoints: &[String]) -> Result<(), BenchError> {
        const DURING: &str = "POST /machine/map (lite update)";
        let body = json!({
            "Version": u16::from(CAPVER),
            "NodeKey": id.node_key(),
            "DiscoKey": disco,
            "Stream": false,
            "OmitPeers": true,
            "Compress": self.compression.request_value(),
            "Hostinfo": id.hostinfo(),
            "Endpoints": endpoints,
            "EndpointTypes": vec![2; endpoints.len()],
        });
        let resp = self.post("/machine/map", body, DURING).await?;
        resp.into_body().collect().await.map_err(|source| BenchError::Http { during: DURING, source })?;
        Ok(())
    }
}

/// The body of a streaming map response.
pub struct MapStream {
    body: Incoming,
    deframer: Deframer,
}

impl MapStream {
    /// The next message; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<Received>, BenchError> {
        loop {
            if let Some(m) = self.deframer.next_message()? {
                return Ok(Some(m));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(source)) => return Err(BenchError::Http { during: "reading the map stream", source }),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.deframer.push(&data);
                    }
                }
            }
        }
    }
}

async fn dial(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, BenchError> {
    let io = |during| move |source| BenchError::Io { during, source };
    let tcp = match source {
        None => TcpStream::connect(addr).await.map_err(io("connecting"))?,
        Some(ip) => {
            let socket = if ip.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
                .map_err(io("creating a socket"))?;
            socket.bind(SocketAddr::new(ip, 0)).map_err(io("binding the source address"))?;
            socket.connect(addr).await.map_err(io("connecting"))?
        }
    };
    // Control messages are small and latency-bound, as in Go's client.
    tcp.set_nodelay(true).map_err(io("setting TCP_NODELAY"))?;
    Ok(tcp)
}

/// Reads the HTTP/1.1 response head byte by byte, so nothing of the Noise response behind it is consumed.
async fn read_head(tcp: &mut TcpStream) -> Result<String, BenchError> {
    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err(BenchError::Upgrade("response head over 8 KiB".into()));
        }
        head.push(
            tcp.read_u8()
                .await
                .map_err(|source| BenchError::Io { during: "reading the ts2021 upgrade response", source })?,
        );
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
