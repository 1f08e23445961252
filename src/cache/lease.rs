//! Fetching a cold member once across replicas: a short lease in the store
//! decides which replica calls the upstream.
//!
//! Decisions:
//! - **A lease per cold member.** The fetch task first takes a short lease
//!   in the store (`zsxq:lease:user:{id}`, `SET NX PX`, in the spirit of
//!   memcache leases); the other replicas poll the store until the winner's
//!   record lands, and take the lease themselves if it lapses. A dead holder
//!   holds the others up at most [`LEASE_TTL`]; a live one renews it while its
//!   call waits for a budget slot.
//! - **"Not a member" travels with the lease.** The holder ends its lease
//!   with the upstream's refusal, so the waiters learn it without a call.
//! - **Store trouble never blocks a fetch.** Without an answer from the
//!   store a replica fetches by itself (the in-process singleflight still
//!   holds), as if there were no fleet. A lease call that merely timed out
//!   is asked again first, [`LEASE_TIMEOUT_RETRIES`] times, polling for the
//!   record in between: the store is busy rather than gone, the call may
//!   have landed, and another replica may hold the lease and be about to
//!   write (under a loaded test run each such timeout cost a second upstream
//!   call for the member).

use std::sync::Arc;
use std::time::Duration;

use super::MemberCache;
use super::near::{NearCache, Record};
use super::write_back::{WriteBackQueue, store_or_queue};
use crate::clock::Clock;
use crate::domain::{CachedMember, UserId};
use crate::store::{LeaseEnd, LeaseState, Store, StoreError};
use crate::upstream::budget;
use crate::upstream::{Priority, Upstream, UpstreamError};

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
/// Lease calls that may time out, one after the other, before this replica
/// fetches by itself. A timed-out call that landed made us the holder, and
/// asking again then renews it and answers granted.
const LEASE_TIMEOUT_RETRIES: u32 = 2;

impl MemberCache {
    /// The fetch of one cold member, ready to run in its own task.
    pub(super) fn fetch(&self, id: UserId) -> Fetch {
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
/// disconnect neither cancel nor waste it. Its fields are the cache's,
/// cloned: the task may outlive every caller.
pub(super) struct Fetch {
    /// The member fetched.
    id: UserId,
    upstream: Arc<dyn Upstream>,
    /// Arbitrates the lease and receives the record.
    store: Arc<dyn Store>,
    /// Receives the record too, so this process answers it at once.
    near: Arc<NearCache>,
    /// Takes the record when the store cannot.
    queue: Arc<WriteBackQueue>,
    /// Stamps `cached_at` and `updated_at`.
    clock: Arc<dyn Clock>,
    /// Where a "not a member" answer is remembered.
    negative: moka::sync::Cache<UserId, UpstreamError>,
    /// `CACHE_TTL` of the record written.
    ttl: Duration,
    /// `CACHE_ENABLED`: when false there is no lease and nothing is kept.
    enabled: bool,
    /// This process's name in leases.
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
    pub(super) async fn run(self) -> Result<Arc<Record>, UpstreamError> {
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

    /// Takes the fleet lease on this member, or waits for whoever holds it.
    /// Store trouble never blocks a fetch: without an answer from the store
    /// this replica fetches by itself (its in-process singleflight still
    /// holds).
    async fn wait_for_lease(&self) -> Waited {
        let started = tokio::time::Instant::now();
        let mut pause = LEASE_POLL_FIRST;
        let mut timeouts = 0;
        loop {
            match self.store.try_lease(self.id, &self.owner, LEASE_TTL).await {
                Err(StoreError::Timeout(_)) if timeouts < LEASE_TIMEOUT_RETRIES => timeouts += 1,
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
