//! Structured logs: with `LOG_FORMAT=json` the binary
//! writes one JSON object a line, and every line made while serving a
//! request — the upstream retries of the fetch it started included —
//! carries that request's id, the one the client sent when it is a plain
//! token, a fresh UUID otherwise; either way it is echoed in `X-Request-Id`.

use std::time::Duration;

use serde_json::Value;
use zsxq_sim::SimFault;
use zsxq_test_support::{Service, TestApp};

const GIVEN_ID: &str = "trace-7f3a_0042";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_on_every_line_of_the_request() {
    let env = TestApp::builder()
        .members(20)
        .var("LOG_FORMAT", "json")
        .var("RUST_LOG", "info")
        .var("API_MAX_RETRIES", "2")
        .environment()
        .await
        .expect("environment");
    let sim = &env.sim;
    let mut service = Service::start(env!("CARGO_BIN_EXE_zsxq-cache"), &env, &[]).await;
    let http = reqwest::Client::new();

    // An upstream answering HTTP 500: the lookup's fetch retries (warnings
    // logged in the fetch's own task) and the request fails with 502.
    sim.set_fault(SimFault::Http500);
    let member = &sim.data.members[0];
    let resp = http
        .get(service.url(&format!("/api/users/{}", member.user_id)))
        .header("x-request-id", GIVEN_ID)
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-request-id"], GIVEN_ID, "echoed");

    // A hostile id is replaced, never logged.
    let hostile = "evil\"}{\"level\":\"ERROR";
    let resp = http
        .get(service.url("/api/users/cache/stats"))
        .header("x-request-id", hostile)
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    let replaced = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");

    // Without an id, one is made up and echoed.
    let resp = http
        .get(service.url("/healthz"))
        .send()
        .await
        .expect("answers");
    assert!(resp.headers().contains_key("x-request-id"));

    service.signal("TERM");
    assert!(service.wait_exit(Duration::from_secs(10)).await.is_some());
    let logs = service.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let with_id = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id)
            .collect()
    };
    let ours = with_id(GIVEN_ID);
    println!(
        "[json logs] {} lines, {} of them for request {GIVEN_ID}:\n{}",
        lines.len(),
        ours.len(),
        ours.iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        ours.iter()
            .any(|l| l["message"] == "upstream call failed, retrying"),
        "the fetch task's retries carry the id: {logs}"
    );
    assert!(
        ours.iter()
            .any(|l| l["message"] == "answered" && l["status"] == 502),
        "the closing line carries the id: {logs}"
    );
    for line in &ours {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    assert_eq!(
        with_id(&replaced).len(),
        1,
        "the stats request's closing line"
    );
    assert!(!logs.contains("evil"), "a rejected id is never written");
    // Lines outside any request (start-up, shutdown) have no span.
    assert!(lines.iter().any(|l| l["span"].is_null()));
}
