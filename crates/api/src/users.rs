//! `/api/v1/user`: create, list, rename, delete.

use crate::{Api, ApiResult, Path, Query, json, parse_body, resolve_user};
use axum::Json;
use axum::response::IntoResponse;
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct CreateUser {
    name: String,
    #[serde(default, rename = "displayName")]
    display_name: String,
    #[serde(default)]
    email: String,
}

pub(crate) async fn create(api: Api, body: axum::body::Bytes) -> ApiResult {
    let req: CreateUser = parse_body(&body)?;
    let user = api.control.create_user(api.tenant, &req.name, &req.display_name, &req.email).await?;
    Ok(Json(serde_json::json!({ "user": json::user(&user) })).into_response())
}

#[derive(Deserialize)]
pub(crate) struct UserFilter {
    name: Option<String>,
    id: Option<String>,
    email: Option<String>,
}

pub(crate) async fn list(api: Api, Query(f): Query<UserFilter>) -> ApiResult {
    let users = api.control.list_users(api.tenant).await?;
    let users: Vec<_> = users
        .iter()
        .filter(|u| f.name.as_deref().filter(|n| !n.is_empty()).is_none_or(|n| n == u.name))
        .filter(|u| f.id.as_deref().filter(|i| !i.is_empty() && *i != "0").is_none_or(|i| i == u.id.0.to_string()))
        .filter(|u| f.email.as_deref().filter(|e| !e.is_empty()).is_none_or(|e| e == u.email))
        .map(json::user)
        .collect();
    Ok(Json(serde_json::json!({ "users": users })).into_response())
}

/// `{id}` is the user's id, or its name as in Headscale ≤ 0.22.
pub(crate) async fn rename(api: Api, Path((id, new_name)): Path<(String, String)>) -> ApiResult {
    let user = resolve_user(&api, &id).await?;
    let user = api.control.rename_user(api.tenant, user, &new_name).await?;
    Ok(Json(serde_json::json!({ "user": json::user(&user) })).into_response())
}

/// Refused with 409 while the user owns nodes; its pre-auth keys go with it.
pub(crate) async fn destroy(api: Api, Path(id): Path<String>) -> ApiResult {
    let user = resolve_user(&api, &id).await?;
    api.control.delete_user(api.tenant, user).await?;
    Ok(Json(serde_json::json!({})).into_response())
}
