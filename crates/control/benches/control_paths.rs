//! Hot paths of joining and first maps, timed with a plain loop (no bench framework needed):
//!
//! - `noise_accept`: server side of one ts2021 handshake;
//! - `preauth_key_check`: parsing and verifying a presented pre-auth key (a keyed hash, not bcrypt);
//! - `register`: one pre-auth-key registration through the real store (SQLite in memory);
//! - `first_map/N`: building, serialising and compressing the first map of a node in an N-node tailnet.
//!
//! Run: `cargo bench -p tailwarden-control --bench control_paths`. Results go to docs/benchmarks.md.

use std::time::{Duration, Instant};
use tailwarden_control::admin::NewKeyRequest;
use tailwarden_control::keys::ServerKeys;
use tailwarden_control::{Control, Settings};
use tailwarden_store::Store;
use tailwarden_store::secret::{self, SecretKind};
use tailwarden_types::TenantId;
use tailwarden_wire::{AuthInfo, DerpMap, Hostinfo, MachineKey, MapRequest, NodeKey, RegisterRequest};

fn report(name: &str, iters: u32, elapsed: Duration) {
    let per = elapsed / iters;
    println!(
        "{name:<28} {iters:>7} iters  {:>12.3} µs/op  {:>10.0} ops/s",
        per.as_secs_f64() * 1e6,
        f64::from(iters) / elapsed.as_secs_f64()
    );
}

fn bench_noise() {
    let server = ts_keys::MachineKeyPair::random();
    let client = ts_keys::MachineKeyPair::random();
    let capver = ts_capabilityversion::CapabilityVersion::CURRENT;
    let prologue = format!("Tailscale Control Protocol v{}", u16::from(capver));
    let inits: Vec<_> = (0..2000)
        .map(|_| ts_control_noise::Handshake::initialize(&prologue, &client, &server.public, capver).1)
        .map(|b64| tailwarden_noise::Initiation::from_header(&b64).expect("valid initiation"))
        .collect();
    let pair = server.to_x25519_dalek();
    let start = Instant::now();
    for init in &inits {
        std::hint::black_box(tailwarden_noise::accept(init, &pair).expect("handshake"));
    }
    report("noise_accept", inits.len() as u32, start.elapsed());
}

fn bench_key_check() {
    let generated = secret::GeneratedSecret::new(SecretKind::PreAuthKey, &mut rand::rngs::OsRng);
    let n = 100_000;
    let start = Instant::now();
    for _ in 0..n {
        let (_, hash) = secret::parse_presented(SecretKind::PreAuthKey, &generated.display).expect("valid key");
        assert!(secret::verify(&generated.hash, std::hint::black_box(&hash)));
    }
    report("preauth_key_check", n, start.elapsed());
}

async fn tailnet(n: usize) -> (std::sync::Arc<Control>, Vec<(MachineKey, NodeKey)>, Duration) {
    let store = Store::open("sqlite::memory:").await.expect("store");
    let control =
        Control::new(store, Settings::for_tests(DerpMap::default()), ServerKeys::random()).await.expect("control");
    let user = control.create_user(TenantId::DEFAULT, "bench", "", "").await.expect("user");
    let (_, key) = control
        .create_pre_auth_key(
            TenantId::DEFAULT,
            NewKeyRequest { user: Some(user.id), reusable: true, ..Default::default() },
        )
        .await
        .expect("key");
    let mut nodes = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let machine = MachineKey(rand::random());
        let node = NodeKey(rand::random());
        let req = RegisterRequest {
            version: 130,
            node_key: node,
            auth: Some(AuthInfo { auth_key: key.clone() }),
            hostinfo: Some(Hostinfo { hostname: format!("node-{i}"), os: "linux".into(), ..Default::default() }),
            ..Default::default()
        };
        let resp = control.register(machine, req).await;
        assert!(resp.error.is_empty(), "{}", resp.error);
        nodes.push((machine, node));
    }
    (control, nodes, start.elapsed())
}

async fn bench_first_map(n: usize) {
    let (control, nodes, reg_time) = tailnet(n).await;
    if n == 1000 {
        report("register (1k tailnet)", n as u32, reg_time);
    }
    for (label, compress) in [("raw", ""), ("zstd", "zstd")] {
        let iters = (200_000 / n).clamp(5, 200) as u32;
        let mut bytes = 0;
        let start = Instant::now();
        for i in 0..iters {
            let (machine, node) = nodes[i as usize % nodes.len()];
            let req = MapRequest { version: 130, node_key: node, compress: compress.into(), ..Default::default() };
            let resp = control.map(machine, req).await;
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
            bytes = body.len();
        }
        report(&format!("first_map/{n}/{label}"), iters, start.elapsed());
        println!("{:<28} {bytes} bytes per map", "");
    }
}

fn main() {
    bench_noise();
    bench_key_check();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        for n in [100, 1000, 5000] {
            bench_first_map(n).await;
        }
    });
}
