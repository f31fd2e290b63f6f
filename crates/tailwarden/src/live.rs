//! Settings the running server keeps current: the extra DNS records file (`dns.extra_records_path`, reloaded on
//! SIGHUP and when it changes) and the DERP map (`derp.auto_update_enabled`, rebuilt every
//! `derp.update_frequency`). A change reaches connected clients at once; a bad file or a failed fetch is logged
//! and the previous value stays in force.

use crate::derpmap;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tailwarden_config::{Config, ExtraRecordsError, read_extra_records};
use tailwarden_control::Control;
use tailwarden_wire::DnsRecord;

/// How often the records file's modification time is checked.
const FILE_POLL: Duration = Duration::from_secs(1);

/// Longest a DERP map refresh may take before it counts as failed (a stalled URL must not stop later refreshes).
const DERP_REFRESH_TIMEOUT: Duration = Duration::from_secs(30);

/// The extra records to start with: from `dns.extra_records_path` when set (a missing or invalid file stops the
/// server, as in Headscale; an empty one means none yet), else `dns.extra_records`.
pub fn initial_extra_records(config: &Config) -> anyhow::Result<Vec<DnsRecord>> {
    let Some(path) = &config.dns.extra_records_path else {
        return Ok(config.dns.extra_records.iter().map(wire_record).collect());
    };
    match read_extra_records(path) {
        Ok(records) => Ok(records.iter().map(wire_record).collect()),
        Err(ExtraRecordsError::Empty { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn wire_record(r: &tailwarden_config::DnsRecord) -> DnsRecord {
    DnsRecord { name: r.name.clone(), record_type: r.record_type().into(), value: r.value.to_string() }
}

/// Waits until a file needs rereading: its modification time changed, or SIGHUP arrived. Polling the modification
/// time keeps this dependency-free and also notices editors that replace the file instead of writing it.
pub struct FileWatch {
    path: PathBuf,
    last: Option<std::time::SystemTime>,
    hup: tokio::signal::unix::Signal,
    tick: tokio::time::Interval,
}

impl FileWatch {
    /// Watches `path`; `last` is the modification time already seen (`None`: the first tick rereads the file).
    pub fn new(path: PathBuf, last: Option<std::time::SystemTime>) -> anyhow::Result<FileWatch> {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("SIGHUP handler")?;
        Ok(FileWatch { path, last, hup, tick: tokio::time::interval(FILE_POLL) })
    }

    /// The file's modification time, if it can be read.
    pub fn modified(path: &Path) -> Option<std::time::SystemTime> {
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    /// Returns when the file should be read again.
    pub async fn changed(&mut self) {
        loop {
            let forced = tokio::select! {
                _ = self.hup.recv() => true,
                _ = self.tick.tick() => false,
            };
            let now = Self::modified(&self.path);
            if forced || now != self.last {
                self.last = now;
                return;
            }
        }
    }
}

/// Rereads the records file when its modification time changes or on SIGHUP, and pushes changed records to
/// every connected client.
pub async fn watch_extra_records(control: Arc<Control>, path: PathBuf) -> anyhow::Result<()> {
    // Unset, so the first tick rereads the file: a change between the start-up read and this task goes unmissed
    // (an unchanged file is no change for the clients).
    let mut watch = FileWatch::new(path.clone(), None)?;
    loop {
        watch.changed().await;
        reload_extra_records(&control, &path);
    }
}

fn reload_extra_records(control: &Control, path: &Path) {
    match read_extra_records(path) {
        Ok(records) => {
            let count = records.len();
            if control.set_extra_records(records.iter().map(wire_record).collect()) {
                tracing::info!(path = %path.display(), records = count, "extra DNS records reloaded and sent to clients");
            }
        }
        // A writer that truncates before writing leaves the file empty for a moment; its next write is noticed.
        Err(e @ ExtraRecordsError::Empty { .. }) => {
            tracing::debug!(error = %e, "extra DNS records file ignored for now")
        }
        Err(e) => tracing::error!(error = %e, "extra DNS records reload rejected; the previous records stay in force"),
    }
}

/// Rebuilds the DERP map from `derp.urls` and `derp.paths` (plus the embedded region) every
/// `derp.update_frequency` and pushes it to every connected client when it changed.
pub async fn refresh_derp_map(control: Arc<Control>, config: Config, derp_port: u16) -> anyhow::Result<()> {
    let period = config.derp.update_frequency;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(DERP_REFRESH_TIMEOUT, derpmap::build(&config, derp_port)).await {
            Ok(Ok(map)) => {
                if control.set_derp_map(map) {
                    tracing::info!("DERP map changed; sent to clients");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "DERP map refresh failed; the previous map stays in force")
            }
            Err(_) => {
                tracing::warn!(timeout = ?DERP_REFRESH_TIMEOUT, "DERP map refresh timed out; the previous map stays in force")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tailwarden_control::admin::NewKeyRequest;
    use tailwarden_control::keys::ServerKeys;
    use tailwarden_control::{Live, Settings};
    use tailwarden_store::Store;
    use tailwarden_types::TenantId;
    use tailwarden_wire::{MachineKey, from_go_json};

    const T: TenantId = TenantId::DEFAULT;

    /// A control core on an in-memory database with one registered node, and that node's open map stream.
    async fn control_with_stream(settings: Settings) -> (Arc<Control>, MapBody) {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let control = Control::new(store, settings, ServerKeys::random()).await.unwrap();
        let user = control.create_user(T, "alice", "", "").await.unwrap();
        let (_, key) =
            control.create_pre_auth_key(T, NewKeyRequest { user: Some(user.id), ..Default::default() }).await.unwrap();
        let machine: MachineKey = format!("mkey:{}", "11".repeat(32)).parse().unwrap();
        let node = format!("nodekey:{}", "22".repeat(32));
        let register =
            json!({"Version": 130, "NodeKey": node, "Auth": {"AuthKey": key}, "Hostinfo": {"Hostname": "n1"}});
        let resp = control.register(machine, from_go_json("test", register.to_string().as_bytes()).unwrap()).await;
        assert!(resp.machine_authorized, "{:?}", resp.error);
        let map = json!({"Version": 130, "NodeKey": node, "Stream": true, "KeepAlive": true});
        let resp = control.map(machine, from_go_json("test", map.to_string().as_bytes()).unwrap()).await;
        assert_eq!(resp.status(), 200);
        (control, MapBody { body: resp.into_body(), buf: Vec::new() })
    }

    /// The uncompressed message stream of one map session.
    struct MapBody {
        body: axum::body::Body,
        buf: Vec<u8>,
    }

    impl MapBody {
        /// The next message, or `None` if none arrives within `wait`.
        async fn next(&mut self, wait: Duration) -> Option<Value> {
            tokio::time::timeout(wait, async {
                loop {
                    if self.buf.len() >= 4 {
                        let n = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
                        if self.buf.len() >= 4 + n {
                            let payload: Vec<u8> = self.buf.drain(..4 + n).skip(4).collect();
                            return serde_json::from_slice(&payload).unwrap();
                        }
                    }
                    let frame = self.body.frame().await.expect("stream open").unwrap();
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            })
            .await
            .ok()
        }

        /// The next message that has `key`, skipping others, within `wait`.
        async fn next_with(&mut self, key: &str, wait: Duration) -> Option<Value> {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let msg = self.next(deadline.saturating_duration_since(tokio::time::Instant::now())).await?;
                if msg.get(key).is_some() {
                    return Some(msg);
                }
            }
        }
    }

    fn names(dns: &Value) -> Vec<String> {
        dns["ExtraRecords"]
            .as_array()
            .map_or_else(Vec::new, |r| r.iter().map(|r| r["Name"].as_str().unwrap().to_string()).collect())
    }

    #[tokio::test]
    async fn records_file_changes_reach_a_connected_client_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        std::fs::write(&path, r#"[{"name": "one.example.com", "type": "A", "value": "100.64.0.10"}]"#).unwrap();
        let (config, _) = Config::from_yaml_str(&format!("dns:\n  extra_records_path: {}\n", path.display())).unwrap();
        let mut settings = Settings::for_tests(Default::default());
        settings.dns.extra_records = Live::new(initial_extra_records(&config).unwrap());
        let (control, mut stream) = control_with_stream(settings).await;
        let first = stream.next(Duration::from_secs(2)).await.unwrap();
        assert_eq!(names(&first["DNSConfig"]), ["one.example.com"]);
        assert_eq!(
            first["DNSConfig"]["ExtraRecords"][0],
            json!({"Name": "one.example.com", "Type": "A", "Value": "100.64.0.10"})
        );
        let _watch = AbortOnDrop(tokio::spawn(watch_extra_records(control.clone(), path.clone())));

        // A change is pushed on the open stream, with the rest of the DNS configuration intact.
        std::fs::write(&path, r#"[{"name": "two.example.com", "type": "AAAA", "value": "fd7a:115c:a1e0::2"}, {"name": "three.example.com", "type": "A", "value": "100.64.0.3"}]"#).unwrap();
        let pushed = stream.next_with("DNSConfig", Duration::from_secs(5)).await.expect("new records pushed");
        assert_eq!(names(&pushed["DNSConfig"]), ["two.example.com", "three.example.com"]);
        assert_eq!(pushed["DNSConfig"]["Domains"][0], "tailnet.internal", "the rest of the DNS configuration is kept");
        assert!(pushed.get("Peers").is_none() && pushed.get("Node").is_none(), "a delta, not a full map: {pushed}");

        // A malformed file is refused: nothing is pushed and new sessions still get the previous records.
        std::fs::write(&path, r#"[{"name": "bad.example.com", "type": "A", "value": "not-an-ip"}]"#).unwrap();
        assert!(
            stream.next_with("DNSConfig", Duration::from_millis(2500)).await.is_none(),
            "a bad file pushes nothing"
        );
        let kept: Vec<String> = control.settings().dns.extra_records.get().iter().map(|r| r.name.clone()).collect();
        assert_eq!(kept, ["two.example.com", "three.example.com"]);

        // SIGHUP rereads the file even when its modification time says nothing changed.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, r#"[{"name": "four.example.com", "value": "100.64.0.4"}]"#).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
        assert!(
            stream.next_with("DNSConfig", Duration::from_millis(2500)).await.is_none(),
            "same mtime: not noticed without SIGHUP"
        );
        let status =
            std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
        assert!(status.success());
        let pushed = stream.next_with("DNSConfig", Duration::from_secs(5)).await.expect("SIGHUP reloads");
        assert_eq!(names(&pushed["DNSConfig"]), ["four.example.com"]);
        assert_eq!(pushed["DNSConfig"]["ExtraRecords"][0]["Type"], "A", "the type follows the address family");
    }

    #[test]
    fn a_missing_or_invalid_records_file_stops_the_start() {
        let (config, _) = Config::from_yaml_str("dns:\n  extra_records_path: /nonexistent/records.json\n").unwrap();
        let err = initial_extra_records(&config).unwrap_err();
        assert!(format!("{err:#}").contains("dns.extra_records_path"), "{err:#}");
    }

    /// Aborts the spawned task when the test ends.
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    #[tokio::test]
    async fn derp_map_refresh_pushes_changes_and_keeps_the_map_when_a_fetch_fails() {
        let served = Arc::new(std::sync::Mutex::new((200u16, region_json("one"))));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = served.clone();
        let app = axum::Router::new().route(
            "/derpmap.json",
            axum::routing::get(move || {
                let (status, body) = state.lock().unwrap().clone();
                async move { (http::StatusCode::from_u16(status).unwrap(), body) }
            }),
        );
        let _http = AbortOnDrop(tokio::spawn(async move { axum::serve(listener, app).await }));
        let (config, _) = Config::from_yaml_str(&format!(
            "derp:\n  urls: [http://{addr}/derpmap.json]\n  auto_update_enabled: true\n  update_frequency: 300ms\n  server:\n    enabled: false\n"
        ))
        .unwrap();
        let (control, mut stream) =
            control_with_stream(Settings::for_tests(derpmap::build(&config, 0).await.unwrap())).await;
        let first = stream.next(Duration::from_secs(2)).await.unwrap();
        assert_eq!(first["DERPMap"]["Regions"]["901"]["RegionCode"], "one");
        let _refresh = AbortOnDrop(tokio::spawn(refresh_derp_map(control.clone(), config, 0)));

        // An unchanged map is not sent again.
        assert!(stream.next_with("DERPMap", Duration::from_secs(1)).await.is_none(), "unchanged map pushed");

        *served.lock().unwrap() = (200, region_json("two"));
        let pushed = stream.next_with("DERPMap", Duration::from_secs(3)).await.expect("changed map pushed");
        assert_eq!(pushed["DERPMap"]["Regions"]["901"]["RegionCode"], "two");
        assert!(pushed.get("Peers").is_none() && pushed.get("Node").is_none(), "a delta, not a full map: {pushed}");

        // Failed fetches (an HTTP error, then something that is not a DERP map) keep the previous map.
        *served.lock().unwrap() = (500, "down".into());
        assert!(stream.next_with("DERPMap", Duration::from_secs(1)).await.is_none());
        *served.lock().unwrap() = (200, "{\"Regions\": 7}".into());
        assert!(stream.next_with("DERPMap", Duration::from_secs(1)).await.is_none());
        assert_eq!(control.settings().derp_map.get().regions[&901].region_code, "two");

        // And refreshing goes on afterwards.
        *served.lock().unwrap() = (200, region_json("three"));
        let pushed =
            stream.next_with("DERPMap", Duration::from_secs(3)).await.expect("refresh continues after failures");
        assert_eq!(pushed["DERPMap"]["Regions"]["901"]["RegionCode"], "three");
    }

    fn region_json(code: &str) -> String {
        json!({"Regions": {"901": {"RegionID": 901, "RegionCode": code, "RegionName": "test",
            "Nodes": [{"Name": "901a", "RegionID": 901, "HostName": "127.0.0.1", "IPv4": "127.0.0.1", "IPv6": "none", "DERPPort": 8443}]}}})
        .to_string()
    }
}
