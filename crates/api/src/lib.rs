//! The management REST API under `/api/v1`, with Headscale's paths and JSON field names so existing scripts and
//! tools keep working.
//!
//! Two entry points build the same routes: [`routes`] for the admin unix socket, where the socket's file
//! permissions are the access control, and [`authenticated_routes`] for the public listener, where every request
//! must carry `Authorization: Bearer <api key>`. The CLI talks to either. `docs/api.md` lists the routes and the
//! legacy (`/api/v1/machine…`) aliases; `openapi.json` describes them.
#![deny(missing_docs)]

mod debug;
mod json;
mod keys;
mod nodes;
mod policy;
mod users;

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http::StatusCode;
use std::sync::Arc;
use tailwarden_control::{Control, ControlError};
use tailwarden_store::StoreError;
use tailwarden_types::{TenantId, UserId};

/// The OpenAPI 3 description of every route, served at `/api/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// The API routes without authentication, scoped to `tenant` (the default tenant on a single-tenant install).
/// Serve them only where the transport itself restricts access (the admin unix socket).
pub fn routes(control: Arc<Control>, tenant: TenantId) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .merge(api_router().with_state(ApiState { control, tenant }))
}

/// The API routes for a network listener: each request needs a valid, unexpired API key as a bearer token and
/// acts on the key's tenant. A missing, malformed, unknown or expired key gets `401` with a JSON error.
/// The OpenAPI document stays readable without a key.
pub fn authenticated_routes(control: Arc<Control>) -> Router {
    let guarded = api_router()
        .route_layer(axum::middleware::from_fn_with_state(control.clone(), require_api_key))
        .with_state(ApiState { control, tenant: TenantId::DEFAULT });
    Router::new().route("/api/v1/openapi.json", get(openapi)).merge(guarded)
}

fn api_router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/policy", get(policy::get).put(policy::set))
        .route("/api/v1/policy/check", post(policy::check))
        .route("/api/v1/debug/node/{id}", get(debug::node))
        .route("/api/v1/debug/reach", get(debug::reach))
        .route("/api/v1/user", post(users::create).get(users::list))
        .route("/api/v1/user/{id}", delete(users::destroy))
        .route("/api/v1/user/{id}/rename/{new_name}", post(users::rename))
        .route(
            "/api/v1/preauthkey",
            post(keys::create_pre_auth_key).get(keys::list_pre_auth_keys).delete(keys::delete_pre_auth_key),
        )
        .route("/api/v1/preauthkey/expire", post(keys::expire_pre_auth_key))
        .route("/api/v1/apikey", post(keys::create_api_key).get(keys::list_api_keys))
        .route("/api/v1/apikey/expire", post(keys::expire_api_key))
        .route("/api/v1/apikey/{prefix}", delete(keys::delete_api_key))
        .route("/api/v1/node", get(nodes::list))
        .route("/api/v1/node/register", post(nodes::register))
        .route("/api/v1/node/{id}", get(nodes::get).delete(nodes::delete))
        .route("/api/v1/node/{id}/expire", post(nodes::expire))
        .route("/api/v1/node/{id}/rename/{name}", post(nodes::rename))
        .route("/api/v1/node/{id}/tags", post(nodes::set_tags))
        .route("/api/v1/node/{id}/approve_routes", post(nodes::approve_routes))
        // Headscale ≤ 0.22 called nodes machines; the same handlers answer with `machine`/`machines` keys.
        .route("/api/v1/machine", get(nodes::list))
        .route("/api/v1/machine/{id}", get(nodes::get).delete(nodes::delete))
        .route("/api/v1/machine/{id}/expire", post(nodes::expire))
        .route("/api/v1/machine/{id}/rename/{name}", post(nodes::rename))
        .route("/api/v1/machine/{id}/tags", post(nodes::set_tags))
}

#[derive(Clone)]
struct ApiState {
    control: Arc<Control>,
    tenant: TenantId,
}

/// The tenant an authenticated request acts on, set by [`require_api_key`].
#[derive(Clone, Copy)]
struct AuthenticatedTenant(TenantId);

/// What every handler works with: the control core and the tenant of this request.
struct Api {
    control: Arc<Control>,
    tenant: TenantId,
}

impl FromRequestParts<ApiState> for Api {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let tenant = parts.extensions.get::<AuthenticatedTenant>().map_or(state.tenant, |t| t.0);
        Ok(Api { control: state.control.clone(), tenant })
    }
}

async fn require_api_key(State(control): State<Arc<Control>>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let Some(token) = token else {
        return unauthorized("an API key is required: send Authorization: Bearer <key>").into_response();
    };
    match control.authenticate_api_key(&token).await {
        Ok(Some(tenant)) => {
            req.extensions_mut().insert(AuthenticatedTenant(tenant));
            next.run(req).await
        }
        Ok(None) => unauthorized("invalid, unknown or expired API key").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `axum`'s query extractor with its rejections turned into JSON errors.
struct Query<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(Query(q.0)),
            Err(e) => Err(bad_request(e.body_text())),
        }
    }
}

/// `axum`'s path extractor with its rejections turned into JSON errors.
struct Path<T>(T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Path(p.0)),
            Err(e) => Err(bad_request(e.body_text())),
        }
    }
}

/// An error as JSON, in the shape Headscale's gateway uses (`code`, `message`, `details`).
struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // gRPC status codes, as Headscale's gateway reports them.
        let code = match self.status {
            StatusCode::NOT_FOUND => 5,
            StatusCode::CONFLICT => 6,
            StatusCode::UNAUTHORIZED => 16,
            StatusCode::BAD_REQUEST => 3,
            StatusCode::SERVICE_UNAVAILABLE => 14,
            _ => 13,
        };
        (self.status, Json(serde_json::json!({ "code": code, "message": self.message, "details": [] }))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, message: message.into() }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::UNAUTHORIZED, message: message.into() }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::Invalid { .. } | ControlError::ClientTooOld { .. } | ControlError::Policy(_) => {
                StatusCode::BAD_REQUEST
            }
            ControlError::PolicyInFile { .. } => StatusCode::CONFLICT,
            ControlError::UnknownNode { .. } | ControlError::UnknownRegistration { .. } => StatusCode::NOT_FOUND,
            ControlError::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            ControlError::Store(StoreError::Conflict { .. }) | ControlError::Store(StoreError::UserHasNodes { .. }) => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "API request failed");
        }
        ApiError { status, message: e.to_string() }
    }
}

type ApiResult = Result<Response, ApiError>;

/// Decodes a JSON body; an empty body decodes as `{}` so requests whose fields are all optional may omit it.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid request body: {e}")))
}

/// Resolves Headscale's user reference, which is a numeric id in current versions and a name in older ones.
async fn resolve_user(api: &Api, user: &str) -> Result<UserId, ApiError> {
    let users = api.control.list_users(api.tenant).await?;
    if let Ok(id) = user.parse::<i64>()
        && users.iter().any(|u| u.id.0 == id)
    {
        return Ok(UserId(id));
    }
    users.iter().find(|u| u.name == user).map(|u| u.id).ok_or_else(|| not_found(format!("user {user:?} not found")))
}

/// Parses an optional RFC 3339 time field.
fn parse_time(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    match value.filter(|e| !e.is_empty()) {
        Some(e) => json::parse_time_ms(e)
            .map(Some)
            .ok_or_else(|| bad_request(format!("{field} {e:?} is not an RFC 3339 time"))),
        None => Ok(None),
    }
}

async fn health(api: Api) -> ApiResult {
    if api.control.database_ok().await {
        Ok(Json(serde_json::json!({ "databaseConnectivity": true })).into_response())
    } else {
        Err(ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: "the database does not answer".into() })
    }
}

async fn openapi() -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}
