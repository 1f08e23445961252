//! The HTTP edge: the per-client rate limit, CORS,
//! envelopes for framework rejections, and the OpenAPI document.

use std::collections::BTreeSet;

use zsxq_test_support::{ADMIN_TOKEN, StoreKind, TestApp, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_client_shared_across_connections_and_spares_health_checks() {
    let app = TestApp::builder().var("HTTP_RATE_LIMIT", "5").spawn().await;
    // Two clients with their own connection pools: one IP, one allowance.
    let (a, b) = (reqwest::Client::new(), reqwest::Client::new());
    for i in 0..5 {
        let client = if i % 2 == 0 { &a } else { &b };
        let r = client.get(app.url("/api/users")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    let refused = b
        .get(app.url("/api/users/cache/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], 429);
    assert!(body["data"].is_null());
    assert!(body["message"].as_str().unwrap().contains("5 a minute"));
    // Admin endpoints are limited too (no brute-forcing the token).
    let admin = a
        .delete(app.url("/api/users/cache"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 429);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(a.get(app.url(path)).send().await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn there_is_no_rate_limit_by_default() {
    let app = spawn_app(StoreKind::Embedded).await;
    for _ in 0..100 {
        assert_eq!(app.get("/api/users/cache/stats").await.status, 200);
    }
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app = TestApp::builder()
        .var(
            "CORS_ORIGINS",
            "https://ops.example.com,http://localhost:5173",
        )
        .spawn()
        .await;
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/users/sync"))
        .header("origin", "https://ops.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let h = preflight.headers();
    assert_eq!(
        h.get("access-control-allow-origin").unwrap(),
        "https://ops.example.com"
    );
    let methods = h
        .get("access-control-allow-methods")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(methods.contains("POST") && methods.contains("DELETE"));
    let simple = app
        .http
        .get(app.url("/api/users"))
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers().get("access-control-allow-origin").unwrap(),
        "http://localhost:5173"
    );
    let stranger = app
        .http
        .get(app.url("/api/users"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        stranger
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn without_configured_origins_there_are_no_cors_headers() {
    let app = spawn_app(StoreKind::Embedded).await;
    let r = app
        .http
        .get(app.url("/api/users"))
        .header("origin", "https://ops.example.com")
        .send()
        .await
        .unwrap();
    assert!(
        !r.headers()
            .keys()
            .any(|k| k.as_str().starts_with("access-control-"))
    );
}

#[tokio::test]
async fn framework_rejections_are_envelopes() {
    let app = spawn_app(StoreKind::Embedded).await;
    let big = "x".repeat(100_000);
    let r = app.sync_raw(big).await;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.expect("an envelope");
    assert_eq!((status, body["code"].as_u64()), (413, Some(413)));
    assert!(body["message"].as_str().unwrap().contains("64 KiB"));
    // A query that is not valid percent-encoded UTF-8.
    app.get("/api/users?page=%FF%FE").await.assert_error(400);
    // A path segment that is not UTF-8.
    app.get("/api/users/%C3%28").await.assert_error(400);
}

#[tokio::test]
async fn the_openapi_document_is_served_and_describes_every_route() {
    let app = spawn_app(StoreKind::Embedded).await;
    let r = app
        .http
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut seen = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{userId}", "454881884228")
            .replace("{number}", "177");
        for method in item.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .http
                .request(method.clone(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert!(
                status != 405 && !(status == 404 && body.contains("no such endpoint")),
                "{method} {path} is documented but not routed ({status})"
            );
            seen.insert(format!("{method} {path}"));
        }
    }
    assert!(seen.len() >= 9, "{seen:?}");
}
