//! Staying fresh without making anyone wait.
//!
//! - **Stale-while-revalidate:** a hit older than the soft TTL is answered at
//!   once and refreshed in the background at background priority, one
//!   refresh per member at a time (the singleflight of `flight.rs`, with
//!   nobody waiting for its answer); a failed refresh leaves the last good
//!   record in place (it still has until the hard TTL), so an upstream
//!   outage never turns hits into errors.
//! - **Scheduled warm-up:** every `WARMUP_INTERVAL` the members closest to
//!   expiry are refreshed before they lapse. Where the member list is allowed
//!   a forced sync from it is cheaper (200 members a call) than refreshing
//!   members one by one, so that is what runs; otherwise the oldest
//!   `WARMUP_BATCH` due members are refreshed one call each, all through the
//!   shared budget at background priority, so people waiting always go first.

use std::sync::Arc;
use std::time::Duration;

use super::MemberCache;
use super::near::NearCache;
use super::sync::SyncOptions;
use super::write_back::{WriteBackQueue, store_or_queue};
use crate::clock::Clock;
use crate::domain::CachedMember;
use crate::store::Store;
use crate::upstream::{Priority, Upstream};

/// What a refresh needs, cloned out of the cache so it can run in its own
/// task.
#[derive(Clone)]
struct Refresher {
    upstream: Arc<dyn Upstream>,
    store: Arc<dyn Store>,
    near: Arc<NearCache>,
    queue: Arc<WriteBackQueue>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
}

impl Refresher {
    /// Fetches `stale` again, keeping its `cached_at`, and puts it in the
    /// near cache and the store (or the write-back queue). A failure is
    /// logged and leaves the last good record in place.
    async fn refetch(&self, stale: &CachedMember) -> bool {
        let id = stale.member.user_id;
        match self.upstream.member_summary(id, Priority::Background).await {
            Ok(member) => {
                let fresh = CachedMember {
                    member,
                    cached_at: stale.cached_at,
                    updated_at: self.clock.now_ms(),
                };
                // A stale hit was just put in the near cache by its
                // lookup; a warm-up refreshes members nobody asked for.
                self.near.refresh(&fresh);
                store_or_queue(self.store.as_ref(), &self.queue, fresh, self.ttl).await;
                true
            }
            Err(e) => {
                tracing::info!(error = %e, user_id = %id, "refresh failed; serving the last good record");
                false
            }
        }
    }
}

impl MemberCache {
    fn refresher(&self) -> Refresher {
        Refresher {
            upstream: self.upstream.clone(),
            store: self.store.clone(),
            near: self.near.clone(),
            queue: self.write_back.clone(),
            clock: self.clock.clone(),
            ttl: self.ttl,
        }
    }

    /// Refreshes `stale` in the background, once at a time per member.
    pub(crate) fn spawn_refresh(&self, stale: CachedMember) {
        let refresher = self.refresher();
        self.refreshing
            .start(stale.member.user_id, move || async move {
                refresher.refetch(&stale).await;
                Ok(())
            });
    }

    /// Members among the `limit` oldest whose age passed the soft TTL.
    async fn due_for_refresh(&self, limit: u64) -> Vec<CachedMember> {
        let Ok(ids) = self.store.oldest(limit).await else {
            return Vec::new();
        };
        let Ok(found) = self.store.get_members(&ids).await else {
            return Vec::new();
        };
        let now = self.clock.now_ms();
        let soft = self.soft_ttl.as_millis() as i64;
        found
            .into_iter()
            .flatten()
            .filter(|m| now - m.updated_at > soft)
            .collect()
    }

    /// One warm-up round; returns how many members it refreshed or synced.
    pub async fn warm_up_once(self: &Arc<Self>, batch: u64) -> u64 {
        let due = self.due_for_refresh(batch).await;
        if due.is_empty() {
            return 0;
        }
        if !self.listing_refused() && due.len() > 1 {
            let opts = SyncOptions {
                force: true,
                concurrency: 1,
            };
            return match self.jobs().start(self, opts) {
                Ok(job) => match job.wait().await {
                    Ok(report) => report.success_count,
                    Err(e) => {
                        tracing::info!(error = %e, "scheduled warm-up sync failed");
                        0
                    }
                },
                // A sync is already running: it refreshes everything anyway.
                Err(_) => 0,
            };
        }
        tracing::info!(
            members = due.len(),
            "scheduled warm-up refreshing the oldest members"
        );
        let refresher = self.refresher();
        let mut refreshed = 0;
        for stale in &due {
            if refresher.refetch(stale).await {
                refreshed += 1;
            }
        }
        refreshed
    }

    /// Runs [`Self::warm_up_once`] every `interval` until the process ends.
    pub fn spawn_warm_up(self: &Arc<Self>, interval: Duration, batch: u64) {
        if interval.is_zero() || batch == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { return };
                cache.warm_up_once(batch).await;
            }
        });
    }
}
