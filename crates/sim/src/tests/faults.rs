//! Fault drills: random and rate-limit 1059s, latency, and the answers a
//! fault spoils while the call is still counted.

use super::*;

#[tokio::test]
async fn a_reject_ratio_of_one_answers_every_call_with_1059_and_counts_it_throttled() {
    let sim = start(SimConfig {
        reject_ratio: 1.0,
        ..SimConfig::for_tests()
    })
    .await;
    let uid = sim.data.members[0].user_id;
    for _ in 0..10 {
        assert_fails_with(&get(&sim, &format!("/members/{uid}/summary")).await, 1059);
    }
    let stats = sim_stats(&sim).await;
    assert_eq!(stats["calls"], 10);
    assert_eq!(stats["throttled"], 10);

    sim.set_reject_ratio(0.0);
    assert_eq!(
        get(&sim, &format!("/members/{uid}/summary")).await["succeeded"],
        true
    );
}

#[tokio::test]
async fn a_rate_limit_of_five_per_minute_answers_the_sixth_call_with_1059() {
    let sim = start(SimConfig {
        rate_per_min: 5,
        ..SimConfig::for_tests()
    })
    .await;
    for call in 1..=5 {
        assert_eq!(
            get(&sim, "/checkins?scope=over").await["succeeded"],
            true,
            "call {call}"
        );
    }
    assert_fails_with(&get(&sim, "/checkins?scope=over").await, 1059);
    assert_eq!(sim.stats().throttled, 1);
    assert_eq!(sim.stats().calls, 6);

    sim.set_rate_per_min(0);
    assert_eq!(get(&sim, "/checkins?scope=over").await["succeeded"], true);
}

#[tokio::test]
async fn latency_delays_every_call() {
    let sim = start(SimConfig::for_tests()).await;
    sim.set_latency_ms(150);
    let started = Instant::now();
    get(&sim, "/checkins?scope=ongoing").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}

/// Status and raw body of a GET with the token.
async fn raw_get(sim: &SimHandle, rest: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(group_path(sim, rest))
        .header("Authorization", TOKEN)
        .send()
        .await
        .expect("simulator answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

#[tokio::test]
async fn each_fault_spoils_v2_answers_and_is_still_counted() {
    let sim = start(SimConfig::for_tests()).await;
    let uid = sim.data.members[0].user_id;
    let summary = format!("/members/{uid}/summary");

    sim.set_fault(SimFault::Garbage);
    let (status, body) = raw_get(&sim, &summary).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("<html>"), "{body}");

    sim.set_fault(SimFault::Truncated);
    let (status, body) = raw_get(&sim, &summary).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("{\"") && serde_json::from_str::<Value>(&body).is_err());

    sim.set_fault(SimFault::MissingFields);
    let answer = get(&sim, &summary).await;
    assert_eq!(answer["succeeded"], true);
    assert!(answer["resp_data"]["member"]["number"].is_u64());
    assert!(answer["resp_data"]["member"].get("user_id").is_none());
    let list = get(&sim, "/members?count=3").await;
    assert!(
        list["resp_data"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.get("user_id").is_none())
    );
    let camps = get(&sim, "/checkins?scope=over&count=5").await;
    assert!(camps["resp_data"].get("checkins").is_none());

    sim.set_fault(SimFault::Http500);
    let (status, _) = raw_get(&sim, &summary).await;
    assert_eq!(status, 500);

    sim.set_fault(SimFault::Slow);
    sim.set_slow_ms(150);
    let started = Instant::now();
    let answer = get(&sim, &summary).await;
    assert_eq!(answer["succeeded"], true);
    assert!(started.elapsed() >= Duration::from_millis(150));

    sim.set_fault(SimFault::None);
    assert_eq!(get(&sim, &summary).await["succeeded"], true);
    assert_eq!(sim.stats().calls, 8, "every spoiled call was counted");
}

#[tokio::test]
async fn faults_leave_the_control_endpoints_alone_and_are_set_over_http() {
    let sim = start(SimConfig::for_tests()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/__sim/config", sim.base_url);
    let knobs = send(
        http.post(&url)
            .json(&json!({"fault": "http_500", "slow_ms": 7})),
    )
    .await;
    assert_eq!(knobs["fault"], "http_500");
    assert_eq!(knobs["slow_ms"], 7);
    assert_eq!(sim.knobs().fault, SimFault::Http500);
    // /__sim/* still answers normally.
    assert_eq!(sim_stats(&sim).await["calls"], 0);
    let bad = http
        .post(&url)
        .json(&json!({"fault": "explode"}))
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error());
    assert_eq!(sim.knobs().fault, SimFault::Http500, "unchanged");
    send(http.post(&url).json(&json!({"fault": "none"}))).await;
    let uid = sim.data.members[1].user_id;
    assert_eq!(
        get(&sim, &format!("/members/{uid}")).await["succeeded"],
        true
    );
}
