//! Graceful shutdown: SIGTERM lets in-flight requests
//! finish — a slow lookup, a running sync — and a request that outlasts
//! `SHUTDOWN_GRACE_SECS` is cut off with a log line saying so.

use std::time::{Duration, Instant};

use serde_json::json;
use zsxq_sim::SimConfig;
use zsxq_test_support::{Service, TestApp, TestEnv};

const ADMIN: &str = "shutdown-admin-token-012345";

/// A simulator and an embedded store for the binary, logging at `info`.
async fn environment(sim: SimConfig) -> TestEnv {
    TestApp::builder()
        .sim(sim)
        .admin_token(ADMIN)
        .var("RUST_LOG", "info")
        .environment()
        .await
        .expect("environment")
}

/// Waits until the simulator has been asked for a member: the lookup is in
/// flight inside the service, so a SIGTERM after this finds it there (a
/// client that is slow to connect on a loaded machine would otherwise meet
/// a closed listener).
async fn upstream_has_the_call(sim: &zsxq_sim::SimHandle) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.stats().by_kind.member_summary == 0 {
        assert!(
            Instant::now() < deadline,
            "the lookup never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn start(env: &TestEnv, extra: &[(&str, String)]) -> Service {
    Service::start(env!("CARGO_BIN_EXE_zsxq-cache"), env, extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_in_flight_lookup_finish() {
    let env = environment(SimConfig::for_tests()).await;
    let sim = &env.sim;
    let mut service = start(&env, &[]).await;
    sim.set_latency_ms(1_500);
    let member = sim.data.members[2].clone();
    let url = service.url(&format!("/api/users/{}", member.user_id));
    let started = Instant::now();
    let request = tokio::spawn(async move { reqwest::get(url).await });
    upstream_has_the_call(sim).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    service.signal("TERM");
    let answer = request.await.expect("task").expect("the answer arrives");
    let answered = started.elapsed();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["data"]["number"], member.number);
    let status = service
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits after finishing");
    let exited = started.elapsed();
    println!(
        "[SIGTERM, slow lookup] answered 200 after {answered:?} (SIGTERM at 300 ms, upstream 1.5 s); exited {status} after {exited:?}"
    );
    assert!(status.success(), "{}", service.logs());
    assert!(service.logs().contains("finishing in-flight requests"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_sync_still_answers_the_sync_with_its_counts() {
    // Listing refused: the sync reads rankings and fetches members one by
    // one, slowly, so SIGTERM lands in the middle of it.
    let env = environment(SimConfig {
        members: 120,
        no_member_list: true,
        ..SimConfig::for_tests()
    })
    .await;
    let sim = &env.sim;
    sim.set_latency_ms(20);
    let mut service = start(&env, &[]).await;
    let url = service.url("/api/users/sync");
    let started = Instant::now();
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(ADMIN)
            .json(&json!({"concurrency": 2}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let calls_at_term = sim.stats().calls;
    service.signal("TERM");
    let answer = request.await.expect("task").expect("the sync answers");
    let answered = started.elapsed();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.expect("json");
    let report = &body["data"];
    let status = service
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits after the sync");
    println!(
        "[SIGTERM, sync] {calls_at_term} upstream calls done at SIGTERM (700 ms); sync answered after {answered:?}: \
         sync_count={} success={} failed={} skipped={}; exited {status}",
        report["sync_count"],
        report["success_count"],
        report["failed_count"],
        report["skipped_count"]
    );
    assert!(status.success());
    let synced =
        report["success_count"].as_u64().unwrap() + report["failed_count"].as_u64().unwrap();
    assert_eq!(
        synced,
        report["sync_count"].as_u64().unwrap(),
        "the whole sync ran"
    );
    assert!(report["success_count"].as_u64().unwrap() > 0);
    assert!(service.logs().contains("sync finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlasts_the_grace_is_cut_off_and_logged() {
    let env = environment(SimConfig::for_tests()).await;
    let sim = &env.sim;
    let mut service = start(&env, &[("SHUTDOWN_GRACE_SECS", "1".into())]).await;
    // Far longer than the grace, so exiting early can only be the grace.
    sim.set_latency_ms(30_000);
    let url = service.url(&format!("/api/users/{}", sim.data.members[0].user_id));
    let request = tokio::spawn(async move { reqwest::get(url).await });
    upstream_has_the_call(sim).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let termed = Instant::now();
    service.signal("TERM");
    let status = service
        .wait_exit(Duration::from_secs(25))
        .await
        .expect("exits after the grace");
    let took = termed.elapsed();
    let cut = request.await.expect("task");
    let logs = service.logs();
    println!(
        "[SIGTERM, grace 1 s] exited {status} {took:?} after SIGTERM; client saw {:?}",
        cut.as_ref().map(|r| r.status())
    );
    assert!(status.success());
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(cut.is_err(), "the request was cut off");
    assert!(logs.contains("shutdown grace elapsed"), "{logs}");
    assert!(logs.contains("waiting for in-flight requests"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_sync_cut_off_by_shutdown_reports_what_it_completed() {
    let env = environment(SimConfig {
        no_member_list: true,
        ..SimConfig::for_tests()
    })
    .await;
    let sim = &env.sim;
    let mut service = start(
        &env,
        &[
            ("SHUTDOWN_GRACE_SECS", "1".into()),
            ("API_CONCURRENCY", "1".into()),
        ],
    )
    .await;
    // One member at a time, slowly: the sync cannot finish within the grace.
    sim.set_latency_ms(60);
    let started: serde_json::Value = reqwest::Client::new()
        .post(service.url("/api/users/sync"))
        .bearer_auth(ADMIN)
        .json(&json!({"async": true, "concurrency": 1}))
        .send()
        .await
        .expect("sync request")
        .json()
        .await
        .expect("json");
    assert_eq!(started["code"], 202, "{started}");
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    service.signal("TERM");
    let status = service
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits after the grace");
    let logs = service.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("shutdown interrupted a sync"))
        .unwrap_or_else(|| panic!("no report of the interrupted sync in:\n{logs}"));
    println!("[SIGTERM, async sync] exited {status}; {line}");
    assert!(status.success());
    let done: u64 = line
        .split("done=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("done=N in the line");
    assert!(done > 0, "some members were cached before the cut: {line}");
    assert!(line.contains("total="), "{line}");
}
