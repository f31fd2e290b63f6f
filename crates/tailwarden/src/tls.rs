//! TLS for the HTTPS listener: certificate files from the config, an ACME certificate kept current by
//! [`crate::acme`], or a self-signed certificate generated at start for loopback and lab setups (Tailscale clients
//! speak DERP only over TLS; the DERP map's `InsecureForTests` makes them accept it).

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use std::sync::Arc;

/// Where the HTTPS listeners' certificate comes from.
pub enum CertSource<'a> {
    /// `tls_cert_path` and `tls_key_path`.
    Files { cert: &'a Path, key: &'a Path },
    /// `tls_letsencrypt_hostname`: whatever certificate ACME currently holds.
    Acme(Arc<crate::acme::CertResolver>),
    /// Generated at start for these names.
    SelfSigned(&'a [String]),
}

/// Builds the server TLS configuration.
pub fn server_config(source: CertSource<'_>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth();
    let mut config = match source {
        CertSource::Files { cert, key } => {
            let (chain, key) = load_files(cert, key)?;
            builder.with_single_cert(chain, key).context("TLS certificate and key do not match")?
        }
        CertSource::SelfSigned(names) => {
            let (chain, key) = self_signed(names)?;
            builder.with_single_cert(chain, key).context("TLS certificate and key do not match")?
        }
        CertSource::Acme(resolver) => builder.with_cert_resolver(resolver),
    };
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

/// TLS client settings: the system's CA bundle (`SSL_CERT_FILE` or the usual distribution paths), or no
/// verification at all with `cli.insecure`.
pub fn client_config(insecure: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let mut config = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider))).with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
        let candidates =
            ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];
        let path = env
            .into_iter()
            .chain(candidates.iter().map(std::path::PathBuf::from))
            .find(|p| p.exists())
            .context("no CA bundle found (set SSL_CERT_FILE, or cli.insecure for testing)")?;
        let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
            let _ = roots.add(cert);
        }
        anyhow::ensure!(!roots.is_empty(), "no usable certificates in {}", path.display());
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `cli.insecure`: accepts any server certificate but still checks the handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
