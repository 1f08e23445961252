//! The pipeline's tests: which requests take the hot route, that the route
//! table holds no per-request step, and that every step is taken on the hot
//! route and on a routed request alike, through the real router and state.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};

use super::*;
use crate::http::testing::{Service, Upstream, request};

/// One lookup, two ways: answered here before routing, and by the router
/// (percent-encoded, so [`hot_user_id`] passes it on; the route's `Path`
/// decodes it to the same id).
const HOT: &str = "/api/users/123";
const ROUTED: &str = "/api/users/%31%32%33";
const BOTH: [&str; 2] = [HOT, ROUTED];

/// The host every HTTP/1.1 request names; this one is served here.
const HOST: (&str, &str) = ("host", "127.0.0.1:3013");

#[test]
fn the_hot_route_is_the_routers_route_for_users_by_id() {
    let router = include_str!("../mod.rs");
    // (No leading dot: openapi.rs reads routes from this directory.)
    let route = format!("route(\"{HOT_ROUTE}\", get(users::by_id))");
    assert!(router.contains(&route), "{route} not in http/mod.rs");
}

#[test]
fn only_get_of_a_plain_digit_id_takes_the_hot_route() {
    let hot = |method, uri| hot_user_id(&request(method, uri, &[])).map(str::to_owned);
    assert_eq!(hot(Method::GET, HOT), Some("123".into()));
    assert_eq!(hot(Method::GET, "/api/users/123?x=1"), Some("123".into()));
    // Refused by the same parser either way, so answered here too.
    assert_eq!(hot(Method::GET, "/api/users/0123"), Some("0123".into()));
    for uri in [
        ROUTED,
        "/api/users/",
        "/api/users/%31",
        "/api/users/12a",
        "/api/users/123/",
        "/api/users/sync",
        "/api/users/cache",
        "/api/users/number/7",
        "/api/users",
        "/api/users//1",
    ] {
        assert_eq!(hot(Method::GET, uri), None, "{uri}");
    }
    for method in [Method::HEAD, Method::POST, Method::DELETE] {
        assert_eq!(hot(method, HOT), None);
    }
}

/// A layer on the router would not see the hot route's requests; the two
/// there are settings of the routes, not steps (see `http/mod.rs`).
#[test]
fn the_route_table_puts_no_step_around_the_routes() {
    let code: String = include_str!("../mod.rs")
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect();
    let settings = [
        ".route_layer(observe::TagRouteLayer)",
        ".layer(DefaultBodyLimit::max(BODY_LIMIT))",
    ];
    for setting in settings {
        assert!(code.contains(setting), "{setting} moved: update this test");
    }
    assert_eq!(
        code.matches("layer(").count(),
        settings.len(),
        "a layer on the Router skips the hot route: put per-request steps in pipeline.rs"
    );
}

/// Answers counted under the users-by-id template, by any status.
fn counted(service: &Service) -> u64 {
    let text = service.state.metrics.encode().expect("metrics");
    let series = format!("route=\"{HOT_ROUTE}\"");
    text.lines()
        .filter(|l| l.starts_with("zsxq_http_requests_total{") && l.contains(&series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn both_paths_carry_the_request_id_they_came_with_or_a_fresh_one() {
    let service = Service::start(Upstream::Refusing, &[]).await;
    for uri in BOTH {
        let given = service
            .send(request(
                Method::GET,
                uri,
                &[HOST, ("x-request-id", "trace-me-7")],
            ))
            .await;
        assert_eq!(given.headers()["x-request-id"], "trace-me-7", "{uri}");
        let fresh = service.send(request(Method::GET, uri, &[HOST])).await;
        let id = fresh.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{uri}: {id}");
    }
}

#[tokio::test]
async fn both_paths_are_counted_in_the_metrics_under_the_routes_template() {
    let service = Service::start(Upstream::Refusing, &[]).await;
    for (i, uri) in BOTH.into_iter().enumerate() {
        let answer = service.send(request(Method::GET, uri, &[HOST])).await;
        assert_eq!(answer.status(), StatusCode::BAD_GATEWAY, "{uri}");
        assert_eq!(counted(&service), i as u64 + 1, "{uri}");
    }
}

#[tokio::test]
async fn both_paths_are_refused_for_a_host_not_served_here() {
    let service = Service::start(Upstream::Refusing, &[]).await;
    for uri in BOTH {
        let answer = service
            .send(request(Method::GET, uri, &[("host", "attacker.example")]))
            .await;
        assert_eq!(answer.status(), StatusCode::MISDIRECTED_REQUEST, "{uri}");
    }
}

#[tokio::test]
async fn both_paths_need_the_read_token_are_rate_limited_and_carry_cors_headers() {
    const ORIGIN: &str = "https://ops.example.com";
    let service = Service::start(
        Upstream::Refusing,
        &[
            ("READ_TOKEN", "read-token-0123456789"),
            ("CORS_ORIGINS", ORIGIN),
            ("HTTP_RATE_LIMIT", "4"),
        ],
    )
    .await;
    let token = ("authorization", "Bearer read-token-0123456789");
    let ask = |uri, with_token: bool| {
        let mut headers = vec![HOST, ("origin", ORIGIN)];
        if with_token {
            headers.push(token);
        }
        service.send(request(Method::GET, uri, &headers))
    };
    let cors = |answer: &Response| {
        answer.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            == Some(&HeaderValue::from_static(ORIGIN))
    };
    // The four requests of the allowance: two without the token, two with.
    for uri in BOTH {
        let answer = ask(uri, false).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{uri}");
        assert!(cors(&answer), "{uri}");
    }
    for uri in BOTH {
        let answer = ask(uri, true).await;
        assert_eq!(answer.status(), StatusCode::BAD_GATEWAY, "{uri}");
        assert!(cors(&answer), "{uri}");
    }
    for uri in BOTH {
        let answer = ask(uri, true).await;
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS, "{uri}");
        assert!(cors(&answer), "{uri}");
    }
}

#[tokio::test]
async fn both_paths_are_counted_in_flight_and_answered_504_at_their_deadline() {
    let service =
        Arc::new(Service::start(Upstream::Silent, &[("REQUEST_DEADLINE_SECS", "1")]).await);
    let in_flight = |n: usize| {
        let service = service.clone();
        async move {
            let waited = tokio::time::timeout(Duration::from_secs(5), async {
                while service.state.in_flight.get() != n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            assert!(waited.await.is_ok(), "never {n} in flight");
        }
    };
    let mut pending = Vec::new();
    for (i, uri) in BOTH.into_iter().enumerate() {
        let service = service.clone();
        pending.push(tokio::spawn(async move {
            service.send(request(Method::GET, uri, &[HOST])).await
        }));
        in_flight(i + 1).await;
    }
    for (uri, answer) in BOTH.into_iter().zip(pending) {
        let answer = answer.await.unwrap();
        assert_eq!(answer.status(), StatusCode::GATEWAY_TIMEOUT, "{uri}");
        assert!(answer.headers().contains_key(header::RETRY_AFTER), "{uri}");
    }
    in_flight(0).await;
}
