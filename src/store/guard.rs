//! A circuit breaker around any [`Store`] (seed §8: Redis down must not take
//! the service down).
//!
//! Every operation gets a short timeout. The first failure opens the breaker:
//! for `cool_down` every call fails at once with [`StoreError::Unavailable`]
//! instead of waiting on a dead or hung Redis, and the cache falls back to the
//! upstream. After the cool-down one call is let through as a probe; if it
//! succeeds the breaker closes, so caching resumes by itself when the store
//! comes back — no restart.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{ClearReport, Page, SortBy, SortOrder, StatCounters, Store, StoreError, StoredStats};
use crate::domain::{CachedMember, CheckinId, MemberNumber, UserId};

/// Breaker state; a std mutex because it is held for a few instructions and
/// never across an await.
#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    /// Failing fast until the instant; then one probe goes through.
    Open {
        until: Instant,
    },
}

pub struct GuardedStore {
    inner: Box<dyn Store>,
    /// Bound on a single read or small write.
    op_timeout: Duration,
    /// Bound on bulk work (clear, big batches), which may legitimately take
    /// seconds on a large cache.
    bulk_timeout: Duration,
    cool_down: Duration,
    state: Mutex<State>,
}

impl GuardedStore {
    pub fn new(inner: Box<dyn Store>, op_timeout: Duration, cool_down: Duration) -> Self {
        Self {
            inner,
            op_timeout,
            bulk_timeout: Duration::from_secs(60),
            cool_down,
            state: Mutex::new(State::Closed),
        }
    }

    /// Whether the breaker currently lets calls through.
    pub fn is_closed(&self) -> bool {
        matches!(self.state.lock().map(|s| *s), Ok(State::Closed))
    }

    async fn guard<T, Fut>(&self, timeout: Duration, op: Fut) -> Result<T, StoreError>
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
        let result = match tokio::time::timeout(timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(timeout)),
        };
        if let Ok(mut state) = self.state.lock() {
            match &result {
                Ok(_) => {
                    if matches!(*state, State::Open { .. }) {
                        tracing::info!(
                            store = self.inner.kind(),
                            "store reachable again, breaker closed"
                        );
                    }
                    *state = State::Closed;
                }
                // A corrupt record is a data problem, not an outage.
                Err(StoreError::Corrupt(_)) => {}
                Err(e) => {
                    if matches!(*state, State::Closed) {
                        tracing::warn!(store = self.inner.kind(), error = %e, "store failing, breaker open: serving from upstream");
                    }
                    *state = State::Open {
                        until: Instant::now() + self.cool_down,
                    };
                }
            }
        }
        result
    }

    fn batch_timeout(&self, n: usize) -> Duration {
        (self.op_timeout + Duration::from_millis(n as u64)).min(self.bulk_timeout)
    }
}

#[async_trait]
impl Store for GuardedStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn get_members(&self, ids: &[UserId]) -> Result<Vec<Option<CachedMember>>, StoreError> {
        self.guard(self.batch_timeout(ids.len()), self.inner.get_members(ids))
            .await
    }

    async fn user_id_by_number(&self, number: MemberNumber) -> Result<Option<UserId>, StoreError> {
        self.guard(self.op_timeout, self.inner.user_id_by_number(number))
            .await
    }

    async fn put_members(&self, members: &[CachedMember], ttl: Duration) -> Result<(), StoreError> {
        self.guard(
            self.batch_timeout(members.len()),
            self.inner.put_members(members, ttl),
        )
        .await
    }

    async fn cached_ids(&self, ids: &[UserId]) -> Result<Vec<bool>, StoreError> {
        self.guard(self.batch_timeout(ids.len()), self.inner.cached_ids(ids))
            .await
    }

    async fn page(
        &self,
        sort: SortBy,
        order: SortOrder,
        offset: u64,
        limit: u64,
    ) -> Result<Page, StoreError> {
        self.guard(
            self.batch_timeout(limit as usize),
            self.inner.page(sort, order, offset, limit),
        )
        .await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.guard(self.op_timeout, self.inner.count()).await
    }

    async fn clear(&self) -> Result<ClearReport, StoreError> {
        self.guard(self.bulk_timeout, self.inner.clear()).await
    }

    async fn add_stats(&self, delta: &StatCounters) -> Result<(), StoreError> {
        self.guard(self.op_timeout, self.inner.add_stats(delta))
            .await
    }

    async fn get_ranking(&self, checkin: CheckinId) -> Result<Option<Vec<u8>>, StoreError> {
        self.guard(self.op_timeout, self.inner.get_ranking(checkin))
            .await
    }

    async fn put_ranking(
        &self,
        checkin: CheckinId,
        snapshot: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.guard(
            self.op_timeout,
            self.inner.put_ranking(checkin, snapshot, ttl),
        )
        .await
    }

    async fn set_last_sync_time(&self, ms: i64) -> Result<(), StoreError> {
        self.guard(self.op_timeout, self.inner.set_last_sync_time(ms))
            .await
    }

    async fn stats(&self) -> Result<StoredStats, StoreError> {
        self.guard(self.op_timeout, self.inner.stats()).await
    }

    async fn memory_usage(&self) -> Result<String, StoreError> {
        self.guard(self.op_timeout, self.inner.memory_usage()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.guard(self.op_timeout, self.inner.ping()).await
    }
}
