//! Headscale's JSON shapes for users, pre-auth keys, API keys and nodes (ids as strings, camelCase, RFC 3339 times).

use serde::Deserialize;
use serde_json::{Value, json};
use tailwarden_control::{NodeView, Settings};
use tailwarden_store::{ApiKeyRecord, PreAuthKeyRecord, UserRecord};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub(crate) fn time_ms(ms: i64) -> Value {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

pub(crate) fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn parse_time_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Accepts `"1"`, `1` or `"alice"` for Headscale's `user` field.
pub(crate) fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        None | Some(Value::Null) => None,
        Some(other) => return Err(serde::de::Error::custom(format!("user must be a string or number, got {other}"))),
    })
}

pub(crate) fn user(u: &UserRecord) -> Value {
    json!({
        "id": u.id.0.to_string(),
        "name": u.name,
        "createdAt": time_ms(u.created_ms),
        "displayName": u.display_name,
        "email": u.email,
        "providerId": u.provider_identifier.clone().unwrap_or_default(),
        "provider": if u.provider_identifier.is_some() { "oidc" } else { "" },
        "profilePicUrl": "",
    })
}

pub(crate) fn pre_auth_key(k: &PreAuthKeyRecord, owner: Option<&UserRecord>, secret: Option<&str>) -> Value {
    json!({
        "user": owner.map(user),
        "id": k.id.0.to_string(),
        // The full key exists only in the creation response; listings show its prefix, as Headscale does.
        "key": secret.map_or_else(|| format!("hskey-auth-{}-***", k.prefix), str::to_string),
        "reusable": k.reusable,
        "ephemeral": k.ephemeral,
        "used": k.used_count > 0,
        "expiration": k.expiration_ms.map_or(Value::Null, time_ms),
        "createdAt": time_ms(k.created_ms),
        "aclTags": k.tags,
    })
}

pub(crate) fn api_key(k: &ApiKeyRecord) -> Value {
    json!({
        "id": k.id.0.to_string(),
        // Only the lookup prefix, in the form current Headscale lists it; the secret is never stored.
        "prefix": format!("hskey-api-{}-***", k.prefix),
        "expiration": k.expiration_ms.map_or(Value::Null, time_ms),
        "createdAt": time_ms(k.created_ms),
        "lastSeen": k.last_seen_ms.map_or(Value::Null, time_ms),
    })
}

pub(crate) fn node(n: &NodeView, users: &[UserRecord], settings: &Settings) -> Value {
    let r = &n.record;
    let owner = r.user_id.and_then(|u| users.iter().find(|x| x.id == u));
    let mut ips = Vec::new();
    if let Some(v4) = r.ipv4 {
        ips.push(v4.to_string());
    }
    if let Some(v6) = r.ipv6 {
        ips.push(v6.to_string());
    }
    let hostinfo: Value = serde_json::from_str(&r.hostinfo).unwrap_or(Value::Null);
    let available: Vec<String> = hostinfo
        .get("RoutableIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    // Routes the node both advertises and has approved are the ones it serves.
    let serving: Vec<&String> = r.approved_routes.iter().filter(|r| available.contains(r)).collect();
    json!({
        "id": r.id.0.to_string(),
        "machineKey": r.machine_key,
        "nodeKey": r.node_key,
        "discoKey": r.disco_key,
        "ipAddresses": ips,
        "name": r.hostname,
        "user": owner.map(user),
        "lastSeen": r.last_seen_ms.map_or(Value::Null, time_ms),
        "expiry": r.expiry_ms.map_or(Value::Null, time_ms),
        "createdAt": time_ms(r.created_ms),
        "registerMethod": match r.register_method.as_str() {
            "authkey" => "REGISTER_METHOD_AUTH_KEY",
            "cli" => "REGISTER_METHOD_CLI",
            _ => "REGISTER_METHOD_OIDC",
        },
        "givenName": r.given_name,
        "fqdn": format!("{}.{}", r.given_name, settings.dns.base_domain),
        "online": n.online,
        "ephemeral": r.ephemeral,
        "tags": r.tags,
        "forcedTags": r.tags,
        "validTags": r.tags,
        "invalidTags": [],
        "approvedRoutes": r.approved_routes,
        "availableRoutes": available,
        "subnetRoutes": serving,
    })
}
