//! The HTTP-01 responder on `tls_letsencrypt_listen`: answers the CA at `/.well-known/acme-challenge/<token>` and,
//! like Headscale, sends every other request to the HTTPS server.

use axum::Router;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Key authorizations of the challenges in flight, by token.
#[derive(Clone, Default)]
pub struct Challenges(Arc<Mutex<BTreeMap<String, String>>>);

impl Challenges {
    pub fn insert(&self, token: String, key_authorization: String) {
        self.lock().insert(token, key_authorization);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn get(&self, token: &str) -> Option<String> {
        self.lock().get(token).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // The map is only inserted into or cleared, so a panic elsewhere cannot leave it inconsistent.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub fn router(challenges: Challenges, https_base: String) -> Router {
    Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            get(move |Path(token): Path<String>| async move {
                match challenges.get(&token) {
                    Some(key_authorization) => {
                        ([(http::header::CONTENT_TYPE, "application/octet-stream")], key_authorization).into_response()
                    }
                    None => http::StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .fallback(move |req: Request| async move { redirect(&https_base, &req) })
}

fn redirect(https_base: &str, req: &Request) -> Response {
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Redirect::permanent(&format!("{https_base}{path}")).into_response()
}
