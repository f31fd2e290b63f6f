//! Latency summaries and the server's CPU time and memory read from `/proc`.

use serde::Serialize;
use std::time::Duration;

/// A latency distribution. Percentiles use the nearest-rank method: p99 of n samples is the
/// `ceil(0.99 n)`-th smallest.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest sample, ms.
    pub max_ms: f64,
}

impl Summary {
    /// Summarises `samples` (reordered in place).
    pub fn of(samples: &mut [Duration]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            let k = (p * samples.len() as f64).ceil() as usize;
            ms(samples[k.clamp(1, samples.len()) - 1])
        };
        Summary { count: samples.len(), p50_ms: rank(0.50), p99_ms: rank(0.99), max_ms: ms(samples[samples.len() - 1]) }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time and resident memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time of all its threads, seconds.
    pub cpu_s: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

impl ProcSample {
    /// Reads `/proc/PID/stat` (utime, stime) and `/proc/PID/status` (VmRSS).
    pub fn read(pid: u32) -> std::io::Result<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let ticks = rustix::param::clock_ticks_per_second();
        parse(&stat, &status, ticks)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unreadable /proc/{pid}")))
    }
}

fn parse(stat: &str, status: &str, ticks_per_s: u64) -> Option<ProcSample> {
    // The command name (field 2) is parenthesised and may contain spaces or ')', so count fields after the last ')':
    // field 3 (state) comes first, utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(ProcSample { cpu_s: (utime + stime) as f64 / ticks_per_s as f64, rss_bytes: rss_kb * 1024 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        let s = Summary::of(&mut v);
        assert_eq!((s.count, s.p50_ms, s.p99_ms, s.max_ms), (200, 100.0, 198.0, 200.0));
        assert_eq!(Summary::of(&mut [Duration::from_millis(3)]).p99_ms, 3.0);
        assert_eq!(Summary::of(&mut []), Summary::default());
    }

    #[test]
    fn proc_fields() {
        let stat = "4242 (tail warden) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 2000000 3000";
        let status = "Name:\ttailwarden\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        let s = parse(stat, status, 100).unwrap();
        assert_eq!((s.cpu_s, s.rss_bytes), (3.0, 12345 * 1024));
        assert!(ProcSample::read(std::process::id()).unwrap().rss_bytes > 0);
    }
}
