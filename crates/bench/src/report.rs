//! The result of a run: what was measured, what went wrong, as a JSON document and a text table.

use crate::metrics::Summary;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Everything a run measured. Field meanings are defined in the crate README.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Simulated clients asked for.
    pub clients: usize,
    /// Control URL.
    pub control_url: String,
    /// Start time, RFC 3339 (UTC).
    pub started_at: String,
    /// Wall time of the whole run, s.
    pub wall_s: f64,
    /// Joining.
    pub join: JoinStats,
    /// Waiting until every client's map shows every peer it should see, online.
    pub settle: SettleStats,
    /// Change rounds by kind of round (`endpoint`, `churn`, `policy`).
    pub changes: BTreeMap<String, ChangeStats>,
    /// Server process figures, when `--server-pid` was given.
    pub server: Option<ServerStats>,
    /// Correctness.
    pub errors: ErrorCounts,
    /// The first few error messages, for diagnosis.
    pub error_samples: Vec<String>,
    /// True when every error count is zero.
    pub ok: bool,
}

/// Join phase figures.
#[derive(Debug, Default, Serialize)]
pub struct JoinStats {
    /// Clients that received their first map.
    pub joined: usize,
    /// Wall time from the first connect to the last first map, s.
    pub wall_s: f64,
    /// `joined / wall_s`.
    pub joins_per_s: f64,
    /// Per client: TCP connect start → register answered.
    pub register: Summary,
    /// Per client: TCP connect start → first map message decoded.
    pub first_map: Summary,
    /// Same for clients that reconnected during churn.
    pub rejoin_first_map: Summary,
}

/// Convergence after joining.
#[derive(Debug, Default, Serialize)]
pub struct SettleStats {
    /// Time until every view was complete and the streams fell quiet, s.
    pub wall_s: f64,
}

/// Figures for one kind of change round.
#[derive(Debug, Default, Serialize)]
pub struct ChangeStats {
    /// Changes made.
    pub changes: usize,
    /// Watcher deliveries expected (sum over changes of affected watchers).
    pub expected_deliveries: usize,
    /// Deliveries that did not arrive within the delivery timeout.
    pub missing_deliveries: usize,
    /// Change → delivery latency over all affected watchers.
    pub latency: Summary,
    /// The same split by change kind (`endpoint`, `down`, `up`, `restart`, `policy-add`, `policy-remove`).
    pub latency_by_kind: BTreeMap<String, Summary>,
    /// Non-keep-alive map bytes received by affected watchers, divided by expected deliveries.
    pub bytes_per_change_per_watcher: f64,
    /// Watcher-rounds in which a client that could not see any changed node was connected.
    pub unaffected_watchers: usize,
    /// Non-keep-alive map bytes those unaffected watchers received (should be 0).
    pub unaffected_bytes: u64,
    /// Server CPU time during these rounds divided by `changes`, s.
    pub server_cpu_s_per_change: Option<f64>,
    /// The same less the server's idle CPU rate over the rounds' wall time: what the changes themselves cost, s.
    pub server_cpu_s_per_change_net: Option<f64>,
}

/// Server process figures.
#[derive(Debug, Default, Serialize)]
pub struct ServerStats {
    /// CPU time spent during the join phase, s.
    pub cpu_s_join: f64,
    /// `cpu_s_join / joined`.
    pub cpu_s_per_join: f64,
    /// RSS before the first client connected, bytes.
    pub rss_before: u64,
    /// RSS after joining and settling, bytes.
    pub rss_after_join: u64,
    /// `(rss_after_join - rss_before) / joined`, bytes.
    pub rss_per_node: f64,
    /// Server CPU seconds per second while the joined tailnet is quiet (keep-alives, timers), after settling.
    pub idle_cpu_per_s: f64,
}

/// What went wrong. Any non-zero count (and any unaffected byte) fails `--strict`.
#[derive(Debug, Default, Serialize)]
pub struct ErrorCounts {
    /// Clients that never received a first map.
    pub join_failures: usize,
    /// Clients whose map lacked an expected peer (or its online state) when settling timed out.
    pub settle_missing: usize,
    /// Expected deliveries that never arrived, over all change rounds.
    pub missing_deliveries: usize,
    /// Map streams the server ended while their client was up.
    pub streams_lost: usize,
    /// Changes the generator failed to make (a refused endpoint update, reconnect or policy write).
    pub failed_changes: usize,
    /// Bytes received by unaffected watchers, over all change rounds.
    pub unaffected_bytes: u64,
}

impl ErrorCounts {
    /// True when nothing went wrong.
    pub fn is_clean(&self) -> bool {
        self.join_failures == 0
            && self.settle_missing == 0
            && self.missing_deliveries == 0
            && self.streams_lost == 0
            && self.failed_changes == 0
            && self.unaffected_bytes == 0
    }
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "scenario {} · {} clients · {} · {:.1} s",
            self.scenario, self.clients, self.control_url, self.wall_s
        );
        let j = &self.join;
        let _ = writeln!(t, "{:<38} {:>12}", "joined", j.joined);
        let _ = writeln!(t, "{:<38} {:>12.1}", "joins/s", j.joins_per_s);
        row(&mut t, "register p50/p99 (ms)", &j.register);
        row(&mut t, "first netmap p50/p99 (ms)", &j.first_map);
        if j.rejoin_first_map.count > 0 {
            row(&mut t, "rejoin first netmap p50/p99 (ms)", &j.rejoin_first_map);
        }
        let _ = writeln!(t, "{:<38} {:>12.1}", "settle (s)", self.settle.wall_s);
        for (label, c) in &self.changes {
            let _ = writeln!(t, "-- {label}: {} changes, {} deliveries expected", c.changes, c.expected_deliveries);
            row(&mut t, "  change→delivery p50/p99 (ms)", &c.latency);
            if c.latency_by_kind.len() > 1 {
                for (kind, s) in &c.latency_by_kind {
                    row(&mut t, &format!("    {kind} p50/p99 (ms)"), s);
                }
            }
            let _ = writeln!(t, "{:<38} {:>12.0}", "  bytes/change/watcher", c.bytes_per_change_per_watcher);
            let _ = writeln!(
                t,
                "{:<38} {:>12}",
                "  unaffected watcher-rounds / bytes",
                format!("{} / {}", c.unaffected_watchers, c.unaffected_bytes)
            );
            if let Some(cpu) = c.server_cpu_s_per_change {
                let _ = writeln!(t, "{:<38} {:>12.4}", "  server CPU-s/change", cpu);
            }
            if let Some(cpu) = c.server_cpu_s_per_change_net {
                let _ = writeln!(t, "{:<38} {:>12.4}", "  server CPU-s/change, less idle", cpu);
            }
        }
        if let Some(s) = &self.server {
            let _ = writeln!(t, "{:<38} {:>12.2}", "server CPU-s during join", s.cpu_s_join);
            let _ = writeln!(t, "{:<38} {:>12.2}", "server CPU-ms per join", s.cpu_s_per_join * 1000.0);
            let _ = writeln!(t, "{:<38} {:>12.3}", "server idle CPU-s/s (quiet tailnet)", s.idle_cpu_per_s);
            let _ = writeln!(t, "{:<38} {:>12.1}", "server RSS after join (MiB)", s.rss_after_join as f64 / 1048576.0);
            let _ = writeln!(t, "{:<38} {:>12.1}", "server RSS per node (KiB)", s.rss_per_node / 1024.0);
        }
        let e = &self.errors;
        let _ = writeln!(
            t,
            "errors: join {} · settle {} · missing deliveries {} · streams lost {} · failed changes {} · unaffected bytes {} → {}",
            e.join_failures,
            e.settle_missing,
            e.missing_deliveries,
            e.streams_lost,
            e.failed_changes,
            e.unaffected_bytes,
            if self.ok { "OK" } else { "FAILED" }
        );
        for s in &self.error_samples {
            let _ = writeln!(t, "  {s}");
        }
        t
    }
}

fn row(t: &mut String, name: &str, s: &Summary) {
    let _ = writeln!(t, "{name:<38} {:>12}", format!("{:.1} / {:.1}", s.p50_ms, s.p99_ms));
}
