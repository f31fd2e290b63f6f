//! `/machine/register`: how a node logs in, rotates its key or logs out.

use crate::{Hostinfo, NodeKey, gotime};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Go `tailcfg.RegisterRequest` (decode with [`crate::from_go_json`]).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RegisterRequest {
    /// Client capability version.
    #[serde(rename = "version", default)]
    pub version: u16,
    /// The node key being registered.
    #[serde(rename = "nodekey", default)]
    pub node_key: NodeKey,
    /// Previous node key when rotating, else zero.
    #[serde(rename = "oldnodekey", default)]
    pub old_node_key: NodeKey,
    /// Pre-auth key, if any.
    #[serde(rename = "auth", default)]
    pub auth: Option<AuthInfo>,
    /// Requested expiry; in the past means logout.
    #[serde(rename = "expiry", with = "gotime::zero_is_none", default)]
    pub expiry: Option<OffsetDateTime>,
    /// Non-empty: "block until the login at this URL completes".
    #[serde(rename = "followup", default)]
    pub followup: String,
    /// Client description.
    #[serde(rename = "hostinfo", default)]
    pub hostinfo: Option<Hostinfo>,
    /// Delete the node when it goes inactive.
    #[serde(rename = "ephemeral", default)]
    pub ephemeral: bool,
}

/// The `Auth` object of a register request.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AuthInfo {
    /// A pre-auth key.
    #[serde(rename = "authkey", default)]
    pub auth_key: String,
}

/// Go `tailcfg.RegisterResponse`. Every key is always written: tailscale-rs has no defaults for them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RegisterResponse {
    /// Owner.
    #[serde(rename = "User")]
    pub user: User,
    /// Owner's login.
    #[serde(rename = "Login")]
    pub login: Login,
    /// The client must rotate its node key and register again.
    #[serde(rename = "NodeKeyExpired")]
    pub node_key_expired: bool,
    /// The node is admitted.
    #[serde(rename = "MachineAuthorized")]
    pub machine_authorized: bool,
    /// Non-empty: login pending at this URL.
    #[serde(rename = "AuthURL")]
    pub auth_url: String,
    /// Non-empty: failure shown to the user.
    #[serde(rename = "Error")]
    pub error: String,
}

impl RegisterResponse {
    /// A failure carrying only a message; sent with HTTP 200 so clients display it.
    pub fn error(message: impl Into<String>) -> RegisterResponse {
        RegisterResponse { error: message.into(), ..Default::default() }
    }
}

/// Go `tailcfg.User`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct User {
    /// User ID.
    #[serde(rename = "ID")]
    pub id: i64,
    /// Display name.
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    /// Avatar URL.
    #[serde(rename = "ProfilePicURL")]
    pub profile_pic_url: String,
    /// Creation time.
    #[serde(rename = "Created", with = "gotime::zero_is_none")]
    pub created: Option<OffsetDateTime>,
}

/// Go `tailcfg.Login`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Login {
    /// Login ID (we use the user ID).
    #[serde(rename = "ID")]
    pub id: i64,
    /// Identity provider name.
    #[serde(rename = "Provider")]
    pub provider: String,
    /// Login name (e.g. email or user name).
    #[serde(rename = "LoginName")]
    pub login_name: String,
    /// Display name.
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    /// Avatar URL.
    #[serde(rename = "ProfilePicURL")]
    pub profile_pic_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_go_json;

    #[test]
    fn parses_go_register_request() {
        let nk = format!("nodekey:{}", "11".repeat(32));
        let body = format!(
            r#"{{"Version":130,"NodeKey":"{nk}","OldNodeKey":"nodekey:{zero}","NLKey":"nlpub:{zero}",
            "Auth":{{"Provider":"","LoginName":"","AuthKey":"hskey-auth-x"}},"Expiry":"0001-01-01T00:00:00Z",
            "Followup":"","Hostinfo":{{"Hostname":"go1","OS":"linux"}},"Ephemeral":true,"NodeKeySignature":null}}"#,
            zero = "00".repeat(32)
        );
        let r: RegisterRequest = from_go_json("RegisterRequest", body.as_bytes()).unwrap();
        assert_eq!(r.version, 130);
        assert_eq!(r.node_key.to_string(), nk);
        assert!(r.old_node_key.is_zero());
        assert_eq!(r.auth.unwrap().auth_key, "hskey-auth-x");
        assert!(r.expiry.is_none());
        assert!(r.ephemeral);
        assert_eq!(r.hostinfo.unwrap().hostname, "go1");
    }

    #[test]
    fn response_parses_with_tailscale_rs() {
        let resp = RegisterResponse {
            user: User { id: 3, display_name: "alice".into(), ..Default::default() },
            login: Login { id: 3, provider: "tailwarden".into(), login_name: "alice".into(), ..Default::default() },
            machine_authorized: true,
            ..Default::default()
        };
        let json = serde_json::to_string(&resp).unwrap();
        let parsed: ts_control_serde::RegisterResponse = serde_json::from_str(&json).unwrap();
        assert!(parsed.machine_authorized);
    }
}
