//! Pages by number and by join time in either order, with exact totals,
//! ties and unreadable times placed alike by both stores; the members
//! closest to expiry.

use super::*;

pub async fn pages_by_number_follow_order_offset_and_limit_with_exact_totals(h: &Harness) {
    // Written in shuffled order, in two batches.
    let numbers = [40u64, 3, 17, 1, 250, 8, 99];
    let members: Vec<CachedMember> = numbers
        .iter()
        .map(|&n| {
            member(
                1_000 + n,
                n,
                &format!("成员{n}"),
                "2024-01-01T00:00:00.000+0800",
            )
        })
        .collect();
    h.store.put_members(&members[..3], TTL).await.unwrap();
    h.store.put_members(&members[3..], TTL).await.unwrap();

    let page = |order, offset, limit| {
        h.store.page(PageRequest {
            sort: SortBy::Number,
            order,
            offset,
            limit,
        })
    };
    let p = page(SortOrder::Asc, 0, 3).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![1, 3, 8], 7));
    let p = page(SortOrder::Asc, 3, 3).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![17, 40, 99], 7));
    let p = page(SortOrder::Asc, 6, 3).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![250], 7));
    let p = page(SortOrder::Asc, 7, 3).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![], 7));
    let p = page(SortOrder::Desc, 0, 4).await.unwrap();
    assert_eq!(
        (numbers_of(&p.members), p.total),
        (vec![250, 99, 40, 17], 7)
    );
    let p = page(SortOrder::Desc, 5, 10).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![3, 1], 7));
    for offset in [0, 2] {
        let p = page(SortOrder::Asc, offset, 0).await.unwrap();
        assert_eq!((numbers_of(&p.members), p.total), (vec![], 7));
    }
    let p = page(SortOrder::Desc, u64::MAX, 5).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![], 7));
    // Pages carry whole records, not just ids.
    let p = page(SortOrder::Asc, 0, 1).await.unwrap();
    assert_eq!(p.members, vec![members[3].clone()]);
}

pub async fn pages_by_join_time_follow_order_with_ties_and_bad_times_placed_alike(h: &Harness) {
    let members = vec![
        member(61, 1, "b", "2024-03-01T10:00:00.000+0800"),
        member(62, 2, "a", "2023-12-31T23:59:59.999+0800"),
        // Equal join times: both stores order ties by the id's text, as a
        // Redis sorted set does ("10" < "9").
        member(9, 3, "tie-9", "2024-05-05T05:05:05.000+0800"),
        member(10, 4, "tie-10", "2024-05-05T05:05:05.000+0800"),
        // Unparseable time sorts first rather than failing the page.
        member(63, 5, "bad", "not a time"),
        // Same instant as 61, written with a different offset notation.
        member(64, 6, "c", "2024-03-01T02:00:00.001+00:00"),
    ];
    h.store.put_members(&members, TTL).await.unwrap();

    let asc = first_ten(h, SortBy::JoinTime, SortOrder::Asc).await;
    assert_eq!(asc.total, 6);
    assert_eq!(ids_of(&asc.members), vec![63, 62, 61, 64, 10, 9]);
    let desc = h
        .store
        .page(PageRequest {
            sort: SortBy::JoinTime,
            order: SortOrder::Desc,
            offset: 1,
            limit: 3,
        })
        .await
        .unwrap();
    assert_eq!(desc.total, 6);
    assert_eq!(ids_of(&desc.members), vec![10, 64, 61]);
}

pub async fn oldest_lists_the_members_closest_to_expiry_first(h: &Harness) {
    let a = member(501, 1, "a", "2024-01-01T00:00:00.000+0800");
    let b = member(502, 2, "b", "2024-01-01T00:00:00.000+0800");
    let c = member(503, 3, "c", "2024-01-01T00:00:00.000+0800");
    for m in [&a, &b, &c] {
        h.store.put_members(slice::from_ref(m), TTL).await.unwrap();
        h.let_time_pass(Duration::from_millis(20)).await;
    }
    let ids = |v: Vec<UserId>| v.into_iter().map(UserId::get).collect::<Vec<_>>();
    assert_eq!(ids(h.store.oldest(2).await.unwrap()), vec![501, 502]);
    assert!(h.store.oldest(0).await.unwrap().is_empty());
    // Rewriting a member makes it the youngest.
    h.store.put_members(slice::from_ref(&a), TTL).await.unwrap();
    assert_eq!(ids(h.store.oldest(10).await.unwrap()), vec![502, 503, 501]);
}
