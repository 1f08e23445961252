//! `zsxq-bench sync`: the upstream-budget targets, measured against the
//! simulator:
//! - sync of N members with member listing allowed: upstream calls and time;
//! - sync with listing refused: wall time against `calls / rate`, and how
//!   many throttles our own pace provoked (the simulator enforces the same
//!   per-minute limit we are configured with);
//! - a person's cold lookup while that per-member sync runs: its latency
//!   against one limiter slot;
//! - the same syncs with the simulator rejecting a share of calls at random:
//!   complete and correct.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use zsxq_sim::{SimConfig, SimStats};
use zsxq_test_support::TestApp;

#[derive(Debug, Clone, clap::Args)]
pub struct SyncBenchArgs {
    /// Members in the simulated group.
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// Upstream calls per minute: both our API_RATE_LIMIT and the
    /// simulator's own limit (50 is API_RATE_LIMIT's default; 600 makes the
    /// per-member scenario take a minute instead of ten).
    #[arg(long, default_value_t = 600)]
    pub rate: u32,
    /// Simulated upstream latency per call, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub latency_ms: u64,
    /// Share of calls the simulator rejects at random in the storm scenario.
    #[arg(long, default_value_t = 0.25)]
    pub reject_ratio: f64,
}

fn sim_config(args: &SyncBenchArgs, no_member_list: bool, reject_ratio: f64) -> SimConfig {
    let mut sim = SimConfig::for_tests();
    sim.members = args.members;
    sim.latency_ms = args.latency_ms;
    sim.rate_per_min = args.rate;
    sim.no_member_list = no_member_list;
    sim.reject_ratio = reject_ratio;
    sim
}

/// The service at the shipped pacing but for the rate (ours and the
/// simulator's alike), no spacing and patient retries, on a fresh embedded
/// store; no scheduled warm-up to muddle the counts.
async fn start(
    args: &SyncBenchArgs,
    no_member_list: bool,
    reject_ratio: f64,
) -> anyhow::Result<TestApp> {
    TestApp::builder()
        .sim(sim_config(args, no_member_list, reject_ratio))
        .shipped_upstream_pace()
        .var("API_RATE_LIMIT", args.rate.to_string())
        .var("API_REQUEST_DELAY", "0")
        .var("API_MAX_RETRIES", "10")
        .var("WARMUP_INTERVAL", "0")
        .try_spawn()
        .await
}

/// A blocking sync of the whole group: its report, how long it took, what
/// the simulator saw, and the cached numbers checked (checked, wrong).
async fn timed_sync(app: &TestApp) -> (Value, Duration, SimStats, (u64, u64)) {
    let started = Instant::now();
    let report = app.sync(json!({})).await.body;
    let took = started.elapsed();
    let stats = app.sim.stats();
    (report, took, stats, wrong_numbers(app).await)
}

/// Checks every cached member's number against the simulator's data.
async fn wrong_numbers(app: &TestApp) -> (u64, u64) {
    let mut page = 1;
    let (mut checked, mut wrong) = (0, 0);
    loop {
        let body = app
            .get(&format!("/api/users?page={page}&page_size=200"))
            .await
            .body;
        let users = body["data"]["users"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if users.is_empty() {
            return (checked, wrong);
        }
        for u in users {
            checked += 1;
            let id: u64 = u["user_id"].as_str().unwrap_or("0").parse().unwrap_or(0);
            let expected = app.sim.data.member_by_id(id).map(|m| m.number);
            if expected != u["number"].as_u64() {
                wrong += 1;
            }
        }
        page += 1;
    }
}

pub async fn run(args: SyncBenchArgs) -> anyhow::Result<()> {
    println!(
        "bench sync: {} members, rate {}/min (ours and the simulator's), latency {} ms",
        args.members, args.rate, args.latency_ms
    );
    let slot = Duration::from_secs_f64(60.0 / f64::from(args.rate.max(1)));

    // 1. Member list allowed.
    let app = start(&args, false, 0.0).await?;
    let (report, took, stats, (checked, wrong)) = timed_sync(&app).await;
    println!(
        "[list]      synced {:>4} in {:>7.2} s with {:>3} upstream calls, {} throttled; {} checked, {} wrong  (target: <= 5 calls, <= 10 s)",
        report["data"]["success_count"],
        took.as_secs_f64(),
        stats.calls,
        stats.throttled,
        checked,
        wrong
    );
    drop(app);

    // 2 + 3. Listing refused: per-member pace; a cold lookup meanwhile.
    let app = start(&args, true, 0.0).await?;
    let started = Instant::now();
    let job = app.sync(json!({"async": true})).await.body;
    let job_id = job["data"]["job_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Let the sync get going, then ask for members it has not reached.
    tokio::time::sleep(slot * 5).await;
    let mut lookups = Vec::new();
    for m in app.sim.data.members.iter().rev().take(5) {
        let t = Instant::now();
        let body = app.user(m.user_id).await.body;
        let ok = body["data"]["number"].as_u64() == Some(m.number);
        lookups.push((t.elapsed(), ok));
        tokio::time::sleep(slot * 3).await;
    }
    let report = loop {
        let s = app.get(&format!("/api/users/sync/{job_id}")).await.body;
        if s["data"]["state"] != "running" {
            break s["data"]["report"].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    let stats = app.sim.stats();
    let ideal = slot.as_secs_f64() * stats.calls.saturating_sub(1) as f64;
    println!(
        "[per-member] synced {:>4} in {:>7.2} s with {:>3} upstream calls; calls x 60/rate = {:.2} s, ratio {:.3}; throttled by our pace: {}  (target: ratio <= 1.05, 0 throttled)",
        report["success_count"],
        took.as_secs_f64(),
        stats.calls,
        ideal,
        took.as_secs_f64() / ideal.max(0.001),
        stats.throttled
    );
    for (i, (latency, ok)) in lookups.iter().enumerate() {
        println!(
            "[priority]  cold lookup {} during the sync: {:>6.0} ms (one slot = {:.0} ms), number right: {}",
            i + 1,
            latency.as_secs_f64() * 1000.0,
            slot.as_secs_f64() * 1000.0,
            ok
        );
    }
    drop(app);

    // 4. Storms: random 1059s on both paths; complete and correct anyway.
    for no_list in [false, true] {
        let app = start(&args, no_list, args.reject_ratio).await?;
        let (report, took, stats, (checked, wrong)) = timed_sync(&app).await;
        println!(
            "[storm {:.0}%] {}: synced {:>4}, failed {}, in {:>7.2} s, {} calls, {} throttled; {} checked, {} wrong",
            args.reject_ratio * 100.0,
            if no_list { "per-member" } else { "list" },
            report["data"]["success_count"],
            report["data"]["failed_count"],
            took.as_secs_f64(),
            stats.calls,
            stats.throttled,
            checked,
            wrong
        );
        let departed: Vec<String> = app
            .sim
            .data
            .departed
            .iter()
            .map(|d| d.user_id.to_string())
            .collect();
        for f in report["data"]["failed_users"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = f["user_id"].as_str().unwrap_or_default();
            let why = if departed.iter().any(|d| d == id) {
                "left the group"
            } else {
                "NOT EXPECTED"
            };
            println!("              failed {id} ({why}): {}", f["error"]);
        }
    }
    Ok(())
}
