//! Plain-HTTP base URLs and one-shot HTTP/1.1 requests: `/key` before the Noise handshake, and the management
//! API. The generator targets servers on this machine, so there is no TLS.

use crate::BenchError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpStream;

/// `http://host:port[/prefix]` with a literal IP address.
#[derive(Clone, Debug)]
pub struct BaseUrl {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `host:port` as given, for `Host`/`:authority`.
    pub authority: String,
    /// Path prefix without a trailing slash (usually empty).
    pub prefix: String,
}

impl BaseUrl {
    /// Parses a base URL. Names are refused rather than resolved: load goes only to addresses the operator typed.
    pub fn parse(what: &'static str, url: &str) -> Result<BaseUrl, BenchError> {
        let bad = |reason| BenchError::BadUrl { what, url: url.to_string(), reason };
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("only plain http:// is supported"))?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let addr: SocketAddr = match authority.parse() {
            Ok(a) => a,
            Err(_) => authority
                .parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, 80))
                .map_err(|_| bad("the host must be an IP address"))?,
        };
        let prefix = path.trim_end_matches('/');
        Ok(BaseUrl {
            addr,
            authority: authority.to_string(),
            prefix: if prefix.is_empty() { String::new() } else { format!("/{prefix}") },
        })
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority, self.prefix)
    }
}

/// Sends one request on a fresh connection and returns the status and body.
pub async fn request(
    base: &BaseUrl,
    method: http::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
    during: &'static str,
) -> Result<(u16, Bytes), BenchError> {
    let tcp = TcpStream::connect(base.addr).await.map_err(|source| BenchError::Io { during, source })?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|source| BenchError::Http { during, source })?;
    // The connection task ends when the response is read and the sender dropped.
    tokio::spawn(conn);
    let mut req =
        http::Request::builder().method(method).uri(format!("{}{path}", base.prefix)).header("host", &base.authority);
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let payload = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(payload)).map_err(|source| BenchError::Request { during, source })?;
    let resp = send.send_request(req).await.map_err(|source| BenchError::Http { during, source })?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|source| BenchError::Http { during, source })?.to_bytes();
    Ok((status, bytes))
}

/// Like [`request`], failing on any non-2xx status, and decoding the JSON answer.
pub async fn json(
    base: &BaseUrl,
    method: http::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
    during: &'static str,
) -> Result<serde_json::Value, BenchError> {
    let (status, bytes) = request(base, method, path, bearer, body, during).await?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&bytes).chars().take(300).collect();
        return Err(BenchError::Status { during, status, body: text });
    }
    serde_json::from_slice(&bytes).map_err(|source| BenchError::Json { what: during, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = BaseUrl::parse("--control-url", "http://127.0.0.1:8080/").unwrap();
        assert_eq!((u.addr.port(), u.url("/key"), u.prefix.as_str()), (8080, "http://127.0.0.1:8080/key".into(), ""));
        let u = BaseUrl::parse("--api-url", "http://[::1]:9/hs").unwrap();
        assert_eq!(u.url("/api/v1/user"), "http://[::1]:9/hs/api/v1/user");
        assert_eq!(BaseUrl::parse("x", "http://127.0.0.2").unwrap().addr.port(), 80);
        assert!(BaseUrl::parse("x", "https://127.0.0.1").is_err());
        assert!(BaseUrl::parse("x", "http://localhost:80").is_err());
    }
}
