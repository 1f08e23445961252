//! The budget's state at scrape time: the configured rate, the throttle
//! penalty, how the fleet shares the rate and how often it waited or fell
//! back. Read from the budget when `/metrics` is scraped, never copied.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::Budget;
use crate::metrics::{counter, gauge};
use crate::upstream::fleet::FleetMode;

/// The budget's configured rate and current state, read at scrape time.
pub struct BudgetCollector {
    pub budget: Arc<Budget>,
    /// `API_RATE_LIMIT`, which the budget keeps only as a spacing.
    pub rate_per_min: u32,
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
