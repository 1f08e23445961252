//! Token protection and the web client's headers, over HTTP against the
//! simulator (which checks signature, device and version, and bans a token
//! that keeps calling through a run of 1059s): a 1059 storm pauses the calls
//! and answers every waiter fast, without a ban; a dead token is called at
//! most a few times; a too-old `X-Version` names `ZSXQ_X_VERSION`; every
//! call of every replica carries the one stored device id.

use std::time::{Duration, Instant};

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{Answer, AppBuilder, StoreKind, TestApp};

/// The sim bans the token after this many consecutive 1059s: far more than
/// the run that pauses us, as a real ban threshold presumably is.
const BAN_AFTER: u32 = 20;

/// A lookup's answer with its `Retry-After` and how long it took.
struct Timed {
    answer: Answer,
    retry_after: Option<u64>,
    took: Duration,
}

async fn timed_lookup(app: &TestApp, user_id: u64) -> Timed {
    let started = Instant::now();
    let response = app.get_raw(&format!("/api/users/{user_id}")).await;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let answer = TestApp::answer(response).await;
    Timed {
        answer,
        retry_after,
        took: started.elapsed(),
    }
}

fn message(answer: &Answer) -> String {
    answer.body["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let text = app
        .get_raw("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The service with the real pace (`API_RATE_LIMIT` 50, 200 ms apart, retries
/// from 1 s), at which retrying each lookup through a storm would hold every
/// lookup for a minute.
/// The cool-down is half the default: still longer than the throttle
/// penalty of the budget (30 s at most), as the default is, so the probe
/// after it goes at once.
fn real_pace(kind: StoreKind) -> AppBuilder {
    let mut setup = TestApp::builder()
        .store(kind)
        .members(60)
        .var("API_RATE_LIMIT", "50")
        .var("API_REQUEST_DELAY", "200")
        .var("API_RETRY_BASE_MS", "1000")
        .var("API_MAX_RETRIES", "4")
        .var("UPSTREAM_COOL_DOWN_SECS", "30");
    setup.sim.ban_after = BAN_AFTER;
    setup
}

async fn a_1059_storm_pauses_the_calls_and_answers_every_waiter_fast_without_a_ban(
    kind: StoreKind,
) {
    let app = std::sync::Arc::new(real_pace(kind).spawn().await);
    app.sim.set_reject_ratio(1.0);
    let ids: Vec<u64> = app.sim.data.members[..20]
        .iter()
        .map(|m| m.user_id)
        .collect();
    let lookups = ids.iter().map(|&id| {
        let app = app.clone();
        tokio::spawn(async move { timed_lookup(&app, id).await })
    });
    let answers: Vec<Timed> = futures_util::future::join_all(lookups)
        .await
        .into_iter()
        .map(|r| r.expect("lookup task"))
        .collect();
    let stats = app.sim.stats();
    let longest = answers.iter().map(|t| t.took).max().unwrap();
    let paused = answers
        .iter()
        .filter(|t| message(&t.answer).contains("upstream refusing (1059) since"))
        .count();
    println!(
        "[1059 storm, {kind:?}] 20 concurrent cold lookups: {} upstream calls, longest wait {longest:?}, {paused} answered 'refusing', banned: {}",
        stats.calls, stats.banned
    );
    assert!(stats.calls < 30, "{} upstream calls", stats.calls);
    assert!(!stats.banned, "the token must not be banned");
    assert!(longest < Duration::from_secs(30), "longest {longest:?}");
    for t in &answers {
        assert_eq!(t.answer.status, 503, "{}", t.answer.body);
        t.answer.assert_error(503);
        assert!(t.retry_after.is_some_and(|s| s >= 1), "{}", t.answer.body);
    }
    assert!(
        paused >= 10,
        "most waiters learn the calls are paused: {paused}"
    );
    let text = answers
        .iter()
        .map(|t| message(&t.answer))
        .find(|m| m.contains("refusing"))
        .unwrap();
    assert!(text.contains("1059") && text.contains("暂停"), "{text}");

    let ready = app.get("/readyz").await;
    let access = &ready.data()["upstream_access"];
    assert_eq!(access["state"], "refusing", "{}", ready.body);
    assert!(access["since"].is_string() && access["retry_at"].is_string());
    assert!(
        access["message"]
            .as_str()
            .unwrap()
            .contains("upstream refusing (1059) since")
    );
    assert_eq!(metric(&app, "zsxq_upstream_refusing").await, Some(1.0));
    assert!(metric(&app, "zsxq_upstream_refusing_since_seconds").await > Some(1.7e9));

    // While paused, a new lookup is answered without any call.
    let before = app.sim.stats().calls;
    let quick = timed_lookup(&app, ids[0]).await;
    if quick.answer.status == 503 && message(&quick.answer).contains("refusing") {
        assert_eq!(app.sim.stats().calls, before, "no call during the pause");
    }

    // The storm ends: after the cool-down one probe gets through and the
    // lookups answer again.
    app.sim.set_reject_ratio(0.0);
    let started = Instant::now();
    loop {
        let t = timed_lookup(&app, ids[1]).await;
        if t.answer.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "recovers after the cool-down: {}",
            t.answer.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "[1059 storm, {kind:?}] answering again {:?} after the storm ended",
        started.elapsed()
    );
    assert_eq!(
        app.get("/readyz").await.data()["upstream_access"]["state"],
        "ok"
    );
    assert_eq!(metric(&app, "zsxq_upstream_refusing").await, Some(0.0));
    assert!(!app.sim.stats().banned);
}

async fn an_isolated_1059_is_still_retried_and_answered(kind: StoreKind) {
    let app = TestApp::builder().store(kind).members(20).spawn().await;
    let member = app.sim.data.members[7].clone();
    app.sim.reject_next(1);
    let t = timed_lookup(&app, member.user_id).await;
    assert_eq!(t.answer.status, 200, "{}", t.answer.body);
    assert_eq!(t.answer.data()["number"], member.number);
    assert_eq!(app.sim.stats().calls, 2, "one refused call, one retry");
    assert_eq!(
        app.get("/readyz").await.data()["upstream_access"]["state"],
        "ok"
    );
}

async fn a_dead_token_is_called_at_most_three_times_for_ten_lookups(kind: StoreKind) {
    let app = TestApp::builder()
        .store(kind)
        .members(20)
        .var("ZSXQ_ACCESS_TOKEN", "an-expired-token-value")
        .var("TOKEN_PROBE_SECS", "1")
        .spawn()
        .await;
    let ids: Vec<u64> = app.sim.data.members[..10]
        .iter()
        .map(|m| m.user_id)
        .collect();
    let mut answers = Vec::new();
    for &id in &ids {
        answers.push(timed_lookup(&app, id).await);
    }
    let calls = app.sim.stats().calls;
    println!("[dead token, {kind:?}] 10 lookups made {calls} upstream calls");
    assert!(calls <= 3, "{calls} upstream calls for 10 lookups");
    for t in &answers {
        assert!(t.answer.status >= 500, "{}", t.answer.body);
        t.answer.assert_error(t.answer.status);
        let text = message(&t.answer);
        assert!(
            text.contains("令牌") && text.contains("token") && text.contains("ZSXQ_ACCESS_TOKEN"),
            "every answer says the token is the problem: {text}"
        );
        assert!(!t.answer.body.to_string().contains("an-expired-token-value"));
    }
    assert!(
        answers
            .iter()
            .any(|t| t.answer.status == 503 && t.retry_after.is_some()),
        "the stopped calls say when the token is tried again"
    );
    let ready = app.get("/readyz").await;
    let access = &ready.data()["upstream_access"];
    assert_eq!(access["state"], "token_rejected", "{}", ready.body);
    assert!(
        access["message"]
            .as_str()
            .unwrap()
            .contains("token rejected since")
    );
    let notices = ready.data()["notices"].as_array().unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n["kind"] == "token_rejected" && n["level"] == "error"),
        "the page's notices say so: {notices:?}"
    );
    assert_eq!(
        metric(&app, "zsxq_upstream_token_rejected").await,
        Some(1.0)
    );
    // One probe a TOKEN_PROBE_SECS (here a second), however many lookups.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for &id in &ids[..5] {
        timed_lookup(&app, id).await;
    }
    assert_eq!(app.sim.stats().calls, calls + 1, "one probe");
}

async fn a_too_old_x_version_is_answered_with_what_to_set(kind: StoreKind) {
    let app = TestApp::builder()
        .store(kind)
        .members(20)
        .var("ZSXQ_X_VERSION", "1.0.0")
        .spawn()
        .await;
    let t = timed_lookup(&app, app.sim.data.members[2].user_id).await;
    t.answer.assert_error(502);
    let text = message(&t.answer);
    assert!(
        text.contains("ZSXQ_X_VERSION") && text.contains("版本"),
        "{text}"
    );
    assert_eq!(app.sim.stats().calls, 1, "not retried");
    assert_eq!(
        app.stats().await.data()["cached_users_count"],
        0,
        "nothing cached"
    );
}

async fn every_call_carries_the_one_stored_device_id(kind: StoreKind) {
    // The simulator refuses (1059) a call from any device but the first it
    // saw, and any call without a signature.
    let app = TestApp::builder().store(kind).members(30).spawn().await;
    for m in &app.sim.data.members[..5] {
        let answer = app.user(m.user_id).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(app.sim.stats().throttled, 0, "no call was refused");
    if kind == StoreKind::Redis {
        let mut conn = app.redis_conn().await;
        let stored: String = redis::cmd("GET")
            .arg("zsxq:device:aduid")
            .query_async(&mut conn)
            .await
            .expect("the device id is stored");
        assert!(uuid::Uuid::parse_str(&stored).is_ok(), "{stored}");
        // A cache clear keeps it.
        app.clear().await;
        let kept: String = redis::cmd("GET")
            .arg("zsxq:device:aduid")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(kept, stored);
    }
}

on_both_stores!(
    a_1059_storm_pauses_the_calls_and_answers_every_waiter_fast_without_a_ban,
    an_isolated_1059_is_still_retried_and_answered,
    a_dead_token_is_called_at_most_three_times_for_ten_lookups,
    a_too_old_x_version_is_answered_with_what_to_set,
    every_call_carries_the_one_stored_device_id,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_one_installation_send_one_device_and_share_the_pause() {
    let mut setup = TestApp::builder()
        .store(StoreKind::Redis)
        .members(30)
        .var("UPSTREAM_COOL_DOWN_SECS", "30");
    setup.sim.ban_after = BAN_AFTER;
    let fleet = setup.spawn_fleet(2).await;
    // Both replicas' calls pass the simulator's one-device check.
    for (i, m) in fleet.sim.data.members[..6].iter().enumerate() {
        let answer = fleet.get(i % 2, &format!("/api/users/{}", m.user_id)).await;
        assert_eq!(answer.status, 200, "replica {}: {}", i % 2, answer.body);
    }
    assert_eq!(fleet.sim.stats().throttled, 0);
    // A storm seen through replica 0 pauses replica 1 as well.
    fleet.sim.set_reject_ratio(1.0);
    for m in &fleet.sim.data.members[10..14] {
        let answer = fleet.get(0, &format!("/api/users/{}", m.user_id)).await;
        assert_eq!(answer.status, 503, "{}", answer.body);
    }
    let calls = fleet.sim.stats().calls;
    let other = fleet
        .get(
            1,
            &format!("/api/users/{}", fleet.sim.data.members[20].user_id),
        )
        .await;
    assert_eq!(other.status, 503, "{}", other.body);
    assert!(
        other.body["message"]
            .as_str()
            .unwrap()
            .contains("upstream refusing (1059)"),
        "{}",
        other.body
    );
    assert_eq!(fleet.sim.stats().calls, calls, "replica 1 called nothing");
    assert_eq!(
        fleet.get(1, "/readyz").await.data()["upstream_access"]["state"],
        "refusing"
    );
    assert!(!fleet.sim.stats().banned);
}
