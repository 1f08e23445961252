//! The budget belongs to people who wait.

use std::time::{Duration, Instant};

use crate::{client_from, rss_kib};
use zsxq_test_support::{AppBuilder, TestApp};

/// Ids no member has: each costs one summary call if it reaches the
/// upstream.
fn random_ids(n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| 900_000_000_000 + rand_u32() as u64)
        .collect()
}

fn rand_u32() -> u32 {
    // Distinct enough for a test; no extra dependency.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    t.subsec_nanos() ^ NEXT.fetch_add(7919, std::sync::atomic::Ordering::Relaxed)
}

/// The service at the real upstream's pace: 50 calls a minute, 200 ms
/// apart at least, the simulator answering in ~200 ms.
fn at_real_pace() -> AppBuilder {
    let mut setup = TestApp::builder()
        .members(50)
        .var("API_RATE_LIMIT", "50")
        .var("API_REQUEST_DELAY", "200");
    setup.sim.latency_ms = 200;
    setup
}

/// Fires `ids` at once, each given up after 0.3 s; how many got any answer.
async fn abandon_all(app: &TestApp, ids: &[u64]) -> usize {
    let client = client_from([127, 0, 0, 1], Duration::from_millis(300));
    let requests = ids.iter().map(|id| {
        let (client, url) = (client.clone(), app.url(&format!("/api/users/{id}")));
        async move { client.get(url).send().await.is_ok() }
    });
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .filter(|answered| *answered)
        .count()
}

/// A counter from `/metrics`.
async fn counter(app: &TestApp, name: &str) -> u64 {
    let text = app.get_raw("/metrics").await.text().await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

async fn operator_cold_lookup(app: &TestApp) -> Duration {
    let member = &app.sim.data.members[0];
    let started = Instant::now();
    let a = app.user(member.user_id).await;
    let took = started.elapsed();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.data()["number"], member.number);
    assert_eq!(a.data()["cache_status"], "miss");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_abandoned_random_id_requests_leave_the_budget_to_the_operator() {
    for (label, setup) in [
        ("default queue", at_real_pace()),
        // Every abandoned request admitted: giving up queued fetches alone
        // must free the budget.
        (
            "queue of 200",
            at_real_pace()
                .var("INTERACTIVE_QUEUE_MAX", "200")
                .var("INTERACTIVE_QUEUE_PER_CLIENT", "200"),
        ),
    ] {
        let app = setup.spawn().await;
        let rss_before = rss_kib();
        let answered = abandon_all(&app, &random_ids(100)).await;
        let calls_by_abandoned = app.sim.stats().by_kind.member_summary;
        let took = operator_cold_lookup(&app).await;
        // Nothing queued earlier calls later either.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let calls_after = app.sim.stats().by_kind.member_summary;
        let ready = app.get("/readyz").await;
        let given_up = counter(&app, "zsxq_upstream_given_up_total").await;
        let refused = counter(&app, "zsxq_upstream_queue_refused_total").await;
        println!(
            "[abandoned, {label}] 100 requests for random ids abandoned after 0.3 s ({answered} answered in time; \
             {refused} refused by the queue, {given_up} given up in it); they cost {calls_by_abandoned} upstream calls; the operator's cold lookup \
             answered in {took:?}; {} summary calls in all 1.5 s later; queue now {}; RSS {} -> {} KiB",
            calls_after,
            ready.data()["interactive_queue"],
            rss_before,
            rss_kib()
        );
        assert!(
            took < Duration::from_secs(5),
            "{label}: the operator waited {took:?}"
        );
        assert!(given_up + refused >= 90, "{given_up} + {refused}");
        assert!(
            calls_by_abandoned <= 2,
            "{label}: {calls_by_abandoned} calls for abandoned requests"
        );
        assert_eq!(
            calls_after,
            calls_by_abandoned + 1,
            "{label}: only the operator's call came after"
        );
        assert_eq!(ready.data()["interactive_queue"]["waiting"], 0);
        assert_eq!(ready.data()["interactive_queue"]["clients"], 0);
    }
}

/// The service at the real pace with one upstream slot every 30 s
/// (`API_RATE_LIMIT=2`), `extra` on top, and that slot already spent on a
/// member: the next cold lookups wait in the interactive queue.
async fn with_the_slot_spent(extra: &[(&str, &str)]) -> TestApp {
    let mut setup = at_real_pace().var("API_RATE_LIMIT", "2");
    for (name, value) in extra {
        setup = setup.var(*name, *value);
    }
    let app = setup.spawn().await;
    let first = &app.sim.data.members[0];
    assert_eq!(app.user(first.user_id).await.status, 200);
    app
}

/// A cold lookup of `id` from `client`, left waiting in the background.
fn lookup_in_background(
    app: &TestApp,
    client: &reqwest::Client,
    id: u64,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let (client, url) = (client.clone(), app.url(&format!("/api/users/{id}")));
    tokio::spawn(async move { client.get(url).send().await })
}

/// The interactive queue as `/readyz` reports it.
async fn queue(app: &TestApp) -> serde_json::Value {
    app.get("/readyz").await.data()["interactive_queue"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_share_a_client_is_refused_at_once_and_others_still_get_in() {
    // The slot of this half-minute goes to a member; then two lookups from
    // 127.0.0.1 keep waiting (one slot every 30 s).
    let app = with_the_slot_spent(&[
        ("INTERACTIVE_QUEUE_MAX", "4"),
        ("INTERACTIVE_QUEUE_PER_CLIENT", "2"),
    ])
    .await;
    let patient = client_from([127, 0, 0, 1], Duration::from_secs(20));
    let mut waiting = Vec::new();
    for id in random_ids(2) {
        waiting.push(lookup_in_background(&app, &patient, id));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let third = TestApp::answer(
        patient
            .get(app.url(&format!("/api/users/{}", random_ids(1)[0])))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    let refused_in = started.elapsed();
    third.assert_error(503);
    let message = third.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("this client address"), "{message}");

    // Another address has its own share: queued, not refused.
    let other = client_from([127, 0, 0, 2], Duration::from_secs(20));
    waiting.push(lookup_in_background(&app, &other, random_ids(1)[0]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = queue(&app).await;
    assert_eq!(queued["waiting"], 3, "{queued}");
    assert_eq!(queued["clients"], 2, "{queued}");
    println!(
        "[queue share] a third lookup from one address refused in {refused_in:?}: {message}; readyz queue {queued}"
    );
    assert!(refused_in < Duration::from_secs(2), "{refused_in:?}");
    let retry_after: u64 = patient
        .get(app.url(&format!("/api/users/{}", random_ids(1)[0])))
        .send()
        .await
        .expect("answer")
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=120).contains(&retry_after), "{retry_after}");
    for w in waiting {
        w.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_changes_nothing() {
    let app = with_the_slot_spent(&[
        ("INTERACTIVE_QUEUE_MAX", "3"),
        ("INTERACTIVE_QUEUE_PER_CLIENT", "1"),
    ])
    .await;
    let mut waiting = Vec::new();
    for (i, id) in random_ids(3).into_iter().enumerate() {
        let client = client_from([127, 0, 0, 10 + i as u8], Duration::from_secs(20));
        waiting.push(lookup_in_background(&app, &client, id));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls_before = app.sim.stats().calls;
    let fourth = client_from([127, 0, 0, 20], Duration::from_secs(5));
    let resp = fourth
        .get(app.url(&format!("/api/users/{}", random_ids(1)[0])))
        .send()
        .await
        .expect("answer");
    assert!(resp.headers().contains_key("retry-after"));
    let answer = TestApp::answer(resp).await;
    answer.assert_error(503);
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("queue for the Zsxq API is full"),
        "{message}"
    );
    assert_eq!(app.sim.stats().calls, calls_before, "nothing was asked");
    println!("[queue full] {message}");
    for w in waiting {
        w.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_a_504_and_its_queued_fetch_never_calls() {
    let app = at_real_pace()
        .var("REQUEST_DEADLINE_SECS", "1")
        .var("API_RATE_LIMIT", "1")
        .spawn()
        .await;
    let members = app.sim.data.members.clone();
    // The one slot of this minute.
    assert_eq!(app.user(members[0].user_id).await.status, 200);
    let started = Instant::now();
    let late = app.user(members[1].user_id).await;
    let took = started.elapsed();
    late.assert_error(504);
    let message = late.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("REQUEST_DEADLINE_SECS"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = app.sim.stats().by_kind.member_summary;
    println!("[deadline] answered 504 after {took:?}: {message}; summary calls {calls}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(calls, 1, "the fetch nobody waited for was given up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_filled_the_queue_gives_a_place_to_the_next_client() {
    let app = with_the_slot_spent(&[("INTERACTIVE_QUEUE_MAX", "4")]).await;
    // Alone, one address may fill the whole queue.
    let hog = client_from([127, 0, 0, 1], Duration::from_secs(20));
    let mut hogging = Vec::new();
    for id in random_ids(4) {
        let (client, url) = (hog.clone(), app.url(&format!("/api/users/{id}")));
        hogging.push(tokio::spawn(async move {
            let started = Instant::now();
            let resp = client.get(url).send().await;
            (resp.map(|r| r.status().as_u16()), started.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = queue(&app).await;
    assert_eq!(queued["waiting"], 4, "{queued}");

    // A second address is under its fair share (4 / 2): it gets a place,
    // and the hog's newest lookup is refused instead.
    let operator = client_from([127, 0, 0, 2], Duration::from_secs(20));
    let waiting = lookup_in_background(&app, &operator, random_ids(1)[0]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = queue(&app).await;
    let newest = hogging.pop().expect("four").await.expect("join");
    println!("[fair share] the hog's newest lookup: {newest:?}; queue {queued}");
    assert_eq!(newest.0.ok(), Some(503), "refused to make room");
    assert!(newest.1 < Duration::from_secs(5), "{:?}", newest.1);
    assert_eq!(queued["waiting"], 4);
    assert_eq!(queued["clients"], 2);
    for h in hogging {
        h.abort();
    }
    waiting.abort();
}
