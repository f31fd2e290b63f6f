//! Running a plan: set up users and policy, join every client, wait until every map is complete, then make
//! changes in rounds and time their delivery to each affected watcher.

use crate::BenchError;
use crate::api::Api;
use crate::client::{self, AbortOnDrop, Connection, Identity, Target};
use crate::http1::BaseUrl;
use crate::metrics::{ProcSample, Summary};
use crate::report::{ChangeStats, JoinStats, Report, ServerStats, SettleStats};
use crate::stream::Compression;
use crate::topology::{ALLOW_ALL, Bridge, Groups};
use crate::view::Expect;
use crate::watch::{Shared, Watch};
use rand::rngs::StdRng;
use rand::seq::{IteratorRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Error messages kept in the report; the counts cover the rest.
const ERROR_SAMPLES: usize = 10;
/// How long the quiet tailnet is watched after settling, for the server's idle CPU rate.
const IDLE_SAMPLE: Duration = Duration::from_secs(3);

/// How the run reaches the server and how patient it is.
#[derive(Clone, Debug)]
pub struct Options {
    /// Control server base URL (`http://127.0.0.1:8080`).
    pub control_url: String,
    /// Pre-auth keys; client `i` uses key `i mod len`. May be empty when `api` is given (a user and key are
    /// created then).
    pub auth_keys: Vec<String>,
    /// Management API base URL and API key.
    pub api: Option<(String, String)>,
    /// Number of simulated clients.
    pub clients: usize,
    /// Clients joining at once.
    pub join_concurrency: usize,
    /// Map-stream encoding to ask for.
    pub compression: Compression,
    /// Spread connections over this many source addresses `127.0.0.1`, `127.0.0.2`, … (loopback IPv4 only;
    /// 1 lets the kernel choose).
    pub source_addrs: u8,
    /// Deadline of one client's connect + register + first map.
    pub op_timeout: Duration,
    /// How long a change may take to reach every affected watcher before the rest count as missing.
    pub delivery_timeout: Duration,
    /// Extra wait after the last delivery of a round, to catch messages sent to unaffected watchers.
    pub linger: Duration,
    /// Upper bound on waiting for every map to be complete after joining.
    pub settle_timeout: Duration,
    /// The server's process ID, to read its CPU time and RSS.
    pub server_pid: Option<u32>,
    /// Seed for choosing subjects of changes.
    pub seed: u64,
}

/// Who may see whom.
#[derive(Clone, Debug)]
pub enum Layout {
    /// Everyone sees everyone: with an API the allow-all policy is written first, otherwise the server's policy
    /// must already let every node see every other.
    Everyone,
    /// Groups of `peers + 1` clients; each group may reach itself. Users, keys and the policy are created through
    /// the API before joining.
    Segmented {
        /// Peers each node sees.
        peers: usize,
        /// Nodes per generated user.
        nodes_per_user: usize,
    },
}

/// One stage after joining.
#[derive(Clone, Debug)]
pub enum Phase {
    /// `count` times, one at a time: a random client reports a new endpoint.
    Endpoints {
        /// Changes to make.
        count: usize,
        /// Phase time limit.
        within: Duration,
    },
    /// Every `period`, `fraction` of the clients go down, come back up, or restart with a new disco key.
    Churn {
        /// Time between rounds.
        period: Duration,
        /// Share of clients acted on per round.
        fraction: f64,
        /// Phase duration.
        within: Duration,
    },
    /// Every `period`, a policy change through the API: a rule letting two groups reach each other is added, and
    /// removed again in the next round (segmented layout only).
    PolicyToggles {
        /// Changes to make at most.
        count: usize,
        /// Time between rounds.
        period: Duration,
        /// Phase time limit.
        within: Duration,
    },
}

/// A scenario: layout plus phases after joining.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Scenario name for the report.
    pub scenario: String,
    /// Who sees whom.
    pub layout: Layout,
    /// What happens after joining.
    pub phases: Vec<Phase>,
}

/// Runs `plan` and reports. Only setup failures (bad options, unreachable server, refused API calls) are errors;
/// everything that goes wrong for single clients is counted in the report.
pub async fn run(plan: &Plan, opts: &Options) -> Result<Report, BenchError> {
    let started_at =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let t_start = Instant::now();
    let mut r = Runner::new(plan, opts).await?;
    r.report.started_at = started_at;
    r.join().await;
    r.settle().await;
    for phase in &plan.phases {
        match *phase {
            Phase::Endpoints { count, within } => r.endpoint_phase(count, within).await,
            Phase::Churn { period, fraction, within } => r.churn_phase(period, fraction, within).await,
            Phase::PolicyToggles { count, period, within } => r.policy_phase(count, period, within).await?,
        }
    }
    r.finish(t_start.elapsed());
    Ok(r.report)
}

/// One simulated client.
struct Slot {
    id: Arc<Identity>,
    auth_key: Arc<str>,
    source: Option<IpAddr>,
    endpoints: Vec<String>,
    disco: String,
    node_id: Option<i64>,
    live: Option<Live>,
}

/// A connected client: its connection (for lite updates) and its stream reader.
struct Live {
    conn: Connection,
    watch: Arc<Watch>,
    _reader: AbortOnDrop,
}

/// What a client presents when it connects.
struct Device {
    id: Arc<Identity>,
    source: Option<IpAddr>,
    disco: String,
    endpoints: Vec<String>,
}

impl Slot {
    fn device(&self) -> Device {
        Device {
            id: self.id.clone(),
            source: self.source,
            disco: self.disco.clone(),
            endpoints: self.endpoints.clone(),
        }
    }
}

/// What bringing a client up measured.
struct Joined {
    live: Live,
    node_id: Option<i64>,
    register: Duration,
    first_map: Duration,
}

/// Connects, registers (with the key when joining, without when restarting) and reads the first map.
async fn bring_up(
    target: Target,
    dev: Device,
    auth_key: Option<Arc<str>>,
    shared: Arc<Shared>,
    timeout: Duration,
) -> Result<Joined, BenchError> {
    let attempt = async {
        let start = Instant::now();
        let mut conn = Connection::open(&target, &dev.id, dev.source).await?;
        conn.register(&dev.id, auth_key.as_deref()).await?;
        let register = start.elapsed();
        let mut stream = conn.open_map(&dev.id, &dev.disco, &dev.endpoints).await?;
        let first = stream.next().await?.ok_or(BenchError::StreamEnded)?;
        let first_map = start.elapsed();
        let watch = Watch::new(&first, shared);
        let node_id = watch.lock().view.self_id;
        let reader = AbortOnDrop(tokio::spawn(watch.clone().run(stream)));
        Ok(Joined { live: Live { conn, watch, _reader: reader }, node_id, register, first_map })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| BenchError::Timeout { during: "joining", after: timeout })?
}

/// A change to make in a round.
enum Act {
    Endpoint { slot: usize, live: Live, id: Arc<Identity>, disco: String, endpoints: Vec<String> },
    Down { slot: usize, live: Live },
    Up { slot: usize, old: Option<Live>, dev: Device },
    Policy { api: Api, text: String },
}

/// What making a change returned.
struct Done {
    change: usize,
    t0: Instant,
    slot: Option<usize>,
    live: Option<Live>,
    rejoin: Option<Duration>,
    error: Option<String>,
}

async fn act(change: usize, a: Act, target: Target, shared: Arc<Shared>, timeout: Duration) -> Done {
    match a {
        Act::Endpoint { slot, mut live, id, disco, endpoints } => {
            let t0 = Instant::now();
            let r = tokio::time::timeout(timeout, live.conn.lite_update(&id, &disco, &endpoints)).await;
            let error = match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("lite update timed out after {timeout:?}")),
            };
            Done { change, t0, slot: Some(slot), live: Some(live), rejoin: None, error }
        }
        Act::Down { slot, live } => {
            let t0 = Instant::now();
            drop(live);
            Done { change, t0, slot: Some(slot), live: None, rejoin: None, error: None }
        }
        Act::Up { slot, old, dev } => {
            let t0 = Instant::now();
            drop(old);
            match bring_up(target, dev, None, shared, timeout).await {
                Ok(j) => {
                    Done { change, t0, slot: Some(slot), live: Some(j.live), rejoin: Some(j.first_map), error: None }
                }
                Err(e) => Done {
                    change,
                    t0,
                    slot: Some(slot),
                    live: None,
                    rejoin: None,
                    error: Some(format!("reconnect: {e}")),
                },
            }
        }
        Act::Policy { api, text } => {
            let t0 = Instant::now();
            let error = api.set_policy(&text).await.err().map(|e| e.to_string());
            Done { change, t0, slot: None, live: None, rejoin: None, error }
        }
    }
}

/// A change's bookkeeping: its kind, the client it is about, and who must see it.
struct Change {
    kind: &'static str,
    subject: Option<usize>,
    watchers: Vec<(usize, Expect)>,
}

/// Accumulates one kind of round.
#[derive(Default)]
struct RoundAcc {
    changes: usize,
    expected: usize,
    missing: usize,
    latencies: Vec<Duration>,
    by_kind: BTreeMap<&'static str, Vec<Duration>>,
    affected_bytes: u64,
    unaffected_watchers: usize,
    unaffected_bytes: u64,
    cpu_s: Option<f64>,
    /// Wall time over which `cpu_s` was measured.
    wall_s: f64,
}

struct Runner {
    opts: Options,
    target: Target,
    api: Option<Api>,
    groups: Option<Groups>,
    bridges: BTreeSet<Bridge>,
    slots: Vec<Slot>,
    shared: Arc<Shared>,
    rng: StdRng,
    next_change: usize,
    next_endpoint: u32,
    rounds: BTreeMap<&'static str, RoundAcc>,
    rejoins: Vec<Duration>,
    rss_before: Option<ProcSample>,
    report: Report,
}

impl Runner {
    async fn new(plan: &Plan, opts: &Options) -> Result<Runner, BenchError> {
        if opts.clients == 0 {
            return Err(BenchError::Options("--clients must be at least 1"));
        }
        let control = BaseUrl::parse("--control-url", &opts.control_url)?;
        let api = match &opts.api {
            Some((url, key)) => Some(Api { base: BaseUrl::parse("--api-url", url)?, key: key.clone() }),
            None => None,
        };
        let server_key = client::server_key(&control).await?;
        let sources: Vec<Option<IpAddr>> = match control.addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && opts.source_addrs > 1 => {
                (1..=opts.source_addrs).map(|k| Some(IpAddr::from([127, 0, 0, k]))).collect()
            }
            _ if opts.source_addrs > 1 => {
                return Err(BenchError::Options("--source-addrs needs a 127.x control address"));
            }
            _ => vec![None],
        };
        let rng = StdRng::seed_from_u64(opts.seed);
        // Names unique per run (not from the seed), so repeated runs against one server never collide.
        let prefix = format!("lg{:06x}", rand::random::<u32>() & 0xff_ffff);
        let (groups, keys) = setup(&plan.layout, opts, api.as_ref(), &prefix).await?;
        let slots = (0..opts.clients)
            .map(|i| Slot {
                id: Arc::new(Identity::random(format!("{prefix}-{i}"))),
                auth_key: keys[i % keys.len()].clone(),
                source: sources[i % sources.len()],
                endpoints: vec![format!("[2001:db8:1::{:x}:{:x}]:41641", i >> 16, i & 0xffff)],
                disco: client::random_disco_key(),
                node_id: None,
                live: None,
            })
            .collect();
        let target = Target { control, server_key, compression: opts.compression };
        let report = Report {
            scenario: plan.scenario.clone(),
            clients: opts.clients,
            control_url: opts.control_url.clone(),
            ..Default::default()
        };
        Ok(Runner {
            opts: opts.clone(),
            target,
            api,
            groups,
            bridges: BTreeSet::new(),
            slots,
            shared: Arc::new(Shared::default()),
            rng,
            next_change: 0,
            next_endpoint: 0,
            rounds: BTreeMap::new(),
            rejoins: Vec::new(),
            rss_before: None,
            report,
        })
    }

    fn sample_error(&mut self, e: String) {
        if self.report.error_samples.len() < ERROR_SAMPLES {
            self.report.error_samples.push(e);
        }
    }

    fn proc(&self) -> Option<ProcSample> {
        self.opts.server_pid.and_then(|pid| ProcSample::read(pid).ok())
    }

    fn sees(&self, a: usize, b: usize) -> bool {
        self.groups.as_ref().is_none_or(|g| g.sees(a, b, &self.bridges))
    }

    async fn join(&mut self) {
        let before = self.proc();
        self.rss_before = before;
        let sem = Arc::new(tokio::sync::Semaphore::new(self.opts.join_concurrency.max(1)));
        let mut set = JoinSet::new();
        let start = Instant::now();
        for (i, s) in self.slots.iter().enumerate() {
            // The semaphore is never closed, so acquiring only waits.
            let Ok(permit) = sem.clone().acquire_owned().await else { break };
            let fut = bring_up(
                self.target.clone(),
                s.device(),
                Some(s.auth_key.clone()),
                self.shared.clone(),
                self.opts.op_timeout,
            );
            set.spawn(async move {
                let r = fut.await;
                drop(permit);
                (i, r)
            });
        }
        let (mut registers, mut firsts) = (Vec::new(), Vec::new());
        let mut last = start;
        while let Some(res) = set.join_next().await {
            match res {
                Ok((i, Ok(j))) => {
                    last = Instant::now();
                    registers.push(j.register);
                    firsts.push(j.first_map);
                    self.slots[i].node_id = j.node_id;
                    self.slots[i].live = Some(j.live);
                }
                Ok((i, Err(e))) => {
                    self.report.errors.join_failures += 1;
                    self.sample_error(format!("client {i} join: {e}"));
                }
                Err(e) => {
                    self.report.errors.join_failures += 1;
                    self.sample_error(format!("join task: {e}"));
                }
            }
        }
        let wall = last.duration_since(start).as_secs_f64();
        let joined = firsts.len();
        self.report.join = JoinStats {
            joined,
            wall_s: wall,
            joins_per_s: if wall > 0.0 { joined as f64 / wall } else { 0.0 },
            register: Summary::of(&mut registers),
            first_map: Summary::of(&mut firsts),
            rejoin_first_map: Summary::default(),
        };
        if let (Some(b), Some(a)) = (before, self.proc()) {
            self.report.server = Some(ServerStats {
                cpu_s_join: a.cpu_s - b.cpu_s,
                cpu_s_per_join: if joined > 0 { (a.cpu_s - b.cpu_s) / joined as f64 } else { 0.0 },
                rss_before: b.rss_bytes,
                ..Default::default()
            });
        }
    }

    /// The node IDs each group must see (everyone: one group), shared by that group's watchers.
    fn visible_lists(&self) -> Vec<Arc<Vec<i64>>> {
        let ids = |range: std::ops::Range<usize>| -> Vec<i64> {
            self.slots[range].iter().filter_map(|s| s.node_id).collect()
        };
        match &self.groups {
            None => vec![Arc::new(ids(0..self.slots.len()))],
            Some(g) => (0..g.count())
                .map(|a| {
                    let mut v = Vec::new();
                    for b in (0..g.count()).filter(|&b| a == b || self.bridges.contains(&(a.min(b), a.max(b)))) {
                        v.extend(ids(g.members(b)));
                    }
                    Arc::new(v)
                })
                .collect(),
        }
    }

    fn group_of(&self, i: usize) -> usize {
        self.groups.as_ref().map_or(0, |g| g.group_of(i))
    }

    /// Waits until every connected client sees every peer it should, online, and the streams fall quiet.
    async fn settle(&mut self) {
        let start = Instant::now();
        let lists = self.visible_lists();
        let change = self.next_change;
        self.next_change += 1;
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(l) = &s.live {
                l.watch.expect(change, Expect::Present { peers: lists[self.group_of(i)].clone(), online: true });
            }
        }
        let deadline = start + self.opts.settle_timeout;
        self.wait_outstanding(deadline).await;
        for s in &self.slots {
            if let Some(l) = &s.live {
                self.report.errors.settle_missing +=
                    l.watch.take_pending().iter().filter(|p| p.met_at.is_none()).count();
            }
        }
        // Late joiners' online patches and the like may still be on their way; changes must start from silence.
        let mut seen = self.shared.activity.load(Ordering::Relaxed);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.shared.activity.load(Ordering::Relaxed);
            if now == seen {
                break;
            }
            seen = now;
        }
        self.report.settle = SettleStats { wall_s: start.elapsed().as_secs_f64() };
        let now = self.proc();
        if let (Some(server), Some(now)) = (self.report.server.as_mut(), now) {
            let joined = self.report.join.joined.max(1) as f64;
            server.rss_after_join = now.rss_bytes;
            server.rss_per_node = (now.rss_bytes as f64 - server.rss_before as f64) / joined;
        }
        // What the connected, quiet tailnet costs (keep-alives, timers), so each round's share can be told apart.
        let (t0, before) = (Instant::now(), self.proc());
        tokio::time::sleep(IDLE_SAMPLE).await;
        let after = self.proc();
        if let (Some(server), Some(b), Some(a)) = (self.report.server.as_mut(), before, after) {
            server.idle_cpu_per_s = (a.cpu_s - b.cpu_s) / t0.elapsed().as_secs_f64();
        }
    }

    async fn wait_outstanding(&self, deadline: Instant) {
        while self.shared.outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn live_indices(&self) -> Vec<usize> {
        self.slots.iter().enumerate().filter(|(_, s)| s.live.is_some() && s.node_id.is_some()).map(|(i, _)| i).collect()
    }

    /// Runs one round: registers the watchers' expectations, makes the changes at once, waits for delivery, and
    /// accounts latencies and bytes under `label`.
    async fn round(&mut self, label: &'static str, planned: Vec<(Change, Act)>) {
        let base = self.next_change;
        self.next_change += planned.len();
        let subjects: BTreeSet<usize> = planned.iter().filter_map(|(c, _)| c.subject).collect();
        let affected: BTreeSet<usize> = planned.iter().flat_map(|(c, _)| c.watchers.iter().map(|w| w.0)).collect();
        let bytes_before = self.bytes_snapshot();
        let (round_start, cpu_before) = (Instant::now(), self.proc());
        let mut kinds = Vec::with_capacity(planned.len());
        let mut set = JoinSet::new();
        for (k, (change, a)) in planned.into_iter().enumerate() {
            for (w, e) in change.watchers {
                if let Some(l) = &self.slots[w].live {
                    l.watch.expect(base + k, e);
                }
            }
            kinds.push(change.kind);
            set.spawn(act(base + k, a, self.target.clone(), self.shared.clone(), self.opts.op_timeout));
        }
        let mut t0 = vec![Instant::now(); kinds.len()];
        let mut failed = 0;
        while let Some(res) = set.join_next().await {
            let Ok(done) = res else {
                failed += 1;
                continue;
            };
            t0[done.change - base] = done.t0;
            if let Some(e) = done.error {
                failed += 1;
                self.sample_error(format!("{label} change: {e}"));
            }
            if let Some(d) = done.rejoin {
                self.rejoins.push(d);
            }
            if let Some(slot) = done.slot {
                self.slots[slot].live = done.live;
            }
        }
        self.report.errors.failed_changes += failed;
        self.wait_outstanding(Instant::now() + self.opts.delivery_timeout).await;
        tokio::time::sleep(self.opts.linger).await;
        let cpu_after = self.proc();
        let bytes_after = self.bytes_snapshot();

        let acc = self.rounds.entry(label).or_default();
        acc.changes += kinds.len();
        if let (Some(a), Some(b)) = (cpu_after, cpu_before) {
            *acc.cpu_s.get_or_insert(0.0) += a.cpu_s - b.cpu_s;
            acc.wall_s += round_start.elapsed().as_secs_f64();
        }
        for &w in &affected {
            let Some(l) = &self.slots[w].live else {
                continue;
            };
            for p in l.watch.take_pending() {
                acc.expected += 1;
                let k = p.change - base;
                match p.met_at {
                    Some(at) => {
                        let d = at.saturating_duration_since(t0[k]);
                        acc.latencies.push(d);
                        acc.by_kind.entry(kinds[k]).or_default().push(d);
                    }
                    None => acc.missing += 1,
                }
            }
        }
        for (i, (b, a)) in bytes_before.iter().zip(&bytes_after).enumerate() {
            let (Some(b), Some(a)) = (b, a) else { continue };
            if subjects.contains(&i) {
                continue;
            }
            let delta = a.saturating_sub(*b);
            if affected.contains(&i) {
                acc.affected_bytes += delta;
            } else {
                acc.unaffected_watchers += 1;
                acc.unaffected_bytes += delta;
            }
        }
    }

    /// Bytes received so far by each connected client (`None`: not connected).
    fn bytes_snapshot(&self) -> Vec<Option<u64>> {
        self.slots.iter().map(|s| s.live.as_ref().map(|l| l.watch.lock().bytes)).collect()
    }

    fn watchers_of(
        &self,
        subject: usize,
        expect: impl Fn() -> Expect,
        exclude: &BTreeSet<usize>,
    ) -> Vec<(usize, Expect)> {
        self.live_indices()
            .into_iter()
            .filter(|&w| w != subject && !exclude.contains(&w) && self.sees(subject, w))
            .map(|w| (w, expect()))
            .collect()
    }

    async fn endpoint_phase(&mut self, count: usize, within: Duration) {
        let end = Instant::now() + within;
        for _ in 0..count {
            if Instant::now() >= end {
                break;
            }
            let Some(&x) = self.live_indices().choose(&mut self.rng) else { break };
            let n = self.next_endpoint;
            self.next_endpoint += 1;
            let endpoint = format!("[2001:db8:2::{:x}:{:x}]:41641", n >> 16, n & 0xffff);
            let Some(peer) = self.slots[x].node_id else { break };
            let watchers =
                self.watchers_of(x, || Expect::Endpoint { peer, endpoint: endpoint.clone() }, &BTreeSet::new());
            let slot = &mut self.slots[x];
            slot.endpoints = vec![endpoint.clone()];
            let Some(live) = slot.live.take() else { break };
            let a = Act::Endpoint {
                slot: x,
                live,
                id: slot.id.clone(),
                disco: slot.disco.clone(),
                endpoints: slot.endpoints.clone(),
            };
            self.round("endpoint", vec![(Change { kind: "endpoint", subject: Some(x), watchers }, a)]).await;
        }
    }

    async fn churn_phase(&mut self, period: Duration, fraction: f64, within: Duration) {
        let end = Instant::now() + within;
        let per_round = ((self.slots.len() as f64 * fraction).ceil() as usize).max(1);
        let joined: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].node_id.is_some()).collect();
        while Instant::now() < end {
            let round_start = Instant::now();
            let chosen: BTreeSet<usize> =
                joined.iter().copied().choose_multiple(&mut self.rng, per_round).into_iter().collect();
            let mut planned = Vec::new();
            for &x in &chosen {
                let Some(peer) = self.slots[x].node_id else { continue };
                let was_up = self.slots[x].live.is_some();
                let restart = was_up && self.rng.gen_bool(0.5);
                let (kind, expect): (&'static str, Box<dyn Fn() -> Expect>) = if !was_up {
                    ("up", Box::new(move || Expect::Online { peer, online: true }))
                } else if restart {
                    self.slots[x].disco = client::random_disco_key();
                    let key = self.slots[x].disco.clone();
                    ("restart", Box::new(move || Expect::Disco { peer, key: key.clone() }))
                } else {
                    ("down", Box::new(move || Expect::Online { peer, online: false }))
                };
                let watchers = self.watchers_of(x, expect, &chosen);
                let s = &mut self.slots[x];
                let a = if kind == "down" {
                    let Some(live) = s.live.take() else { continue };
                    Act::Down { slot: x, live }
                } else {
                    Act::Up { slot: x, old: s.live.take(), dev: s.device() }
                };
                planned.push((Change { kind, subject: Some(x), watchers }, a));
            }
            self.round("churn", planned).await;
            let next = round_start + period;
            if next >= end {
                break;
            }
            tokio::time::sleep_until(next.into()).await;
        }
    }

    async fn policy_phase(&mut self, count: usize, period: Duration, within: Duration) -> Result<(), BenchError> {
        let (Some(api), Some(groups)) = (self.api.clone(), self.groups.clone()) else {
            return Err(BenchError::Options("policy changes need the segmented layout and --api-url/--api-key"));
        };
        if groups.count() < 2 {
            return Err(BenchError::Options("policy changes need at least two groups (more clients than --peers + 1)"));
        }
        let end = Instant::now() + within;
        let mut active: Option<Bridge> = None;
        for _ in 0..count {
            let round_start = Instant::now();
            if round_start >= end {
                break;
            }
            let (bridge, adding) = match active.take() {
                Some(b) => (b, false),
                None => {
                    let a = self.rng.gen_range(0..groups.count());
                    let b = (a + self.rng.gen_range(1..groups.count())) % groups.count();
                    ((a.min(b), a.max(b)), true)
                }
            };
            if adding {
                self.bridges.insert(bridge);
                active = Some(bridge);
            } else {
                self.bridges.remove(&bridge);
            }
            let ids = |g: usize| {
                Arc::new(self.slots[groups.members(g)].iter().filter_map(|s| s.node_id).collect::<Vec<i64>>())
            };
            let (ids_a, ids_b) = (ids(bridge.0), ids(bridge.1));
            let expect = |other: &Arc<Vec<i64>>| {
                if adding {
                    Expect::Present { peers: other.clone(), online: false }
                } else {
                    Expect::Absent { peers: other.clone() }
                }
            };
            let live = self.live_indices();
            let mut watchers: Vec<(usize, Expect)> = Vec::new();
            for w in live {
                match self.group_of(w) {
                    g if g == bridge.0 => watchers.push((w, expect(&ids_b))),
                    g if g == bridge.1 => watchers.push((w, expect(&ids_a))),
                    _ => {}
                }
            }
            let kind = if adding { "policy-add" } else { "policy-remove" };
            let a = Act::Policy { api: api.clone(), text: groups.policy(&self.bridges) };
            self.round("policy", vec![(Change { kind, subject: None, watchers }, a)]).await;
            let next = round_start + period;
            if next >= end {
                break;
            }
            tokio::time::sleep_until(next.into()).await;
        }
        Ok(())
    }

    fn finish(&mut self, wall: Duration) {
        self.report.wall_s = wall.as_secs_f64();
        self.report.join.rejoin_first_map = Summary::of(&mut self.rejoins);
        for s in &self.slots {
            if let Some(l) = &s.live
                && let Some(end) = l.watch.lock().ended.clone()
            {
                self.report.errors.streams_lost += 1;
                if self.report.error_samples.len() < ERROR_SAMPLES {
                    self.report.error_samples.push(format!("{}: {end}", s.id.hostname));
                }
            }
        }
        for (label, acc) in std::mem::take(&mut self.rounds) {
            let mut acc = acc;
            self.report.errors.missing_deliveries += acc.missing;
            self.report.errors.unaffected_bytes += acc.unaffected_bytes;
            let stats = ChangeStats {
                changes: acc.changes,
                expected_deliveries: acc.expected,
                missing_deliveries: acc.missing,
                latency: Summary::of(&mut acc.latencies),
                latency_by_kind: acc.by_kind.iter_mut().map(|(k, v)| (k.to_string(), Summary::of(v))).collect(),
                bytes_per_change_per_watcher: if acc.expected > 0 {
                    acc.affected_bytes as f64 / acc.expected as f64
                } else {
                    0.0
                },
                unaffected_watchers: acc.unaffected_watchers,
                unaffected_bytes: acc.unaffected_bytes,
                server_cpu_s_per_change: acc.cpu_s.map(|c| c / acc.changes.max(1) as f64),
                server_cpu_s_per_change_net: acc
                    .cpu_s
                    .zip(self.report.server.as_ref())
                    .map(|(c, server)| (c - server.idle_cpu_per_s * acc.wall_s).max(0.0) / acc.changes.max(1) as f64),
            };
            self.report.changes.insert(label.to_string(), stats);
        }
        self.report.ok = self.report.errors.is_clean();
    }
}

/// Creates what the layout needs through the API and returns the grouping and the pre-auth keys; client `i` uses
/// key `i mod len` (segmented runs return one key per client, its owner's).
async fn setup(
    layout: &Layout,
    opts: &Options,
    api: Option<&Api>,
    prefix: &str,
) -> Result<(Option<Groups>, Vec<Arc<str>>), BenchError> {
    // Keys outlive the run comfortably; they are reusable only by whoever holds the secret.
    const KEY_VALIDITY: Duration = Duration::from_secs(24 * 3600);
    match *layout {
        Layout::Everyone => {
            if let Some(api) = api {
                api.set_policy(ALLOW_ALL).await?;
            }
            let keys: Vec<Arc<str>> = match (opts.auth_keys.is_empty(), api) {
                (false, _) => opts.auth_keys.iter().map(|k| Arc::from(k.as_str())).collect(),
                (true, Some(api)) => {
                    let user = api.create_user(&format!("{prefix}-all")).await?;
                    vec![Arc::from(api.create_key(&user, KEY_VALIDITY).await?)]
                }
                (true, None) => {
                    return Err(BenchError::Options("give --auth-key, or --api-url and --api-key to create one"));
                }
            };
            Ok((None, keys))
        }
        Layout::Segmented { peers, nodes_per_user } => {
            let Some(api) = api else {
                return Err(BenchError::Options(
                    "the segmented layout creates users, keys and a policy: give --api-url and --api-key",
                ));
            };
            let groups = Groups {
                clients: opts.clients,
                group_size: peers + 1,
                nodes_per_user: nodes_per_user.max(1),
                prefix: prefix.to_string(),
            };
            let mut ids = Vec::new();
            for g in 0..groups.count() {
                for u in 0..groups.users_in(g) {
                    ids.push(((g, u), api.create_user(&groups.user_name(g, u)).await?));
                }
            }
            // The policy names the users, so it can only be written once they exist, and before anyone joins.
            api.set_policy(&groups.policy(&BTreeSet::new())).await?;
            let mut by_user = BTreeMap::new();
            for (gu, id) in ids {
                by_user.insert(gu, Arc::<str>::from(api.create_key(&id, KEY_VALIDITY).await?));
            }
            // One key per client, the one of its owner, so `auth_key = keys[i]`.
            let keys = (0..opts.clients).map(|i| by_user[&groups.user_of(i)].clone()).collect();
            Ok((Some(groups), keys))
        }
    }
}
