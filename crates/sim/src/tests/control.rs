//! The simulator's own control surface (`/__sim/*`: stats, reset,
//! config) and its lifecycle: serving on a bound listener, shutting down,
//! counting concurrent calls.

use super::*;

#[tokio::test]
async fn stats_count_every_call_by_kind_and_reset_zeroes_them() {
    let sim = start(SimConfig::for_tests()).await;
    let uid = sim.data.members[0].user_id;
    let camp = sim.data.benchmark_camp().expect("an over camp").checkin_id;
    get(&sim, &format!("/members/{uid}/summary")).await;
    get(&sim, &format!("/members/{uid}")).await;
    get(&sim, "/members?count=10").await;
    get(&sim, "/checkins?scope=over").await;
    get(&sim, &format!("/checkins/{camp}/ranking_list")).await;
    get(&sim, &format!("/checkins/{camp}/statistics")).await;
    // An unauthenticated call still counts.
    send(reqwest::Client::new().get(group_path(&sim, "/checkins?scope=over"))).await;

    let arrivals = sim.arrivals();
    assert_eq!(arrivals.len(), 7, "every call's arrival is logged");
    assert!(arrivals.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let stats = sim_stats(&sim).await;
    assert_eq!(
        stats,
        json!({
            "calls": 7,
            "by_kind": {"member_summary": 1, "member": 1, "member_list": 1, "checkins": 2, "ranking": 1, "statistics": 1, "other": 0},
            "throttled": 0,
            "banned": false,
        })
    );

    let http = reqwest::Client::new();
    send(http.post(format!("{}/__sim/reset", sim.base_url))).await;
    assert_eq!(sim.stats(), SimStats::default());
    assert_eq!(sim_stats(&sim).await["calls"], 0);
    assert!(sim.arrivals().is_empty());
}

#[test]
fn the_busiest_window_is_found_over_arrival_times() {
    let ms = |v: &[u64]| {
        v.iter()
            .map(|&m| Duration::from_millis(m))
            .collect::<Vec<_>>()
    };
    let second = Duration::from_secs(1);
    assert_eq!(max_within(&[], second), (0, Duration::ZERO));
    // 400..1200 fall within one second; 0 and 1000 do not share one (half-open).
    let times = ms(&[0, 400, 900, 1000, 1100, 1150, 1200, 3000]);
    assert_eq!(max_within(&times, second), (6, Duration::from_millis(400)));
    assert_eq!(
        max_within(&times, Duration::from_millis(1)),
        (1, Duration::ZERO)
    );
}

#[tokio::test]
async fn the_config_endpoint_changes_knobs_and_answers_the_effective_config() {
    let sim = start(SimConfig::for_tests()).await;
    let url = format!("{}/__sim/config", sim.base_url);
    let http = reqwest::Client::new();

    let answer = send(
        http.post(&url)
            .json(&json!({"member_list": false, "latency_ms": 3})),
    )
    .await;
    assert_eq!(
        answer,
        json!({"reject_ratio": 0.0, "latency_ms": 3, "rate_per_min": 0, "member_list": false,
               "fault": "none", "slow_ms": 5000, "ban_after": 0, "reject_next": 0, "hide_participant": false, "wrong_summary": false})
    );
    assert_fails_with(&get(&sim, "/members?count=1").await, 11507);

    let refused = http
        .post(&url)
        .json(&json!({"reject_ratio": 2.0, "latency_ms": 9}))
        .send()
        .await;
    assert_eq!(refused.expect("answers").status(), 400);
    let typo = http.post(&url).json(&json!({"latency": 9})).send().await;
    assert!(typo.expect("answers").status().is_client_error());
    assert_eq!(
        sim.knobs().latency_ms,
        3,
        "a refused change changes nothing"
    );
}

#[tokio::test]
async fn unknown_upstream_paths_are_counted_and_answered_404() {
    let sim = start(SimConfig::for_tests()).await;
    assert_fails_with(&get(&sim, "/topics?count=20").await, 404);
    assert_eq!(sim.stats().by_kind.other, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_all_answered_and_counted() {
    let sim = start(SimConfig::for_tests()).await;
    let http = reqwest::Client::new();
    let ids: Vec<u64> = sim.data.members.iter().map(|m| m.user_id).collect();
    let started = Instant::now();
    let calls = ids.iter().cycle().take(2000).map(|uid| {
        let request = http
            .get(group_path(&sim, &format!("/members/{uid}/summary")))
            .header("Authorization", TOKEN);
        async move { send(request).await["succeeded"] == true }
    });
    let answers = run_bounded(calls).await;
    let elapsed = started.elapsed();
    assert!(answers.iter().all(|ok| *ok));
    assert_eq!(sim.stats().by_kind.member_summary, 2000);
    eprintln!("2000 summary calls in {elapsed:?}");
}

/// Runs futures concurrently on the current task, bounded to 64 in flight,
/// without pulling in the `futures` crate for one test.
async fn run_bounded<F>(calls: impl Iterator<Item = F>) -> Vec<bool>
where
    F: Future<Output = bool> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    for call in calls {
        if set.len() >= 64
            && let Some(done) = set.join_next().await
        {
            results.push(done.unwrap_or(false));
        }
        set.spawn(call);
    }
    while let Some(done) = set.join_next().await {
        results.push(done.unwrap_or(false));
    }
    results
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = start(SimConfig::for_tests()).await;
    let url = format!("{}/__sim/stats", sim.base_url);
    sim.shutdown().await.expect("clean stop");
    assert!(reqwest::Client::new().get(url).send().await.is_err());
}

#[tokio::test]
async fn serve_runs_on_a_bound_listener_until_the_shutdown_signal() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let cfg = SimConfig {
        lenient_headers: true,
        ..SimConfig::for_tests()
    };
    let data = Arc::new(generate(cfg.seed, 10, cfg.group_id));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, cfg, data, async {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}/v2/groups/{GROUP}/checkins?scope=over");
    let answer = send(
        reqwest::Client::new()
            .get(url)
            .header("Authorization", TOKEN),
    )
    .await;
    assert_eq!(answer["succeeded"], true);
    let _ = stop.send(());
    server.await.expect("joins").expect("serves cleanly");
}
