//! `tailwarden-bench <scenario>`: see the crate README for scenarios, options and metric definitions.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::time::Duration;
use tailwarden_bench::{Compression, Layout, Options, Phase, Plan};

#[derive(Parser)]
#[command(name = "tailwarden-bench", version, about = "Simulated Tailscale clients against a control server")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N clients join; joins/s and time to first netmap.
    Join {
        #[command(flatten)]
        common: Common,
    },
    /// Steady state, then every --period a --fraction of clients go down, come up or restart.
    Churn {
        #[command(flatten)]
        common: Common,
        /// Time between churn rounds.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        period: Duration,
        /// Share of clients acted on per round.
        #[arg(long, default_value_t = 0.1)]
        fraction: f64,
    },
    /// Segmented groups; every --period a policy change through the API bridges two groups or removes the bridge.
    PolicyStorm {
        #[command(flatten)]
        common: Common,
        /// Peers each node sees (group size − 1).
        #[arg(long, default_value_t = 100)]
        peers: usize,
        /// Nodes per generated user.
        #[arg(long, default_value_t = 10)]
        nodes_per_user: usize,
        /// Time between policy changes.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        period: Duration,
        /// Policy changes at most.
        #[arg(long, default_value_t = 20)]
        changes: usize,
    },
    /// Everyone sees everyone (allow-all policy); endpoint changes one at a time.
    Everyone {
        #[command(flatten)]
        common: Common,
        /// Endpoint changes to make.
        #[arg(long, default_value_t = 20)]
        changes: usize,
    },
    /// Groups reaching only themselves (~--peers visible peers per node); endpoint changes one at a time.
    Segmented {
        #[command(flatten)]
        common: Common,
        /// Peers each node sees (group size − 1).
        #[arg(long, default_value_t = 100)]
        peers: usize,
        /// Nodes per generated user.
        #[arg(long, default_value_t = 10)]
        nodes_per_user: usize,
        /// Endpoint changes to make.
        #[arg(long, default_value_t = 20)]
        changes: usize,
    },
}

#[derive(Args)]
struct Common {
    /// Control server, `http://IP:PORT` (loopback in tests).
    #[arg(long)]
    control_url: String,
    /// Pre-auth key (repeatable; client i uses key i mod count). Not needed with --api-key.
    #[arg(long = "auth-key")]
    auth_keys: Vec<String>,
    /// Management API base URL (Headscale's /api/v1), default: the control URL.
    #[arg(long)]
    api_url: Option<String>,
    /// API key for --api-url.
    #[arg(long, env = "TAILWARDEN_BENCH_API_KEY")]
    api_key: Option<String>,
    /// Number of simulated clients.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Time limit of the phase after joining (changes, churn or policy storm).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Clients joining at once.
    #[arg(long, default_value_t = 64)]
    join_concurrency: usize,
    /// Map-stream compression to request: zstd (Go clients) or none (tailscale-rs).
    #[arg(long, default_value = "zstd", value_parser = parse_compression)]
    compress: Compression,
    /// Spread connections over source addresses 127.0.0.1..=127.0.0.N.
    #[arg(long, default_value_t = 1)]
    source_addrs: u8,
    /// Deadline for one client's connect + register + first map.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    op_timeout: Duration,
    /// How long a change may take to reach every affected watcher.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    delivery_timeout: Duration,
    /// Wait after each round's last delivery, to catch messages to unaffected watchers.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    linger: Duration,
    /// Upper bound on waiting for every map to be complete after joining.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    settle_timeout: Duration,
    /// The server's PID, for CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seed for the choice of changed clients.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Exit non-zero on any correctness error (failed join, missing delivery, bytes to unaffected watchers, …).
    #[arg(long)]
    strict: bool,
    /// Worker threads of the runtime (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

impl Common {
    fn options(&self) -> Options {
        let api = self.api_key.clone().map(|k| (self.api_url.clone().unwrap_or_else(|| self.control_url.clone()), k));
        Options {
            control_url: self.control_url.clone(),
            auth_keys: self.auth_keys.clone(),
            api,
            clients: self.clients,
            join_concurrency: self.join_concurrency,
            compression: self.compress,
            source_addrs: self.source_addrs,
            op_timeout: self.op_timeout,
            delivery_timeout: self.delivery_timeout,
            linger: self.linger,
            settle_timeout: self.settle_timeout,
            server_pid: self.server_pid,
            seed: self.seed,
        }
    }
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    match s {
        "zstd" => Ok(Compression::Zstd),
        "none" => Ok(Compression::None),
        _ => Err(format!("{s:?}: expected zstd or none")),
    }
}

/// `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{s:?}: expected a duration such as 500ms, 30s, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?}: out of range"))
}

fn plan(scenario: &Scenario) -> (Plan, &Common) {
    match scenario {
        Scenario::Join { common } => {
            (Plan { scenario: "join".into(), layout: Layout::Everyone, phases: vec![] }, common)
        }
        Scenario::Churn { common, period, fraction } => (
            Plan {
                scenario: "churn".into(),
                layout: Layout::Everyone,
                phases: vec![Phase::Churn { period: *period, fraction: *fraction, within: common.duration }],
            },
            common,
        ),
        Scenario::PolicyStorm { common, peers, nodes_per_user, period, changes } => (
            Plan {
                scenario: "policy-storm".into(),
                layout: Layout::Segmented { peers: *peers, nodes_per_user: *nodes_per_user },
                phases: vec![Phase::PolicyToggles { count: *changes, period: *period, within: common.duration }],
            },
            common,
        ),
        Scenario::Everyone { common, changes } => (
            Plan {
                scenario: "everyone".into(),
                layout: Layout::Everyone,
                phases: vec![Phase::Endpoints { count: *changes, within: common.duration }],
            },
            common,
        ),
        Scenario::Segmented { common, peers, nodes_per_user, changes } => (
            Plan {
                scenario: "segmented".into(),
                layout: Layout::Segmented { peers: *peers, nodes_per_user: *nodes_per_user },
                phases: vec![Phase::Endpoints { count: *changes, within: common.duration }],
            },
            common,
        ),
    }
}

/// Every simulated client holds one socket; the default soft limit (often 1024) would cap a run far below the
/// hard limit the system allows.
fn raise_open_files() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        // Failure leaves the soft limit as it was; joins beyond it then fail and are counted.
        let _ = setrlimit(Resource::Nofile, Rlimit { current: lim.maximum, maximum: lim.maximum });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (plan, common) = plan(&cli.scenario);
    let nofile = raise_open_files();
    if (common.clients as u64).saturating_add(64) > nofile {
        eprintln!("warning: open-file limit {nofile} is below --clients {}; some joins will fail", common.clients);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = common.threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build().context("starting the runtime")?;
    let report = rt.block_on(tailwarden_bench::run(&plan, &common.options()))?;
    print!("{}", report.table());
    if let Some(path) = &common.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if common.strict && !report.ok {
        anyhow::bail!("correctness errors (see above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("ms").is_err());
    }
}
