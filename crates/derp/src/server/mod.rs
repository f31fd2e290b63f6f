//! The DERP relay: a tokio shell that moves bytes between [`crate::frame`] and the network.
//!
//! [`DerpServer::serve_connection`] runs one client connection over any
//! `AsyncRead + AsyncWrite` (the upgraded HTTP connection, a WebSocket byte stream, or an
//! in-memory pipe in tests):
//!
//! 1. send ServerKey; read ClientInfo within the handshake timeout (10 s);
//! 2. open the box, ask [`ClientAdmission`]; a refused client is disconnected;
//! 3. register the client and send ServerInfo as the very next frame;
//! 4. run a read loop (routing, Ping→Pong) and a write loop (queues, keep-alives) in the same task
//!    until either side ends, then unregister.
//!
//! Routing follows the Go server: a SendPacket to a connected key becomes a RecvPacket carrying
//! the sender's key; each client has a data queue and a disco queue (32 packets each by default)
//! that drop their oldest packet when full, so a sender's read loop never waits on another
//! client. A packet to an unknown key is dropped and answered with PeerGone "not here",
//! rate-limited per client (1/s, burst 3). When the last connection of a key closes, every
//! connected client it had delivered packets to gets PeerGone "disconnected". If a key connects
//! twice the newest connection receives its packets; the older one stays until it closes.
//! Keep-alives go out every 60 s plus up to 5 s of jitter; a frame that takes more than 2 s to
//! write disconnects the client.
//!
//! Not supported: **meshing** with other DERP servers. There is no mesh key handling,
//! `PeerPresent` is never sent and WatchConns/ForwardPacket/ClosePeer disconnect the client;
//! ordinary clients (tailscale-rs in particular) must never see PeerPresent.

mod conn;
mod outbox;
mod queue;
mod registry;
mod stats;

pub use stats::{DerpStats, DerpStatsSnapshot};

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::Key;
use crate::crypto::{self, SecretKey};
use registry::Registry;

/// Decides whether a node key may use the relay. Called once per connection, after the
/// ClientInfo box has been opened (so the client has proven it holds the key), on the
/// connection's task: keep it quick and non-blocking.
pub trait ClientAdmission: Send + Sync {
    /// Whether the client with this node public key is admitted.
    fn admit(&self, node_key: &Key) -> bool;
}

/// Admits every client (an open relay; for tests and trusted networks).
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

impl ClientAdmission for AdmitAll {
    fn admit(&self, _node_key: &Key) -> bool {
        true
    }
}

impl<F> ClientAdmission for F
where
    F: Fn(&Key) -> bool + Send + Sync,
{
    fn admit(&self, node_key: &Key) -> bool {
        self(node_key)
    }
}

/// Tunables of a [`DerpServer`]; [`Default`] gives the Go server's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerpConfig {
    /// Deadline for writing ServerKey and for receiving ClientInfo (each).
    pub handshake_timeout: Duration,
    /// Deadline for writing (and flushing) one frame; a slower client is disconnected.
    pub write_timeout: Duration,
    /// Base interval between server keep-alives.
    pub keepalive_interval: Duration,
    /// Upper bound of the random delay added to each keep-alive interval.
    pub keepalive_jitter: Duration,
    /// Depth of each per-client packet queue (data and disco separately).
    pub queue_depth: usize,
    /// Refill interval of the per-client PeerGone "not here" budget.
    pub not_here_interval: Duration,
    /// Burst of PeerGone "not here" frames per client.
    pub not_here_burst: u32,
}

impl Default for DerpConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(60),
            keepalive_jitter: Duration::from_secs(5),
            queue_depth: 32,
            not_here_interval: Duration::from_secs(1),
            not_here_burst: 3,
        }
    }
}

/// A DERP relay server. Share it as `Arc<DerpServer>` and hand each client connection to
/// [`DerpServer::serve_connection`] (the [`crate::http`] handlers do this for upgrades).
pub struct DerpServer {
    secret: SecretKey,
    public: Key,
    admission: Arc<dyn ClientAdmission>,
    config: DerpConfig,
    registry: Mutex<Registry>,
    stats: DerpStats,
    next_conn_id: AtomicU64,
    shutdown: CancellationToken,
}

impl fmt::Debug for DerpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerpServer")
            .field("public_key", &hex::encode(self.public))
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl DerpServer {
    /// A server whose DERP key is the X25519 key pair of `private_key`, with default tunables.
    pub fn new(private_key: [u8; 32], admission: Arc<dyn ClientAdmission>) -> Self {
        Self::with_config(private_key, admission, DerpConfig::default())
    }

    /// A server with explicit tunables.
    pub fn with_config(private_key: [u8; 32], admission: Arc<dyn ClientAdmission>, config: DerpConfig) -> Self {
        let secret = SecretKey::from(private_key);
        let public = crypto::public_key(&secret);
        Self {
            secret,
            public,
            admission,
            config,
            registry: Mutex::new(Registry::default()),
            stats: DerpStats::default(),
            next_conn_id: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
        }
    }

    /// The server's DERP public key (sent in ServerKey; `nodekey`-style hex goes in the DERP map).
    pub fn public_key(&self) -> Key {
        self.public
    }

    /// The public key as 64 lowercase hex characters (the `Derp-Public-Key` header value).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public)
    }

    /// The tunables in use.
    pub fn config(&self) -> &DerpConfig {
        &self.config
    }

    /// Live counters.
    pub fn stats(&self) -> &DerpStats {
        &self.stats
    }

    /// Whether a client with this node key is connected right now.
    pub fn is_connected(&self, node_key: &Key) -> bool {
        self.registry().is_connected(node_key)
    }

    /// Close every connection and make new ones close right away. Connection futures return
    /// promptly; [`DerpStats::clients_connected`] drops to zero as they do.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Whether [`DerpServer::shutdown`] has been called.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Serve one client connection until it closes, fails, or the server shuts down. Errors
    /// are logged at debug level; the connection is closed when this returns.
    pub async fn serve_connection<IO>(self: Arc<Self>, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let token = self.shutdown.clone();
        let result = tokio::select! {
            biased;
            () = token.cancelled() => Ok(()),
            r = conn::run(&self, io) => r,
        };
        if let Err(error) = result {
            tracing::debug!(%error, "DERP connection ended");
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // The registry's methods cannot panic; recover the data if a panic ever happened.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
