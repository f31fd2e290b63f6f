//! Nodes of a tenant: registration (one transaction with key use, address and name allocation) and updates.

use crate::error::{Conflict, Entity, Result, StoreError, classify_node_conflict};
use crate::ipalloc::Floor;
use crate::records::{
    NodeRecord, NodeRegistration, NodeRow, NodeSessionUpdate, RegisteredNode, check_json, json_list, node_cols, now_ms,
    sorted_json_list,
};
use crate::store::{TenantStore, read_db, transaction, write_db};
use rand::Rng;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;
use tailwarden_types::{DnsLabel, NodeId, Tag, UserId};

/// How often a registration is retried when a concurrent writer took the same address, name or machine key.
const REGISTER_ATTEMPTS: u32 = 5;

impl TenantStore<'_> {
    /// Registers a node, or re-registers a known machine key, in one transaction:
    ///
    /// 1. if `auth_key` is set, consumes one use of it (unknown, expired, or used single-use keys fail with
    ///    [`StoreError::PreAuthKeyUnusable`] and nothing is written);
    /// 2. a node with the same machine key in this tenant is updated in place (new node key, disco key, host name,
    ///    hostinfo, owner, tags, expiry, ephemeral flag); its id, addresses and given name stay;
    /// 3. otherwise addresses are allocated, a free given name is chosen (`name`, `name-1`, `name-2`, …) and the
    ///    node is inserted.
    ///
    /// Registrations of one tenant are serialised by a row lock on the tenant (also across instances sharing a
    /// PostgreSQL database). A uniqueness collision that still happens (a concurrent rename taking the chosen name)
    /// reruns the whole transaction a few times before failing with [`StoreError::Contended`]. Registering a new
    /// node reads every name and address of the tenant once.
    ///
    /// It runs on the store's writer thread (`writer.rs`); dropping the returned future cancels it and rolls back.
    pub async fn register_node(&self, reg: NodeRegistration) -> Result<RegisteredNode> {
        let (store, tenant) = (self.store.clone(), self.tenant);
        self.store.writer.run(async move { store.tenant(tenant).register_node_here(reg).await }).await
    }

    async fn register_node_here(&self, reg: NodeRegistration) -> Result<RegisteredNode> {
        check_json("hostinfo", &reg.hostinfo)?;
        let tags = sorted_json_list(reg.tags.iter().map(Tag::as_str));
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A retry follows a collision with another instance: it reads names and addresses from the table
            // (under the tenant lock, so they are current) instead of a cache another registration may have
            // refilled in the meantime.
            let err = match self.register_once(&reg, &tags, attempt > 1).await {
                Ok(done) => {
                    self.store.taken.add(self.tid(), &done.node);
                    return Ok(done);
                }
                Err(e) => e,
            };
            let Some(description) = err.unique_violation() else {
                return Err(self.missing_tenant(err));
            };
            // Another instance may have taken a name or address this one believed free.
            self.store.taken.forget(self.tid());
            let what = classify_node_conflict(&description, reg.given_name.as_str());
            if what == Conflict::NodeKey {
                // Another node holds this node key: retrying cannot help.
                return Err(StoreError::conflict(what));
            }
            if attempt >= REGISTER_ATTEMPTS {
                return Err(StoreError::Contended { attempts: attempt, what });
            }
            tracing::debug!(attempt, ?what, "registration collided with a concurrent writer; retrying");
            let jitter = rand::thread_rng().gen_range(1..=10u64) * u64::from(attempt);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
    }

    async fn register_once(&self, reg: &NodeRegistration, tags: &str, read_table: bool) -> Result<RegisteredNode> {
        let tid = self.tid();
        let allocator = &self.store.allocator;
        transaction!(self.store, |conn| {
            // Lock the tenant row first (every registration takes the locks in the same order: tenant, key), so
            // registrations of one tenant run one at a time even across instances and see each other's addresses.
            let tenant = sqlx::query("UPDATE tenants SET registrations = registrations + 1 WHERE id = $1")
                .bind(tid)
                .execute(&mut *conn)
                .await?;
            if tenant.rows_affected() == 0 {
                return Err(StoreError::not_found(Entity::Tenant, tid));
            }
            if let Some(key) = reg.auth_key {
                let used = sqlx::query(
                    "UPDATE pre_auth_keys SET used_count = used_count + 1 \
                     WHERE tenant_id = $1 AND id = $2 AND (reusable OR used_count = 0) \
                     AND (expiration_ms IS NULL OR expiration_ms > $3)",
                )
                .bind(tid)
                .bind(key.id.0)
                .bind(key.now_ms)
                .execute(&mut *conn)
                .await?;
                if used.rows_affected() == 0 {
                    return Err(StoreError::PreAuthKeyUnusable { id: key.id });
                }
            }
            if let Some(user) = reg.user_id {
                let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 AND id = $2")
                    .bind(tid)
                    .bind(user.0)
                    .fetch_optional(&mut *conn)
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::not_found(Entity::User, user.0));
                }
            }
            let existing: Option<i64> =
                sqlx::query_scalar("SELECT id FROM nodes WHERE tenant_id = $1 AND machine_key = $2")
                    .bind(tid)
                    .bind(&reg.machine_key)
                    .fetch_optional(&mut *conn)
                    .await?;
            let auth_key_id = reg.auth_key.map(|k| k.id.0);
            if let Some(id) = existing {
                let row: NodeRow = sqlx::query_as(concat!(
                    "UPDATE nodes SET node_key = $3, disco_key = $4, hostname = $5, hostinfo = $6, user_id = $7, \
                     tags = $8, expiry_ms = $9, ephemeral = $10, register_method = $11, \
                     auth_key_id = COALESCE($12, auth_key_id), updated_ms = $13 \
                     WHERE tenant_id = $1 AND id = $2 RETURNING ",
                    node_cols!()
                ))
                .bind(tid)
                .bind(id)
                .bind(&reg.node_key)
                .bind(&reg.disco_key)
                .bind(&reg.hostname)
                .bind(&reg.hostinfo)
                .bind(reg.user_id.map(|u| u.0))
                .bind(tags)
                .bind(reg.expiry_ms)
                .bind(reg.ephemeral)
                .bind(reg.register_method.as_str())
                .bind(auth_key_id)
                .bind(reg.now_ms)
                .fetch_one(&mut *conn)
                .await?;
                return Ok(RegisteredNode { node: row.try_into()?, created: false });
            }
            let cached = (!read_table)
                .then(|| {
                    self.store.taken.pick(tid, |taken| {
                        let ips = allocator.allocate_above(&taken.ips, &mut rand::thread_rng(), taken.floor);
                        if let Ok((v4, v6)) = ips {
                            taken.floor = Floor::after(v4, v6);
                        }
                        (ips, free_given_name(&reg.given_name, &taken.names))
                    })
                })
                .flatten();
            let (ips, given_name) = match cached {
                Some(picked) => picked,
                None => {
                    let rows: Vec<(String, Option<String>, Option<String>)> =
                        sqlx::query_as("SELECT given_name, ipv4, ipv6 FROM nodes WHERE tenant_id = $1")
                            .bind(tid)
                            .fetch_all(&mut *conn)
                            .await?;
                    let mut taken = Taken::default();
                    for (name, v4, v6) in rows {
                        taken.names.insert(name);
                        taken.ips.extend(v4.iter().chain(v6.iter()).filter_map(|s| s.parse::<IpAddr>().ok()));
                    }
                    let ips = allocator.allocate(&taken.ips, &mut rand::thread_rng());
                    if let Ok((v4, v6)) = ips {
                        taken.floor = Floor::after(v4, v6);
                    }
                    let name = free_given_name(&reg.given_name, &taken.names);
                    self.store.taken.fill(tid, taken);
                    (ips, name)
                }
            };
            let (ipv4, ipv6) = ips?;
            let row: NodeRow = sqlx::query_as(concat!(
                "INSERT INTO nodes (tenant_id, machine_key, node_key, disco_key, ipv4, ipv6, hostname, given_name, \
                 user_id, tags, hostinfo, endpoints, approved_routes, expiry_ms, last_seen_ms, ephemeral, \
                 register_method, auth_key_id, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '[]', '[]', $12, NULL, $13, $14, $15, $16, $16) \
                 RETURNING ",
                node_cols!()
            ))
            .bind(tid)
            .bind(&reg.machine_key)
            .bind(&reg.node_key)
            .bind(&reg.disco_key)
            .bind(ipv4.map(|ip| ip.to_string()))
            .bind(ipv6.map(|ip| ip.to_string()))
            .bind(&reg.hostname)
            .bind(given_name.as_str())
            .bind(reg.user_id.map(|u| u.0))
            .bind(tags)
            .bind(&reg.hostinfo)
            .bind(reg.expiry_ms)
            .bind(reg.ephemeral)
            .bind(reg.register_method.as_str())
            .bind(auth_key_id)
            .bind(reg.now_ms)
            .fetch_one(&mut *conn)
            .await?;
            Ok(RegisteredNode { node: row.try_into()?, created: true })
        })
    }

    /// The node with this id, if it belongs to this tenant.
    pub async fn node_by_id(&self, id: NodeId) -> Result<Option<NodeRecord>> {
        let row: Option<NodeRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", node_cols!(), " FROM nodes WHERE tenant_id = $1 AND id = $2"))
                .bind(self.tid())
                .bind(id.0)
                .fetch_optional(db)
                .await?
        });
        row.map(TryInto::try_into).transpose()
    }

    /// The node with this machine key (`mkey:…`), if any.
    pub async fn node_by_machine_key(&self, machine_key: &str) -> Result<Option<NodeRecord>> {
        let row: Option<NodeRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", node_cols!(), " FROM nodes WHERE tenant_id = $1 AND machine_key = $2"))
                .bind(self.tid())
                .bind(machine_key)
                .fetch_optional(db)
                .await?
        });
        row.map(TryInto::try_into).transpose()
    }

    /// The node with this node key (`nodekey:…`), if it belongs to this tenant.
    pub async fn node_by_node_key(&self, node_key: &str) -> Result<Option<NodeRecord>> {
        let row: Option<NodeRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", node_cols!(), " FROM nodes WHERE tenant_id = $1 AND node_key = $2"))
                .bind(self.tid())
                .bind(node_key)
                .fetch_optional(db)
                .await?
        });
        row.map(TryInto::try_into).transpose()
    }

    /// All nodes of the tenant, by id.
    pub async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let rows: Vec<NodeRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!("SELECT ", node_cols!(), " FROM nodes WHERE tenant_id = $1 ORDER BY id"))
                .bind(self.tid())
                .fetch_all(db)
                .await?
        });
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// The nodes `user` owns, by id.
    pub async fn list_nodes_of_user(&self, user: UserId) -> Result<Vec<NodeRecord>> {
        let rows: Vec<NodeRow> = read_db!(self.store, |db| {
            sqlx::query_as(concat!(
                "SELECT ",
                node_cols!(),
                " FROM nodes WHERE tenant_id = $1 AND user_id = $2 ORDER BY id"
            ))
            .bind(self.tid())
            .bind(user.0)
            .fetch_all(db)
            .await?
        });
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Applies what a map request reports (disco key, hostinfo, endpoints, last seen); `None` fields stay.
    pub async fn update_node_session(&self, id: NodeId, update: NodeSessionUpdate) -> Result<()> {
        match self.update_node_sessions(vec![(id, update)]).await? {
            0 => Err(StoreError::not_found(Entity::Node, id.0)),
            _ => Ok(()),
        }
    }

    /// Applies many nodes' session updates in one transaction (one commit instead of one per update: the map
    /// sessions' soft state is written in batches). Nodes deleted in the meantime are skipped; returns how many rows
    /// were updated. A malformed hostinfo rejects the whole batch before anything is written. It runs on the store's
    /// writer thread, like registrations.
    pub async fn update_node_sessions(&self, updates: Vec<(NodeId, NodeSessionUpdate)>) -> Result<u64> {
        for (_, u) in &updates {
            if let Some(h) = &u.hostinfo {
                check_json("hostinfo", h)?;
            }
        }
        let (store, tenant) = (self.store.clone(), self.tenant);
        self.store.writer.run(async move { store.tenant(tenant).write_node_sessions(&updates).await }).await
    }

    async fn write_node_sessions(&self, updates: &[(NodeId, NodeSessionUpdate)]) -> Result<u64> {
        let now = now_ms();
        transaction!(self.store, |conn| {
            let mut updated = 0;
            for (id, update) in updates {
                let endpoints = update.endpoints.as_ref().map(json_list);
                // Presence alone (last seen) is not a configuration change: `updated_ms` stays.
                let configured = update.disco_key.is_some() || update.hostinfo.is_some() || endpoints.is_some();
                updated += sqlx::query(
                    "UPDATE nodes SET disco_key = COALESCE($3, disco_key), hostinfo = COALESCE($4, hostinfo), \
                     endpoints = COALESCE($5, endpoints), last_seen_ms = COALESCE($6, last_seen_ms), \
                     updated_ms = CASE WHEN $8 THEN $7 ELSE updated_ms END \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(self.tid())
                .bind(id.0)
                .bind(update.disco_key.as_deref())
                .bind(update.hostinfo.as_deref())
                .bind(endpoints.as_deref())
                .bind(update.last_seen_ms)
                .bind(now)
                .bind(configured)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            }
            Ok(updated)
        })
    }

    /// Records that the node was seen at `ms` (does not bump `updated_ms`: presence is not a configuration change).
    pub async fn set_last_seen(&self, id: NodeId, ms: i64) -> Result<()> {
        self.update_node_session(id, NodeSessionUpdate { last_seen_ms: Some(ms), ..Default::default() }).await
    }

    /// Replaces the node key (key rotation). Fails with [`Conflict::NodeKey`] if another node has it.
    pub async fn rotate_node_key(&self, id: NodeId, new_node_key: &str) -> Result<NodeRecord> {
        self.update_node(id, "node_key = $3", Value::Text(new_node_key), || Conflict::NodeKey).await
    }

    /// Sets (or with `None` clears) the key expiry.
    pub async fn set_node_expiry(&self, id: NodeId, expiry_ms: Option<i64>) -> Result<NodeRecord> {
        self.update_node(id, "expiry_ms = $3", Value::OptInt(expiry_ms), || unreachable_conflict("expiry_ms")).await
    }

    /// Renames the node. Fails with [`Conflict::GivenName`] if another node of the tenant has the name.
    pub async fn rename_node(&self, id: NodeId, name: DnsLabel) -> Result<NodeRecord> {
        let renamed = self
            .update_node(id, "given_name = $3", Value::Text(name.as_str()), || {
                Conflict::GivenName(name.as_str().to_string())
            })
            .await;
        self.store.taken.forget(self.tid());
        renamed
    }

    /// Replaces the node's tags (stored sorted and de-duplicated).
    pub async fn set_node_tags(&self, id: NodeId, tags: Vec<Tag>) -> Result<NodeRecord> {
        let json = sorted_json_list(tags.iter().map(Tag::as_str));
        self.update_node(id, "tags = $3", Value::Text(&json), || unreachable_conflict("tags")).await
    }

    /// Replaces the approved subnet routes (stored sorted and de-duplicated; the caller validates them).
    pub async fn set_approved_routes(&self, id: NodeId, routes: Vec<String>) -> Result<NodeRecord> {
        let json = sorted_json_list(routes);
        self.update_node(id, "approved_routes = $3", Value::Text(&json), || unreachable_conflict("approved_routes"))
            .await
    }

    /// Deletes the node and returns it as it was.
    pub async fn delete_node(&self, id: NodeId) -> Result<NodeRecord> {
        let row: Option<NodeRow> = write_db!(self.store, |db| {
            sqlx::query_as(concat!("DELETE FROM nodes WHERE tenant_id = $1 AND id = $2 RETURNING ", node_cols!()))
                .bind(self.tid())
                .bind(id.0)
                .fetch_optional(db)
                .await?
        });
        let node: NodeRecord = row.ok_or(StoreError::not_found(Entity::Node, id.0))?.try_into()?;
        self.store.taken.remove(self.tid(), &node);
        Ok(node)
    }

    /// `UPDATE nodes SET <assignment>, updated_ms = now WHERE tenant_id = $1 AND id = $2 RETURNING *`, with the
    /// assignment's value bound as `$3`; a unique violation becomes `conflict()`.
    async fn update_node(
        &self,
        id: NodeId,
        assignment: &'static str,
        value: Value<'_>,
        conflict: impl FnOnce() -> Conflict,
    ) -> Result<NodeRecord> {
        let sql = format!(
            "UPDATE nodes SET {assignment}, updated_ms = $4 WHERE tenant_id = $1 AND id = $2 RETURNING {}",
            node_cols!()
        );
        let row: Result<Option<NodeRow>> = write_db!(self.store, |db| {
            let q = sqlx::query_as(&sql).bind(self.tid()).bind(id.0);
            let q = match value {
                Value::Text(s) => q.bind(s),
                Value::OptInt(v) => q.bind(v),
            };
            q.bind(now_ms()).fetch_optional(db).await.map_err(StoreError::from)
        });
        match row {
            Ok(Some(row)) => row.try_into(),
            Ok(None) => Err(StoreError::not_found(Entity::Node, id.0)),
            Err(e) => Err(e.or_conflict(conflict)),
        }
    }
}

/// The value bound into [`TenantStore::update_node`]'s assignment.
enum Value<'a> {
    Text(&'a str),
    OptInt(Option<i64>),
}

/// For columns without a uniqueness rule; kept total instead of panicking should the schema ever gain one.
fn unreachable_conflict(column: &str) -> Conflict {
    Conflict::Other { constraint: format!("nodes.{column}") }
}

/// `wanted` if no node has it, else the first of `wanted-1`, `wanted-2`, … that is free.
/// The given names and addresses of one tenant's nodes.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    names: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    /// Where sequential allocation resumes. It moves past each allocation even if the transaction then fails,
    /// which (like any staleness here) can only waste an address until the next read.
    floor: Floor,
    loaded: Option<std::time::Instant>,
}

/// Per tenant, the names and addresses in use, read from the node table once and then kept up to date by this
/// process's own registrations and deletions. Other instances sharing the database change the table behind it, so an
/// entry is trusted for [`TakenCache::FRESH`] only, and a registration that collides with another instance's
/// (a unique violation) forgets it: the retry reads the table again. Within its lifetime a stale entry can only
/// believe a freed name or address is still taken, which wastes it until the next read, never hands out a duplicate.
#[derive(Debug, Default)]
pub(crate) struct TakenCache {
    tenants: std::sync::Mutex<std::collections::HashMap<i64, Taken>>,
}

impl TakenCache {
    const FRESH: Duration = Duration::from_secs(30);

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<i64, Taken>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the tenant's fresh entry, if there is one.
    fn pick<T>(&self, tid: i64, f: impl FnOnce(&mut Taken) -> T) -> Option<T> {
        let mut tenants = self.lock();
        let taken = tenants.get_mut(&tid)?;
        taken.loaded.is_some_and(|at| at.elapsed() < Self::FRESH).then(|| f(taken))
    }

    fn fill(&self, tid: i64, mut taken: Taken) {
        taken.loaded = Some(std::time::Instant::now());
        self.lock().insert(tid, taken);
    }

    fn add(&self, tid: i64, node: &NodeRecord) {
        if let Some(t) = self.lock().get_mut(&tid) {
            t.names.insert(node.given_name.clone());
            t.ips.extend(node.ipv4.map(IpAddr::V4).into_iter().chain(node.ipv6.map(IpAddr::V6)));
        }
    }

    fn remove(&self, tid: i64, node: &NodeRecord) {
        if let Some(t) = self.lock().get_mut(&tid) {
            t.names.remove(&node.given_name);
            for ip in node.ipv4.map(IpAddr::V4).into_iter().chain(node.ipv6.map(IpAddr::V6)) {
                t.ips.remove(&ip);
                t.floor.release(ip);
            }
        }
    }

    fn forget(&self, tid: i64) {
        self.lock().remove(&tid);
    }
}

fn free_given_name(wanted: &DnsLabel, taken: &BTreeSet<String>) -> DnsLabel {
    if !taken.contains(wanted.as_str()) {
        return wanted.clone();
    }
    // `taken` is finite, so some suffix below `taken.len() + 1` is free.
    (1..=u32::MAX)
        .map(|n| wanted.with_suffix(n))
        .find(|c| !taken.contains(c.as_str()))
        .unwrap_or_else(|| wanted.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_name_suffixes() {
        let label = |s: &str| DnsLabel::parse(s).unwrap();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let cases: &[(&str, &[&str], &str)] = &[
            ("laptop", &[], "laptop"),
            ("laptop", &["laptop"], "laptop-1"),
            ("laptop", &["laptop", "laptop-1"], "laptop-2"),
            ("laptop", &["laptop", "laptop-2"], "laptop-1"),
            ("laptop", &["laptop-1"], "laptop"),
        ];
        for (wanted, taken, want) in cases {
            assert_eq!(free_given_name(&label(wanted), &set(taken)).as_str(), *want, "{wanted} {taken:?}");
        }
        let long = "a".repeat(63);
        let got = free_given_name(&label(&long), &set(&[&long]));
        assert_eq!(got.as_str().len(), 63);
        assert!(got.as_str().ends_with("-1"));
    }
}
