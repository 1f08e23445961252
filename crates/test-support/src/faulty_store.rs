//! A [`Store`] wrapper whose failures a test switches on and off: the way to
//! give the embedded store I/O errors and hangs on demand, since a real redb
//! file cannot be made to fail at a chosen moment. (Redis gets real faults
//! from [`super::RedisServer`]: kill, restart, SIGSTOP.)
//!
//! The wrapped store does the real work whenever the fault is off, so a test
//! sees the real data before, during (nothing) and after the fault.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use zsxq_cache::domain::{CachedMember, CheckinId, MemberNumber, UserId};
use zsxq_cache::store::marks::{MarkChange, Persistence, RefundLogEntry, RefundMark};
use zsxq_cache::store::{
    ClearReport, DataIdentity, LeaseEnd, LeaseState, Page, PageRequest, StatCounters, Store,
    StoreError, StoredStats,
};
use zsxq_cache::store::{RankingKey, StoredRanking};

/// What the wrapped store does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes every call through.
    None,
    /// Every call fails with an I/O-like error.
    Failing,
    /// Every call hangs (for a minute), like a disk stuck in a flush.
    Hanging,
    /// Writes (and fetch leases) land, but their answer comes
    /// [`SLOW_WRITE_DELAY`] late — later than the breaker waits — like a
    /// commit that finishes after the caller gave up, or a reply delayed on a
    /// loaded machine. Reads pass through.
    SlowWrites,
}

/// How late [`Fault::SlowWrites`] answers.
pub const SLOW_WRITE_DELAY: Duration = Duration::from_millis(600);

/// Turns the fault of a [`FaultyStore`] after the store was handed away.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<AtomicU8>);

impl FaultSwitch {
    pub fn set(&self, fault: Fault) {
        let raw = match fault {
            Fault::None => 0,
            Fault::Failing => 1,
            Fault::Hanging => 2,
            Fault::SlowWrites => 3,
        };
        self.0.store(raw, Ordering::SeqCst);
    }

    pub fn get(&self) -> Fault {
        match self.0.load(Ordering::SeqCst) {
            1 => Fault::Failing,
            2 => Fault::Hanging,
            3 => Fault::SlowWrites,
            _ => Fault::None,
        }
    }
}

/// A store that fails when its [`FaultSwitch`] says so.
pub struct FaultyStore {
    inner: Box<dyn Store>,
    switch: FaultSwitch,
}

impl FaultyStore {
    /// Wraps `inner`; the returned switch starts at [`Fault::None`].
    pub fn wrap(inner: Box<dyn Store>) -> (Self, FaultSwitch) {
        let switch = FaultSwitch::default();
        (
            Self {
                inner,
                switch: switch.clone(),
            },
            switch,
        )
    }

    async fn check(&self) -> Result<(), StoreError> {
        match self.switch.get() {
            Fault::None | Fault::SlowWrites => Ok(()),
            Fault::Failing => Err(StoreError::Embedded(
                "injected I/O error: Input/output error (os error 5)".into(),
            )),
            Fault::Hanging => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Err(StoreError::Embedded("injected hang ended".into()))
            }
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn get_members(&self, ids: &[UserId]) -> Result<Vec<Option<CachedMember>>, StoreError> {
        self.check().await?;
        self.inner.get_members(ids).await
    }

    async fn user_id_by_number(&self, number: MemberNumber) -> Result<Option<UserId>, StoreError> {
        self.check().await?;
        self.inner.user_id_by_number(number).await
    }

    async fn put_members(&self, members: &[CachedMember], ttl: Duration) -> Result<(), StoreError> {
        self.check().await?;
        let written = self.inner.put_members(members, ttl).await;
        if self.switch.get() == Fault::SlowWrites {
            tokio::time::sleep(SLOW_WRITE_DELAY).await;
        }
        written
    }

    async fn cached_ids(&self, ids: &[UserId]) -> Result<Vec<bool>, StoreError> {
        self.check().await?;
        self.inner.cached_ids(ids).await
    }

    async fn page(&self, request: PageRequest) -> Result<Page, StoreError> {
        self.check().await?;
        self.inner.page(request).await
    }

    async fn get_ranking(&self, key: RankingKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.check().await?;
        self.inner.get_ranking(key).await
    }

    async fn put_ranking(&self, ranking: &StoredRanking<'_>) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.put_ranking(ranking).await
    }

    async fn oldest(&self, limit: u64) -> Result<Vec<UserId>, StoreError> {
        self.check().await?;
        self.inner.oldest(limit).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.check().await?;
        self.inner.count().await
    }

    async fn clear(&self) -> Result<ClearReport, StoreError> {
        self.check().await?;
        self.inner.clear().await
    }

    async fn add_stats(&self, delta: &StatCounters) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.add_stats(delta).await
    }

    async fn set_last_sync_time(&self, ms: i64) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.set_last_sync_time(ms).await
    }

    async fn stats(&self) -> Result<StoredStats, StoreError> {
        self.check().await?;
        self.inner.stats().await
    }

    async fn memory_usage(&self) -> Result<String, StoreError> {
        self.check().await?;
        self.inner.memory_usage().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.ping().await
    }

    async fn try_lease(
        &self,
        id: UserId,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseState, StoreError> {
        self.check().await?;
        let answer = self.inner.try_lease(id, owner, ttl).await;
        if self.switch.get() == Fault::SlowWrites {
            tokio::time::sleep(SLOW_WRITE_DELAY).await;
        }
        answer
    }

    async fn end_lease(&self, id: UserId, owner: &str, end: LeaseEnd) -> Result<(), StoreError> {
        self.check().await?;
        self.inner.end_lease(id, owner, end).await
    }

    async fn data_identity(&self) -> Result<Option<DataIdentity>, StoreError> {
        self.check().await?;
        self.inner.data_identity().await
    }

    async fn device_id(&self, candidate: &str) -> Result<String, StoreError> {
        self.check().await?;
        self.inner.device_id(candidate).await
    }

    fn events_origin(&self) -> Option<String> {
        self.inner.events_origin()
    }

    async fn refund_marks(
        &self,
        checkin: CheckinId,
    ) -> Result<HashMap<UserId, RefundMark>, StoreError> {
        self.check().await?;
        self.inner.refund_marks(checkin).await
    }

    async fn apply_refund_marks(
        &self,
        checkin: CheckinId,
        changes: &[MarkChange],
    ) -> Result<bool, StoreError> {
        self.check().await?;
        self.inner.apply_refund_marks(checkin, changes).await
    }

    async fn refund_log(
        &self,
        checkin: CheckinId,
        limit: usize,
    ) -> Result<Vec<RefundLogEntry>, StoreError> {
        self.check().await?;
        self.inner.refund_log(checkin, limit).await
    }

    async fn persistence(&self) -> Result<Persistence, StoreError> {
        self.check().await?;
        self.inner.persistence().await
    }
}
