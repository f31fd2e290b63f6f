//! Builds the DERP map clients receive: external maps from `derp.paths` (and `derp.urls` over plain HTTP), with the
//! embedded region added on top when it is enabled.

use anyhow::Context;
use std::net::IpAddr;
use tailwarden_config::Config;
use tailwarden_wire::{DerpMap, DerpNode, DerpRegion};

/// The merged DERP map. `derp_port` is the HTTPS port the embedded relay is reachable on.
pub async fn build(config: &Config, derp_port: u16) -> anyhow::Result<DerpMap> {
    let mut map = DerpMap::default();
    for path in &config.derp.paths {
        let text = std::fs::read_to_string(path).with_context(|| format!("derp.paths: reading {}", path.display()))?;
        let external: DerpMap =
            serde_yaml::from_str(&text).with_context(|| format!("derp.paths: {} is not a DERP map", path.display()))?;
        map.regions.extend(external.regions);
    }
    for url in &config.derp.urls {
        let external = fetch(url).await.with_context(|| format!("derp.urls: fetching {url}"))?;
        map.regions.extend(external.regions);
    }
    let server = &config.derp.server;
    if server.enabled && server.automatically_add_embedded_derp_region {
        let host = config.server_host().unwrap_or_else(|| "127.0.0.1".into());
        let host_ip: Option<IpAddr> = host.parse().ok();
        let ipv4 =
            server.ipv4.map(|a| a.to_string()).or_else(|| host_ip.filter(IpAddr::is_ipv4).map(|a| a.to_string()));
        let ipv6 =
            server.ipv6.map(|a| a.to_string()).or_else(|| host_ip.filter(IpAddr::is_ipv6).map(|a| a.to_string()));
        // With a literal address of one family, the other must be "none" or clients would try to resolve the name.
        let (ipv4, ipv6) = match (ipv4, ipv6, host_ip) {
            (v4, v6, None) => (v4.unwrap_or_default(), v6.unwrap_or_default()),
            (v4, v6, Some(_)) => (v4.unwrap_or_else(|| "none".into()), v6.unwrap_or_else(|| "none".into())),
        };
        let stun_port = server.stun_listen_addr.map_or(-1, |a| i32::from(a.port()));
        map.regions.insert(
            server.region_id,
            DerpRegion {
                region_id: server.region_id,
                region_code: server.region_code.clone(),
                region_name: server.region_name.clone(),
                nodes: vec![DerpNode {
                    name: format!("{}a", server.region_id),
                    region_id: server.region_id,
                    host_name: host,
                    ipv4,
                    ipv6,
                    stun_port,
                    derp_port: i32::from(derp_port),
                    insecure_for_tests: server.insecure_for_tests,
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
    }
    anyhow::ensure!(!map.regions.is_empty(), "the DERP map is empty: enable derp.server or set derp.paths/derp.urls");
    Ok(map)
}

/// Fetches a DERP map over HTTP or HTTPS (certificates checked against the system CA bundle).
async fn fetch(url: &str) -> anyhow::Result<DerpMap> {
    use http_body_util::{BodyExt, Empty};
    let uri: http::Uri = url.parse().context("invalid URL")?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => anyhow::bail!("DERP map URLs must be http:// or https://"),
    };
    let host = uri.host().context("URL has no host")?.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp =
        tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
            .context("connect timed out")??;
    let req =
        http::Request::get(uri.clone()).header(http::header::HOST, host.clone()).body(Empty::<bytes::Bytes>::new())?;
    let resp = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).context("invalid TLS server name")?;
        let stream = tokio_rustls::TlsConnector::from(crate::tls::client_config(false)?).connect(name, tcp).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    };
    anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
    let body = resp.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body).context("not a DERP map")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn external_files_merge_and_the_embedded_region_wins() {
        let dir = std::env::temp_dir().join(format!("tw-derpmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("derp.yaml");
        // Headscale's documented file format (lower-case keys).
        std::fs::write(
            &file,
            "regions:\n  900:\n    regionid: 900\n    regioncode: custom\n    regionname: My Region\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: derp.example.net\n        ipv4: 198.51.100.1\n        stunport: 0\n        derpport: 0\n  999:\n    regionid: 999\n    regioncode: shadowed\n    regionname: replaced by the embedded region\n    nodes: []\n",
        )
        .unwrap();
        let yaml = |urls: &str| {
            format!(
                "server_url: http://127.0.0.1:8080\nderp:\n  urls: [{urls}]\n  paths: [{}]\n  server:\n    enabled: true\n    region_id: 999\n    stun_listen_addr: 127.0.0.1:3478\n",
                file.display()
            )
        };
        let (config, _) = Config::from_yaml_str(&yaml("")).unwrap();
        let map = build(&config, 8443).await.unwrap();
        assert_eq!(map.regions.len(), 2);
        assert_eq!(map.regions[&900].nodes[0].host_name, "derp.example.net");
        let embedded = &map.regions[&999];
        assert_ne!(embedded.region_code, "shadowed");
        let node = &embedded.nodes[0];
        assert_eq!(
            (node.host_name.as_str(), node.ipv4.as_str(), node.ipv6.as_str()),
            ("127.0.0.1", "127.0.0.1", "none")
        );
        assert_eq!((node.derp_port, node.stun_port), (8443, 3478));
        assert!(node.insecure_for_tests, "self-signed default");

        // A map served over HTTP merges too.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = r#"{"Regions":{"901":{"RegionID":901,"RegionCode":"url","RegionName":"from url","Nodes":[{"Name":"901a","RegionID":901,"HostName":"198.51.100.2"}]}}}"#;
        let app = axum::Router::new().route("/derpmap", axum::routing::get(move || async move { served }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (with_url, _) = Config::from_yaml_str(&yaml(&format!("http://{addr}/derpmap"))).unwrap();
        let map = build(&with_url, 8443).await.unwrap();
        assert_eq!(map.regions[&901].region_code, "url");
        assert_eq!(map.regions.len(), 3);

        std::fs::write(&file, "regions: [not a map").unwrap();
        let err = build(&config, 8443).await.unwrap_err();
        assert!(format!("{err:#}").contains("derp.paths"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
