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
//!   was read, and from the numbers that listing saw (a bit set, a few
//!   kilobytes for a large group), not from the cache: a cache that lost a
//!   record (expiry, a flushed Redis, `CACHE_ENABLED=false`) must not turn a
//!   member into nobody. A number the listing saw but the cache no longer
//!   holds is searched for again. A walk that could not see everyone (more
//!   members in one millisecond than a page holds) or failed makes the
//!   answer "unknown" (503), not 404. While the walk runs, a request waits
//!   up to `NUMBER_SEARCH_WAIT_MS` and then gets a 503 saying how far it
//!   got; the walk goes on, so a retry finds the number cached.

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
    /// The numbers the last whole listing saw, and when it ended.
    proof: Option<(Instant, Arc<NumberSet>)>,
}

/// Member numbers as a bit set: 100 000 numbers take 12.5 KB. Numbers from
/// [`NumberSet::LIMIT`] up are not kept; the set then cannot tell about them.
#[derive(Debug, Default)]
pub(crate) struct NumberSet {
    bits: Vec<u64>,
    /// A number at or above the limit was seen.
    beyond_limit: bool,
}

impl NumberSet {
    const LIMIT: u64 = 1 << 24;

    fn insert(&mut self, n: MemberNumber) {
        let n = n.get();
        if n >= Self::LIMIT {
            self.beyond_limit = true;
            return;
        }
        let (word, bit) = ((n / 64) as usize, n % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << bit;
    }

    /// Whether `n` was seen; `None` when the set cannot tell.
    fn contains(&self, n: MemberNumber) -> Option<bool> {
        let n = n.get();
        if n >= Self::LIMIT {
            return (!self.beyond_limit).then_some(false);
        }
        let (word, bit) = ((n / 64) as usize, n % 64);
        Some(self.bits.get(word).is_some_and(|w| w & (1 << bit) != 0))
    }
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
    /// The listing ended whole; whether it saw the number.
    Proven(Option<bool>),
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
    /// Read the whole list: the numbers it holds.
    Proven(Arc<NumberSet>),
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

    /// Whether the last whole listing, if recent enough, saw `n`.
    fn seen(&self, n: MemberNumber) -> Option<bool> {
        match &self.lock().proof {
            Some((at, set)) if at.elapsed() < self.negative_ttl => set.contains(n),
            _ => None,
        }
    }

    /// Forgets the proof (the cache was cleared: asked again, a number is
    /// looked for again).
    pub(crate) fn forget(&self) {
        self.lock().proof = None;
    }
}

impl MemberCache {
    /// Looks a member up by number: the near cache and the
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
        if let Some(found) = self.cached_by_number(number).await? {
            return Ok(found);
        }
        if self.numbers.seen(number) == Some(false) {
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

    /// The member the caches hold with `number`, if any still has it (one
    /// renumbered since is searched for like any cold number).
    async fn cached_by_number(
        &self,
        number: MemberNumber,
    ) -> Result<Option<(Arc<Record>, CacheStatus)>, LookupError> {
        if !self.enabled {
            return Ok(None);
        }
        let Some(id) = self.cached_id_for(number).await else {
            return Ok(None);
        };
        let (record, status) = self.lookup(id).await?;
        Ok((record.member.member.number == Some(number)).then_some((record, status)))
    }

    /// The id the caches hold for `number` (a store that fails holds none).
    async fn cached_id_for(&self, number: MemberNumber) -> Option<crate::domain::UserId> {
        if let Some(id) = self.near.id_for_number(number) {
            return Some(id);
        }
        self.store.user_id_by_number(number).await.ok().flatten()
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
                    (None, Some(Outcome::Proven(set))) => Next::Proven(set.contains(number)),
                    (None, Some(Outcome::Unproven(why))) => {
                        return Err(LookupError::NumberUnknown(why.clone()));
                    }
                    (None, Some(Outcome::Failed(e))) => {
                        return Err(LookupError::Upstream(e.clone()));
                    }
                }
            };
            match next {
                Next::Restart => return self.search_again(number).await,
                // Not in the list: nobody holds it.
                Next::Proven(Some(false)) => return Err(LookupError::NumberNotFound(number)),
                // In the list, but gone by before this lookup joined (or
                // beyond what the set keeps): the cache has its page, else
                // a listing of its own finds it.
                Next::Proven(_) => return self.after_proof(number).await,
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

    /// The listing saw `number`, but not while this lookup was waiting
    /// for it: the page it was on is in the cache, or, if the cache no
    /// longer holds it, a listing of its own finds it.
    async fn after_proof(
        self: &Arc<Self>,
        number: MemberNumber,
    ) -> Result<(Arc<Record>, CacheStatus), LookupError> {
        if let Some((record, _)) = self.cached_by_number(number).await? {
            return Ok((record, CacheStatus::Miss));
        }
        self.search_again(number).await
    }

    /// A fresh listing for `number`, joined or started by this lookup.
    async fn search_again(
        self: &Arc<Self>,
        number: MemberNumber,
    ) -> Result<(Arc<Record>, CacheStatus), LookupError> {
        Box::pin(self.search(number)).await
    }

    /// Reads the member list page by page, caching each page, until every
    /// wanted number was found or the list ended.
    async fn run_listing(self: Arc<Self>, tx: watch::Sender<Progress>) {
        let mut walk = MemberWalk::new(self.upstream.as_ref(), Priority::Interactive);
        let mut seen = NumberSet::default();
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
                    } else {
                        Outcome::Proven(Arc::new(std::mem::take(&mut seen)))
                    };
                }
                Err(e) if e.is_listing_refused() => {
                    self.note_listing_refused(&e);
                    break Outcome::Failed(e);
                }
                Err(e) => break Outcome::Failed(e),
            };
            self.numbering.observe(&page);
            page.iter()
                .filter_map(|m| m.number)
                .for_each(|n| seen.insert(n));
            self.cache_listed(&page).await;
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
        if let Outcome::Proven(set) = &outcome {
            state.proof = Some((Instant::now(), Arc::clone(set)));
        }
        state.running = None;
        tx.send_modify(|p| p.outcome = Some(outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u64) -> MemberNumber {
        MemberNumber::new(v).unwrap()
    }

    #[test]
    fn the_number_set_tells_seen_from_unseen_and_admits_what_it_cannot_keep() {
        let mut set = NumberSet::default();
        for v in [1, 63, 64, 177, 100_000] {
            set.insert(n(v));
        }
        for v in [1, 63, 64, 177, 100_000] {
            assert_eq!(set.contains(n(v)), Some(true), "{v}");
        }
        for v in [2, 65, 176, 99_999, 1_000_000] {
            assert_eq!(set.contains(n(v)), Some(false), "{v}");
        }
        assert_eq!(set.contains(n(NumberSet::LIMIT)), Some(false));
        set.insert(n(NumberSet::LIMIT + 5));
        assert_eq!(
            set.contains(n(NumberSet::LIMIT + 9)),
            None,
            "beyond the limit: unknown"
        );
        assert!(
            set.bits.len() * 8 < 13_000,
            "100 000 numbers in about 12.5 KB"
        );
    }
}
