//! Redis restarted empty, or flushed, costs no refetch: the near caches hold
//! the members it lost, and write them back instead of fetching them again.
//!
//! - **Detecting the loss.** Once a second, when the invalidation listener
//!   reconnects, and whenever a lookup finds the store without a member this
//!   process holds, the store's
//!   [`DataIdentity`] is compared with the last one seen: a new `run_id`
//!   means the server restarted; the store's id set reading empty after
//!   holding members means it was flushed. A cache clear empties the set
//!   too, so a set that empties while a clear was heard (ours, or another
//!   replica's announced on the events channel, both counted by
//!   `NearCache::clears`) is not a loss, and an emptying only counts once
//!   it has lasted [`CONFIRM_EMPTY`] with no clear heard — longer than a
//!   clear takes to announce itself — and while the invalidation listener
//!   was subscribed all along (a listener that is away could miss the
//!   announcement; until it is back, an emptying stays a suspicion). On a
//!   Redis Cluster there is no one run id (each node has its own; a
//!   failover changes them), so only the set is watched there; the embedded
//!   store has nothing to watch.
//! - **Writing back.** On a loss every member the near cache holds (within
//!   its store lifetime) is queued on the write-back queue
//!   (`write_back.rs`), whose flusher writes it within a fraction of a second
//!   and never over a newer record another replica wrote meanwhile. The
//!   record keeps its `updated_at`, so the soft TTL still refreshes it on
//!   time.
//! - **The gap.** For [`GAP`] after a loss — and while a loss is suspected
//!   but not confirmed, or the store cannot be asked — a lookup that finds
//!   the store without a member held in memory is answered from memory (and
//!   the member queued again) instead of waiting on the upstream budget.
//!   Outside the gap, a member the store does not have is a miss as always:
//!   an absence there means it expired or was cleared.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::MemberCache;
use super::near::Record;
use crate::domain::UserId;
use crate::store::DataIdentity;

/// How often the store's identity is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long the id set must read empty, with no clear heard, to count as a
/// flush.
pub const CONFIRM_EMPTY: Duration = Duration::from_secs(1);

/// How long after a loss store absences of members held in memory are
/// answered from memory.
pub const GAP: Duration = Duration::from_secs(30);

/// A verdict a lookup may reuse instead of asking the store again.
const VERDICT_REUSE: Duration = Duration::from_millis(200);

/// What a check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The store holds what it held.
    Kept,
    /// The store lost its data (restarted empty, flushed).
    Lost,
    /// Not known yet: the set reads empty but not for long enough, or the
    /// store did not answer.
    Suspect,
    /// The store cannot tell (the embedded store).
    Unsupported,
}

/// What the watch has seen of the store.
#[derive(Debug, Default)]
pub struct StoreWatch {
    seen: Mutex<Seen>,
    /// One check at a time; lookups waiting on a verdict share it.
    turn: tokio::sync::Mutex<()>,
    /// Unix ms (the cache's clock) until which absences are answered from
    /// memory.
    gap_until_ms: AtomicI64,
    /// Losses detected since start.
    losses: AtomicU64,
    /// Members queued for write-back by those losses.
    rescued: AtomicU64,
}

#[derive(Debug, Default)]
struct Seen {
    run_id: Option<String>,
    /// The id set held members at the last check that was not an emptying.
    had_members: bool,
    /// Since when the set reads empty with no clear heard.
    emptied_since: Option<Instant>,
    /// `NearCache::clears` at the last check.
    clears: u64,
    /// The last verdict and when it was reached.
    last: Option<(Instant, Verdict)>,
}

impl StoreWatch {
    /// Losses detected since start.
    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    /// Members queued for write-back after losses.
    pub fn rescued(&self) -> u64 {
        self.rescued.load(Ordering::Relaxed)
    }

    /// Compares `identity` (read now; `clears` is the near cache's count at
    /// that moment, `listening` whether clears can be heard) with what was
    /// seen before.
    fn judge(&self, identity: DataIdentity, clears: u64, listening: bool) -> Verdict {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let cleared = clears != seen.clears;
        seen.clears = clears;
        let restarted = matches!(
            (&seen.run_id, &identity.run_id),
            (Some(before), Some(now)) if before != now
        );
        if identity.run_id.is_some() {
            seen.run_id = identity.run_id;
        }
        let mut verdict = if restarted {
            Verdict::Lost
        } else {
            Verdict::Kept
        };
        if cleared || identity.members > 0 {
            seen.emptied_since = None;
            seen.had_members = identity.members > 0;
        } else if seen.had_members && !listening {
            seen.emptied_since = None;
            if verdict == Verdict::Kept {
                verdict = Verdict::Suspect;
            }
        } else if seen.had_members {
            let since = *seen.emptied_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= CONFIRM_EMPTY {
                verdict = Verdict::Lost;
            } else if verdict == Verdict::Kept {
                verdict = Verdict::Suspect;
            }
        }
        if verdict == Verdict::Lost {
            // What the write-back brings back starts the next comparison.
            seen.had_members = false;
            seen.emptied_since = None;
        }
        seen.last = Some((Instant::now(), verdict));
        verdict
    }

    /// The last verdict, if reached within `within`.
    fn recent(&self, within: Duration) -> Option<Verdict> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.last
            .filter(|(at, _)| at.elapsed() < within)
            .map(|(_, v)| v)
    }

    fn in_gap(&self, now_ms: i64) -> bool {
        now_ms < self.gap_until_ms.load(Ordering::SeqCst)
    }

    /// The cache was cleared here: nothing held before is worth keeping.
    pub fn cleared(&self) {
        self.gap_until_ms.store(0, Ordering::SeqCst);
    }
}

impl MemberCache {
    /// Checks the store once; on a loss, queues every member held in memory
    /// for write-back and opens the gap.
    pub async fn check_store(&self) -> Verdict {
        let _turn = self.store_watch.turn.lock().await;
        self.check_store_now().await
    }

    async fn check_store_now(&self) -> Verdict {
        let verdict = match self.store.data_identity().await {
            Ok(None) => return Verdict::Unsupported,
            Ok(Some(identity)) => {
                let listening = self.listener.get().is_none_or(|l| l.is_subscribed());
                self.store_watch
                    .judge(identity, self.near.clears(), listening)
            }
            Err(_) => Verdict::Suspect,
        };
        if verdict == Verdict::Lost {
            self.rescue_near_cache();
        }
        verdict
    }

    /// Queues every member the near cache holds for write-back and opens
    /// the gap.
    fn rescue_near_cache(&self) {
        let watch = &self.store_watch;
        let now = self.clock.now_ms();
        watch.gap_until_ms.store(
            now.saturating_add(i64::try_from(GAP.as_millis()).unwrap_or(i64::MAX)),
            Ordering::SeqCst,
        );
        watch.losses.fetch_add(1, Ordering::Relaxed);
        let held = self.near.alive();
        let mut queued = 0u64;
        for record in &held {
            queued += u64::from(self.write_back.push(record.member.clone()));
        }
        watch.rescued.fetch_add(queued, Ordering::Relaxed);
        tracing::warn!(
            held = held.len(),
            queued,
            "the store lost its data (restarted empty or flushed): writing back the members held in memory instead of fetching them again"
        );
    }

    /// A member the store just said it does not have: the near cache's copy
    /// when the store is known (or suspected) to have lost it, queued for
    /// write-back; `None` (a miss) when the store's answer stands.
    pub(crate) async fn held_through_loss(&self, id: UserId) -> Option<Arc<Record>> {
        let record = self.near.get_stale(id)?;
        let watch = &self.store_watch;
        if !watch.in_gap(self.clock.now_ms()) {
            let _turn = watch.turn.lock().await;
            let verdict = match watch.recent(VERDICT_REUSE) {
                Some(v) => v,
                None => self.check_store_now().await,
            };
            if matches!(verdict, Verdict::Kept | Verdict::Unsupported)
                && !watch.in_gap(self.clock.now_ms())
            {
                return None;
            }
        }
        // A suspected loss is answered from memory but not written back yet:
        // it may still turn out to be another replica's clear.
        if watch.in_gap(self.clock.now_ms()) {
            self.write_back.push(record.member.clone());
        }
        Some(record)
    }

    /// Checks the store every [`CHECK_EVERY`], and when the invalidation
    /// listener reconnects, until the process ends (or at once learns the
    /// store cannot tell).
    pub fn spawn_store_watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let listener = self.listener.get().cloned();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                match &listener {
                    Some(l) => tokio::select! {
                        _ = tick.tick() => {}
                        () = l.subscribed_again() => {}
                    },
                    None => {
                        tick.tick().await;
                    }
                }
                let Some(cache) = weak.upgrade() else { return };
                if !cache.enabled || !cache.near.is_enabled() {
                    return;
                }
                if cache.check_store().await == Verdict::Unsupported {
                    return;
                }
            }
        });
    }

    /// Lets the watch know whether other replicas' clears can be heard.
    pub fn watch_invalidations(&self, listener: Arc<super::invalidation::Listener>) {
        let _ = self.listener.set(listener);
    }

    /// The watch, for `/readyz` and tests.
    pub fn store_watch(&self) -> &StoreWatch {
        &self.store_watch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(run_id: &str, members: u64) -> DataIdentity {
        DataIdentity {
            run_id: Some(run_id.into()),
            members,
        }
    }

    #[test]
    fn a_new_run_id_is_a_loss_and_the_same_one_is_not() {
        let watch = StoreWatch::default();
        assert_eq!(watch.judge(id("a", 150), 0, true), Verdict::Kept);
        assert_eq!(watch.judge(id("a", 150), 0, true), Verdict::Kept);
        assert_eq!(watch.judge(id("b", 0), 0, true), Verdict::Lost);
        assert_eq!(
            watch.judge(id("b", 0), 0, true),
            Verdict::Kept,
            "reported once"
        );
    }

    #[test]
    fn an_emptied_set_is_a_loss_only_once_it_stays_empty_with_no_clear_heard() {
        let watch = StoreWatch::default();
        assert_eq!(watch.judge(id("a", 10), 0, true), Verdict::Kept);
        assert_eq!(watch.judge(id("a", 0), 0, true), Verdict::Suspect);
        std::thread::sleep(CONFIRM_EMPTY);
        assert_eq!(watch.judge(id("a", 0), 0, true), Verdict::Lost);

        // A clear empties the set too: not a loss.
        let watch = StoreWatch::default();
        assert_eq!(watch.judge(id("a", 10), 0, true), Verdict::Kept);
        assert_eq!(watch.judge(id("a", 0), 1, true), Verdict::Kept);
        std::thread::sleep(CONFIRM_EMPTY);
        assert_eq!(watch.judge(id("a", 0), 1, true), Verdict::Kept);

        // Heard while the emptying was being confirmed: not a loss either.
        let watch = StoreWatch::default();
        assert_eq!(watch.judge(id("a", 10), 0, true), Verdict::Kept);
        assert_eq!(watch.judge(id("a", 0), 0, true), Verdict::Suspect);
        std::thread::sleep(CONFIRM_EMPTY);
        assert_eq!(watch.judge(id("a", 0), 1, true), Verdict::Kept);
    }

    #[test]
    fn an_emptying_while_clears_cannot_be_heard_stays_a_suspicion() {
        let watch = StoreWatch::default();
        assert_eq!(watch.judge(id("a", 10), 0, true), Verdict::Kept);
        assert_eq!(watch.judge(id("a", 0), 0, false), Verdict::Suspect);
        std::thread::sleep(CONFIRM_EMPTY);
        assert_eq!(watch.judge(id("a", 0), 0, false), Verdict::Suspect);
        assert_eq!(
            watch.judge(id("a", 0), 0, true),
            Verdict::Suspect,
            "starts over"
        );
        assert_eq!(
            watch.judge(id("b", 0), 0, false),
            Verdict::Lost,
            "a restart is one"
        );
    }

    #[test]
    fn without_a_run_id_a_cluster_is_judged_by_its_set_alone() {
        let watch = StoreWatch::default();
        let cluster = |members| DataIdentity {
            run_id: None,
            members,
        };
        assert_eq!(watch.judge(cluster(5), 0, true), Verdict::Kept);
        assert_eq!(watch.judge(cluster(7), 0, true), Verdict::Kept);
        assert_eq!(watch.judge(cluster(0), 0, true), Verdict::Suspect);
    }
}
