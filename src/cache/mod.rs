//! The read-through member cache: [`MemberCache`] and its public API.
//!
//! Decisions:
//! - **Near → store → upstream.** Lookups read a near cache (`near.rs`) of
//!   recently served members, then the store; a miss asks the upstream
//!   (interactive priority), writes the answer back and returns it.
//! - **One fetch per cold member.** Concurrent misses for the same member
//!   share one upstream call (the singleflight in `flight.rs`); the fetch
//!   runs in its own task, so a caller that disconnects neither cancels nor
//!   wastes a call already sent — and a fetch still queued for a budget slot
//!   when its last caller leaves is given up. A lookup that would start a
//!   fetch is admitted through the budget's bounded interactive queue, under
//!   its client address's share; over it, it is refused at once.
//! - **The store may fail at any time.** The guarded store fails fast and
//!   every path here treats a store error as a miss, so answers keep coming
//!   from the upstream and caching resumes when the store returns. While it
//!   is unavailable the near cache keeps answering members this process has
//!   seen, and members fetched meanwhile are queued (`write_back.rs`) and
//!   written once it is back.
//! - **Statistics cost the hot path two atomics** (`stats.rs`): they are
//!   flushed to the store's stats hash once a second.
//! - **Across replicas sharing one Redis** a cold member is fetched by one
//!   replica only, the one holding its lease (`lease.rs`); near-cache
//!   entries are dropped when another replica changes a record or clears
//!   the cache (`invalidation.rs`).

pub mod batch;
mod by_number;
pub mod flight;
pub mod invalidation;
pub mod jobs;
mod lease;
pub mod metrics;
pub mod near;
pub mod numbering;
pub mod refresh;
mod stats;
pub mod store_watch;
pub mod sync;
pub mod write_back;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::clock::Clock;
use crate::domain::{CachedMember, MemberNumber, UserId};
use crate::store::{Page, PageRequest, SortBy, SortOrder, Store, StoreError};
use crate::upstream::budget::{self, Interest};
use crate::upstream::{Budget, Upstream, UpstreamError};
use flight::Flights;
use metrics::CacheMetrics;
use near::{NearCache, Record};
use stats::PendingCounters;
pub use stats::{CacheStats, rate_percent};
use write_back::WriteBackQueue;

/// Whether an answer came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    Hit,
    Miss,
}

/// Lookup failures, for the HTTP layer to map.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// A whole member list was read and nobody holds the number.
    #[error("未找到编号为 {0} 的用户 (no member with number {0})")]
    NumberNotFound(MemberNumber),
    /// The member list is being read for the number; not found yet.
    #[error(
        "正在读取知识星球成员列表查找该编号（已读 {members_read} 人），请稍后重试 \
         (reading the member list for this number, {members_read} members so far; retry shortly)"
    )]
    NumberSearchPending { members_read: u64 },
    /// Too many different numbers are being searched for at once.
    #[error(
        "同时查找的编号过多，请稍后重试 (too many numbers are being searched for at once; retry shortly)"
    )]
    NumberSearchBusy,
    /// Whether anybody holds the number cannot be known now (the reason).
    #[error("{0}")]
    NumberUnknown(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// The cache: one per process, shared by the HTTP API, the CLI and the
/// background tasks it spawns (which hold it weakly, so it can end).
pub struct MemberCache {
    /// Where records live (behind the circuit breaker); fails fast.
    store: Arc<dyn Store>,
    /// Zsxq, asked on a miss.
    upstream: Arc<dyn Upstream>,
    /// The upstream's rate and queue, shared with the client: admits
    /// lookups that would start a fetch, and counts the calls for stats.
    budget: Arc<Budget>,
    /// Ages records (`cached_at`, `updated_at`); a test clock in tests.
    clock: Arc<dyn Clock>,
    /// `CACHE_TTL`: the store forgets a record after this.
    ttl: Duration,
    /// `NEGATIVE_CACHE_TTL`.
    negative_ttl: Duration,
    /// `CACHE_ENABLED=false`: every lookup goes to the upstream.
    enabled: bool,
    /// Age after which a hit is served and refreshed in the background.
    soft_ttl: Duration,
    /// Recent "not a member" answers, so a bad id cannot burn the budget.
    /// In-process: a negative answer is cheap to relearn.
    negative: moka::sync::Cache<UserId, UpstreamError>,
    /// Members being refreshed in the background right now, one refresh
    /// per member (`refresh.rs`).
    refreshing: Arc<Flights<UserId, (), Infallible>>,
    /// Fetches in flight, by member: later callers subscribe instead of
    /// calling the upstream again.
    inflight: Arc<Flights<UserId, Arc<Record>>>,
    /// Searches of the member list for numbers the cache does not hold
    /// (`by_number.rs`): one at a time, and a whole listing proves absence
    /// for `NEGATIVE_CACHE_TTL`, so a mistyped number cannot burn the
    /// budget.
    numbers: by_number::NumberSearch,
    /// Whether the group numbers its members at all.
    numbering: numbering::Numbering,
    /// Counters not yet flushed to the store.
    pending: PendingCounters,
    /// Upstream calls already accounted for in flushed stats.
    flushed_calls: AtomicU64,
    /// Set once the upstream refused the member list (11507/1006/1030,
    /// docs/UPSTREAM.md), so lookups by number and sync do not ask again on
    /// every request.
    listing_refused: AtomicBool,
    /// One sync at a time (a safety net under `jobs`).
    sync_lock: tokio::sync::Mutex<()>,
    /// Running and recently finished syncs.
    jobs: jobs::SyncJobs,
    /// Recently served members, in front of the store.
    near: Arc<NearCache>,
    /// Members fetched while the store could not take them.
    write_back: Arc<WriteBackQueue>,
    /// Notices the store losing its data and writes the near cache back.
    store_watch: store_watch::StoreWatch,
    /// The invalidation listener, when there is one: the store watch only
    /// trusts an emptied id set while clears can be heard.
    listener: std::sync::OnceLock<Arc<invalidation::Listener>>,
    /// Names this process in fleet leases, so a lease it holds is renewed
    /// rather than waited on.
    lease_owner: Arc<str>,
    /// Hits and misses for `/metrics`, fed by [`MemberCache::count_lookups`]
    /// and the tiers of a lookup.
    metrics: CacheMetrics,
}

/// Sizes of the in-process layers in front of the store.
#[derive(Debug, Clone, Copy)]
pub struct NearOptions {
    /// `NEAR_CACHE_MB` in bytes; 0 turns the near cache off.
    pub max_bytes: u64,
    /// `NEAR_CACHE_TTL`: how long an entry is trusted without the store.
    pub fresh_for: Duration,
}

/// How long records live and when they are refreshed.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// Hard TTL: the store forgets a record after this (`CACHE_TTL`).
    pub ttl: Duration,
    /// Soft TTL: an older record is served at once and refreshed in the
    /// background (stale-while-revalidate; `CACHE_SOFT_TTL`).
    pub soft_ttl: Duration,
    /// How long a "not a member" answer is remembered
    /// (`NEGATIVE_CACHE_TTL`).
    pub negative_ttl: Duration,
    /// `CACHE_ENABLED`.
    pub enabled: bool,
    /// `NUMBER_SEARCH_WAIT_MS`: how long a lookup of an uncached number
    /// waits for the member-list search before answering 503.
    pub number_search_wait: Duration,
}

impl MemberCache {
    /// The cache with every knob given.
    pub fn build(
        store: Arc<dyn Store>,
        upstream: Arc<dyn Upstream>,
        budget: Arc<Budget>,
        clock: Arc<dyn Clock>,
        policy: CachePolicy,
        near: NearOptions,
    ) -> Arc<Self> {
        let CachePolicy {
            ttl,
            soft_ttl,
            negative_ttl,
            enabled,
            number_search_wait,
        } = policy;
        let near = if enabled {
            NearCache::new(near.max_bytes, near.fresh_for, ttl, clock.clone())
        } else {
            NearCache::disabled(clock.clone())
        };
        Arc::new(Self {
            near: Arc::new(near),
            write_back: Arc::new(WriteBackQueue::default()),
            store_watch: store_watch::StoreWatch::default(),
            listener: std::sync::OnceLock::new(),
            store,
            upstream,
            budget,
            clock,
            ttl,
            negative_ttl,
            enabled,
            soft_ttl: soft_ttl.min(ttl),
            negative: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(negative_ttl.max(Duration::from_millis(1)))
                .build(),
            refreshing: Arc::default(),
            inflight: Arc::default(),
            numbers: by_number::NumberSearch::new(negative_ttl, number_search_wait),
            numbering: numbering::Numbering::default(),
            pending: PendingCounters::default(),
            flushed_calls: AtomicU64::new(0),
            listing_refused: AtomicBool::new(false),
            sync_lock: tokio::sync::Mutex::new(()),
            jobs: jobs::SyncJobs::default(),
            lease_owner: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
            metrics: CacheMetrics::default(),
        })
    }

    /// The instruments `/metrics` reports.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    pub fn jobs(&self) -> &jobs::SyncJobs {
        &self.jobs
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn upstream(&self) -> &Arc<dyn Upstream> {
        &self.upstream
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// `NEGATIVE_CACHE_TTL`: how long an unknown id is remembered.
    pub fn negative_ttl(&self) -> Duration {
        self.negative_ttl
    }

    pub fn near(&self) -> &NearCache {
        &self.near
    }

    /// The near cache, shared (for the invalidation listener).
    pub fn near_handle(&self) -> Arc<NearCache> {
        self.near.clone()
    }

    pub fn write_back_queue(&self) -> &WriteBackQueue {
        &self.write_back
    }

    /// `CACHE_ENABLED`: when false, nothing is read from or written to the
    /// store (member records and cached rankings alike).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Looks a member up by id: cache first, upstream on a miss.
    pub async fn get(&self, id: UserId) -> Result<(CachedMember, CacheStatus), LookupError> {
        let (record, status) = self.lookup(id).await?;
        Ok((record.member.clone(), status))
    }

    /// [`MemberCache::get`] for the HTTP hot path: the record with its JSON
    /// already serialised, shared rather than copied.
    pub async fn lookup(&self, id: UserId) -> Result<(Arc<Record>, CacheStatus), LookupError> {
        if self.enabled
            && let Some(record) = self.cached(id).await
        {
            self.hit();
            if self.clock.now_ms() - record.member.updated_at > self.soft_ttl.as_millis() as i64 {
                self.spawn_refresh(record.member.clone());
            }
            return Ok((record, CacheStatus::Hit));
        }
        // A recent "not a member" answer is served from memory: counted as a
        // hit, since it is the cache that saved the upstream call.
        let negative = self.negative.get(&id);
        self.metrics.found("negative", negative.is_some());
        if let Some(e) = negative {
            self.hit();
            return Err(e.into());
        }
        self.miss();
        let record = self
            .inflight
            .run(
                id,
                || self.budget.admit(budget::current_client()),
                || self.fetch(id).run(),
            )
            .await?;
        Ok((record, CacheStatus::Miss))
    }

    /// The member from the near cache, else the store (filling the near
    /// cache); while the store fails, whatever the near cache still holds,
    /// and the same when the store lost it (restarted empty, flushed).
    async fn cached(&self, id: UserId) -> Option<Arc<Record>> {
        let near = self.near.get(id);
        self.metrics.found("near", near.is_some());
        if near.is_some() {
            return near;
        }
        match self.store.get_members(&[id]).await {
            Ok(found) => {
                let member = found.into_iter().next().flatten();
                self.metrics.found("store", member.is_some());
                let Some(member) = member else {
                    // Held here but gone from the store: lost with it, or
                    // expired or cleared (`store_watch.rs` tells).
                    let held = self.held_through_loss(id).await;
                    if held.is_some() {
                        self.metrics.tier("near_stale", 1, 0);
                    }
                    return held;
                };
                let record = Record::new(member);
                self.near.insert_record(record.clone());
                Some(record)
            }
            Err(_) => {
                let member = self.near.get_stale(id);
                self.metrics.found("near_stale", member.is_some());
                member
            }
        }
    }

    pub(crate) fn note_listing_refused(&self, e: &UpstreamError) {
        if !self.listing_refused.swap(true, Ordering::Relaxed) {
            tracing::info!(error = %e, "upstream refuses the member list; using per-member calls from now on");
        }
    }

    /// Whether the group numbers its members, as far as this process saw.
    pub fn numbering(&self) -> numbering::NumberingState {
        self.numbering.state()
    }

    pub(crate) fn listing_refused(&self) -> bool {
        self.listing_refused.load(Ordering::Relaxed)
    }

    /// One upstream fetch per member at a time; every concurrent caller gets
    /// the same answer. Not admitted through the interactive queue: a refund
    /// list resolves its own participants, as many as its ranking holds.
    async fn fetch_shared(&self, id: UserId) -> Result<Arc<Record>, UpstreamError> {
        self.inflight
            .run(id, || Ok(Interest::unqueued()), || self.fetch(id).run())
            .await
    }

    /// One page of cached members plus the total.
    pub async fn page(
        &self,
        sort: SortBy,
        order: SortOrder,
        page: u64,
        page_size: u64,
    ) -> Result<Page, StoreError> {
        let offset = (page - 1).saturating_mul(page_size);
        self.store
            .page(PageRequest {
                sort,
                order,
                offset,
                limit: page_size,
            })
            .await
    }

    /// Empties the cache; unflushed counters go too, as the stats hash is
    /// part of what is cleared.
    pub async fn clear(&self) -> Result<crate::store::ClearReport, StoreError> {
        let report = self.store.clear().await?;
        self.negative.invalidate_all();
        self.numbers.forget();
        self.near.clear();
        self.write_back.clear();
        self.store_watch.cleared();
        self.forget_unflushed_stats();
        Ok(report)
    }

    /// Writes back members fetched while the store was unavailable, every
    /// [`write_back::FLUSH_EVERY`] until the process ends.
    pub fn spawn_write_back_flusher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(write_back::FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { return };
                if cache.write_back.is_empty() {
                    continue;
                }
                if let Err(e) = cache
                    .write_back
                    .flush(cache.store.as_ref(), cache.ttl)
                    .await
                {
                    tracing::debug!(error = %e, pending = cache.write_back.len(), "write-back waits for the store");
                }
            }
        });
    }
}
