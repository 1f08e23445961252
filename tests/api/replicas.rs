//! Several replicas on one Redis: near caches agree across
//! replicas, and a cold member costs one upstream call however many
//! replicas are asked for it at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zsxq_cache::clock::SystemClock;
use zsxq_cache::domain::{CachedMember, Member};
use zsxq_cache::store::redis::RedisStore;
use zsxq_cache::store::{LeaseState, Store};

use zsxq_test_support::{ADMIN_TOKEN, Fault, Fleet, StoreKind, TestApp};

/// How long another replica may keep serving what changed. Pub/sub
/// delivers in well under a millisecond here; the bound is generous for a
/// loaded CI machine, and far below `NEAR_CACHE_TTL` (60 s), which is what
/// a replica would serve stale for without invalidation.
const CONVERGE_WITHIN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_elsewhere_is_dropped_from_every_replicas_near_cache() {
    let fleet = TestApp::builder()
        .store(StoreKind::Redis)
        .members(20)
        .spawn_fleet(2)
        .await;
    a_changed_record_leaves_every_near_cache(fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_too_a_changed_record_leaves_every_near_cache() {
    let fleet = TestApp::builder()
        .store(StoreKind::Cluster)
        .members(20)
        .spawn_fleet(2)
        .await;
    a_changed_record_leaves_every_near_cache(fleet).await;
}

async fn a_changed_record_leaves_every_near_cache(fleet: Fleet) {
    fleet.wait_until_listening().await;
    let m = &fleet.sim.data.members[3];
    let path = format!("/api/users/{}", m.user_id);
    // Replica 0 caches the member in its near cache; replica 1 reads it too.
    assert_eq!(fleet.get(0, &path).await.data()["cache_status"], "miss");
    assert_eq!(fleet.get(0, &path).await.data()["cache_status"], "hit");
    assert_eq!(fleet.get(1, &path).await.data()["name"], m.name.as_str());

    // Another process rewrites the record with new content (what a forced
    // sync does after the member renamed themselves upstream).
    let writer = RedisStore::connect_target(&fleet.store_target(), Arc::new(SystemClock)).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let renamed = CachedMember {
        member: Member {
            name: "改名之后 ✨".into(),
            ..m.to_member().unwrap()
        },
        cached_at: now,
        updated_at: now,
    };
    writer
        .put_members(&[renamed], Duration::from_secs(3600))
        .await
        .unwrap();

    for replica in 0..2 {
        let started = Instant::now();
        loop {
            let answer = fleet.get(replica, &path).await;
            if answer.data()["name"] == "改名之后 ✨" {
                break;
            }
            assert!(
                started.elapsed() < CONVERGE_WITHIN,
                "replica {replica} still serves {}",
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_on_one_replica_empties_the_others_near_caches() {
    let fleet = TestApp::builder()
        .store(StoreKind::Redis)
        .members(20)
        .spawn_fleet(2)
        .await;
    a_clear_empties_every_near_cache(fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_too_a_clear_empties_every_near_cache() {
    let fleet = TestApp::builder()
        .store(StoreKind::Cluster)
        .members(20)
        .spawn_fleet(2)
        .await;
    a_clear_empties_every_near_cache(fleet).await;
}

async fn a_clear_empties_every_near_cache(fleet: Fleet) {
    fleet.wait_until_listening().await;
    let m = &fleet.sim.data.members[5];
    let path = format!("/api/users/{}", m.user_id);
    fleet.get(0, &path).await;
    assert_eq!(fleet.get(0, &path).await.data()["cache_status"], "hit");

    let cleared = fleet
        .http
        .delete(fleet.url(1, "/api/users/cache"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 200);

    // Replica 0 no longer has it: its next answer is a miss (fetched again).
    let started = Instant::now();
    loop {
        let answer = fleet.get(0, &path).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        if answer.data()["cache_status"] == "miss" {
            break;
        }
        assert!(
            started.elapsed() < CONVERGE_WITHIN,
            "replica 0 still serves the cleared member from memory"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_cold_requests_over_three_replicas_cost_one_upstream_call() {
    // A thousand requests at once on two cores, in a debug build, beside
    // the rest of this suite's tests: writes can wait past their 250 ms
    // bound here, and three such timeouts open the breaker, after which
    // replicas cannot coordinate through the store (the breaker's documented
    // trade-off). A generous STORE_TIMEOUT_MS keeps this test about leases;
    // `tests/scale/fleet.rs` runs the same stampede on the defaults.
    let mut setup = TestApp::builder()
        .store(StoreKind::Redis)
        .members(50)
        .var("STORE_TIMEOUT_MS", "2000");
    // Slow enough that every request arrives while the fetch is in flight.
    setup.sim.latency_ms = 300;
    let fleet = setup.spawn_fleet(3).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    for m in [&fleet.sim.data.members[7], &fleet.sim.data.members[8]] {
        fleet.sim.reset_stats();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1000 {
            let url = fleet.url(i % 3, &format!("/api/users/{}", m.user_id));
            let http = http.clone();
            tasks.spawn(async move {
                let resp = http.get(url).send().await.expect("request");
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.expect("json");
                (status, body)
            });
        }
        let mut answered = 0;
        while let Some(joined) = tasks.join_next().await {
            let (status, body) = joined.unwrap();
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["data"]["user_id"], m.user_id.to_string());
            assert_eq!(body["data"]["number"], m.number);
            answered += 1;
        }
        assert_eq!(answered, 1000);
        assert_eq!(
            fleet.sim.stats().by_kind.member_summary,
            1,
            "one upstream call for member {}",
            m.user_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_member_asked_on_every_replica_at_once_costs_one_call() {
    let mut setup = TestApp::builder().store(StoreKind::Redis).members(50);
    setup.sim.latency_ms = 200;
    let fleet = setup.spawn_fleet(3).await;
    let Some(gone) = fleet.sim.data.departed.first() else {
        return;
    };
    fleet.sim.reset_stats();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let url = fleet.url(i % 3, &format!("/api/users/{}", gone.user_id));
        let http = fleet.http.clone();
        tasks.spawn(async move { http.get(url).send().await.expect("request").status() });
    }
    while let Some(joined) = tasks.join_next().await {
        assert!(joined.unwrap().is_client_error());
    }
    assert_eq!(fleet.sim.stats().by_kind.member_summary, 1);
}

/// Another replica holds a cold member's lease and writes the record a
/// moment later, while this replica's lease calls answer too late (a busy
/// store: the call lands, its answer misses the wait). This replica must
/// ask again and find the record, not give up on the first timeout and
/// spend an upstream call of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_call_that_times_out_is_asked_again_instead_of_fetching_twice() {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .members(20)
        .faulty_store()
        .spawn()
        .await;
    let m = app.sim.data.members[5].clone();
    let member = m.to_member().unwrap();
    let other = RedisStore::connect(
        &app.redis.as_ref().expect("redis").url(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let lease = other
        .try_lease(member.user_id, "the-other-replica", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(lease, LeaseState::Granted);
    app.store_fault
        .as_ref()
        .expect("faulty store")
        .set(Fault::SlowWrites);
    let before = app.sim.stats().by_kind.member_summary;
    let writer = tokio::spawn(async move {
        // After this replica's first lease call has given up waiting
        // (SLOW_OP_TIMEOUT, 250 ms), before its retries run out.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = chrono::Utc::now().timestamp_millis();
        let record = CachedMember {
            member,
            cached_at: now,
            updated_at: now,
        };
        other
            .put_members(&[record], Duration::from_secs(3_600))
            .await
            .unwrap();
    });
    let a = app.user(m.user_id).await;
    writer.await.unwrap();
    app.store_fault.as_ref().unwrap().set(Fault::None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.data()["number"], m.number, "{}", a.body);
    assert_eq!(
        app.sim.stats().by_kind.member_summary - before,
        0,
        "the other replica's fetch was repeated here"
    );
}
