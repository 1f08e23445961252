//! The upstream's instruments: calls, throttles, retries and waits for a
//! slot by priority, and the budget's state read at scrape time.
//!
//! Decisions:
//! - **Held by the budget.** [`UpstreamMetrics`] is created with the
//!   [`Budget`], which counts into it as calls go out; registering clones of
//!   its families shares the same counters.
//! - **Every series starts at zero**, for each priority, so a first throttle
//!   shows as an increase (a series born at 1 does not, for `rate` and
//!   `increase`).
//! - **Queue-wait buckets** from a millisecond to the minutes a large sync
//!   can queue for a slot.
//! - **State is read, not copied.** The penalty, the fleet mode and the
//!   fleet's counters already live in the budget, the refusal standing in
//!   the refusal guard (`refusal.rs`); collectors read them when `/metrics`
//!   is scraped.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::budget::FleetMode;
use super::refusal::{Refusal, RefusalCollector};
use super::{Budget, Priority};
use crate::metrics::{Histograms, counter, gauge};

/// Waits for an upstream slot, seconds: none to a sync queued for minutes.
const QUEUE_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn queue_histogram() -> Histogram {
    Histogram::new(QUEUE_BUCKETS)
}

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

/// Upstream calls as the budget sees them; held by [`Budget`].
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
    /// Every series starts at zero (see the module's decisions).
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

/// Registers the upstream's series: the budget's instruments, and the
/// state of the budget (with `API_RATE_LIMIT`, `rate_per_min`) and of the
/// refusal guard, read at scrape time.
pub fn register(
    registry: &mut Registry,
    budget: &Arc<Budget>,
    rate_per_min: u32,
    refusal: Arc<Refusal>,
) {
    budget.metrics().register(registry);
    registry.register_collector(Box::new(RefusalCollector(refusal)));
    registry.register_collector(Box::new(BudgetCollector {
        budget: Arc::clone(budget),
        rate_per_min,
    }));
}

impl UpstreamMetrics {
    /// Registers the budget's counters and its queue-wait histogram.
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "zsxq_upstream_calls",
            "HTTP requests sent to the Zsxq API, by priority",
            self.calls.clone(),
        );
        registry.register(
            "zsxq_upstream_throttled",
            "Upstream answers that were throttles (1059 or 429), by priority",
            self.throttled.clone(),
        );
        registry.register(
            "zsxq_upstream_retries",
            "Upstream calls retried after a retryable failure, by priority",
            self.retries.clone(),
        );
        registry.register(
            "zsxq_upstream_given_up",
            "Queued upstream calls given up before taking a slot: nobody waited for them any more",
            self.given_up.clone(),
        );
        registry.register(
            "zsxq_upstream_queue_refused",
            "Lookups refused because the interactive queue was full or the client held its share",
            self.queue_refused.clone(),
        );
        registry.register(
            "zsxq_upstream_queue_wait_seconds",
            "Time waited for an upstream slot (rate, fleet, concurrency), by priority",
            self.queue_wait.clone(),
        );
    }
}

/// The budget's configured rate and current state, read at scrape time.
struct BudgetCollector {
    budget: Arc<Budget>,
    /// `API_RATE_LIMIT`, which the budget keeps only as a spacing.
    rate_per_min: u32,
}

impl fmt::Debug for BudgetCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetCollector").finish_non_exhaustive()
    }
}

impl Collector for BudgetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let budget = &self.budget;
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
        counter(
            &mut encoder,
            "zsxq_fleet_budget_waits",
            "Times the fleet's schedule in Redis said an upstream slot was not yet due",
            budget.stats.fleet_waits.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "zsxq_fleet_budget_fallbacks",
            "Upstream slots taken from the local fallback because Redis was unreachable",
            budget.stats.fleet_fallbacks.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::refusal::RefusalPolicy;

    #[test]
    fn a_lone_budget_shows_its_rate_the_off_mode_and_no_refusal() {
        let budget = Arc::new(Budget::new(600, Duration::ZERO, 2));
        let refusal = Arc::new(Refusal::local(RefusalPolicy::default()));
        let mut registry = Registry::default();
        register(&mut registry, &budget, 600, refusal);
        crate::metrics::assert_exposes(
            registry,
            &[
                r#"zsxq_upstream_calls_total{priority="interactive"} 0"#,
                r#"zsxq_upstream_throttled_total{priority="background"} 0"#,
                "zsxq_upstream_rate_limit_per_minute 600",
                r#"zsxq_fleet_budget_mode{mode="off"} 1"#,
                r#"zsxq_fleet_budget_mode{mode="shared"} 0"#,
                "zsxq_fleet_budget_waits_total 0",
                "zsxq_upstream_refusing 0",
            ],
        );
    }
}
