//! The management REST API under `/api/v1`, with Headscale's paths and JSON field names so existing scripts and
//! tools keep working. The CLI talks to the same routes over the server's unix socket.
#![deny(missing_docs)]

mod json;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use tailwarden_control::admin::NewKeyRequest;
use tailwarden_control::{Control, ControlError};
use tailwarden_store::StoreError;
use tailwarden_types::{NodeId, Tag, TenantId, UserId};

/// The API routes, scoped to one tenant (the default tenant on a single-tenant install).
pub fn routes(control: Arc<Control>, tenant: TenantId) -> Router {
    Router::new()
        .route("/api/v1/user", post(create_user).get(list_users))
        .route("/api/v1/preauthkey", post(create_pre_auth_key).get(list_pre_auth_keys))
        .route("/api/v1/node", get(list_nodes))
        .route("/api/v1/node/register", post(register_node))
        .route("/api/v1/node/{id}", delete(delete_node))
        .route("/api/v1/node/{id}/expire", post(expire_node))
        .route("/api/v1/node/{id}/rename/{name}", post(rename_node))
        .with_state(Api { control, tenant })
}

#[derive(Clone)]
struct Api {
    control: Arc<Control>,
    tenant: TenantId,
}

/// An error as JSON, in the shape Headscale's gateway uses (`code`, `message`).
struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self.status {
            StatusCode::NOT_FOUND => 5,
            StatusCode::CONFLICT => 6,
            StatusCode::UNAUTHORIZED => 16,
            StatusCode::BAD_REQUEST => 3,
            _ => 13,
        };
        (self.status, Json(serde_json::json!({ "code": code, "message": self.message, "details": [] }))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::Invalid { .. } | ControlError::ClientTooOld { .. } => StatusCode::BAD_REQUEST,
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

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid request body: {e}")))
}

#[derive(Deserialize)]
struct CreateUser {
    name: String,
    #[serde(default, rename = "displayName")]
    display_name: String,
    #[serde(default)]
    email: String,
}

async fn create_user(State(api): State<Api>, body: axum::body::Bytes) -> ApiResult {
    let req: CreateUser = parse_body(&body)?;
    let user = api.control.create_user(api.tenant, &req.name, &req.display_name, &req.email).await?;
    Ok(Json(serde_json::json!({ "user": json::user(&user) })).into_response())
}

#[derive(Deserialize)]
struct UserFilter {
    name: Option<String>,
    id: Option<String>,
}

async fn list_users(State(api): State<Api>, Query(f): Query<UserFilter>) -> ApiResult {
    let users = api.control.list_users(api.tenant).await?;
    let users: Vec<_> = users
        .iter()
        .filter(|u| f.name.as_deref().is_none_or(|n| n == u.name))
        .filter(|u| f.id.as_deref().is_none_or(|i| i == u.id.0.to_string()))
        .map(json::user)
        .collect();
    Ok(Json(serde_json::json!({ "users": users })).into_response())
}

/// Resolves Headscale's `user` field, which is a numeric id in current versions and a name in older ones.
async fn resolve_user(api: &Api, user: &str) -> Result<UserId, ApiError> {
    if let Ok(id) = user.parse::<i64>()
        && api.control.list_users(api.tenant).await?.iter().any(|u| u.id.0 == id)
    {
        return Ok(UserId(id));
    }
    Ok(api.control.user_by_name(api.tenant, user).await.map_err(|_| ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("user {user:?} not found"),
    })?.id)
}

#[derive(Deserialize)]
struct CreateKey {
    #[serde(default, deserialize_with = "json::string_or_number")]
    user: Option<String>,
    #[serde(default)]
    reusable: bool,
    #[serde(default)]
    ephemeral: bool,
    expiration: Option<String>,
    #[serde(default, rename = "aclTags")]
    acl_tags: Vec<String>,
}

async fn create_pre_auth_key(State(api): State<Api>, body: axum::body::Bytes) -> ApiResult {
    let req: CreateKey = parse_body(&body)?;
    let user = match req.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => Some(resolve_user(&api, u).await?),
        None => None,
    };
    let expiration_ms = match req.expiration.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => Some(json::parse_time_ms(e).ok_or_else(|| bad_request(format!("expiration {e:?} is not an RFC 3339 time")))?),
        None => None,
    };
    let tags = req
        .acl_tags
        .iter()
        .map(|t| Tag::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_request(e.to_string()))?;
    let (record, secret) = api
        .control
        .create_pre_auth_key(api.tenant, NewKeyRequest { user, reusable: req.reusable, ephemeral: req.ephemeral, expiration_ms, tags })
        .await?;
    let owner = match record.user_id {
        Some(u) => api.control.list_users(api.tenant).await?.into_iter().find(|x| x.id == u),
        None => None,
    };
    Ok(Json(serde_json::json!({ "preAuthKey": json::pre_auth_key(&record, owner.as_ref(), Some(&secret)) })).into_response())
}

#[derive(Deserialize)]
struct KeyFilter {
    user: Option<String>,
}

async fn list_pre_auth_keys(State(api): State<Api>, Query(f): Query<KeyFilter>) -> ApiResult {
    let user = match f.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => Some(resolve_user(&api, u).await?),
        None => None,
    };
    let users = api.control.list_users(api.tenant).await?;
    let keys = api.control.list_pre_auth_keys(api.tenant, user).await?;
    let keys: Vec<_> = keys
        .iter()
        .map(|k| json::pre_auth_key(k, k.user_id.and_then(|u| users.iter().find(|x| x.id == u)), None))
        .collect();
    Ok(Json(serde_json::json!({ "preAuthKeys": keys })).into_response())
}

#[derive(Deserialize)]
struct NodeFilter {
    user: Option<String>,
}

async fn list_nodes(State(api): State<Api>, Query(f): Query<NodeFilter>) -> ApiResult {
    let user = match f.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => Some(resolve_user(&api, u).await?),
        None => None,
    };
    let users = api.control.list_users(api.tenant).await?;
    let nodes = api.control.list_nodes(api.tenant, user).await?;
    let nodes: Vec<_> = nodes.iter().map(|n| json::node(n, &users, api.control.settings())).collect();
    Ok(Json(serde_json::json!({ "nodes": nodes })).into_response())
}

#[derive(Deserialize)]
struct RegisterQuery {
    user: String,
    key: String,
}

async fn register_node(State(api): State<Api>, Query(q): Query<RegisterQuery>) -> ApiResult {
    let user = resolve_user(&api, &q.user).await?;
    let view = api.control.complete_registration(api.tenant, &q.key, user).await?;
    let users = api.control.list_users(api.tenant).await?;
    Ok(Json(serde_json::json!({ "node": json::node(&view, &users, api.control.settings()) })).into_response())
}

fn node_id(raw: &str) -> Result<NodeId, ApiError> {
    raw.parse::<i64>().map(NodeId).map_err(|_| bad_request(format!("node id {raw:?} is not a number")))
}

async fn delete_node(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    api.control.delete_node(api.tenant, node_id(&id)?).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

async fn expire_node(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    let view = api.control.expire_node(api.tenant, node_id(&id)?).await?;
    let users = api.control.list_users(api.tenant).await?;
    Ok(Json(serde_json::json!({ "node": json::node(&view, &users, api.control.settings()) })).into_response())
}

async fn rename_node(State(api): State<Api>, Path((id, name)): Path<(String, String)>) -> ApiResult {
    let view = api.control.rename_node(api.tenant, node_id(&id)?, &name).await?;
    let users = api.control.list_users(api.tenant).await?;
    Ok(Json(serde_json::json!({ "node": json::node(&view, &users, api.control.settings()) })).into_response())
}
