//! Bulk warm-up: a sync that fills an empty cache too.
//!
//! A sync cannot take its ids from the cache (an empty one has none), so
//! they come from the upstream itself:
//! 1. the member list, 200 members a call, newest first, each page written
//!    before the next is read — 500 members cost 3 calls instead of 500,
//!    and memory holds one page whatever the group's size;
//! 2. where listing is refused (11507 groups over 500 members, 1006, 1030;
//!    docs/UPSTREAM.md), the participants of every camp's ranking, then one
//!    summary call per member not yet cached, `concurrency` at a time, all
//!    through the shared upstream budget at background priority.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use super::MemberCache;

/// How long a sync waits before reading back a write that timed out, and
/// how many reads (each after twice the previous pause: 0.2, 0.4, 0.8 s) it
/// makes before calling the write failed. A sync is background work; a
/// record reported failed while the cache holds it is worse than a second.
const WRITE_CONFIRM_DELAY: Duration = Duration::from_millis(200);
const WRITE_CONFIRM_READS: u32 = 3;
use crate::domain::{CachedMember, RankingType, UserId};
use crate::store::StoreError;
use crate::upstream::{self, CampScope, MemberWalk, Priority, UpstreamError};

/// Writes to the store happen in batches of this many members.
const WRITE_BATCH: usize = 500;

/// Failed members listed by name in a report; `failed_count` counts them
/// all. A sync while the store is down fails every member, and the last
/// twenty reports are kept for polling: listing 100 000 failures in each
/// held the whole group twenty times over.
pub const FAILED_USERS_LISTED: usize = 100;

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Refresh members that are already cached too.
    pub force: bool,
    /// Per-member calls in flight at once (1..=10).
    pub concurrency: usize,
}

/// Live progress, readable while the sync runs.
#[derive(Debug, Default)]
pub struct SyncProgress {
    pub total: AtomicU64,
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedUser {
    pub user_id: UserId,
    pub error: String,
}

/// What a sync reports (the answer of `POST /api/users/sync`).
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub sync_count: u64,
    pub success_count: u64,
    pub failed_count: u64,
    pub skipped_count: u64,
    pub duration_ms: u64,
    pub failed_users: Vec<FailedUser>,
    /// Where the ids came from: "member_list" or "rankings".
    pub source: &'static str,
    /// Members the member list held (read, cached or skipped).
    pub listed_count: u64,
    /// Member-list pages read (one upstream call each, retries aside).
    pub member_list_pages: u64,
    /// False when some members may not have been seen; `warnings` says why.
    pub complete: bool,
    pub warnings: Vec<String>,
    /// The most members the sync held in memory at once: a member-list
    /// page, whatever the group's size (a test holds it to one page).
    pub held_members_peak: u64,
}

impl SyncReport {
    /// Counts a failed member, listing it while the list has room.
    fn fail(&mut self, user_id: UserId, error: String) {
        self.failed_count += 1;
        if self.failed_users.len() < FAILED_USERS_LISTED {
            self.failed_users.push(FailedUser { user_id, error });
        }
    }

    /// Notes that `n` members are in hand at once.
    fn holding(&mut self, n: usize) {
        self.held_members_peak = self.held_members_peak.max(n as u64);
    }

    /// Says, once done, that some failures went unlisted.
    fn note_unlisted_failures(&mut self) {
        let unlisted = self.failed_count - self.failed_users.len() as u64;
        if unlisted > 0 {
            self.warnings.push(format!(
                "另有 {unlisted} 个成员同步失败未列出 ({unlisted} more failed members are not listed)"
            ));
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    #[error("a sync is already running")]
    AlreadyRunning,
    #[error("could not learn the member ids from the upstream: {0}")]
    Upstream(#[from] UpstreamError),
    /// The store's error as text: store errors are not `Clone`, and a job's
    /// outcome is shared with everyone waiting on it.
    #[error("cache store unavailable: {0}")]
    Store(String),
    #[error("the sync was interrupted before it finished")]
    Interrupted,
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

impl MemberCache {
    /// Runs one sync; refuses to start a second one concurrently.
    pub async fn sync(
        self: &Arc<Self>,
        opts: SyncOptions,
        progress: Arc<SyncProgress>,
    ) -> Result<SyncReport, SyncError> {
        let _running = self
            .sync_lock
            .try_lock()
            .map_err(|_| SyncError::AlreadyRunning)?;
        let started = Instant::now();
        let mut report = if self.listing_refused() {
            None
        } else {
            match self.sync_from_list(opts, &progress).await {
                Ok(report) => report,
                Err(SyncError::Upstream(e)) if e.is_listing_refused() => {
                    self.note_listing_refused(&e);
                    None
                }
                Err(e) => return Err(e),
            }
        };
        if report.is_none() {
            let ids = self.ids_from_rankings().await?;
            report = Some(self.sync_one_by_one(ids, opts, &progress).await?);
        }
        let mut report = report.unwrap_or_else(|| unreachable!("set above"));
        report.duration_ms = started.elapsed().as_millis() as u64;
        if let Err(e) = self.store.set_last_sync_time(self.now_ms()).await {
            tracing::warn!(error = %e, "could not record the sync time");
        }
        tracing::info!(
            source = report.source,
            synced = report.sync_count,
            ok = report.success_count,
            failed = report.failed_count,
            skipped = report.skipped_count,
            duration_ms = report.duration_ms,
            "sync finished"
        );
        Ok(report)
    }

    /// Which of `ids` to fetch: all with `force`, else the uncached ones.
    async fn to_fetch(
        &self,
        ids: Vec<UserId>,
        force: bool,
    ) -> Result<(Vec<UserId>, u64), StoreError> {
        if force {
            return Ok((ids, 0));
        }
        let cached = self.store.cached_ids(&ids).await?;
        let skipped = cached.iter().filter(|c| **c).count() as u64;
        let todo = ids
            .into_iter()
            .zip(cached)
            .filter(|(_, c)| !c)
            .map(|(id, _)| id)
            .collect();
        Ok((todo, skipped))
    }

    /// Syncs from the member list, one page at a time: each page is written
    /// (and confirmed) before the next is asked for, so memory holds one page
    /// whatever the group's size. `None` when the list answered no member at
    /// all: a group always has its owner, so an empty list means the list is
    /// not usable (the caller learns the ids from the rankings instead)
    /// rather than a group of nobody reported as synced.
    async fn sync_from_list(
        &self,
        opts: SyncOptions,
        progress: &SyncProgress,
    ) -> Result<Option<SyncReport>, SyncError> {
        let mut walk = MemberWalk::new(self.upstream.as_ref(), Priority::Background);
        let mut report = empty_report("member_list", 0, 0);
        while let Some(page) = walk.next_page().await? {
            self.numbering.observe(&page);
            let ids: Vec<UserId> = page.iter().map(|m| m.user_id).collect();
            let (todo, skipped) = self.to_fetch(ids, opts.force).await?;
            let todo: BTreeSet<UserId> = todo.into_iter().collect();
            report.skipped_count += skipped;
            report.sync_count += todo.len() as u64;
            progress
                .total
                .fetch_add(todo.len() as u64, Ordering::Relaxed);
            let now = self.now_ms();
            let records: Vec<CachedMember> = page
                .into_iter()
                .filter(|m| todo.contains(&m.user_id))
                .map(|member| CachedMember {
                    member,
                    cached_at: now,
                    updated_at: now,
                })
                .collect();
            report.holding(records.len());
            for chunk in records.chunks(WRITE_BATCH) {
                for (m, written) in chunk.iter().zip(self.write_confirmed(chunk).await) {
                    match written {
                        Ok(()) => {
                            // Keep the near cache in step, so nobody is
                            // served the record this sync just replaced.
                            self.near.refresh(m);
                            report.success_count += 1;
                            progress.done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            report.fail(m.member.user_id, error);
                            progress.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        if walk.members() == 0 {
            tracing::warn!(
                "the member list answered no member at all; learning the ids from the camps' rankings instead"
            );
            return Ok(None);
        }
        self.numbering.observe_listing(&walk);
        report.note_unlisted_failures();
        report.listed_count = walk.members();
        report.member_list_pages = walk.pages() as u64;
        if !walk.complete() {
            report.complete = false;
            report.warnings.push(format!(
                "成员列表中同一时刻加入的成员超过一页，可能有成员未同步 \
                 (more members joined within one millisecond than a page holds, at {}; some may be missing)",
                walk.skipped().join(", ")
            ));
        }
        Ok(Some(report))
    }

    /// Every participant of every camp, in every scope. A ranking that cannot
    /// be read whole fails the sync rather than silently syncing a part.
    async fn ids_from_rankings(&self) -> Result<Vec<UserId>, UpstreamError> {
        let mut ids = BTreeSet::new();
        for scope in CampScope::ALL {
            let camps = self
                .upstream
                .camps(scope, 100, Priority::Background)
                .await?;
            for camp in camps {
                let rows = upstream::full_ranking(
                    self.upstream.as_ref(),
                    camp.checkin_id,
                    RankingType::Accumulated,
                    None,
                    Priority::Background,
                )
                .await?;
                ids.extend(rows.into_iter().map(|r| r.user.user_id));
            }
        }
        Ok(ids.into_iter().collect())
    }

    async fn sync_one_by_one(
        self: &Arc<Self>,
        ids: Vec<UserId>,
        opts: SyncOptions,
        progress: &SyncProgress,
    ) -> Result<SyncReport, SyncError> {
        let (todo, skipped) = self.to_fetch(ids, opts.force).await?;
        progress.total.store(todo.len() as u64, Ordering::Relaxed);
        let mut report = empty_report("rankings", todo.len() as u64, skipped);
        report.holding(todo.len());
        // A task is spawned as a slot frees up, not one per member up front:
        // each waiting task is a future with its state, per member, before
        // the first call has gone out.
        let limit = opts.concurrency.max(1);
        let mut todo = todo.into_iter();
        let mut tasks = JoinSet::new();
        loop {
            while tasks.len() < limit
                && let Some(id) = todo.next()
            {
                let cache = self.clone();
                tasks.spawn(async move { (id, cache.fetch_and_store(id).await) });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (id, result) = match joined {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "sync task failed");
                    continue;
                }
            };
            match result {
                Ok(()) => {
                    report.success_count += 1;
                    progress.done.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    report.fail(id, error);
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        report.failed_users.sort_by_key(|f| f.user_id);
        report.note_unlisted_failures();
        Ok(report)
    }

    async fn fetch_and_store(&self, id: UserId) -> Result<(), String> {
        let member = self
            .upstream
            .member_summary(id, Priority::Background)
            .await
            .map_err(|e| e.to_string())?;
        let now = self.now_ms();
        let cached = CachedMember {
            member,
            cached_at: now,
            updated_at: now,
        };
        let written = self.write_confirmed(std::slice::from_ref(&cached)).await;
        written.into_iter().next().unwrap_or(Ok(()))?;
        self.near.refresh(&cached);
        Ok(())
    }

    /// Writes `records` and says, per record, whether it is in the store. A
    /// write that timed out may still land (a redb commit finishing after the
    /// guard gave up, a Redis reply lost under load): those records are read
    /// back once before being reported failed, so the report never calls a
    /// member failed that the cache in fact holds.
    async fn write_confirmed(&self, records: &[CachedMember]) -> Vec<Result<(), String>> {
        let error = match self.store.put_members(records, self.ttl()).await {
            Ok(()) => return vec![Ok(()); records.len()],
            Err(e) => e,
        };
        let failed = |e: &dyn std::fmt::Display| format!("缓存写入失败 (cache write failed): {e}");
        if !matches!(error, StoreError::Timeout(_)) {
            return records.iter().map(|_| Err(failed(&error))).collect();
        }
        let ids: Vec<UserId> = records.iter().map(|m| m.member.user_id).collect();
        let mut confirmed = vec![false; records.len()];
        let mut pause = WRITE_CONFIRM_DELAY;
        for _ in 0..WRITE_CONFIRM_READS {
            tokio::time::sleep(pause).await;
            pause *= 2;
            let Ok(found) = self.store.get_members(&ids).await else {
                continue;
            };
            for ((ok, m), stored) in confirmed.iter_mut().zip(records).zip(found) {
                *ok |= stored.is_some_and(|s| s.updated_at == m.updated_at && s.member == m.member);
            }
            if confirmed.iter().all(|ok| *ok) {
                break;
            }
        }
        confirmed
            .into_iter()
            .map(|ok| if ok { Ok(()) } else { Err(failed(&error)) })
            .collect()
    }
}

fn empty_report(source: &'static str, sync_count: u64, skipped_count: u64) -> SyncReport {
    SyncReport {
        sync_count,
        success_count: 0,
        failed_count: 0,
        skipped_count,
        duration_ms: 0,
        failed_users: Vec::new(),
        source,
        listed_count: 0,
        member_list_pages: 0,
        complete: true,
        warnings: Vec::new(),
        held_members_peak: 0,
    }
}
