//! The Redis store's own promises: the original design's `redis-cli`
//! recipes keep working, every key but the statistics has a TTL, `clear`
//! leaves nothing behind, evicted hashes are skipped, and the store fails
//! fast and recovers when Redis is down, hung or restarted.

use super::*;

#[tokio::test]
async fn redis_keeps_the_seeds_redis_cli_recipes_working() {
    let h = Harness::redis().await;
    let mut m = member(454_881_884_228, 177, "青弦", "2024-09-04T22:39:05.287+0800");
    m.member.unique_id = String::new();
    m.cached_at = 1_730_080_000_000;
    m.updated_at = 1_730_080_000_123;
    let other = member(
        412_451_285_841_818,
        178,
        "🐱",
        "2024-09-05T22:39:05.287+0800",
    );
    h.store.put_members(&[m, other], TTL).await.unwrap();
    let mut conn = h.raw_redis().await.unwrap();

    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg("zsxq:user:454881884228")
        .query_async(&mut conn)
        .await
        .unwrap();
    let expected: HashMap<String, String> = [
        ("user_id", "454881884228"),
        ("number", "177"),
        ("name", "青弦"),
        ("unique_id", ""),
        ("avatar_url", "https://images.zsxq.com/454881884228.jpg"),
        ("join_time", "2024-09-04T22:39:05.287+0800"),
        ("status", "joined"),
        ("expired_time", "2026-09-04T22:39:05.287+0800"),
        ("introduction", "高级前端开发工程师"),
        ("cached_at", "1730080000000"),
        ("updated_at", "1730080000123"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(hash, expected);

    // The operator's recipe for a number (docs/OPERATIONS.md): the bucket
    // is the last directory entry not above the number, and scores in a
    // bucket count from the base its name ends with (after the `!`).
    let bucket: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
        .arg("zsxq:{idx}:number:dir")
        .arg(177)
        .arg("-inf")
        .arg("LIMIT")
        .arg(0)
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let [bucket] = bucket.as_slice() else {
        panic!("no bucket for 177: {bucket:?}");
    };
    let base: i64 = bucket.rsplit_once('!').unwrap().1.parse().unwrap();
    let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(format!("zsxq:{{idx}}:number:{bucket}"))
        .arg(177 - base)
        .arg(177 - base)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ids, vec!["454881884228".to_owned()]);

    // The number index lists every member: it is the id set now.
    let mut all = index_members(&mut conn, "number").await;
    all.sort();
    assert_eq!(all, vec!["412451285841818", "454881884228"]);
    // No key of the original layout's number strings or id set is written.
    let keys = namespace_keys(&mut conn).await;
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with("zsxq:number:") || k == "zsxq:users:all"),
        "{keys:?}"
    );
}

#[tokio::test]
async fn redis_reports_a_malformed_member_hash_as_corrupt_and_clear_repairs_it() {
    let h = Harness::redis().await;
    let mut conn = h.raw_redis().await.unwrap();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("zsxq:user:7")
        .arg("user_id")
        .arg("7")
        .arg("number")
        .arg("seven")
        .arg("cached_at")
        .arg("1")
        .arg("updated_at")
        .arg("1")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let err = h.store.get_members(&[uid(7)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "got {err:?}");
    let report = h.store.clear().await.unwrap();
    assert_eq!(report.deleted_users, 1);
    assert_eq!(h.store.get_members(&[uid(7)]).await.unwrap(), vec![None]);
}

#[tokio::test]
async fn redis_gives_every_key_but_the_stats_hash_a_ttl_within_the_cache_ttl() {
    let h = Harness::redis().await;
    let a = member(101, 1, "a", "2024-01-01T00:00:00.000+0800");
    h.store
        .put_members(
            &[
                a.clone(),
                member(102, 2, "b", "2024-01-02T00:00:00.000+0800"),
            ],
            TTL,
        )
        .await
        .unwrap();
    // A number change and a second, shorter write exercise the other paths.
    let mut renumbered = a;
    renumbered.member.number = Some(num(3));
    h.store
        .put_members(&[renumbered], Duration::from_secs(600))
        .await
        .unwrap();
    h.store
        .add_stats(&StatCounters {
            api_calls: 1,
            ..StatCounters::default()
        })
        .await
        .unwrap();

    let mut conn = h.raw_redis().await.unwrap();
    let keys = namespace_keys(&mut conn).await;
    assert!(keys.len() >= 9, "expected the full layout, found {keys:?}");
    for key in keys {
        let ttl = zsxq_test_support::ttl_of(&mut conn, &key).await.unwrap();
        if key == "zsxq:stats:cache" {
            assert_eq!(ttl, -1, "the stats hash must not expire");
        } else {
            assert!(
                ttl > 0 && ttl <= TTL.as_secs() as i64,
                "{key} has TTL {ttl}"
            );
        }
    }
}

#[tokio::test]
async fn redis_clear_also_sweeps_keys_no_index_knows() {
    let h = Harness::redis().await;
    h.store
        .put_members(&[member(111, 1, "a", "2024-01-01T00:00:00.000+0800")], TTL)
        .await
        .unwrap();
    let mut conn = h.raw_redis().await.unwrap();
    // What a careless writer or the original layout leaves behind: a number
    // key, and a member hash no index lists. Plus a key that is not the
    // store's.
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("zsxq:number:999")
        .arg("111")
        .arg("EX")
        .arg(600)
        .ignore()
        .cmd("HSET")
        .arg("zsxq:user:222")
        .arg("user_id")
        .arg("222")
        .ignore()
        .cmd("SET")
        .arg("zsxq:lease:sync")
        .arg("someone")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let report = h.store.clear().await.unwrap();
    // Hash 111, 3 directories, their count hashes and their 3 buckets, the
    // number key, the orphan hash.
    assert_eq!(
        report,
        ClearReport {
            deleted_keys: 12,
            deleted_users: 2
        }
    );
    assert_eq!(
        namespace_keys(&mut conn).await,
        vec!["zsxq:lease:sync".to_owned()]
    );
}

#[tokio::test]
async fn redis_pages_skip_and_forget_members_whose_hash_was_evicted() {
    let h = Harness::redis().await;
    let members: Vec<CachedMember> = (1..=4)
        .map(|n| member(150 + n, n, "m", "2024-01-01T00:00:00.000+0800"))
        .collect();
    h.store.put_members(&members, TTL).await.unwrap();
    let mut conn = h.raw_redis().await.unwrap();
    // Eviction under maxmemory removes a hash long before its TTL.
    let _: u64 = redis::cmd("DEL")
        .arg("zsxq:user:152")
        .query_async(&mut conn)
        .await
        .unwrap();

    let p = first_ten(&h, SortBy::Number, SortOrder::Asc).await;
    assert_eq!((ids_of(&p.members), p.total), (vec![151, 153, 154], 3));
    let all = index_members(&mut conn, "number").await;
    assert!(
        !all.contains(&"152".to_owned()),
        "the evicted id is still listed: {all:?}"
    );
    assert_eq!(h.store.count().await.unwrap(), 3);
}

#[tokio::test]
async fn redis_store_built_while_redis_is_down_fails_fast_and_recovers_after_restart() {
    let mut server = RedisServer::start().unwrap();
    server.stop().unwrap();
    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock)).expect("no dial needed");
    let m = member(121, 1, "a", "2024-01-01T00:00:00.000+0800");

    for round in 0..2 {
        let ops: Vec<(&str, Result<(), String>, Duration)> = vec![
            timed("ping", store.ping()).await,
            timed("get_members", store.get_members(&[uid(121)])).await,
            timed("put_members", store.put_members(slice::from_ref(&m), TTL)).await,
            timed("user_id_by_number", store.user_id_by_number(num(1))).await,
            timed("cached_ids", store.cached_ids(&[uid(121)])).await,
            timed(
                "page",
                store.page(PageRequest {
                    sort: SortBy::Number,
                    order: SortOrder::Asc,
                    offset: 0,
                    limit: 5,
                }),
            )
            .await,
            timed("count", store.count()).await,
            timed("add_stats", store.add_stats(&one_request())).await,
            timed("stats", store.stats()).await,
            timed("memory_usage", store.memory_usage()).await,
            timed("clear", store.clear()).await,
        ];
        for (op, result, took) in ops {
            assert!(
                result.is_err(),
                "round {round}: {op} succeeded with Redis down"
            );
            assert!(
                took < Duration::from_secs(1),
                "round {round}: {op} took {took:?} to fail"
            );
        }
    }

    // Let the reconnect attempts the failures started run (and fail) before
    // Redis comes back, as they would in a busy service.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart().unwrap();
    // The very same store works again, from the first call on.
    store.ping().await.expect("first call after restart");
    store.put_members(slice::from_ref(&m), TTL).await.unwrap();
    assert_eq!(store.get_members(&[uid(121)]).await.unwrap(), vec![Some(m)]);
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn redis_store_fails_fast_while_redis_hangs_and_works_again_after_it_resumes() {
    let mut server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock)).unwrap();
    let m = member(131, 1, "a", "2024-01-01T00:00:00.000+0800");
    store.put_members(slice::from_ref(&m), TTL).await.unwrap();

    server.pause().unwrap();
    for (op, result, took) in [
        timed("get_members", store.get_members(&[uid(131)])).await,
        timed("count", store.count()).await,
        timed("ping", store.ping()).await,
    ] {
        assert!(result.is_err(), "{op} succeeded against a frozen Redis");
        assert!(took < Duration::from_secs(1), "{op} took {took:?} to fail");
    }

    server.resume().unwrap();
    store.ping().await.expect("first call after resume");
    assert_eq!(store.get_members(&[uid(131)]).await.unwrap(), vec![Some(m)]);
}

#[tokio::test]
async fn redis_store_survives_redis_restarting_under_an_open_connection() {
    let mut server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock)).unwrap();
    let m = member(141, 1, "a", "2024-01-01T00:00:00.000+0800");
    store.put_members(slice::from_ref(&m), TTL).await.unwrap();

    // The old connection is dead; reads are idempotent, so the store may
    // replay them on a fresh connection and the caller never sees the drop.
    server.restart().unwrap();
    assert_eq!(store.get_members(&[uid(141)]).await.unwrap(), vec![None]);
    store.put_members(slice::from_ref(&m), TTL).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
}

fn one_request() -> StatCounters {
    StatCounters {
        total_requests: 1,
        ..StatCounters::default()
    }
}

/// Runs one store call, keeping only whether it failed and how long it took.
async fn timed<T, E: std::fmt::Display>(
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> (&'static str, Result<(), String>, Duration) {
    let started = Instant::now();
    let result = call.await.map(|_| ()).map_err(|e| e.to_string());
    (op, result, started.elapsed())
}

#[tokio::test]
async fn redis_filled_by_the_original_layout_is_indexed_anew_at_first_use() {
    let server = RedisServer::start().unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // What a deployment of the original layout leaves: hashes, number
    // strings and the id set, and its three skiplist sorted sets.
    let members: Vec<CachedMember> = (1..=300u64)
        .map(|n| member(70_000 + n, n, "老版本", "2024-01-01T00:00:00.000+0800"))
        .collect();
    zsxq_test_support::seed_layout::write_straightforward(&mut conn, &members, 3_600)
        .await
        .unwrap();
    for index in ["number", "join_time", "expiry"] {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(format!("zsxq:{{idx}}:{index}"));
        for m in &members {
            zadd.arg(1).arg(m.member.user_id.get());
        }
        let _: () = zadd.query_async(&mut conn).await.unwrap();
    }

    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock)).unwrap();
    assert_eq!(store.count().await.unwrap(), 300);
    assert_eq!(
        store.user_id_by_number(num(177)).await.unwrap(),
        Some(uid(70_177))
    );
    let p = store
        .page(PageRequest {
            sort: SortBy::Number,
            order: SortOrder::Desc,
            offset: 0,
            limit: 3,
        })
        .await
        .unwrap();
    assert_eq!(
        (numbers_of(&p.members), p.total),
        (vec![300, 299, 298], 300)
    );
    let identity = store.data_identity().await.unwrap().unwrap();
    assert_eq!(identity.members, 300);

    let keys = namespace_keys_of(&server.url()).await;
    let old: Vec<&String> = keys
        .iter()
        .filter(|k| {
            k.starts_with("zsxq:number:")
                || *k == "zsxq:users:all"
                || [
                    "zsxq:{idx}:number",
                    "zsxq:{idx}:join_time",
                    "zsxq:{idx}:expiry",
                ]
                .contains(&k.as_str())
        })
        .collect();
    assert!(old.is_empty(), "original-layout keys left: {old:?}");
    // The indexed hashes expire with their own TTL, and the expiry index
    // says when.
    let soonest = store.oldest(2).await.unwrap();
    assert_eq!(soonest.len(), 2);
    let report = store.clear().await.unwrap();
    assert_eq!(report.deleted_users, 300);
    assert_eq!(namespace_keys_of(&server.url()).await, Vec::<String>::new());
}

/// Every `zsxq:*` key of one server, by SCAN.
async fn namespace_keys_of(url: &str) -> Vec<String> {
    let mut keys = zsxq_test_support::scan_keys(url, "zsxq:*").await.unwrap();
    keys.sort();
    keys
}
