//! `/api/v1/preauthkey` and `/api/v1/apikey`: keys are shown in full once, at creation; afterwards they are
//! named by id or prefix.

use crate::{
    Api, ApiError, ApiResult, Path, Query, bad_request, json, not_found, parse_body, parse_time, resolve_user,
};
use axum::Json;
use axum::response::IntoResponse;
use serde::Deserialize;
use tailwarden_control::admin::NewKeyRequest;
use tailwarden_store::{ApiKeyRecord, PreAuthKeyRecord};
use tailwarden_types::Tag;

/// API keys created without an expiration last this long (Headscale's CLI default).
const DEFAULT_API_KEY_LIFETIME_MS: i64 = 90 * 24 * 3600 * 1000;

#[derive(Deserialize)]
pub(crate) struct CreateKey {
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

pub(crate) async fn create_pre_auth_key(api: Api, body: axum::body::Bytes) -> ApiResult {
    let req: CreateKey = parse_body(&body)?;
    let user = match req.user.as_deref().filter(|u| !u.is_empty() && *u != "0") {
        Some(u) => Some(resolve_user(&api, u).await?),
        None => None,
    };
    let expiration_ms = parse_time("expiration", req.expiration.as_deref())?;
    let tags = req
        .acl_tags
        .iter()
        .map(|t| Tag::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_request(e.to_string()))?;
    let (record, secret) = api
        .control
        .create_pre_auth_key(
            api.tenant,
            NewKeyRequest { user, reusable: req.reusable, ephemeral: req.ephemeral, expiration_ms, tags },
        )
        .await?;
    let owner = match record.user_id {
        Some(u) => api.control.list_users(api.tenant).await?.into_iter().find(|x| x.id == u),
        None => None,
    };
    Ok(Json(serde_json::json!({ "preAuthKey": json::pre_auth_key(&record, owner.as_ref(), Some(&secret)) }))
        .into_response())
}

#[derive(Deserialize)]
pub(crate) struct KeyFilter {
    user: Option<String>,
}

pub(crate) async fn list_pre_auth_keys(api: Api, Query(f): Query<KeyFilter>) -> ApiResult {
    let user = match f.user.as_deref().filter(|u| !u.is_empty() && *u != "0") {
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

/// Names a pre-auth key the way either Headscale generation does: `id` (current), or `user` + `key` (≤ 0.26, where
/// `key` is the full key; the id, the prefix or the listed `hskey-auth-PREFIX-***` form work too).
#[derive(Deserialize)]
pub(crate) struct KeyRef {
    #[serde(default, deserialize_with = "json::string_or_number")]
    id: Option<String>,
    #[serde(default, deserialize_with = "json::string_or_number")]
    user: Option<String>,
    key: Option<String>,
}

async fn find_pre_auth_key(api: &Api, r: &KeyRef) -> Result<PreAuthKeyRecord, ApiError> {
    let named = r.id.as_deref().filter(|i| !i.is_empty() && *i != "0").or(r.key.as_deref().filter(|k| !k.is_empty()));
    let Some(named) = named else { return Err(bad_request("name the pre-auth key by id (or by user and key)")) };
    let record = api
        .control
        .find_pre_auth_key(api.tenant, named)
        .await?
        .ok_or_else(|| not_found(format!("pre-auth key {named:?} not found")))?;
    if let Some(user) = r.user.as_deref().filter(|u| !u.is_empty() && *u != "0") {
        let user = resolve_user(api, user).await?;
        if record.user_id != Some(user) {
            return Err(not_found(format!("pre-auth key {named:?} not found for that user")));
        }
    }
    Ok(record)
}

pub(crate) async fn expire_pre_auth_key(api: Api, body: axum::body::Bytes) -> ApiResult {
    let r: KeyRef = parse_body(&body)?;
    let record = find_pre_auth_key(&api, &r).await?;
    api.control.expire_pre_auth_key(api.tenant, record.id).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

/// `DELETE /api/v1/preauthkey?id=…` (or `?user=…&key=…`).
pub(crate) async fn delete_pre_auth_key(api: Api, Query(r): Query<KeyRef>) -> ApiResult {
    let record = find_pre_auth_key(&api, &r).await?;
    api.control.delete_pre_auth_key(api.tenant, record.id).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

#[derive(Deserialize)]
pub(crate) struct CreateApiKey {
    expiration: Option<String>,
}

pub(crate) async fn create_api_key(api: Api, body: axum::body::Bytes) -> ApiResult {
    let req: CreateApiKey = parse_body(&body)?;
    let expiration_ms = match parse_time("expiration", req.expiration.as_deref())? {
        Some(e) => e,
        None => json::now_ms().saturating_add(DEFAULT_API_KEY_LIFETIME_MS),
    };
    let (_, secret) = api.control.create_api_key(api.tenant, Some(expiration_ms)).await?;
    Ok(Json(serde_json::json!({ "apiKey": secret })).into_response())
}

pub(crate) async fn list_api_keys(api: Api) -> ApiResult {
    let keys = api.control.list_api_keys(api.tenant).await?;
    let keys: Vec<_> = keys.iter().map(json::api_key).collect();
    Ok(Json(serde_json::json!({ "apiKeys": keys })).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ApiKeyRef {
    #[serde(default)]
    prefix: String,
    #[serde(default, deserialize_with = "json::string_or_number")]
    id: Option<String>,
}

async fn find_api_key(api: &Api, prefix: &str, id: Option<&str>) -> Result<ApiKeyRecord, ApiError> {
    let id = id.filter(|i| !i.is_empty() && *i != "0");
    let prefix = prefix.trim();
    let named = match (prefix.is_empty(), id) {
        (true, None) => return Err(bad_request("name the API key by prefix or id")),
        (false, Some(_)) => return Err(bad_request("name the API key by prefix or id, not both")),
        (true, Some(id)) => id,
        (false, None) => prefix,
    };
    api.control.find_api_key(api.tenant, named).await?.ok_or_else(|| not_found(format!("API key {named:?} not found")))
}

pub(crate) async fn expire_api_key(api: Api, body: axum::body::Bytes) -> ApiResult {
    let r: ApiKeyRef = parse_body(&body)?;
    let key = find_api_key(&api, &r.prefix, r.id.as_deref()).await?;
    api.control.expire_api_key(api.tenant, &key).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

pub(crate) async fn delete_api_key(api: Api, Path(prefix): Path<String>) -> ApiResult {
    let key = find_api_key(&api, &prefix, None).await?;
    api.control.delete_api_key(api.tenant, &key).await?;
    Ok(Json(serde_json::json!({})).into_response())
}
