//! The shell around the pure rules: discovery, the redirect to the provider, the code exchange, ID token
//! verification and the userinfo request, all through `openidconnect`.

use crate::error::OidcError;
use crate::identity::{AccessRules, Identity, UserProfile};
use crate::logins::{LOGIN_TTL, LoginTable, MAX_LOGINS};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IdToken, IdTokenClaims, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tailwarden_config::{OidcConfig, PkceMethod};

/// The path of the redirect URI under `server_url`, as Headscale registers it with providers.
pub const CALLBACK_PATH: &str = "/oidc/callback";

/// Bounds every request to the provider, so an unreachable issuer fails discovery instead of hanging start-up.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Metadata (and with it the signing keys) older than this is fetched again on the next login, so key rotation at
/// the provider is picked up without a restart.
const METADATA_MAX_AGE: Duration = Duration::from_secs(60 * 60);

type DiscoveredClient =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

type GroupsIdToken = IdToken<GroupsClaim, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// The non-standard `groups` claim, kept as raw JSON: providers send a list, a single string, or nothing, and a
/// shape this server does not understand must not make the whole token unreadable.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct GroupsClaim {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<serde_json::Value>,
}

impl AdditionalClaims for GroupsClaim {}

impl GroupsClaim {
    fn names(&self) -> Vec<String> {
        match &self.groups {
            Some(serde_json::Value::String(g)) => vec![g.clone()],
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(serde_json::Value::as_str).map(str::to_string).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Where to send the browser to log in.
#[derive(Clone, Debug)]
pub struct Authorization {
    /// The provider's authorization endpoint with every parameter.
    pub url: String,
    /// The `state` parameter; the server also hands it to the browser as a cookie and expects it back.
    pub state: String,
}

/// What the provider redirected back with.
#[derive(Clone, Copy, Debug)]
pub struct Callback<'a> {
    /// `state` from the query.
    pub state: &'a str,
    /// `code` from the query.
    pub code: &'a str,
    /// The state cookie the browser sent, if any.
    pub browser_state: Option<&'a str>,
}

/// A verified, allowed login.
#[derive(Clone, Debug)]
pub struct Login {
    /// The interactive registration the login was started for.
    pub registration_id: String,
    /// The user it maps to.
    pub profile: UserProfile,
    /// With `oidc.use_expiry_from_token`, when the ID token expires (unix milliseconds); the node expires then.
    pub node_expiry_ms: Option<i64>,
}

struct Pending {
    registration_id: String,
    nonce: Nonce,
    pkce_verifier: Option<PkceCodeVerifier>,
}

struct Discovered {
    client: Arc<DiscoveredClient>,
    at: Instant,
}

/// One configured OpenID provider and the logins in flight with it.
pub struct OidcProvider {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    redirect: RedirectUrl,
    scopes: Vec<String>,
    extra_params: BTreeMap<String, String>,
    pkce: Option<PkceMethod>,
    use_expiry_from_token: bool,
    rules: AccessRules,
    http: reqwest::Client,
    discovered: tokio::sync::Mutex<Option<Discovered>>,
    logins: Mutex<LoginTable<Pending>>,
}

impl OidcProvider {
    /// Prepares logins with the provider of `config` (whose `issuer` must be set), redirecting back to
    /// `<server_url>/oidc/callback`. Nothing is fetched yet: see [`OidcProvider::discover`].
    pub fn new(config: &OidcConfig, server_url: &str) -> Result<OidcProvider, OidcError> {
        let issuer_text = config.issuer.clone().unwrap_or_default();
        let issuer = IssuerUrl::new(issuer_text.clone()).map_err(|source| OidcError::Url {
            key: "oidc.issuer",
            url: issuer_text,
            source,
        })?;
        let callback = format!("{}{CALLBACK_PATH}", server_url.trim_end_matches('/'));
        let redirect = RedirectUrl::new(callback.clone()).map_err(|source| OidcError::Url {
            key: "server_url",
            url: callback,
            source,
        })?;
        let http = reqwest::Client::builder()
            // Following redirects from the provider would let it point this server at arbitrary URLs.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(OidcError::HttpClient)?;
        Ok(OidcProvider {
            issuer,
            client_id: ClientId::new(config.client_id.clone()),
            client_secret: ClientSecret::new(config.client_secret.expose().to_string()),
            redirect,
            // `openidconnect` always asks for `openid` itself; listing it again would repeat it in the request.
            scopes: config.scope.iter().filter(|s| s.as_str() != "openid").cloned().collect(),
            extra_params: config.extra_params.clone(),
            pkce: config.pkce.enabled.then_some(config.pkce.method),
            use_expiry_from_token: config.use_expiry_from_token,
            rules: AccessRules::from_config(config),
            http,
            discovered: tokio::sync::Mutex::new(None),
            logins: Mutex::new(LoginTable::new(LOGIN_TTL, MAX_LOGINS)),
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    /// Fetches the provider's metadata and signing keys now (at start-up), replacing any held.
    pub async fn discover(&self) -> Result<(), OidcError> {
        let client = self.fetch_client().await?;
        *self.discovered.lock().await = Some(Discovered { client, at: Instant::now() });
        Ok(())
    }

    /// Starts a login for the interactive registration `registration_id`: records state, nonce and PKCE verifier,
    /// and returns the authorization URL to redirect the browser to.
    pub async fn begin(&self, registration_id: &str) -> Result<Authorization, OidcError> {
        let client = self.client().await?;
        let mut request =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for scope in &self.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let pkce_verifier = match self.pkce {
            Some(PkceMethod::S256) => {
                let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
                request = request.set_pkce_challenge(challenge);
                Some(verifier)
            }
            Some(PkceMethod::Plain) => {
                // `openidconnect` only builds S256 challenges; with `plain` the challenge is the verifier itself.
                let verifier = PkceCodeVerifier::new(random_verifier());
                request = request
                    .add_extra_param("code_challenge", verifier.secret().clone())
                    .add_extra_param("code_challenge_method", "plain");
                Some(verifier)
            }
            None => None,
        };
        for (name, value) in &self.extra_params {
            request = request.add_extra_param(name.as_str(), value.as_str());
        }
        let (url, state, nonce) = request.url();
        let state = state.into_secret();
        let pending = Pending { registration_id: registration_id.to_string(), nonce, pkce_verifier };
        self.logins_lock().insert(state.clone(), pending, Instant::now());
        Ok(Authorization { url: url.to_string(), state })
    }

    /// Finishes a login: checks the browser, exchanges the code, verifies the ID token (signature, issuer,
    /// audience, expiry, nonce), merges the userinfo claims, and applies the allow-lists.
    pub async fn finish(&self, callback: Callback<'_>) -> Result<Login, OidcError> {
        // Checked before the state is consumed, so a forged callback cannot cancel someone else's login.
        if callback.browser_state != Some(callback.state) {
            return Err(OidcError::StateMismatch);
        }
        let pending = self.logins_lock().take(callback.state, Instant::now()).ok_or(OidcError::UnknownState)?;
        let client = self.client().await?;
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(callback.code.to_string()))
            .map_err(|_| OidcError::NoTokenEndpoint { issuer: self.issuer().to_string() })?;
        if let Some(verifier) = pending.pkce_verifier {
            exchange = exchange.set_pkce_verifier(verifier);
        }
        let tokens = exchange.request_async(&self.http).await.map_err(|e| match e {
            RequestTokenError::Request(source) => OidcError::TokenRequest(source),
            other => OidcError::CodeExchange(other),
        })?;
        // The standard response type drops unknown claims, so the token is read again with the `groups` claim.
        let raw = tokens.id_token().ok_or(OidcError::NoIdToken)?.to_string();
        let id_token = GroupsIdToken::from_str(&raw).map_err(OidcError::IdTokenFormat)?;
        let claims = id_token.claims(&client.id_token_verifier(), &pending.nonce).map_err(OidcError::IdToken)?;
        let mut identity = identity_from_token(claims);
        // Providers following the code flow strictly put profile claims only in userinfo; a failure there still
        // leaves the ID token's claims, as with Headscale.
        if let Ok(request) = client.user_info(tokens.access_token().clone(), Some(claims.subject().clone())) {
            let answer: Result<UserInfoClaims<GroupsClaim, CoreGenderClaim>, _> =
                request.request_async(&self.http).await;
            match answer {
                Ok(info) => identity = identity.overlay(identity_from_userinfo(&info)),
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer(), error = %e, "userinfo request failed; using the ID token's claims")
                }
            }
        }
        self.rules.check(&identity)?;
        let profile = self.rules.profile(&identity)?;
        Ok(Login {
            registration_id: pending.registration_id,
            profile,
            node_expiry_ms: self.use_expiry_from_token.then(|| claims.expiration().timestamp_millis()),
        })
    }

    /// How many logins are in flight.
    pub fn logins_in_flight(&self) -> usize {
        self.logins_lock().len()
    }

    /// The discovered client, fetching metadata when none is held or it is older than [`METADATA_MAX_AGE`]. When a
    /// refresh fails the held metadata is used: the provider's keys rarely change, and a login is better than none.
    async fn client(&self) -> Result<Arc<DiscoveredClient>, OidcError> {
        let mut slot = self.discovered.lock().await;
        if let Some(held) = slot.as_ref().filter(|d| d.at.elapsed() < METADATA_MAX_AGE) {
            return Ok(held.client.clone());
        }
        match self.fetch_client().await {
            Ok(client) => {
                *slot = Some(Discovered { client: client.clone(), at: Instant::now() });
                Ok(client)
            }
            Err(e) => match slot.as_ref() {
                Some(held) => {
                    tracing::warn!(issuer = %self.issuer(), error = %error_chain(&e), "OIDC metadata refresh failed; using the held metadata");
                    Ok(held.client.clone())
                }
                None => Err(e),
            },
        }
    }

    async fn fetch_client(&self) -> Result<Arc<DiscoveredClient>, OidcError> {
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|source| OidcError::Discovery { issuer: self.issuer().to_string(), source })?;
        let client =
            CoreClient::from_provider_metadata(metadata, self.client_id.clone(), Some(self.client_secret.clone()))
                .set_redirect_uri(self.redirect.clone());
        tracing::info!(issuer = %self.issuer(), "OIDC provider discovered");
        Ok(Arc::new(client))
    }

    fn logins_lock(&self) -> std::sync::MutexGuard<'_, LoginTable<Pending>> {
        // The table is consistent between statements, so a panic elsewhere leaves it usable.
        self.logins.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An error with its sources, for logs and pages: `openidconnect`'s top-level messages alone rarely say why.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn identity_from_token(claims: &IdTokenClaims<GroupsClaim, CoreGenderClaim>) -> Identity {
    Identity {
        issuer: claims.issuer().to_string(),
        subject: claims.subject().to_string(),
        email: claims.email().map(|e| e.to_string()),
        email_verified: claims.email_verified().unwrap_or(false),
        preferred_username: claims.preferred_username().map(|u| u.to_string()),
        name: claims.name().and_then(|n| n.get(None)).map(|n| n.to_string()),
        groups: claims.additional_claims().names(),
    }
}

fn identity_from_userinfo(info: &UserInfoClaims<GroupsClaim, CoreGenderClaim>) -> Identity {
    Identity {
        issuer: String::new(),
        subject: info.subject().to_string(),
        email: info.email().map(|e| e.to_string()),
        email_verified: info.email_verified().unwrap_or(false),
        preferred_username: info.preferred_username().map(|u| u.to_string()),
        name: info.name().and_then(|n| n.get(None)).map(|n| n.to_string()),
        groups: info.additional_claims().names(),
    }
}

/// A PKCE verifier for the `plain` method: 64 characters of RFC 7636's unreserved set.
fn random_verifier() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    let mut rng = rand::thread_rng();
    (0..64).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_claim_accepts_list_string_or_junk() {
        let parse = |json: &str| serde_json::from_str::<GroupsClaim>(json).unwrap().names();
        assert_eq!(parse(r#"{"groups":["a","b"]}"#), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(parse(r#"{"groups":"a"}"#), vec!["a".to_string()]);
        assert_eq!(parse(r#"{"groups":[{"id":1},"b"]}"#), vec!["b".to_string()]);
        assert!(parse(r#"{"groups":7}"#).is_empty());
        assert!(parse("{}").is_empty());
    }

    fn config(issuer: &str) -> OidcConfig {
        let mut config = tailwarden_config::Config::default().oidc;
        config.issuer = Some(issuer.to_string());
        config.client_id = "tailwarden".into();
        config.client_secret = tailwarden_config::Secret::new("s3cret");
        config
    }

    #[test]
    fn new_checks_urls_without_fetching() {
        let p = OidcProvider::new(&config("http://127.0.0.1:1"), "http://127.0.0.1:8080/").unwrap();
        assert_eq!(p.issuer(), "http://127.0.0.1:1");
        assert_eq!(p.redirect.as_str(), "http://127.0.0.1:8080/oidc/callback");
        assert!(!p.scopes.iter().any(|s| s == "openid"));
        assert!(matches!(
            OidcProvider::new(&config("not a url"), "http://127.0.0.1:8080"),
            Err(OidcError::Url { key: "oidc.issuer", .. })
        ));
    }

    #[tokio::test]
    async fn unreachable_issuer_fails_discovery_and_begin() {
        // Port 1 on loopback is closed: the connection is refused at once.
        let p = OidcProvider::new(&config("http://127.0.0.1:1"), "http://127.0.0.1:8080").unwrap();
        assert!(matches!(p.discover().await, Err(OidcError::Discovery { .. })));
        assert!(matches!(p.begin("reg").await, Err(OidcError::Discovery { .. })));
        assert_eq!(p.logins_in_flight(), 0);
    }

    #[tokio::test]
    async fn callbacks_need_the_browsers_state_and_a_known_login() {
        let p = OidcProvider::new(&config("http://127.0.0.1:1"), "http://127.0.0.1:8080").unwrap();
        let cb = |browser| Callback { state: "abc", code: "code", browser_state: browser };
        assert!(matches!(p.finish(cb(None)).await, Err(OidcError::StateMismatch)));
        assert!(matches!(p.finish(cb(Some("xyz"))).await, Err(OidcError::StateMismatch)));
        assert!(matches!(p.finish(cb(Some("abc"))).await, Err(OidcError::UnknownState)));
    }
}
