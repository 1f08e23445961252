//! Prometheus metrics, served at `GET /metrics`: what every part shares.
//!
//! This module sits below every part that counts something and imports
//! nothing from the crate. Each part owns its instruments and registers them
//! itself (`cache/metrics.rs`, `upstream/metrics.rs`, `store/metrics.rs`,
//! `http/metrics.rs`); `startup.rs` builds one [`Registry`] from the parts it
//! holds and wraps it in [`Metrics`].
//!
//! Decisions:
//! - **`prometheus-client`**, the Prometheus project's own Rust client: no
//!   default features, a few small dependencies, and a registry per
//!   [`Metrics`] value rather than a process-global one, so several replicas
//!   in one test process each count their own.
//! - **The parts own their instruments.** The budget, the cache, the guarded
//!   store and the HTTP layer each hold the counters and histograms they
//!   update (created with them, cheap `Arc` clones), and register clones of
//!   them. Values that already exist as state — the throttle penalty, the
//!   near cache's size, the write-back queue, requests in flight — are read
//!   at scrape time by a collector living beside that state, instead of being
//!   copied on every change.
//! - **Explicit buckets**, chosen by each part for what its histograms
//!   measure; [`Histograms`] is a family with a fixed bucket layout.
//! - **Names** follow Prometheus conventions: `zsxq_` prefix, base units
//!   (seconds), `_total` on counters (added by the encoder). The exposition
//!   is OpenMetrics text, which Prometheus reads natively.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A histogram family with a fixed bucket layout: the constructor is a
/// plain function building a histogram with the part's buckets.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Writes one unlabelled gauge, for collectors that read state at scrape
/// time.
pub fn gauge<V>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: V) -> fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(family)
}

/// Writes one unlabelled counter whose value is kept elsewhere (an atomic
/// the state already holds).
pub fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(family)
}

/// A length as a gauge value (saturating: a gauge is an `i64`).
pub fn count(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The service's registry, held in `AppState`.
pub struct Metrics {
    registry: Registry,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Serves `registry`, into which the parts registered their series.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// The exposition, OpenMetrics text.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Asserts that the exposition of `registry` has each of `lines`, for the
/// parts' own tests of what they register.
#[cfg(test)]
pub(crate) fn assert_exposes(registry: Registry, lines: &[&str]) {
    let text = Metrics::new(registry).encode().expect("an exposition");
    for line in lines {
        assert!(text.lines().any(|l| l == *line), "{line} in\n{text}");
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::collector::Collector;

    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            gauge(&mut encoder, "zsxq_test_gauge", "A gauge", 3i64)?;
            gauge(&mut encoder, "zsxq_test_seconds", "Seconds", 0.5f64)?;
            counter(&mut encoder, "zsxq_test_events", "Events", 7)
        }
    }

    #[test]
    fn the_helpers_write_one_typed_sample_each() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        assert_exposes(
            registry,
            &[
                "# TYPE zsxq_test_gauge gauge",
                "zsxq_test_gauge 3",
                "# TYPE zsxq_test_seconds gauge",
                "zsxq_test_seconds 0.5",
                "# TYPE zsxq_test_events counter",
                "zsxq_test_events_total 7",
                "# EOF",
            ],
        );
    }

    #[test]
    fn a_count_saturates_instead_of_wrapping() {
        assert_eq!(count(5usize), 5);
        assert_eq!(count(usize::MAX), i64::MAX);
        assert_eq!(count(u64::MAX), i64::MAX);
    }
}
