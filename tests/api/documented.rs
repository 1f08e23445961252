//! The product against an upstream that behaves as documented
//! (docs/UPSTREAM.md): a member list by join time only, members without
//! numbers, a ranking that hides a participant, a summary that describes
//! someone else, more members in one millisecond than a page holds.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{Answer, StoreKind, TestApp, spawn_app};

on_both_stores!(
    a_sync_of_500_members_costs_a_few_list_calls_and_no_member_call,
    members_without_a_number_are_cached_and_say_why,
    a_group_without_numbers_is_said_once_and_plainly,
    a_number_still_being_searched_for_is_a_503_never_a_404,
    a_ranking_with_a_hidden_participant_is_read_to_its_end_and_marked_incomplete,
    a_summary_of_somebody_else_is_never_cached_or_shown,
);

async fn a_sync_of_500_members_costs_a_few_list_calls_and_no_member_call(kind: StoreKind) {
    let app = TestApp::builder().store(kind).members(500).spawn().await;
    let started = Instant::now();
    let a = app.sync(json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let d = a.data();
    assert_eq!(d["sync_count"], 500, "{d}");
    assert_eq!(d["success_count"], 500);
    assert_eq!(d["listed_count"], 500);
    assert_eq!(d["complete"], true);
    let calls = app.sim.stats();
    println!(
        "sync of 500 members: {} member-list calls, {} per-member calls, {:?}",
        calls.by_kind.member_list,
        calls.by_kind.member_summary + calls.by_kind.member,
        started.elapsed()
    );
    assert!(calls.by_kind.member_list <= 5, "{calls:?}");
    assert_eq!(calls.by_kind.member_summary + calls.by_kind.member, 0);
    assert_eq!(d["member_list_pages"], calls.by_kind.member_list);
    // Every member is cached with the right number.
    let s = app.stats().await;
    assert_eq!(s.data()["cached_users_count"], 500);
    for m in app.sim.data.members.iter().step_by(41) {
        let got = app.by_number(m.number).await;
        assert_eq!(got.data()["user_id"], m.user_id.to_string());
        assert_eq!(got.data()["cache_status"], "hit");
    }
}

async fn members_without_a_number_are_cached_and_say_why(kind: StoreKind) {
    let mut setup = TestApp::builder().store(kind);
    setup.sim.unnumbered_ratio = 0.3;
    let app = setup.spawn().await;
    let without = app
        .sim
        .data
        .members
        .iter()
        .find(|m| !m.has_number)
        .expect("some members have no number");
    let a = app.user(without.user_id).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.data()["number"], Value::Null);
    let reason = a.data()["number_missing_reason"].as_str().unwrap();
    assert!(reason.contains("no number assigned"), "{reason}");
    assert_eq!(a.data()["cache_status"], "miss");
    let b = app.user(without.user_id).await;
    assert_eq!(b.data()["cache_status"], "hit", "cached like any member");
    assert_eq!(b.data()["number"], Value::Null);
    // Listed among the cached members, after every numbered one.
    app.sync(json!({})).await;
    let page = app
        .get("/api/users?page=1&page_size=200&sort_by=number&order=desc")
        .await;
    let first = &page.data()["users"][0];
    assert_eq!(first["number"], Value::Null, "{first}");
    assert!(
        first["number_missing_reason"]
            .as_str()
            .is_some_and(|r| r.contains("no number assigned"))
    );
    // A refund list: the rows carry the reason, the list stays complete
    // (there is no number to be had), and the exports say it too.
    let camp = app.sim.data.benchmark_camp().unwrap();
    let list = app.refund_list(camp.checkin_id, json!({})).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let rows = list.data()["refund_list"].as_array().unwrap();
    let unassigned: Vec<&Value> = rows
        .iter()
        .filter(|r| r["planet_number"].is_null())
        .collect();
    let expected = camp
        .participants
        .iter()
        .filter(|(id, _)| {
            app.sim
                .data
                .member_by_id(*id)
                .is_some_and(|m| !m.has_number)
        })
        .count();
    assert_eq!(unassigned.len(), expected);
    assert!(expected > 0);
    for r in &unassigned {
        assert!(
            r["number_missing_reason"]
                .as_str()
                .is_some_and(|t| t.contains("no number assigned")),
            "{r}"
        );
    }
    assert_eq!(
        list.data()["complete"],
        true,
        "{}",
        list.data()["incomplete_reasons"]
    );
    let csv = app
        .get_raw(&format!("/api/camps/{}/refund-list.csv", camp.checkin_id))
        .await
        .text()
        .await
        .unwrap();
    assert!(csv.contains("缺失：该成员没有星球编号"), "{csv}");
}

/// The kinds of `/readyz` notices, leaving out the one about Redis
/// persistence: the test servers run without it on purpose.
fn numbering_notices(ready: &Answer) -> Vec<String> {
    ready.data()["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["kind"].as_str())
        .filter(|kind| *kind != "marks_not_durable")
        .map(str::to_string)
        .collect()
}

async fn a_group_without_numbers_is_said_once_and_plainly(kind: StoreKind) {
    let mut setup = TestApp::builder().store(kind);
    setup.sim.unnumbered_ratio = 1.0;
    let app = setup.spawn().await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.data()["member_numbers"], "unknown");
    assert_eq!(numbering_notices(&ready), Vec::<String>::new());
    let s = app.sync(json!({})).await;
    assert_eq!(s.data()["success_count"], 500, "{}", s.body);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.data()["member_numbers"], "off");
    assert_eq!(
        numbering_notices(&ready),
        ["numbering_off"],
        "{}",
        ready.body
    );

    let camp = app.sim.data.benchmark_camp().unwrap();
    let list = app.refund_list(camp.checkin_id, json!({})).await;
    let stats = &list.data()["statistics"];
    assert_eq!(stats["numbered_count"], 0);
    assert!(stats["numbering_notice"].is_string(), "{stats}");
    // Rows are still told apart: user id, nickname and alias are there.
    for r in list.data()["refund_list"].as_array().unwrap() {
        assert!(r["planet_user_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(r["planet_nickname"].is_string() && r["planet_alias"].is_string());
    }
}

async fn a_number_still_being_searched_for_is_a_503_never_a_404(kind: StoreKind) {
    let app = TestApp::builder()
        .store(kind)
        .members(500)
        .var("NUMBER_SEARCH_WAIT_MS", "300")
        .spawn()
        .await;
    // Each member-list page takes 400 ms: the search cannot finish in time.
    app.sim.set_latency_ms(400);
    let early = &app.sim.data.members[10];
    let a = app.by_number(early.number).await;
    a.assert_error(503);
    let message = a.body["message"].as_str().unwrap();
    assert!(message.contains("reading the member list"), "{message}");
    // The search goes on; asking again finds the member, never a 404.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = app.by_number(early.number).await;
        if b.status == 200 {
            assert_eq!(b.data()["user_id"], early.user_id.to_string());
            break;
        }
        assert_eq!(b.status, 503, "{}", b.body);
        assert!(Instant::now() < deadline, "the search never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.sim.stats().by_kind.member_list,
        3,
        "one listing, however often it was asked"
    );
}

async fn a_ranking_with_a_hidden_participant_is_read_to_its_end_and_marked_incomplete(
    kind: StoreKind,
) {
    let app = spawn_app(kind).await;
    app.sim.set_hide_participant(true);
    let camp = app.sim.data.benchmark_camp().unwrap();
    let list = app.refund_list(camp.checkin_id, json!({})).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let d = list.data();
    let rows = d["refund_list"].as_array().unwrap();
    // A page one row short is not the end: everyone else is listed.
    assert_eq!(rows.len(), 166, "{}", rows.len());
    assert_eq!(d["complete"], false);
    // The hidden participant's days are missing from the total.
    let hidden_days =
        app.sim.data.expected_ranking(camp.checkin_id).unwrap()[zsxq_sim::HIDDEN_POSITION].1;
    assert_eq!(d["statistics"]["checkined_count"], camp.checkins());
    assert_eq!(
        d["statistics"]["ranking_checkins"],
        camp.checkins() - u64::from(hidden_days)
    );
    let reasons = d["incomplete_reasons"].to_string();
    assert!(
        reasons.contains("166") && reasons.contains(&camp.checkins().to_string()),
        "{reasons}"
    );
    // Read to the empty page: 8 ranking pages plus the empty one.
    assert_eq!(app.sim.stats().by_kind.ranking, 9);
    // The exports say so too.
    let csv = app
        .get_raw(&format!("/api/camps/{}/refund-list.csv", camp.checkin_id))
        .await;
    assert_eq!(csv.headers()["x-refund-list-complete"], "false");
}

async fn a_summary_of_somebody_else_is_never_cached_or_shown(kind: StoreKind) {
    let app = spawn_app(kind).await;
    app.sim.set_wrong_summary(true);
    let asked = &app.sim.data.members[12];
    let a = app.user(asked.user_id).await;
    a.assert_error(502);
    let s = app.stats().await;
    assert_eq!(
        s.data()["cached_users_count"],
        0,
        "nothing malformed is cached"
    );
    // In a refund list built from per-member calls the row says the number
    // could not be had; nobody gets another person's number.
    app.sim.set_member_list_allowed(false);
    let camp = app.sim.data.benchmark_camp().unwrap();
    let list = app.refund_list(camp.checkin_id, json!({})).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.data()["complete"], false);
    for r in list.data()["refund_list"].as_array().unwrap() {
        assert_eq!(r["planet_number"], Value::Null, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_after_a_whole_listing_does_not_turn_members_into_nobody() {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .var("NEAR_CACHE_MB", "0")
        .spawn()
        .await;
    let beyond = app.sim.data.members.iter().map(|m| m.number).max().unwrap() + 7;
    app.by_number(beyond).await.assert_error(404);
    let listing = app.sim.stats().by_kind.member_list;
    // Redis loses everything the listing cached.
    let mut conn = app.redis_conn().await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    // The listing saw this number: it is searched for again, not denied.
    let known = &app.sim.data.members[77];
    let a = app.by_number(known.number).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.data()["user_id"], known.user_id.to_string());
    // The number nobody holds is still known to be nobody's, at no cost.
    let before = app.sim.stats().by_kind.member_list;
    app.by_number(beyond).await.assert_error(404);
    assert_eq!(app.sim.stats().by_kind.member_list, before);
    assert!(before > listing);
}
