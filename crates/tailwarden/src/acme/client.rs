//! instant-acme's HTTP client over reqwest, so the ACME directory connection uses the workspace's rustls (ring)
//! stack and can trust a private CA from `tls_letsencrypt_ca_path`.

use super::AcmeError;
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

pub struct ReqwestClient(reqwest::Client);

impl ReqwestClient {
    /// Trusts the built-in and system roots, plus every certificate in `ca_path`.
    pub fn new(ca_path: Option<&Path>) -> Result<ReqwestClient, AcmeError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("tailwarden/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_path {
            let pem = std::fs::read(path).map_err(|source| AcmeError::CaFile { path: path.to_owned(), source })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|source| AcmeError::CaParse { path: path.to_owned(), source })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map(ReqwestClient).map_err(AcmeError::HttpClient)
    }
}

impl HttpClient for ReqwestClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let req = reqwest::Request::try_from(http::Request::from_parts(parts, reqwest::Body::from(body)))
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let resp = client.execute(req).await.map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(http::Response::<reqwest::Body>::from(resp)))
        })
    }
}
