//! Records read back exactly as written, in the order asked; numbers resolve
//! to their member and stop resolving once changed; overwrites keep the
//! caller's times; which members are cached.

use super::*;

pub async fn members_read_back_exactly_as_written_including_chinese_emoji_and_empty_unique_id(
    h: &Harness,
) {
    let mut plain = member(454_881_884_228, 177, "青弦", "2024-09-04T22:39:05.287+0800");
    plain.cached_at = START_MS - 5_000;
    plain.updated_at = START_MS;
    let mut emoji = member(
        412_451_285_841_818,
        2,
        "🐱 小猫咪 ✨",
        "2023-01-01T08:00:00.000+0800",
    );
    emoji.member.unique_id = String::new();
    emoji.member.introduction = String::new();
    h.store
        .put_members(&[plain.clone(), emoji.clone()], TTL)
        .await
        .unwrap();

    let got = h
        .store
        .get_members(&[plain.member.user_id, emoji.member.user_id])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(plain), Some(emoji)]);
}

pub async fn unknown_ids_read_as_none_and_batches_keep_their_order(h: &Harness) {
    let a = member(11, 1, "甲", "2024-01-01T00:00:00.000+0800");
    let b = member(22, 2, "乙", "2024-01-02T00:00:00.000+0800");
    h.store
        .put_members(&[a.clone(), b.clone()], TTL)
        .await
        .unwrap();

    let got = h
        .store
        .get_members(&[uid(22), uid(999), uid(11), uid(22)])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(b.clone()), None, Some(a), Some(b)]);
    assert_eq!(h.store.get_members(&[]).await.unwrap(), vec![]);
    assert_eq!(h.store.get_members(&[uid(5)]).await.unwrap(), vec![None]);
}

pub async fn a_number_resolves_to_its_member_and_an_unknown_number_to_nothing(h: &Harness) {
    let a = member(454_881_884_228, 177, "青弦", "2024-09-04T22:39:05.287+0800");
    h.store.put_members(&[a], TTL).await.unwrap();

    assert_eq!(
        h.store.user_id_by_number(num(177)).await.unwrap(),
        Some(uid(454_881_884_228))
    );
    assert_eq!(h.store.user_id_by_number(num(178)).await.unwrap(), None);
}

pub async fn a_members_old_number_stops_resolving_once_its_number_changed(h: &Harness) {
    let before = member(31, 5, "换号的人", "2024-01-01T00:00:00.000+0800");
    h.store
        .put_members(slice::from_ref(&before), TTL)
        .await
        .unwrap();
    let mut after = before.clone();
    after.member.number = Some(num(6));
    h.store
        .put_members(slice::from_ref(&after), TTL)
        .await
        .unwrap();

    assert_eq!(h.store.user_id_by_number(num(5)).await.unwrap(), None);
    assert_eq!(
        h.store.user_id_by_number(num(6)).await.unwrap(),
        Some(uid(31))
    );
    let page = first_ten(h, SortBy::Number, SortOrder::Asc).await;
    assert_eq!(page.total, 1, "the old number leaves no index entry behind");
    assert_eq!(numbers_of(&page.members), vec![6]);
    if let Some(mut conn) = h.raw_redis().await {
        let old_key: Option<String> = redis::cmd("GET")
            .arg("zsxq:number:5")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            old_key, None,
            "the old number key is deleted, not left stale"
        );
    }

    // The number now goes to someone else: it resolves to them.
    let newcomer = member(32, 5, "新人", "2024-02-01T00:00:00.000+0800");
    h.store.put_members(&[newcomer], TTL).await.unwrap();
    assert_eq!(
        h.store.user_id_by_number(num(5)).await.unwrap(),
        Some(uid(32))
    );

    if let Some(mut conn) = h.raw_redis().await {
        // A stale number key (as an older writer, or a clear that forgets the
        // number index, leaves them) must not be trusted: the member's hash
        // says 6.
        let _: () = redis::cmd("SET")
            .arg("zsxq:number:7")
            .arg("31")
            .arg("EX")
            .arg(600)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(h.store.user_id_by_number(num(7)).await.unwrap(), None);
    }
}

pub async fn overwriting_a_member_keeps_the_cached_at_the_caller_gives(h: &Harness) {
    let first = member(41, 9, "旧名字", "2024-01-01T00:00:00.000+0800");
    h.store
        .put_members(slice::from_ref(&first), TTL)
        .await
        .unwrap();
    let mut second = first.clone();
    second.member.name = "新名字".to_owned();
    second.updated_at = START_MS + 60_000;
    h.store
        .put_members(slice::from_ref(&second), TTL)
        .await
        .unwrap();

    let got = h.store.get_members(&[uid(41)]).await.unwrap();
    let got = got[0].clone().expect("cached");
    assert_eq!(got.member.name, "新名字");
    assert_eq!(got.cached_at, first.cached_at);
    assert_eq!(got.updated_at, START_MS + 60_000);
    assert_eq!(h.store.count().await.unwrap(), 1);
}

pub async fn cached_ids_say_which_members_are_cached(h: &Harness) {
    let a = member(51, 1, "a", "2024-01-01T00:00:00.000+0800");
    let c = member(53, 3, "c", "2024-01-03T00:00:00.000+0800");
    h.store.put_members(&[a, c], TTL).await.unwrap();
    assert_eq!(
        h.store
            .cached_ids(&[uid(51), uid(52), uid(53)])
            .await
            .unwrap(),
        vec![true, false, true]
    );
    assert_eq!(h.store.cached_ids(&[]).await.unwrap(), Vec::<bool>::new());
}
