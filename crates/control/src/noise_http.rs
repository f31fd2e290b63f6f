//! The control endpoints clients reach over plain HTTP(S): `GET /key` and the `/ts2021` upgrade, and the HTTP/2
//! service that runs inside the Noise channel (`/machine/register`, `/machine/map`, …).

use crate::Control;
use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use bytes::BytesMut;
use futures_util::FutureExt;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tailwarden_noise::{Initiation, NoiseStream, accept, early_payload};
use tailwarden_wire::{ChallengeKey, MachineKey, MapRequest, RegisterRequest, from_go_json};
use tokio::io::AsyncWriteExt;

/// Request bodies on the Noise channel are small JSON documents; Headscale caps them at 1 MiB too. Larger ones are
/// answered 413 by the HTTP/2 layer before any handler runs.
const MAX_BODY: usize = 1 << 20;
const UPGRADE_PROTOCOL: &str = "tailscale-control-protocol";

/// Routes for `/key` and `/ts2021`, to be merged into the public listener's router.
pub fn routes(control: Arc<Control>) -> Router {
    let machine_routes = machine_routes(control.clone());
    Router::new()
        .route("/key", get(server_key))
        .route("/ts2021", any(ts2021))
        .with_state(NoiseState { control, machine_routes })
}

/// What the `/ts2021` handlers share: the control core, and the routes of requests inside Noise connections. Those are
/// built once, not per connection, where each idle connection held a route table of its own.
#[derive(Clone)]
struct NoiseState {
    control: Arc<Control>,
    machine_routes: Router,
}

impl axum::extract::FromRef<NoiseState> for Arc<Control> {
    fn from_ref(state: &NoiseState) -> Arc<Control> {
        state.control.clone()
    }
}

/// Requests a client makes inside its Noise connection; each carries the connection's [`NoiseConn`] extension.
fn machine_routes(control: Arc<Control>) -> Router {
    Router::new()
        .route("/machine/register", post(machine_register))
        .route("/machine/map", post(machine_map))
        .route("/machine/update-health", post(|| async { StatusCode::OK }))
        .fallback(|| async { (StatusCode::NOT_IMPLEMENTED, "not implemented") })
        .with_state(control)
}

async fn server_key(State(control): State<Arc<Control>>) -> Response {
    // The legacy (pre-Noise) key is unused by current clients but tailscale-rs requires the field.
    Json(serde_json::json!({
        "legacyPublicKey": MachineKey::default().to_string(),
        "publicKey": control.server_keys().noise_public_text(),
    }))
    .into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, message.into()).into_response()
}

async fn ts2021(State(NoiseState { control, machine_routes }): State<NoiseState>, mut req: Request) -> Response {
    let upgrade = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if upgrade.eq_ignore_ascii_case("websocket") {
        return ts2021_websocket(control, machine_routes, req);
    }
    if !upgrade.eq_ignore_ascii_case(UPGRADE_PROTOCOL) {
        return bad_request(format!("/ts2021 needs \"Upgrade: {UPGRADE_PROTOCOL}\" (is a proxy stripping it?)"));
    }
    let Some(init_header) = req.headers().get("X-Tailscale-Handshake").and_then(|v| v.to_str().ok()) else {
        return bad_request("missing X-Tailscale-Handshake header");
    };
    let init = match Initiation::from_header(init_header) {
        Ok(i) => i,
        Err(e) => return bad_request(e.to_string()),
    };
    let accepted = match accept(&init, &control.server_keys().noise_pair()) {
        Ok(a) => a,
        Err(e) => return bad_request(e.to_string()),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let conn = NoiseConn { machine: accepted.machine_key };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "ts2021 upgrade failed");
                return;
            }
        };
        let mut io = TokioIo::new(upgraded);
        if let Err(e) = io.write_all(&accepted.response).await {
            tracing::debug!(error = %e, "writing Noise response failed");
            return;
        }
        let mut stream = NoiseStream::new(io, accepted.codec, BytesMut::new());
        // The challenge is a fresh public key per connection that clients may answer to prove possession of their
        // node key. Nothing here asks for that proof, so no private half is kept: random bytes (every 32-byte string
        // is an X25519 public key) avoid a scalar multiplication per connection.
        if stream.queue(&early_payload(ChallengeKey(rand::random()))).is_err() {
            return;
        }
        spawn_noise_connection(machine_routes, conn, stream);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL))
        .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The WebSocket variant used by browser (js/wasm) clients: the initiation comes in the query string, the
/// subprotocol must be `tailscale-control-protocol`, and the Noise records travel in binary messages. As in
/// Tailscale's own server, no early payload is sent on this path.
fn ts2021_websocket(control: Arc<Control>, machine_routes: Router, mut req: Request) -> Response {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let headers = req.headers();
    let offers_protocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == UPGRADE_PROTOCOL);
    if !offers_protocol {
        return bad_request(format!("WebSocket /ts2021 needs subprotocol {UPGRADE_PROTOCOL}"));
    }
    let Some(ws_key) = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.as_bytes())) else {
        return bad_request("missing Sec-WebSocket-Key");
    };
    let query = axum::extract::Query::<std::collections::BTreeMap<String, String>>::try_from_uri(req.uri());
    let Some(init_b64) = query.ok().and_then(|q| q.0.get("X-Tailscale-Handshake").cloned()) else {
        return bad_request("missing X-Tailscale-Handshake query parameter");
    };
    let accepted =
        match Initiation::from_header(&init_b64).and_then(|i| accept(&i, &control.server_keys().noise_pair())) {
            Ok(a) => a,
            Err(e) => return bad_request(e.to_string()),
        };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let conn = NoiseConn { machine: accepted.machine_key };
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let mut io = tailwarden_derp::http::WebSocketByteStream::new(ws);
        if io.write_all(&accepted.response).await.is_err() || io.flush().await.is_err() {
            return;
        }
        spawn_noise_connection(machine_routes, conn, NoiseStream::new(io, accepted.codec, BytesMut::new()));
    });
    let accept_value = HeaderValue::from_str(&ws_key).unwrap_or_else(|_| HeaderValue::from_static(""));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(header::CONNECTION, HeaderValue::from_static("Upgrade"))
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_value)
        .header(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(UPGRADE_PROTOCOL))
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Identity of a Noise connection, attached to every request on it.
#[derive(Clone, Copy, Debug)]
struct NoiseConn {
    machine: MachineKey,
}

/// Serves the HTTP/2 requests of one Noise connection, as a task of its own: the task that upgraded the connection
/// ends, so what stays for the connection's lifetime is the HTTP/2 state and nothing of the upgrade.
fn spawn_noise_connection<IO>(machine_routes: Router, conn: NoiseConn, stream: NoiseStream<IO>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // `Layer::layer` wraps the shared routes; `Router::layer` would rebuild them for this connection.
    let service = tower::Layer::layer(&Extension(conn), machine_routes);
    let limits = tailwarden_http2::Limits { max_body: MAX_BODY, ..Default::default() };
    // A combinator, not an `async` block: awaiting inside one would hold the connection's state twice.
    tokio::spawn(tailwarden_http2::serve(stream, service, limits).map(move |result| {
        if let Err(e) = result {
            tracing::debug!(machine = %conn.machine, error = %e, "Noise connection ended");
        }
    }));
}

/// Reads and decodes a JSON request body (keys matched case-insensitively, as Go clients expect).
async fn decode<T: serde::de::DeserializeOwned>(req: Request, message: &'static str) -> Result<T, Response> {
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "request body too large or unreadable").into_response())?;
    from_go_json(message, &body).map_err(|e| bad_request(e.to_string()))
}

async fn machine_register(
    State(control): State<Arc<Control>>,
    Extension(conn): Extension<NoiseConn>,
    req: Request,
) -> Response {
    match decode::<RegisterRequest>(req, "RegisterRequest").await {
        Ok(request) => Json(control.register(conn.machine, request).await).into_response(),
        Err(response) => response,
    }
}

async fn machine_map(
    State(control): State<Arc<Control>>,
    Extension(conn): Extension<NoiseConn>,
    req: Request,
) -> Response {
    match decode::<MapRequest>(req, "MapRequest").await {
        Ok(request) => control.map(conn.machine, request).await,
        Err(response) => response,
    }
}
