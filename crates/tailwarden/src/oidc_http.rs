//! The browser side of OIDC login: `/register/<id>` sends the browser to the provider, `/oidc/callback` finishes the
//! login and admits the waiting device. This is the one place where OIDC and control errors become pages.

use anyhow::Context;
use axum::extract::Query;
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use std::sync::Arc;
use tailwarden_config::Config;
use tailwarden_control::{Control, ControlError, ExternalUser};
use tailwarden_oidc::{Callback, OidcError, OidcProvider, error_chain, logins::LOGIN_TTL};
use tailwarden_store::{Conflict, StoreError};
use tailwarden_types::TenantId;

/// The state cookie's name starts with this and goes on with the first characters of the state, so several logins
/// in one browser (two devices at once) do not overwrite each other's cookie.
const COOKIE_PREFIX: &str = "tailwarden_oidc_";
const COOKIE_STATE_CHARS: usize = 8;

/// OIDC login as the HTTP routes use it.
pub struct OidcLogin {
    provider: OidcProvider,
    /// Whether the browser reaches the server over HTTPS (`server_url`), so cookies may carry `Secure`.
    secure_cookies: bool,
}

/// Sets up OIDC login when `oidc.issuer` is set. The provider is discovered now; when that fails the server refuses
/// to start with `oidc.only_start_if_oidc_is_available`, and otherwise warns and discovers again on the first login.
pub async fn start(config: &Config) -> anyhow::Result<Option<Arc<OidcLogin>>> {
    let Some(issuer) = &config.oidc.issuer else {
        return Ok(None);
    };
    let provider = OidcProvider::new(&config.oidc, &config.server_url).context("oidc")?;
    match provider.discover().await {
        Ok(()) => {}
        Err(e) if config.oidc.only_start_if_oidc_is_available => {
            return Err(e).with_context(|| {
                format!("oidc.issuer {issuer} is unavailable and oidc.only_start_if_oidc_is_available is true")
            });
        }
        Err(e) => tracing::warn!(
            issuer = %issuer,
            error = %error_chain(&e),
            "OIDC provider unavailable; starting anyway (oidc.only_start_if_oidc_is_available is false), \
             discovery is retried on the next login"
        ),
    }
    let secure_cookies = config.server_url.starts_with("https://");
    Ok(Some(Arc::new(OidcLogin { provider, secure_cookies })))
}

impl OidcLogin {
    /// Redirects the browser to the provider for the pending registration `id` (known to exist).
    pub async fn begin(&self, id: &str) -> Response {
        let authorization = match self.provider.begin(id).await {
            Ok(a) => a,
            Err(e) => return oidc_error_page(&e),
        };
        let mut cookie = format!(
            "{}={}; Path={}; Max-Age={}; HttpOnly; SameSite=Lax",
            cookie_name(&authorization.state),
            authorization.state,
            tailwarden_oidc::CALLBACK_PATH,
            LOGIN_TTL.as_secs()
        );
        if self.secure_cookies {
            cookie.push_str("; Secure");
        }
        let mut response = StatusCode::FOUND.into_response();
        let headers = response.headers_mut();
        match (HeaderValue::try_from(authorization.url), HeaderValue::try_from(cookie)) {
            (Ok(location), Ok(cookie)) => {
                headers.insert(header::LOCATION, location);
                headers.insert(header::SET_COOKIE, cookie);
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            _ => {
                page(StatusCode::INTERNAL_SERVER_ERROR, "Login failed", "The authorization URL is not a valid header.")
            }
        }
    }
}

/// The query of the provider's redirect back.
#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `/oidc/callback`: verifies the login, creates or refreshes its user, and admits the waiting device.
pub async fn callback(
    axum::Extension(control): axum::Extension<Arc<Control>>,
    axum::Extension(oidc): axum::Extension<Option<Arc<OidcLogin>>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(oidc) = oidc else {
        return page(StatusCode::NOT_FOUND, "OIDC login is not enabled", "This server has no oidc.issuer configured.");
    };
    if let Some(error) = query.error {
        return oidc_error_page(&OidcError::Provider { error, description: query.error_description });
    }
    let (Some(state), Some(code)) = (query.state.as_deref(), query.code.as_deref()) else {
        return page(StatusCode::BAD_REQUEST, "Login failed", "The callback lacks its code or state parameter.");
    };
    let name = cookie_name(state);
    let browser_state = cookies(&headers).find(|(k, _)| *k == name).map(|(_, v)| v);
    let login = match oidc.provider.finish(Callback { state, code, browser_state }).await {
        Ok(login) => login,
        Err(e) => {
            let mut response = oidc_error_page(&e);
            clear_cookie(&mut response, &name);
            return response;
        }
    };
    let profile = &login.profile;
    let user = ExternalUser {
        provider_identifier: &profile.provider_identifier,
        name: &profile.name,
        display_name: &profile.display_name,
        email: &profile.email,
    };
    let mut response = match control
        .complete_external_login(TenantId::DEFAULT, &login.registration_id, user, login.node_expiry_ms)
        .await
    {
        Ok((user, node)) => {
            tracing::info!(user = %user.name, node = %node.record.id, "node registered through OIDC login");
            page(
                StatusCode::OK,
                "Device registered",
                &format!(
                    "You are logged in as {} ({}). The device {} is now registered as {}; you can close this window.",
                    user.display_name, user.name, node.record.hostname, node.record.given_name
                ),
            )
        }
        Err(e) => control_error_page(&e, &profile.name),
    };
    clear_cookie(&mut response, &name);
    response
}

fn cookie_name(state: &str) -> String {
    let tag: String = state.chars().filter(|c| c.is_ascii_alphanumeric()).take(COOKIE_STATE_CHARS).collect();
    format!("{COOKIE_PREFIX}{tag}")
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

fn clear_cookie(response: &mut Response, name: &str) {
    let expired = format!("{name}=; Path={}; Max-Age=0; HttpOnly; SameSite=Lax", tailwarden_oidc::CALLBACK_PATH);
    if let Ok(value) = HeaderValue::try_from(expired) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn oidc_error_page(e: &OidcError) -> Response {
    let (status, title) = match e {
        OidcError::Refused(_) => (StatusCode::FORBIDDEN, "Login refused"),
        OidcError::StateMismatch | OidcError::Provider { .. } => (StatusCode::FORBIDDEN, "Login failed"),
        OidcError::TokenRequest(_) => (StatusCode::BAD_GATEWAY, "Identity provider unreachable"),
        OidcError::CodeExchange(_) | OidcError::NoIdToken | OidcError::IdTokenFormat(_) | OidcError::IdToken(_) => {
            (StatusCode::FORBIDDEN, "Login could not be verified")
        }
        OidcError::UnknownState => (StatusCode::GONE, "Login expired"),
        OidcError::Discovery { .. } | OidcError::NoTokenEndpoint { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "Identity provider unavailable")
        }
        OidcError::HttpClient(_) | OidcError::Url { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "Login failed"),
    };
    if let OidcError::Refused(_) = e {
        tracing::info!(reason = %e, "OIDC login refused");
    } else {
        tracing::warn!(error = %error_chain(e), "OIDC login failed");
    }
    page(status, title, &e.to_string())
}

fn control_error_page(e: &ControlError, name: &str) -> Response {
    tracing::warn!(error = %e, user = %name, "OIDC login could not complete the registration");
    match e {
        ControlError::UnknownRegistration { .. } => page(
            StatusCode::GONE,
            "Registration expired",
            "The device's registration expired or was completed already; start the login again from the device.",
        ),
        ControlError::Store(StoreError::Conflict { what: Conflict::UserName(taken) }) => page(
            StatusCode::CONFLICT,
            "User name taken",
            &format!(
                "The user name {taken:?} belongs to a user that is not linked to this login. An administrator can \
                 rename that user (tailwarden users rename) for this login to proceed."
            ),
        ),
        ControlError::Invalid { what } => page(StatusCode::BAD_REQUEST, "Login failed", what),
        _ => page(StatusCode::INTERNAL_SERVER_ERROR, "Login failed", "The registration could not be stored."),
    }
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tailwarden: {title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p></body></html>",
        title = escape(title),
        message = escape(message)
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

/// Escapes text for HTML: claims and provider errors are chosen by others.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn cookies_are_found_by_state_prefix() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; tailwarden_oidc_AbCd1234=AbCd1234-rest"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let name = cookie_name("AbCd1234-rest");
        assert_eq!(name, "tailwarden_oidc_AbCd1234");
        assert_eq!(cookies(&headers).find(|(k, _)| *k == name).map(|(_, v)| v), Some("AbCd1234-rest"));
        assert_eq!(cookies(&headers).count(), 3);
    }

    #[test]
    fn refusals_are_forbidden_and_expired_logins_gone() {
        let refused = oidc_error_page(&OidcError::Refused(tailwarden_oidc::Refusal::NotInAllowedGroup));
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(oidc_error_page(&OidcError::UnknownState).status(), StatusCode::GONE);
        assert_eq!(oidc_error_page(&OidcError::StateMismatch).status(), StatusCode::FORBIDDEN);
    }
}
