//! The HTTP layer's instruments: answers by route template, method and
//! status, their durations, and the requests in flight read at scrape time.
//!
//! Decisions:
//! - **Bounded labels.** Routes are labelled by their template
//!   (`/api/users/{user_id}`), never by the raw path, and every unmatched
//!   path is `unmatched`; methods outside the API's few are `other`. A
//!   fuzzer cannot grow the series count.
//! - **Handles resolved once on the hot path.** A labelled `Family` lookup
//!   takes a read lock and hashes the label set, which on a lock both cores
//!   share costs more than a near-cache hit. A route's `GET`/200 series is
//!   resolved on its first answer and kept in its [`RouteSeries`]; a handle
//!   is a clone of the same series, so the exposition is unchanged.
//! - **Buckets** from a millisecond (a near-cache hit) to a minute (a sync).

use std::fmt;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::edge::InFlight;
use crate::metrics::{Histograms, count, gauge};

/// HTTP answer times, seconds: a near-cache hit to a long sync.
const HTTP_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
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

/// HTTP requests; updated by the pipeline in `pipeline.rs`.
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
/// (`observe.rs`) so the hot combination needs no label lookup.
#[derive(Debug)]
pub struct RouteSeries {
    /// The template, e.g. `/api/users/{user_id}`.
    route: String,
    /// The duration histogram and the counter of `GET` answered 200,
    /// resolved on the first such answer (so a series appears only once it
    /// has something to count).
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

    /// Registers the answer counter, the duration histogram and the count
    /// of requests `in_flight`, read at scrape time.
    pub fn register(&self, registry: &mut Registry, in_flight: Arc<InFlight>) {
        registry.register(
            "zsxq_http_requests",
            "HTTP requests answered, by route template, method and status",
            self.requests.clone(),
        );
        registry.register(
            "zsxq_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            self.duration.clone(),
        );
        registry.register_collector(Box::new(InFlightCollector(in_flight)));
    }
}

/// Requests being answered now, read at scrape time.
#[derive(Debug)]
struct InFlightCollector(Arc<InFlight>);

impl Collector for InFlightCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        gauge(
            &mut encoder,
            "zsxq_http_requests_in_flight",
            "HTTP requests being answered now",
            count(self.0.get()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_series_and_the_labelled_lookup_count_into_the_same_family() {
        let http = HttpMetrics::default();
        let route = RouteSeries::new("/api/users/{user_id}");
        http.observe_route(Some(&route), "GET", 200, 0.002);
        http.observe("/api/users/{user_id}".to_owned(), "GET", 200, 0.002);
        http.observe_route(None, "GET", 404, 0.001);
        let in_flight = Arc::new(InFlight::default());
        let _request = in_flight.enter();
        let mut registry = Registry::default();
        http.register(&mut registry, in_flight.clone());
        crate::metrics::assert_exposes(
            registry,
            &[
                r#"zsxq_http_requests_total{route="/api/users/{user_id}",method="GET",status="200"} 2"#,
                r#"zsxq_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
                r#"zsxq_http_request_duration_seconds_count{route="/api/users/{user_id}",method="GET"} 2"#,
                "zsxq_http_requests_in_flight 1",
            ],
        );
    }
}
