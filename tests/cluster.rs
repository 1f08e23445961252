//! The Redis store and the service on a real Redis Cluster:
//! three masters and three replicas built by `zsxq_test_support::RedisCluster`, and a
//! master failing over while readers keep asking.
//!
//! What must hold: no read ever answers a wrong record or a wrong number
//! (errors are allowed while the cluster elects a new master — the service
//! answers those from the upstream), and reads recover by themselves, with
//! no restart, once the cluster is whole again. The contract suite in
//! `tests/store_contract/` separately runs every storage scenario on a cluster
//! and on a single server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zsxq_cache::clock::SystemClock;
use zsxq_cache::domain::{CachedMember, Member, MemberNumber, UserId};
use zsxq_cache::redis_link::RedisTarget;
use zsxq_cache::store::redis::RedisStore;
use zsxq_cache::store::{PageRequest, SortBy, SortOrder, Store, StoreError};
use zsxq_test_support::RedisCluster;
use zsxq_test_support::TestApp;

const TTL: Duration = Duration::from_secs(3_600);

fn member(i: u64) -> CachedMember {
    let id = 100_000_000_000 + i * 7_919;
    CachedMember {
        member: Member {
            user_id: UserId::new(id).unwrap(),
            number: MemberNumber::new(i),
            name: format!("成员{i} 🎯"),
            unique_id: format!("u{i}"),
            avatar_url: format!(
                "https://images.zsxq.com/F{id:016x}?imageMogr2/auto-orient/thumbnail/150x/format/jpg"
            ),
            join_time: format!("2024-09-04T22:{:02}:{:02}.287+0800", i / 60 % 60, i % 60),
            status: "joined".into(),
            expired_time: "2026-09-04T22:39:05.287+0800".into(),
            introduction: "高级前端开发工程师".into(),
        },
        cached_at: 1_730_080_000_000,
        updated_at: 1_730_080_000_000,
    }
}

async fn start_cluster() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap()
        .expect("a local redis cluster starts (redis-server and redis-cli on PATH)")
}

fn store_on(cluster: &RedisCluster, read_from_replicas: bool) -> RedisStore {
    let target = RedisTarget::Cluster {
        nodes: cluster.urls(),
        read_from_replicas,
    };
    RedisStore::connect_target(&target, Arc::new(SystemClock)).expect("store")
}

/// What the readers saw while the cluster failed over.
#[derive(Default)]
struct Tally {
    right: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
}

/// Reads members by id, by number and by page until `stop`, checking every
/// answer against what was written.
async fn read_until(
    store: Arc<RedisStore>,
    members: Arc<Vec<CachedMember>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let m = &members[i % members.len()];
        i += 7;
        match store.get_members(&[m.member.user_id]).await {
            Ok(found) if found == vec![Some(m.clone())] => {
                tally.right.fetch_add(1, Ordering::Relaxed)
            }
            Ok(found) => {
                eprintln!("wrong record for {}: {found:?}", m.member.user_id);
                tally.wrong.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => tally.errors.fetch_add(1, Ordering::Relaxed),
        };
        match store.user_id_by_number(m.member.number.unwrap()).await {
            Ok(Some(id)) if id == m.member.user_id => tally.right.fetch_add(1, Ordering::Relaxed),
            Ok(other) => {
                eprintln!("number {:?} resolved to {other:?}", m.member.number);
                tally.wrong.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => tally.errors.fetch_add(1, Ordering::Relaxed),
        };
        let offset = (i % members.len()) as u64;
        match store
            .page(PageRequest {
                sort: SortBy::Number,
                order: SortOrder::Asc,
                offset,
                limit: 5,
            })
            .await
        {
            Ok(page) => {
                let expected: Vec<&CachedMember> =
                    members.iter().skip(offset as usize).take(5).collect();
                let got: Vec<&CachedMember> = page.members.iter().collect();
                if got == expected && page.total == members.len() as u64 {
                    tally.right.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!(
                        "page at {offset}: total {} ids {:?}",
                        page.total,
                        page.members
                            .iter()
                            .map(|m| m.member.number.unwrap().get())
                            .collect::<Vec<_>>()
                    );
                    tally.wrong.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until every kind of read succeeds again, returning how long it
/// took; fails the test after `limit`.
async fn time_to_recover(
    store: &RedisStore,
    members: &[CachedMember],
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let all_ok = {
            let ids: Vec<UserId> = members.iter().map(|m| m.member.user_id).collect();
            let by_id = store.get_members(&ids).await;
            let by_page = store
                .page(PageRequest {
                    sort: SortBy::JoinTime,
                    order: SortOrder::Desc,
                    offset: 0,
                    limit: 10,
                })
                .await;
            matches!(by_id, Ok(ref found) if found.iter().all(Option::is_some)) && by_page.is_ok()
        };
        if all_ok {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "reads did not recover within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_reads_stay_right_while_a_master_is_killed_and_recover_without_restart() {
    let mut cluster = start_cluster().await;
    let store = Arc::new(store_on(&cluster, false));
    let members: Arc<Vec<CachedMember>> = Arc::new((1..=300).map(member).collect());
    store.put_members(&members, TTL).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 300);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let readers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(read_until(
                store.clone(),
                members.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The master holding the member keys of the first slot range dies.
    let victim = cluster.masters()[0];
    let promoted =
        tokio::task::spawn_blocking(move || cluster.kill_master(victim).map(|p| (p, cluster)))
            .await
            .unwrap();
    let (promoted, cluster) = promoted.expect("the replica takes over");
    assert_ne!(promoted, victim);
    let recovered_in = time_to_recover(&store, &members, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }

    let (right, errors, wrong) = (
        tally.right.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
        tally.wrong.load(Ordering::Relaxed),
    );
    println!(
        "failover: {right} right, {errors} errors, {wrong} wrong; reads whole again {recovered_in:?} after the promotion"
    );
    assert_eq!(wrong, 0, "no read may answer a wrong record");
    assert!(right > 100, "readers made progress: {right}");
    // Nothing was lost: the replica had every write before the kill.
    assert_eq!(store.count().await.unwrap(), 300);
    let everyone = store
        .get_members(&members.iter().map(|m| m.member.user_id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(
        everyone
            .iter()
            .zip(members.iter())
            .all(|(got, m)| got.as_ref() == Some(m))
    );
    // Memory is summed over the masters (the killed one no longer counts).
    let memory = store.memory_usage().await.unwrap();
    assert!(
        memory.ends_with('M') || memory.ends_with('K'),
        "used memory as Redis prints it: {memory}"
    );
    // Writes work again too.
    let newcomer = member(301);
    store
        .put_members(std::slice::from_ref(&newcomer), TTL)
        .await
        .unwrap();
    assert_eq!(
        store
            .user_id_by_number(newcomer.member.number.unwrap())
            .await
            .unwrap(),
        Some(newcomer.member.user_id)
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_answer_the_same_records_and_survive_a_manual_failover() {
    let mut cluster = start_cluster().await;
    let writer = store_on(&cluster, false);
    let reader = Arc::new(store_on(&cluster, true));
    let members: Arc<Vec<CachedMember>> = Arc::new((1..=120).map(member).collect());
    writer.put_members(&members, TTL).await.unwrap();
    // Replication is asynchronous: give the replicas a moment, then every
    // replica read must match what the masters hold.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<UserId> = members.iter().map(|m| m.member.user_id).collect();
    let from_replicas = reader.get_members(&ids).await.unwrap();
    assert!(
        from_replicas
            .iter()
            .zip(members.iter())
            .all(|(got, m)| got.as_ref() == Some(m))
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let readers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(read_until(
                reader.clone(),
                members.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();
    let master = cluster.masters()[1];
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.failover(master).expect("manual failover");
        cluster
    })
    .await
    .unwrap();
    time_to_recover(&reader, &members, Duration::from_secs(20)).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(tally.wrong.load(Ordering::Relaxed), 0);
    assert!(tally.right.load(Ordering::Relaxed) > 50);
    drop(cluster);
}

/// The cluster client follows a MOVED for a single command, but a pipeline
/// that meets one only returns the error (seen here without the store's
/// redial, about one run in ten on a loaded machine): pipelined reads to a
/// failed-over slot then failed until some single command happened to
/// refresh the slot map. The store dials again and replays, so no read after
/// the failover may fail with a redirection. A loaded machine may still time
/// a read out, which is no redirection and is retried here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_reads_after_a_manual_failover_never_fail_on_a_stale_slot_map() {
    let mut cluster = start_cluster().await;
    let store = store_on(&cluster, false);
    let members: Vec<CachedMember> = (1..=60).map(member).collect();
    store.put_members(&members, TTL).await.unwrap();
    let ids: Vec<UserId> = members.iter().map(|m| m.member.user_id).collect();
    // The connection and its slot map are made now, before the failover.
    let before = store.get_members(&ids).await.unwrap();
    assert!(before.iter().all(Option::is_some));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let master = cluster.masters()[0];
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.failover(master).expect("manual failover");
        cluster
    })
    .await
    .unwrap();
    let expected: Vec<Option<CachedMember>> = members.into_iter().map(Some).collect();
    let mut timeouts = 0;
    loop {
        match store.get_members(&ids).await {
            Ok(after) => {
                assert_eq!(after, expected);
                break;
            }
            Err(StoreError::Redis(e)) if e.is_timeout() && timeouts < 5 => timeouts += 1,
            Err(e) => panic!("a read after the failover failed: {e}"),
        }
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_on_a_cluster_keeps_answering_right_numbers_through_a_failover() {
    let mut cluster = start_cluster().await;
    let app = TestApp::builder()
        .members(60)
        .var("REDIS_URL", cluster.url_list())
        // Every lookup must reach the cluster, not the in-process cache.
        .var("NEAR_CACHE_MB", "0")
        // A loaded 2-core machine answers some cluster reads slower than
        // the default 50 ms; the failover, not the load, is under test.
        .var("STORE_TIMEOUT_MS", "1000")
        .spawn()
        .await;
    let people: Vec<(u64, u64)> = app
        .sim
        .data
        .members
        .iter()
        .take(40)
        .map(|m| (m.user_id, m.number))
        .collect();
    for (id, number) in &people {
        let a = app.user(*id).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.data()["number"].as_u64(), Some(*number));
    }
    let ready = app.get("/readyz").await;
    assert_eq!(ready.data()["store"], "redis-cluster", "{:?}", ready.body);
    let calls_before = app.sim.stats().calls;

    let master = cluster.masters()[2];
    let failing_over = tokio::task::spawn_blocking(move || {
        let promoted = cluster.kill_master(master).expect("the replica takes over");
        (promoted, cluster)
    });
    // Lookups keep coming while the cluster fails over; every answer that is
    // a success must carry the right number.
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(6) {
        for (id, number) in &people {
            let a = app.user(*id).await;
            if a.status == 200 {
                assert_eq!(a.data()["number"].as_u64(), Some(*number), "user {id}");
                answered += 1;
            } else {
                assert!(
                    a.status >= 500,
                    "a client error for a valid id: {:?}",
                    a.body
                );
            }
        }
    }
    let (_promoted, cluster) = failing_over.await.unwrap();
    assert!(answered > 0);

    // Recovery without restart: the cache serves from the cluster again, so
    // looking everyone up once more costs no new upstream call.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = app.sim.stats().calls;
        let mut all_right = true;
        let mut statuses = std::collections::BTreeMap::new();
        for (id, number) in &people {
            let a = app.user(*id).await;
            *statuses.entry(a.status).or_insert(0) += 1;
            all_right &= a.status == 200 && a.data()["number"].as_u64() == Some(*number);
        }
        let new_calls = app.sim.stats().calls - before;
        if all_right && new_calls == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not go back to the cluster: last round answered {statuses:?} \
             and cost {new_calls} upstream calls"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "upstream member calls during the failover: {}",
        app.sim.stats().calls - calls_before
    );
    drop(cluster);
}
