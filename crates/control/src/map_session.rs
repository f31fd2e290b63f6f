//! `/machine/map`: lite endpoint updates, one-shot maps, and streaming map sessions.

use crate::render::now_ms;
use crate::tailnet::{SessionReceiver, Tailnet};
use crate::{Control, ControlError};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tailwarden_store::NodeSessionUpdate;
use tailwarden_wire::framing::{Compression, encode_message};
use tailwarden_wire::{MIN_CAPABILITY_VERSION, MachineKey, MapRequest, MapResponse};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

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
            if let Err(e) = self.store.tenant(tailnet.tenant).update_node_session(id, update).await {
                tracing::warn!(node = %id, error = %e, "persisting map request update failed");
            }
        }
        let compression = if req.wants_zstd() { Compression::Zstd } else { Compression::None };
        if !req.stream {
            if req.omit_peers {
                // Lite update: tailscale-rs requires a 2xx here; the body is ignored.
                return StatusCode::OK.into_response();
            }
            return match tailnet.full_map(id, &self.settings).map(|m| encode_message(&m, compression)) {
                Some(Ok(frame)) => (StatusCode::OK, frame).into_response(),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "could not build map").into_response(),
            };
        }
        let Some((session, first)) = tailnet.open_session(id, compression, &self.settings) else {
            return (StatusCode::NOT_FOUND, "node was deleted").into_response();
        };
        let first = match encode_message(&first, compression) {
            Ok(f) => Bytes::from(f),
            Err(e) => {
                tailnet.close_session(id, session.id, &self.settings);
                return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
        };
        let (body_tx, body_rx) = mpsc::channel::<Bytes>(8);
        let control = self.clone();
        tokio::spawn(async move {
            let stream = MapStream { control: &control, tailnet: &tailnet, node: id, compression, keep_alive: req.keep_alive };
            stream.run(session, first, body_tx).await;
        });
        let body = futures_util::stream::unfold(body_rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok::<_, Infallible>(chunk), rx))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

/// One streaming map session: forwards queued deltas to the HTTP/2 body and sends keep-alives.
struct MapStream<'a> {
    control: &'a Arc<Control>,
    tailnet: &'a Arc<Tailnet>,
    node: tailwarden_types::NodeId,
    compression: Compression,
    keep_alive: bool,
}

impl MapStream<'_> {
    async fn run(&self, mut session: SessionReceiver, first: Bytes, body: mpsc::Sender<Bytes>) {
        let interval = self.control.settings.keep_alive_interval;
        let keep_alive_frame = encode_message(&MapResponse::keep_alive(), self.compression).map(Bytes::from).ok();
        let mut next_keep_alive = Instant::now() + jittered(interval);
        let mut out = Some(first);
        loop {
            if let Some(frame) = out.take() {
                if body.send(frame).await.is_err() {
                    break;
                }
                next_keep_alive = Instant::now() + jittered(interval);
            }
            if session.lagged.swap(false, Ordering::Relaxed) {
                while session.rx.try_recv().is_ok() {}
                match self.tailnet.full_map(self.node, &self.control.settings) {
                    Some(map) => out = encode_message(&map, self.compression).ok().map(Bytes::from),
                    None => break,
                }
                continue;
            }
            tokio::select! {
                _ = body.closed() => break,
                frame = session.rx.recv() => match frame {
                    Some(frame) => out = Some(frame),
                    // A newer session for this node replaced us, or the node was deleted.
                    None => break,
                },
                _ = session.wake.notified() => {}
                _ = sleep_until(next_keep_alive), if self.keep_alive => out = keep_alive_frame.clone(),
            }
        }
        if let Some(seen) = self.tailnet.close_session(self.node, session.id, &self.control.settings)
            && let Err(e) = self.control.store.tenant(self.tailnet.tenant).set_last_seen(self.node, seen).await
        {
            tracing::warn!(node = %self.node, error = %e, "recording last-seen failed");
        }
    }
}

/// Spreads keep-alives so thousands of sessions opened together don't all fire at once.
fn jittered(base: std::time::Duration) -> std::time::Duration {
    use rand::Rng;
    base + std::time::Duration::from_millis(rand::thread_rng().gen_range(0..=base.as_millis().min(9000) as u64 / 5))
}
