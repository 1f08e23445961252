//! The refusal gauges of `/metrics`, read from the guard at scrape time:
//! whether calls are paused or the token is rejected, and since when.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::{Refusal, Standing};

/// The gauges `/metrics` shows, read from the guard at scrape time.
#[derive(Debug)]
pub struct RefusalCollector(pub Arc<Refusal>);

impl Collector for RefusalCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let standing = self.0.standing();
        let (refusing_since, token_since) = match standing {
            Standing::Ok => (0, 0),
            Standing::Refusing { since_ms, .. } => (since_ms, 0),
            Standing::TokenRejected { since_ms, .. } => (0, since_ms),
        };
        for (name, help, value) in [
            (
                "zsxq_upstream_refusing",
                "1 while calls are paused after a run of 1059 refusals, else 0",
                i64::from(refusing_since != 0),
            ),
            (
                "zsxq_upstream_token_rejected",
                "1 while the upstream rejects the token (401/403) and calls are stopped, else 0",
                i64::from(token_since != 0),
            ),
        ] {
            let metric = ConstGauge::new(value);
            let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(family)?;
        }
        for (name, help, since) in [
            (
                "zsxq_upstream_refusing_since_seconds",
                "Unix time the current run of 1059 refusals began (0 when none)",
                refusing_since,
            ),
            (
                "zsxq_upstream_token_rejected_since_seconds",
                "Unix time the upstream first rejected the token (0 when it accepts it)",
                token_since,
            ),
        ] {
            let metric = ConstGauge::new(since as f64 / 1000.0);
            let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(family)?;
        }
        Ok(())
    }
}
