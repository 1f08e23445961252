//! What runs around every request, as one tower service in front of the
//! router: the request id and its span, the metrics timer, the in-flight
//! count, the Host check, the per-client rate limit, the read token and the
//! unsafe-request rules, the request's deadline and client address
//! (`deadline.rs`) and the error envelopes, in that order (outermost
//! first), then the answer — from the hot route or the router. CORS, when
//! origins are configured, wraps all of it (tower-http's layer, put on in
//! [`around`]). This file is the one place these steps are put around the
//! routes: a step added here applies to the hot route and to every routed
//! request alike, and `pipeline/tests.rs` checks each one on both.
//!
//! Decision: one hand-written service instead of a `middleware::from_fn`
//! layer per step. Each `from_fn` layer boxes its future and clones the
//! boxed service inside it on every request, and `Router::layer` installs
//! the stack on every route, so it runs after routing; for a near-cache hit
//! answered in microseconds that bookkeeping (mostly `malloc` and `free`)
//! costs more than the lookup. Here the steps are plain calls inside one
//! future, allocated once per request. What each step does lives with its
//! concern: `observe.rs` (ids, route labels, the closing line) and
//! `edge.rs` (rate limit, in-flight count, envelopes) and `gate.rs` (who
//! may ask what).
//!
//! Decision: **the hot route is matched here, before the router.** `GET
//! /api/users/{user_id}` with an id of plain ASCII digits goes straight to
//! [`users::answer_by_id`], which parses the id as the route's `Path`
//! extractor does and answers as its handler does. Routing it through axum
//! costs a dozen allocations per request (the matched path and the path
//! parameters put into the request, the route's boxed service cloned, the
//! handler's future boxed, the parameter copied into a `String`) — as much
//! again as the lookup and the answer. The choice between the two is made
//! last, inside every step (id, metrics under the same route label,
//! in-flight count, gate, rate limit, deadline, CORS), so no step can apply
//! to one and not the other. What it matches is exactly what the route
//! would match with nothing to decode: only `GET` (`HEAD` goes to the
//! router, which strips the body), one segment after `/api/users/`, digits
//! only, so no literal route (`sync`, `cache`, `number`) can be shadowed.
//! Anything else — `%31`, `abc`, a trailing slash — goes to the router.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use tower::Layer as _;
use tower::ServiceExt as _;
use tower::util::Either;
use tower_http::cors::Cors;
use tracing::Instrument as _;

use super::AppState;
use super::deadline;
use super::edge;
use super::metrics::RouteSeries;
use super::observe::{ClosingLine, REQUEST_ID_HEADER, RequestId, RouteTag, method_label};
use super::users;

/// The template of the route `hot_user_id` answers: the metrics label of
/// its answers, the same as the router's route for it in `mod.rs`.
pub const HOT_ROUTE: &str = "/api/users/{user_id}";

/// The service the server runs: the routes inside the [`Pipeline`],
/// inside CORS when origins are configured.
pub type App = Either<Cors<Pipeline>, Pipeline>;

/// Puts every per-request step around `routes`, the route table (`mod.rs`).
pub fn around(routes: Router, app: Arc<AppState>) -> App {
    let origins = app.cors_origins.clone();
    let pipeline = Pipeline::new(routes, app);
    // Outermost: preflights are answered before anything else, and every
    // answer, a 429 included, carries the CORS headers.
    match edge::cors_layer(&origins) {
        Some(cors) => Either::Left(cors.layer(pipeline)),
        None => Either::Right(pipeline),
    }
}

/// The router with the per-request steps around it.
#[derive(Clone)]
pub struct Pipeline {
    router: Router,
    steps: Arc<Steps>,
    /// The client of the connection this copy serves (`server.rs` sets
    /// it), for the rate limit. Kept here rather than put into every
    /// request's extensions: that insert alone cost three allocations a
    /// request. `None` in-process; then a `ConnectInfo` extension is used
    /// if there is one.
    peer: Option<SocketAddr>,
}

/// What the steps need, shared by every request.
struct Steps {
    /// Metrics, the in-flight count, the rate limit and the cache.
    app: Arc<AppState>,
    /// The series of [`HOT_ROUTE`], for the requests answered here.
    hot: RouteSeries,
}

impl Pipeline {
    pub fn new(router: Router, app: Arc<AppState>) -> Self {
        Self {
            router,
            steps: Arc::new(Steps {
                app,
                hot: RouteSeries::new(HOT_ROUTE),
            }),
            peer: None,
        }
    }

    /// This copy serves the connection of `peer`.
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = Some(peer);
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
        let peer = self.peer;
        Box::pin(async move { Ok(steps.serve(router, request, peer).await) })
    }
}

impl Steps {
    /// Gives the request its id, serves it inside a span carrying the id,
    /// echoes the id and logs one closing line.
    async fn serve(&self, router: Router, request: Request, peer: Option<SocketAddr>) -> Response {
        let started = Instant::now();
        let id = RequestId::accept(request.headers().get(REQUEST_ID_HEADER));
        let span = tracing::info_span!("request", request_id = %id.as_str());
        let closing = span.in_scope(|| ClosingLine::capture(&request));
        let mut response = self
            .metered(router, request, peer, started)
            .instrument(span.clone())
            .await;
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

    /// Counts and times the request (from `started`) by route template,
    /// method and status.
    async fn metered(
        &self,
        router: Router,
        request: Request,
        peer: Option<SocketAddr>,
        started: Instant,
    ) -> Response {
        let method = method_label(request.method());
        let (response, hot) = self.admitted(router, request, peer, started).await;
        let route = if hot {
            Some(&self.hot)
        } else {
            response.extensions().get::<RouteTag>().map(|t| &*t.0)
        };
        self.app.http_metrics.observe_route(
            route,
            method,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        response
    }

    /// Counted in flight; refused when it names a host not served here,
    /// when the client is over its rate, lacks the read token or sends an
    /// unsafe request that is not JSON (`gate.rs`); else answered by
    /// [`Steps::answer`] within its deadline (from `started`,
    /// `deadline.rs`). `true` with an answer of the hot route.
    async fn admitted(
        &self,
        router: Router,
        request: Request,
        peer: Option<SocketAddr>,
        started: Instant,
    ) -> (Response, bool) {
        let _in_flight = self.app.in_flight.enter();
        let gate = &self.app.gate;
        if let Some(refusal) = gate.refuse_host(&request) {
            return (refusal, false);
        }
        if let Some(limit) = &self.app.rate_limit
            && let Some(refusal) = edge::refuse_over_limit(limit, &request, peer)
        {
            return (refusal, false);
        }
        if let Some(refusal) = gate
            .refuse_without_token(&request)
            .or_else(|| gate.refuse_unsafe(&request))
        {
            return (refusal, false);
        }
        let limit = deadline::deadline_for(&self.app.limits, &request);
        let client = deadline::client_of(&request, peer);
        let hot = hot_user_id(&request).is_some();
        let answer = self.answer(router, request);
        (deadline::bounded(limit, started, client, answer).await, hot)
    }

    /// The answer itself: the hot route here, anything else by the router,
    /// with a framework rejection turned into the envelope. The two part
    /// here and only here, after every step.
    async fn answer(&self, router: Router, request: Request) -> Response {
        if let Some(raw) = hot_user_id(&request) {
            return users::answer_by_id(&self.app, raw)
                .await
                .unwrap_or_else(IntoResponse::into_response);
        }
        let response = match router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        edge::envelope_errors(response).await
    }
}

/// The raw id of a `GET /api/users/{user_id}` whose id is plain digits, the
/// requests the pipeline answers without the router.
fn hot_user_id(request: &Request) -> Option<&str> {
    if request.method() != Method::GET {
        return None;
    }
    let id = request.uri().path().strip_prefix("/api/users/")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

#[cfg(test)]
mod tests;
