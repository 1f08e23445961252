//! `POST /api/users/sync`: a sync that learns the ids from the upstream.

use serde_json::json;

use zsxq_test_support::Fault;

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{StoreKind, TestApp};

on_both_stores!(
    a_fresh_sync_caches_every_member_through_the_member_list,
    a_sync_falls_back_to_rankings_when_listing_is_refused,
    a_sync_of_many_pages_holds_one_page_at_a_time,
);

async fn a_fresh_sync_caches_every_member_through_the_member_list(kind: StoreKind) {
    let app = TestApp::builder().store(kind).members(450).spawn().await;
    let n = app.sim.data.members.len() as u64;

    let a = app.sync(json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["message"], "同步完成");
    let d = a.data();
    assert_eq!(d["sync_count"], n);
    assert_eq!(d["success_count"], n);
    assert_eq!(d["failed_count"], 0);
    assert_eq!(d["skipped_count"], 0);
    assert!(d["duration_ms"].is_u64());
    assert_eq!(d["failed_users"], json!([]));
    // 450 members, 200 a page: 3 calls, not 450.
    assert_eq!(app.sim.stats().calls, n.div_ceil(200));

    // Every number is right, served from the cache.
    for m in app.sim.data.members.iter().step_by(37) {
        let got = app.by_number(m.number).await;
        assert_eq!(got.data()["user_id"], m.user_id.to_string());
        assert_eq!(got.data()["cache_status"], "hit");
    }

    // force=false skips what is cached; force=true refreshes it all.
    let b = app.sync(json!({"force": false})).await;
    assert_eq!(b.data()["sync_count"], 0);
    assert_eq!(b.data()["skipped_count"], n);
    let c = app.sync(json!({"force": true, "concurrency": 3})).await;
    assert_eq!(c.data()["sync_count"], n);
    assert_eq!(c.data()["success_count"], n);
    assert_eq!(c.data()["skipped_count"], 0);

    let s = app.stats().await;
    assert_eq!(s.data()["cached_users_count"], n);
    assert!(
        s.data()["last_sync_time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}

async fn a_sync_falls_back_to_rankings_when_listing_is_refused(kind: StoreKind) {
    let mut setup = TestApp::builder().store(kind).members(200);
    setup.sim.no_member_list = true;
    let app = setup.spawn().await;
    let mut participants: Vec<u64> = app
        .sim
        .data
        .camps
        .iter()
        .flat_map(|c| c.participants.iter().map(|p| p.0))
        .filter(|id| app.sim.data.member_by_id(*id).is_some())
        .collect();
    participants.sort_unstable();
    participants.dedup();

    let departed: Vec<u64> = app.sim.data.departed.iter().map(|d| d.user_id).collect();
    assert!(
        !departed.is_empty(),
        "the simulator has former members in a ranking"
    );

    let a = app.sync(json!({"concurrency": 5})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let d = a.data();
    assert_eq!(d["source"], "rankings");
    assert_eq!(d["success_count"], participants.len() as u64);
    // Former members cannot be fetched: reported one by one, not hidden.
    assert_eq!(d["failed_count"], departed.len() as u64);
    let mut failed: Vec<u64> = d["failed_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(
                f["error"].as_str().is_some_and(|e| e.contains("1037")),
                "{f}"
            );
            f["user_id"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    failed.sort_unstable();
    let mut want = departed.clone();
    want.sort_unstable();
    assert_eq!(failed, want);
    assert_eq!(
        d["success_count"].as_u64().unwrap() + d["failed_count"].as_u64().unwrap(),
        d["sync_count"].as_u64().unwrap()
    );
    let stats = app.sim.stats();
    assert_eq!(stats.by_kind.member_list, 1, "the refusal is asked once");
    assert_eq!(
        stats.by_kind.member_summary,
        d["sync_count"].as_u64().unwrap()
    );

    for id in participants.iter().step_by(11) {
        let m = app.sim.data.member_by_id(*id).unwrap();
        let got = app.user(*id).await;
        assert_eq!(got.data()["cache_status"], "hit");
        assert_eq!(got.data()["number"], m.number);
    }
    // The refusal is remembered: a second sync does not ask for the list again.
    let b = app.sync(json!({})).await;
    assert_eq!(b.status, 200);
    assert_eq!(b.data()["skipped_count"], participants.len() as u64);
    assert_eq!(app.sim.stats().by_kind.member_list, 1);
}

/// A write whose answer comes after the breaker stopped waiting has still
/// landed: the report must not call those members failed (`cached_users_count`
/// would then disagree with `success_count`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_late_is_confirmed_and_reported_as_done() {
    let app = TestApp::builder().members(40).faulty_store().spawn().await;
    app.store_fault
        .as_ref()
        .expect("faulty store")
        .set(Fault::SlowWrites);
    let a = app.sync(json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let d = a.data();
    assert_eq!(d["success_count"], 40, "{d}");
    assert_eq!(d["failed_count"], 0, "{d}");
    app.store_fault.as_ref().unwrap().set(Fault::None);
    assert_eq!(app.stats().await.data()["cached_users_count"], 40);
}

/// The member list is read and written a page at a time: a group of six
/// pages is synced whole while the sync never holds more than one page
/// (200 members), and the near cache is left to lookups. A sync that
/// gathered the group before writing it, or held a record per member, would
/// report the group's size here.
async fn a_sync_of_many_pages_holds_one_page_at_a_time(kind: StoreKind) {
    let app = TestApp::builder().store(kind).members(1_150).spawn().await;
    let n = app.sim.data.members.len() as u64;
    for body in [json!({}), json!({"force": true})] {
        let a = app.sync(body).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let d = a.data();
        assert_eq!(d["listed_count"], n, "{d}");
        assert_eq!(d["success_count"], n, "{d}");
        assert_eq!(d["member_list_pages"], n.div_ceil(200), "{d}");
        let held = d["held_members_peak"].as_u64().unwrap();
        assert!(
            (1..=200).contains(&held),
            "held {held} members at once: {d}"
        );
    }
    assert_eq!(app.stats().await.data()["cached_users_count"], n);
    // Nobody looked anyone up: the syncs filled the store, not the near cache.
    assert_eq!(app.metric("zsxq_near_cache_entries").await, 0.0);
    let m = &app.sim.data.members[3];
    assert_eq!(app.user(m.user_id).await.data()["number"], m.number);
    assert_eq!(app.metric("zsxq_near_cache_entries").await, 1.0);
}

/// A sync while every write fails reports each failure in its count but
/// lists only the first hundred by name: the last reports are kept for
/// polling, and a list per member would keep the whole group in each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sync_counts_every_failure_and_lists_a_hundred() {
    let app = TestApp::builder().members(450).faulty_store().spawn().await;
    let n = app.sim.data.members.len() as u64;
    app.store_fault
        .as_ref()
        .expect("faulty store")
        .set(Fault::Failing);
    let a = app.sync(json!({"force": true})).await;
    app.store_fault.as_ref().unwrap().set(Fault::None);
    assert_eq!(a.status, 200, "{}", a.body);
    let d = a.data();
    assert_eq!(d["failed_count"], n, "{d}");
    assert_eq!(d["success_count"], 0, "{d}");
    assert_eq!(d["failed_users"].as_array().unwrap().len(), 100, "{d}");
    let unlisted = n - 100;
    assert!(
        d["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains(&format!("{unlisted} more failed"))),
        "{d}"
    );
}
