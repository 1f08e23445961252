//! Degradation: Redis down or hung, upstream throttled — answers keep coming.

use std::time::{Duration, Instant};

use serde_json::json;
use zsxq_sim::SimMember;

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{StoreKind, TestApp, spawn_app};

on_both_stores!(
    throttled_upstream_calls_are_retried_until_they_succeed,
    a_failing_store_is_answered_from_the_near_cache_and_upstream,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_keep_answering_while_redis_is_down_and_caching_resumes_after() {
    let mut app = spawn_app(StoreKind::Redis).await;
    let members: Vec<_> = app.sim.data.members.iter().take(6).cloned().collect();
    assert_eq!(
        app.user(members[0].user_id).await.data()["cache_status"],
        "miss"
    );
    assert_eq!(
        app.user(members[0].user_id).await.data()["cache_status"],
        "hit"
    );

    app.redis.as_mut().unwrap().stop().expect("stop redis");
    for m in &members[..3] {
        answers_within_two_seconds(&app, m, "on a dead Redis").await;
    }
    // Stats still answer, from this process's counters.
    assert_eq!(app.stats().await.status, 200);

    app.redis
        .as_mut()
        .unwrap()
        .restart()
        .expect("restart redis");
    // Within a few seconds a lookup is cached again, without restarting us.
    let probe = members[4].user_id;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        app.user(probe).await;
        if app.user(probe).await.data()["cache_status"] == "hit" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "caching did not resume after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_does_not_hang_requests() {
    let mut app = spawn_app(StoreKind::Redis).await;
    let m = app.sim.data.members[1].clone();
    app.user(m.user_id).await;
    app.redis.as_mut().unwrap().pause().expect("SIGSTOP redis");
    for _ in 0..3 {
        answers_within_two_seconds(&app, &m, "on a hung Redis").await;
    }
    app.redis.as_mut().unwrap().resume().expect("SIGCONT redis");
}

async fn throttled_upstream_calls_are_retried_until_they_succeed(kind: StoreKind) {
    let app = TestApp::builder()
        .store(kind)
        .var("API_MAX_RETRIES", "10")
        .spawn()
        .await;
    app.sim.set_reject_ratio(0.5);
    for m in app.sim.data.members.iter().take(10) {
        let a = app.user(m.user_id).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.data()["number"], m.number);
    }
    let sim = app.sim.stats();
    assert!(sim.throttled > 0, "the simulator did throttle");
    let s = app.stats().await;
    assert_eq!(s.data()["upstream"]["throttled"], sim.throttled);
    assert!(s.data()["upstream"]["retries"].as_u64().unwrap() >= sim.throttled);
}

/// Any store error (injected here, on either store) opens the breaker:
/// members seen before are still hits, new ones come from the upstream, and
/// both are in the store once it works again.
async fn a_failing_store_is_answered_from_the_near_cache_and_upstream(kind: StoreKind) {
    let app = TestApp::builder().store(kind).faulty_store().spawn().await;
    let switch = app.store_fault.clone().expect("faulty store");
    let (seen, new) = (&app.sim.data.members[0], &app.sim.data.members[1]);
    assert_eq!(app.user(seen.user_id).await.data()["cache_status"], "miss");
    switch.set(zsxq_test_support::Fault::Failing);
    let a = app.user(seen.user_id).await;
    assert_eq!((a.status, &a.data()["cache_status"]), (200, &json!("hit")));
    let b = app.user(new.user_id).await;
    assert_eq!((b.status, &b.data()["cache_status"]), (200, &json!("miss")));
    assert_eq!(app.get("/readyz").await.data()["mode"], "degraded");
    switch.set(zsxq_test_support::Fault::None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.stats().await.data()["cached_users_count"] != 2 {
        assert!(Instant::now() < deadline, "the new member was written back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_throttle_that_outlasts_the_retries_is_a_503_with_retry_after() {
    let app = TestApp::builder().var("API_MAX_RETRIES", "2").spawn().await;
    app.sim.set_reject_ratio(1.0);
    let r = app
        .http
        .get(app.url(&format!("/api/users/{}", app.sim.data.members[0].user_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], 503);
    assert_eq!(app.sim.stats().calls, 3, "one call and two retries");
}

/// Looks `m` up and checks the answer is right and came within 2 s: no
/// request hangs on a Redis that is `state`.
async fn answers_within_two_seconds(app: &TestApp, m: &SimMember, state: &str) {
    let started = Instant::now();
    let a = app.user(m.user_id).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.data()["number"], m.number);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no hanging {state}: {:?}",
        started.elapsed()
    );
}
