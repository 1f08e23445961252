//! Lookups by a member number the cache does not hold.
//!
//! The upstream cannot be asked "who holds number 260": its member list is
//! sorted by join time, and sorting by number is served only for expired
//! members (docs/UPSTREAM.md). So a cold number is searched for by reading
//! the list, newest member first, caching every page on the way:
//! - **One listing at a time.** Every cold number asked for while a listing
//!   runs joins it (its number is added to what the listing looks for), so a
//!   burst of lookups costs one walk, not one each.
//! - **It stops as soon as every number it looks for was found.** A listing
//!   that read the whole list proves that a number it did not see is held by
//!   nobody; for `NEGATIVE_CACHE_TTL` after that, an uncached number is
//!   answered "not found" without another walk.
//! - **Never a false "not found".** It is answered only after a whole list
//!   was read and every page of it was cached (else the cache might just
//!   have lost what the list showed). A walk that could not see everyone
//!   (more members in one millisecond than a page holds) or failed makes the
//!   answer "unknown" (503), not 404. While the walk runs, a request waits
//!   up to `NUMBER_SEARCH_WAIT_MS` and then gets a 503 saying how far it got; the
//!   walk goes on, so a retry finds the number cached.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::near::Record;
use super::{CacheStatus, LookupError, MemberCache};
use crate::domain::{CachedMember, MemberNumber};
use crate::upstream::{MemberWalk, Priority, UpstreamError};

/// Distinct numbers one listing looks for at most; beyond it, a lookup is
/// answered "busy" rather than letting one client grow the set without end.
const MAX_WANTED: usize = 1_000;

/// The state of number searches, owned by the [`MemberCache`].
pub(crate) struct NumberSearch {
    state: Mutex<SearchState>,
    /// `NEGATIVE_CACHE_TTL`: how long a whole listing proves absence.
    negative_ttl: Duration,
    /// `NUMBER_SEARCH_WAIT_MS`: how long a request waits for the listing.
    wait: Duration,
}

#[derive(Default)]
struct SearchState {
    running: Option<Running>,
    /// When a listing last read the whole list and cached all of it.
    proven_at: Option<Instant>,
}

/// A listing in progress.
struct Running {
    /// Numbers it still looks for; it stops when this empties.
    wanted: HashSet<MemberNumber>,
    progress: watch::Receiver<Progress>,
}

/// What a waiter does after looking at the progress.
enum Next {
    Wait(u64),
    Restart,
    Proven,
}

/// What waiters see of a listing.
#[derive(Clone, Default)]
struct Progress {
    members_read: u64,
    /// Wanted numbers found so far, with their record.
    found: HashMap<MemberNumber, Arc<Record>>,
    /// Set when the listing ended.
    outcome: Option<Outcome>,
}

#[derive(Clone)]
enum Outcome {
    /// Stopped because every wanted number was found.
    AllFound,
    /// Read the whole list and cached every page: absence is proven.
    Proven,
    /// Read to the end, but absence cannot be proven (why, for the client).
    Unproven(String),
    Failed(UpstreamError),
}

impl NumberSearch {
    pub(crate) fn new(negative_ttl: Duration, wait: Duration) -> Self {
        Self {
            state: Mutex::new(SearchState::default()),
            negative_ttl,
            wait,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SearchState> {
        // Only plain data lives here; a panic elsewhere cannot leave it
        // half-changed in a way that matters, so a poisoned lock is taken.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A whole listing proved, recently enough, who holds which number.
    fn proven(&self) -> bool {
        self.lock()
            .proven_at
            .is_some_and(|at| at.elapsed() < self.negative_ttl)
    }

    /// Forgets the proof (the cache was cleared: its records are gone).
    pub(crate) fn forget(&self) {
        self.lock().proven_at = None;
    }
}

impl MemberCache {
    /// Looks a member up by number (seed §5.1.3): the near cache and the
    /// store's number index first, then a search of the member list.
    pub async fn get_by_number(
        self: &Arc<Self>,
        number: MemberNumber,
    ) -> Result<(CachedMember, CacheStatus), LookupError> {
        let (record, status) = self.lookup_by_number(number).await?;
        Ok((record.member.clone(), status))
    }

    /// [`MemberCache::get_by_number`] with the JSON already serialised.
    pub async fn lookup_by_number(
        self: &Arc<Self>,
        number: MemberNumber,
    ) -> Result<(Arc<Record>, CacheStatus), LookupError> {
        let mut store_answered = !self.enabled;
        if self.enabled {
            match self.cached_id_for(number).await {
                Ok(Some(id)) => {
                    let (record, status) = self.lookup(id).await?;
                    if record.member.member.number == Some(number) {
                        return Ok((record, status));
                    }
                    // Renumbered since: search like any other cold number.
                }
                Ok(None) => store_answered = true,
                Err(()) => {}
            }
        }
        if store_answered && self.numbers.proven() {
            // As for "not a member": the cache saved the upstream call.
            self.hit();
            return Err(LookupError::NumberNotFound(number));
        }
        self.miss();
        if self.listing_refused() {
            return Err(LookupError::NumberUnknown(
                "知识星球只允许管理员读取成员列表，无法按编号查找未缓存的成员；请先同步 \
                 (the member list is visible to admins only, so an uncached number cannot be \
                 searched; run a sync first)"
                    .into(),
            ));
        }
        self.search(number).await
    }

    /// The id the caches hold for `number`; `Err` when the store could not
    /// answer (then a missing id proves nothing).
    async fn cached_id_for(
        &self,
        number: MemberNumber,
    ) -> Result<Option<crate::domain::UserId>, ()> {
        if let Some(id) = self.near.id_for_number(number) {
            return Ok(Some(id));
        }
        self.store.user_id_by_number(number).await.map_err(|_| ())
    }

    /// Joins (or starts) the listing and waits for its verdict on `number`.
    async fn search(
        self: &Arc<Self>,
        number: MemberNumber,
    ) -> Result<(Arc<Record>, CacheStatus), LookupError> {
        let mut progress = {
            let mut state = self.numbers.lock();
            match &mut state.running {
                Some(running) => {
                    if running.wanted.len() >= MAX_WANTED && !running.wanted.contains(&number) {
                        return Err(LookupError::NumberSearchBusy);
                    }
                    running.wanted.insert(number);
                    running.progress.clone()
                }
                None => {
                    let (tx, rx) = watch::channel(Progress::default());
                    state.running = Some(Running {
                        wanted: HashSet::from([number]),
                        progress: rx.clone(),
                    });
                    let cache = Arc::clone(self);
                    tokio::spawn(async move { cache.run_listing(tx).await }.in_current_span());
                    rx
                }
            }
        };
        let deadline = Instant::now() + self.numbers.wait;
        loop {
            let next = {
                let seen = progress.borrow_and_update();
                match (seen.found.get(&number), &seen.outcome) {
                    (Some(record), _) => return Ok((Arc::clone(record), CacheStatus::Miss)),
                    (None, None) => Next::Wait(seen.members_read),
                    // It stopped before this number joined: search again.
                    (None, Some(Outcome::AllFound)) => Next::Restart,
                    (None, Some(Outcome::Proven)) => Next::Proven,
                    (None, Some(Outcome::Unproven(why))) => {
                        return Err(LookupError::NumberUnknown(why.clone()));
                    }
                    (None, Some(Outcome::Failed(e))) => {
                        return Err(LookupError::Upstream(e.clone()));
                    }
                }
            };
            match next {
                Next::Restart => return Box::pin(self.search(number)).await,
                Next::Proven => return self.after_proof(number).await,
                Next::Wait(members_read) => {
                    match tokio::time::timeout_at(deadline, progress.changed()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => {
                            return Err(LookupError::Upstream(UpstreamError::Transport(
                                "the member list search was interrupted".into(),
                            )));
                        }
                        Err(_) => return Err(LookupError::NumberSearchPending { members_read }),
                    }
                }
            }
        }
    }

    /// The listing proved who holds which number. A page written just before
    /// this lookup joined is in the cache, not in `found`: look there once.
    async fn after_proof(
        self: &Arc<Self>,
        number: MemberNumber,
    ) -> Result<(Arc<Record>, CacheStatus), LookupError> {
        if let Ok(Some(id)) = self.cached_id_for(number).await {
            let (record, _) = self.lookup(id).await?;
            if record.member.member.number == Some(number) {
                return Ok((record, CacheStatus::Miss));
            }
        }
        Err(LookupError::NumberNotFound(number))
    }

    /// Reads the member list page by page, caching each page, until every
    /// wanted number was found or the list ended.
    async fn run_listing(self: Arc<Self>, tx: watch::Sender<Progress>) {
        let mut walk = MemberWalk::new(self.upstream.as_ref(), Priority::Interactive);
        let mut all_cached = true;
        let outcome = loop {
            let page = match walk.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => {
                    self.numbering.observe_listing(&walk);
                    break if !walk.complete() {
                        Outcome::Unproven(format!(
                            "成员列表中同一时刻加入的成员超过一页，可能有人未被读到，无法确认该编号不存在 \
                             (more members joined within one millisecond than a page holds, at {}; \
                             some may not have been seen, so absence cannot be proven)",
                            walk.skipped().join(", ")
                        ))
                    } else if !all_cached {
                        Outcome::Unproven(
                            "缓存存储暂不可用，无法确认该编号不存在，请稍后重试 \
                             (the cache store could not keep the member list; absence cannot be \
                             proven yet, retry shortly)"
                                .into(),
                        )
                    } else {
                        Outcome::Proven
                    };
                }
                Err(e) if e.is_listing_refused() => {
                    self.note_listing_refused(&e);
                    break Outcome::Failed(e);
                }
                Err(e) => break Outcome::Failed(e),
            };
            self.numbering.observe(&page);
            all_cached &= self.cache_listed(&page).await;
            let now = self.now_ms();
            let mut state = self.numbers.lock();
            let Some(running) = state.running.as_mut() else {
                break Outcome::Failed(UpstreamError::Transport("search state lost".into()));
            };
            let mut found = Vec::new();
            for member in page {
                if let Some(n) = member.number
                    && running.wanted.remove(&n)
                {
                    let record = Record::new(CachedMember {
                        member,
                        cached_at: now,
                        updated_at: now,
                    });
                    found.push((n, record));
                }
            }
            let done = running.wanted.is_empty();
            tx.send_modify(|p| {
                p.members_read = walk.members();
                p.found.extend(found);
                if done {
                    p.outcome = Some(Outcome::AllFound);
                }
            });
            if done {
                // Decided under the lock: a number joining after this starts
                // a listing of its own.
                state.running = None;
                return;
            }
        };
        let mut state = self.numbers.lock();
        if matches!(outcome, Outcome::Proven) {
            state.proven_at = Some(Instant::now());
        }
        state.running = None;
        tx.send_modify(|p| p.outcome = Some(outcome));
    }
}
