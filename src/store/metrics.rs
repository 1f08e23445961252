//! The store's instruments: operation times, failures and the circuit
//! breaker's state, as the guarded store (`guard.rs`) sees them.
//!
//! Operation buckets run from a local Redis round trip (100 µs) to the
//! breaker's bounds: 50 ms for a lookup, 250 ms and more for batches.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::Histograms;

/// Store operation times, seconds: a local Redis round trip to the bounds of
/// the circuit breaker (50 ms for a lookup, 250 ms and more for batches).
const STORE_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

/// The store behind the circuit breaker; held by
/// [`super::guard::GuardedStore`].
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

impl StoreMetrics {
    /// Registers the store's series.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "zsxq_store_operation_duration_seconds",
            "Time of store operations that reached the store, by operation",
            self.op_seconds.clone(),
        );
        registry.register(
            "zsxq_store_failures",
            "Store operations that failed or timed out (store unreachable, hung or broken)",
            self.failures.clone(),
        );
        registry.register(
            "zsxq_store_breaker_opened",
            "Times the store's circuit breaker opened",
            self.breaker_opened.clone(),
        );
        registry.register(
            "zsxq_store_breaker_open",
            "1 while the store's circuit breaker is open, else 0",
            self.breaker_open.clone(),
        );
    }
}
