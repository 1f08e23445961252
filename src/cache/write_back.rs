//! Write-back of members fetched while the store was unavailable: what was
//! fetched meanwhile is written once the store is back.
//!
//! When a member fetched from the upstream cannot be written (the breaker is
//! open, Redis is down or hung, the embedded file errors), it is queued here
//! instead of being forgotten: the upstream call it cost is not wasted. The
//! same queue brings back what a Redis restarted empty or flushed lost: the
//! store watch (`store_watch.rs`) queues every member the near cache holds. A
//! background task flushes the queue every [`FLUSH_EVERY`]; while the breaker
//! is open its writes fail at once, and the first write after the cool-down
//! is the breaker's probe, so the queue drains as soon as the store is back,
//! with no restart and no request needed to trigger it.
//!
//! Decisions:
//! - **Bounded and deduplicated by id** ([`QUEUE_CAPACITY`], newest record of
//!   a member wins). When full, new members are dropped and counted: the
//!   cost of a lost entry is one upstream call later, not wrong data.
//! - **Never older over newer.** Before writing a batch, the store is read;
//!   a member the store already holds at the same or a newer `updated_at`
//!   (written by a sync after recovery, say) is skipped.
//! - A `std::sync::Mutex` guards the map: held for map operations only,
//!   never across an await.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::domain::{CachedMember, UserId};
use crate::store::{Store, StoreError};

/// Most members waiting to be written; about a large group's worth.
pub const QUEUE_CAPACITY: usize = 10_000;

/// Members written per store round trip when flushing.
const FLUSH_BATCH: usize = 500;

/// How often the background task tries to flush a non-empty queue.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Members waiting for the store to come back.
#[derive(Debug)]
pub struct WriteBackQueue {
    /// By id, so a member fetched twice during an outage is written once.
    pending: Mutex<HashMap<UserId, CachedMember>>,
    /// Members taken out of `pending` by a flush that has not finished; still
    /// counted as pending, so nobody sees an empty queue mid-flush.
    flushing: AtomicUsize,
    capacity: usize,
    /// Members refused because the queue was full.
    dropped: AtomicU64,
    /// Members written back after an outage, for `/readyz` and logs.
    written: AtomicU64,
}

impl Default for WriteBackQueue {
    fn default() -> Self {
        Self::with_capacity(QUEUE_CAPACITY)
    }
}

impl WriteBackQueue {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            flushing: AtomicUsize::new(0),
            capacity,
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Queues a member; a newer record of the same member replaces an older
    /// one. Returns false when the queue was full and the member dropped.
    pub fn push(&self, member: CachedMember) -> bool {
        let Ok(mut pending) = self.pending.lock() else {
            return false;
        };
        let id = member.member.user_id;
        if let Some(queued) = pending.get_mut(&id) {
            if member.updated_at >= queued.updated_at {
                *queued = member;
            }
            return true;
        }
        if pending.len() >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        pending.insert(id, member);
        true
    }

    /// Members waiting now, including those a flush is writing.
    pub fn len(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len()) + self.flushing.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Members written back so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Forgets everything queued (the cache was cleared: writing the queue
    /// afterwards would undo the clear).
    pub fn clear(&self) {
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
    }

    fn take_batch(&self, n: usize) -> Vec<CachedMember> {
        let Ok(mut pending) = self.pending.lock() else {
            return Vec::new();
        };
        let ids: Vec<UserId> = pending.keys().take(n).copied().collect();
        let batch: Vec<CachedMember> = ids.iter().filter_map(|id| pending.remove(id)).collect();
        self.flushing.fetch_add(batch.len(), Ordering::SeqCst);
        batch
    }

    /// Puts a batch back after a failed flush, without overwriting newer
    /// records queued meanwhile.
    fn put_back(&self, batch: Vec<CachedMember>) {
        for member in batch {
            self.push(member);
        }
    }

    /// Writes everything queued, batch by batch; stops at the first store
    /// failure (the batch goes back). Returns how many members were written.
    pub async fn flush(&self, store: &dyn Store, ttl: Duration) -> Result<u64, StoreError> {
        let mut written = 0;
        loop {
            let batch = self.take_batch(FLUSH_BATCH);
            if batch.is_empty() {
                if written > 0 {
                    tracing::info!(
                        written,
                        "store available again: wrote back members fetched during the outage"
                    );
                }
                return Ok(written);
            }
            let result = write_unless_newer(store, &batch, ttl).await;
            let taken = batch.len();
            match result {
                Ok(n) => {
                    written += n;
                    self.written.fetch_add(n, Ordering::Relaxed);
                    self.flushing.fetch_sub(taken, Ordering::SeqCst);
                }
                Err(e) => {
                    self.put_back(batch);
                    self.flushing.fetch_sub(taken, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
    }
}

/// Writes `batch`, skipping members the store already holds at the same or a
/// newer `updated_at`. Returns how many were written.
async fn write_unless_newer(
    store: &dyn Store,
    batch: &[CachedMember],
    ttl: Duration,
) -> Result<u64, StoreError> {
    let ids: Vec<UserId> = batch.iter().map(|m| m.member.user_id).collect();
    let stored = store.get_members(&ids).await?;
    let todo: Vec<CachedMember> = batch
        .iter()
        .zip(stored)
        .filter(|(queued, stored)| {
            stored
                .as_ref()
                .is_none_or(|s| s.updated_at < queued.updated_at)
        })
        .map(|(queued, _)| queued.clone())
        .collect();
    if !todo.is_empty() {
        store.put_members(&todo, ttl).await?;
    }
    Ok(todo.len() as u64)
}

/// Writes a freshly fetched member, or queues it when the store fails; the
/// caller's answer is good either way.
pub async fn store_or_queue(
    store: &dyn Store,
    queue: &WriteBackQueue,
    member: CachedMember,
    ttl: Duration,
) {
    if let Err(e) = store.put_members(std::slice::from_ref(&member), ttl).await {
        let queued = queue.push(member);
        tracing::debug!(error = %e, queued, "could not cache member; queued for write-back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, updated_at: i64) -> CachedMember {
        CachedMember::for_test(id, id, updated_at)
    }

    #[test]
    fn members_are_deduplicated_by_id_keeping_the_newest() {
        let q = WriteBackQueue::with_capacity(10);
        assert!(q.push(member(1, 100)));
        assert!(q.push(member(1, 300)));
        assert!(q.push(member(1, 200)));
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_batch(10)[0].updated_at, 300);
    }

    #[test]
    fn a_full_queue_drops_and_counts_new_members() {
        let q = WriteBackQueue::with_capacity(2);
        assert!(q.push(member(1, 1)));
        assert!(q.push(member(2, 1)));
        assert!(!q.push(member(3, 1)));
        assert!(q.push(member(2, 5)), "an update of a queued member fits");
        assert_eq!((q.len(), q.dropped()), (2, 1));
        q.clear();
        assert!(q.is_empty());
    }

    #[test]
    fn a_failed_batch_goes_back_without_overwriting_newer_records() {
        let q = WriteBackQueue::with_capacity(10);
        q.push(member(1, 100));
        let batch = q.take_batch(10);
        assert_eq!(q.len(), 1, "a member being flushed still counts");
        q.push(member(1, 200));
        q.put_back(batch);
        q.flushing.store(0, Ordering::SeqCst);
        assert_eq!(q.take_batch(10)[0].updated_at, 200);
    }
}
