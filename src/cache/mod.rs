//! The read-through member cache (seed §5, §7, §8).
//!
//! - Lookups read the store; a miss asks the upstream (interactive priority),
//!   writes the answer back and returns it. Concurrent misses for the same
//!   member share one upstream call (singleflight); the fetch runs in its own
//!   task, so a caller that disconnects neither cancels nor wastes it.
//! - The store may fail at any time: the guarded store fails fast and every
//!   path here treats a store error as a miss, so answers keep coming from the
//!   upstream and caching resumes when the store returns.
//! - A near cache (`near.rs`) of recently served members sits in front of the
//!   store: read near → store → upstream. While the store is unavailable it
//!   keeps answering members this process has seen, and members fetched
//!   meanwhile are queued (`write_back.rs`) and written once it is back.
//! - Counters are kept in memory and flushed to the store's stats hash once a
//!   second, so the hot path makes no extra store round trip for statistics.

pub mod batch;
pub mod jobs;
pub mod near;
pub mod refresh;
pub mod sync;
pub mod write_back;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tracing::Instrument;

use crate::clock::Clock;
use crate::domain::{CachedMember, Member, MemberNumber, UserId};
use crate::metrics::CacheMetrics;
use crate::store::{Page, SortBy, SortOrder, StatCounters, Store, StoreError};
use crate::upstream::{Budget, Priority, Upstream, UpstreamError};
use near::NearCache;
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
    #[error("未找到编号为 {0} 的用户 (no member with number {0})")]
    NumberNotFound(MemberNumber),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// The result of one fetch, shared between everyone waiting on it.
type FetchResult = Option<Result<CachedMember, UpstreamError>>;

pub struct MemberCache {
    store: Arc<dyn Store>,
    upstream: Arc<dyn Upstream>,
    budget: Arc<Budget>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
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
    inflight: Arc<Mutex<HashMap<UserId, watch::Receiver<FetchResult>>>>,
    /// Counters not yet flushed to the store.
    pending: Mutex<StatCounters>,
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
    /// Hits and misses for `/metrics`, fed by [`MemberCache::count`] and
    /// the tiers of a lookup.
    metrics: CacheMetrics,
}

/// Sizes of the in-process layers in front of the store.
#[derive(Debug, Clone, Copy)]
pub struct NearOptions {
    /// `NEAR_CACHE_SIZE`: entries; 0 turns the near cache off.
    pub capacity: u64,
    /// `NEAR_CACHE_TTL`: how long an entry is trusted without the store.
    pub fresh_for: Duration,
}

impl NearOptions {
    /// The configuration defaults: 10 000 members, trusted for a minute (or
    /// the store TTL if shorter).
    pub fn defaults(store_ttl: Duration) -> Self {
        Self {
            capacity: 10_000,
            fresh_for: Duration::from_secs(60).min(store_ttl),
        }
    }
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
}

impl CachePolicy {
    /// Soft TTL at three quarters of the hard one, negative answers for 5
    /// minutes.
    pub fn for_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            soft_ttl: ttl.mul_f64(0.75),
            negative_ttl: Duration::from_secs(300),
            enabled: true,
        }
    }
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
    /// A cache with the default refresh policy for `ttl` (see
    /// [`CachePolicy::for_ttl`]).
    pub fn new(
        store: Arc<dyn Store>,
        upstream: Arc<dyn Upstream>,
        budget: Arc<Budget>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        enabled: bool,
    ) -> Arc<Self> {
        let mut policy = CachePolicy::for_ttl(ttl);
        policy.enabled = enabled;
        Self::build(
            store,
            upstream,
            budget,
            clock,
            policy,
            NearOptions::defaults(ttl),
        )
    }

    /// [`MemberCache::new`] with an explicit refresh policy.
    pub fn with_policy(
        store: Arc<dyn Store>,
        upstream: Arc<dyn Upstream>,
        budget: Arc<Budget>,
        clock: Arc<dyn Clock>,
        policy: CachePolicy,
    ) -> Arc<Self> {
        let near = NearOptions::defaults(policy.ttl);
        Self::build(store, upstream, budget, clock, policy, near)
    }

    /// [`MemberCache::new`] with the near cache sized explicitly.
    pub fn with_near(
        store: Arc<dyn Store>,
        upstream: Arc<dyn Upstream>,
        budget: Arc<Budget>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        enabled: bool,
        near: NearOptions,
    ) -> Arc<Self> {
        let mut policy = CachePolicy::for_ttl(ttl);
        policy.enabled = enabled;
        Self::build(store, upstream, budget, clock, policy, near)
    }

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
        } = policy;
        let near = if enabled {
            NearCache::new(near.capacity, near.fresh_for, ttl, clock.clone())
        } else {
            NearCache::disabled(clock.clone())
        };
        Arc::new(Self {
            near: Arc::new(near),
            write_back: Arc::new(WriteBackQueue::default()),
            store,
            upstream,
            budget,
            clock,
            ttl,
            enabled,
            soft_ttl: soft_ttl.min(ttl),
            negative: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(negative_ttl.max(Duration::from_millis(1)))
                .build(),
            refreshing: Arc::new(Mutex::new(std::collections::HashSet::new())),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            pending: Mutex::new(StatCounters::default()),
            flushed_calls: AtomicU64::new(0),
            listing_refused: AtomicBool::new(false),
            sync_lock: tokio::sync::Mutex::new(()),
            jobs: jobs::SyncJobs::default(),
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

    pub fn near(&self) -> &NearCache {
        &self.near
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

    /// Counts lookups for the stats hash and for `/metrics` alike.
    fn count(&self, f: impl FnOnce(&mut StatCounters)) {
        let mut delta = StatCounters::default();
        f(&mut delta);
        self.metrics.requests(delta.cache_hits, delta.cache_misses);
        if let Ok(mut p) = self.pending.lock() {
            p.add(&delta);
        }
    }

    /// Looks a member up by id: cache first, upstream on a miss (seed §5.1.2).
    pub async fn get(&self, id: UserId) -> Result<(CachedMember, CacheStatus), LookupError> {
        if self.enabled
            && let Some(member) = self.cached(id).await
        {
            self.count(|c| {
                c.total_requests += 1;
                c.cache_hits += 1;
            });
            if self.clock.now_ms() - member.updated_at > self.soft_ttl.as_millis() as i64 {
                self.spawn_refresh(member.clone());
            }
            return Ok((member, CacheStatus::Hit));
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
            self.count(|c| {
                c.total_requests += 1;
                c.cache_hits += 1;
            });
            return Err(e.into());
        }
        self.count(|c| {
            c.total_requests += 1;
            c.cache_misses += 1;
        });
        let member = self.fetch_shared(id).await?;
        Ok((member, CacheStatus::Miss))
    }

    /// The member from the near cache, else the store (filling the near
    /// cache); while the store fails, whatever the near cache still holds.
    async fn cached(&self, id: UserId) -> Option<CachedMember> {
        if let Some(member) = self.near.get(id) {
            self.metrics.tier("near", 1, 0);
            return Some(member);
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
                let member = member?;
                self.near.insert(&member);
                Some(member)
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

    /// The id of the member with `number`: near cache first, then the
    /// store's number index.
    async fn cached_id_for(&self, number: MemberNumber) -> Option<UserId> {
        if let Some(id) = self.near.id_for_number(number) {
            return Some(id);
        }
        self.store.user_id_by_number(number).await.ok().flatten()
    }

    /// Looks a member up by number (seed §5.1.3). A number the cache does not
    /// know is looked up in the upstream's member list (one call, sorted by
    /// number) where listing is allowed.
    pub async fn get_by_number(
        &self,
        number: MemberNumber,
    ) -> Result<(CachedMember, CacheStatus), LookupError> {
        if self.enabled
            && let Some(id) = self.cached_id_for(number).await
        {
            let (member, status) = self.get(id).await?;
            if member.member.number == number {
                return Ok((member, status));
            }
        }
        if self.listing_refused.load(Ordering::Relaxed) {
            self.count(|c| {
                c.total_requests += 1;
                c.cache_misses += 1;
            });
            return Err(LookupError::NumberNotFound(number));
        }
        self.count(|c| {
            c.total_requests += 1;
            c.cache_misses += 1;
        });
        let after = MemberNumber::new(number.get() - 1);
        match self
            .upstream
            .member_list_page(after, 1, Priority::Interactive)
            .await
        {
            Ok(page) => match page.into_iter().next() {
                Some(member) if member.number == number => {
                    let cached = self.write_back(member).await;
                    Ok((cached, CacheStatus::Miss))
                }
                _ => Err(LookupError::NumberNotFound(number)),
            },
            Err(e) if e.is_listing_refused() => {
                self.note_listing_refused(&e);
                Err(LookupError::NumberNotFound(number))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn note_listing_refused(&self, e: &UpstreamError) {
        if !self.listing_refused.swap(true, Ordering::Relaxed) {
            tracing::info!(error = %e, "upstream refuses the member list; using per-member calls from now on");
        }
    }

    pub(crate) fn listing_refused(&self) -> bool {
        self.listing_refused.load(Ordering::Relaxed)
    }

    /// Caches a member fetched from the upstream; a store failure is logged
    /// and ignored (the answer is still good).
    async fn write_back(&self, member: Member) -> CachedMember {
        let now = self.clock.now_ms();
        let cached = CachedMember {
            member,
            cached_at: now,
            updated_at: now,
        };
        if self.enabled {
            self.near.insert(&cached);
            store_or_queue(
                self.store.as_ref(),
                &self.write_back,
                cached.clone(),
                self.ttl,
            )
            .await;
        }
        cached
    }

    /// One upstream fetch per member at a time; every concurrent caller gets
    /// the same answer.
    async fn fetch_shared(&self, id: UserId) -> Result<CachedMember, UpstreamError> {
        let mut rx = {
            // The map only holds receivers; a panic elsewhere cannot leave it
            // inconsistent, so a poisoned lock is simply taken over.
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(rx) = map.get(&id) {
                rx.clone()
            } else {
                let (tx, rx) = watch::channel(None);
                map.insert(id, rx.clone());
                self.spawn_fetch(id, tx);
                rx
            }
        };
        loop {
            if let Some(result) = rx.borrow_and_update().clone() {
                return result;
            }
            if rx.changed().await.is_err() {
                // The fetch task ended without an answer (it panicked).
                return Err(UpstreamError::Transport(
                    "member fetch was interrupted".into(),
                ));
            }
        }
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
        self.near.clear();
        self.write_back.clear();
        if let Ok(mut p) = self.pending.lock() {
            *p = StatCounters::default();
        }
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
        let mut delta = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        delta.api_calls += calls_now.saturating_sub(calls_before);
        if delta.is_zero() {
            return;
        }
        match self.store.add_stats(&delta).await {
            Ok(()) => self.flushed_calls.store(calls_now, Ordering::Relaxed),
            Err(_) => {
                delta.api_calls -= calls_now.saturating_sub(calls_before);
                // Put back as they were: `count` would report them to
                // `/metrics` a second time.
                if let Ok(mut p) = self.pending.lock() {
                    p.add(&delta);
                }
            }
        }
    }

    /// Counters and last sync time: stored ones plus what this process has
    /// not flushed yet (all of them when the store is unreachable).
    pub async fn stats_counters(&self) -> crate::store::StoredStats {
        self.flush_stats().await;
        let mut stored = self.store.stats().await.unwrap_or_default();
        if let Ok(p) = self.pending.lock() {
            stored.counters.add(&p);
        }
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
    pub fn spawn_stats_flusher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { return };
                cache.flush_stats().await;
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

    fn spawn_fetch(&self, id: UserId, tx: watch::Sender<FetchResult>) {
        let upstream = self.upstream.clone();
        let store = self.store.clone();
        let (near, queue) = (self.near.clone(), self.write_back.clone());
        let clock = self.clock.clone();
        let inflight = self.inflight.clone();
        let negative = self.negative.clone();
        let (ttl, enabled) = (self.ttl, self.enabled);
        // The fetch runs in its own task; it keeps the span of the request
        // that started it, so its log lines carry that request's id.
        let task = async move {
            // The answer carries the very timestamps that are stored, so a
            // miss and the hits after it agree on `cached_at`.
            let now = clock.now_ms();
            let result = upstream
                .member_summary(id, Priority::Interactive)
                .await
                .map(|member| CachedMember {
                    member,
                    cached_at: now,
                    updated_at: now,
                });
            if enabled && let Ok(cached) = &result {
                near.insert(cached);
                store_or_queue(store.as_ref(), &queue, cached.clone(), ttl).await;
            }
            if let Err(e @ UpstreamError::NotMember { .. }) = &result {
                negative.insert(id, e.clone());
            }
            let _ = tx.send(Some(result));
            if let Ok(mut map) = inflight.lock()
                && map
                    .get(&id)
                    .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
            {
                map.remove(&id);
            }
        };
        tokio::spawn(task.in_current_span());
    }
}
