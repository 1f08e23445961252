//! What runs around every request (issue #8, the hot path), as one tower
//! service in front of the router: the request id and its span, the
//! metrics timer, the in-flight count, the per-client rate limit and the
//! error envelopes, in that order (outermost first), then the router. CORS,
//! when origins are configured, wraps all of it (tower-http's layer).
//!
//! Decision: one hand-written service instead of a `middleware::from_fn`
//! layer per step. Each `from_fn` layer boxes its future and clones the
//! boxed service inside it on every request, and `Router::layer` installs
//! the stack on every route, so it runs after routing; for a near-cache hit
//! answered in microseconds that bookkeeping (mostly `malloc` and `free`)
//! cost more than the lookup. Here the steps are plain calls inside one
//! future, allocated once per request. What each step does lives with its
//! concern: `observe.rs` (ids, route labels, the closing line) and
//! `edge.rs` (rate limit, in-flight count, envelopes).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use super::AppState;
use super::edge::{self, ClientRateLimit, InFlight};
use super::observe::{ClosingLine, REQUEST_ID_HEADER, RequestId, RouteTag, method_label};
use crate::metrics::Metrics;

/// The router with the per-request steps around it.
#[derive(Clone)]
pub struct Pipeline {
    router: Router,
    steps: Arc<Steps>,
}

/// What the steps need, shared by every request.
struct Steps {
    metrics: Arc<Metrics>,
    in_flight: Arc<InFlight>,
    /// `HTTP_RATE_LIMIT`; `None` = off.
    rate_limit: Option<Arc<ClientRateLimit>>,
}

impl Pipeline {
    pub fn new(router: Router, state: &AppState) -> Self {
        Self {
            router,
            steps: Arc::new(Steps {
                metrics: state.metrics.clone(),
                in_flight: state.in_flight.clone(),
                rate_limit: state.rate_limit.clone(),
            }),
        }
    }
}

impl tower::Service<Request> for Pipeline {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    /// Always ready: the router is, and the steps hold no capacity.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let router = self.router.clone();
        let steps = self.steps.clone();
        Box::pin(async move { Ok(steps.serve(router, request).await) })
    }
}

impl Steps {
    /// Gives the request its id, serves it inside a span carrying the id,
    /// echoes the id and logs one closing line.
    async fn serve(&self, router: Router, request: Request) -> Response {
        let started = Instant::now();
        let id = RequestId::accept(request.headers().get(REQUEST_ID_HEADER));
        let span = tracing::info_span!("request", request_id = %id.as_str());
        let closing = span.in_scope(|| ClosingLine::capture(&request));
        let mut response = self.metered(router, request).instrument(span.clone()).await;
        if let Some(value) = id.header_value() {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        if let Some(line) = closing {
            let status = response.status().as_u16();
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            span.in_scope(|| line.write(status, ms));
        }
        response
    }

    /// Counts and times the request by route template, method and status.
    async fn metered(&self, router: Router, request: Request) -> Response {
        let started = Instant::now();
        let method = method_label(request.method());
        let response = self.admitted(router, request).await;
        let route = response.extensions().get::<RouteTag>().map(|t| &*t.0);
        self.metrics.http.observe_route(
            route,
            method,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        response
    }

    /// Counted in flight; refused when the client is over its rate; else
    /// routed, with a framework rejection turned into the envelope.
    async fn admitted(&self, router: Router, request: Request) -> Response {
        let _in_flight = self.in_flight.enter();
        if let Some(limit) = &self.rate_limit
            && let Some(refusal) = edge::refuse_over_limit(limit, &request)
        {
            return refusal;
        }
        let response = match router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        edge::envelope_errors(response).await
    }
}
