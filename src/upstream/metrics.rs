//! The upstream's instruments: calls, throttles, retries and waits for a
//! slot by priority.
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
//!   the refusal guard; their collectors (`budget/collector.rs`,
//!   `refusal/collector.rs`) sit beside that state and read it when
//!   `/metrics` is scraped. `upstream::register_metrics` registers all three.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Priority;
use crate::metrics::Histograms;

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

impl UpstreamMetrics {
    /// Registers the budget's counters and its queue-wait histogram.
    pub fn register(&self, registry: &mut Registry) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;

    use prometheus_client::registry::Registry;

    use crate::upstream::Budget;
    use crate::upstream::refusal::{Refusal, RefusalPolicy};

    #[test]
    fn a_lone_budget_shows_its_rate_the_off_mode_and_no_refusal() {
        let budget = Arc::new(Budget::new(600, Duration::ZERO, 2));
        let refusal = Arc::new(Refusal::local(RefusalPolicy::default()));
        let mut registry = Registry::default();
        crate::upstream::register_metrics(&mut registry, &budget, 600, refusal);
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
