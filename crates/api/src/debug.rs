//! Policy debugging for administrators (tailwarden extensions): what a node receives, and whether one node may
//! reach another on a port — with the rule that allows it.

use crate::{Api, ApiError, ApiResult, Path, Query, bad_request, json};
use axum::Json;
use axum::response::IntoResponse;
use serde::Deserialize;
use tailwarden_types::NodeId;

/// A node by id or by given name.
async fn resolve_node(api: &Api, raw: &str) -> Result<NodeId, ApiError> {
    let nodes = api.control.list_nodes(api.tenant, None).await?;
    nodes
        .iter()
        .find(|n| n.record.id.0.to_string() == raw || n.record.given_name == raw)
        .map(|n| n.record.id)
        .ok_or_else(|| ApiError { status: http::StatusCode::NOT_FOUND, message: format!("node {raw:?} not found") })
}

pub(crate) async fn node(api: Api, Path(id): Path<String>) -> ApiResult {
    let id = resolve_node(&api, &id).await?;
    let d = api.control.debug_node(api.tenant, id).await?;
    let users = api.control.list_users(api.tenant).await?;
    Ok(Json(serde_json::json!({
        "node": json::node(&d.node, &users, api.control.settings()),
        "peers": d.peers.iter().map(|p| p.0.to_string()).collect::<Vec<_>>(),
        "packetFilter": d.packet_filter,
        "sshPolicy": d.ssh_policy,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct ReachQuery {
    src: String,
    dst: String,
    port: u16,
    #[serde(default)]
    proto: Option<String>,
}

fn proto_number(raw: Option<&str>) -> Result<u8, ApiError> {
    match raw.unwrap_or("tcp").to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "ipv6-icmp" | "icmpv6" => Ok(58),
        "sctp" => Ok(132),
        other => other
            .parse()
            .map_err(|_| bad_request(format!("unknown protocol {other:?}: use tcp, udp, icmp, sctp or a number"))),
    }
}

pub(crate) async fn reach(api: Api, Query(q): Query<ReachQuery>) -> ApiResult {
    let proto = proto_number(q.proto.as_deref())?;
    let (src, dst) = (resolve_node(&api, &q.src).await?, resolve_node(&api, &q.dst).await?);
    let answer = api.control.can_reach(api.tenant, src, dst, q.port, proto).await?;
    Ok(Json(serde_json::json!({
        "allowed": answer.allowed,
        "rule": answer.rule,
        "visible": answer.visible,
    }))
    .into_response())
}
