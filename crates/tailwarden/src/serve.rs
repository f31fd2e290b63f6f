//! `tailwarden serve`: opens the store, loads keys, and runs the listeners (HTTP, HTTPS with DERP, STUN, the
//! admin unix socket) until SIGINT/SIGTERM.

use crate::acme::Acme;
use crate::oidc_http::{self, OidcLogin};
use crate::{derpmap, live, tls};
use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::serve::ListenerExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use tailwarden_config::{Config, IpAllocation};
use tailwarden_control::keys::ServerKeys;
use tailwarden_control::{Control, DerpAdmission, DnsSettings, Live, PolicySource, Settings};
use tailwarden_derp::DerpServer;
use tailwarden_store::ipalloc::{AllocationStrategy, IpAllocator};
use tailwarden_store::{Store, StoreOptions};
use tailwarden_types::TenantId;
use tailwarden_wire::DnsRecord;
use tokio::net::TcpListener;

pub async fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let oidc = oidc_http::start(&config).await?;
    let allocator = IpAllocator::new(
        config.prefixes.v4,
        config.prefixes.v6,
        match config.prefixes.allocation {
            IpAllocation::Sequential => AllocationStrategy::Sequential,
            IpAllocation::Random => AllocationStrategy::Random,
        },
    )
    .context("prefixes")?;
    if let Some(dir) = database_dir(&config) {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let store =
        Store::open_with(&config.database_url(), StoreOptions { ip_allocator: allocator, ..Default::default() })
            .await
            .context("opening the database")?;
    let keys = ServerKeys::load_or_create(&config.noise.private_key_path, &config.derp.server.private_key_path)?;
    let derp_key = keys.derp_private();

    let acme = match &config.letsencrypt.hostname {
        Some(hostname) => Some(Acme::start(&config.letsencrypt, hostname, &config.server_url).await?),
        None => None,
    };
    // As in Headscale, a configured or ACME certificate turns the main listener into HTTPS.
    let plain_is_tls = (config.tls_cert_path.is_some() && config.tls_key_path.is_some()) || acme.is_some();
    let tls_config = if plain_is_tls || config.tls_listen_addr.is_some() {
        let names = config.tls_subject_names();
        let source = match (&acme, config.tls_cert_path.as_deref(), config.tls_key_path.as_deref()) {
            (Some(acme), _, _) => tls::CertSource::Acme(acme.resolver()),
            (None, Some(cert), Some(key)) => tls::CertSource::Files { cert, key },
            _ => tls::CertSource::SelfSigned(&names),
        };
        Some(tls::server_config(source)?)
    } else {
        None
    };
    let derp_port = match (plain_is_tls, config.tls_listen_addr) {
        (_, Some(addr)) => addr.port(),
        (true, None) => config.listen_addr.port(),
        (false, None) => {
            anyhow::ensure!(
                !config.derp.server.enabled,
                "the embedded DERP server needs TLS: set tls_listen_addr or tls_cert_path"
            );
            0
        }
    };
    let derp_map = derpmap::build(&config, derp_port).await?;
    let extra_records = live::initial_extra_records(&config)?;
    let settings = settings(&config, derp_map, extra_records);
    let policy_source = settings.policy_source.clone();
    let control = Control::new(store, settings, keys).await?;
    let _gc = control.spawn_background();
    if let PolicySource::File(path) = &policy_source {
        load_policy_file(&control, path).await?;
    }
    let derp = Arc::new(DerpServer::new(derp_key, Arc::new(DerpAdmission(control.clone()))));

    let public = public_router(&control, &derp, oidc, config.derp.server.enabled);
    let mut tasks = tokio::task::JoinSet::new();

    let listener =
        TcpListener::bind(config.listen_addr).await.with_context(|| format!("listen_addr {}", config.listen_addr))?;
    tracing::info!(addr = %config.listen_addr, tls = plain_is_tls, "control listener up");
    match (&tls_config, plain_is_tls) {
        (Some(tls), true) => {
            tasks.spawn(serve_tls(listener, tls.clone(), public.clone()));
        }
        _ => {
            let app = public.clone();
            let listener = listener.tap_io(|tcp| set_nodelay(tcp));
            tasks.spawn(async move { axum::serve(listener, app).await.context("HTTP listener") });
        }
    }
    if let (Some(addr), Some(tls)) = (config.tls_listen_addr, &tls_config) {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("tls_listen_addr {addr}"))?;
        tracing::info!(%addr, "HTTPS listener up (DERP)");
        tasks.spawn(serve_tls(listener, tls.clone(), public.clone()));
    }
    if config.derp.server.enabled
        && let Some(addr) = config.derp.server.stun_listen_addr
    {
        let socket =
            tokio::net::UdpSocket::bind(addr).await.with_context(|| format!("derp.server.stun_listen_addr {addr}"))?;
        tracing::info!(%addr, "STUN listener up");
        tasks.spawn(async move {
            tailwarden_derp::stun::serve_stun(socket).await;
            Ok(())
        });
    }
    if let Some(acme) = acme {
        tasks.spawn(acme.run());
    }
    tasks.spawn(serve_admin_socket(config.clone(), control.clone()));
    if let PolicySource::File(path) = policy_source {
        tasks.spawn(watch_policy_file(control.clone(), path));
    }
    if let Some(path) = config.dns.extra_records_path.clone() {
        tasks.spawn(live::watch_extra_records(control.clone(), path));
    }
    if config.derp.auto_update_enabled {
        tasks.spawn(live::refresh_derp_map(control.clone(), config.clone(), derp_port));
    }

    tokio::select! {
        Some(res) = tasks.join_next() => {
            res.context("listener task panicked")??;
            anyhow::bail!("a listener stopped unexpectedly");
        }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            derp.shutdown();
            control.flush_session_writes().await;
            let _ = std::fs::remove_file(&config.unix_socket);
            Ok(())
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log.level.as_filter()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log.format {
        tailwarden_config::LogFormat::Json => builder.json().try_init(),
        _ => builder.try_init(),
    };
}

fn database_dir(config: &Config) -> Option<std::path::PathBuf> {
    match config.database.kind {
        tailwarden_config::DatabaseType::Sqlite => config.database.sqlite.path.parent().map(|p| p.to_path_buf()),
        _ => None,
    }
}

fn settings(config: &Config, derp_map: tailwarden_wire::DerpMap, extra_records: Vec<DnsRecord>) -> Settings {
    let dns = &config.dns;
    Settings {
        server_url: config.server_url.clone(),
        derp_map: Live::new(derp_map),
        dns: DnsSettings {
            magic_dns: dns.magic_dns,
            base_domain: dns.base_domain.clone(),
            global_nameservers: dns.nameservers.global.clone(),
            split_nameservers: dns.nameservers.split.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            search_domains: dns.search_domains.clone(),
            extra_records: Live::new(extra_records),
            override_local_dns: dns.override_local_dns,
        },
        ephemeral_inactivity_timeout: config.node.ephemeral.inactivity_timeout,
        node_expiry: config.node.expiry,
        disable_log_tail: !config.logtail.enabled,
        disable_captive_portal_detection: true,
        randomize_client_port: config.randomize_client_port,
        keep_alive_interval: std::time::Duration::from_secs(50),
        policy_source: match (&config.policy.mode, &config.policy.path) {
            (tailwarden_config::PolicyMode::Database, _) => PolicySource::Database,
            (tailwarden_config::PolicyMode::File, Some(path)) => PolicySource::File(path.clone()),
            (tailwarden_config::PolicyMode::File, None) => PolicySource::AllowAll,
        },
        map_coalesce_window: config.batch_change_delay,
    }
}

/// Loads the policy file at start (a bad file stops the server) and keeps it live: reloaded on SIGHUP and when its
/// modification time changes. A rejected reload is logged and the previous policy stays in force.
async fn load_policy_file(control: &Arc<Control>, path: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("policy.path {}", path.display()))?;
    control
        .load_policy_file_text(TenantId::DEFAULT, Some(&text))
        .await
        .with_context(|| format!("policy.path {}", path.display()))?;
    tracing::info!(path = %path.display(), "policy loaded");
    Ok(())
}

async fn watch_policy_file(control: Arc<Control>, path: std::path::PathBuf) -> anyhow::Result<()> {
    let mut watch = live::FileWatch::new(path.clone(), live::FileWatch::modified(&path))?;
    loop {
        watch.changed().await;
        if let Err(e) = load_policy_file(&control, &path).await {
            tracing::error!(error = format!("{e:#}"), "policy reload rejected; the previous policy stays in force");
        }
    }
}

/// Everything clients reach on the network: control upgrade, DERP, probes, health, and the management API,
/// which requires an API key (`Authorization: Bearer …`).
fn public_router(
    control: &Arc<Control>,
    derp: &Arc<DerpServer>,
    oidc: Option<Arc<OidcLogin>>,
    derp_enabled: bool,
) -> Router {
    let mut router = tailwarden_control::noise_http::routes(control.clone())
        .route("/health", get(|| async { axum::Json(serde_json::json!({ "status": "pass" })) }))
        .route("/register/{id}", get(register_page))
        .route(tailwarden_oidc::CALLBACK_PATH, get(oidc_http::callback))
        .merge(tailwarden_api::authenticated_routes(control.clone()));
    if derp_enabled {
        let d = derp.clone();
        router = router
            .route("/derp", any(move |req: Request| async move { tailwarden_derp::http::handle_derp_upgrade(d, req).into_response() }))
            .route("/derp/probe", any(|req: Request| async move { tailwarden_derp::http::probe_response(req.method()).into_response() }))
            .route(
                "/derp/latency-check",
                any(|req: Request| async move { tailwarden_derp::http::probe_response(req.method()).into_response() }),
            )
            .route("/generate_204", any(|req: Request| async move { tailwarden_derp::http::generate_204(&req).into_response() }));
    }
    router.layer(axum::Extension(control.clone())).layer(axum::Extension(oidc))
}

/// The page an interactive login's AuthURL points to: with OIDC it sends the browser to the identity provider,
/// otherwise it tells the administrator the command that admits the node.
async fn register_page(
    axum::Extension(control): axum::Extension<Arc<Control>>,
    axum::Extension(oidc): axum::Extension<Option<Arc<OidcLogin>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    let safe: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).take(64).collect();
    // Checked before any OIDC state is created, so unknown ids cannot fill the table of logins in flight.
    if !control.pending_registration_exists(&safe) {
        return (
            http::StatusCode::NOT_FOUND,
            axum::response::Html("<h1>Unknown or expired registration</h1>".to_string()),
        )
            .into_response();
    }
    if let Some(oidc) = oidc {
        return oidc.begin(&safe).await;
    }
    axum::response::Html(format!(
        "<!doctype html><html><head><title>tailwarden: register machine</title></head><body>\
         <h1>Machine registration</h1><p>An administrator completes this registration with:</p>\
         <pre>tailwarden nodes register --user USERNAME --key {safe}</pre></body></html>"
    ))
    .into_response()
}

/// Turns Nagle's algorithm off, as Go does for every TCP connection. Left on, a response written in two pieces (an
/// HTTP/2 HEADERS then a DATA frame, each sealed as its own Noise record) waits for the client's delayed ACK: ~40 ms
/// added to every registration and first map on Linux.
fn set_nodelay(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "setting TCP_NODELAY");
    }
}

async fn serve_tls(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = listener.accept().await.context("accepting TLS connection")?;
        set_nodelay(&tcp);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended");
            }
        });
    }
}

/// The management API on the unix socket; the socket's file permissions are the access control.
async fn serve_admin_socket(config: Config, control: Arc<Control>) -> anyhow::Result<()> {
    let path = &config.unix_socket;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        // A socket left by a crashed server; a live server would still answer on it.
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!("unix_socket {} is in use by another running server", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(|| format!("unix_socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.unix_socket_permission))
            .with_context(|| format!("setting permissions of {}", path.display()))?;
    }
    tracing::info!(path = %path.display(), "admin socket up");
    let app = tailwarden_api::routes(control, TenantId::DEFAULT);
    axum::serve(listener, app).await.context("admin socket")
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
