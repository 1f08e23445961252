//! What happens over a store's life: members expire, `clear` removes every
//! trace and says how much, statistics accumulate, rankings expire, the
//! device id is made once and survives a clear, the data identity counts.

use super::*;
use zsxq_cache::store::{RankingKey, StoredRanking};

pub async fn expired_members_vanish_from_reads_counts_pages_and_the_id_set(h: &Harness) {
    let keeper = member(71, 1, "留下", "2024-01-01T00:00:00.000+0800");
    let goners = vec![
        member(72, 2, "过期一", "2024-01-02T00:00:00.000+0800"),
        member(73, 3, "过期二", "2024-01-03T00:00:00.000+0800"),
    ];
    h.store
        .put_members(slice::from_ref(&keeper), TTL)
        .await
        .unwrap();
    h.store.put_members(&goners, SHORT_TTL).await.unwrap();
    assert_eq!(h.store.count().await.unwrap(), 3);

    h.let_time_pass(SHORT_TTL + Duration::from_secs(1)).await;

    assert_eq!(
        h.store
            .get_members(&[uid(72), uid(71), uid(73)])
            .await
            .unwrap(),
        vec![None, Some(keeper.clone()), None]
    );
    assert_eq!(
        h.store.cached_ids(&[uid(72), uid(71)]).await.unwrap(),
        vec![false, true]
    );
    assert_eq!(h.store.user_id_by_number(num(2)).await.unwrap(), None);
    assert_eq!(h.store.count().await.unwrap(), 1);
    for sort in [SortBy::Number, SortBy::JoinTime] {
        let p = first_ten(h, sort, SortOrder::Asc).await;
        assert_eq!((ids_of(&p.members), p.total), (vec![71], 1));
    }

    if let Some(mut conn) = h.raw_redis().await {
        for index in ["number", "join_time", "expiry"] {
            let members = index_members(&mut conn, index).await;
            assert_eq!(members.len(), 1, "{index} still lists expired members");
            assert!(members[0].starts_with("71"), "{index}: {members:?}");
        }
        // The short-TTL write must not have cut the indexes' TTL below the
        // keeper's: otherwise they would expire before the member.
        let left: i64 = redis::cmd("PTTL")
            .arg("zsxq:{idx}:number:dir")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(left > 3_000_000, "the number index TTL shrank to {left} ms");
    }

    // Once the keeper expires too, nothing is left (the wall-clock variant
    // would need an hour, so only the embedded store checks this).
    if let Some(clock) = &h.manual_clock {
        clock.advance_ms(i64::try_from(TTL.as_millis()).unwrap());
        assert_eq!(h.store.count().await.unwrap(), 0);
        let p = first_ten(h, SortBy::Number, SortOrder::Desc).await;
        assert_eq!((p.members.len(), p.total), (0, 0));
    }
}

/// A page or `oldest` learns in its own read whether anything is due and
/// prunes only then (the Redis store), so the first read after members
/// expire must already count and list only the living ones.
pub async fn the_first_read_after_members_expire_prunes_them_whichever_read_it_is(h: &Harness) {
    let keeper = member(81, 1, "留下", "2024-01-01T00:00:00.000+0800");
    let goners = vec![
        member(82, 2, "过期一", "2024-01-02T00:00:00.000+0800"),
        member(83, 3, "过期二", "2024-01-03T00:00:00.000+0800"),
    ];
    for first_read in ["page", "oldest"] {
        h.store.clear().await.unwrap();
        h.store
            .put_members(slice::from_ref(&keeper), TTL)
            .await
            .unwrap();
        h.store.put_members(&goners, SHORT_TTL).await.unwrap();
        let p = first_ten(h, SortBy::JoinTime, SortOrder::Desc).await;
        assert_eq!((ids_of(&p.members), p.total), (vec![83, 82, 81], 3));
        h.let_time_pass(SHORT_TTL + Duration::from_secs(1)).await;
        if first_read == "page" {
            let p = first_ten(h, SortBy::Number, SortOrder::Desc).await;
            assert_eq!((ids_of(&p.members), p.total), (vec![81], 1), "{first_read}");
        } else {
            assert_eq!(
                h.store.oldest(10).await.unwrap(),
                vec![uid(81)],
                "{first_read}"
            );
        }
        assert_eq!(h.store.count().await.unwrap(), 1, "{first_read}");
        if let Some(mut conn) = h.raw_redis().await {
            for index in ["number", "join_time", "expiry"] {
                let members = index_members(&mut conn, index).await;
                assert_eq!(members.len(), 1, "{first_read}: {index} lists {members:?}");
            }
        }
    }
}

pub async fn clear_removes_every_member_index_and_counter_and_reports_counts(h: &Harness) {
    let members = vec![
        member(81, 1, "一", "2024-01-01T00:00:00.000+0800"),
        member(82, 2, "二", "2024-01-02T00:00:00.000+0800"),
        member(83, 3, "三", "2024-01-03T00:00:00.000+0800"),
    ];
    h.store.put_members(&members, TTL).await.unwrap();
    h.store
        .add_stats(&StatCounters {
            total_requests: 3,
            cache_hits: 1,
            cache_misses: 2,
            api_calls: 2,
        })
        .await
        .unwrap();
    h.store.set_last_sync_time(START_MS).await.unwrap();

    let report = h.store.clear().await.unwrap();
    // Redis: 3 member hashes, 3 indexes of a directory, a count hash and one
    // bucket each, the stats hash. The embedded store reports the keys of
    // the original Redis layout (3 hashes, 3 number keys, the id set, 3
    // sorted sets, stats).
    let index_keys = if h.raw_redis().await.is_some() { 9 } else { 7 };
    assert_eq!(
        report,
        ClearReport {
            deleted_keys: 3 + index_keys + 1,
            deleted_users: 3
        }
    );

    assert_eq!(h.store.count().await.unwrap(), 0);
    assert_eq!(
        h.store.get_members(&[uid(81), uid(83)]).await.unwrap(),
        vec![None, None]
    );
    assert_eq!(h.store.user_id_by_number(num(1)).await.unwrap(), None);
    let p = first_ten(h, SortBy::Number, SortOrder::Asc).await;
    assert_eq!((p.members.len(), p.total), (0, 0));
    assert_eq!(h.store.stats().await.unwrap(), StoredStats::default());
    assert_eq!(h.store.clear().await.unwrap(), ClearReport::default());

    if let Some(mut conn) = h.raw_redis().await {
        assert_eq!(namespace_keys(&mut conn).await, Vec::<String>::new());
    }

    // The store keeps working after a clear.
    h.store.put_members(&members[..1], TTL).await.unwrap();
    assert_eq!(h.store.count().await.unwrap(), 1);
}

pub async fn stats_accumulate_and_remember_the_last_sync_time(h: &Harness) {
    assert_eq!(h.store.stats().await.unwrap(), StoredStats::default());
    let delta = StatCounters {
        total_requests: 10,
        cache_hits: 7,
        cache_misses: 3,
        api_calls: 4,
    };
    h.store.add_stats(&delta).await.unwrap();
    h.store.add_stats(&delta).await.unwrap();
    h.store.add_stats(&StatCounters::default()).await.unwrap();
    h.store.set_last_sync_time(START_MS + 1).await.unwrap();
    h.store.set_last_sync_time(START_MS + 2).await.unwrap();

    assert_eq!(
        h.store.stats().await.unwrap(),
        StoredStats {
            counters: StatCounters {
                total_requests: 20,
                cache_hits: 14,
                cache_misses: 6,
                api_calls: 8,
            },
            last_sync_time: Some(START_MS + 2),
        }
    );
    h.store.ping().await.unwrap();
    let usage = h.store.memory_usage().await.unwrap();
    assert!(
        usage.ends_with(['B', 'K', 'M', 'G']) && usage.starts_with(|c: char| c.is_ascii_digit()),
        "memory usage {usage:?} is not human readable"
    );
}

async fn read_ranking(h: &Harness, checkin: CheckinId, kind: RankingType) -> Option<Vec<u8>> {
    h.store
        .get_ranking(RankingKey { checkin, kind })
        .await
        .unwrap()
}

async fn write_ranking(
    h: &Harness,
    checkin: CheckinId,
    kind: RankingType,
    bytes: &[u8],
    ttl: Duration,
) {
    let key = RankingKey { checkin, kind };
    let ranking = StoredRanking { key, bytes, ttl };
    h.store.put_ranking(&ranking).await.unwrap();
}

pub async fn a_cached_ranking_reads_back_until_it_expires_and_clear_removes_it(h: &Harness) {
    const ACC: RankingType = RankingType::Accumulated;
    const CONT: RankingType = RankingType::Continuous;
    let camp = CheckinId::new(842_448_118_212_345).unwrap();
    let ongoing = CheckinId::new(77).unwrap();
    assert_eq!(read_ranking(h, camp, ACC).await, None);

    let first = "{\"rows\":[\"🐱猫猫\",\"Tom \\\"The Cat\\\" Li\"]}".as_bytes();
    write_ranking(h, camp, ACC, first, TTL).await;
    write_ranking(h, ongoing, ACC, b"short-lived", SHORT_TTL).await;
    assert_eq!(read_ranking(h, camp, ACC).await.as_deref(), Some(first));
    // A second write replaces the first.
    write_ranking(h, camp, ACC, b"v2", TTL).await;
    assert_eq!(
        read_ranking(h, camp, ACC).await.as_deref(),
        Some(&b"v2"[..])
    );

    h.let_time_pass(Duration::from_secs(2)).await;
    assert_eq!(read_ranking(h, ongoing, ACC).await, None);
    assert_eq!(
        read_ranking(h, camp, ACC).await.as_deref(),
        Some(&b"v2"[..])
    );
    // The continuous ranking of the same camp is kept apart from the
    // accumulated one: neither is read as the other.
    assert_eq!(read_ranking(h, camp, CONT).await, None);
    write_ranking(h, camp, CONT, b"streaks", TTL).await;
    assert_eq!(
        read_ranking(h, camp, CONT).await.as_deref(),
        Some(&b"streaks"[..])
    );
    assert_eq!(
        read_ranking(h, camp, ACC).await.as_deref(),
        Some(&b"v2"[..])
    );
    // Rankings are not members.
    assert_eq!(h.store.count().await.unwrap(), 0);

    assert_eq!(
        h.store.clear().await.unwrap(),
        ClearReport {
            deleted_keys: 2,
            deleted_users: 0
        }
    );
    assert_eq!(read_ranking(h, camp, ACC).await, None);
    assert_eq!(read_ranking(h, camp, CONT).await, None);
    if let Some(mut conn) = h.raw_redis().await {
        assert_eq!(namespace_keys(&mut conn).await, Vec::<String>::new());
    }
}

pub async fn the_device_id_is_created_once_agreed_on_by_concurrent_callers_and_survives_clear(
    h: &Harness,
) {
    let candidates: Vec<String> = (0..8).map(|i| format!("device-candidate-{i}")).collect();
    let answers =
        futures_util::future::join_all(candidates.iter().map(|c| h.store.device_id(c))).await;
    let answers: Vec<String> = answers.into_iter().map(Result::unwrap).collect();
    let first = answers[0].clone();
    assert!(candidates.contains(&first), "{first}");
    assert!(
        answers.iter().all(|a| *a == first),
        "concurrent callers agree on one id: {answers:?}"
    );
    assert_eq!(h.store.device_id("a-later-candidate").await.unwrap(), first);
    h.store.clear().await.unwrap();
    h.let_time_pass(Duration::from_secs(1)).await;
    assert_eq!(
        h.store.device_id("after-clear").await.unwrap(),
        first,
        "neither a clear nor time changes the device"
    );
    assert_eq!(h.store.count().await.unwrap(), 0, "the id is not a member");
    if let Some(mut conn) = h.raw_redis().await {
        let ttl: i64 = redis::cmd("PTTL")
            .arg("zsxq:device:aduid")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ttl, -1, "the device id never expires");
    }
}

pub async fn the_data_identity_counts_the_id_set_and_names_a_run_id_on_one_server_only(
    h: &Harness,
) {
    let Some(before) = h.store.data_identity().await.unwrap() else {
        assert!(h.redis.is_none() && h.cluster.is_none(), "Redis can tell");
        return;
    };
    assert_eq!(before.members, 0);
    // A cluster has no one run id: a failover changes them.
    assert_eq!(before.run_id.is_some(), h.redis.is_some(), "{before:?}");
    let (a, b) = (
        member(601, 1, "a", "2024-01-01T00:00:00.000+0800"),
        member(602, 2, "b", "2024-01-01T00:00:00.000+0800"),
    );
    h.store.put_members(&[a, b], TTL).await.unwrap();
    let after = h.store.data_identity().await.unwrap().unwrap();
    assert_eq!(after.members, 2);
    assert_eq!(after.run_id, before.run_id, "the same server");
    h.store.clear().await.unwrap();
    assert_eq!(h.store.data_identity().await.unwrap().unwrap().members, 0);
}
