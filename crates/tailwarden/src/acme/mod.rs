//! Certificates from an ACME CA (Let's Encrypt) for `tls_letsencrypt_hostname`, as Headscale's autocert setup
//! provides them: HTTP-01 on `tls_letsencrypt_listen`, account and certificate cached in
//! `tls_letsencrypt_cache_dir`, renewal in the background with the new certificate swapped into the running
//! HTTPS listeners.
//!
//! The server does not wait for the first certificate: a valid cached one is served at once, otherwise TLS
//! handshakes fail until issuance succeeds (Headscale's autocert likewise cannot complete a handshake before
//! then). Keeping the control plane up while the CA is unreachable lets the admin socket and logs explain why.

mod cache;
mod client;
mod error;
mod http01;

pub use error::AcmeError;

use anyhow::Context;
use cache::{Cache, Issued};
use http01::Challenges;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tailwarden_config::LetsEncryptConfig;

/// Renew when this much validity is left (Let's Encrypt's own advice for 90-day certificates).
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// First retry delay after a failed issuance; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The certificate the HTTPS listeners present; swapped in place on renewal so open listeners pick it up.
#[derive(Debug, Default)]
pub struct CertResolver(RwLock<Option<Arc<CertifiedKey>>>);

impl CertResolver {
    fn set(&self, key: Arc<CertifiedKey>) {
        // Only whole values are ever stored, so a poisoned lock still holds a usable certificate.
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// When to renew a certificate valid from `not_before` to `not_after`: [`RENEW_BEFORE`] ahead of expiry, or with a
/// third of its lifetime left when it is shorter-lived than that makes sense for.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_after.checked_sub(RENEW_BEFORE.min(lifetime / 3)).unwrap_or(not_before)
}

/// The delay before retry number `failures` (1 for the first failure).
pub fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// ACME for one hostname: the certificate resolver for the HTTPS listeners and the tasks that keep it filled.
pub struct Acme {
    resolver: Arc<CertResolver>,
    manager: Manager,
    responder: tokio::net::TcpListener,
    https_base: String,
}

impl Acme {
    /// Binds the HTTP-01 responder and installs a still-valid cached certificate; contacts the CA only later, in
    /// [`Acme::run`].
    pub async fn start(config: &LetsEncryptConfig, hostname: &str, server_url: &str) -> anyhow::Result<Acme> {
        let responder = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("tls_letsencrypt_listen {}", config.listen))?;
        let cache = Cache::new(&config.cache_dir, hostname);
        let resolver = Arc::new(CertResolver::default());
        let mut renew = SystemTime::UNIX_EPOCH;
        match cache.certificate() {
            Ok(Some(issued)) if issued.not_after > SystemTime::now() => {
                resolver.set(certified_key(issued.chain.clone(), &issued.key)?);
                renew = renew_at(issued.not_before, issued.not_after);
                tracing::info!(hostname, not_after = %humantime(issued.not_after), "using the cached ACME certificate");
            }
            Ok(Some(_)) => tracing::info!(hostname, "the cached ACME certificate has expired; requesting a new one"),
            Ok(None) => tracing::info!(hostname, "no cached ACME certificate; requesting one"),
            Err(e) => tracing::warn!(
                hostname,
                error = format!("{:#}", anyhow::Error::from(e)),
                "ignoring the unreadable cached ACME certificate"
            ),
        }
        let https_base = match server_url.strip_prefix("http://") {
            Some(rest) => format!("https://{rest}"),
            None => server_url.to_owned(),
        };
        let manager = Manager {
            hostname: hostname.to_owned(),
            directory_url: config.directory_url.clone(),
            email: config.email.clone(),
            ca_path: config.ca_path.clone(),
            cache,
            challenges: Challenges::default(),
            resolver: resolver.clone(),
            renew,
        };
        tracing::info!(addr = %config.listen, "ACME HTTP-01 responder up");
        Ok(Acme { resolver, manager, responder, https_base })
    }

    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// Serves HTTP-01 and renews for as long as the server runs; ends only if the responder's listener fails.
    pub async fn run(self) -> anyhow::Result<()> {
        let app = http01::router(self.manager.challenges.clone(), self.https_base);
        tokio::select! {
            res = axum::serve(self.responder, app) => res.context("ACME HTTP-01 responder"),
            never = self.manager.run() => match never {},
        }
    }
}

struct Manager {
    hostname: String,
    directory_url: String,
    email: String,
    ca_path: Option<std::path::PathBuf>,
    cache: Cache,
    challenges: Challenges,
    resolver: Arc<CertResolver>,
    renew: SystemTime,
}

impl Manager {
    async fn run(mut self) -> std::convert::Infallible {
        let mut failures = 0;
        loop {
            let wait = self.renew.duration_since(SystemTime::now()).unwrap_or_default();
            if !wait.is_zero() {
                tracing::info!(hostname = self.hostname, renew_at = %humantime(self.renew), "next ACME renewal scheduled");
            }
            tokio::time::sleep(wait).await;
            let result = self.obtain().await;
            self.challenges.clear();
            match result {
                Ok(issued) => {
                    failures = 0;
                    self.renew = renew_at(issued.not_before, issued.not_after);
                    tracing::info!(hostname = self.hostname, not_after = %humantime(issued.not_after), "ACME certificate issued and installed");
                }
                Err(e) => {
                    failures += 1;
                    let retry = backoff(failures);
                    tracing::error!(
                        hostname = self.hostname,
                        error = format!("{:#}", anyhow::Error::from(e)),
                        retry_in_secs = retry.as_secs(),
                        "obtaining the ACME certificate failed"
                    );
                    self.renew = SystemTime::now() + retry;
                }
            }
        }
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let http = || {
            client::ReqwestClient::new(self.ca_path.as_deref())
                .map(|c| Box::new(c) as Box<dyn instant_acme::HttpClient>)
        };
        if let Some(credentials) = self.cache.account(&self.directory_url)? {
            return Account::builder_with_http(http()?)
                .from_credentials(credentials)
                .await
                .map_err(|source| AcmeError::Protocol { step: "loading the cached account", source });
        }
        let contact = (!self.email.is_empty()).then(|| format!("mailto:{}", self.email));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
        let (account, credentials) = Account::builder_with_http(http()?)
            .create(&new, self.directory_url.clone(), None)
            .await
            .map_err(|source| AcmeError::Protocol { step: "registering an account", source })?;
        self.cache.store_account(&self.directory_url, credentials)?;
        tracing::info!(directory = self.directory_url, "ACME account registered");
        Ok(account)
    }

    /// One issuance: order, answer HTTP-01, finalize, download, cache, install.
    async fn obtain(&self) -> Result<Issued, AcmeError> {
        let protocol = |step| move |source| AcmeError::Protocol { step, source };
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(self.hostname.clone())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(protocol("creating an order"))?;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(protocol("fetching an authorization"))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => return Err(AcmeError::Authorization { hostname: self.hostname.clone(), status }),
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::NoHttp01Challenge { hostname: self.hostname.clone() })?;
            self.challenges.insert(challenge.token.clone(), challenge.key_authorization().as_str().to_owned());
            challenge.set_ready().await.map_err(protocol("marking the challenge ready"))?;
        }
        let retries = RetryPolicy::new().timeout(Duration::from_secs(120));
        let status = order.poll_ready(&retries).await.map_err(protocol("waiting for validation"))?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::OrderNotReady { status, detail: challenge_error(&mut order).await });
        }
        let key_pem = order.finalize().await.map_err(protocol("finalizing the order"))?;
        let chain_pem = order.poll_certificate(&retries).await.map_err(protocol("downloading the certificate"))?;
        let issued =
            Issued::from_pem(chain_pem.as_bytes(), key_pem.as_bytes(), std::path::Path::new("the ACME response"))?;
        let key = certified_key(issued.chain.clone(), &issued.key)?;
        self.cache.store_certificate(&chain_pem, &key_pem)?;
        self.resolver.set(key);
        Ok(issued)
    }
}

/// The CA's explanation of a failed validation, when it gives one.
async fn challenge_error(order: &mut instant_acme::Order) -> Option<String> {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        if let Some(problem) = authorization.challenges.iter().find_map(|c| c.error.as_ref()) {
            return Some(problem.to_string());
        }
    }
    None
}

fn certified_key(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: &rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, AcmeError> {
    let signing = rustls::crypto::ring::sign::any_supported_type(key).map_err(AcmeError::Key)?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

fn humantime(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn ninety_day_certificates_renew_thirty_days_ahead() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        assert_eq!(renew_at(start, start + 90 * DAY), start + 60 * DAY);
    }

    #[test]
    fn short_lived_certificates_renew_with_a_third_left() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        assert_eq!(renew_at(start, start + 6 * DAY), start + 4 * DAY);
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(5), Duration::from_secs(160));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
