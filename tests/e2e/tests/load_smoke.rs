//! The load generator against a real server: 500 simulated clients join in segmented groups, report endpoints,
//! churn, and watch two policy changes. Asserts correctness only (every first map, every expected delivery, no
//! bytes to watchers that cannot see the change), never speed: this runs in CI on shared cores.

use std::time::Duration;
use tailwarden_bench::{Compression, Layout, Options, Phase, Plan};
use tailwarden_e2e::Server;

const CLIENTS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_smoke_500_clients_join_churn_and_a_policy_change() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = Server::start_with(tmp.path(), "policy:\n  mode: database\n")?;
    let api_key = server.cli(&["apikeys", "create"])?.trim().to_string();
    let plan = Plan {
        scenario: "smoke".into(),
        // Ten groups of 50: each change has watchers that must see it and watchers that must not.
        layout: Layout::Segmented { peers: 49, nodes_per_user: 10 },
        phases: vec![
            Phase::Endpoints { count: 3, within: Duration::from_secs(20) },
            Phase::Churn { period: Duration::from_secs(3), fraction: 0.05, within: Duration::from_secs(5) },
            Phase::PolicyToggles { count: 2, period: Duration::from_secs(1), within: Duration::from_secs(20) },
        ],
    };
    let opts = Options {
        control_url: server.url.clone(),
        auth_keys: vec![],
        api: Some((server.url.clone(), api_key)),
        clients: CLIENTS,
        join_concurrency: 32,
        compression: Compression::Zstd,
        source_addrs: 1,
        op_timeout: Duration::from_secs(60),
        delivery_timeout: Duration::from_secs(15),
        linger: Duration::from_millis(300),
        settle_timeout: Duration::from_secs(60),
        server_pid: None,
        seed: 4,
    };
    let report = tokio::time::timeout(Duration::from_secs(110), tailwarden_bench::run(&plan, &opts)).await??;
    println!("{}", report.table());

    assert_eq!(report.join.joined, CLIENTS, "every client got its first map");
    for label in ["endpoint", "churn", "policy"] {
        let c = &report.changes[label];
        assert!(c.changes > 0 && c.expected_deliveries > 0, "{label}: changes were made and watched");
        assert!(c.unaffected_watchers > 0, "{label}: some watchers could not see the change");
    }
    assert!(report.ok, "correctness errors: {:?}\n{}", report.errors, report.error_samples.join("\n"));
    Ok(())
}
