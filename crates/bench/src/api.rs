//! The few Headscale `/api/v1` calls a run needs: users, pre-auth keys and the policy. Shapes follow Headscale's
//! gRPC gateway (ids as strings, `user` as an id), which tailwarden accepts too.

use crate::BenchError;
use crate::http1::{self, BaseUrl};
use http::Method;
use serde_json::json;
use time::OffsetDateTime;

/// A management API endpoint and its bearer key.
#[derive(Clone, Debug)]
pub struct Api {
    /// Base URL (`http://127.0.0.1:8080`).
    pub base: BaseUrl,
    /// API key.
    pub key: String,
}

impl Api {
    /// Creates a user and returns its id.
    pub async fn create_user(&self, name: &str) -> Result<String, BenchError> {
        let v = http1::json(
            &self.base,
            Method::POST,
            "/api/v1/user",
            Some(&self.key),
            Some(&json!({ "name": name })),
            "POST /api/v1/user",
        )
        .await?;
        // Headscale writes the uint64 id as a string; accept a number too.
        match &v["user"]["id"] {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            _ => Err(BenchError::Status {
                during: "POST /api/v1/user",
                status: 200,
                body: "answer without user.id".into(),
            }),
        }
    }

    /// Creates a reusable pre-auth key for `user_id`, valid for `valid_for`, and returns the secret.
    pub async fn create_key(&self, user_id: &str, valid_for: std::time::Duration) -> Result<String, BenchError> {
        // Headscale treats a missing expiration as already expired, so always send one.
        let expiration = (OffsetDateTime::now_utc() + valid_for)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|_| BenchError::Options("the key expiration is not representable"))?;
        let body = json!({ "user": user_id, "reusable": true, "ephemeral": false, "expiration": expiration });
        let v = http1::json(
            &self.base,
            Method::POST,
            "/api/v1/preauthkey",
            Some(&self.key),
            Some(&body),
            "POST /api/v1/preauthkey",
        )
        .await?;
        v["preAuthKey"]["key"].as_str().map(str::to_string).ok_or_else(|| BenchError::Status {
            during: "POST /api/v1/preauthkey",
            status: 200,
            body: "answer without preAuthKey.key".into(),
        })
    }

    /// Replaces the policy (the server must keep its policy in the database).
    pub async fn set_policy(&self, text: &str) -> Result<(), BenchError> {
        http1::json(
            &self.base,
            Method::PUT,
            "/api/v1/policy",
            Some(&self.key),
            Some(&json!({ "policy": text })),
            "PUT /api/v1/policy",
        )
        .await?;
        Ok(())
    }
}
