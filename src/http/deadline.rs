//! Every request has a deadline (`REQUEST_DEADLINE_SECS`, 30 s; refund
//! lists, their exports and a synchronous sync `REFUND_DEADLINE_SECS`), and
//! runs on behalf of its client address.
//!
//! Decisions:
//! - **At the deadline the request's work is dropped, not left running.**
//!   The answer is a 504 envelope with `Retry-After`; dropping the handler's
//!   future makes it one waiter fewer on any fetch it joined, so a fetch
//!   nobody waits for any more gives up its place in the upstream queue
//!   (`cache/flight.rs`) while one already sent completes and is cached.
//! - **The deadline costs a hot lookup nothing**: it is measured from the
//!   instant the pipeline already took, and a timeout whose inner future is
//!   ready on the first poll never registers its timer.
//! - **The client address** (the TCP peer, IPv6 by its /64 as the HTTP rate
//!   limit keys it) is carried to the lookups in a task-local
//!   (`upstream::budget::for_client`), where the interactive queue counts each
//!   address's share; nothing else reads it.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::edge::rate_key;
use super::error::ApiError;
use crate::config::LimitsConfig;
use crate::upstream::budget;

/// How long `request` may take.
pub fn deadline_for(limits: &LimitsConfig, request: &Request) -> Duration {
    let path = request.uri().path();
    let long = (path.starts_with("/api/camps/") && path.contains("/refund-list"))
        || (request.method() == Method::POST && path == "/api/users/sync");
    if long {
        limits.long_deadline
    } else {
        limits.request_deadline
    }
}

/// The client address of `request` (`peer`, else a `ConnectInfo`
/// extension), keyed as the rate limit keys it.
pub fn client_of(request: &Request, peer: Option<SocketAddr>) -> Option<IpAddr> {
    peer.or_else(|| {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr)
    })
    .map(|addr| rate_key(addr.ip()))
}

/// Serves `answer` for `client` until `started + limit`; past it, the 504.
pub async fn bounded(
    limit: Duration,
    started: Instant,
    client: Option<IpAddr>,
    answer: impl Future<Output = Response>,
) -> Response {
    let within = tokio::time::timeout_at((started + limit).into(), answer);
    match budget::for_client(client, within).await {
        Ok(response) => response,
        Err(_) => overdue(limit),
    }
}

/// The answer to a request that ran out of time.
fn overdue(limit: Duration) -> Response {
    tracing::info!(
        deadline_secs = limit.as_secs(),
        "request deadline passed; its queued upstream work is given up"
    );
    let mut error = ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "请求在 {} 秒内未完成，已放弃，请稍后重试 (the request did not finish within its {} s deadline, REQUEST_DEADLINE_SECS or REFUND_DEADLINE_SECS; retry later)",
            limit.as_secs(),
            limit.as_secs()
        ),
    );
    error.retry_after = Some(Duration::from_secs(5));
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::request;

    #[test]
    fn refund_lists_and_a_synchronous_sync_get_the_long_deadline() {
        let limits = LimitsConfig {
            request_deadline: Duration::from_secs(30),
            long_deadline: Duration::from_secs(300),
            interactive_queue: 32,
            queue_per_client: 8,
            upstream_body_max: 8 << 20,
        };
        let long = Duration::from_secs(300);
        for (method, uri) in [
            (Method::POST, "/api/camps/123/refund-list"),
            (Method::GET, "/api/camps/123/refund-list?index=0"),
            (Method::GET, "/api/camps/123/refund-list.csv"),
            (Method::GET, "/api/camps/123/refund-list/text"),
            (Method::POST, "/api/users/sync"),
        ] {
            assert_eq!(
                deadline_for(&limits, &request(method, uri, &[])),
                long,
                "{uri}"
            );
        }
        for (method, uri) in [
            (Method::GET, "/api/users/123"),
            (Method::GET, "/api/camps"),
            (Method::GET, "/api/users/sync/abc"),
        ] {
            assert_eq!(
                deadline_for(&limits, &request(method, uri, &[])),
                Duration::from_secs(30),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn an_answer_past_its_deadline_is_a_504_envelope_with_retry_after() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            StatusCode::OK.into_response()
        };
        let answer = bounded(Duration::from_millis(50), Instant::now(), None, slow).await;
        assert_eq!(answer.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(answer.headers().contains_key("retry-after"));
    }
}
