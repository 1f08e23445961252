//! A circuit breaker around any [`Store`], so that Redis being down never
//! takes the service down.
//!
//! Every operation gets a timeout. A single-member read — what a lookup waits
//! on — gets the shortest one (`STORE_TIMEOUT_MS`, 50 ms by default), so a
//! hung Redis costs a request at most that. Writes, multi-row reads and bulk
//! work get longer bounds: they are off the lookup path (the cache answers
//! before it writes) and a redb commit fsyncs, which can take tens of
//! milliseconds on a busy disk without anything being wrong.
//!
//! An error from the store (refused, dropped, an I/O error) opens the breaker
//! at once; timeouts of writes, leases and batches open it after
//! [`TIMEOUT_STRIKES`] in a row; a lookup's own short timeout never does. A
//! dead Redis answers with errors, so that is caught on the first call. A
//! slow answer is usually just a loaded machine: on 2 cores, with three
//! replicas and 1000 clients, 50 ms lookup reads time out in bursts, and a
//! breaker opened by them disabled the fleet leases and let ~600 upstream
//! calls through where 300 were needed (`tests/scale/fleet.rs`). A hung
//! Redis still trips it: the cold lookups' leases and write-backs time out
//! too, while each lookup meanwhile waits at most its 50 ms. Once open,
//! for `cool_down` every call fails at once with [`StoreError::Unavailable`]
//! instead of waiting on a dead or hung Redis, and the cache falls back to the
//! upstream. After the cool-down one call is let through as a probe; if it
//! succeeds the breaker closes, so caching resumes by itself when the store
//! comes back — no restart.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::metrics::{OpLabels, StoreMetrics};
use super::{
    ClearReport, DataIdentity, LeaseEnd, LeaseState, Page, PageRequest, StatCounters, Store,
    StoreError, StoredStats,
};
use std::collections::HashMap;

use crate::domain::{CachedMember, CheckinId, MemberNumber, UserId};
use crate::store::marks::{MarkChange, Persistence, RefundLogEntry, RefundMark};
use crate::store::{RankingKey, StoredRanking};

/// Breaker state; a std mutex because it is held for a few instructions and
/// never across an await.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Calls go through; `strikes` timeouts in a row so far.
    Closed { strikes: u32 },
    /// Failing fast until the instant; then one probe goes through.
    Open { until: Instant },
}

/// Timeouts in a row that open the breaker (any other store error opens it
/// at once).
pub const TIMEOUT_STRIKES: u32 = 3;

/// Base bound on a write or a multi-row read; grows by a millisecond a row.
pub const SLOW_OP_TIMEOUT: Duration = Duration::from_millis(250);

pub struct GuardedStore {
    inner: Box<dyn Store>,
    /// Bound on a single-member read and on `ping`: what a request waits on.
    read_timeout: Duration,
    /// Bound on bulk work (clear, big batches), which may legitimately take
    /// seconds on a large cache.
    bulk_timeout: Duration,
    cool_down: Duration,
    state: Mutex<State>,
    /// Operation times, failures and breaker state for `/metrics`.
    metrics: StoreMetrics,
}

impl GuardedStore {
    /// `read_timeout` bounds single reads (the lookup path); writes and
    /// batches get [`SLOW_OP_TIMEOUT`] plus a millisecond a row.
    pub fn new(inner: Box<dyn Store>, read_timeout: Duration, cool_down: Duration) -> Self {
        Self {
            inner,
            read_timeout,
            bulk_timeout: Duration::from_secs(60),
            cool_down,
            state: Mutex::new(State::Closed { strikes: 0 }),
            metrics: StoreMetrics::default(),
        }
    }

    /// The instruments `/metrics` reports.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// Whether the breaker currently lets calls through.
    pub fn is_closed(&self) -> bool {
        matches!(self.state.lock().map(|s| *s), Ok(State::Closed { .. }))
    }

    /// Runs `op` (named `name` in `/metrics`) under `timeout`, unless the
    /// breaker is open; opens or closes the breaker by its outcome.
    async fn guard<T, Fut>(
        &self,
        name: &'static str,
        timeout: Duration,
        op: Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        {
            let Ok(mut state) = self.state.lock() else {
                return Err(StoreError::Unavailable);
            };
            if let State::Open { until } = *state {
                if Instant::now() < until {
                    return Err(StoreError::Unavailable);
                }
                // This call is the probe; the others keep failing fast
                // until it has answered.
                *state = State::Open {
                    until: Instant::now() + self.cool_down,
                };
            }
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(timeout)),
        };
        self.metrics
            .op_seconds
            .get_or_create(&OpLabels { op: name })
            .observe(started.elapsed().as_secs_f64());
        if let Ok(mut state) = self.state.lock() {
            match &result {
                Ok(_) => {
                    if matches!(*state, State::Open { .. }) {
                        tracing::info!(
                            store = self.inner.kind(),
                            "store reachable again, breaker closed"
                        );
                    }
                    *state = State::Closed { strikes: 0 };
                    self.metrics.breaker_open.set(0);
                }
                // A corrupt record is a data problem, not an outage.
                Err(StoreError::Corrupt(_)) => {}
                // A lookup's short wait running out says the store (or this
                // process) is busy, not that it is gone: that request falls
                // back, the breaker is left alone.
                Err(StoreError::Timeout(_)) if timeout <= self.read_timeout => {
                    self.metrics.failures.inc();
                }
                Err(StoreError::Timeout(_)) if matches!(*state, State::Closed { strikes } if strikes + 1 < TIMEOUT_STRIKES) =>
                {
                    self.metrics.failures.inc();
                    if let State::Closed { strikes } = &mut *state {
                        *strikes += 1;
                    }
                }
                Err(e) => {
                    self.metrics.failures.inc();
                    if matches!(*state, State::Closed { .. }) {
                        tracing::warn!(store = self.inner.kind(), error = %e, "store failing, breaker open: serving from the near cache and the upstream");
                        self.metrics.breaker_opened.inc();
                    }
                    *state = State::Open {
                        until: Instant::now() + self.cool_down,
                    };
                    self.metrics.breaker_open.set(1);
                }
            }
        }
        result
    }

    fn batch_timeout(&self, n: usize) -> Duration {
        (SLOW_OP_TIMEOUT.max(self.read_timeout) + Duration::from_millis(n as u64))
            .min(self.bulk_timeout)
    }

    /// A lookup of one member waits at most the read timeout; a batch (a
    /// refund list's 167 members) gets the batch bound.
    fn read_timeout_for(&self, n: usize) -> Duration {
        if n <= 1 {
            self.read_timeout
        } else {
            self.batch_timeout(n)
        }
    }
}

#[async_trait]
impl Store for GuardedStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn get_members(&self, ids: &[UserId]) -> Result<Vec<Option<CachedMember>>, StoreError> {
        self.guard(
            "get_members",
            self.read_timeout_for(ids.len()),
            self.inner.get_members(ids),
        )
        .await
    }

    async fn user_id_by_number(&self, number: MemberNumber) -> Result<Option<UserId>, StoreError> {
        self.guard(
            "user_id_by_number",
            self.read_timeout,
            self.inner.user_id_by_number(number),
        )
        .await
    }

    async fn put_members(&self, members: &[CachedMember], ttl: Duration) -> Result<(), StoreError> {
        self.guard(
            "put_members",
            self.batch_timeout(members.len()),
            self.inner.put_members(members, ttl),
        )
        .await
    }

    async fn cached_ids(&self, ids: &[UserId]) -> Result<Vec<bool>, StoreError> {
        self.guard(
            "cached_ids",
            self.batch_timeout(ids.len()),
            self.inner.cached_ids(ids),
        )
        .await
    }

    async fn page(&self, request: PageRequest) -> Result<Page, StoreError> {
        self.guard(
            "page",
            self.batch_timeout(request.limit as usize),
            self.inner.page(request),
        )
        .await
    }

    async fn oldest(&self, limit: u64) -> Result<Vec<UserId>, StoreError> {
        self.guard(
            "oldest",
            self.batch_timeout(limit as usize),
            self.inner.oldest(limit),
        )
        .await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        // Counting prunes expired members first (a write), hence the slow bound.
        self.guard("count", SLOW_OP_TIMEOUT, self.inner.count())
            .await
    }

    async fn clear(&self) -> Result<ClearReport, StoreError> {
        self.guard("clear", self.bulk_timeout, self.inner.clear())
            .await
    }

    async fn add_stats(&self, delta: &StatCounters) -> Result<(), StoreError> {
        self.guard("add_stats", SLOW_OP_TIMEOUT, self.inner.add_stats(delta))
            .await
    }

    async fn get_ranking(&self, key: RankingKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.guard("get_ranking", SLOW_OP_TIMEOUT, self.inner.get_ranking(key))
            .await
    }

    async fn put_ranking(&self, ranking: &StoredRanking<'_>) -> Result<(), StoreError> {
        self.guard(
            "put_ranking",
            SLOW_OP_TIMEOUT,
            self.inner.put_ranking(ranking),
        )
        .await
    }

    async fn set_last_sync_time(&self, ms: i64) -> Result<(), StoreError> {
        self.guard(
            "set_last_sync_time",
            SLOW_OP_TIMEOUT,
            self.inner.set_last_sync_time(ms),
        )
        .await
    }

    async fn stats(&self) -> Result<StoredStats, StoreError> {
        self.guard("stats", SLOW_OP_TIMEOUT, self.inner.stats())
            .await
    }

    async fn memory_usage(&self) -> Result<String, StoreError> {
        self.guard("memory_usage", SLOW_OP_TIMEOUT, self.inner.memory_usage())
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.guard("ping", self.read_timeout, self.inner.ping())
            .await
    }

    async fn try_lease(
        &self,
        id: UserId,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseState, StoreError> {
        // Off the hot path (only cold misses, which then wait on the upstream
        // anyway): the write bound, so a busy moment does not trip the breaker.
        self.guard(
            "try_lease",
            self.batch_timeout(1),
            self.inner.try_lease(id, owner, ttl),
        )
        .await
    }

    async fn end_lease(&self, id: UserId, owner: &str, end: LeaseEnd) -> Result<(), StoreError> {
        self.guard(
            "end_lease",
            self.batch_timeout(1),
            self.inner.end_lease(id, owner, end),
        )
        .await
    }

    async fn data_identity(&self) -> Result<Option<DataIdentity>, StoreError> {
        // The lookup bound: a background check that is slow on a busy
        // machine must not count towards opening the breaker.
        self.guard(
            "data_identity",
            self.read_timeout,
            self.inner.data_identity(),
        )
        .await
    }

    async fn device_id(&self, candidate: &str) -> Result<String, StoreError> {
        // Once per process, before its first upstream call: the write bound.
        self.guard(
            "device_id",
            self.batch_timeout(1),
            self.inner.device_id(candidate),
        )
        .await
    }

    fn events_origin(&self) -> Option<String> {
        self.inner.events_origin()
    }

    async fn refund_marks(
        &self,
        checkin: CheckinId,
    ) -> Result<HashMap<UserId, RefundMark>, StoreError> {
        self.guard(
            "refund_marks",
            SLOW_OP_TIMEOUT,
            self.inner.refund_marks(checkin),
        )
        .await
    }

    async fn apply_refund_marks(
        &self,
        checkin: CheckinId,
        changes: &[MarkChange],
    ) -> Result<bool, StoreError> {
        self.guard(
            "apply_refund_marks",
            self.batch_timeout(changes.len()),
            self.inner.apply_refund_marks(checkin, changes),
        )
        .await
    }

    async fn refund_log(
        &self,
        checkin: CheckinId,
        limit: usize,
    ) -> Result<Vec<RefundLogEntry>, StoreError> {
        self.guard(
            "refund_log",
            self.batch_timeout(limit),
            self.inner.refund_log(checkin, limit),
        )
        .await
    }

    /// Asks every master of a cluster in turn, once at start: a bulk bound.
    async fn persistence(&self) -> Result<Persistence, StoreError> {
        self.guard("persistence", self.bulk_timeout, self.inner.persistence())
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::SystemClock;
    use crate::store::embedded::EmbeddedStore;

    // The breaker's behaviour under injected faults is tested with the
    // faulty store of the test-support crate, in tests/faults/breaker.rs.

    #[tokio::test]
    async fn a_corrupt_record_does_not_open_the_breaker() {
        let dir = tempfile::tempdir().unwrap();
        let embedded =
            EmbeddedStore::open(&dir.path().join("g.redb"), Arc::new(SystemClock)).expect("opens");
        let store = GuardedStore::new(
            Box::new(embedded),
            Duration::from_millis(50),
            Duration::from_secs(30),
        );
        let result = store
            .guard("test", Duration::from_secs(1), async {
                Err::<(), _>(StoreError::Corrupt("bad".into()))
            })
            .await;
        assert!(result.is_err());
        assert!(store.is_closed());
    }
}
