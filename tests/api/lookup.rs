//! Lazy loading by id and by number: `GET /api/users/:userId` and
//! `GET /api/users/number/:number`.

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{StoreKind, spawn_app};

on_both_stores!(
    a_cold_lookup_misses_then_the_next_one_hits,
    lookup_by_number_finds_cached_and_uncached_members,
    an_unknown_number_is_a_404_envelope,
    a_non_member_id_is_a_404_envelope_and_is_not_cached,
    concurrent_cold_lookups_share_one_upstream_call,
    concurrent_lookups_of_a_cold_number_share_one_member_list_call,
    an_unknown_number_is_remembered_and_costs_one_listing,
);

async fn a_cold_lookup_misses_then_the_next_one_hits(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let expected = &app.sim.data.members[7];

    let first = app.user(expected.user_id).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["message"], "查询成功");
    let d = first.data();
    assert_eq!(d["cache_status"], "miss");
    assert_eq!(
        d["user_id"],
        expected.user_id.to_string(),
        "user_id is a string"
    );
    assert_eq!(d["number"], expected.number, "number is an integer");
    assert_eq!(d["name"], expected.name);
    assert_eq!(d["join_time"], expected.join_time);
    assert_eq!(
        d["unique_id"],
        expected.unique_id.clone().unwrap_or_default()
    );

    let second = app.user(expected.user_id).await;
    assert_eq!(second.data()["cache_status"], "hit");
    assert_eq!(second.data()["number"], expected.number);
    assert_eq!(
        app.sim.stats().by_kind.member_summary,
        1,
        "the hit made no upstream call"
    );
}

async fn lookup_by_number_finds_cached_and_uncached_members(kind: StoreKind) {
    let app = spawn_app(kind).await;
    // The member list runs newest first: a recent member is on its first
    // page, one call.
    let members = &app.sim.data.members;
    let cold = &members[members.len() - 20];
    let a = app.by_number(cold.number).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.data()["user_id"], cold.user_id.to_string());
    assert_eq!(a.data()["cache_status"], "miss");
    assert_eq!(app.sim.stats().by_kind.member_list, 1);
    // Now cached: no further call.
    let b = app.by_number(cold.number).await;
    assert_eq!(b.data()["cache_status"], "hit");
    assert_eq!(b.data()["user_id"], cold.user_id.to_string());
    assert_eq!(app.sim.stats().calls, 1);
    // An early member is on the last page: the search reads on until it is
    // found, and every page on the way is cached (the first one again).
    let early = &members[20];
    let e = app.by_number(early.number).await;
    assert_eq!(e.status, 200, "{}", e.body);
    assert_eq!(e.data()["user_id"], early.user_id.to_string());
    assert_eq!(
        app.sim.stats().by_kind.member_list,
        1 + 3,
        "500 members, 3 pages"
    );
    let between = &members[250];
    let f = app.by_number(between.number).await;
    assert_eq!(f.data()["cache_status"], "hit", "cached on the way");
    assert_eq!(app.sim.stats().by_kind.member_list, 4);
    // A member cached through a lookup by id is found by number too.
    let other = &app.sim.data.members[3];
    app.user(other.user_id).await;
    let c = app.by_number(other.number).await;
    assert_eq!(c.data()["cache_status"], "hit");
    assert_eq!(c.data()["user_id"], other.user_id.to_string());
}

async fn an_unknown_number_is_a_404_envelope(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let beyond = app.sim.data.members.iter().map(|m| m.number).max().unwrap() + 1000;
    let a = app.by_number(beyond).await;
    a.assert_error(404);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains(&beyond.to_string())
    );
}

async fn a_non_member_id_is_a_404_envelope_and_is_not_cached(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let a = app.user(999_999_999_999).await;
    a.assert_error(404);
    let s = app.stats().await;
    assert_eq!(s.data()["cached_users_count"], 0);
}

async fn concurrent_cold_lookups_share_one_upstream_call(kind: StoreKind) {
    let app = spawn_app(kind).await;
    app.sim.set_latency_ms(200);
    let id = app.sim.data.members[42].user_id;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (http, url) = (app.http.clone(), app.url(&format!("/api/users/{id}")));
        tasks.push(tokio::spawn(async move {
            http.get(url).send().await.unwrap().status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        app.sim.stats().by_kind.member_summary,
        1,
        "50 concurrent misses, one upstream call"
    );
}

async fn concurrent_lookups_of_a_cold_number_share_one_member_list_call(kind: StoreKind) {
    let app = spawn_app(kind).await;
    app.sim.set_latency_ms(200);
    let cold = &app.sim.data.members[app.sim.data.members.len() - 30];
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (http, url) = (
            app.http.clone(),
            app.url(&format!("/api/users/number/{}", cold.number)),
        );
        tasks.push(tokio::spawn(async move {
            let resp = http.get(url).send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            (status, body["data"]["user_id"].as_str().map(str::to_owned))
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), (200, Some(cold.user_id.to_string())));
    }
    assert_eq!(
        app.sim.stats().by_kind.member_list,
        1,
        "50 concurrent misses on one number, one member-list call"
    );
}

async fn an_unknown_number_is_remembered_and_costs_one_listing(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let beyond = app.sim.data.members.iter().map(|m| m.number).max().unwrap() + 1000;
    app.by_number(beyond).await.assert_error(404);
    // "Not found" only after the whole list was read: 500 members, 3 pages.
    assert_eq!(app.sim.stats().by_kind.member_list, 3);
    for other in [beyond, beyond + 1, 999_999] {
        app.by_number(other).await.assert_error(404);
    }
    assert_eq!(
        app.sim.stats().by_kind.member_list,
        3,
        "a whole listing proves absence for NEGATIVE_CACHE_TTL"
    );
    // Every member it read is cached: a real number is a hit now.
    let known = &app.sim.data.members[123];
    assert_eq!(
        app.by_number(known.number).await.data()["cache_status"],
        "hit"
    );
    // Clearing the cache forgets it, as it forgets "not a member" answers.
    app.clear().await;
    app.by_number(beyond).await.assert_error(404);
    assert_eq!(app.sim.stats().by_kind.member_list, 6);
}
