//! Bad input gets a clear 4xx envelope and changes nothing.

use serde_json::json;

use zsxq_test_support::{StoreKind, spawn_app};

#[tokio::test]
async fn bad_query_and_path_parameters_are_400_envelopes() {
    let app = spawn_app(StoreKind::Embedded).await;
    for path in [
        "/api/users/abc",
        "/api/users/12a",
        "/api/users/-5",
        "/api/users/0",
        "/api/users/007",
        "/api/users/99999999999999999999999",
        "/api/users/%20",
        "/api/users/number/x1",
        "/api/users/number/0",
        "/api/users/number/1.5",
        "/api/users?page=0",
        "/api/users?page=-1",
        "/api/users?page=abc",
        "/api/users?page_size=0",
        "/api/users?page_size=201",
        "/api/users?sort_by=name",
        "/api/users?sort_by=",
        "/api/users?order=up",
    ] {
        let a = app.get(path).await;
        a.assert_error(400);
    }
    assert_eq!(
        app.sim.stats().calls,
        0,
        "no bad request reached the upstream"
    );
}

#[tokio::test]
async fn page_size_limits_are_inclusive() {
    let app = spawn_app(StoreKind::Embedded).await;
    assert_eq!(app.get("/api/users?page_size=200").await.status, 200);
    assert_eq!(app.get("/api/users?page_size=1&page=1").await.status, 200);
}

#[tokio::test]
async fn bad_sync_bodies_are_400_envelopes_and_sync_nothing() {
    let app = spawn_app(StoreKind::Embedded).await;
    for body in [
        json!({"concurrency": 0}),
        json!({"concurrency": 11}),
        json!({"concurrency": "5"}),
        json!({"concurrency": 2.5}),
        json!({"force": "yes"}),
        json!({"force": 1}),
        json!({"forse": true}),
        json!([1, 2]),
    ] {
        let a = app.sync(body.clone()).await;
        a.assert_error(400);
    }
    let raw = app.sync_raw("{not json").await;
    assert_eq!(raw.status(), 400);
    assert_eq!(app.sim.stats().calls, 0);
    assert_eq!(app.stats().await.data()["cached_users_count"], 0);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_envelopes() {
    let app = spawn_app(StoreKind::Embedded).await;
    app.get("/api/nothing").await.assert_error(404);
    let r = app
        .http
        .put(app.url("/api/users/sync"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], 405);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = spawn_app(StoreKind::Embedded).await;
    let big = format!("{{\"force\": true, \"pad\": \"{}\"}}", "x".repeat(200_000));
    let r = app.sync_raw(big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(app.sim.stats().calls, 0);
}
