//! The read-through member cache (seed §5, §7, §8).
//!
//! - Lookups read the store; a miss asks the upstream (interactive priority),
//!   writes the answer back and returns it. Concurrent misses for the same
//!   member share one upstream call (singleflight, `flight.rs`); the fetch
//!   runs in its own task, so a caller that disconnects neither cancels nor
//!   wastes a call already sent — and a fetch still queued for a budget slot
//!   when its last caller leaves is given up. A lookup that would start a
//!   fetch is admitted through the budget's bounded interactive queue, under
//!   its client address's share; over it, it is refused at once.
//! - The store may fail at any time: the guarded store fails fast and every
//!   path here treats a store error as a miss, so answers keep coming from the
//!   upstream and caching resumes when the store returns.
//! - A near cache (`near.rs`) of recently served members sits in front of the
//!   store: read near → store → upstream. While the store is unavailable it
//!   keeps answering members this process has seen, and members fetched
//!   meanwhile are queued (`write_back.rs`) and written once it is back.
//! - Counters are kept in memory and flushed to the store's stats hash once a
//!   second, so the hot path makes no extra store round trip for statistics.
//!   They are plain atomics: a hit costs one relaxed `fetch_add`, where a
//!   mutex shared by every request was a contention point under load.
//! - Across replicas sharing one Redis (issue #8): a cold member is fetched
//!   by one replica only. The fetch task first takes a short lease in the
//!   store (`zsxq:lease:user:{id}`, `SET NX PX`, in the spirit of memcache
//!   leases); the others poll the store until the winner's record lands, and
//!   take the lease themselves if it lapses. Near-cache entries are dropped
//!   when another replica changes a record or clears the cache
//!   (`invalidation.rs`).

pub mod batch;
mod by_number;
pub mod flight;
pub mod invalidation;
pub mod jobs;
pub mod metrics;
pub mod near;
pub mod numbering;
pub mod refresh;
pub mod store_watch;
pub mod sync;
pub mod write_back;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::clock::Clock;
use crate::domain::{CachedMember, MemberNumber, UserId};
use crate::store::{
    LeaseEnd, LeaseState, Page, SortBy, SortOrder, StatCounters, Store, StoreError,
};
use crate::upstream::budget::{self, Interest};
use crate::upstream::{Budget, Priority, Upstream, UpstreamError};
use flight::Flights;
use metrics::CacheMetrics;
use near::{NearCache, Record};
use write_back::{WriteBackQueue, store_or_queue};

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

/// Reads of a member after being granted its lease, before concluding it
/// is not in the store (see `Fetch::read_after_grant`).
const GRANTED_READ_ATTEMPTS: u32 = 3;

/// How long a fleet lease on a cold member lives without renewal: a replica
/// that dies mid-fetch holds the others up at most this long.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// How often the lease holder renews it while the upstream call runs (the
/// call may wait its turn in the budget for longer than [`LEASE_TTL`]).
const LEASE_RENEW_EVERY: Duration = Duration::from_millis(500);
/// Polling the store while another replica holds the lease: first pause,
/// then doubling up to the cap.
const LEASE_POLL_FIRST: Duration = Duration::from_millis(5);
const LEASE_POLL_MAX: Duration = Duration::from_millis(50);
/// Longest a replica waits on another's lease before fetching anyway (an
/// upstream call with its retries can take this long; past it, something is
/// wrong with the holder and an answer matters more than one call).
const LEASE_WAIT_MAX: Duration = Duration::from_secs(30);

/// Lookup counters not yet flushed to the store: relaxed atomics, since
/// they are only summed, never used to order anything.
#[derive(Debug, Default)]
struct PendingCounters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl PendingCounters {
    /// Takes the counts, leaving zero. Every request is a hit or a miss, so
    /// the total is their sum.
    fn take(&self) -> StatCounters {
        let hits = self.hits.swap(0, Ordering::Relaxed);
        let misses = self.misses.swap(0, Ordering::Relaxed);
        StatCounters {
            total_requests: hits + misses,
            cache_hits: hits,
            cache_misses: misses,
            api_calls: 0,
        }
    }

    /// The counts, without taking them.
    fn peek(&self) -> StatCounters {
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        StatCounters {
            total_requests: hits + misses,
            cache_hits: hits,
            cache_misses: misses,
            api_calls: 0,
        }
    }

    /// Puts back counts a failed flush took.
    fn restore(&self, c: &StatCounters) {
        self.hits.fetch_add(c.cache_hits, Ordering::Relaxed);
        self.misses.fetch_add(c.cache_misses, Ordering::Relaxed);
    }
}

pub struct MemberCache {
    store: Arc<dyn Store>,
    upstream: Arc<dyn Upstream>,
    budget: Arc<Budget>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// `NEGATIVE_CACHE_TTL`.
    negative_ttl: Duration,
    /// `CACHE_ENABLED=false`: every lookup goes to the upstream.
    enabled: bool,
    /// Age after which a hit is served and refreshed in the background.
    soft_ttl: Duration,
    /// Recent "not a member" answers, so a bad id cannot burn the budget
    /// (seed §15.3). In-process: a negative answer is cheap to relearn.
    negative: moka::sync::Cache<UserId, UpstreamError>,
    /// Members being refreshed in the background right now.
    refreshing: Arc<Mutex<std::collections::HashSet<UserId>>>,
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
    /// Set once the upstream refused the member list (11507/1006/1030), so
    /// lookups by number and sync do not ask again on every request.
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
    /// Hits and misses for `/metrics`, fed by [`MemberCache::count`] and
    /// the tiers of a lookup.
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

/// What `GET /api/users/cache/stats` reports (seed §5.1.6).
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
    pub upstream: crate::upstream::budget::BudgetSnapshot,
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

/// Percentage with two decimals; 0 when nothing was asked yet.
pub fn rate_percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 10_000.0 / whole as f64).round() / 100.0
    }
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
            refreshing: Arc::new(Mutex::new(std::collections::HashSet::new())),
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

    /// One lookup answered from a cache tier, for the stats hash and
    /// `/metrics` alike.
    fn hit(&self) {
        self.count_lookups(1, 0);
    }

    /// One lookup that had to go to the upstream.
    fn miss(&self) {
        self.count_lookups(0, 1);
    }

    /// Counts lookups answered elsewhere (a refund list's batch read).
    pub(crate) fn count_lookups(&self, hits: u64, misses: u64) {
        self.pending.hits.fetch_add(hits, Ordering::Relaxed);
        self.pending.misses.fetch_add(misses, Ordering::Relaxed);
        self.metrics.requests(hits, misses);
    }

    /// Looks a member up by id: cache first, upstream on a miss (seed §5.1.2).
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
        self.metrics.tier(
            "negative",
            u64::from(negative.is_some()),
            u64::from(negative.is_none()),
        );
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
        if let Some(record) = self.near.get(id) {
            self.metrics.tier("near", 1, 0);
            return Some(record);
        }
        self.metrics.tier("near", 0, 1);
        match self.store.get_members(&[id]).await {
            Ok(found) => {
                let member = found.into_iter().next().flatten();
                self.metrics.tier(
                    "store",
                    u64::from(member.is_some()),
                    u64::from(member.is_none()),
                );
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
                self.metrics.tier(
                    "near_stale",
                    u64::from(member.is_some()),
                    u64::from(member.is_none()),
                );
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

    /// One page of cached members plus the total (seed §5.1.1).
    pub async fn page(
        &self,
        sort: SortBy,
        order: SortOrder,
        page: u64,
        page_size: u64,
    ) -> Result<Page, StoreError> {
        let offset = (page - 1).saturating_mul(page_size);
        self.store.page(sort, order, offset, page_size).await
    }

    /// Empties the cache (seed §5.1.5); unflushed counters go too, as the
    /// stats hash is part of what is cleared.
    pub async fn clear(&self) -> Result<crate::store::ClearReport, StoreError> {
        let report = self.store.clear().await?;
        self.negative.invalidate_all();
        self.numbers.forget();
        self.near.clear();
        self.write_back.clear();
        self.store_watch.cleared();
        self.pending.take();
        self.flushed_calls.store(
            self.budget.stats.calls.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Ok(report)
    }

    /// Moves in-memory counters into the store. On failure they are kept for
    /// the next try, so nothing is lost while the store is down.
    pub async fn flush_stats(&self) {
        let calls_now = self.budget.stats.calls.load(Ordering::Relaxed);
        let calls_before = self.flushed_calls.load(Ordering::Relaxed);
        let mut delta = self.pending.take();
        delta.api_calls += calls_now.saturating_sub(calls_before);
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
    pub async fn stats_counters(&self) -> crate::store::StoredStats {
        self.flush_stats().await;
        let mut stored = self.store.stats().await.unwrap_or_default();
        stored.counters.add(&self.pending.peek());
        stored.counters.api_calls += self
            .budget
            .stats
            .calls
            .load(Ordering::Relaxed)
            .saturating_sub(self.flushed_calls.load(Ordering::Relaxed));
        stored
    }

    /// The stats endpoint's answer (seed §5.1.6).
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

    /// Flushes counters every second until the process ends.
    /// Also logs the upstream budget once a minute when it was used, so the
    /// logs alone tell how hard the upstream was pushed (issue #3).
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
                let snap = cache.budget.snapshot();
                if second % 60 == 0 && snap.upstream_calls != last_logged_calls {
                    last_logged_calls = snap.upstream_calls;
                    tracing::info!(
                        upstream_calls = snap.upstream_calls,
                        throttled = snap.throttled,
                        retries = snap.retries,
                        queue_wait_ms_interactive = snap.queue_wait_ms_interactive,
                        queue_wait_ms_background = snap.queue_wait_ms_background,
                        penalty_ms = cache.budget.penalty().as_millis() as u64,
                        "upstream budget"
                    );
                }
            }
        });
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

    /// The fetch of one cold member, ready to run in its own task.
    fn fetch(&self, id: UserId) -> Fetch {
        Fetch {
            id,
            upstream: self.upstream.clone(),
            store: self.store.clone(),
            near: self.near.clone(),
            queue: self.write_back.clone(),
            clock: self.clock.clone(),
            negative: self.negative.clone(),
            ttl: self.ttl,
            enabled: self.enabled,
            owner: self.lease_owner.clone(),
        }
    }
}

/// One cold member's fetch, owned by its own task so that callers who
/// disconnect neither cancel nor waste it.
struct Fetch {
    id: UserId,
    upstream: Arc<dyn Upstream>,
    store: Arc<dyn Store>,
    near: Arc<NearCache>,
    queue: Arc<WriteBackQueue>,
    clock: Arc<dyn Clock>,
    negative: moka::sync::Cache<UserId, UpstreamError>,
    ttl: Duration,
    enabled: bool,
    owner: Arc<str>,
}

/// What waiting on another replica's lease ended with.
enum Waited {
    /// The holder's record landed in the store.
    Found(CachedMember),
    /// The lease is ours now (it lapsed or was released without a record),
    /// or the store cannot arbitrate: fetch.
    Fetch,
    /// The holder learned the user is not a member.
    NotMember(UpstreamError),
    /// Everyone who wanted the member left while we waited.
    Abandoned,
}

impl Fetch {
    async fn run(self) -> Result<Arc<Record>, UpstreamError> {
        if !self.enabled {
            return self.call_upstream().await;
        }
        match self.wait_for_lease().await {
            Waited::Found(member) => {
                let record = Record::new(member);
                self.near.insert_record(record.clone());
                Ok(record)
            }
            Waited::NotMember(e) => {
                self.negative.insert(self.id, e.clone());
                Err(e)
            }
            Waited::Abandoned => {
                Err(budget::current_interest().map_or(UpstreamError::Abandoned, |i| i.reason()))
            }
            Waited::Fetch => {
                let renew = self.spawn_lease_renewal();
                let result = self.call_upstream().await;
                renew.abort();
                let end = match &result {
                    Err(UpstreamError::NotMember { code, message }) => LeaseEnd::NotMember {
                        code: *code,
                        message: message.clone(),
                    },
                    _ => LeaseEnd::Done,
                };
                // Ended after the write, so waiters polling the store find
                // the record rather than a free lease.
                if let Err(e) = self.store.end_lease(self.id, &self.owner, end).await {
                    tracing::debug!(error = %e, user_id = %self.id, "could not end a fetch lease; it lapses by itself");
                }
                result
            }
        }
    }

    /// Takes the fleet lease on this member, or waits for whoever holds it.
    /// Store trouble never blocks a fetch: without an answer from the store
    /// this replica fetches by itself (its in-process singleflight still
    /// holds), as it did before leases existed.
    /// The member from the store, read with the lease in hand. A read that
    /// fails (a lookup's short timeout on a busy machine) is tried again:
    /// nobody else fetches while we hold the lease, and guessing "absent"
    /// would spend an upstream call on a member another replica has just
    /// written (seen: 2 calls instead of 1 for 1000 requests on 3 replicas).
    async fn read_after_grant(&self) -> Option<CachedMember> {
        for attempt in 1..=GRANTED_READ_ATTEMPTS {
            match self.store.get_members(&[self.id]).await {
                Ok(found) => return found.into_iter().next().flatten(),
                Err(_) if attempt < GRANTED_READ_ATTEMPTS => {
                    tokio::time::sleep(LEASE_POLL_FIRST).await;
                }
                Err(_) => {}
            }
        }
        None
    }

    async fn wait_for_lease(&self) -> Waited {
        let started = tokio::time::Instant::now();
        let mut pause = LEASE_POLL_FIRST;
        loop {
            match self.store.try_lease(self.id, &self.owner, LEASE_TTL).await {
                Err(_) => return Waited::Fetch,
                Ok(LeaseState::Granted) => {
                    // The previous holder may have written and let go between
                    // our miss and this grant: look once more before calling.
                    if let Some(member) = self.read_after_grant().await {
                        let _ = self
                            .store
                            .end_lease(self.id, &self.owner, LeaseEnd::Done)
                            .await;
                        return Waited::Found(member);
                    }
                    return Waited::Fetch;
                }
                Ok(LeaseState::NotMember { code, message }) => {
                    return Waited::NotMember(UpstreamError::NotMember { code, message });
                }
                Ok(LeaseState::Taken) => {}
            }
            if budget::current_interest().is_some_and(|i| i.is_abandoned()) {
                return Waited::Abandoned;
            }
            if started.elapsed() >= LEASE_WAIT_MAX {
                tracing::warn!(user_id = %self.id, "another replica held the fetch lease too long; fetching anyway");
                return Waited::Fetch;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LEASE_POLL_MAX);
            if let Ok(found) = self.store.get_members(&[self.id]).await
                && let Some(member) = found.into_iter().next().flatten()
            {
                return Waited::Found(member);
            }
        }
    }

    /// Keeps the lease alive while the upstream call runs.
    fn spawn_lease_renewal(&self) -> tokio::task::JoinHandle<()> {
        let (store, owner, id) = (self.store.clone(), self.owner.clone(), self.id);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LEASE_RENEW_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let _ = store.try_lease(id, &owner, LEASE_TTL).await;
            }
        })
    }

    /// The upstream call and, on success, the write to the near cache and
    /// the store (or the write-back queue).
    async fn call_upstream(&self) -> Result<Arc<Record>, UpstreamError> {
        // The answer carries the very timestamps that are stored, so a miss
        // and the hits after it agree on `cached_at`.
        let now = self.clock.now_ms();
        let result = self
            .upstream
            .member_summary(self.id, Priority::Interactive)
            .await
            .map(|member| CachedMember {
                member,
                cached_at: now,
                updated_at: now,
            });
        match result {
            Ok(cached) => {
                let record = Record::new(cached);
                if self.enabled {
                    self.near.insert_record(record.clone());
                    store_or_queue(
                        self.store.as_ref(),
                        &self.queue,
                        record.member.clone(),
                        self.ttl,
                    )
                    .await;
                }
                Ok(record)
            }
            Err(e) => {
                if let UpstreamError::NotMember { .. } = &e {
                    self.negative.insert(self.id, e.clone());
                }
                Err(e)
            }
        }
    }
}
