//! The layers that make each request observable (issue #7, items 3–4):
//! per-route metrics and the request id every log line carries.
//!
//! - **Route labels.** [`tag_route`] runs as a route layer, where axum knows
//!   the matched template (`/api/users/{user_id}`), and leaves it in the
//!   response's extensions; [`record_metrics`], outermost, times the whole
//!   request and labels it with that template, or `unmatched` for paths no
//!   route knows. Labels never carry a raw path, so the series count stays
//!   bounded whatever clients send.
//! - **Request ids.** [`request_id`] accepts a client's or proxy's
//!   `X-Request-Id` when it is a plain token (1–64 of `A-Z a-z 0-9 - _`), so
//!   a request can be followed from nginx into our logs; anything else is
//!   replaced by a fresh UUID, so a hostile header can neither forge log
//!   structure nor grow lines. The id is a field of a `request` span that
//!   wraps the whole request, so every log line made while serving it —
//!   text or JSON — carries it, and it is echoed in the response header.
//!   One line per request closes it (`info`, health checks and scrapes at
//!   `debug` so probes do not drown the log).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics::Metrics;

/// The header a request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id accepted from outside.
const MAX_REQUEST_ID: usize = 64;

/// Paths polled by machines; their closing log line is `debug`.
const QUIET_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The route template that answered, left in the response by [`tag_route`].
#[derive(Debug, Clone)]
struct RouteTemplate(String);

/// Route layer: remembers which route template answered.
pub async fn tag_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteTemplate(route));
    }
    response
}

/// A bounded label for `method`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Middleware: counts and times every request by route template, method
/// and status.
pub async fn record_metrics(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or_else(|| "unmatched".to_string(), |r| r.0.clone());
    metrics.http.observe(
        route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The id to use for a request that came with `given`.
fn accept_request_id(given: Option<&HeaderValue>) -> String {
    given
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=MAX_REQUEST_ID).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// Middleware: gives the request its id, serves it inside a span carrying
/// the id, echoes the id and logs one closing line.
pub async fn request_id(request: Request, next: Next) -> Response {
    let id = accept_request_id(request.headers().get(REQUEST_ID_HEADER));
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if QUIET_PATHS.contains(&path.as_str()) {
            tracing::debug!(%method, %path, status, ms, "answered");
        } else {
            tracing::info!(%method, %path, status, ms, "answered");
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_request_ids_are_kept_and_anything_else_is_replaced() {
        let keep = |raw: &str| accept_request_id(Some(&HeaderValue::from_str(raw).unwrap()));
        assert_eq!(keep("abc-DEF_123"), "abc-DEF_123");
        let long = "a".repeat(64);
        assert_eq!(keep(&long), long);
        for bad in [
            "",
            "has space",
            "quote\"",
            "json{}",
            "new\tline",
            &"a".repeat(65),
        ] {
            let id = keep(bad);
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        assert!(uuid::Uuid::parse_str(&accept_request_id(None)).is_ok());
    }
}
