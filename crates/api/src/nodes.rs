//! `/api/v1/node` and its legacy alias `/api/v1/machine`. Every handler answers under the key its path family
//! uses: `node`/`nodes`, or `machine`/`machines` for Headscale ≤ 0.22 clients.

use crate::{Api, ApiResult, Path, Query, bad_request, json, parse_body, parse_time, resolve_user};
use axum::Json;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::Value;
use tailwarden_control::NodeView;
use tailwarden_types::{NodeId, Tag};

/// The response keys (one node, a list) for the path family of `uri`.
fn keys(uri: &http::Uri) -> (&'static str, &'static str) {
    if uri.path().starts_with("/api/v1/machine") { ("machine", "machines") } else { ("node", "nodes") }
}

fn node_id(raw: &str) -> Result<NodeId, crate::ApiError> {
    raw.parse::<i64>().map(NodeId).map_err(|_| bad_request(format!("node id {raw:?} is not a number")))
}

async fn one(api: &Api, uri: &http::Uri, view: &NodeView) -> ApiResult {
    let users = api.control.list_users(api.tenant).await?;
    let mut body = serde_json::Map::new();
    body.insert(keys(uri).0.into(), json::node(view, &users, api.control.settings()));
    Ok(Json(Value::Object(body)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct NodeFilter {
    user: Option<String>,
}

pub(crate) async fn list(api: Api, uri: http::Uri, Query(f): Query<NodeFilter>) -> ApiResult {
    let user = match f.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => Some(resolve_user(&api, u).await?),
        None => None,
    };
    let users = api.control.list_users(api.tenant).await?;
    let nodes = api.control.list_nodes(api.tenant, user).await?;
    let nodes: Vec<_> = nodes.iter().map(|n| json::node(n, &users, api.control.settings())).collect();
    let mut body = serde_json::Map::new();
    body.insert(keys(&uri).1.into(), Value::Array(nodes));
    Ok(Json(Value::Object(body)).into_response())
}

pub(crate) async fn get(api: Api, uri: http::Uri, Path(id): Path<String>) -> ApiResult {
    let view = api.control.get_node(api.tenant, node_id(&id)?).await?;
    one(&api, &uri, &view).await
}

#[derive(Deserialize)]
pub(crate) struct RegisterQuery {
    user: String,
    key: String,
}

pub(crate) async fn register(api: Api, uri: http::Uri, Query(q): Query<RegisterQuery>) -> ApiResult {
    let user = resolve_user(&api, &q.user).await?;
    let view = api.control.complete_registration(api.tenant, &q.key, user).await?;
    one(&api, &uri, &view).await
}

pub(crate) async fn delete(api: Api, Path(id): Path<String>) -> ApiResult {
    api.control.delete_node(api.tenant, node_id(&id)?).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

/// Optional body: `{"expiry": RFC 3339}` sets a future expiry, `{"disableExpiry": true}` removes it; without
/// either the node expires now.
#[derive(Deserialize)]
pub(crate) struct ExpireBody {
    expiry: Option<String>,
    #[serde(default, rename = "disableExpiry")]
    disable_expiry: bool,
}

pub(crate) async fn expire(api: Api, uri: http::Uri, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let id = node_id(&id)?;
    let req: ExpireBody = parse_body(&body)?;
    let view = match (req.disable_expiry, parse_time("expiry", req.expiry.as_deref())?) {
        (true, Some(_)) => return Err(bad_request("give either expiry or disableExpiry, not both")),
        (true, None) => api.control.set_node_expiry(api.tenant, id, None).await?,
        (false, Some(at)) => api.control.set_node_expiry(api.tenant, id, Some(at)).await?,
        (false, None) => api.control.expire_node(api.tenant, id).await?,
    };
    one(&api, &uri, &view).await
}

pub(crate) async fn rename(api: Api, uri: http::Uri, Path((id, name)): Path<(String, String)>) -> ApiResult {
    let view = api.control.rename_node(api.tenant, node_id(&id)?, &name).await?;
    one(&api, &uri, &view).await
}

#[derive(Deserialize)]
pub(crate) struct TagsBody {
    #[serde(default)]
    tags: Vec<String>,
}

pub(crate) async fn set_tags(api: Api, uri: http::Uri, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let id = node_id(&id)?;
    let req: TagsBody = parse_body(&body)?;
    let tags = req
        .tags
        .iter()
        .map(|t| Tag::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_request(e.to_string()))?;
    let view = api.control.set_tags(api.tenant, id, tags).await?;
    one(&api, &uri, &view).await
}

#[derive(Deserialize)]
pub(crate) struct RoutesBody {
    #[serde(default)]
    routes: Vec<String>,
}

pub(crate) async fn approve_routes(
    api: Api,
    uri: http::Uri,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let id = node_id(&id)?;
    let req: RoutesBody = parse_body(&body)?;
    let view = api.control.approve_routes(api.tenant, id, &req.routes).await?;
    one(&api, &uri, &view).await
}
