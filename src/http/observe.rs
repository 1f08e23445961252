//! What makes each request observable: per-route metrics and the request id
//! every log line carries. The steps run in `pipeline.rs`, around the
//! router; this file holds what they need.
//!
//! - **Route labels.** [`TagRouteLayer`] runs as a route layer, where axum
//!   knows the matched template (`/api/users/{user_id}`), and leaves the
//!   route's [`RouteSeries`] in the response's extensions; the pipeline
//!   times the whole request and labels it with that template, or
//!   `unmatched` for paths no route knows. Labels never carry a raw path, so
//!   the series count stays bounded whatever clients send. The series is
//!   created once per route (the first request it answers) and shared by
//!   every later one, so the hot path neither copies the template nor looks
//!   its label set up.
//! - **Request ids.** [`RequestId::accept`] keeps a client's or proxy's
//!   `X-Request-Id` when it is a plain token (1–64 of `A-Z a-z 0-9 - _`), so
//!   a request can be followed from nginx into our logs; anything else is
//!   replaced by a fresh UUID, so a hostile header can neither forge log
//!   structure nor grow lines. The id is a field of a `request` span that
//!   wraps the whole request, so every log line made while serving it —
//!   text or JSON — carries it, and it is echoed in the response header.
//!   One line per request closes it (`info`, health checks and scrapes at
//!   `debug` so probes do not drown the log).
//! - **Fresh ids cost no system call.** A v4 UUID is 122 random bits; they
//!   come from the thread's userspace generator (`rand::rng()`, a ChaCha
//!   generator seeded from the OS once per thread) rather than a
//!   `getrandom` call per request as `Uuid::new_v4` makes. Request ids need
//!   to be unique, not secret.
//! - **Nothing is copied for a line nobody writes.** The path and method of
//!   the closing line are kept only when its level is enabled.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use tracing::Level;

use super::metrics::RouteSeries;

/// The header a request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id accepted from outside.
const MAX_REQUEST_ID: usize = 64;

/// Paths polled by machines; their closing log line is `debug`.
const QUIET_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The route that answered, left in the response by [`TagRoute`].
#[derive(Debug, Clone)]
pub struct RouteTag(pub Arc<RouteSeries>);

/// Route layer: tags each answer with its route's series.
#[derive(Debug, Clone, Copy, Default)]
pub struct TagRouteLayer;

impl<S> tower::Layer<S> for TagRouteLayer {
    type Service = TagRoute<S>;

    /// Called once per route endpoint, so each gets its own slot.
    fn layer(&self, inner: S) -> TagRoute<S> {
        TagRoute {
            inner,
            series: Arc::new(OnceLock::new()),
        }
    }
}

/// One route endpoint, tagging its answers.
#[derive(Debug, Clone)]
pub struct TagRoute<S> {
    inner: S,
    /// The series of the template this endpoint serves, set by its first
    /// request (an endpoint serves one template; a request for another,
    /// never expected, gets a series of its own).
    series: Arc<OnceLock<Arc<RouteSeries>>>,
}

impl<S> tower::Service<Request> for TagRoute<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tagged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let series = request.extensions().get::<MatchedPath>().map(|matched| {
            let series = self
                .series
                .get_or_init(|| Arc::new(RouteSeries::new(matched.as_str())));
            if series.route() == matched.as_str() {
                series.clone()
            } else {
                Arc::new(RouteSeries::new(matched.as_str()))
            }
        });
        Tagged {
            inner: self.inner.call(request),
            series,
        }
    }
}

/// The answer of a [`TagRoute`], tagged when it is ready. A plain struct
/// rather than a boxed future: the route's own future (axum's, `Unpin`) is
/// polled in place, so tagging allocates nothing but the extension.
#[derive(Debug)]
pub struct Tagged<F> {
    inner: F,
    series: Option<Arc<RouteSeries>>,
}

impl<F, E> Future for Tagged<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let answer = std::task::ready!(Pin::new(&mut this.inner).poll(cx));
        Poll::Ready(answer.map(|mut response| {
            if let Some(series) = this.series.take() {
                response.extensions_mut().insert(RouteTag(series));
            }
            response
        }))
    }
}

/// A bounded label for `method`.
pub fn method_label(method: &Method) -> &'static str {
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

/// A request's id: the one it came with when that is a plain token, else a
/// fresh UUID.
#[derive(Debug, Clone)]
pub enum RequestId {
    /// The caller's, echoed as it came (a shared view of the header).
    Given(HeaderValue),
    /// A fresh v4 UUID, hyphenated, lower case.
    Fresh([u8; uuid::fmt::Hyphenated::LENGTH]),
}

impl RequestId {
    /// The id to use for a request that came with `given`.
    pub fn accept(given: Option<&HeaderValue>) -> Self {
        match given.filter(|v| is_plain_token(v.as_bytes())) {
            Some(v) => Self::Given(v.clone()),
            None => Self::fresh(),
        }
    }

    fn fresh() -> Self {
        let random = rand::random::<u128>().to_le_bytes();
        let uuid = uuid::Builder::from_random_bytes(random).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid.hyphenated().encode_lower(&mut text);
        Self::Fresh(text)
    }

    pub fn as_str(&self) -> &str {
        // Both are ASCII by construction; the fallbacks are never taken.
        match self {
            Self::Given(v) => v.to_str().unwrap_or_default(),
            Self::Fresh(text) => std::str::from_utf8(text).unwrap_or_default(),
        }
    }

    /// The id as the response header carries it.
    pub fn header_value(&self) -> Option<HeaderValue> {
        match self {
            Self::Given(v) => Some(v.clone()),
            Self::Fresh(text) => HeaderValue::from_bytes(text).ok(),
        }
    }
}

/// 1–64 of `A-Z a-z 0-9 - _`.
fn is_plain_token(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// What a request's closing log line says; kept only when the line will be
/// written.
#[derive(Debug)]
pub struct ClosingLine {
    method: Method,
    path: String,
    /// A probe or scrape: logged at `debug`.
    quiet: bool,
}

impl ClosingLine {
    /// The line for `request`, or `None` when its level is off. Call it in
    /// the request's span, so span-scoped filters apply.
    pub fn capture(request: &Request) -> Option<Self> {
        let path = request.uri().path();
        let quiet = QUIET_PATHS.contains(&path);
        let enabled = if quiet {
            tracing::enabled!(Level::DEBUG)
        } else {
            tracing::enabled!(Level::INFO)
        };
        enabled.then(|| Self {
            method: request.method().clone(),
            path: path.to_owned(),
            quiet,
        })
    }

    /// Writes the line (in the request's span).
    pub fn write(self, status: u16, ms: f64) {
        let Self {
            method,
            path,
            quiet,
        } = self;
        if quiet {
            tracing::debug!(%method, %path, status, ms, "answered");
        } else {
            tracing::info!(%method, %path, status, ms, "answered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_request_ids_are_kept_and_anything_else_is_replaced() {
        let keep = |raw: &str| {
            RequestId::accept(Some(&HeaderValue::from_str(raw).unwrap()))
                .as_str()
                .to_owned()
        };
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
        let fresh = RequestId::accept(None);
        let parsed = uuid::Uuid::parse_str(fresh.as_str()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(
            fresh.header_value().unwrap().to_str().unwrap(),
            fresh.as_str()
        );
        assert_ne!(
            RequestId::accept(None).as_str(),
            RequestId::accept(None).as_str()
        );
    }
}
