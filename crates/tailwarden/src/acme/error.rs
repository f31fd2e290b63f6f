//! What can go wrong while obtaining, caching or loading an ACME certificate.

use std::path::PathBuf;

/// An ACME failure; the renewal loop logs it with its source chain and retries.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("reading tls_letsencrypt_ca_path {path}")]
    CaFile { path: PathBuf, source: std::io::Error },
    #[error("parsing the certificates in tls_letsencrypt_ca_path {path}")]
    CaParse { path: PathBuf, source: reqwest::Error },
    #[error("building the HTTP client for the ACME directory")]
    HttpClient(#[source] reqwest::Error),
    #[error("ACME {step}")]
    Protocol { step: &'static str, source: instant_acme::Error },
    #[error("the CA offered no HTTP-01 challenge for {hostname}")]
    NoHttp01Challenge { hostname: String },
    #[error("the authorization for {hostname} is {status:?}")]
    Authorization { hostname: String, status: instant_acme::AuthorizationStatus },
    #[error("the order became {status:?} instead of ready{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    OrderNotReady { status: instant_acme::OrderStatus, detail: Option<String> },
    #[error("{what} {path}")]
    Cache { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("decoding the cached ACME account {path}")]
    AccountFile { path: PathBuf, source: serde_json::Error },
    #[error("encoding the ACME account")]
    AccountEncode(#[source] serde_json::Error),
    #[error("no certificate in {path}")]
    NoCertificate { path: PathBuf },
    #[error("no private key in {path}")]
    NoKey { path: PathBuf },
    #[error("parsing PEM in {path}")]
    Pem { path: PathBuf, source: std::io::Error },
    #[error("decoding the issued certificate")]
    Certificate(#[source] x509_cert::der::Error),
    #[error("the certificate's private key is not usable")]
    Key(#[source] rustls::Error),
}
