//! Secret redaction: the upstream token, the admin token
//! and a Redis password never appear in any log line (at `RUST_LOG=debug`)
//! or any answer, whatever goes wrong: wrong admin tokens, an upstream that
//! rejects our token, broken upstream answers, an unreachable Redis.

use std::time::Duration;

use serde_json::json;
use zsxq_sim::{SimConfig, SimFault};
use zsxq_test_support::{Service, TestApp};

const UPSTREAM_TOKEN: &str = "upstream-SECRET-tok-8c1e5b2f";
const WRONG_UPSTREAM_TOKEN: &str = "stale-SECRET-tok-77aa01";
const ADMIN_TOKEN: &str = "admin-SECRET-tok-5f0d9e3a21";
const REDIS_PASSWORD: &str = "redis-SECRET-pw-31c7";

/// Every secret of this test, for the final grep.
const SECRETS: [&str; 4] = [
    UPSTREAM_TOKEN,
    WRONG_UPSTREAM_TOKEN,
    ADMIN_TOKEN,
    REDIS_PASSWORD,
];

/// Sends a request and returns status and body text.
async fn call(req: reqwest::RequestBuilder) -> (u16, String) {
    let r = req.send().await.expect("answers");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// A forced sync with the right admin token.
async fn forced_sync(http: &reqwest::Client, service: &Service) -> (u16, String) {
    call(
        http.post(service.url("/api/users/sync"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"force": true})),
    )
    .await
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} contains a secret ({}…)",
            &secret[..6]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_password_reaches_a_log_line_or_an_answer() {
    // Every variable of both runs, secrets included, and logs at debug.
    let env = TestApp::builder()
        .sim(SimConfig {
            token: UPSTREAM_TOKEN.to_string(),
            members: 60,
            ..SimConfig::for_tests()
        })
        .admin_token(ADMIN_TOKEN)
        .var("RUST_LOG", "debug")
        .var("API_MAX_RETRIES", "1")
        .var("API_TIMEOUT_MS", "500")
        .environment()
        .await
        .expect("environment");
    let sim = &env.sim;
    let http = reqwest::Client::new();
    let mut answers = Vec::new();

    // 1. The right upstream token, as a cookie: success and failure paths.
    let mut good = Service::start(env!("CARGO_BIN_EXE_zsxq-cache"), &env, &[]).await;
    let member = &sim.data.members[0];
    answers.push(call(http.get(good.url(&format!("/api/users/{}", member.user_id)))).await);
    answers.push(call(http.get(good.url(&format!("/api/users/number/{}", member.number)))).await);
    for auth in [
        "Bearer wrong-admin-token-000000",
        "Bearer ",
        ADMIN_TOKEN,
        "bearer admin",
    ] {
        let (status, body) = call(
            http.post(good.url("/api/users/sync"))
                .header("authorization", auth)
                .json(&json!({})),
        )
        .await;
        assert_eq!(status, 401, "{auth}: {body}");
        answers.push((status, body));
    }
    answers.push(
        call(
            http.post(good.url("/api/users/sync"))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await,
    );
    for fault in [
        SimFault::Garbage,
        SimFault::Http500,
        SimFault::MissingFields,
    ] {
        sim.set_fault(fault);
        let (status, body) =
            call(http.get(good.url(&format!("/api/users/{}", sim.data.members[30].user_id)))).await;
        assert_eq!(status, 502, "{fault:?}: {body}");
        answers.push((status, body));
        answers.push(forced_sync(&http, &good).await);
    }
    sim.set_fault(SimFault::None);
    let (status, body) = forced_sync(&http, &good).await;
    assert_eq!(status, 200, "{body}");
    answers.push((status, body));
    answers.push(call(http.get(good.url("/api/users/cache/stats"))).await);
    answers.push(call(http.get(good.url("/readyz"))).await);
    good.signal("TERM");
    assert!(good.wait_exit(Duration::from_secs(10)).await.is_some());
    let good_logs = good.logs();

    // 2. A token the upstream rejects (401), sent as a header, and a Redis
    //    with a password that cannot be reached.
    let closed = format!(
        "127.0.0.1:{}",
        zsxq_test_support::free_port().expect("a free port")
    );
    let mut bad = Service::start(
        env!("CARGO_BIN_EXE_zsxq-cache"),
        &env,
        &[
            ("ZSXQ_ACCESS_TOKEN", String::new()),
            ("ZSXQ_AUTHORIZATION", WRONG_UPSTREAM_TOKEN.to_string()),
            ("REDIS_URL", format!("redis://:{REDIS_PASSWORD}@{closed}/0")),
        ],
    )
    .await;
    let (status, body) =
        call(http.get(bad.url(&format!("/api/users/{}", sim.data.members[1].user_id)))).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("token"),
        "says the token was rejected: {body}"
    );
    answers.push((status, body));
    let (status, body) = call(
        http.post(bad.url("/api/users/sync"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({})),
    )
    .await;
    assert!(status >= 500, "{body}");
    answers.push((status, body));
    answers.push(call(http.get(bad.url("/api/users/cache/stats"))).await);
    answers.push(call(http.get(bad.url("/api/users"))).await);
    answers.push(call(http.get(bad.url("/readyz"))).await);
    bad.signal("TERM");
    assert!(bad.wait_exit(Duration::from_secs(10)).await.is_some());
    let bad_logs = bad.logs();

    let lines = good_logs.lines().count() + bad_logs.lines().count();
    println!(
        "[secret redaction] {lines} log lines at RUST_LOG=debug and {} answers checked for 4 secrets",
        answers.len()
    );
    // The logs say what happened, so the grep below is meaningful.
    assert!(lines > 20, "{good_logs}\n{bad_logs}");
    assert!(
        bad_logs.contains("upstream rejected our token"),
        "{bad_logs}"
    );
    assert!(good_logs.contains("malformed"), "{good_logs}");
    assert!(bad_logs.to_lowercase().contains("redis") || bad_logs.contains("store"));
    assert_no_secret("the logs of the healthy run", &good_logs);
    assert_no_secret("the logs of the rejected-token run", &bad_logs);
    for (status, body) in &answers {
        assert_no_secret(&format!("an answer ({status})"), body);
        let envelope: serde_json::Value = serde_json::from_str(body).expect("an envelope");
        assert_eq!(envelope["code"], *status);
    }
}
