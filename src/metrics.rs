//! Prometheus metrics (issue #7, item 3), served at `GET /metrics`.
//!
//! Decisions:
//! - **`prometheus-client`**, the Prometheus project's own Rust client: no
//!   default features, a few small dependencies, and a registry per
//!   [`Metrics`] value rather than a process-global one, so several replicas
//!   in one test process each count their own.
//! - **The parts own their instruments.** The budget, the cache and the
//!   guarded store each hold the counters and histograms they update
//!   (`UpstreamMetrics`, `CacheMetrics`, `StoreMetrics`, created with them,
//!   cheap `Arc` clones); [`Metrics::new`] registers clones of them. Values
//!   that already exist as state — the throttle penalty, the near cache's
//!   size, the write-back queue, requests in flight — are read at scrape time
//!   by a collector instead of being copied on every change.
//! - **Bounded labels.** Routes are labelled by their template
//!   (`/api/users/{user_id}`), never by the raw path, and every unmatched
//!   path is `unmatched`; methods outside the API's few are `other`. A
//!   fuzzer cannot grow the series count.
//! - **Handles resolved once on the hot path** (issue #8). A labelled
//!   `Family` lookup takes a read lock and hashes the label set; done four
//!   times per hot lookup, on a lock both cores share, it cost more than the
//!   near-cache read itself. The cache's series all exist from the start, so
//!   [`CacheMetrics`] keeps their handles; an HTTP route's `GET`/200 series
//!   is resolved on its first answer and kept in its [`RouteSeries`]. A
//!   handle is a clone of the same counter, so the exposition is unchanged.
//! - **Explicit buckets**, chosen for what each histogram measures: HTTP
//!   answers from a millisecond (a near-cache hit) to a minute (a sync);
//!   store operations from 100 µs to the breaker's bounds; queue waits for an
//!   upstream slot from a millisecond to the minutes a large sync can queue.
//! - **Names** follow Prometheus conventions: `zsxq_` prefix, base units
//!   (seconds), `_total` on counters (added by the encoder). The exposition
//!   is OpenMetrics text, which Prometheus reads natively.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::cache::MemberCache;
use crate::http::edge::InFlight;
use crate::upstream::Priority;
use crate::upstream::budget::FleetMode;

/// HTTP answer times, seconds: a near-cache hit to a long sync.
const HTTP_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Store operation times, seconds: a local Redis round trip to the bounds of
/// the circuit breaker (50 ms for a lookup, 250 ms and more for batches).
const STORE_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Waits for an upstream slot, seconds: none to a sync queued for minutes.
const QUEUE_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

fn queue_histogram() -> Histogram {
    Histogram::new(QUEUE_BUCKETS)
}

/// A histogram family with a fixed bucket layout.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabels {
    pub priority: &'static str,
}

impl From<Priority> for PriorityLabels {
    fn from(p: Priority) -> Self {
        Self {
            priority: match p {
                Priority::Interactive => "interactive",
                Priority::Background => "background",
            },
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub tier: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatusLabels {
    pub route: String,
    pub method: &'static str,
    pub status: u16,
}

/// Upstream calls as the budget sees them; held by [`crate::upstream::Budget`].
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    /// HTTP requests sent upstream (every attempt, retries included).
    pub calls: Family<PriorityLabels, Counter>,
    /// Answers that were throttles (1059 / 429).
    pub throttled: Family<PriorityLabels, Counter>,
    /// Retries after retryable failures.
    pub retries: Family<PriorityLabels, Counter>,
    /// Time from asking the budget for a slot to holding one.
    pub queue_wait: Histograms<PriorityLabels>,
    /// Queued fetches given up before their slot: nobody waited any more.
    pub given_up: Counter,
    /// Lookups refused by the interactive queue (full, or the client's share).
    pub queue_refused: Counter,
}

impl Default for UpstreamMetrics {
    /// Every series starts at zero, so a first throttle shows as an increase
    /// (a series born at 1 does not, for `rate` and `increase`).
    fn default() -> Self {
        let m = Self {
            calls: Family::default(),
            throttled: Family::default(),
            retries: Family::default(),
            queue_wait: Family::new_with_constructor(queue_histogram),
            given_up: Counter::default(),
            queue_refused: Counter::default(),
        };
        for p in [Priority::Interactive, Priority::Background] {
            let labels = PriorityLabels::from(p);
            let _ = m.calls.get_or_create(&labels);
            let _ = m.throttled.get_or_create(&labels);
            let _ = m.retries.get_or_create(&labels);
            let _ = m.queue_wait.get_or_create(&labels);
        }
        m
    }
}

/// Lookups as the cache answers them; held by [`MemberCache`].
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    /// Every counted lookup, `hit` (no upstream call needed) or `miss` — the
    /// seed's `cache_hits` / `cache_misses`, per process.
    pub requests: Family<ResultLabels, Counter>,
    /// Per layer of a single lookup: `near`, `store`, `near_stale` (the near
    /// cache asked because the store failed) and `negative` (recent "not a
    /// member" answers), each `hit` or `miss`.
    pub tiers: Family<TierLabels, Counter>,
    /// `requests{result="hit"}` and `{result="miss"}`, resolved once.
    request_handles: [Counter; 2],
    /// `tiers` for each of [`TIERS`] × (hit, miss), resolved once.
    tier_handles: [[Counter; 2]; TIERS.len()],
}

/// The layers [`CacheMetrics::tier`] is called with.
const TIERS: [&str; 4] = ["near", "store", "near_stale", "negative"];

/// The `result` label values, in the order the resolved handles keep them.
const RESULTS: [&str; 2] = ["hit", "miss"];

impl Default for CacheMetrics {
    /// Every series starts at zero (see [`UpstreamMetrics::default`]), and
    /// its handle is kept for counting.
    fn default() -> Self {
        let requests: Family<ResultLabels, Counter> = Family::default();
        let tiers: Family<TierLabels, Counter> = Family::default();
        let request_handles =
            RESULTS.map(|result| requests.get_or_create(&ResultLabels { result }).clone());
        let tier_handles = TIERS.map(|tier| {
            RESULTS.map(|result| tiers.get_or_create(&TierLabels { tier, result }).clone())
        });
        Self {
            requests,
            tiers,
            request_handles,
            tier_handles,
        }
    }
}

impl CacheMetrics {
    /// Counts `hits` and `misses` at the request level.
    pub fn requests(&self, hits: u64, misses: u64) {
        for (counter, n) in self.request_handles.iter().zip([hits, misses]) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }

    /// Counts `hits` and `misses` of one tier (one of [`TIERS`]).
    pub fn tier(&self, tier: &'static str, hits: u64, misses: u64) {
        let Some(i) = TIERS.iter().position(|t| *t == tier) else {
            debug_assert!(false, "unknown tier {tier}");
            return;
        };
        for (counter, n) in self.tier_handles[i].iter().zip([hits, misses]) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }
}

/// The store behind the circuit breaker; held by
/// [`crate::store::guard::GuardedStore`].
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Time of each operation that reached the store (not the ones an open
    /// breaker refused at once).
    pub op_seconds: Histograms<OpLabels>,
    /// Operations that failed or timed out (the store was unreachable, hung
    /// or broken); the "Redis unreachable" alert counts these.
    pub failures: Counter,
    /// Times the breaker opened.
    pub breaker_opened: Counter,
    /// 1 while the breaker is open (calls fail fast), else 0.
    pub breaker_open: Gauge,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            op_seconds: Family::new_with_constructor(store_histogram),
            failures: Counter::default(),
            breaker_opened: Counter::default(),
            breaker_open: Gauge::default(),
        }
    }
}

/// HTTP requests; updated by the pipeline in `http/pipeline.rs`.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: Family<RouteStatusLabels, Counter>,
    pub duration: Histograms<RouteLabels>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(http_histogram),
        }
    }
}

/// The series of one route template, kept by the route's layer
/// (`http/observe.rs`) so the hot combination needs no label lookup.
#[derive(Debug)]
pub struct RouteSeries {
    /// The template, e.g. `/api/users/{user_id}`.
    route: String,
    /// The duration histogram and the counter of `GET` answered 200,
    /// resolved on the first such answer (so, as before, a series appears
    /// only once it has something to count).
    get_ok: OnceLock<(Histogram, Counter)>,
}

impl RouteSeries {
    pub fn new(route: &str) -> Self {
        Self {
            route: route.to_owned(),
            get_ok: OnceLock::new(),
        }
    }

    pub fn route(&self) -> &str {
        &self.route
    }
}

impl HttpMetrics {
    /// Records one answered request of `route` (`None`: no route matched).
    pub fn observe_route(
        &self,
        route: Option<&RouteSeries>,
        method: &'static str,
        status: u16,
        seconds: f64,
    ) {
        match route {
            Some(series) if method == "GET" && status == 200 => {
                let (duration, count) = series.get_ok.get_or_init(|| {
                    let route = series.route.clone();
                    let duration = self
                        .duration
                        .get_or_create(&RouteLabels {
                            route: route.clone(),
                            method,
                        })
                        .clone();
                    let count = self
                        .requests
                        .get_or_create(&RouteStatusLabels {
                            route,
                            method,
                            status,
                        })
                        .clone();
                    (duration, count)
                });
                duration.observe(seconds);
                count.inc();
            }
            Some(series) => self.observe(series.route.clone(), method, status, seconds),
            None => self.observe("unmatched".to_owned(), method, status, seconds),
        }
    }

    /// Records one answered request.
    pub fn observe(&self, route: String, method: &'static str, status: u16, seconds: f64) {
        self.duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RouteStatusLabels {
                route,
                method,
                status,
            })
            .inc();
    }
}

/// The service's registry, held in `AppState`.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Metrics {
    /// Registers the instruments of `cache` (and its budget), of the guarded
    /// store (`store`), and the scrape-time state of both.
    pub fn new(
        cache: Arc<MemberCache>,
        store: &StoreMetrics,
        in_flight: Arc<InFlight>,
        rate_per_min: u32,
        refusal: Arc<crate::upstream::refusal::Refusal>,
    ) -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::default();
        registry.register(
            "zsxq_build",
            "Build of the running service",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "zsxq_http_requests",
            "HTTP requests answered, by route template, method and status",
            http.requests.clone(),
        );
        registry.register(
            "zsxq_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            http.duration.clone(),
        );
        let c = cache.metrics();
        registry.register(
            "zsxq_cache_requests",
            "Member lookups answered without (hit) or with (miss) the upstream",
            c.requests.clone(),
        );
        registry.register(
            "zsxq_cache_tier_lookups",
            "Lookups per cache layer (near, store, near_stale, negative) and result",
            c.tiers.clone(),
        );
        let u = cache.budget().metrics();
        registry.register(
            "zsxq_upstream_calls",
            "HTTP requests sent to the Zsxq API, by priority",
            u.calls.clone(),
        );
        registry.register(
            "zsxq_upstream_throttled",
            "Upstream answers that were throttles (1059 or 429), by priority",
            u.throttled.clone(),
        );
        registry.register(
            "zsxq_upstream_retries",
            "Upstream calls retried after a retryable failure, by priority",
            u.retries.clone(),
        );
        registry.register(
            "zsxq_upstream_given_up",
            "Queued upstream calls given up before taking a slot: nobody waited for them any more",
            u.given_up.clone(),
        );
        registry.register(
            "zsxq_upstream_queue_refused",
            "Lookups refused because the interactive queue was full or the client held its share",
            u.queue_refused.clone(),
        );
        registry.register(
            "zsxq_upstream_queue_wait_seconds",
            "Time waited for an upstream slot (rate, fleet, concurrency), by priority",
            u.queue_wait.clone(),
        );
        registry.register(
            "zsxq_store_operation_duration_seconds",
            "Time of store operations that reached the store, by operation",
            store.op_seconds.clone(),
        );
        registry.register(
            "zsxq_store_failures",
            "Store operations that failed or timed out (store unreachable, hung or broken)",
            store.failures.clone(),
        );
        registry.register(
            "zsxq_store_breaker_opened",
            "Times the store's circuit breaker opened",
            store.breaker_opened.clone(),
        );
        registry.register(
            "zsxq_store_breaker_open",
            "1 while the store's circuit breaker is open, else 0",
            store.breaker_open.clone(),
        );
        registry.register_collector(Box::new(crate::upstream::refusal::RefusalCollector(
            refusal,
        )));
        registry.register_collector(Box::new(StateCollector {
            cache,
            in_flight,
            rate_per_min,
        }));
        Self { registry, http }
    }

    /// The exposition, OpenMetrics text.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Values read at scrape time from the state that already holds them.
struct StateCollector {
    cache: Arc<MemberCache>,
    in_flight: Arc<InFlight>,
    rate_per_min: u32,
}

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

/// Writes one unlabelled gauge.
fn gauge<V>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: V) -> fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(family)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let budget = self.cache.budget();
        gauge(
            &mut encoder,
            "zsxq_upstream_rate_limit_per_minute",
            "API_RATE_LIMIT: upstream calls a minute the whole fleet may make",
            i64::from(self.rate_per_min),
        )?;
        gauge(
            &mut encoder,
            "zsxq_upstream_penalty_seconds",
            "Extra spacing of upstream calls after throttles (0 when none)",
            budget.penalty().as_secs_f64(),
        )?;
        let mode = budget.fleet_mode();
        let metric = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "zsxq_fleet_budget_mode",
            "How the upstream rate is shared: 1 for the current mode (off, shared, fallback)",
            None,
            metric.metric_type(),
        )?;
        for (name, m) in [
            ("off", FleetMode::Off),
            ("shared", FleetMode::Shared),
            ("fallback", FleetMode::Fallback),
        ] {
            let labels = [("mode", name)];
            ConstGauge::new(i64::from(mode == m)).encode(family.encode_family(&labels)?)?;
        }
        let stats = &budget.stats;
        for (name, help, value) in [
            (
                "zsxq_fleet_budget_waits",
                "Times the fleet's schedule in Redis said an upstream slot was not yet due",
                &stats.fleet_waits,
            ),
            (
                "zsxq_fleet_budget_fallbacks",
                "Upstream slots taken from the local fallback because Redis was unreachable",
                &stats.fleet_fallbacks,
            ),
        ] {
            let metric = ConstCounter::new(value.load(Ordering::Relaxed));
            let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(family)?;
        }
        gauge(
            &mut encoder,
            "zsxq_near_cache_entries",
            "Members held in the in-process near cache",
            i64::try_from(self.cache.near().len()).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "zsxq_write_back_pending",
            "Members fetched during a store outage, waiting to be written",
            i64::try_from(self.cache.write_back_queue().len()).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "zsxq_http_requests_in_flight",
            "HTTP requests being answered now",
            i64::try_from(self.in_flight.get()).unwrap_or(i64::MAX),
        )?;
        Ok(())
    }
}
