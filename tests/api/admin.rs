//! Admin endpoints: closed without a token, and `DELETE /api/users/cache`
//! removes everything it made.

use serde_json::json;

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{ADMIN_TOKEN, StoreKind, TestApp, spawn_app};

on_both_stores!(
    clearing_removes_every_member_and_index,
    stats_count_hits_misses_and_upstream_calls
);

#[tokio::test]
async fn admin_endpoints_refuse_missing_or_wrong_tokens() {
    let app = spawn_app(StoreKind::Embedded).await;
    let no_token = app
        .http
        .post(app.url("/api/users/sync"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let wrong = app
        .http
        .delete(app.url("/api/users/cache"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["code"], 401);
    assert!(body["data"].is_null());
    assert!(
        !body.to_string().contains(ADMIN_TOKEN),
        "the token is never echoed"
    );
    assert_eq!(
        app.sim.stats().calls,
        0,
        "a refused sync spends no upstream budget"
    );
}

#[tokio::test]
async fn admin_endpoints_are_closed_when_no_token_is_configured() {
    let app = TestApp::builder().var("ADMIN_TOKEN", "").spawn().await;
    let r = app
        .http
        .post(app.url("/api/users/sync"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .http
        .delete(app.url("/api/users/cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

async fn clearing_removes_every_member_and_index(kind: StoreKind) {
    let app = TestApp::builder().store(kind).members(60).spawn().await;
    app.sync(json!({})).await;
    let n = app.sim.data.members.len() as u64;
    let probe = &app.sim.data.members[5];
    assert_eq!(
        app.by_number(probe.number).await.data()["cache_status"],
        "hit"
    );

    let cleared = app.clear().await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    assert_eq!(cleared.body["message"], "缓存已清空");
    assert_eq!(cleared.data()["deleted_users"], n);
    // Every member hash, and at least the three index directories (Redis)
    // or the original layout's number keys (the embedded store's count).
    assert!(
        cleared.data()["deleted_keys"].as_u64().unwrap() >= n + 3,
        "{}",
        cleared.body
    );

    if kind == StoreKind::Redis {
        let left: Vec<String> = app
            .redis_keys()
            .await
            .into_iter()
            .filter(|k| k.starts_with("zsxq:"))
            // The fleet's upstream budget is rate-limit state shared with
            // other replicas, not cache: a clear must not reset it.
            .filter(|k| k != zsxq_cache::store::keys::FLEET_BUDGET)
            // Nor the installation's device id: the upstream must keep
            // seeing the same device.
            .filter(|k| k != zsxq_cache::store::keys::DEVICE_ID)
            .collect();
        assert!(left.is_empty(), "keys left after clear: {left:?}");
    }
    let page = app.get("/api/users").await;
    assert_eq!(page.data()["pagination"]["total_count"], 0);
    assert_eq!(app.stats().await.data()["cached_users_count"], 0);
    // The number index is gone too: the lookup goes upstream again.
    let again = app.by_number(probe.number).await;
    assert_eq!(again.data()["cache_status"], "miss");
}

async fn stats_count_hits_misses_and_upstream_calls(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let ids: Vec<u64> = app
        .sim
        .data
        .members
        .iter()
        .take(4)
        .map(|m| m.user_id)
        .collect();
    for id in &ids {
        app.user(*id).await; // 4 misses
    }
    for id in &ids[..2] {
        app.user(*id).await; // 2 hits
    }
    let s = app.stats().await;
    assert_eq!(s.status, 200);
    assert_eq!(s.body["message"], "查询成功");
    let d = s.data();
    assert_eq!(d["total_requests"], 6);
    assert_eq!(d["cache_hits"], 2);
    assert_eq!(d["cache_misses"], 4);
    assert_eq!(d["cache_hit_rate"], 33.33);
    assert_eq!(d["api_calls"], app.sim.stats().calls);
    assert_eq!(d["cached_users_count"], 4);
    assert!(
        d["redis_memory_usage"]
            .as_str()
            .is_some_and(|m| !m.is_empty() && m != "unavailable"),
        "{d}"
    );
    assert!(d["last_sync_time"].is_null(), "no sync yet");
}
