//! TLS for the HTTPS listener: certificate files from the config, or a self-signed certificate generated at start
//! for loopback and lab setups (Tailscale clients speak DERP only over TLS; the DERP map's `InsecureForTests`
//! makes them accept it).

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use std::sync::Arc;

/// Builds the server TLS configuration.
pub fn server_config(cert: Option<&Path>, key: Option<&Path>, self_signed_names: &[String]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = match (cert, key) {
        (Some(cert), Some(key)) => load_files(cert, key)?,
        _ => self_signed(self_signed_names)?,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS certificate and key do not match")?;
    // DERP and the control upgrade are HTTP/1.1 upgrades; offering h2 would break them.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_files(cert: &Path, key: &Path) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("reading tls_cert_path {}", cert.display()))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate found in {}", cert.display());
    let key_pem = std::fs::read(key).with_context(|| format!("reading tls_key_path {}", key.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("parsing private key in {}", key.display()))?
        .with_context(|| format!("no private key found in {}", key.display()))?;
    Ok((chain, key))
}

fn self_signed(names: &[String]) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let mut names = names.to_vec();
    if names.is_empty() {
        names.push("127.0.0.1".into());
    }
    let cert = rcgen::generate_simple_self_signed(names).context("generating self-signed certificate")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    Ok((vec![cert.cert.der().clone()], key))
}
