//! ACME end to end: the Debian `pebble` test CA and its `pebble-challtestsrv` DNS inside the loopback-only
//! namespace. tailwarden obtains a certificate for a name only pebble's DNS knows (pointing at 127.0.0.1),
//! answering HTTP-01 itself, and serves it on its HTTPS listener; after a restart with pebble gone it serves the
//! cached certificate, so no new order was needed.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tailwarden_e2e::{Server, local_port, retry};

const HOSTNAME: &str = "tailwarden.acme.test";

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[&str], env: &[(&str, &str)], dir: &Path, log: &str) -> anyhow::Result<Process> {
    let out = std::fs::File::create(dir.join(log))?;
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {program} (install the Debian package `pebble`)"))?;
    Ok(Process(child))
}

/// pebble and pebble-challtestsrv on fresh loopback ports.
struct Pebble {
    _pebble: Process,
    _dns: Process,
    /// The ACME directory URL.
    directory: String,
    management: u16,
    /// The CA that signed pebble's own HTTPS certificate (PEM), for tailwarden's `tls_letsencrypt_ca_path`.
    tls_ca: std::path::PathBuf,
}

impl Pebble {
    fn start(dir: &Path, http01_port: u16) -> anyhow::Result<Pebble> {
        let (acme, management, dns) = (local_port(), local_port(), local_port());
        let tls_ca = dir.join("pebble-tls-ca.pem");
        let (cert, key) = (dir.join("pebble-tls.pem"), dir.join("pebble-tls.key"));
        write_tls_files(&tls_ca, &cert, &key)?;
        let config = dir.join("pebble.json");
        std::fs::write(
            &config,
            serde_json::json!({ "pebble": {
                "listenAddress": format!("127.0.0.1:{acme}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http01_port,
                "tlsPort": local_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }})
            .to_string(),
        )?;
        let dns_addr = format!("127.0.0.1:{dns}");
        let challtestsrv = spawn(
            "pebble-challtestsrv",
            &[
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &dns_addr,
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", local_port()),
            ],
            &[],
            dir,
            "challtestsrv.log",
        )?;
        // No artificial validation delays and no injected bad nonces: the test is about tailwarden, not retries.
        let env = [("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_WFE_NONCEREJECT", "0")];
        let pebble = spawn(
            "pebble",
            &["-config", config.to_str().context("path")?, "-dnsserver", &dns_addr],
            &env,
            dir,
            "pebble.log",
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", acme)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "pebble did not come up: {}",
                    std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Pebble {
            _pebble: pebble,
            _dns: challtestsrv,
            directory: format!("https://127.0.0.1:{acme}/dir"),
            management,
            tls_ca,
        })
    }

    /// The root pebble issues under (generated at each start), from its management interface.
    async fn issuing_root(&self) -> anyhow::Result<reqwest::Certificate> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.tls_ca)?)?;
        let client = reqwest::Client::builder().add_root_certificate(ca).timeout(Duration::from_secs(10)).build()?;
        let pem = client
            .get(format!("https://127.0.0.1:{}/roots/0", self.management))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok(reqwest::Certificate::from_pem(&pem)?)
    }
}

/// A CA and a certificate it signs for 127.0.0.1, for pebble's own HTTPS listeners.
fn write_tls_files(ca_path: &Path, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "tailwarden e2e pebble TLS CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&key, &ca, &ca_key)?;
    std::fs::write(ca_path, ca.pem())?;
    std::fs::write(cert_path, cert.pem())?;
    std::fs::write(key_path, key.serialize_pem())?;
    Ok(())
}

/// The leaf certificate tailwarden presents for `HOSTNAME` on `port`, verified against `root` only.
async fn served_certificate(port: u16, root: &reqwest::Certificate) -> anyhow::Result<Vec<u8>> {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root.clone())
        .resolve(HOSTNAME, SocketAddr::from(([127, 0, 0, 1], port)))
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let response = client.get(format!("https://{HOSTNAME}:{port}/health")).send().await?.error_for_status()?;
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().context("no TLS info")?;
    info.peer_certificate().map(<[u8]>::to_vec).context("no peer certificate")
}

async fn wait_for_certificate(port: u16, root: &reqwest::Certificate, server: &Server) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match served_certificate(port, root).await {
            Ok(der) => return Ok(der),
            Err(e) if Instant::now() > deadline => {
                bail!("no ACME certificate served: {e:#}\nserver log:\n{}", server.log())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_certificate_from_pebble_is_served_and_reused_after_restart() -> anyhow::Result<()> {
    tailwarden_e2e::assert_isolated()?;
    let tmp = tempfile::tempdir()?;
    let http01 = local_port();
    let pebble = Pebble::start(tmp.path(), http01)?;
    let cache = tmp.path().join("acme-cache");
    let mut server = Server::start_with(
        tmp.path(),
        &format!(
            "tls_letsencrypt_hostname: {HOSTNAME}\ntls_letsencrypt_listen: 127.0.0.1:{http01}\n\
             tls_letsencrypt_cache_dir: {}\nacme_url: {}\nacme_email: admin@example.com\ntls_letsencrypt_ca_path: {}\n",
            cache.display(),
            pebble.directory,
            pebble.tls_ca.display()
        ),
    )?;
    let port: u16 = server.url.rsplit(':').next().context("port in url")?.parse()?;
    let root = pebble.issuing_root().await?;

    // Verification with only pebble's root trusted and the hostname as the TLS name proves the certificate is for
    // that name and was issued by pebble.
    let first = wait_for_certificate(port, &root, &server).await?;
    assert!(cache.join(format!("{HOSTNAME}.crt")).is_file() && cache.join("acme_account.json").is_file());
    assert!(server.log().contains("ACME certificate issued and installed"), "{}", server.log());

    // The HTTP-01 responder sends everything but challenges to HTTPS.
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let redirect = plain.get(format!("http://127.0.0.1:{http01}/health")).send().await?;
    assert_eq!(redirect.status(), reqwest::StatusCode::PERMANENT_REDIRECT);
    let unknown = plain.get(format!("http://127.0.0.1:{http01}/.well-known/acme-challenge/unknown")).send().await?;
    assert_eq!(unknown.status(), reqwest::StatusCode::NOT_FOUND);

    // With the CA gone, a restart can only serve what the cache holds.
    drop(pebble);
    server.restart()?;
    let again = retry("cached certificate after restart", Duration::from_secs(20), || {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(served_certificate(port, &root)))
    })?;
    assert_eq!(again, first, "the cached certificate is served again");
    assert!(server.log().contains("using the cached ACME certificate"), "{}", server.log());
    assert_eq!(server.log().matches("ACME certificate issued and installed").count(), 1, "no second issuance");
    Ok(())
}
