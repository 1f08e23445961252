//! Browser-origin attacks and anonymous reads: a page that rebinds its name
//! to the service, a cross-site form or `text/plain` POST, a body-less POST
//! from another site, and reads without `READ_TOKEN`. Each refusal is the
//! envelope and reaches neither the cache nor the upstream.

use serde_json::json;

use zsxq_test_support::{ADMIN_TOKEN, Answer, Service, StoreKind, TestApp, spawn_app};

const READ: &str = "read-token-for-tests-0123";

async fn send(request: reqwest::RequestBuilder) -> (Answer, reqwest::header::HeaderMap) {
    let resp = request.send().await.expect("request");
    let headers = resp.headers().clone();
    (TestApp::answer(resp).await, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_page_gets_421_on_every_route_and_costs_nothing() {
    let app = spawn_app(StoreKind::Embedded).await;
    let member = &app.sim.data.members[3];
    for path in [
        format!("/api/users/{}", member.user_id), // the hot route, before routing
        format!("/api/users/number/{}", member.number),
        "/api/users".to_string(),
        format!("/api/camps/{}/refund-list.csv", app.benchmark_camp()),
        "/".to_string(),
    ] {
        for host in [
            "attacker.example",
            "attacker.example:3013",
            "127.0.0.1.nip.io",
        ] {
            let (a, _) = send(app.http.get(app.url(&path)).header("host", host)).await;
            a.assert_error(421);
            assert!(
                a.body["message"]
                    .as_str()
                    .unwrap()
                    .contains("ALLOWED_HOSTS"),
                "{}",
                a.body
            );
        }
    }
    let (a, _) = send(
        app.http
            .post(app.url(&format!("/api/camps/{}/refund-list", app.benchmark_camp())))
            .header("host", "attacker.example")
            .json(&json!({"required_days": 7})),
    )
    .await;
    a.assert_error(421);
    assert_eq!(app.sim.stats().calls, 0, "nothing reached the upstream");
    // Probes address a replica by IP; they stay open, and so does the
    // service under its own names.
    for host in ["10.1.2.3:3013", "attacker.example"] {
        let (a, _) = send(app.http.get(app.url("/healthz")).header("host", host)).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    for host in ["localhost:3013", "127.0.0.1", "LOCALHOST"] {
        let (a, _) = send(app.http.get(app.url("/api/users")).header("host", host)).await;
        assert_eq!(a.status, 200, "{host}: {}", a.body);
    }
    let (a, _) = send(
        app.http
            .get(app.url(&format!("/api/users/{}", member.user_id))),
    )
    .await;
    assert_eq!(a.data()["number"], member.number);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_adds_the_public_name() {
    let app = TestApp::builder()
        .var("ALLOWED_HOSTS", "zsxq-cache.example.com")
        .spawn()
        .await;
    let (a, _) = send(
        app.http
            .get(app.url("/api/users"))
            .header("host", "zsxq-cache.example.com"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (a, _) = send(
        app.http
            .get(app.url("/api/users"))
            .header("host", "other.example.com"),
    )
    .await;
    a.assert_error(421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_are_refused_before_they_spend_the_budget() {
    let app = spawn_app(StoreKind::Embedded).await;
    let url = app.url(&format!("/api/camps/{}/refund-list", app.benchmark_camp()));
    // What a cross-site <form> or fetch(no-cors) can send without a preflight.
    for content_type in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (a, _) = send(
            app.http
                .post(&url)
                .header("content-type", content_type)
                .body(r#"{"required_days": 7}"#),
        )
        .await;
        a.assert_error(415);
        assert!(
            a.body["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{}",
            a.body
        );
    }
    // A body without a type, on the admin route too.
    let (a, _) = send(app.http.post(&url).body(r#"{"required_days": 7}"#)).await;
    a.assert_error(415);
    let (a, _) = send(
        app.http
            .post(app.url("/api/users/sync"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    a.assert_error(415);
    // A body-less POST needs no preflight either: its Origin gives it away.
    for origin in ["https://attacker.example", "null"] {
        let (a, _) = send(app.http.post(&url).header("origin", origin)).await;
        a.assert_error(403);
        let (a, _) = send(
            app.http
                .post(&url)
                .header("origin", origin)
                .json(&json!({"required_days": 7})),
        )
        .await;
        a.assert_error(403);
    }
    assert_eq!(app.sim.stats().calls, 0, "no refusal reached the upstream");
    assert_eq!(app.stats().await.data()["cached_users_count"], 0);

    // The page's own requests and plain API clients go through.
    let (a, _) = send(
        app.http
            .post(&url)
            .header("origin", format!("http://{}", app.addr))
            .json(&json!({"required_days": 7})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (a, _) = send(app.http.post(&url)).await;
    assert_eq!(
        a.status, 200,
        "a body-less POST takes the defaults: {}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_token_every_api_read_needs_it_and_probes_and_the_page_stay_open() {
    let app = TestApp::builder().var("READ_TOKEN", READ).spawn().await;
    let member = &app.sim.data.members[7];
    let reads = [
        format!("/api/users/{}", member.user_id),
        format!("/api/users/number/{}", member.number),
        "/api/users".to_string(),
        "/api/users/cache/stats".to_string(),
        "/api/camps".to_string(),
        format!("/api/camps/{}/refund-list/text", app.benchmark_camp()),
        "/api/openapi.json".to_string(),
    ];
    for path in &reads {
        for auth in [None, Some("Bearer wrong-token-0123456789"), Some(READ)] {
            let mut request = app.http.get(app.url(path));
            if let Some(auth) = auth {
                request = request.header("authorization", auth); // READ: no "Bearer "
            }
            let (a, headers) = send(request).await;
            a.assert_error(401);
            assert!(
                a.body["message"].as_str().unwrap().contains("READ_TOKEN"),
                "{}",
                a.body
            );
            assert!(headers.contains_key("www-authenticate"));
        }
    }
    let (a, _) = send(
        app.http
            .post(app.url(&format!("/api/camps/{}/refund-list", app.benchmark_camp())))
            .json(&json!({})),
    )
    .await;
    a.assert_error(401);
    assert_eq!(
        app.sim.stats().calls,
        0,
        "refused reads cost no upstream call"
    );

    for token in [READ, ADMIN_TOKEN] {
        let (a, _) = send(
            app.http
                .get(app.url(&format!("/api/users/{}", member.user_id)))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(a.data()["number"], member.number, "{}", a.body);
        let resp = app
            .http
            .get(app.url(&format!(
                "/api/camps/{}/refund-list/text",
                app.benchmark_camp()
            )))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // The read token opens reads, not the admin routes.
    let (a, _) = send(
        app.http
            .delete(app.url("/api/users/cache"))
            .bearer_auth(READ),
    )
    .await;
    a.assert_error(401);
    assert!(a.body["message"].as_str().unwrap().contains("ADMIN_TOKEN"));
    let (a, _) = send(
        app.http
            .delete(app.url("/api/users/cache"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);

    for open in ["/healthz", "/readyz"] {
        assert_eq!(app.get(open).await.status, 200, "{open}");
    }
    for page in ["/", "/assets/app.js", "/metrics"] {
        let resp = app.http.get(app.url(page)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{page}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains(&member.name), "{page} shows no member");
    }
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        !metrics.contains(&member.user_id.to_string()),
        "no member id in /metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_token_never_appears_in_logs_or_answers() {
    let env = TestApp::builder()
        .var("READ_TOKEN", READ)
        .var("RUST_LOG", "debug")
        .environment()
        .await
        .expect("environment");
    let (sim, dir) = (&env.sim, env.dir());
    let service = Service::start(env!("CARGO_BIN_EXE_zsxq-cache"), &env, &[]).await;
    let http = reqwest::Client::new();
    let member = &sim.data.members[2];
    let mut answers = String::new();
    for auth in [
        format!("Bearer {READ}"),
        format!("Bearer {READ}x"),
        READ.to_string(),
        format!("bearer {READ}"),
    ] {
        for path in [
            format!("/api/users/{}", member.user_id),
            "/api/users".to_string(),
            "/api/nothing".to_string(),
        ] {
            let resp = http
                .get(service.url(&path))
                .header("authorization", &auth)
                .send()
                .await
                .expect("answers");
            answers.push_str(&format!("{:?}", resp.headers()));
            answers.push_str(&resp.text().await.expect("body"));
        }
    }
    let logs = service.logs();
    assert!(logs.contains("answered"), "debug logs were written: {logs}");
    assert!(!logs.contains(READ), "the read token is in the logs");
    assert!(!answers.contains(READ), "the read token is in an answer");
    // A start-up refusal names the variable, not the value.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_zsxq-cache"))
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("ZSXQ_GROUP_ID", "1")
        .env("ZSXQ_ACCESS_TOKEN", "sim-token")
        .env("READ_TOKEN", "short-secret")
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("READ_TOKEN") && !said.contains("short-secret"),
        "{said}"
    );
}
