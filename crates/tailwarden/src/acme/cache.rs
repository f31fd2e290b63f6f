//! `tls_letsencrypt_cache_dir`: the ACME account (`acme_account.json`) and the certificate
//! (`<hostname>.crt`, `<hostname>.key`), written atomically with owner-only permissions.

use super::AcmeError;
use instant_acme::AccountCredentials;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use x509_cert::der::Decode;

/// A certificate chain with its key and the leaf's validity period.
pub struct Issued {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Issued {
    /// Parses PEM text as issued by the CA (leaf first) and the PEM private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], origin: &Path) -> Result<Issued, AcmeError> {
        let pem_error = |source| AcmeError::Pem { path: origin.to_owned(), source };
        let chain = rustls_pemfile::certs(&mut &chain_pem[..]).collect::<Result<Vec<_>, _>>().map_err(pem_error)?;
        let leaf = chain.first().ok_or_else(|| AcmeError::NoCertificate { path: origin.to_owned() })?;
        let validity = x509_cert::Certificate::from_der(leaf).map_err(AcmeError::Certificate)?.tbs_certificate.validity;
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(pem_error)?
            .ok_or_else(|| AcmeError::NoKey { path: origin.to_owned() })?;
        Ok(Issued {
            chain,
            key,
            not_before: SystemTime::UNIX_EPOCH + validity.not_before.to_unix_duration(),
            not_after: SystemTime::UNIX_EPOCH + validity.not_after.to_unix_duration(),
        })
    }
}

/// The account file: the credentials and the directory they belong to, so changing `acme_url` registers anew.
#[derive(Serialize, Deserialize)]
struct AccountFile {
    directory_url: String,
    credentials: AccountCredentials,
}

pub struct Cache {
    dir: PathBuf,
    hostname: String,
}

impl Cache {
    pub fn new(dir: &Path, hostname: &str) -> Cache {
        Cache { dir: dir.to_owned(), hostname: hostname.to_owned() }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.hostname))
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.key", self.hostname))
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join("acme_account.json")
    }

    /// The cached certificate for the hostname, if both files exist.
    pub fn certificate(&self) -> Result<Option<Issued>, AcmeError> {
        let (cert_path, key_path) = (self.cert_path(), self.key_path());
        let (Some(chain), Some(key)) = (read_optional(&cert_path)?, read_optional(&key_path)?) else {
            return Ok(None);
        };
        Issued::from_pem(&chain, &key, &cert_path).map(Some)
    }

    pub fn store_certificate(&self, chain_pem: &str, key_pem: &str) -> Result<(), AcmeError> {
        // The key first: a certificate on disk always has its key next to it.
        write_private(&self.key_path(), key_pem.as_bytes())?;
        write_private(&self.cert_path(), chain_pem.as_bytes())
    }

    /// The cached account, unless it was registered with another directory.
    pub fn account(&self, directory_url: &str) -> Result<Option<AccountCredentials>, AcmeError> {
        let path = self.account_path();
        let Some(bytes) = read_optional(&path)? else { return Ok(None) };
        let file: AccountFile =
            serde_json::from_slice(&bytes).map_err(|source| AcmeError::AccountFile { path: path.clone(), source })?;
        Ok((file.directory_url == directory_url).then_some(file.credentials))
    }

    pub fn store_account(&self, directory_url: &str, credentials: AccountCredentials) -> Result<(), AcmeError> {
        let file = AccountFile { directory_url: directory_url.to_owned(), credentials };
        let json = serde_json::to_vec_pretty(&file).map_err(AcmeError::AccountEncode)?;
        write_private(&self.account_path(), &json)
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, AcmeError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AcmeError::Cache { what: "reading", path: path.to_owned(), source }),
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves a half-written key or certificate.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    use std::os::unix::fs::OpenOptionsExt;
    fn cache_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AcmeError + use<> {
        let path = path.to_owned();
        move |source| AcmeError::Cache { what, path, source }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(cache_error("creating", dir))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(cache_error("creating", &tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(cache_error("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(cache_error("renaming into place", path))
}
