//! Errors of OIDC login.

use crate::identity::Refusal;
use openidconnect::core::CoreErrorResponseType;
use openidconnect::{
    ClaimsVerificationError, DiscoveryError, HttpClientError, RequestTokenError, StandardErrorResponse,
};

/// What the HTTP client reports.
pub type HttpError = HttpClientError<reqwest::Error>;

/// Why an OIDC login (or setting one up) failed. The server's HTTP edge turns each variant into a status and page.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The HTTP client for talking to the provider could not be built.
    #[error("building the HTTP client for the identity provider")]
    HttpClient(#[source] reqwest::Error),
    /// A URL derived from the configuration does not parse.
    #[error("{key} {url:?} is not a valid URL")]
    Url {
        /// The configuration key it comes from (`oidc.issuer`, or `server_url` for the callback URL).
        key: &'static str,
        /// The text that failed.
        url: String,
        /// Why.
        #[source]
        source: openidconnect::url::ParseError,
    },
    /// `<issuer>/.well-known/openid-configuration` could not be fetched, parsed, or names another issuer.
    #[error("OIDC discovery at {issuer} failed")]
    Discovery {
        /// The configured issuer.
        issuer: String,
        /// Why.
        #[source]
        source: DiscoveryError<HttpError>,
    },
    /// The provider's metadata lacks a token endpoint, so authorization codes cannot be exchanged.
    #[error("the identity provider {issuer} publishes no token endpoint")]
    NoTokenEndpoint {
        /// The configured issuer.
        issuer: String,
    },
    /// The callback came from a browser other than the one that started the login (no or another state cookie).
    #[error("this login was started in another browser or its cookie was lost")]
    StateMismatch,
    /// The callback's `state` names no login in flight: it expired, was already used, or was never issued.
    #[error("unknown or expired login; start again from the device")]
    UnknownState,
    /// The provider redirected back with an error instead of a code (for example `access_denied`).
    #[error("the identity provider refused the login: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Provider {
        /// The OAuth 2.0 error code.
        error: String,
        /// Its `error_description`, if any.
        description: Option<String>,
    },
    /// The token endpoint could not be reached.
    #[error("the identity provider's token endpoint could not be reached")]
    TokenRequest(#[source] HttpError),
    /// The token endpoint did not accept the authorization code (or answered with something unreadable).
    #[error("exchanging the authorization code failed")]
    CodeExchange(#[source] RequestTokenError<HttpError, StandardErrorResponse<CoreErrorResponseType>>),
    /// The token response carried no ID token.
    #[error("the identity provider returned no ID token")]
    NoIdToken,
    /// The ID token is not a well-formed JWT with the expected claims.
    #[error("the ID token is malformed")]
    IdTokenFormat(#[source] serde_json::Error),
    /// The ID token failed verification (signature, issuer, audience, nonce or expiry).
    #[error("the ID token failed verification")]
    IdToken(#[source] ClaimsVerificationError),
    /// The person authenticated but the configuration does not let them in.
    #[error("login refused: {0}")]
    Refused(#[from] Refusal),
}
