//! The read-through member cache (seed §5, §7, §8).
//!
//! - Lookups read the store; a miss asks the upstream (interactive priority),
//!   writes the answer back and returns it. Concurrent misses for the same
//!   member share one upstream call (singleflight); the fetch runs in its own
//!   task, so a caller that disconnects neither cancels nor wastes it.
//! - The store may fail at any time: the guarded store fails fast and every
//!   path here treats a store error as a miss, so answers keep coming from the
//!   upstream and caching resumes when the store returns.
//! - Counters are kept in memory and flushed to the store's stats hash once a
//!   second, so the hot path makes no extra store round trip for statistics.

pub mod batch;
pub mod sync;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::domain::{CachedMember, Member, MemberNumber, UserId};
use crate::store::{Page, SortBy, SortOrder, StatCounters, Store, StoreError};
use crate::upstream::{Budget, Priority, Upstream, UpstreamError};

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
type FetchResult = Option<Result<Member, UpstreamError>>;

pub struct MemberCache {
    store: Arc<dyn Store>,
    upstream: Arc<dyn Upstream>,
    budget: Arc<Budget>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// `CACHE_ENABLED=false`: every lookup goes to the upstream.
    enabled: bool,
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
    /// One sync at a time.
    sync_lock: tokio::sync::Mutex<()>,
    /// Members the upstream recently called former or non-members, with
    /// when and what it said (see `batch.rs`): a refund list containing
    /// people who left asks about them once, not on every export.
    not_members: Mutex<HashMap<UserId, (Instant, UpstreamError)>>,
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

/// Percentage with two decimals; 0 when nothing was asked yet.
pub fn rate_percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 10_000.0 / whole as f64).round() / 100.0
    }
}

impl MemberCache {
    pub fn new(
        store: Arc<dyn Store>,
        upstream: Arc<dyn Upstream>,
        budget: Arc<Budget>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        enabled: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            upstream,
            budget,
            clock,
            ttl,
            enabled,
            inflight: Arc::new(Mutex::new(HashMap::new())),
            pending: Mutex::new(StatCounters::default()),
            flushed_calls: AtomicU64::new(0),
            listing_refused: AtomicBool::new(false),
            sync_lock: tokio::sync::Mutex::new(()),
            not_members: Mutex::new(HashMap::new()),
        })
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

    /// `CACHE_ENABLED`: when false, nothing is read from or written to the
    /// store (member records and cached rankings alike).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn count(&self, f: impl FnOnce(&mut StatCounters)) {
        if let Ok(mut p) = self.pending.lock() {
            f(&mut p);
        }
    }

    /// Looks a member up by id: cache first, upstream on a miss (seed §5.1.2).
    pub async fn get(&self, id: UserId) -> Result<(CachedMember, CacheStatus), LookupError> {
        if self.enabled
            && let Ok(found) = self.store.get_members(&[id]).await
            && let Some(Some(member)) = found.into_iter().next()
        {
            self.count(|c| {
                c.total_requests += 1;
                c.cache_hits += 1;
            });
            return Ok((member, CacheStatus::Hit));
        }
        self.count(|c| {
            c.total_requests += 1;
            c.cache_misses += 1;
        });
        let member = self.fetch_shared(id).await?;
        let now = self.clock.now_ms();
        Ok((
            CachedMember {
                member,
                cached_at: now,
                updated_at: now,
            },
            CacheStatus::Miss,
        ))
    }

    /// Looks a member up by number (seed §5.1.3). A number the cache does not
    /// know is looked up in the upstream's member list (one call, sorted by
    /// number) where listing is allowed.
    pub async fn get_by_number(
        &self,
        number: MemberNumber,
    ) -> Result<(CachedMember, CacheStatus), LookupError> {
        if self.enabled
            && let Ok(Some(id)) = self.store.user_id_by_number(number).await
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
        if self.enabled
            && let Err(e) = self
                .store
                .put_members(std::slice::from_ref(&cached), self.ttl)
                .await
        {
            tracing::debug!(error = %e, "could not cache member");
        }
        cached
    }

    /// One upstream fetch per member at a time; every concurrent caller gets
    /// the same answer.
    async fn fetch_shared(&self, id: UserId) -> Result<Member, UpstreamError> {
        let mut rx = {
            let Ok(mut map) = self.inflight.lock() else {
                return self
                    .upstream
                    .member_summary(id, Priority::Interactive)
                    .await;
            };
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
        if let Ok(mut p) = self.pending.lock() {
            *p = StatCounters::default();
        }
        if let Ok(mut known) = self.not_members.lock() {
            known.clear();
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
                self.count(|c| c.add(&delta));
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

    fn spawn_fetch(&self, id: UserId, tx: watch::Sender<FetchResult>) {
        let upstream = self.upstream.clone();
        let store = self.store.clone();
        let clock = self.clock.clone();
        let inflight = self.inflight.clone();
        let (ttl, enabled) = (self.ttl, self.enabled);
        tokio::spawn(async move {
            let result = upstream.member_summary(id, Priority::Interactive).await;
            if enabled && let Ok(member) = &result {
                let now = clock.now_ms();
                let cached = CachedMember {
                    member: member.clone(),
                    cached_at: now,
                    updated_at: now,
                };
                if let Err(e) = store.put_members(&[cached], ttl).await {
                    tracing::debug!(error = %e, "could not cache member");
                }
            }
            let _ = tx.send(Some(result));
            if let Ok(mut map) = inflight.lock()
                && map
                    .get(&id)
                    .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
            {
                map.remove(&id);
            }
        });
    }
}
