//! Framework-agnostic HTTP entry points of the DERP listener.
//!
//! The handlers take an [`::http::Request`] with any body type and return an
//! [`::http::Response`] with a [`Full`] body, so an axum (or bare hyper) router can call them and
//! convert the response with `response.map(axum::body::Body::new)`. The upgrade handler needs the
//! request to carry hyper's upgrade extension, which hyper (and therefore axum) adds when the
//! HTTP/1.1 connection is served `with_upgrades()`.
//!
//! | Path | Handler |
//! | --- | --- |
//! | `/derp` | [`handle_derp_upgrade`]: `Upgrade: DERP` (GET from Go, POST from tailscale-rs) or WebSocket with subprotocol `derp` |
//! | `/derp/probe`, `/derp/latency-check` | [`probe_response`] |
//! | `/generate_204` | [`generate_204`] |

mod websocket;

pub use websocket::WebSocketByteStream;

use std::sync::Arc;

use ::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ::http::{Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::DerpServer;
use crate::frame::{HEADER_LEN, MAX_FRAME_LEN};

/// The response type of every handler here.
pub type DerpResponse = Response<Full<Bytes>>;

/// Body of the 426 answer to a `/derp` request without a usable `Upgrade`.
pub const UPGRADE_REQUIRED_BODY: &str = "DERP requires connection upgrade";

/// `Cache-Control` of `/generate_204`, as Go's derper sends it.
pub const GENERATE_204_CACHE_CONTROL: &str = "no-cache, no-store, must-revalidate, no-transform, max-age=0";

const DERP_VERSION: HeaderName = HeaderName::from_static("derp-version");
const DERP_PUBLIC_KEY: HeaderName = HeaderName::from_static("derp-public-key");
const X_TAILSCALE_CHALLENGE: HeaderName = HeaderName::from_static("x-tailscale-challenge");
const X_TAILSCALE_RESPONSE: HeaderName = HeaderName::from_static("x-tailscale-response");

/// Longest challenge echoed by [`generate_204`].
const MAX_CHALLENGE_LEN: usize = 64;

fn response(status: StatusCode, body: &'static str) -> DerpResponse {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    resp
}

/// Comma-separated tokens of every instance of header `name`, trimmed.
fn header_tokens<'a>(headers: &'a HeaderMap, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    header_tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// Answer a `/derp` request: switch protocols and hand the connection to `server`.
///
/// - `Upgrade: DERP` (any case, any method): 101 with `Upgrade: DERP`, `Connection: Upgrade`,
///   `Derp-Version: 2` and `Derp-Public-Key`, then DERP on the raw connection.
/// - `Upgrade: websocket` with `Sec-WebSocket-Protocol` listing `derp`: 101 WebSocket handshake
///   (subprotocol `derp`), then DERP carried in binary messages. Without the `derp` subprotocol
///   the request is treated as raw DERP, as Go does for very old clients.
/// - Anything else: 426 with [`UPGRADE_REQUIRED_BODY`].
///
/// The connection is served on a spawned tokio task once hyper completes the upgrade; called
/// outside a tokio runtime this answers 500 instead of panicking.
pub fn handle_derp_upgrade<B>(server: Arc<DerpServer>, mut req: Request<B>) -> DerpResponse {
    let headers = req.headers();
    let derp = has_token(headers, &header::UPGRADE, "derp");
    let websocket = has_token(headers, &header::UPGRADE, "websocket");
    if !derp && !websocket {
        return response(StatusCode::UPGRADE_REQUIRED, UPGRADE_REQUIRED_BODY);
    }
    let ws_derp = !derp && has_token(headers, &header::SEC_WEBSOCKET_PROTOCOL, "derp");
    let ws_key = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec());
    if ws_derp && ws_key.is_none() {
        return response(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return response(StatusCode::INTERNAL_SERVER_ERROR, "no async runtime");
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);

    let mut resp = response(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match (ws_derp, ws_key) {
        (true, Some(key)) => {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("derp"));
            if let Ok(accept) = HeaderValue::try_from(derive_accept_key(&key)) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            }
            runtime.spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        // One DERP frame plus WebSocket slack per message.
                        let max = MAX_FRAME_LEN as usize + HEADER_LEN;
                        let config = WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max));
                        let ws =
                            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                        server.serve_connection(WebSocketByteStream::new(ws)).await;
                    }
                    Err(error) => tracing::debug!(%error, "DERP WebSocket upgrade failed"),
                }
            });
        }
        _ => {
            h.insert(header::UPGRADE, HeaderValue::from_static("DERP"));
            h.insert(DERP_VERSION, HeaderValue::from_static("2"));
            if let Ok(key) = HeaderValue::try_from(server.public_key_hex()) {
                h.insert(DERP_PUBLIC_KEY, key);
            }
            runtime.spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => server.serve_connection(TokioIo::new(upgraded)).await,
                    Err(error) => tracing::debug!(%error, "DERP upgrade failed"),
                }
            });
        }
    }
    resp
}

/// Answer `/derp/probe` and `/derp/latency-check`: 200 with an empty body and
/// `Access-Control-Allow-Origin: *` for HEAD and GET, 405 otherwise.
pub fn probe_response(method: &Method) -> DerpResponse {
    if method == Method::GET || method == Method::HEAD {
        let mut resp = response(StatusCode::OK, "");
        resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        resp
    } else {
        let mut resp = response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        resp
    }
}

fn valid_challenge(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_CHALLENGE_LEN
        && c.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Answer `/generate_204` (captive-portal check): 204 with the no-cache `Cache-Control`, echoing
/// a well-formed `X-Tailscale-Challenge` as `X-Tailscale-Response: response <challenge>`.
pub fn generate_204<B>(req: &Request<B>) -> DerpResponse {
    let mut resp = response(StatusCode::NO_CONTENT, "");
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(GENERATE_204_CACHE_CONTROL));
    let challenge = req.headers().get(X_TAILSCALE_CHALLENGE).and_then(|v| v.to_str().ok());
    if let Some(challenge) = challenge.filter(|c| valid_challenge(c))
        && let Ok(v) = HeaderValue::try_from(format!("response {challenge}"))
    {
        h.insert(X_TAILSCALE_RESPONSE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AdmitAll;

    fn server() -> Arc<DerpServer> {
        Arc::new(DerpServer::new([7; 32], Arc::new(AdmitAll)))
    }

    fn req(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/derp");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[tokio::test]
    async fn derp_upgrade_headers_for_get_and_post_any_case() {
        let s = server();
        for (method, up) in [(Method::GET, "DERP"), (Method::POST, "derp"), (Method::POST, "Derp")] {
            let resp = handle_derp_upgrade(s.clone(), req(method, &[("Upgrade", up), ("Connection", "Upgrade")]));
            assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
            let h = resp.headers();
            assert_eq!(h["upgrade"], "DERP");
            assert_eq!(h["connection"], "Upgrade");
            assert_eq!(h["derp-version"], "2");
            assert_eq!(h["derp-public-key"], s.public_key_hex().as_str());
            assert_eq!(h["derp-public-key"].len(), 64);
        }
    }

    #[tokio::test]
    async fn websocket_upgrade_handshake_headers() {
        // RFC 6455 section 1.3 example key and accept value.
        let resp = handle_derp_upgrade(
            server(),
            req(
                Method::GET,
                &[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"),
                    ("Sec-WebSocket-Protocol", "chat, derp"),
                ],
            ),
        );
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = resp.headers();
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(h["sec-websocket-protocol"], "derp");
        assert!(h.get("derp-version").is_none());
    }

    #[tokio::test]
    async fn websocket_without_key_is_bad_request() {
        let resp = handle_derp_upgrade(
            server(),
            req(Method::GET, &[("Upgrade", "websocket"), ("Sec-WebSocket-Protocol", "derp")]),
        );
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn websocket_upgrade_without_derp_subprotocol_is_raw_derp() {
        let resp = handle_derp_upgrade(server(), req(Method::GET, &[("Upgrade", "WebSocket")]));
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()["upgrade"], "DERP");
    }

    #[tokio::test]
    async fn no_or_other_upgrade_is_426() {
        for headers in [&[][..], &[("Upgrade", "h2c")][..]] {
            let resp = handle_derp_upgrade(server(), req(Method::GET, headers));
            assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            assert_eq!(&body[..], UPGRADE_REQUIRED_BODY.as_bytes());
        }
    }

    #[test]
    fn outside_a_runtime_answers_500_without_panicking() {
        let resp = handle_derp_upgrade(server(), req(Method::GET, &[("Upgrade", "DERP")]));
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn probe_methods() {
        for m in [Method::GET, Method::HEAD] {
            let resp = probe_response(&m);
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["access-control-allow-origin"], "*");
        }
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert_eq!(probe_response(&m).status(), StatusCode::METHOD_NOT_ALLOWED);
        }
    }

    #[test]
    fn generate_204_echoes_valid_challenges_only() {
        let plain = generate_204(&Request::new(()));
        assert_eq!(plain.status(), StatusCode::NO_CONTENT);
        assert_eq!(plain.headers()["cache-control"], GENERATE_204_CACHE_CONTROL);
        assert!(plain.headers().get("x-tailscale-response").is_none());

        let with = |c: &str| {
            let r = Request::builder().header("X-Tailscale-Challenge", c).body(()).unwrap();
            generate_204(&r).headers().get("x-tailscale-response").cloned()
        };
        assert_eq!(with("abc.DEF_1:2-3").unwrap(), "response abc.DEF_1:2-3");
        assert_eq!(with(&"a".repeat(64)).unwrap(), format!("response {}", "a".repeat(64)).as_str());
        assert!(with(&"a".repeat(65)).is_none());
        assert!(with("has space").is_none());
        assert!(with("semi;colon").is_none());
        assert!(with("").is_none());
    }
}
