//! Settings the control core needs, derived from the configuration file by the binary.

use std::sync::{Arc, RwLock};
use std::time::Duration;
use tailwarden_wire::{DerpMap, DnsRecord};

/// Everything the core needs to know about the deployment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Public URL of this server (used in AuthURLs).
    pub server_url: String,
    /// The DERP map sent to clients (embedded region merged with external maps); refreshed while running when
    /// `derp.auto_update_enabled` is set.
    pub derp_map: Live<DerpMap>,
    /// DNS settings.
    pub dns: DnsSettings,
    /// Delete ephemeral nodes this long after they go offline.
    pub ephemeral_inactivity_timeout: Duration,
    /// Default key expiry for new nodes; `None` = never.
    pub node_expiry: Option<Duration>,
    /// Tell clients not to upload logs to Tailscale (`logtail.enabled: false`).
    pub disable_log_tail: bool,
    /// Tell clients not to probe public hosts for captive portals.
    pub disable_captive_portal_detection: bool,
    /// Tell clients to pick a random UDP port.
    pub randomize_client_port: bool,
    /// Interval between keep-alive messages on idle map streams.
    pub keep_alive_interval: Duration,
    /// Where the policy lives.
    pub policy_source: PolicySource,
    /// How long changes are collected before they are sent, so a burst reaches each client as one message
    /// (`tuning.batch_change_delay`; zero sends each change at once).
    pub map_coalesce_window: Duration,
}

/// The default coalescing window: long enough to fold a burst of joins or a policy reload into one message per
/// client, short enough to stay well under a human's notice.
pub const DEFAULT_COALESCE_WINDOW: Duration = Duration::from_millis(100);

/// A setting that can change while the server runs. Clones share the value: maps read it when they are rendered,
/// and [`Control::set_derp_map`](crate::Control::set_derp_map) or
/// [`Control::set_extra_records`](crate::Control::set_extra_records) replace it and tell connected clients.
#[derive(Clone, Debug, Default)]
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T: PartialEq> Live<T> {
    /// A cell holding `value`.
    pub fn new(value: T) -> Live<T> {
        Live(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        // A poisoned lock only means a writer panicked between two whole-value swaps; the value is intact.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value; returns whether it differs from the previous one.
    pub(crate) fn replace(&self, value: T) -> bool {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        if **slot == value {
            return false;
        }
        *slot = Arc::new(value);
        true
    }
}

/// Where the tailnet policy comes from (`policy.mode`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PolicySource {
    /// No policy file and no stored policy: every node reaches every other.
    #[default]
    AllowAll,
    /// A HuJSON file, reloaded on SIGHUP and when it changes; the API cannot change it.
    File(std::path::PathBuf),
    /// The latest policy stored in the database, changed with `policy set` or the API.
    Database,
}

/// DNS configuration pushed to clients.
#[derive(Clone, Debug, Default)]
pub struct DnsSettings {
    /// MagicDNS on.
    pub magic_dns: bool,
    /// Base domain of MagicDNS names (`<given-name>.<base_domain>`).
    pub base_domain: String,
    /// Global nameservers.
    pub global_nameservers: Vec<String>,
    /// Split DNS: domain → nameservers.
    pub split_nameservers: Vec<(String, Vec<String>)>,
    /// Extra search domains.
    pub search_domains: Vec<String>,
    /// Extra records (`dns.extra_records`, or the file `dns.extra_records_path`, which is reloaded when it changes).
    pub extra_records: Live<Vec<DnsRecord>>,
    /// Override the client's local DNS with the global nameservers.
    pub override_local_dns: bool,
}

impl Settings {
    /// Settings for a loopback test server with the given DERP map.
    pub fn for_tests(derp_map: DerpMap) -> Settings {
        Settings {
            server_url: "http://127.0.0.1:8080".into(),
            derp_map: Live::new(derp_map),
            dns: DnsSettings { magic_dns: true, base_domain: "tailnet.internal".into(), ..Default::default() },
            ephemeral_inactivity_timeout: Duration::from_secs(30 * 60),
            node_expiry: None,
            disable_log_tail: true,
            disable_captive_portal_detection: true,
            randomize_client_port: false,
            keep_alive_interval: Duration::from_secs(50),
            policy_source: PolicySource::Database,
            map_coalesce_window: DEFAULT_COALESCE_WINDOW,
        }
    }
}
