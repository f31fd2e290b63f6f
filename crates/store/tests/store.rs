//! The store's behaviour, run against both backends (see `common::backend_tests!`).

mod common;

use common::TestDb;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::BTreeSet;
use std::net::IpAddr;
use tailwarden_store::secret::{GeneratedSecret, SecretKind, parse_presented, verify};
use tailwarden_store::{
    BackendKind, Conflict, Entity, NewPreAuthKey, NodeRegistration, NodeSessionUpdate, PreAuthKeyRecord, PreAuthKeyUse,
    RegisterMethod, Store, StoreError, TenantStore, UserRecord,
};
use tailwarden_types::{ApiKeyId, DnsLabel, NodeId, PreAuthKeyId, Tag, TenantId, UserId};

backend_tests!(
    users_crud_and_uniqueness,
    one_time_key_single_use_under_concurrency,
    expired_key_is_refused,
    reusable_key_can_be_used_twice,
    reregistration_keeps_identity,
    given_name_collision_gets_suffix,
    delete_user_refuses_with_nodes_and_deletes_keys,
    tenant_isolation,
    ips_stay_unique_across_50_registrations,
    concurrent_writers_on_two_instances,
    data_persists_across_reopen,
    pre_auth_key_lifecycle,
    node_updates,
    api_key_lifecycle,
    policy_versions_and_audit_log,
    tenants_via_system_handle,
);

const T1: TenantId = TenantId::DEFAULT;
const HOUR_MS: i64 = 3_600_000;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn label(s: &str) -> DnsLabel {
    DnsLabel::sanitize(s).unwrap()
}

/// A registration of machine `m` (node key derived from it) wanting the given name.
fn reg(m: &str, name: &str, user: Option<UserId>, key: Option<PreAuthKeyId>) -> NodeRegistration {
    NodeRegistration {
        machine_key: format!("mkey:{m}"),
        node_key: format!("nodekey:{m}"),
        disco_key: format!("discokey:{m}"),
        hostname: name.to_string(),
        given_name: label(name),
        user_id: user,
        tags: vec![],
        hostinfo: format!(r#"{{"Hostname":"{name}"}}"#),
        expiry_ms: None,
        ephemeral: false,
        register_method: if key.is_some() { RegisterMethod::AuthKey } else { RegisterMethod::Cli },
        auth_key: key.map(|id| PreAuthKeyUse { id, now_ms: now() }),
        now_ms: now(),
    }
}

async fn user(t: &TenantStore<'_>, name: &str) -> UserRecord {
    t.create_user(name, &format!("{name} display"), &format!("{name}@example.com")).await.unwrap()
}

async fn pre_auth_key(
    t: &TenantStore<'_>,
    user: Option<UserId>,
    reusable: bool,
    expiration_ms: Option<i64>,
) -> PreAuthKeyRecord {
    let secret = GeneratedSecret::new(SecretKind::PreAuthKey, &mut rand::thread_rng());
    t.create_pre_auth_key(NewPreAuthKey {
        user_id: user,
        reusable,
        ephemeral: false,
        tags: vec![],
        expiration_ms,
        prefix: secret.prefix,
        hash: secret.hash,
    })
    .await
    .unwrap()
}

async fn users_crud_and_uniqueness(db: TestDb) {
    let t = db.store.tenant(T1);
    let alice = user(&t, "alice").await;
    assert_eq!(alice.tenant_id, T1);
    assert_eq!(alice.email, "alice@example.com");
    assert_eq!(alice.provider_identifier, None);
    let bob = user(&t, "bob").await;
    assert!(bob.id > alice.id);

    let err = t.create_user("alice", "", "").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::UserName(ref n) } if n == "alice"), "{err:?}");

    assert_eq!(t.list_users().await.unwrap(), vec![alice.clone(), bob.clone()]);
    assert_eq!(t.user_by_name("bob").await.unwrap(), Some(bob.clone()));
    assert_eq!(t.user_by_id(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(t.user_by_name("carol").await.unwrap(), None);

    let renamed = t.rename_user(alice.id, "alicia").await.unwrap();
    assert_eq!(renamed.name, "alicia");
    assert_eq!(renamed.id, alice.id);
    assert!(renamed.updated_ms >= alice.updated_ms);
    let err = t.rename_user(alice.id, "bob").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::UserName(_) }), "{err:?}");
    let err = t.rename_user(UserId(9999), "x").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::User, id: 9999 }), "{err:?}");

    let oidc = t.create_user_with_identity("carol", "Carol", "c@example.com", "https://idp/|carol").await.unwrap();
    assert_eq!(t.user_by_provider_identifier("https://idp/|carol").await.unwrap(), Some(oidc.clone()));
    let err = t.create_user_with_identity("carol2", "", "", "https://idp/|carol").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::ProviderIdentifier(_) }), "{err:?}");

    let updated = t.update_user_profile(oidc.id, "caroline", "Caroline", "caroline@example.com").await.unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.display_name.as_str(), updated.email.as_str()),
        ("caroline", "Caroline", "caroline@example.com")
    );
    assert_eq!(updated.provider_identifier.as_deref(), Some("https://idp/|carol"), "the identity stays");
    assert_eq!(t.user_by_provider_identifier("https://idp/|carol").await.unwrap(), Some(updated));
    let err = t.update_user_profile(oidc.id, "bob", "", "").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::UserName(ref n) } if n == "bob"), "{err:?}");
    let err = t.update_user_profile(UserId(9999), "x", "", "").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::User, id: 9999 }), "{err:?}");

    t.delete_user(bob.id).await.unwrap();
    assert_eq!(t.user_by_id(bob.id).await.unwrap(), None);
    let err = t.delete_user(bob.id).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::User, .. }), "{err:?}");
    // the name is free again
    user(&t, "bob").await;
}

async fn one_time_key_single_use_under_concurrency(db: TestDb) {
    let t = db.store.tenant(T1);
    let u = user(&t, "alice").await;
    // A second store on the same database plays another instance (another process for SQLite).
    let other = db.open_again().await;
    for round in 0..5 {
        let key = pre_auth_key(&t, Some(u.id), false, None).await;
        let (a, b) = (db.store.clone(), other.clone());
        let ra = reg(&format!("a{round}"), "laptop", Some(u.id), Some(key.id));
        let rb = reg(&format!("b{round}"), "laptop", Some(u.id), Some(key.id));
        let ja = tokio::spawn(async move { a.tenant(T1).register_node(ra).await });
        let jb = tokio::spawn(async move { b.tenant(T1).register_node(rb).await });
        let results = [ja.await.unwrap(), jb.await.unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: exactly one registration may use a one-time key: {results:?}");
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(matches!(loser, StoreError::PreAuthKeyUnusable { id } if *id == key.id), "{loser:?}");
        assert_eq!(t.list_nodes().await.unwrap().len(), round + 1, "the loser wrote no node row");
        let key = t.pre_auth_key_by_prefix(&key.prefix).await.unwrap().unwrap();
        assert_eq!(key.used_count, 1);
        assert!(!key.usable_at(now()));
    }
}

async fn expired_key_is_refused(db: TestDb) {
    let t = db.store.tenant(T1);
    let u = user(&t, "alice").await;
    let expired = pre_auth_key(&t, Some(u.id), true, Some(now() - 1)).await;
    let err = t.register_node(reg("m1", "a", Some(u.id), Some(expired.id))).await.unwrap_err();
    assert!(matches!(err, StoreError::PreAuthKeyUnusable { .. }), "{err:?}");

    let key = pre_auth_key(&t, Some(u.id), true, Some(now() + HOUR_MS)).await;
    t.register_node(reg("m2", "b", Some(u.id), Some(key.id))).await.unwrap();
    t.expire_pre_auth_key(key.id, now()).await.unwrap();
    let err = t.register_node(reg("m3", "c", Some(u.id), Some(key.id))).await.unwrap_err();
    assert!(matches!(err, StoreError::PreAuthKeyUnusable { .. }), "{err:?}");

    // an unknown key id is refused the same way
    let err = t.register_node(reg("m4", "d", Some(u.id), Some(PreAuthKeyId(424242)))).await.unwrap_err();
    assert!(matches!(err, StoreError::PreAuthKeyUnusable { .. }), "{err:?}");

    let nodes = t.list_nodes().await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.machine_key.as_str()).collect::<Vec<_>>(), vec!["mkey:m2"]);
    let expired = t.pre_auth_key_by_prefix(&expired.prefix).await.unwrap().unwrap();
    assert_eq!(expired.used_count, 0, "a refused use is not counted");
}

async fn reusable_key_can_be_used_twice(db: TestDb) {
    let t = db.store.tenant(T1);
    let u = user(&t, "alice").await;
    let key = pre_auth_key(&t, Some(u.id), true, None).await;
    let a = t.register_node(reg("m1", "a", Some(u.id), Some(key.id))).await.unwrap();
    let b = t.register_node(reg("m2", "b", Some(u.id), Some(key.id))).await.unwrap();
    assert!(a.created && b.created);
    assert_eq!(a.node.auth_key_id, Some(key.id));
    assert_eq!(a.node.register_method, RegisterMethod::AuthKey);
    let key = t.pre_auth_key_by_prefix(&key.prefix).await.unwrap().unwrap();
    assert_eq!(key.used_count, 2);
    assert!(key.usable_at(now()));
}

async fn reregistration_keeps_identity(db: TestDb) {
    let t = db.store.tenant(T1);
    let u = user(&t, "alice").await;
    let first = t.register_node(reg("m1", "laptop", Some(u.id), None)).await.unwrap();
    assert!(first.created);
    let n = first.node;
    assert_eq!(n.given_name, "laptop");
    assert!(n.ipv4.is_some() && n.ipv6.is_some());

    let mut again = reg("m1", "renamed-host", Some(u.id), None);
    again.node_key = "nodekey:rotated".into();
    again.disco_key = "discokey:new".into();
    again.hostinfo = r#"{"Hostname":"renamed-host","OS":"linux"}"#.into();
    again.expiry_ms = Some(now() + HOUR_MS);
    again.tags = vec![Tag::parse("tag:b").unwrap(), Tag::parse("tag:a").unwrap()];
    let second = t.register_node(again).await.unwrap();
    assert!(!second.created);
    let m = second.node;
    assert_eq!((m.id, m.ipv4, m.ipv6, m.given_name.as_str()), (n.id, n.ipv4, n.ipv6, "laptop"));
    assert_eq!(m.node_key, "nodekey:rotated");
    assert_eq!(m.disco_key, "discokey:new");
    assert_eq!(m.hostname, "renamed-host");
    assert!(m.hostinfo.contains("linux"));
    assert_eq!(m.tags, vec!["tag:a", "tag:b"]);
    assert_eq!(m.created_ms, n.created_ms);
    assert_eq!(t.list_nodes().await.unwrap().len(), 1);
    assert_eq!(t.node_by_node_key("nodekey:m1").await.unwrap(), None);
    assert_eq!(t.node_by_node_key("nodekey:rotated").await.unwrap().map(|n| n.id), Some(n.id));

    // invalid hostinfo JSON is refused before anything is written
    let mut bad = reg("m2", "x", Some(u.id), None);
    bad.hostinfo = "{not json".into();
    let err = t.register_node(bad).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidJson { field: "hostinfo", .. }), "{err:?}");
    // an unknown user is refused
    let err = t.register_node(reg("m3", "y", Some(UserId(777)), None)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::User, id: 777 }), "{err:?}");
    // a node key held by another node is a conflict, not a retry loop
    let mut dup = reg("m4", "z", Some(u.id), None);
    dup.node_key = "nodekey:rotated".into();
    let err = t.register_node(dup).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::NodeKey }), "{err:?}");
    assert_eq!(t.list_nodes().await.unwrap().len(), 1);
}

async fn given_name_collision_gets_suffix(db: TestDb) {
    let t = db.store.tenant(T1);
    let u = user(&t, "alice").await;
    let mut names = vec![];
    for i in 0..3 {
        names.push(t.register_node(reg(&format!("m{i}"), "laptop", Some(u.id), None)).await.unwrap().node);
    }
    assert_eq!(names.iter().map(|n| n.given_name.as_str()).collect::<Vec<_>>(), ["laptop", "laptop-1", "laptop-2"]);
    assert!(names.iter().all(|n| n.hostname == "laptop"));

    let err = t.rename_node(names[2].id, label("laptop")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::GivenName(ref n) } if n == "laptop"), "{err:?}");
    let renamed = t.rename_node(names[1].id, label("desk")).await.unwrap();
    assert_eq!(renamed.given_name, "desk");
    // the freed name is reused by the next collision
    let next = t.register_node(reg("m9", "laptop", Some(u.id), None)).await.unwrap().node;
    assert_eq!(next.given_name, "laptop-1");
}

async fn delete_user_refuses_with_nodes_and_deletes_keys(db: TestDb) {
    let t = db.store.tenant(T1);
    let u = user(&t, "alice").await;
    let key = pre_auth_key(&t, Some(u.id), true, None).await;
    let node = t.register_node(reg("m1", "a", Some(u.id), Some(key.id))).await.unwrap().node;
    let err = t.delete_user(u.id).await.unwrap_err();
    assert!(matches!(err, StoreError::UserHasNodes { user, count: 1 } if user == u.id), "{err:?}");
    assert!(t.user_by_id(u.id).await.unwrap().is_some());
    assert!(t.pre_auth_key_by_prefix(&key.prefix).await.unwrap().is_some(), "refusal rolled back");

    t.delete_node(node.id).await.unwrap();
    t.delete_user(u.id).await.unwrap();
    assert_eq!(t.user_by_id(u.id).await.unwrap(), None);
    assert_eq!(t.pre_auth_key_by_prefix(&key.prefix).await.unwrap(), None, "keys go with their user");
    assert!(t.list_pre_auth_keys(None).await.unwrap().is_empty());
}

async fn tenant_isolation(db: TestDb) {
    let sys = db.store.system();
    let t2_id = sys.create_tenant("second").await.unwrap().id;
    assert_ne!(t2_id, T1);
    let (t1, t2) = (db.store.tenant(T1), db.store.tenant(t2_id));

    // tenant 1 owns one of everything
    let u = user(&t1, "alice").await;
    let key = pre_auth_key(&t1, Some(u.id), true, None).await;
    let node = t1.register_node(reg("m1", "laptop", Some(u.id), Some(key.id))).await.unwrap().node;
    let api = GeneratedSecret::new(SecretKind::ApiKey, &mut rand::thread_rng());
    let api_key = t1.create_api_key(&api.prefix, &api.hash, None).await.unwrap();
    t1.put_policy(r#"{"acls":[]}"#, now()).await.unwrap();
    t1.append_audit("alice", "user.create", &serde_json::json!({"user": "alice"})).await.unwrap();

    // tenant 2 sees none of it
    assert!(t2.list_users().await.unwrap().is_empty());
    assert_eq!(t2.user_by_id(u.id).await.unwrap(), None);
    assert_eq!(t2.user_by_name("alice").await.unwrap(), None);
    assert!(t2.list_nodes().await.unwrap().is_empty());
    assert!(t2.list_nodes_of_user(u.id).await.unwrap().is_empty());
    assert_eq!(t2.node_by_id(node.id).await.unwrap(), None);
    assert_eq!(t2.node_by_machine_key("mkey:m1").await.unwrap(), None);
    assert_eq!(t2.node_by_node_key("nodekey:m1").await.unwrap(), None);
    assert!(t2.list_pre_auth_keys(None).await.unwrap().is_empty());
    assert_eq!(t2.pre_auth_key_by_prefix(&key.prefix).await.unwrap(), None);
    assert!(t2.list_api_keys().await.unwrap().is_empty());
    assert_eq!(t2.api_key_by_prefix(&api.prefix).await.unwrap(), None);
    assert_eq!(t2.latest_policy().await.unwrap(), None);
    assert!(t2.list_audit(10).await.unwrap().is_empty());

    // ... and can change none of it
    let not_found = |r: Result<(), StoreError>, e: Entity| {
        assert!(matches!(r, Err(StoreError::NotFound { entity, .. }) if entity == e), "{r:?}");
    };
    not_found(t2.rename_user(u.id, "mallory").await.map(drop), Entity::User);
    not_found(t2.delete_user(u.id).await, Entity::User);
    not_found(t2.delete_node(node.id).await.map(drop), Entity::Node);
    not_found(t2.rename_node(node.id, label("evil")).await.map(drop), Entity::Node);
    not_found(t2.set_node_tags(node.id, vec![Tag::parse("tag:evil").unwrap()]).await.map(drop), Entity::Node);
    not_found(t2.set_approved_routes(node.id, vec!["0.0.0.0/0".into()]).await.map(drop), Entity::Node);
    not_found(t2.rotate_node_key(node.id, "nodekey:evil").await.map(drop), Entity::Node);
    not_found(t2.set_node_expiry(node.id, Some(0)).await.map(drop), Entity::Node);
    not_found(t2.set_last_seen(node.id, 1).await, Entity::Node);
    not_found(t2.update_node_session(node.id, NodeSessionUpdate::default()).await, Entity::Node);
    not_found(t2.expire_pre_auth_key(key.id, now()).await, Entity::PreAuthKey);
    not_found(t2.delete_pre_auth_key(key.id).await, Entity::PreAuthKey);
    not_found(t2.expire_api_key(api_key.id, now()).await, Entity::ApiKey);
    not_found(t2.touch_api_key(api_key.id, now()).await, Entity::ApiKey);
    not_found(t2.delete_api_key(api_key.id).await, Entity::ApiKey);
    // tenant 1's key and user cannot be used for a registration in tenant 2
    let err = t2.register_node(reg("m2", "x", None, Some(key.id))).await.unwrap_err();
    assert!(matches!(err, StoreError::PreAuthKeyUnusable { .. }), "{err:?}");
    let err = t2.register_node(reg("m2", "x", Some(u.id), None)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::User, .. }), "{err:?}");
    let err = t2
        .create_pre_auth_key(NewPreAuthKey {
            user_id: Some(u.id),
            reusable: false,
            ephemeral: false,
            tags: vec![],
            expiration_ms: None,
            prefix: "otherprefix1".into(),
            hash: vec![0; 32],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::User, .. }), "{err:?}");
    assert!(t2.list_nodes().await.unwrap().is_empty());

    // tenant 1 is untouched
    let after = t1.node_by_id(node.id).await.unwrap().unwrap();
    assert_eq!(after, node);
    assert_eq!(t1.user_by_id(u.id).await.unwrap().unwrap().name, "alice");
    assert_eq!(t1.pre_auth_key_by_prefix(&key.prefix).await.unwrap().unwrap().used_count, 1);

    // names, machine keys and addresses are per tenant; node keys are global
    let u2 = user(&t2, "alice").await;
    let mut same_machine = reg("m1", "laptop", Some(u2.id), None);
    same_machine.node_key = "nodekey:t2".into();
    let n2 = t2.register_node(same_machine).await.unwrap();
    assert!(n2.created);
    assert_eq!((n2.node.given_name.as_str(), n2.node.ipv4), ("laptop", node.ipv4));
    let err = t2.register_node(reg("m3", "dup", None, None)).await.map(drop);
    assert!(err.is_ok(), "{err:?}");
    let mut stolen = reg("m4", "thief", None, None);
    stolen.node_key = node.node_key.clone();
    let err = t2.register_node(stolen).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::NodeKey }), "{err:?}");

    // the system handle resolves keys to their tenants
    assert_eq!(sys.tenant_of_pre_auth_key(&key.prefix).await.unwrap(), Some(T1));
    assert_eq!(sys.tenant_of_api_key(&api.prefix).await.unwrap(), Some(T1));
    assert_eq!(sys.tenant_of_api_key("nope").await.unwrap(), None);
    assert_eq!(sys.node_by_node_key("nodekey:t2").await.unwrap().map(|n| n.tenant_id), Some(t2_id));

    // a tenant that does not exist cannot receive rows
    let ghost = db.store.tenant(TenantId(4040));
    let err = ghost.create_user("x", "", "").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::Tenant, id: 4040 }), "{err:?}");
    let err = ghost.register_node(reg("m5", "ghost", None, None)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::Tenant, id: 4040 }), "{err:?}");
}

async fn ips_stay_unique_across_50_registrations(db: TestDb) {
    let t = db.store.tenant(T1);
    let u = user(&t, "alice").await;
    // 30 one after another, then 20 at once from two instances
    for i in 0..30 {
        t.register_node(reg(&format!("s{i}"), "host", Some(u.id), None)).await.unwrap();
    }
    let other = db.open_again().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { db.store.clone() } else { other.clone() };
        let r = reg(&format!("c{i}"), "host", Some(u.id), None);
        tasks.spawn(async move { store.tenant(T1).register_node(r).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let nodes = t.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 50);
    let alloc = db.store.ip_allocator();
    let mut seen = BTreeSet::new();
    for n in &nodes {
        for ip in [n.ipv4.map(IpAddr::V4), n.ipv6.map(IpAddr::V6)] {
            let ip = ip.expect("both families enabled by default");
            assert!(alloc.is_assignable(ip), "{ip} is not assignable");
            assert!(seen.insert(ip), "{ip} assigned twice");
        }
    }
    let names: BTreeSet<_> = nodes.iter().map(|n| n.given_name.clone()).collect();
    assert_eq!(names.len(), 50, "given names are unique");
    // sequential allocation fills the lowest addresses
    assert!(nodes.iter().all(|n| n.ipv4.unwrap().octets()[..3] == [100, 64, 0]));
}

async fn concurrent_writers_on_two_instances(db: TestDb) {
    let other = db.open_again().await;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..6 {
        let store = if w % 2 == 0 { db.store.clone() } else { other.clone() };
        tasks.spawn(async move {
            let t = store.tenant(T1);
            for i in 0..8 {
                let u = t.create_user(&format!("w{w}-u{i}"), "", "").await.unwrap();
                let key = pre_auth_key(&t, Some(u.id), false, None).await;
                t.register_node(reg(&format!("w{w}-m{i}"), "box", Some(u.id), Some(key.id))).await.unwrap();
                t.append_audit("test", "node.register", &serde_json::json!({"w": w, "i": i})).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let t = db.store.tenant(T1);
    assert_eq!(t.list_users().await.unwrap().len(), 48);
    assert_eq!(t.list_nodes().await.unwrap().len(), 48);
    assert_eq!(t.list_audit(100).await.unwrap().len(), 48);
    assert!(t.list_pre_auth_keys(None).await.unwrap().iter().all(|k| k.used_count == 1));
}

async fn data_persists_across_reopen(db: TestDb) {
    let t = db.store.tenant(T1);
    let u = user(&t, "alice").await;
    let node = t.register_node(reg("m1", "laptop", Some(u.id), None)).await.unwrap().node;
    t.put_policy("{}", 5).await.unwrap();
    db.store.close().await;

    let reopened = db.open_again().await;
    let t = reopened.tenant(T1);
    assert_eq!(t.user_by_name("alice").await.unwrap(), Some(u));
    assert_eq!(t.node_by_id(node.id).await.unwrap(), Some(node));
    assert_eq!(t.latest_policy().await.unwrap().map(|p| p.data), Some("{}".into()));
    // migrations ran once and the default tenant was created once
    assert_eq!(reopened.system().list_tenants().await.unwrap().len(), 1);
}

async fn pre_auth_key_lifecycle(db: TestDb) {
    let t = db.store.tenant(T1);
    let alice = user(&t, "alice").await;
    let bob = user(&t, "bob").await;
    let secret = GeneratedSecret::new(SecretKind::PreAuthKey, &mut StdRng::seed_from_u64(1));
    let tagged = t
        .create_pre_auth_key(NewPreAuthKey {
            user_id: None,
            reusable: true,
            ephemeral: true,
            tags: vec![Tag::parse("tag:web").unwrap(), Tag::parse("tag:db").unwrap(), Tag::parse("tag:web").unwrap()],
            expiration_ms: Some(now() + HOUR_MS),
            prefix: secret.prefix.clone(),
            hash: secret.hash.clone(),
        })
        .await
        .unwrap();
    assert_eq!(tagged.tags, vec!["tag:db", "tag:web"]);
    assert_eq!(tagged.user_id, None);
    assert!(tagged.ephemeral && tagged.reusable);
    let ka = pre_auth_key(&t, Some(alice.id), false, None).await;
    let kb = pre_auth_key(&t, Some(bob.id), false, None).await;

    // verification flow: presented key -> prefix -> record -> constant-time hash comparison
    let (prefix, presented) = parse_presented(SecretKind::PreAuthKey, &secret.display).unwrap();
    let found = t.pre_auth_key_by_prefix(&prefix).await.unwrap().unwrap();
    assert!(verify(&found.hash, &presented));
    assert_eq!(found, tagged);

    assert_eq!(t.list_pre_auth_keys(None).await.unwrap().len(), 3);
    assert_eq!(t.list_pre_auth_keys(Some(alice.id)).await.unwrap(), vec![ka.clone()]);
    assert_eq!(t.list_pre_auth_keys(Some(bob.id)).await.unwrap(), vec![kb.clone()]);

    // duplicate prefix, unknown user
    let dup = NewPreAuthKey {
        user_id: None,
        reusable: false,
        ephemeral: false,
        tags: vec![],
        expiration_ms: None,
        prefix: ka.prefix.clone(),
        hash: vec![1; 32],
    };
    let err = t.create_pre_auth_key(dup.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::KeyPrefix }), "{err:?}");
    let err = t.create_pre_auth_key(NewPreAuthKey { user_id: Some(UserId(999)), prefix: "fresh".into(), ..dup }).await;
    assert!(matches!(err, Err(StoreError::NotFound { entity: Entity::User, id: 999 })), "{err:?}");

    // expiring keeps an earlier expiration
    t.expire_pre_auth_key(ka.id, 1000).await.unwrap();
    t.expire_pre_auth_key(ka.id, 2000).await.unwrap();
    assert_eq!(t.pre_auth_key_by_prefix(&ka.prefix).await.unwrap().unwrap().expiration_ms, Some(1000));

    // a tagged node registered with the tags-only key has no user
    let mut r = reg("m1", "web", None, Some(tagged.id));
    r.tags = vec![Tag::parse("tag:web").unwrap()];
    r.ephemeral = true;
    let node = t.register_node(r).await.unwrap().node;
    assert_eq!((node.user_id, node.tags.clone(), node.ephemeral), (None, vec!["tag:web".to_string()], true));
    // deleting the key keeps the node and clears its reference
    t.delete_pre_auth_key(tagged.id).await.unwrap();
    assert_eq!(t.node_by_id(node.id).await.unwrap().unwrap().auth_key_id, None);
    let err = t.delete_pre_auth_key(tagged.id).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::PreAuthKey, .. }), "{err:?}");
}

async fn node_updates(db: TestDb) {
    let t = db.store.tenant(T1);
    let u = user(&t, "alice").await;
    let n = t.register_node(reg("m1", "laptop", Some(u.id), None)).await.unwrap().node;
    let other = t.register_node(reg("m2", "desk", Some(u.id), None)).await.unwrap().node;
    assert_eq!(n.endpoints, Vec::<String>::new());
    assert_eq!(n.last_seen_ms, None);

    t.update_node_session(
        n.id,
        NodeSessionUpdate {
            disco_key: Some("discokey:fresh".into()),
            hostinfo: None,
            endpoints: Some(vec!["192.0.2.1:41641".into(), "[2001:db8::1]:41641".into()]),
            last_seen_ms: Some(1234),
        },
    )
    .await
    .unwrap();
    let got = t.node_by_id(n.id).await.unwrap().unwrap();
    assert_eq!(got.disco_key, "discokey:fresh");
    assert_eq!(got.hostinfo, n.hostinfo, "None leaves hostinfo alone");
    assert_eq!(got.endpoints, vec!["192.0.2.1:41641", "[2001:db8::1]:41641"]);
    assert_eq!(got.last_seen_ms, Some(1234));
    let err = t
        .update_node_session(n.id, NodeSessionUpdate { hostinfo: Some("[".into()), ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidJson { .. }), "{err:?}");

    t.set_last_seen(n.id, 99_999).await.unwrap();
    assert_eq!(t.node_by_id(n.id).await.unwrap().unwrap().last_seen_ms, Some(99_999));

    // A batch writes both nodes in one transaction and skips a node that no longer exists.
    let batch = [
        (n.id, NodeSessionUpdate { endpoints: Some(vec!["192.0.2.9:1".into()]), ..Default::default() }),
        (other.id, NodeSessionUpdate { disco_key: Some("discokey:other".into()), ..Default::default() }),
        (NodeId(987_654), NodeSessionUpdate { last_seen_ms: Some(5), ..Default::default() }),
    ];
    assert_eq!(t.update_node_sessions(batch.to_vec()).await.unwrap(), 2);
    assert_eq!(t.node_by_id(n.id).await.unwrap().unwrap().endpoints, vec!["192.0.2.9:1"]);
    assert_eq!(t.node_by_id(other.id).await.unwrap().unwrap().disco_key, "discokey:other");
    // A malformed hostinfo anywhere in a batch rejects all of it before anything is written.
    let bad = [
        (n.id, NodeSessionUpdate { endpoints: Some(Vec::new()), ..Default::default() }),
        (other.id, NodeSessionUpdate { hostinfo: Some("{".into()), ..Default::default() }),
    ];
    let err = t.update_node_sessions(bad.to_vec()).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidJson { .. }), "{err:?}");
    assert_eq!(t.node_by_id(n.id).await.unwrap().unwrap().endpoints, vec!["192.0.2.9:1"]);

    let rotated = t.rotate_node_key(n.id, "nodekey:new").await.unwrap();
    assert_eq!(rotated.node_key, "nodekey:new");
    let err = t.rotate_node_key(n.id, &other.node_key).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::NodeKey }), "{err:?}");

    assert_eq!(t.set_node_expiry(n.id, Some(42)).await.unwrap().expiry_ms, Some(42));
    assert_eq!(t.set_node_expiry(n.id, None).await.unwrap().expiry_ms, None);
    let tags = vec![Tag::parse("tag:z").unwrap(), Tag::parse("tag:a").unwrap()];
    assert_eq!(t.set_node_tags(n.id, tags).await.unwrap().tags, vec!["tag:a", "tag:z"]);
    let routes = vec!["10.0.0.0/24".to_string(), "0.0.0.0/0".into(), "10.0.0.0/24".into()];
    assert_eq!(t.set_approved_routes(n.id, routes).await.unwrap().approved_routes, vec!["0.0.0.0/0", "10.0.0.0/24"]);

    assert_eq!(t.node_by_machine_key("mkey:m1").await.unwrap().map(|x| x.id), Some(n.id));
    assert_eq!(t.list_nodes_of_user(u.id).await.unwrap().len(), 2);
    assert_eq!(db.store.system().node_by_node_key("nodekey:new").await.unwrap().map(|x| x.id), Some(n.id));

    let deleted = t.delete_node(n.id).await.unwrap();
    assert_eq!(deleted.id, n.id);
    assert_eq!(t.node_by_id(n.id).await.unwrap(), None);
    let err = t.delete_node(n.id).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::Node, .. }), "{err:?}");
    let err = t.set_last_seen(NodeId(12345), 1).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::Node, id: 12345 }), "{err:?}");
}

async fn api_key_lifecycle(db: TestDb) {
    let t = db.store.tenant(T1);
    let s = GeneratedSecret::new(SecretKind::ApiKey, &mut rand::thread_rng());
    let k = t.create_api_key(&s.prefix, &s.hash, Some(now() + HOUR_MS)).await.unwrap();
    assert_eq!((k.last_seen_ms, k.tenant_id), (None, T1));
    let err = t.create_api_key(&s.prefix, &s.hash, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::KeyPrefix }), "{err:?}");

    let (prefix, hash) = parse_presented(SecretKind::ApiKey, &s.display).unwrap();
    let found = t.api_key_by_prefix(&prefix).await.unwrap().unwrap();
    assert!(verify(&found.hash, &hash));

    t.touch_api_key(k.id, 777).await.unwrap();
    t.expire_api_key(k.id, 500).await.unwrap();
    t.expire_api_key(k.id, 900).await.unwrap();
    let got = t.api_key_by_prefix(&prefix).await.unwrap().unwrap();
    assert_eq!((got.last_seen_ms, got.expiration_ms), (Some(777), Some(500)));
    assert_eq!(t.list_api_keys().await.unwrap(), vec![got]);

    t.delete_api_key(k.id).await.unwrap();
    assert!(t.list_api_keys().await.unwrap().is_empty());
    let err = t.delete_api_key(ApiKeyId(k.id.0)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: Entity::ApiKey, .. }), "{err:?}");
}

async fn policy_versions_and_audit_log(db: TestDb) {
    let t = db.store.tenant(T1);
    assert_eq!(t.latest_policy().await.unwrap(), None);
    let v1 = t.put_policy(r#"{"acls": []}"#, 10).await.unwrap();
    let v2 = t.put_policy("// comment\n{\"acls\": [],}", 20).await.unwrap();
    assert!(v2.id > v1.id);
    assert_eq!(t.latest_policy().await.unwrap(), Some(v2.clone()));
    assert_eq!(v2.created_ms, 20);

    for i in 0..3 {
        t.append_audit("admin", "policy.set", &serde_json::json!({"version": i, "nested": {"a": [1, 2]}}))
            .await
            .unwrap();
    }
    let entries = t.list_audit(2).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].detail["version"], 2, "newest first");
    assert_eq!(entries[1].detail["nested"]["a"][1], 2);
    assert!(entries[0].id > entries[1].id && entries[0].at_ms > 0);
    assert_eq!((entries[0].actor.as_str(), entries[0].action.as_str()), ("admin", "policy.set"));
}

async fn tenants_via_system_handle(db: TestDb) {
    let sys = db.store.system();
    let tenants = sys.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 1);
    assert_eq!((tenants[0].id, tenants[0].name.as_str()), (TenantId::DEFAULT, "default"));
    let acme = sys.create_tenant("acme").await.unwrap();
    assert_eq!(acme.id, TenantId(2), "the identity sequence continues after the seeded default tenant");
    let err = sys.create_tenant("acme").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: Conflict::TenantName(ref n) } if n == "acme"), "{err:?}");
    assert_eq!(sys.tenant_by_name("acme").await.unwrap(), Some(acme.clone()));
    assert_eq!(sys.list_tenants().await.unwrap().len(), 2);
    assert_eq!(db.store.tenant(acme.id).id(), acme.id);
}

// ---- SQLite-only ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend_kind(), BackendKind::Sqlite);
    let t = store.tenant(T1);
    let u = user(&t, "alice").await;
    let n = t.register_node(reg("m1", "a", Some(u.id), None)).await.unwrap();
    assert_eq!(n.node.ipv4, Some("100.64.0.1".parse().unwrap()));
    assert_eq!(t.list_nodes().await.unwrap().len(), 1);
}

#[tokio::test]
async fn unsupported_url_is_refused() {
    let err = Store::open("mysql://localhost/db").await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl { ref scheme } if scheme == "mysql"), "{err:?}");
}
