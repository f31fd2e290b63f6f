//! Issue 4's segmented tailnet at 10k–100k nodes in one process: the in-process harness the load generator cannot
//! be (one process holds ~20k sockets at most).
//!
//! Every node registers through `Control::register` (pre-auth key, real store: SQLite in a temporary file) and
//! opens a streaming map through `Control::map`, exactly as the HTTP/2 handlers call them; only the Noise channel,
//! HTTP/2 and TCP are left out (the load generator measures those). Groups of `--peers + 1` nodes reach only
//! themselves, so each node sees ~`--peers` peers. Then `--changes` endpoint changes, one at a time, are sent as lite
//! map requests; each round ends when every affected watcher's stream has yielded a message.
//!
//! Run: `cargo bench -p tailwarden-control --bench engine_scale -- [--peers 100] [--changes 200] 10000 50000 100000`
//!
//! With `--everyone`, every node sees all the others through one `*` rule (issue 4's everyone-sees-everyone
//! scenario, as the load generator runs it), and every change has `N - 1` watchers. `--everyone-by-group` gets the
//! same visibility from one group holding every user, where each join also changes every node's packet filter.
//!
//! Reported per size:
//! - registration and first map: joins/s (register + open stream + first message, `--join-concurrency` at a time)
//!   and first-message latency p50/p99 from the register call;
//! - RSS per node: process `VmRSS` growth over the join phase divided by nodes (the harness's own per-session
//!   reader is included: one task and a few counters);
//! - change → delivery p50/p99 over every affected watcher, with the default 100 ms coalescing window;
//! - CPU per change: process CPU (getrusage) over the rounds, minus the idle rate (keep-alives and timers) times
//!   their duration; the raw figure is shown too. The idle rate is sampled for 100 ms before every round, because it
//!   is not constant: keep-alives start one interval (50 s) after each session opened, so at 100k nodes, which take
//!   ~50 s to join, they begin in the middle of the rounds;
//! - bytes per affected watcher, and bytes that reached unaffected sessions (must be 0).
//!
//! Every delivery is checked: the watcher's message must carry the changed node's new endpoint.

use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tailwarden_control::admin::NewKeyRequest;
use tailwarden_control::keys::ServerKeys;
use tailwarden_control::{Control, Settings};
use tailwarden_store::Store;
use tailwarden_types::TenantId;
use tailwarden_wire::framing::{Compression, encode_message};
use tailwarden_wire::{
    AuthInfo, DerpMap, DiscoKey, Hostinfo, MachineKey, MapRequest, MapResponse, NodeKey, RegisterRequest,
};

const T: TenantId = TenantId::DEFAULT;

/// The allocator the `tailwarden` binary uses, so CPU and memory here are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    sizes: Vec<usize>,
    peers: usize,
    changes: usize,
    join_concurrency: usize,
    everyone: bool,
    everyone_by_group: bool,
}

fn args() -> Args {
    let mut a = Args {
        sizes: Vec::new(),
        peers: 100,
        changes: 200,
        join_concurrency: 64,
        everyone: false,
        everyone_by_group: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value =
            |name: &str| it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} needs a number"));
        match arg.as_str() {
            "--peers" => a.peers = value("--peers"),
            "--changes" => a.changes = value("--changes"),
            "--join-concurrency" => a.join_concurrency = value("--join-concurrency"),
            "--everyone" => a.everyone = true,
            "--everyone-by-group" => (a.everyone, a.everyone_by_group) = (true, true),
            "--bench" => {}
            n => a.sizes.push(n.parse().unwrap_or_else(|_| panic!("unknown argument {n:?}"))),
        }
    }
    if a.sizes.is_empty() {
        a.sizes = vec![10_000];
    }
    a
}

/// What one session's reader saw, for the round in progress.
#[derive(Default)]
struct Seen {
    /// Whether messages are kept for checking: off while nodes join, so the harness does not hold every join's
    /// delta in memory and count it as the server's.
    recording: std::sync::atomic::AtomicBool,
    /// Non-keep-alive bytes received since the start.
    bytes: AtomicU64,
    /// Messages received during the current round, with their arrival time.
    round: Mutex<Vec<(Instant, bytes::Bytes)>>,
}

/// Wakes the round when sessions receive their first message of the round.
#[derive(Default)]
struct Arrivals {
    count: AtomicU64,
    notify: tokio::sync::Notify,
}

struct Node {
    machine: MachineKey,
    key: NodeKey,
    group: usize,
    seen: Arc<Seen>,
}

fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) }, 0, "getrusage failed");
    // SAFETY: initialised by the successful call above.
    let u = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(n: usize, args: &Args) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db.sqlite").display());
    let store = Store::open(&url).await.expect("store");
    let control =
        Control::new(store, Settings::for_tests(DerpMap::default()), ServerKeys::random()).await.expect("control");
    let _background = control.spawn_background();

    // A group per segment of `peers + 1` nodes, reaching only itself; inside a group, users of 10 nodes each.
    let group_size = if args.everyone { n } else { args.peers + 1 };
    let users_per_group = group_size.div_ceil(10);
    let user_of = |i: usize| (i / group_size) * users_per_group + (i % group_size) / 10;
    let users = user_of(n - 1) + 1;
    let mut keys = Vec::with_capacity(users);
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); n.div_ceil(group_size)];
    for u in 0..users {
        let name = format!("u{u}");
        let user = control.create_user(T, &name, "", "").await.expect("user");
        let (_, key) = control
            .create_pre_auth_key(T, NewKeyRequest { user: Some(user.id), reusable: true, ..Default::default() })
            .await
            .expect("key");
        keys.push(key);
        groups[u / users_per_group].push(format!("\"{name}@\""));
    }
    let group_defs: Vec<String> =
        groups.iter().enumerate().map(|(g, m)| format!("\"group:g{g}\": [{}]", m.join(","))).collect();
    let rules: Vec<String> = (0..groups.len())
        .map(|g| format!("{{\"action\":\"accept\",\"src\":[\"group:g{g}\"],\"dst\":[\"group:g{g}:*\"]}}"))
        .collect();
    // `--everyone` without `--everyone-by-group` is the load generator's scenario: one `*` rule, whose filter does
    // not change when nodes join. By group, every join changes every node's packet filter (its sources list every
    // member), so each session needs a message of its own.
    let policy = if args.everyone && !args.everyone_by_group {
        r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#.to_string()
    } else {
        format!("{{\"groups\":{{{}}},\"acls\":[{}]}}", group_defs.join(","), rules.join(","))
    };
    control.set_policy(T, &policy).await.expect("policy");

    let keep_alive =
        bytes::Bytes::from(encode_message(&MapResponse::keep_alive(), Compression::Zstd).expect("keep-alive"));
    let rss_before = rss_kib();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.join_concurrency));
    let arrivals = Arc::new(Arrivals::default());
    let first_bytes = Arc::new(AtomicU64::new(0));
    let mut joins = tokio::task::JoinSet::new();
    let mut nodes: Vec<Option<Node>> = (0..n).map(|_| None).collect();
    let mut first_maps = Vec::with_capacity(n);
    let mut joined = |done: Result<(usize, MachineKey, NodeKey, Arc<Seen>, Duration), tokio::task::JoinError>| {
        let (i, machine, key, seen, first_map) = done.expect("join task");
        first_maps.push(first_map.as_secs_f64() * 1e3);
        nodes[i] = Some(Node { machine, key, group: i / group_size, seen });
    };
    for i in 0..n {
        // Finished joins are collected as they come, so their tasks' memory is not counted as the server's.
        while let Some(done) = joins.try_join_next() {
            joined(done);
        }
        let permit = semaphore.clone().acquire_owned().await.expect("semaphore");
        let (control, key, keep_alive, arrivals, first_bytes) =
            (control.clone(), keys[user_of(i)].clone(), keep_alive.clone(), arrivals.clone(), first_bytes.clone());
        joins.spawn(async move {
            let (machine, node_key) = (MachineKey(rand::random()), NodeKey(rand::random()));
            let t0 = Instant::now();
            let reg = RegisterRequest {
                version: 130,
                node_key,
                auth: Some(AuthInfo { auth_key: key }),
                hostinfo: Some(Hostinfo { hostname: format!("n{i}"), os: "linux".into(), ..Default::default() }),
                ..Default::default()
            };
            let resp = control.register(machine, reg).await;
            assert!(resp.error.is_empty(), "register: {}", resp.error);
            let req = MapRequest {
                version: 130,
                compress: "zstd".into(),
                keep_alive: true,
                node_key,
                disco_key: DiscoKey(rand::random()),
                stream: true,
                endpoints: Some(vec![format!("[2001:db8::{:x}]:41641", i + 1)]),
                ..Default::default()
            };
            let resp = control.map(machine, req).await;
            assert!(resp.status().is_success(), "map: {}", resp.status());
            let mut body = resp.into_body();
            let first = body.frame().await.expect("first message").expect("body").into_data().expect("data");
            let first_map = t0.elapsed();
            assert!(first.len() > 4);
            first_bytes.fetch_add(first.len() as u64, Ordering::Relaxed);
            drop(permit);
            let seen = Arc::new(Seen::default());
            let reader = seen.clone();
            tokio::spawn(async move {
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else { continue };
                    if data == keep_alive {
                        continue;
                    }
                    reader.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if !reader.recording.load(Ordering::Relaxed) {
                        continue;
                    }
                    let mut round = reader.round.lock().expect("lock");
                    round.push((Instant::now(), data));
                    if round.len() == 1 {
                        arrivals.count.fetch_add(1, Ordering::Relaxed);
                        arrivals.notify.notify_one();
                    }
                }
            });
            (i, machine, node_key, seen, first_map)
        });
    }
    while let Some(done) = joins.join_next().await {
        joined(done);
    }
    let join_time = started.elapsed();
    let cpu_join = cpu_seconds() - cpu_before;
    let nodes: Vec<Node> = nodes.into_iter().map(|n| n.expect("every node joined")).collect();
    // Let the joins' online patches drain before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_per_node = (rss_kib().saturating_sub(rss_before)) as f64 / n as f64;
    first_maps.sort_by(f64::total_cmp);

    for node in &nodes {
        node.seen.recording.store(true, Ordering::Relaxed);
    }

    // Seeded, so every run changes the same nodes.
    let mut rng = StdRng::seed_from_u64(n as u64);
    let (mut latencies, mut cpu_raw, mut rounds_time, mut affected_bytes, mut deliveries, mut unaffected) =
        (Vec::new(), 0.0, 0.0, 0u64, 0u64, 0u64);
    let (mut idle_cpu, mut idle_time) = (0.0, 0.0);
    for round in 0..args.changes {
        let (c0, t0) = (cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_millis(100)).await;
        idle_cpu += cpu_seconds() - c0;
        idle_time += t0.elapsed().as_secs_f64();

        let changed = rng.gen_range(0..n);
        let watchers: Vec<usize> =
            (0..n).skip(nodes[changed].group * group_size).take(group_size).filter(|&w| w != changed).collect();
        for w in watchers.iter().chain([&changed]) {
            nodes[*w].seen.round.lock().expect("lock").clear();
        }
        let total_before: u64 = nodes.iter().map(|x| x.seen.bytes.load(Ordering::Relaxed)).sum();
        arrivals.count.store(0, Ordering::Relaxed);
        let endpoint = format!("[2001:db8:1::{:x}]:{}", round + 1, 1024 + round);
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let req = MapRequest {
            version: 130,
            node_key: nodes[changed].key,
            endpoints: Some(vec![endpoint.clone()]),
            omit_peers: true,
            ..Default::default()
        };
        let resp = control.map(nodes[changed].machine, req).await;
        assert!(resp.status().is_success(), "lite update: {}", resp.status());
        let deadline = tokio::time::Instant::from_std(t0 + Duration::from_secs(10));
        loop {
            let notified = arrivals.notify.notified();
            if arrivals.count.load(Ordering::Relaxed) >= watchers.len() as u64 {
                let waiting =
                    watchers.iter().filter(|&&w| nodes[w].seen.round.lock().expect("lock").is_empty()).count();
                if waiting == 0 {
                    break;
                }
            }
            let woke = tokio::time::timeout_at(deadline, notified).await;
            assert!(woke.is_ok(), "round {round}: some watchers never got the change");
        }
        rounds_time += t0.elapsed().as_secs_f64();
        cpu_raw += cpu_seconds() - c0;
        // A short linger catches anything sent to sessions that should not have heard of the change.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut watcher_bytes = 0u64;
        for &w in &watchers {
            let got = std::mem::take(&mut *nodes[w].seen.round.lock().expect("lock"));
            let (at, frame) = &got[0];
            latencies.push(at.duration_since(t0).as_secs_f64() * 1e3);
            for (_, f) in &got {
                watcher_bytes += f.len() as u64;
            }
            let json = zstd_decode(&frame[4..]);
            let msg: serde_json::Value = serde_json::from_slice(&json).expect("message is JSON");
            let carries = msg["PeersChangedPatch"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["Endpoints"][0] == serde_json::Value::String(endpoint.clone())));
            assert!(carries, "round {round}: watcher {w} got a message without the new endpoint: {msg}");
            deliveries += 1;
        }
        affected_bytes += watcher_bytes;
        let total_after: u64 = nodes.iter().map(|x| x.seen.bytes.load(Ordering::Relaxed)).sum();
        let own = std::mem::take(&mut *nodes[changed].seen.round.lock().expect("lock"));
        let own_bytes: u64 = own.iter().map(|(_, f)| f.len() as u64).sum();
        unaffected += total_after - total_before - watcher_bytes - own_bytes;
    }
    latencies.sort_by(f64::total_cmp);
    let changes = args.changes as f64;
    let idle_rate = idle_cpu / idle_time;
    let cpu_net = (cpu_raw - idle_rate * rounds_time).max(0.0);
    println!(
        "{n:>7} nodes | join {:>7.0}/s, first map p50/p99 {:>6.1}/{:>6.1} ms ({:.1} KiB avg), CPU/join {:>5.2} ms | RSS/node {:>5.1} KiB | \
         delivery p50/p99 {:>6.1}/{:>6.1} ms | CPU/change {:>5.2} ms net ({:>5.2} raw, idle {:>4.1}%) | {:>4.0} B/watcher | unaffected {unaffected} B",
        n as f64 / join_time.as_secs_f64(),
        percentile(&first_maps, 0.5),
        percentile(&first_maps, 0.99),
        first_bytes.load(Ordering::Relaxed) as f64 / n as f64 / 1024.0,
        cpu_join / n as f64 * 1e3,
        rss_per_node,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        cpu_net / changes * 1e3,
        cpu_raw / changes * 1e3,
        idle_rate * 100.0,
        affected_bytes as f64 / deliveries.max(1) as f64,
    );
    assert_eq!(unaffected, 0, "sessions that cannot see the changed node were sent bytes");
}

fn zstd_decode(payload: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(payload).expect("zstd frame")
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if args.everyone {
        println!(
            "everyone sees everyone, {} changes per size, join concurrency {}",
            args.changes, args.join_concurrency
        );
    } else {
        println!(
            "segmented tailnet, {} peers per node, {} changes per size, join concurrency {}",
            args.peers, args.changes, args.join_concurrency
        );
    }
    for &n in &args.sizes {
        rt.block_on(run(n, &args));
    }
}
