//! Values computed from the settings for the components that use them.

use std::net::IpAddr;

use crate::model::{Config, DatabaseType};
use crate::net::{parse_http_url, percent_encode, percent_encode_sqlite_path};

impl Config {
    /// A sqlx connection URL for the configured database.
    ///
    /// SQLite: `sqlite://PATH?mode=rwc` (the file is created if missing; `%`, `?` and `#` in the path are
    /// percent-encoded). PostgreSQL: `postgres://USER:PASS@HOST:PORT/NAME?sslmode=MODE` with user, password and
    /// name percent-encoded; a `host` starting with `/` is a Unix socket directory and is percent-encoded into
    /// the host part, which sqlx understands.
    pub fn database_url(&self) -> String {
        match self.database.kind {
            DatabaseType::Sqlite => {
                let path = self.database.sqlite.path.to_string_lossy();
                format!("sqlite://{}?mode=rwc", percent_encode_sqlite_path(&path))
            }
            DatabaseType::Postgres => {
                let pg = &self.database.postgres;
                let mut url = String::from("postgres://");
                if !pg.user.is_empty() {
                    url.push_str(&percent_encode(&pg.user));
                    if !pg.pass.is_empty() {
                        url.push(':');
                        url.push_str(&percent_encode(pg.pass.expose()));
                    }
                    url.push('@');
                }
                let host = pg.host.trim();
                if host.is_empty() {
                    url.push_str("localhost");
                } else if host.starts_with('/') {
                    url.push_str(&percent_encode(host));
                } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
                    url.push_str(&format!("[{host}]"));
                } else {
                    url.push_str(host);
                }
                if let Some(port) = pg.port {
                    url.push_str(&format!(":{port}"));
                }
                url.push('/');
                url.push_str(&percent_encode(&pg.name));
                url.push_str("?sslmode=");
                url.push_str(pg.ssl.as_str());
                url
            }
        }
    }

    /// The host of `server_url` (lower-case, IPv6 without brackets), if it is a valid URL.
    pub fn server_host(&self) -> Option<String> {
        parse_http_url(&self.server_url).ok().map(|u| u.host)
    }

    /// The names a self-signed certificate should cover: the `server_url` host, the specific (not unspecified)
    /// IPs of `listen_addr` and `tls_listen_addr`, and `derp.server.ipv4`/`ipv6`. Sorted, without duplicates.
    pub fn tls_subject_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.server_host().into_iter().collect();
        let ips = [Some(self.listen_addr.ip()), self.tls_listen_addr.map(|a| a.ip())]
            .into_iter()
            .flatten()
            .filter(|ip| !ip.is_unspecified())
            .chain(self.derp.server.ipv4.map(IpAddr::V4))
            .chain(self.derp.server.ipv6.map(IpAddr::V6));
        names.extend(ips.map(|ip| ip.to_string()));
        names.sort();
        names.dedup();
        names
    }
}
