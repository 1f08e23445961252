//! Upstream faults: garbage, truncated JSON, missing
//! fields, HTTP 500, slowness past the timeout, 1059 storms and a refused
//! connection each give their typed error and a clear 502/503/504 envelope
//! (with `Retry-After` where retrying helps); nothing invalid is cached; a
//! failed refresh leaves the last good record in place.

use std::time::{Duration, Instant};

use serde_json::json;
use zsxq_sim::SimFault;

use zsxq_test_support::{AppBuilder, TestApp};

/// One lookup of an uncached member, by id: status, Retry-After, message.
async fn lookup(app: &TestApp, user_id: u64) -> (u16, Option<String>, String, Duration) {
    let started = Instant::now();
    let r = app
        .http
        .get(app.url(&format!("/api/users/{user_id}")))
        .send()
        .await
        .expect("answers");
    let took = started.elapsed();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: serde_json::Value = r.json().await.expect("an envelope");
    assert_eq!(body["code"], status, "{body}");
    assert!(body["timestamp"].is_i64());
    if status != 200 {
        assert!(body["data"].is_null(), "{body}");
    }
    let message = body["message"].as_str().unwrap_or_default().to_string();
    (status, retry_after, message, took)
}

async fn cached_count(app: &TestApp) -> u64 {
    app.stats().await.data()["cached_users_count"]
        .as_u64()
        .expect("count")
}

fn faulty_upstream() -> AppBuilder {
    TestApp::builder()
        .var("API_MAX_RETRIES", "1")
        .var("API_RETRY_BASE_MS", "5")
        .var("API_TIMEOUT_MS", "300")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_fault_is_a_clear_envelope_and_nothing_invalid_is_cached() {
    let app = faulty_upstream().spawn().await;
    let member = app.sim.data.members[3].clone();
    app.sim.set_slow_ms(1_000);
    let cases = [
        (SimFault::Garbage, 502, false, "unreadable"),
        (SimFault::Truncated, 502, false, "unreadable"),
        (SimFault::MissingFields, 502, false, "unreadable"),
        (SimFault::Http500, 502, true, "HTTP 500"),
        (SimFault::Slow, 504, true, "in time"),
    ];
    for (fault, status, wants_retry_after, says) in cases {
        app.sim.set_fault(fault);
        app.sim.reset_stats();
        let (got, retry_after, message, took) = lookup(&app, member.user_id).await;
        println!(
            "[upstream {fault:?}] {got} in {took:?}, Retry-After {retry_after:?}, upstream calls {}: {message}",
            app.sim.stats().calls
        );
        assert_eq!(got, status, "{fault:?}: {message}");
        assert_eq!(retry_after.is_some(), wants_retry_after, "{fault:?}");
        assert!(message.contains(says), "{fault:?}: {message}");
        assert!(took < Duration::from_secs(5), "{fault:?} took {took:?}");
        // By number (the member-list path) fails the same way.
        let by_number = app.by_number(member.number).await;
        assert_eq!(
            by_number.status, status,
            "{fault:?} by number: {}",
            by_number.body
        );
    }
    assert_eq!(cached_count(&app).await, 0, "no spoiled answer was cached");

    app.sim.set_fault(SimFault::None);
    let (got, ..) = lookup(&app, member.user_id).await;
    assert_eq!(got, 200, "a good answer after the faults");
    assert_eq!(cached_count(&app).await, 1, "and it is cached");
    assert_eq!(app.user(member.user_id).await.data()["cache_status"], "hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1059_storm_is_a_503_with_retry_after_and_recovers() {
    let app = faulty_upstream().spawn().await;
    let member = app.sim.data.members[4].clone();
    app.sim.set_reject_ratio(1.0);
    let (status, retry_after, message, took) = lookup(&app, member.user_id).await;
    let throttled = app.sim.stats().throttled;
    println!(
        "[1059 storm] {status} in {took:?}, Retry-After {retry_after:?}, {throttled} throttled calls: {message}"
    );
    assert_eq!(status, 503);
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)));
    assert!(message.contains("throttling"));
    assert_eq!(throttled, 2, "one call and one retry, then a clear answer");
    assert_eq!(cached_count(&app).await, 0);
    app.sim.set_reject_ratio(0.0);
    // The budget slows down after throttles; give it time.
    let started = Instant::now();
    loop {
        let (status, ..) = lookup(&app, member.user_id).await;
        if status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "recovers");
    }
    assert_eq!(cached_count(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502_with_retry_after() {
    // A port nobody listens on: the connection is refused.
    let closed = zsxq_test_support::free_port().expect("a free port");
    let app = faulty_upstream()
        .var("ZSXQ_API_BASE", format!("http://127.0.0.1:{closed}"))
        .spawn()
        .await;
    let member = app.sim.data.members[5].clone();
    let (status, retry_after, message, took) = lookup(&app, member.user_id).await;
    println!("[connection refused] {status} in {took:?}, Retry-After {retry_after:?}: {message}");
    assert_eq!(status, 502);
    assert!(retry_after.is_some());
    assert!(message.contains("cannot reach"), "{message}");
    assert_eq!(cached_count(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_last_good_record() {
    let app = faulty_upstream().spawn().await;
    let first = app.sync(json!({})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let before = cached_count(&app).await;
    assert_eq!(before, app.sim.data.members.len() as u64);
    let member = app.sim.data.members[9].clone();
    let good = app.user(member.user_id).await;

    for fault in [
        SimFault::Garbage,
        SimFault::MissingFields,
        SimFault::Http500,
    ] {
        app.sim.set_fault(fault);
        let refresh = app.sync(json!({"force": true})).await;
        assert!(
            refresh.status >= 502,
            "{fault:?}: a refresh from a broken upstream fails loudly: {}",
            refresh.body
        );
        refresh.assert_error(refresh.status);
        assert_eq!(
            cached_count(&app).await,
            before,
            "{fault:?}: nothing deleted"
        );
        let again = app.user(member.user_id).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.data()["cache_status"], "hit");
        assert_eq!(again.data()["name"], good.data()["name"]);
        assert_eq!(again.data()["number"], member.number);
        assert_eq!(
            again.data()["updated_at"],
            good.data()["updated_at"],
            "{fault:?}: the record was not overwritten"
        );
    }
    // The listing as well.
    let page = app.get("/api/users?page_size=200").await;
    assert_eq!(page.data()["pagination"]["total_count"], before);
}
