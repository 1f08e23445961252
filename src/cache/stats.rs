//! The cache's statistics: lookups counted in memory, flushed to the store's
//! stats hash once a second, and the stats endpoint's answer.
//!
//! Decisions:
//! - **No store round trip on the hot path.** A lookup adds to two relaxed
//!   atomics ([`PendingCounters`]); a mutex shared by every request was a
//!   contention point under load. The flusher moves the counts into the
//!   store every second, and puts them back when the store refuses them, so
//!   nothing is lost while it is down.
//! - **Upstream calls are the budget's.** The budget counts every call it
//!   lets out; a flush adds the calls made since the last one it stored.
//! - **Several processes, one hash.** Each adds its own counts (`HINCRBY`
//!   on Redis), so the stats endpoint of any replica reports the fleet's;
//!   what this process has not flushed yet is added to its answer, so its
//!   own lookups show at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::MemberCache;
use crate::store::{StatCounters, StoredStats};
use crate::upstream::budget::BudgetSnapshot;

/// Lookup counters not yet flushed to the store: relaxed atomics, since
/// they are only summed, never used to order anything.
#[derive(Debug, Default)]
pub(super) struct PendingCounters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl PendingCounters {
    fn add(&self, hits: u64, misses: u64) {
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
    }

    /// Takes the counts, leaving zero.
    pub(super) fn take(&self) -> StatCounters {
        lookups(
            self.hits.swap(0, Ordering::Relaxed),
            self.misses.swap(0, Ordering::Relaxed),
        )
    }

    /// The counts, without taking them.
    fn peek(&self) -> StatCounters {
        lookups(
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Puts back counts a failed flush took.
    fn restore(&self, c: &StatCounters) {
        self.add(c.cache_hits, c.cache_misses);
    }
}

/// The counters of `hits` and `misses`. Every request is a hit or a miss, so
/// the total is their sum.
fn lookups(hits: u64, misses: u64) -> StatCounters {
    StatCounters {
        total_requests: hits + misses,
        cache_hits: hits,
        cache_misses: misses,
        api_calls: 0,
    }
}

/// What `GET /api/users/cache/stats` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStats {
    pub total_requests: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_hit_rate: f64,
    pub api_calls: u64,
    pub cached_users_count: u64,
    pub last_sync_time: Option<String>,
    pub redis_memory_usage: String,
    pub store: &'static str,
    pub store_available: bool,
    pub upstream: BudgetSnapshot,
}

/// Percentage with two decimals; 0 when nothing was asked yet.
pub fn rate_percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 10_000.0 / whole as f64).round() / 100.0
    }
}

impl MemberCache {
    /// One lookup answered from a cache tier, for the stats hash and
    /// `/metrics` alike.
    pub(super) fn hit(&self) {
        self.count_lookups(1, 0);
    }

    /// One lookup that had to go to the upstream.
    pub(super) fn miss(&self) {
        self.count_lookups(0, 1);
    }

    /// Counts lookups answered elsewhere (a refund list's batch read).
    pub(crate) fn count_lookups(&self, hits: u64, misses: u64) {
        self.pending.add(hits, misses);
        self.metrics.requests(hits, misses);
    }

    /// Forgets what was not flushed yet: the stats hash was cleared with the
    /// rest of the cache.
    pub(super) fn forget_unflushed_stats(&self) {
        self.pending.take();
        let (calls_now, _) = self.unflushed_calls();
        self.flushed_calls.store(calls_now, Ordering::Relaxed);
    }

    /// Upstream calls made so far, and how many of them no flush stored.
    fn unflushed_calls(&self) -> (u64, u64) {
        let calls_now = self.budget.stats.calls.load(Ordering::Relaxed);
        let calls_before = self.flushed_calls.load(Ordering::Relaxed);
        (calls_now, calls_now.saturating_sub(calls_before))
    }

    /// Moves in-memory counters into the store. On failure they are kept for
    /// the next try, so nothing is lost while the store is down.
    pub async fn flush_stats(&self) {
        let (calls_now, new_calls) = self.unflushed_calls();
        let mut delta = self.pending.take();
        delta.api_calls += new_calls;
        if delta.is_zero() {
            return;
        }
        match self.store.add_stats(&delta).await {
            Ok(()) => self.flushed_calls.store(calls_now, Ordering::Relaxed),
            Err(_) => self.pending.restore(&delta),
        }
    }

    /// Counters and last sync time: stored ones plus what this process has
    /// not flushed yet (all of them when the store is unreachable).
    pub async fn stats_counters(&self) -> StoredStats {
        self.flush_stats().await;
        let mut stored = self.store.stats().await.unwrap_or_default();
        stored.counters.add(&self.pending.peek());
        stored.counters.api_calls += self.unflushed_calls().1;
        stored
    }

    /// The stats endpoint's answer.
    pub async fn stats(&self) -> CacheStats {
        let stored = self.stats_counters().await;
        let counters = stored.counters;
        let store_available = self.store.ping().await.is_ok();
        CacheStats {
            total_requests: counters.total_requests,
            cache_hits: counters.cache_hits,
            cache_misses: counters.cache_misses,
            cache_hit_rate: rate_percent(counters.cache_hits, counters.total_requests),
            api_calls: counters.api_calls,
            cached_users_count: self.store.count().await.unwrap_or(0),
            last_sync_time: stored.last_sync_time.map(crate::domain::iso_utc),
            redis_memory_usage: self
                .store
                .memory_usage()
                .await
                .unwrap_or_else(|_| "unavailable".to_string()),
            store: self.store.kind(),
            store_available,
            upstream: self.budget.snapshot(),
        }
    }

    /// Flushes counters every second until the process ends. Also logs the
    /// upstream budget once a minute when it was used, so the logs alone
    /// tell how hard the upstream was pushed.
    pub fn spawn_stats_flusher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_logged_calls = 0;
            for second in 1u64.. {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { return };
                cache.flush_stats().await;
                let BudgetSnapshot {
                    upstream_calls,
                    throttled,
                    retries,
                    queue_wait_ms_interactive,
                    queue_wait_ms_background,
                    ..
                } = cache.budget.snapshot();
                if second % 60 == 0 && upstream_calls != last_logged_calls {
                    last_logged_calls = upstream_calls;
                    let penalty_ms = cache.budget.penalty().as_millis() as u64;
                    tracing::info!(
                        upstream_calls,
                        throttled,
                        retries,
                        queue_wait_ms_interactive,
                        queue_wait_ms_background,
                        penalty_ms,
                        "upstream budget"
                    );
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_counts_are_taken_once_and_restored_after_a_failed_flush() {
        let pending = PendingCounters::default();
        pending.add(3, 1);
        assert_eq!(pending.peek().total_requests, 4);
        let taken = pending.take();
        assert_eq!((taken.cache_hits, taken.cache_misses), (3, 1));
        assert!(pending.peek().is_zero(), "taken, not copied");
        pending.restore(&taken);
        pending.add(1, 0);
        let again = pending.take();
        assert_eq!((again.total_requests, again.cache_hits), (5, 4));
    }

    #[test]
    fn a_rate_has_two_decimals_and_is_zero_for_nothing_asked() {
        assert_eq!(rate_percent(0, 0), 0.0);
        assert_eq!(rate_percent(1, 3), 33.33);
        assert_eq!(rate_percent(2, 3), 66.67);
        assert_eq!(rate_percent(5, 5), 100.0);
    }
}
