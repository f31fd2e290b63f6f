//! `/api/v1/policy`: the tailnet policy (Headscale's `GET`/`PUT`), plus `POST /api/v1/policy/check` (tailwarden):
//! a full check — syntax, references and the policy's own `tests` — against the running tailnet.

use crate::{Api, ApiResult, json, parse_body};
use axum::Json;
use axum::response::IntoResponse;
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct PolicyBody {
    policy: String,
}

fn info_json(info: &tailwarden_control::admin::PolicyInfo) -> serde_json::Value {
    serde_json::json!({
        "policy": info.policy,
        "updatedAt": info.updated_ms.map_or(serde_json::Value::Null, json::time_ms),
    })
}

pub(crate) async fn get(api: Api) -> ApiResult {
    Ok(Json(info_json(&api.control.policy(api.tenant).await?)).into_response())
}

pub(crate) async fn set(api: Api, body: axum::body::Bytes) -> ApiResult {
    let req: PolicyBody = parse_body(&body)?;
    Ok(Json(info_json(&api.control.set_policy(api.tenant, &req.policy).await?)).into_response())
}

pub(crate) async fn check(api: Api, body: axum::body::Bytes) -> ApiResult {
    let req: PolicyBody = parse_body(&body)?;
    api.control.check_policy(api.tenant, &req.policy).await?;
    Ok(Json(serde_json::json!({ "valid": true })).into_response())
}
