//! `/machine/map`: lite endpoint updates, one-shot maps, and streaming map sessions.

use crate::render::now_ms;
use crate::tailnet::{SessionReceiver, Tailnet};
use crate::{Control, ControlError};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tailwarden_store::NodeSessionUpdate;
use tailwarden_wire::framing::{Compression, encode_message};
use tailwarden_wire::{MIN_CAPABILITY_VERSION, MachineKey, MapRequest, MapResponse};
use tokio::time::{Instant, Sleep, sleep_until};

impl Control {
    /// Handles one map request from the machine authenticated by the Noise channel.
    pub async fn map(self: &Arc<Self>, machine: MachineKey, req: MapRequest) -> Response {
        if req.version < MIN_CAPABILITY_VERSION {
            let e = ControlError::ClientTooOld { version: req.version, min: MIN_CAPABILITY_VERSION };
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
        let Some((tailnet, node)) = self.find_node(&req.node_key).filter(|(_, n)| n.machine_key == machine) else {
            let e = ControlError::UnknownNode { node_key: req.node_key.to_string() };
            return (StatusCode::NOT_FOUND, e.to_string()).into_response();
        };
        let id = node.record.id;
        let hostinfo_json = req.hostinfo.as_ref().and_then(|h| serde_json::to_string(h).ok());
        let changed = tailnet.apply_client_update(
            id,
            req.disco_key,
            req.endpoints.clone(),
            req.hostinfo.clone(),
            req.version,
            &self.settings,
        );
        if changed {
            let update = NodeSessionUpdate {
                disco_key: (!req.disco_key.is_zero()).then(|| req.disco_key.to_string()),
                hostinfo: hostinfo_json,
                endpoints: req.endpoints.clone(),
                last_seen_ms: Some(now_ms()),
            };
            self.session_writes.queue(tailnet.tenant, id, update);
        }
        let compression = if req.wants_zstd() { Compression::Zstd } else { Compression::None };
        if !req.stream {
            if req.omit_peers {
                // Lite update: tailscale-rs requires a 2xx here; the body is ignored.
                return StatusCode::OK.into_response();
            }
            return match tailnet.full_map(id, &self.settings).map(|m| m.encode(compression)) {
                Some(Ok(frame)) => (StatusCode::OK, frame).into_response(),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "could not build map").into_response(),
            };
        }
        let Some((session, first)) = tailnet.open_session(id, compression, &self.settings) else {
            return (StatusCode::NOT_FOUND, "node was deleted").into_response();
        };
        let first = match first.encode(compression) {
            Ok(f) => Bytes::from(f),
            Err(e) => {
                tailnet.close_session(id, session.id, &self.settings);
                return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
        };
        let interval = self.settings.keep_alive_interval;
        let stream = MapStream {
            control: self.clone(),
            tailnet,
            node: id,
            compression,
            session,
            first: Some(first),
            keep_alive: req.keep_alive.then(|| Box::pin(sleep_until(next_keep_alive(interval)))),
        };
        let body = futures_util::stream::unfold(stream, |mut stream| async move {
            let frame = stream.next_frame().await?;
            Some((Ok::<_, Infallible>(frame), stream))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

/// One streaming map session, polled directly as the HTTP/2 response body (no task or channel of its own between
/// the tailnet's queue and the connection): the first map, then queued deltas, a fresh full map after falling
/// behind, and keep-alives. Dropping it (the client went away, or hyper finished the response) closes the session.
struct MapStream {
    control: Arc<Control>,
    tailnet: Arc<Tailnet>,
    node: tailwarden_types::NodeId,
    compression: Compression,
    session: SessionReceiver,
    first: Option<Bytes>,
    /// Fires every keep-alive interval whatever else was sent: cheaper than re-arming a timer per message, and a
    /// client only needs to hear something within its watchdog period.
    keep_alive: Option<Pin<Box<Sleep>>>,
}

impl MapStream {
    /// The next message for the client; `None` ends the stream (a newer session replaced this one, or the node
    /// was deleted).
    async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            if self.session.queue.take_lagged() {
                let map = self.tailnet.full_map(self.node, &self.control.settings)?;
                return map.encode(self.compression).ok().map(Bytes::from);
            }
            let MapStream { session, keep_alive, .. } = self;
            let keep_alive_due = async {
                match keep_alive {
                    Some(timer) => timer.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = session.queue.recv() => return frame,
                _ = keep_alive_due => {
                    let interval = self.control.settings.keep_alive_interval;
                    if let Some(timer) = self.keep_alive.as_mut() {
                        timer.as_mut().reset(next_keep_alive(interval));
                    }
                    if let Some(frame) = keep_alive_frame(self.compression) {
                        return Some(frame);
                    }
                }
            }
        }
    }
}

impl Drop for MapStream {
    fn drop(&mut self) {
        if let Some(seen) = self.tailnet.close_session(self.node, self.session.id, &self.control.settings) {
            let update = NodeSessionUpdate { last_seen_ms: Some(seen), ..Default::default() };
            self.control.session_writes.queue(self.tailnet.tenant, self.node, update);
        }
    }
}

/// The keep-alive message in `compression`, encoded once per process rather than per session.
fn keep_alive_frame(compression: Compression) -> Option<Bytes> {
    static FRAMES: std::sync::OnceLock<[Option<Bytes>; 2]> = std::sync::OnceLock::new();
    let frames = FRAMES.get_or_init(|| {
        [Compression::None, Compression::Zstd]
            .map(|c| encode_message(&MapResponse::keep_alive(), c).map(Bytes::from).ok())
    });
    frames[usize::from(compression == Compression::Zstd)].clone()
}

/// When the next keep-alive is due: `interval` from now plus up to a fifth of it (at most 9 s) of jitter, so sessions
/// opened together spread out, rounded up to a grid of a tenth of the interval (at most 250 ms). The grid lets the
/// timer fire many sessions' keep-alives per wake-up: at 100k sessions and a 50 s interval that is ~500 per 250 ms
/// tick instead of ~2 wake-ups of the runtime every millisecond.
fn next_keep_alive(interval: Duration) -> Instant {
    use rand::Rng;
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..=interval.as_millis().min(9000) as u64 / 5));
    let since = (Instant::now() + interval + jitter).duration_since(epoch).as_nanos();
    let grid = (interval / 10).min(Duration::from_millis(250)).as_nanos().max(1);
    epoch + Duration::from_nanos(u64::try_from(since.div_ceil(grid) * grid).unwrap_or(u64::MAX))
}
