//! `GET /metrics`: the Prometheus exposition has the
//! series the dashboard and alerts use, and they move with the traffic.

use std::collections::BTreeMap;

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{StoreKind, TestApp, spawn_app};

on_both_stores!(metrics_count_requests_lookups_upstream_calls_and_store_operations);

/// One sample: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition (comments skipped). Label values here never
/// hold `,` or `"`, which keeps the parser small.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split(',')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label=value");
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            Sample {
                name,
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(app: &TestApp) -> (String, Vec<Sample>) {
    let resp = app.get_raw("/metrics").await;
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = resp.text().await.expect("body");
    assert!(
        text.trim_end().ends_with("# EOF"),
        "an OpenMetrics exposition"
    );
    let samples = parse(&text);
    (text, samples)
}

async fn metrics_count_requests_lookups_upstream_calls_and_store_operations(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let member = &app.sim.data.members[3];
    assert_eq!(app.user(member.user_id).await.status, 200); // miss: upstream
    assert_eq!(app.user(member.user_id).await.status, 200); // hit: near cache
    assert_eq!(app.by_number(member.number).await.status, 200);
    assert_eq!(app.get("/api/users/not-a-number").await.status, 400);
    for i in 0..5 {
        let path = format!("/no/such/path/{i}");
        assert_eq!(app.get(&path).await.status, 404);
    }
    let (text, s) = scrape(&app).await;

    let user_route = [("route", "/api/users/{user_id}"), ("method", "GET")];
    assert_eq!(
        value(
            &s,
            "zsxq_http_requests_total",
            &[user_route[0], user_route[1], ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "zsxq_http_requests_total",
            &[user_route[0], ("status", "400")]
        ),
        1.0,
        "a rejected id is still labelled by its route"
    );
    assert_eq!(
        value(
            &s,
            "zsxq_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        5.0
    );
    assert!(
        !text.contains("/no/such/path"),
        "raw paths never become labels"
    );
    assert_eq!(
        value(&s, "zsxq_http_request_duration_seconds_count", &user_route),
        3.0
    );
    assert_eq!(
        value(
            &s,
            "zsxq_http_request_duration_seconds_bucket",
            &[user_route[0], ("le", "+Inf")]
        ),
        3.0,
        "explicit buckets up to +Inf"
    );
    assert!(
        s.iter()
            .any(|x| x.name == "zsxq_http_request_duration_seconds_bucket"
                && x.labels.get("le").map(String::as_str) == Some("0.001")),
        "{text}"
    );

    assert_eq!(
        value(&s, "zsxq_cache_requests_total", &[("result", "miss")]),
        1.0
    );
    assert_eq!(
        value(&s, "zsxq_cache_requests_total", &[("result", "hit")]),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "zsxq_cache_tier_lookups_total",
            &[("tier", "near"), ("result", "miss")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "zsxq_cache_tier_lookups_total",
            &[("tier", "store"), ("result", "miss")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "zsxq_cache_tier_lookups_total",
            &[("tier", "near"), ("result", "hit")]
        ),
        2.0
    );

    let interactive = [("priority", "interactive")];
    assert_eq!(
        value(&s, "zsxq_upstream_calls_total", &interactive),
        app.sim.stats().calls as f64
    );
    assert!(value(&s, "zsxq_upstream_calls_total", &interactive) >= 1.0);
    assert_eq!(value(&s, "zsxq_upstream_throttled_total", &[]), 0.0);
    assert_eq!(
        value(&s, "zsxq_upstream_queue_wait_seconds_count", &interactive),
        value(&s, "zsxq_upstream_calls_total", &interactive)
    );
    assert_eq!(
        value(&s, "zsxq_upstream_rate_limit_per_minute", &[]),
        6000.0
    );

    assert!(
        value(
            &s,
            "zsxq_store_operation_duration_seconds_count",
            &[("op", "get_members")]
        ) >= 1.0
    );
    assert!(
        value(
            &s,
            "zsxq_store_operation_duration_seconds_count",
            &[("op", "put_members")]
        ) >= 1.0
    );
    assert_eq!(value(&s, "zsxq_store_breaker_open", &[]), 0.0);
    assert_eq!(value(&s, "zsxq_store_failures_total", &[]), 0.0);
    let mode = match kind {
        StoreKind::Redis | StoreKind::Cluster => "shared",
        StoreKind::Embedded => "off",
    };
    assert_eq!(value(&s, "zsxq_fleet_budget_mode", &[("mode", mode)]), 1.0);
    assert_eq!(
        value(&s, "zsxq_fleet_budget_mode", &[]),
        1.0,
        "one mode at a time"
    );
    // moka counts its entries lazily: the gauge exists, its value may lag.
    for gauge in [
        "zsxq_near_cache_entries",
        "zsxq_write_back_pending",
        "zsxq_upstream_penalty_seconds",
    ] {
        assert!(s.iter().any(|x| x.name == gauge), "{gauge} missing");
    }
    assert_eq!(
        value(
            &s,
            "zsxq_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // A second scrape sees the first one counted, under its own route.
    let (_, again) = scrape(&app).await;
    assert_eq!(
        value(
            &again,
            "zsxq_http_requests_total",
            &[("route", "/metrics"), ("status", "200")]
        ),
        1.0
    );
}
