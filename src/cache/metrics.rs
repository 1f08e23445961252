//! The cache's instruments: lookups by result and by layer, and the sizes of
//! the in-process layers read at scrape time.
//!
//! Decisions:
//! - **Handles resolved once on the hot path.** A labelled `Family` lookup
//!   takes a read lock and hashes the label set; done four times per hot
//!   lookup, on a lock both cores share, it cost more than the near-cache
//!   read itself. Every series here exists from the start, so
//!   [`CacheMetrics`] keeps their handles. A handle is a clone of the same
//!   counter, so the exposition is unchanged.
//! - **Every series starts at zero**, so a first miss shows as an increase
//!   (a series born at 1 does not, for `rate` and `increase`).
//! - **Sizes are read, not copied.** The near cache and the write-back queue
//!   already know how many entries they hold; a collector asks them when
//!   `/metrics` is scraped.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::MemberCache;
use super::near::NearCache;
use super::write_back::WriteBackQueue;
use crate::metrics::{count, gauge};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub tier: &'static str,
    pub result: &'static str,
}

/// Lookups as the cache answers them; held by [`super::MemberCache`].
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    /// Every counted lookup, `hit` (no upstream call needed) or `miss` — the
    /// stats endpoint's `cache_hits` / `cache_misses`, per process.
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
    /// Every series starts at zero, and its handle is kept for counting.
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
        add(&self.request_handles, hits, misses);
    }

    /// Counts `hits` and `misses` of one tier (one of [`TIERS`]).
    pub fn tier(&self, tier: &'static str, hits: u64, misses: u64) {
        let Some(i) = TIERS.iter().position(|t| *t == tier) else {
            debug_assert!(false, "unknown tier {tier}");
            return;
        };
        add(&self.tier_handles[i], hits, misses);
    }

    /// Counts one lookup of `tier` that `found` the member or not.
    pub fn found(&self, tier: &'static str, found: bool) {
        self.tier(tier, u64::from(found), u64::from(!found));
    }

    /// Registers the lookup counters.
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "zsxq_cache_requests",
            "Member lookups answered without (hit) or with (miss) the upstream",
            self.requests.clone(),
        );
        registry.register(
            "zsxq_cache_tier_lookups",
            "Lookups per cache layer (near, store, near_stale, negative) and result",
            self.tiers.clone(),
        );
    }
}

/// Adds `hits` and `misses` to a (hit, miss) pair of handles.
fn add(handles: &[Counter; 2], hits: u64, misses: u64) {
    for (counter, n) in handles.iter().zip([hits, misses]) {
        if n > 0 {
            counter.inc_by(n);
        }
    }
}

impl MemberCache {
    /// Registers the cache's series: the lookup counters, and the sizes of
    /// the layers in front of the store, read at scrape time.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
        registry.register_collector(Box::new(CacheCollector {
            near: Arc::clone(&self.near),
            write_back: Arc::clone(&self.write_back),
        }));
    }
}

/// The sizes of the layers in front of the store, read at scrape time.
struct CacheCollector {
    near: Arc<NearCache>,
    write_back: Arc<WriteBackQueue>,
}

impl fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheCollector").finish_non_exhaustive()
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        gauge(
            &mut encoder,
            "zsxq_near_cache_entries",
            "Members held in the in-process near cache",
            count(self.near.len()),
        )?;
        gauge(
            &mut encoder,
            "zsxq_near_cache_bytes",
            "Bytes the near cache's entries are charged against NEAR_CACHE_MB",
            count(self.near.weighed_bytes()),
        )?;
        gauge(
            &mut encoder,
            "zsxq_write_back_pending",
            "Members fetched during a store outage, waiting to be written",
            count(self.write_back.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_from_the_start_and_handles_count_into_it() {
        let m = CacheMetrics::default();
        m.requests(2, 1);
        m.tier("store", 0, 3);
        let mut registry = Registry::default();
        m.register(&mut registry);
        crate::metrics::assert_exposes(
            registry,
            &[
                r#"zsxq_cache_requests_total{result="hit"} 2"#,
                r#"zsxq_cache_requests_total{result="miss"} 1"#,
                r#"zsxq_cache_tier_lookups_total{tier="store",result="miss"} 3"#,
                r#"zsxq_cache_tier_lookups_total{tier="negative",result="hit"} 0"#,
            ],
        );
    }
}
