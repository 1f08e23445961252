//! What sits between the network and the handlers: the per-client rate
//! limit, CORS, the in-flight counter graceful shutdown reports from, and
//! the step that gives every error the envelope. The steps run in
//! `pipeline.rs`, in one service around the router.
//!
//! Decisions:
//! - **Rate limit** (`HTTP_RATE_LIMIT`, off by default): governor's keyed
//!   GCRA limiter, one cell per client IP, shared by every connection of the
//!   process. An IPv6 client is keyed by its /64, since one host owns a whole
//!   /64 and could otherwise rotate addresses. Health probes are exempt so a
//!   load balancer never sees a 429. The client address is the TCP peer:
//!   behind a reverse proxy every request shares the proxy's address, so
//!   limit at the proxy instead (no `X-Forwarded-For` is trusted, since any
//!   client can send one). The map of clients is bounded (65 536 keys):
//!   beyond it, new clients share one allowance until the janitor's next
//!   round forgets the idle ones, so rotating addresses cannot grow memory.
//! - **CORS** (`CORS_ORIGINS`, none by default): `tower-http`'s `cors` layer.
//!   tower-http is already in the build through reqwest, so the feature adds
//!   a few hundred lines, and preflight handling (`Vary`, max-age, header
//!   lists) is easy to get subtly wrong by hand. With no origins configured
//!   the layer is not installed at all: no CORS headers, same-origin only.
//! - **Envelopes for framework rejections**: axum answers a body over the
//!   limit, a path that is not UTF-8 or an unparseable query with plain
//!   text. Our extractors map their own refusals (`extract.rs`); for the
//!   rest, a response-mapping step turns any error answer that is not JSON
//!   into the envelope, with a message from the same mapper, so every
//!   answer a client gets has the same shape, whatever handler it reached.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{HashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;
use super::extract::Rejection;
use super::gate::HEALTH_PATHS;

/// Largest non-JSON error body read to build an envelope from; axum's
/// rejection texts are one line.
const REJECTION_TEXT_LIMIT: usize = 4 * 1024;

/// Clients the rate limit keeps state for at most (about 3 MB). Past it,
/// new clients share one allowance until the janitor forgets idle ones.
const MAX_TRACKED_CLIENTS: usize = 65_536;

/// The key new clients share while [`MAX_TRACKED_CLIENTS`] are tracked (an
/// address no TCP peer has).
const OVERFLOW_KEY: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// `HTTP_RATE_LIMIT` requests per minute per client.
pub struct ClientRateLimit {
    limiter: RateLimiter<IpAddr, BoundedClients, DefaultClock>,
    per_minute: NonZeroU32,
}

/// governor's per-key state, with a bound on the number of keys: a client
/// that rotates addresses (an IPv6 host owns many /64s) must not grow the
/// map without end between two janitor rounds.
struct BoundedClients {
    inner: HashMapStateStore<IpAddr>,
    max: usize,
}

impl StateStore for BoundedClients {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let full = {
            let map = self.inner.lock();
            map.len() >= self.max && !map.contains_key(key)
        };
        let key = if full { &OVERFLOW_KEY } else { key };
        self.inner.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<IpAddr> for BoundedClients {
    fn retain_recent(&self, drop_below: Nanos) {
        self.inner.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.inner);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&self.inner)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&self.inner)
    }
}

impl std::fmt::Debug for ClientRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRateLimit")
            .field("per_minute", &self.per_minute)
            .field("clients", &self.limiter.len())
            .finish()
    }
}

impl ClientRateLimit {
    /// `per_minute` requests a minute per client, in a burst of up to as
    /// many, refilled evenly.
    pub fn new(per_minute: NonZeroU32) -> Self {
        Self::tracking_at_most(per_minute, MAX_TRACKED_CLIENTS)
    }

    /// As [`ClientRateLimit::new`], keeping state for at most `max` clients
    /// (plus the one key the rest share).
    fn tracking_at_most(per_minute: NonZeroU32, max: usize) -> Self {
        let store = BoundedClients {
            inner: HashMapStateStore::default(),
            max,
        };
        Self {
            limiter: RateLimiter::new(
                Quota::per_minute(per_minute),
                store,
                DefaultClock::default(),
            ),
            per_minute,
        }
    }

    /// `Ok` when `client` may make a request now, else how long to wait.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&rate_key(client))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops the state of clients that are back to a full allowance, so the
    /// map does not grow with every address ever seen.
    pub fn forget_idle_clients(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Clients with state held now.
    pub fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }

    /// Forgets idle clients once a minute for as long as the limiter lives.
    pub fn spawn_janitor(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(limit) = weak.upgrade() else { return };
                limit.forget_idle_clients();
            }
        });
    }
}

/// The key a client is limited under: its address, or its /64 for IPv6
/// (IPv4-mapped IPv6 addresses count as the IPv4 address).
pub(crate) fn rate_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The 429 answer (with `Retry-After`) when the client of `request` (`peer`,
/// else a `ConnectInfo` extension) is over `HTTP_RATE_LIMIT`, else `None`.
/// Requests without a known peer (in-process tests) share one key.
pub fn refuse_over_limit(
    limit: &ClientRateLimit,
    request: &Request,
    peer: Option<SocketAddr>,
) -> Option<Response> {
    if HEALTH_PATHS.contains(&request.uri().path()) {
        return None;
    }
    let client = peer
        .or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| *addr)
        })
        .map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.ip());
    let wait = limit.check(client).err()?;
    tracing::debug!(client = %client, wait_ms = wait.as_millis() as u64, "client over HTTP_RATE_LIMIT");
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "请求过于频繁，请稍后重试 (too many requests: at most {} a minute per client; retry later)",
            limit.per_minute
        ),
    );
    error.retry_after = Some(wait.max(Duration::from_secs(1)));
    Some(error.into_response())
}

/// The CORS layer for `origins`, or `None` when none are configured.
/// Origins were validated by the configuration; one that still does not
/// make a header value is skipped with a warning.
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let values: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "CORS origin is not a valid header value; skipped");
                None
            }
        })
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(values))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

/// Requests being served now; graceful shutdown waits for it to reach 0.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl InFlight {
    /// Counts a request in until the guard is dropped, however it ends.
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self)
    }
}

/// Decrements the in-flight count when a request ends, however it ends.
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An error answer that is not JSON (a framework rejection) becomes the
/// envelope, keeping its status and headers; any other answer is returned
/// as it is.
pub async fn envelope_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    // Boxed: the body read is rare, and would otherwise make every
    // request's future as large as its state.
    Box::pin(into_envelope(response)).await
}

/// The envelope for a rejection (`response`, an error that is not JSON),
/// with the message the extractors give the same rejection (`extract.rs`).
async fn into_envelope(response: Response) -> Response {
    let status = response.status();
    let (parts, body) = response.into_parts();
    let detail = match axum::body::to_bytes(body, REJECTION_TEXT_LIMIT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), detail = %detail, "non-envelope server error");
    }
    let mut answer = ApiError::from(Rejection::Framework { status, detail }).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    // Keep what the layers inside left for the ones outside (the route
    // template the metrics are labelled with).
    *answer.extensions_mut() = parts.extensions;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_limited_by_their_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(rate_key(a), rate_key(b));
        assert_ne!(rate_key(a), rate_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(rate_key(mapped), IpAddr::from([192, 0, 2, 7]));
    }

    #[test]
    fn each_client_gets_its_own_allowance() {
        let limit = ClientRateLimit::new(NonZeroU32::new(2).unwrap());
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(limit.check(a).is_ok());
        assert!(limit.check(a).is_ok());
        let wait = limit.check(a).unwrap_err();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(30));
        assert!(limit.check(b).is_ok(), "another client is not affected");
        assert_eq!(limit.tracked_clients(), 2);
    }

    #[test]
    fn the_client_map_is_bounded_and_the_overflow_shares_one_allowance() {
        let limit = ClientRateLimit::tracking_at_most(NonZeroU32::new(3).unwrap(), 100);
        for i in 1..10_000u32 {
            let client = IpAddr::from(Ipv6Addr::from(u128::from(i) << 64));
            let _ = limit.check(client);
        }
        assert_eq!(
            limit.tracked_clients(),
            101,
            "100 clients and the shared key"
        );
        // A client known before the map filled keeps its own allowance...
        let known = IpAddr::from(Ipv6Addr::from(5u128 << 64));
        assert!(limit.check(known).is_ok());
        // ...while newcomers share the overflow one, long spent by now.
        let newcomer = IpAddr::from([192, 0, 2, 1]);
        assert!(limit.check(newcomer).is_err());
        assert_eq!(limit.tracked_clients(), 101);
    }
}
