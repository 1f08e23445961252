//! Bounded state: an upstream that answers 100 MB, clients that ask for
//! thousands of camps that do not exist.

use std::time::{Duration, Instant};

use zsxq_cache::domain::CheckinId;
use zsxq_cache::refund::{RequiredDays, UNKNOWN_CAMPS_KEPT, turns::SWEEP_ABOVE};
use zsxq_sim::SimFault;

use crate::rss_kib;
use zsxq_test_support::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_upstream_answer_is_a_502_read_no_further_than_the_cap_and_never_cached() {
    let app = TestApp::builder().members(20).spawn().await;
    let members = app.sim.data.members.clone();
    for (i, fault) in [SimFault::Huge, SimFault::HugeChunked]
        .into_iter()
        .enumerate()
    {
        app.sim.set_fault(fault);
        let member = &members[i];
        let rss_before = rss_kib();
        let started = Instant::now();
        let a = app.user(member.user_id).await;
        let took = started.elapsed();
        let rss_after = rss_kib();
        a.assert_error(502);
        let message = a.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("UPSTREAM_BODY_MAX_MB"), "{message}");
        println!(
            "[huge body, {fault:?}] 502 in {took:?}; RSS {rss_before} -> {rss_after} KiB (+{} KiB): {message}",
            rss_after.saturating_sub(rss_before)
        );
        // The default cap is 8 MB; reading the 100 MB whole would add ~100 MB.
        assert!(
            rss_after.saturating_sub(rss_before) < 48 * 1024,
            "RSS grew by {} KiB",
            rss_after.saturating_sub(rss_before)
        );
        app.sim.set_fault(SimFault::None);
        let again = app.user(member.user_id).await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(again.data()["cache_status"], "miss", "nothing was cached");
        assert_eq!(again.data()["number"], member.number);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_unknown_camps_cost_a_bounded_number_of_camp_list_calls() {
    let app = TestApp::builder().members(20).spawn().await;
    // Warm-up: the camps lists are read once.
    let unknown = |i: u64| 7_000_000_000 + i;
    app.refund_list(unknown(0), serde_json::json!({}))
        .await
        .assert_error(404);
    let rss_before = rss_kib();
    let started = Instant::now();
    let client = reqwest::Client::new();
    let n = 20_000u64;
    let mut next = 1u64;
    while next <= n {
        let wave: Vec<_> = (next..(next + 50).min(n + 1))
            .map(|i| {
                let (client, url) = (
                    client.clone(),
                    app.url(&format!("/api/camps/{}/refund-list", unknown(i))),
                );
                async move {
                    client
                        .post(url)
                        .header("content-type", "application/json")
                        .body("{}")
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                }
            })
            .collect();
        for status in futures_util::future::join_all(wave).await {
            assert_eq!(status.ok(), Some(404));
        }
        next += 50;
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "bounded in time"
        );
    }
    let took = started.elapsed();
    let rss_after = rss_kib();
    let checkins = app.sim.stats().by_kind.checkins;
    // Each scope's list is read again at most every 10 s.
    let bound = 3 * (2 + took.as_secs() / 10);
    println!(
        "[unknown camps] {n} distinct unknown camp ids in {took:?}: {checkins} camps-list calls (bound {bound}); \
         RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(checkins <= bound, "{checkins} > {bound}");

    // An id asked for again after the lists went stale costs nothing: it is
    // remembered as unknown.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = app.sim.stats().by_kind.checkins;
    app.refund_list(unknown(0), serde_json::json!({}))
        .await
        .assert_error(404);
    assert_eq!(app.sim.stats().by_kind.checkins, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_camp_ids_held_in_memory_stay_bounded_however_many_unknown_ids_are_asked_for() {
    let env = TestApp::builder().environment().await.expect("environment");
    let config = env.config().expect("config");
    let state = zsxq_cache::startup::build_state(&config)
        .await
        .expect("state");
    let started = Instant::now();
    let n = 20_000u64;
    for i in 0..n {
        let id = CheckinId::parse(&(8_000_000_000 + i).to_string()).expect("id");
        assert!(
            state
                .refunds
                .refund_list(id, RequiredDays::DEFAULT)
                .await
                .is_err()
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "bounded in time"
        );
    }
    let held = state.refunds.camp_ids_held();
    println!(
        "[camp ids held] {n} distinct unknown camp ids asked in {:?}: {held} held in memory (bound {})",
        started.elapsed(),
        UNKNOWN_CAMPS_KEPT + SWEEP_ABOVE as u64
    );
    assert!(held <= UNKNOWN_CAMPS_KEPT + SWEEP_ABOVE as u64, "{held}");
}
