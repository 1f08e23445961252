//! What the Redis layout's bucketed indexes make risky, held to the same
//! answers on every store: pages across bucket boundaries in both orders
//! (a bucket splits past 128 entries), ties across buckets, numberless
//! members last, a number that passed to another member, expiry across
//! buckets.

use super::*;

/// Members numbered by `numbers` (`None`: numberless), their ids of mixed
/// lengths so that the ids' text order differs from their numeric order,
/// all joined at one instant so that the join-time index is one long tie.
fn crowd(numbers: impl IntoIterator<Item = Option<u64>>) -> Vec<CachedMember> {
    numbers
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let i = i as u64;
            let id = if i.is_multiple_of(3) {
                7 + i
            } else {
                100_000 * (i + 1) + i
            };
            let mut m = member(id, 1, "同时加入", "2024-05-05T05:05:05.000+0800");
            m.member.number = n.map(num);
            m
        })
        .collect()
}

/// Every member of a sort, read in pages of `size`.
async fn walk(h: &Harness, sort: SortBy, order: SortOrder, size: u64) -> (Vec<u64>, u64) {
    let (mut ids, mut offset) = (Vec::new(), 0);
    loop {
        let p = h
            .store
            .page(PageRequest {
                sort,
                order,
                offset,
                limit: size,
            })
            .await
            .unwrap();
        if p.members.is_empty() {
            return (ids, p.total);
        }
        offset += p.members.len() as u64;
        ids.extend(ids_of(&p.members));
    }
}

pub async fn pages_cross_bucket_boundaries_in_both_orders_with_ties_and_numberless_last(
    h: &Harness,
) {
    // 129 numbered members in shuffled order (one more than a bucket holds),
    // then 300 more and 20 without a number: several splits.
    let mut numbers: Vec<Option<u64>> = (0..129u64).map(|i| Some((i * 37) % 129 + 1)).collect();
    numbers.extend((130..430).rev().map(Some));
    numbers.extend(std::iter::repeat_n(None, 20));
    let members = crowd(numbers);
    for (round, chunk) in members.chunks(43).enumerate() {
        h.store.put_members(chunk, TTL).await.unwrap();
        if round == 2 {
            // 129 members in: exactly one past a full bucket.
            let p = h
                .store
                .page(PageRequest {
                    sort: SortBy::Number,
                    order: SortOrder::Asc,
                    offset: 124,
                    limit: 10,
                })
                .await
                .unwrap();
            assert_eq!(
                (numbers_of(&p.members), p.total),
                (vec![125, 126, 127, 128, 129], 129)
            );
        }
    }
    let n = members.len() as u64;

    let mut by_number: Vec<(u64, String, u64)> = members
        .iter()
        .map(|m| {
            let id = m.member.user_id.get();
            (
                m.member.number.map_or(u64::MAX, |n| n.get()),
                id.to_string(),
                id,
            )
        })
        .collect();
    by_number.sort();
    let expected: Vec<u64> = by_number.iter().map(|(_, _, id)| *id).collect();
    for size in [10, 128, 129, 1_000] {
        let (asc, total) = walk(h, SortBy::Number, SortOrder::Asc, size).await;
        assert_eq!((asc.len() as u64, total), (n, n), "pages of {size}");
        assert_eq!(asc, expected, "ascending by number in pages of {size}");
        let (mut desc, _) = walk(h, SortBy::Number, SortOrder::Desc, size).await;
        desc.reverse();
        assert_eq!(desc, expected, "descending by number in pages of {size}");
    }

    // One join time for all: the order is the ids' text, across buckets.
    let mut by_text: Vec<(String, u64)> = members
        .iter()
        .map(|m| (m.member.user_id.to_string(), m.member.user_id.get()))
        .collect();
    by_text.sort();
    let expected: Vec<u64> = by_text.iter().map(|(_, id)| *id).collect();
    let (asc, total) = walk(h, SortBy::JoinTime, SortOrder::Asc, 50).await;
    assert_eq!((asc, total), (expected.clone(), n));
    let (mut desc, _) = walk(h, SortBy::JoinTime, SortOrder::Desc, 77).await;
    desc.reverse();
    assert_eq!(desc, expected);
    assert_eq!(h.store.count().await.unwrap(), n);

    if let Some(mut conn) = h.raw_redis().await {
        for index in ["number", "join_time", "expiry"] {
            let buckets: Vec<String> = redis::cmd("ZRANGE")
                .arg(format!("zsxq:{{idx}}:{index}:dir"))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(buckets.len() >= 4, "{index}: {buckets:?}");
            for bucket in buckets {
                let key = format!("zsxq:{{idx}}:{index}:{bucket}");
                let encoding: String = redis::cmd("OBJECT")
                    .arg("ENCODING")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(encoding, "listpack", "{key}");
            }
        }
    }
}

pub async fn a_number_passed_to_another_member_resolves_to_its_newest_holder(h: &Harness) {
    let old_holder = member(31, 5, "旧主", "2024-01-01T00:00:00.000+0800");
    h.store
        .put_members(slice::from_ref(&old_holder), TTL)
        .await
        .unwrap();
    // The upstream gave 5 to someone else; the old holder's record is not
    // rewritten (its hash still says 5).
    let mut newcomer = member(32, 5, "新主", "2024-02-01T00:00:00.000+0800");
    newcomer.cached_at = START_MS + 60_000;
    h.store
        .put_members(slice::from_ref(&newcomer), TTL)
        .await
        .unwrap();
    assert_eq!(
        h.store.user_id_by_number(num(5)).await.unwrap(),
        Some(uid(32))
    );

    // Once the old holder is rewritten with its new number, 5 has one
    // holder and the old holder resolves by its new number only.
    let mut moved = old_holder.clone();
    moved.member.number = Some(num(8));
    moved.cached_at = START_MS + 120_000;
    h.store
        .put_members(slice::from_ref(&moved), TTL)
        .await
        .unwrap();
    assert_eq!(
        h.store.user_id_by_number(num(5)).await.unwrap(),
        Some(uid(32))
    );
    assert_eq!(
        h.store.user_id_by_number(num(8)).await.unwrap(),
        Some(uid(31))
    );
    let p = first_ten(h, SortBy::Number, SortOrder::Asc).await;
    assert_eq!((numbers_of(&p.members), p.total), (vec![5, 8], 2));
}

pub async fn expiry_across_buckets_prunes_exactly_and_keeps_the_oldest_in_order(h: &Harness) {
    // Keepers in three batches a little apart, then 300 short-lived ones:
    // each batch shares one expiry time, so its entries tie across buckets.
    let keepers = crowd((1..=180).map(Some));
    for batch in keepers.chunks(60) {
        h.store.put_members(batch, TTL).await.unwrap();
        h.let_time_pass(Duration::from_millis(20)).await;
    }
    // Batch after batch; inside one (a tie) the stores order alike only as
    // a set (Redis by the id's text, the embedded store by its value).
    let batches = |ids: Vec<UserId>| -> Vec<Vec<u64>> {
        ids.chunks(60)
            .map(|c| {
                let mut c: Vec<u64> = c.iter().map(|id| id.get()).collect();
                c.sort();
                c
            })
            .collect()
    };
    let expected = batches(keepers.iter().map(|m| m.member.user_id).collect());
    let goners: Vec<CachedMember> = (0..300u64)
        .map(|i| {
            member(
                5_000_000_000 + i,
                1_000 + i,
                "过期",
                "2024-01-01T00:00:00.000+0800",
            )
        })
        .collect();
    for batch in goners.chunks(100) {
        h.store.put_members(batch, SHORT_TTL).await.unwrap();
    }
    assert_eq!(h.store.count().await.unwrap(), 480);
    let soonest = h.store.oldest(300).await.unwrap();
    assert!(
        soonest.iter().all(|id| id.get() >= 5_000_000_000),
        "the short-lived members expire first"
    );

    h.let_time_pass(SHORT_TTL + Duration::from_secs(1)).await;
    assert_eq!(h.store.count().await.unwrap(), 180);
    assert_eq!(batches(h.store.oldest(180).await.unwrap()), expected);
    let first = h.store.oldest(7).await.unwrap();
    assert!(
        first.iter().all(|id| expected[0].contains(&id.get())),
        "{first:?}"
    );
    let (by_number, total) = walk(h, SortBy::Number, SortOrder::Desc, 64).await;
    assert_eq!((by_number.len(), total), (180, 180));
    assert_eq!(h.store.user_id_by_number(num(1_000)).await.unwrap(), None);
    if let Some(mut conn) = h.raw_redis().await {
        for index in ["number", "join_time", "expiry"] {
            let left = index_members(&mut conn, index).await;
            assert_eq!(left.len(), 180, "{index} still lists expired members");
        }
    }
}
