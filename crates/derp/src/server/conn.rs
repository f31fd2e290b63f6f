//! One client connection: handshake, read loop, write loop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf};
use tokio::time::{Instant, timeout};

use super::DerpServer;
use super::outbox::{Outgoing, Pushed};
use super::queue::TokenBucket;
use super::registry::ConnHandle;
use super::stats::{add, dec, inc};
use crate::crypto::{ServerInfo, open_client_info, seal_server_info};
use crate::frame::{Frame, FrameDecoder, FrameType, Message, PeerGoneReason, is_disco_packet};
use crate::{DerpError, Key};

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Serve one connection; see the module docs of [`super`] for the sequence.
pub(super) async fn run<IO>(server: &Arc<DerpServer>, io: IO) -> Result<(), DerpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let mut wr = BufWriter::new(wr);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut decoder = FrameDecoder::new();

    let key = match handshake(server, &mut rd, &mut wr, &mut buf, &mut decoder).await {
        Ok(key) => key,
        Err(e) => {
            if !matches!(e, DerpError::AdmissionRefused { .. }) {
                inc(&server.stats.handshakes_failed);
            }
            return Err(e);
        }
    };

    let id = server.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(ConnHandle::new(id, key, server.config.queue_depth));
    let _registration = Registration::new(server, Arc::clone(&conn));

    let nonce: [u8; 24] = rand::thread_rng().r#gen();
    let server_info = seal_server_info(&server.secret, &key, &nonce, &ServerInfo::default())?;
    let mut out = BytesMut::new();
    server_info.encode(&mut out)?;
    write_frame(server, &mut wr, &out).await?;
    flush(server, &mut wr).await?;

    let mut reader = Reader {
        server,
        conn: &conn,
        not_here: TokenBucket::new(server.config.not_here_interval, server.config.not_here_burst),
    };
    tokio::select! {
        r = reader.run(&mut rd, &mut buf, &mut decoder) => r,
        w = write_loop(server, &conn, &mut wr) => w,
    }
}

/// ServerKey out, ClientInfo in, box opened, admission asked. Returns the client's node key.
async fn handshake<IO>(
    server: &DerpServer,
    rd: &mut ReadHalf<IO>,
    wr: &mut BufWriter<WriteHalf<IO>>,
    buf: &mut BytesMut,
    decoder: &mut FrameDecoder,
) -> Result<Key, DerpError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = server.config.handshake_timeout;
    let server_key = Message::ServerKey { key: server.public }.to_bytes()?;
    with_deadline(deadline, "writing ServerKey", async {
        wr.write_all(&server_key).await?;
        wr.flush().await?;
        Ok(())
    })
    .await?;

    let frame = with_deadline(deadline, "ClientInfo", read_frame(rd, buf, decoder)).await?;
    let frame = frame.ok_or(DerpError::ClosedDuringHandshake)?;
    let got = frame.frame_type;
    let Message::ClientInfo { key, nonce, sealed } = frame.parse()? else {
        return Err(DerpError::UnexpectedFrame { expected: FrameType::ClientInfo, got });
    };
    let info = open_client_info(&server.secret, &key, &nonce, &sealed)?;
    if info.mesh_key.is_some() {
        tracing::debug!(key = %hex::encode(key), "client sent a mesh key; mesh is not supported, treating it as an ordinary client");
    }
    if !server.admission.admit(&key) {
        inc(&server.stats.clients_refused);
        return Err(DerpError::AdmissionRefused { key });
    }
    Ok(key)
}

async fn with_deadline<T>(
    deadline: Duration,
    stage: &'static str,
    fut: impl Future<Output = Result<T, DerpError>>,
) -> Result<T, DerpError> {
    timeout(deadline, fut).await.unwrap_or(Err(DerpError::HandshakeTimeout { stage, timeout: deadline }))
}

/// Read until the decoder yields a frame; `None` at end of stream.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    decoder: &mut FrameDecoder,
) -> Result<Option<Frame>, DerpError> {
    loop {
        if let Some(frame) = decoder.decode(buf)? {
            return Ok(Some(frame));
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(
    server: &DerpServer,
    wr: &mut BufWriter<W>,
    frame: &[u8],
) -> Result<(), DerpError> {
    let limit = server.config.write_timeout;
    match timeout(limit, wr.write_all(frame)).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            inc(&server.stats.write_timeouts);
            Err(DerpError::WriteTimeout { timeout: limit })
        }
    }
}

async fn flush<W: AsyncWrite + Unpin>(server: &DerpServer, wr: &mut BufWriter<W>) -> Result<(), DerpError> {
    let limit = server.config.write_timeout;
    match timeout(limit, wr.flush()).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            inc(&server.stats.write_timeouts);
            Err(DerpError::WriteTimeout { timeout: limit })
        }
    }
}

/// Registers a connection for its lifetime; dropping it (on any exit, including cancellation)
/// unregisters and tells the key's past destinations it is gone.
struct Registration<'a> {
    server: &'a DerpServer,
    conn: Arc<ConnHandle>,
}

impl<'a> Registration<'a> {
    fn new(server: &'a DerpServer, conn: Arc<ConnHandle>) -> Self {
        server.registry().register(Arc::clone(&conn));
        inc(&server.stats.clients_accepted);
        inc(&server.stats.clients_connected);
        Self { server, conn }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let key = self.conn.key;
        let to_tell = self.server.registry().unregister(&key, self.conn.id);
        let discarded = self.conn.outbox.close() as u64;
        add(&self.server.stats.packets_dropped, discarded);
        dec(&self.server.stats.clients_connected);
        for peer in to_tell {
            peer.outbox.push_peer_gone(key, PeerGoneReason::Disconnected);
        }
    }
}

/// The read side of an admitted connection.
struct Reader<'a> {
    server: &'a DerpServer,
    conn: &'a Arc<ConnHandle>,
    not_here: TokenBucket,
}

impl Reader<'_> {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        buf: &mut BytesMut,
        decoder: &mut FrameDecoder,
    ) -> Result<(), DerpError> {
        while let Some(frame) = read_frame(rd, buf, decoder).await? {
            self.handle(frame)?;
        }
        Ok(())
    }

    fn handle(&mut self, frame: Frame) -> Result<(), DerpError> {
        match frame.frame_type {
            FrameType::SendPacket => {
                if let Message::SendPacket { dst, packet } = frame.parse()? {
                    self.route(dst, packet);
                }
            }
            FrameType::NotePreferred => {
                if let Message::NotePreferred { preferred } = frame.parse()? {
                    self.conn.preferred.store(preferred, Ordering::Relaxed);
                }
            }
            FrameType::Ping => {
                if let Message::Ping { data } = frame.parse()? {
                    self.conn.outbox.push_pong(data);
                }
            }
            frame_type @ (FrameType::ForwardPacket | FrameType::WatchConns | FrameType::ClosePeer) => {
                return Err(DerpError::MeshFrameForbidden { frame_type });
            }
            // Pong, KeepAlive and server-to-client types are ignored, as the Go server does.
            other => tracing::trace!(frame_type = %other, "ignoring frame"),
        }
        Ok(())
    }

    fn route(&mut self, dst: Key, packet: Bytes) {
        let stats = &self.server.stats;
        let src = self.conn.key;
        let target = {
            let mut registry = self.server.registry();
            let target = registry.active(&dst).cloned();
            if target.is_some() {
                registry.note_sent(src, dst);
            }
            target
        };
        let Some(target) = target else {
            inc(&stats.packets_dropped);
            inc(&stats.packets_dropped_unknown_dest);
            if self.not_here.allow(Instant::now().into_std()) {
                self.conn.outbox.push_peer_gone(dst, PeerGoneReason::NotHere);
            }
            return;
        };
        let disco = is_disco_packet(&packet);
        // The SendPacket body passed the decoder's limit, so the RecvPacket (same length) encodes.
        let Ok(frame) = (Message::RecvPacket { src, packet }).to_bytes() else {
            inc(&stats.packets_dropped);
            return;
        };
        match target.outbox.push_packet(frame, disco) {
            Pushed::Queued => inc(&stats.packets_forwarded),
            Pushed::DroppedOldest => {
                inc(&stats.packets_forwarded);
                inc(&stats.packets_dropped);
                inc(&stats.packets_dropped_queue_full);
            }
            Pushed::Closed => inc(&stats.packets_dropped),
        }
    }
}

fn keepalive_delay(server: &DerpServer) -> Duration {
    let cfg = &server.config;
    let jitter_ms = u64::try_from(cfg.keepalive_jitter.as_millis()).unwrap_or(u64::MAX);
    let jitter = if jitter_ms == 0 { 0 } else { rand::thread_rng().gen_range(0..=jitter_ms) };
    cfg.keepalive_interval + Duration::from_millis(jitter)
}

/// Drain the outbox to the client, flushing when it runs dry, with keep-alives in between.
async fn write_loop<W: AsyncWrite + Unpin>(
    server: &DerpServer,
    conn: &ConnHandle,
    wr: &mut BufWriter<W>,
) -> Result<(), DerpError> {
    let keepalive = tokio::time::sleep(keepalive_delay(server));
    tokio::pin!(keepalive);
    let mut scratch = BytesMut::new();
    loop {
        while let Some(item) = conn.outbox.pop() {
            let bytes: &[u8] = match &item {
                Outgoing::Frame(frame) => frame,
                Outgoing::Pong(data) => {
                    scratch.clear();
                    Message::Pong { data: *data }.encode(&mut scratch)?;
                    &scratch
                }
                Outgoing::PeerGone(key, reason) => {
                    scratch.clear();
                    Message::PeerGone { key: *key, reason: *reason }.encode(&mut scratch)?;
                    &scratch
                }
            };
            write_frame(server, wr, bytes).await?;
        }
        flush(server, wr).await?;
        tokio::select! {
            () = conn.outbox.notified() => {}
            () = &mut keepalive => {
                scratch.clear();
                Message::KeepAlive.encode(&mut scratch)?;
                write_frame(server, wr, &scratch).await?;
                keepalive.as_mut().reset(Instant::now() + keepalive_delay(server));
            }
        }
    }
}
