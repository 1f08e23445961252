//! Staying fresh: stale-while-revalidate, scheduled warm-up, and
//! the negative cache for ids that are not members.

use std::time::{Duration, Instant};

use serde_json::json;

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{StoreKind, TestApp, spawn_app};

on_both_stores!(
    a_stale_hit_is_served_at_once_and_refreshed_in_the_background,
    scheduled_warm_up_refreshes_members_past_the_soft_ttl,
);

/// Waits until `cond` holds, for at most `secs` seconds.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[tokio::test]
async fn a_non_member_is_asked_upstream_once_then_answered_from_memory() {
    let app = spawn_app(StoreKind::Embedded).await;
    for _ in 0..3 {
        app.user(777_777_777_777).await.assert_error(404);
    }
    assert_eq!(app.sim.stats().by_kind.member_summary, 1);
    // Clearing the cache forgets negative answers too.
    app.clear().await;
    app.user(777_777_777_777).await.assert_error(404);
    assert_eq!(app.sim.stats().by_kind.member_summary, 2);
}

async fn a_stale_hit_is_served_at_once_and_refreshed_in_the_background(kind: StoreKind) {
    let app = TestApp::builder()
        .store(kind)
        .var("CACHE_SOFT_TTL", "1")
        .var("WARMUP_INTERVAL", "0")
        .spawn()
        .await;
    let m = app.sim.data.members[3].clone();
    let first = app.user(m.user_id).await;
    assert_eq!(first.data()["cache_status"], "miss");
    let cached_at = first.data()["cached_at"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let stale = app.user(m.user_id).await;
    assert_eq!(stale.data()["cache_status"], "hit", "served at once");
    assert!(
        eventually(5, || app.sim.stats().by_kind.member_summary == 2).await,
        "a background refresh was made"
    );
    let refreshed = loop {
        let a = app.user(m.user_id).await;
        if a.data()["updated_at"].as_i64().unwrap() > cached_at {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        refreshed.data()["cached_at"],
        cached_at,
        "cached_at is kept"
    );

    // A failing refresh keeps serving the last good record.
    app.sim.set_reject_ratio(1.0);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for _ in 0..3 {
        let a = app.user(m.user_id).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.data()["number"], m.number);
        assert_eq!(a.data()["cache_status"], "hit");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scheduled_warm_up_refreshes_members_past_the_soft_ttl(kind: StoreKind) {
    let mut setup = TestApp::builder()
        .store(kind)
        .members(60)
        .var("CACHE_SOFT_TTL", "1")
        .var("WARMUP_INTERVAL", "1")
        .var("WARMUP_BATCH", "5");
    setup.sim.no_member_list = true;
    let app = setup.spawn().await;
    let synced = app.sync(json!({})).await;
    assert_eq!(synced.status, 200, "{}", synced.body);
    let after_sync = app.sim.stats().by_kind.member_summary;
    // Nobody asks for anything: the warm-up alone refreshes the oldest,
    // a batch at a time.
    assert!(
        eventually(8, || app.sim.stats().by_kind.member_summary
            >= after_sync + 5)
        .await,
        "warm-up refreshed members ({} summary calls after sync)",
        app.sim.stats().by_kind.member_summary - after_sync
    );
    let page = app.get("/api/users?page_size=200").await;
    assert_eq!(
        page.data()["pagination"]["total_count"],
        synced.data()["success_count"],
        "refreshing keeps every member cached"
    );
}
