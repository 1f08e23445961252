//! One upstream budget for the fleet: three replicas
//! under concurrent load never call the upstream faster than
//! `API_RATE_LIMIT` together, measured from the simulator's arrival log.
//!
//! The tests run at a high rate (2400 calls a minute) so they finish in
//! seconds; the limit is checked over windows of a few seconds, scaled from
//! the per-minute figure. Each process may use one slot early at the start of
//! any window (a burst of one), so a window of `w` holds at most
//! `w / spacing + 1` calls per replica; windows are chosen long enough that
//! the 2% safety margin covers that.

use std::time::{Duration, Instant};

use zsxq_sim::SimConfig;
use zsxq_test_support::{Fleet, StoreKind, TestApp};

/// `API_RATE_LIMIT` of every replica and the simulator's per-minute limit.
const LIMIT_PER_MIN: u32 = 2400;

/// One fleet of three replicas and a thousand clients at a time: two such
/// fleets side by side on a test machine's two cores time out most store
/// calls, leases included, and a lease that cannot be taken is a second
/// upstream call. Each measures its own fleet, not its neighbour's load.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `n` replicas over one simulator of `members` members, with the simulator
/// limiting at [`LIMIT_PER_MIN`] too, on `store` (Redis or a cluster);
/// `extra` variables win. The upstream pacing is the test's own: the shipped
/// timeout, retries from 50 ms, five calls at a time per replica.
pub async fn start_fleet(
    store: StoreKind,
    n: usize,
    members: usize,
    extra: &[(&str, &str)],
) -> Fleet {
    let mut fleet = TestApp::builder()
        .store(store)
        .sim(SimConfig {
            members,
            latency_ms: 20,
            rate_per_min: LIMIT_PER_MIN,
            ..SimConfig::for_tests()
        })
        .shipped_upstream_pace()
        .var("ADMIN_TOKEN", "")
        .var("API_RATE_LIMIT", LIMIT_PER_MIN.to_string())
        .var("API_REQUEST_DELAY", "0")
        .var("API_CONCURRENCY", "5")
        .var("API_RETRY_BASE_MS", "50")
        .var("WARMUP_INTERVAL", "0");
    for (name, value) in extra {
        fleet = fleet.var(*name, *value);
    }
    fleet.spawn_fleet(n).await
}

/// Sends every `(replica, member index)` lookup at once; returns how many
/// answered with the member's right number, and the wall time.
pub async fn lookups(fleet: &Fleet, requests: &[(usize, usize)]) -> (usize, Duration) {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for &(replica, member) in requests {
        let m = &fleet.sim.data.members[member];
        let url = fleet.url(replica, &format!("/api/users/{}", m.user_id));
        let (http, number) = (fleet.http.clone(), m.number);
        tasks.spawn(async move {
            let Ok(resp) = http.get(url).send().await else {
                return false;
            };
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            body["data"]["number"].as_u64() == Some(number)
        });
    }
    let mut right = 0;
    while let Some(done) = tasks.join_next().await {
        right += usize::from(done.unwrap_or(false));
    }
    (right, started.elapsed())
}

/// A counter of `/metrics` (no labels), summed over the replicas.
async fn counter(fleet: &Fleet, name: &str) -> u64 {
    fleet.metric(name).await as u64
}

/// Calls the limit allows within `window`, scaled from the per-minute limit.
fn allowed_within(window: Duration) -> usize {
    (f64::from(LIMIT_PER_MIN) * window.as_secs_f64() / 60.0).floor() as usize
}

/// A cheap, reproducible stream of member indexes.
fn members_drawn(count: usize, members: usize, mut seed: u64) -> Vec<usize> {
    (0..count)
        .map(|_| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) % members as u64) as usize
        })
        .collect()
}

// Three replicas, the simulator and 1000 clients share a test's two cores,
// so lookups' 50 ms store reads do time out here; the default
// STORE_TIMEOUT_MS is kept on purpose. Those timeouts must not open the
// breaker, which would stop the replicas coordinating through Redis and let
// ~600 calls through instead of 300; `store/guard.rs` leaves lookup timeouts
// out of its count for that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_under_a_thousand_cold_lookups_stay_within_one_budget() {
    let _turn = ONE_FLEET_AT_A_TIME.lock().await;
    let fleet = start_fleet(StoreKind::Redis, 3, 300, &[]).await;
    a_thousand_cold_lookups_stay_within_one_budget(fleet, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_redis_cluster_stay_within_one_budget_too() {
    let _turn = ONE_FLEET_AT_A_TIME.lock().await;
    let fleet = start_fleet(StoreKind::Cluster, 3, 300, &[]).await;
    a_thousand_cold_lookups_stay_within_one_budget(fleet, "redis cluster").await;
}

async fn a_thousand_cold_lookups_stay_within_one_budget(fleet: Fleet, on: &str) {
    const MEMBERS: usize = 300;
    // Every member once, then 700 more drawn at random; round-robin over the
    // replicas, as a load balancer would spread them.
    let mut wanted: Vec<usize> = (0..MEMBERS).collect();
    wanted.extend(members_drawn(1000 - MEMBERS, MEMBERS, 7));
    let requests: Vec<(usize, usize)> = wanted
        .iter()
        .enumerate()
        .map(|(i, &m)| (i % 3, m))
        .collect();

    let (right, took) = lookups(&fleet, &requests).await;
    let stats = fleet.sim.stats();
    let window = Duration::from_secs(10);
    let (busiest, at) = fleet.sim.max_calls_within(window);
    let arrivals = fleet.sim.arrivals();
    let span = arrivals.last().copied().unwrap_or_default()
        - arrivals.first().copied().unwrap_or_default();
    let mean_per_min =
        (arrivals.len().saturating_sub(1)) as f64 / span.as_secs_f64().max(1e-9) * 60.0;
    println!(
        "[fleet budget, {on}] 3 replicas, 1000 cold lookups of {MEMBERS} members: {right} right in {took:.1?}; \
         {} upstream calls ({} member summaries), {} throttled; busiest 10 s window {busiest} calls \
         (allowed {}) from {at:.1?}; mean {mean_per_min:.0}/min against API_RATE_LIMIT {LIMIT_PER_MIN}",
        stats.calls,
        stats.by_kind.member_summary,
        stats.throttled,
        allowed_within(window),
    );
    let (waits, fallbacks) = (
        counter(&fleet, "zsxq_fleet_budget_waits_total").await,
        counter(&fleet, "zsxq_fleet_budget_fallbacks_total").await,
    );
    println!(
        "[fleet budget] schedule in Redis said wait {waits} times; {fallbacks} slots taken from the local fallback; \
         store failures {}, breaker opened {} times",
        counter(&fleet, "zsxq_store_failures_total").await,
        counter(&fleet, "zsxq_store_breaker_opened_total").await,
    );
    assert_eq!(right, 1000, "every lookup answered with the right number");
    assert_eq!(stats.throttled, 0, "the simulator never had to throttle");
    assert!(
        busiest <= allowed_within(window),
        "{busiest} calls within 10 s from {at:?}: over {LIMIT_PER_MIN}/min"
    );
    assert!(
        mean_per_min <= f64::from(LIMIT_PER_MIN),
        "mean rate {mean_per_min:.0}/min"
    );
    // Every member needs one call, and the fleet lease makes it exactly one
    // even when replicas are asked for the same member at once.
    assert_eq!(stats.by_kind.member_summary, MEMBERS as u64, "{stats:?}");
    assert_eq!(stats.calls, stats.by_kind.member_summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_fleet_budget_three_replicas_would_spend_three_budgets() {
    let _turn = ONE_FLEET_AT_A_TIME.lock().await;
    // The check above has teeth: the same measure catches replicas that
    // each keep only their own limit.
    let fleet = start_fleet(StoreKind::Redis, 3, 180, &[("FLEET_BUDGET", "false")]).await;
    let requests: Vec<(usize, usize)> = (0..180).map(|m| (m % 3, m)).collect();
    let (right, took) = lookups(&fleet, &requests).await;
    let window = Duration::from_secs(1);
    let (busiest, _) = fleet.sim.max_calls_within(window);
    println!(
        "[no fleet budget] 180 lookups on 3 replicas in {took:.1?}: busiest second {busiest} calls (allowed {})",
        allowed_within(window)
    );
    assert_eq!(right, 180);
    assert!(
        busiest > 2 * allowed_within(window),
        "three local budgets should have run at about three times the limit: {busiest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_replicas_fall_back_to_their_share_and_keep_answering() {
    let _turn = ONE_FLEET_AT_A_TIME.lock().await;
    const MEMBERS: usize = 300;
    let mut fleet = start_fleet(StoreKind::Redis, 3, MEMBERS, &[("FLEET_SIZE_HINT", "3")]).await;
    fleet
        .redis
        .as_mut()
        .expect("a Redis server")
        .stop()
        .expect("redis stops");
    let requests: Vec<(usize, usize)> = (0..MEMBERS).map(|m| (m % 3, m)).collect();
    let (right, took) = lookups(&fleet, &requests).await;
    let stats = fleet.sim.stats();
    // Three independent limiters may each use a slot early in a window, so
    // the window is long enough for the 2% margin to cover three of them.
    let window = Duration::from_secs(7);
    let (busiest, at) = fleet.sim.max_calls_within(window);
    println!(
        "[fleet budget, Redis down] {MEMBERS} lookups on 3 replicas with FLEET_SIZE_HINT=3: {right} right in {took:.1?}; \
         {} calls, {} throttled; busiest 7 s window {busiest} (allowed {}) from {at:.1?}",
        stats.calls,
        stats.throttled,
        allowed_within(window)
    );
    assert_eq!(right, MEMBERS, "no stall: every lookup answered");
    assert_eq!(stats.throttled, 0);
    assert!(
        busiest <= allowed_within(window),
        "{busiest} calls within 7 s from {at:?}"
    );
    for replica in 0..fleet.replicas.len() {
        let ready = fleet.get(replica, "/readyz").await;
        assert_eq!(
            ready.data()["upstream"]["fleet"],
            "fallback",
            "{}",
            ready.body
        );
    }
}
