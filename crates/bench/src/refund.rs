//! `zsxq-bench refund`: the refund-list targets, measured.
//!
//! Starts the simulator in-process with production-like behaviour (200 ms a
//! call, 50 calls a minute, answered with 1059 beyond that) and the
//! service's parts with `API_RATE_LIMIT=50` on a fresh embedded store in the
//! temp directory, then builds the benchmark camp's list (167 participants):
//! 1. **cold** — empty store, nothing in process;
//! 2. **warm** — the same list again;
//! 3. **cold, rejecting** — a fresh store and fresh service parts while the
//!    simulator rejects a share of calls at random (`--reject-ratio`).
//!
//! Upstream calls are counted by the simulator (what the upstream saw, retries
//! included), not by the client. Every row is checked against the
//! simulator's own data: order, member number, days. Exits non-zero if a
//! target is missed, so it can guard a change.

use std::time::{Duration, Instant};

use anyhow::Context;

use zsxq_cache::domain::CheckinId;
use zsxq_cache::refund::{RefundList, RequiredDays};
use zsxq_cache::startup::build_state;
use zsxq_sim::{SimConfig, SimData, SimStats};
use zsxq_test_support::{TestApp, TestEnv};

/// Cold target: at most this many upstream calls (12, plus the camp's
/// statistics that prove the ranking whole)…
const COLD_MAX_CALLS: u64 = 12 + 1;
/// …within this wall time.
const COLD_MAX_TIME: Duration = Duration::from_secs(15);
/// Warm target.
const WARM_MAX_TIME: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Members in the simulated group.
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// Simulated upstream latency per call, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub latency_ms: u64,
    /// Calls a minute: the simulator's limit and the service's API_RATE_LIMIT.
    #[arg(long, default_value_t = 50)]
    pub rate_per_min: u32,
    /// Share of calls the simulator rejects with 1059 in the third run.
    #[arg(long, default_value_t = 0.25)]
    pub reject_ratio: f64,
    /// Seed of the simulated data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// One measured run.
struct Run {
    name: String,
    calls: SimStats,
    elapsed: Duration,
    complete: bool,
    rows: usize,
    right: usize,
    problems: Vec<String>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut sim_cfg = SimConfig::for_tests();
    sim_cfg.members = args.members;
    sim_cfg.seed = args.seed;
    sim_cfg.latency_ms = args.latency_ms;
    sim_cfg.rate_per_min = args.rate_per_min;
    sim_cfg.token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    // The shipped pacing but for the rate, which is the simulator's too.
    let env = TestApp::builder()
        .sim(sim_cfg)
        .shipped_upstream_pace()
        .var("API_RATE_LIMIT", args.rate_per_min.to_string())
        .environment()
        .await?;
    let sim = &env.sim;
    let camp = sim
        .data
        .benchmark_camp()
        .context("the simulated group is too small for a benchmark camp")?;
    let checkin = CheckinId::new(camp.checkin_id).context("camp id")?;
    println!(
        "bench-refund: camp {} ({}), {} participants; simulator {} ms a call, {} calls/min; service API_RATE_LIMIT={}",
        camp.title,
        camp.checkin_id,
        camp.participants.len(),
        args.latency_ms,
        args.rate_per_min,
        args.rate_per_min
    );

    let runs = phases(&args, &env, checkin).await?;

    println!();
    println!(
        "{:<26} {:>5}  {:<25} {:>9}  {:>10}  {:<8}  numbers right",
        "run", "calls", "camps/stats/rank/list/sum", "throttled", "wall time", "complete"
    );
    for r in &runs {
        let k = r.calls.by_kind;
        println!(
            "{:<26} {:>5}  {:<25} {:>9}  {:>10}  {:<8}  {}/{}",
            r.name,
            r.calls.calls,
            format!(
                "{}/{}/{}/{}/{}",
                k.checkins, k.statistics, k.ranking, k.member_list, k.member_summary
            ),
            r.calls.throttled,
            format_duration(r.elapsed),
            if r.complete { "yes" } else { "NO" },
            r.right,
            r.rows
        );
        for p in r.problems.iter().take(5) {
            println!("    ! {p}");
        }
    }

    let [cold, warm, rejecting] = runs.as_slice() else {
        anyhow::bail!("expected three runs");
    };
    let all_right = |r: &Run| r.complete && r.right == r.rows && r.problems.is_empty();
    let checks = [
        (
            format!(
                "cold: complete and right, <= {COLD_MAX_CALLS} calls, <= {} s",
                COLD_MAX_TIME.as_secs()
            ),
            all_right(cold) && cold.calls.calls <= COLD_MAX_CALLS && cold.elapsed <= COLD_MAX_TIME,
        ),
        (
            format!(
                "warm: complete and right, 0 calls, <= {} ms",
                WARM_MAX_TIME.as_millis()
            ),
            all_right(warm) && warm.calls.calls == 0 && warm.elapsed <= WARM_MAX_TIME,
        ),
        (
            format!("reject ratio {}: complete and right", args.reject_ratio),
            all_right(rejecting),
        ),
    ];
    println!();
    for (what, passed) in &checks {
        println!("{} {what}", if *passed { "PASS" } else { "FAIL" });
    }
    if checks.iter().all(|(_, passed)| *passed) {
        Ok(())
    } else {
        anyhow::bail!("a refund-list target was missed")
    }
}

async fn phases(args: &BenchArgs, env: &TestEnv, checkin: CheckinId) -> anyhow::Result<Vec<Run>> {
    let (sim, required) = (&env.sim, RequiredDays::DEFAULT);
    let services = build_state(&env.config()?).await?;
    let mut runs = Vec::new();
    for name in ["cold", "warm"] {
        sim.reset_stats();
        let started = Instant::now();
        let list = services.refunds.refund_list(checkin, required).await;
        let elapsed = started.elapsed();
        runs.push(measure(name, &sim.data, sim.stats(), elapsed, list)?);
    }
    drop(services);

    sim.set_reject_ratio(args.reject_ratio);
    // A fresh store is a new installation with a device id of its own.
    sim.forget_device();
    let fresh = env.dir().join("rejecting.redb").display().to_string();
    let services = build_state(&env.config_with(&[("EMBEDDED_PATH", fresh)])?).await?;
    sim.reset_stats();
    let started = Instant::now();
    let list = services.refunds.refund_list(checkin, required).await;
    let elapsed = started.elapsed();
    runs.push(measure(
        &format!("cold, reject ratio {}", args.reject_ratio),
        &sim.data,
        sim.stats(),
        elapsed,
        list,
    )?);
    Ok(runs)
}

/// Checks a list against the simulator's data.
fn measure(
    name: &str,
    data: &SimData,
    calls: SimStats,
    elapsed: Duration,
    list: Result<RefundList, zsxq_cache::refund::RefundError>,
) -> anyhow::Result<Run> {
    let list = list.with_context(|| format!("{name}: the list could not be built"))?;
    let expected = data
        .expected_ranking(list.checkin_id.get())
        .context("the camp vanished from the simulator")?;
    let mut problems = Vec::new();
    if expected.len() != list.refund_list.len() {
        problems.push(format!(
            "{} rows, the ranking has {}",
            list.refund_list.len(),
            expected.len()
        ));
    }
    let mut right = 0;
    for (row, (user_id, days)) in list.refund_list.iter().zip(&expected) {
        let number = data.member_by_id(*user_id).map(|m| m.number);
        let ok = row.planet_user_id.get() == *user_id
            && row.planet_number.map(|n| n.get()) == number
            && number.is_some()
            && row.checkined_days == *days
            && row.is_qualified == (*days >= row.required_days);
        if ok {
            right += 1;
        } else {
            problems.push(format!(
                "row of {}: number {:?}, expected {:?}",
                row.planet_user_id, row.planet_number, number
            ));
        }
    }
    Ok(Run {
        name: name.to_string(),
        calls,
        elapsed,
        complete: list.complete,
        rows: list.refund_list.len(),
        right,
        problems,
    })
}

fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}
