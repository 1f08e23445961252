//! The near cache: recently served members in process memory, in front of
//! the store.
//!
//! Three jobs:
//! - **Speed.** A member served in the last `NEAR_CACHE_TTL` seconds is
//!   answered without a store round trip. Each entry keeps the member's JSON
//!   already serialised ([`Record::json`]), so a hot lookup copies bytes into
//!   the envelope instead of serialising eleven fields on every request.
//! - **Outages.** When the store fails (Redis down or hung, the embedded file
//!   erroring), a member this process has seen is still answered from here
//!   for as long as its store record would have lived, so cached members keep
//!   being served while the store is away.
//! - **Agreement across replicas.** With Redis, `invalidation.rs` calls
//!   [`NearCache::invalidate`] / [`NearCache::clear`] when another replica
//!   changed a record or cleared the cache, so staleness is bounded by the
//!   pub/sub delay rather than by `NEAR_CACHE_TTL`.
//!
//! After an invalidation listener reconnects (messages may have been missed)
//! every entry is *distrusted* ([`NearCache::distrust_all`]) rather than
//! dropped: [`NearCache::get`] no longer answers it, so the next lookup asks
//! the store, which has any newer record; but the entry stays for
//! [`NearCache::get_stale`] and for the rescue of members a Redis restarted
//! empty lost (`store_watch.rs`), which dropping would throw away.
//!
//! Each entry therefore has two horizons: *fresh until* (`NEAR_CACHE_TTL`,
//! after which [`NearCache::get`] ignores it and the store is asked again) and
//! *gone at* the record's own store expiry (`updated_at + CACHE_TTL`, after
//! which moka evicts it). An entry can never outlive the record the store
//! holds, so the near cache never answers what the store would not.
//!
//! Bounded by **bytes** (`NEAR_CACHE_MB`): a weigher charges each entry its
//! JSON, its strings and a fixed overhead, so a group with long introductions
//! cannot grow the process past its budget the way an entry count could.
//! moka's sync cache is used: every call is a short, non-blocking map
//! operation, never held across an await.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache;

use crate::clock::Clock;
use crate::domain::{CachedMember, MemberNumber, UserId};

/// A member as the near cache hands it out: the record and its JSON
/// (`CachedMember`'s serde form, an object), serialised once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub member: CachedMember,
    /// `serde_json::to_vec(&member)`: a JSON object, so it ends with `}`.
    pub json: Bytes,
}

impl Record {
    /// Serialises `member` once. Serialising plain strings and integers
    /// cannot fail; if it ever did, `json` is empty and readers fall back to
    /// serialising `member` themselves.
    pub fn new(member: CachedMember) -> Arc<Self> {
        // `to_vec` grows its buffer by doubling: kept as it is, a record's
        // JSON held up to twice its length. The boxed slice is exact.
        let json = serde_json::to_vec(&member)
            .map(|v| Bytes::from(v.into_boxed_slice()))
            .unwrap_or_default();
        Arc::new(Self { member, json })
    }

    /// Bytes this record costs in memory, roughly: its JSON, its strings
    /// and the fixed parts (struct, `Arc`, moka's bookkeeping).
    fn weight(&self) -> u32 {
        let m = &self.member.member;
        let strings = m.name.len()
            + m.unique_id.len()
            + m.avatar_url.len()
            + m.join_time.len()
            + m.status.len()
            + m.expired_time.len()
            + m.introduction.len();
        u32::try_from(self.json.len() + strings + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
    }
}

/// Fixed bytes charged per entry besides its strings: the record struct,
/// the `Arc`, the allocator's share of each string, moka's per-entry
/// bookkeeping (entry, deques, timer wheel) and the number index's entry.
/// Measured, not added up: at 400 the default 16 MB held 17 300 members
/// and the service's RSS grew by 34 MB filling it; at 1 100, 10 000
/// members and 21 MB; at 1 500, 8 100 members and 17 MB, on the
/// simulator's members (`zsxq-bench memory` looks members up until the
/// cache is full and prints both).
const ENTRY_OVERHEAD: usize = 1_500;

/// One cached member and when to stop trusting it. Both horizons are read
/// from the injected clock (as the stores do), so a test can jump past them;
/// `lives_for` is the same horizon in moka's real time, so memory is
/// reclaimed without anyone reading the entry.
#[derive(Clone)]
struct Entry {
    record: Arc<Record>,
    /// Unix ms after which `get` ignores the entry; `get_stale` still sees it.
    fresh_until_ms: i64,
    /// Unix ms at which the store record expires; nothing sees it after.
    expires_at_ms: i64,
    /// Time left until `expires_at_ms`, measured at insert.
    lives_for: Duration,
    /// [`NearCache::distrust_all`]'s generation at insert: `get` only
    /// answers entries of the current one.
    generation: u64,
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Per-entry expiry: an entry lives exactly as long as its store record.
struct UntilStoreExpiry;

impl Expiry<UserId, Entry> for UntilStoreExpiry {
    fn expire_after_create(&self, _: &UserId, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.lives_for)
    }

    fn expire_after_update(
        &self,
        _: &UserId,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.lives_for)
    }
}

/// Recently served members, by id, with a number → id index.
pub struct NearCache {
    /// `None` when turned off (`NEAR_CACHE_MB=0` or `CACHE_ENABLED=false`):
    /// every call is then a no-op and lookups behave as without it.
    members: Option<Cache<UserId, Entry>>,
    /// Number → id, so lookups by number are served during an outage too.
    /// Only trusted when the member entry still carries that number.
    numbers: Option<Cache<MemberNumber, UserId>>,
    /// `NEAR_CACHE_TTL`.
    fresh_for: Duration,
    /// `CACHE_TTL`: a record's store lifetime, counted from `updated_at`.
    store_ttl: Duration,
    /// The store's clock, to turn `updated_at` into time left.
    clock: Arc<dyn Clock>,
    /// Bumped by [`NearCache::distrust_all`].
    generation: AtomicU64,
    /// Times [`NearCache::clear`] ran: a cache clear, here or announced by
    /// another replica (the store watch tells a clear from a loss by it).
    clears: AtomicU64,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("entries", &self.len())
            .field("fresh_for", &self.fresh_for)
            .finish_non_exhaustive()
    }
}

impl NearCache {
    /// A near cache of at most `max_bytes` (0 turns it off), each entry
    /// trusted for `fresh_for` (capped at `store_ttl`).
    pub fn new(
        max_bytes: u64,
        fresh_for: Duration,
        store_ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (members, numbers) = if max_bytes == 0 {
            (None, None)
        } else {
            (
                Some(
                    Cache::builder()
                        .max_capacity(max_bytes)
                        .weigher(|_: &UserId, e: &Entry| e.record.weight())
                        .expire_after(UntilStoreExpiry)
                        .build(),
                ),
                Some(
                    // One number per member held, charged in
                    // ENTRY_OVERHEAD: no more entries than the member
                    // cache can hold, or numbers of evicted members
                    // outnumber the members (it held 65 536 at 16 MB).
                    Cache::builder()
                        .max_capacity((max_bytes / ENTRY_OVERHEAD as u64).max(16))
                        .time_to_live(store_ttl.max(Duration::from_millis(1)))
                        .build(),
                ),
            )
        };
        Self {
            members,
            numbers,
            fresh_for: fresh_for.min(store_ttl),
            store_ttl,
            clock,
            generation: AtomicU64::new(0),
            clears: AtomicU64::new(0),
        }
    }

    /// A near cache that holds nothing.
    pub fn disabled(clock: Arc<dyn Clock>) -> Self {
        Self::new(0, Duration::ZERO, Duration::ZERO, clock)
    }

    /// The member if it was cached here within `NEAR_CACHE_TTL`. The hot
    /// path: a map read and an `Arc` clone, nothing allocated.
    pub fn get(&self, id: UserId) -> Option<Arc<Record>> {
        let entry = self.members.as_ref()?.get(&id)?;
        let now = self.clock.now_ms();
        (now < entry.fresh_until_ms
            && now < entry.expires_at_ms
            && entry.generation == self.generation.load(Ordering::Relaxed))
        .then_some(entry.record)
    }

    /// The member if this process has it at all and its store record would
    /// still be alive: the answer while the store is unavailable.
    pub fn get_stale(&self, id: UserId) -> Option<Arc<Record>> {
        let entry = self.members.as_ref()?.get(&id)?;
        (self.clock.now_ms() < entry.expires_at_ms).then_some(entry.record)
    }

    /// The id of the member with `number`, if one is held here (fresh or not)
    /// and still has that number.
    pub fn id_for_number(&self, number: MemberNumber) -> Option<UserId> {
        let id = self.numbers.as_ref()?.get(&number)?;
        let entry = self.members.as_ref()?.get(&id)?;
        (entry.record.member.member.number == Some(number)
            && self.clock.now_ms() < entry.expires_at_ms)
            .then_some(id)
    }

    /// Remembers a member just read from the store or fetched upstream. A
    /// record whose store lifetime is already over is not kept.
    pub fn insert(&self, member: &CachedMember) {
        if self.is_enabled() {
            self.insert_record(Record::new(member.clone()));
        }
    }

    /// [`NearCache::insert`] only for a member held here already. Bulk work
    /// (a sync, a warm-up, a member-list walk) replaces records nobody
    /// asked for: inserting them all filled the cache to its bound on every
    /// sync of a large group (about 30 MB of RSS at 100 000 members) with
    /// members no lookup had wanted, so bulk work only keeps the entries it
    /// replaced in step, and lookups decide what is held.
    pub fn refresh(&self, member: &CachedMember) {
        let held = self
            .members
            .as_ref()
            .is_some_and(|m| m.contains_key(&member.member.user_id));
        if held {
            self.insert(member);
        }
    }

    /// [`NearCache::insert`] of a record already serialised.
    pub fn insert_record(&self, record: Arc<Record>) {
        let (Some(members), Some(numbers)) = (&self.members, &self.numbers) else {
            return;
        };
        let member = &record.member;
        let now = self.clock.now_ms();
        let expires_at_ms = member.updated_at.saturating_add(millis(self.store_ttl));
        let left_ms = expires_at_ms.saturating_sub(now);
        let Ok(left_ms) = u64::try_from(left_ms) else {
            return;
        };
        if left_ms == 0 {
            return;
        }
        let id = member.member.user_id;
        let number = member.member.number;
        members.insert(
            id,
            Entry {
                record,
                fresh_until_ms: now.saturating_add(millis(self.fresh_for)),
                expires_at_ms,
                lives_for: Duration::from_millis(left_ms),
                generation: self.generation.load(Ordering::Relaxed),
            },
        );
        if let Some(number) = number {
            numbers.insert(number, id);
        }
    }

    /// Forgets one member (its number entry is ignored from then on, since
    /// it is only trusted alongside the member entry).
    pub fn invalidate(&self, id: UserId) {
        if let Some(members) = &self.members {
            members.invalidate(&id);
        }
    }

    /// Stops answering every entry held now from [`NearCache::get`] (the
    /// store is asked next); [`NearCache::get_stale`] still sees them.
    pub fn distrust_all(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Every record held whose store lifetime is not over.
    pub fn alive(&self) -> Vec<Arc<Record>> {
        let Some(members) = &self.members else {
            return Vec::new();
        };
        let now = self.clock.now_ms();
        members
            .iter()
            .filter(|(_, e)| now < e.expires_at_ms)
            .map(|(_, e)| e.record)
            .collect()
    }

    /// How many times the cache was cleared since start.
    pub fn clears(&self) -> u64 {
        self.clears.load(Ordering::SeqCst)
    }

    /// Forgets everything (`DELETE /api/users/cache`).
    pub fn clear(&self) {
        self.clears.fetch_add(1, Ordering::SeqCst);
        if let Some(members) = &self.members {
            members.invalidate_all();
        }
        if let Some(numbers) = &self.numbers {
            numbers.invalidate_all();
        }
    }

    /// Members held now. moka counts lazily, so its pending maintenance
    /// runs first: read at scrape time, not on the hot path.
    pub fn len(&self) -> u64 {
        self.members.as_ref().map_or(0, |m| {
            m.run_pending_tasks();
            m.entry_count()
        })
    }

    /// Bytes the held entries are charged, against `NEAR_CACHE_MB`.
    pub fn weighed_bytes(&self) -> u64 {
        self.members.as_ref().map_or(0, |m| {
            m.run_pending_tasks();
            m.weighted_size()
        })
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the near cache is on at all.
    pub fn is_enabled(&self) -> bool {
        self.members.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn member(id: u64, number: u64, updated_at: i64) -> CachedMember {
        CachedMember::for_test(id, number, updated_at)
    }

    fn near(fresh_for: Duration, clock: Arc<ManualClock>) -> NearCache {
        NearCache::new(1 << 20, fresh_for, Duration::from_secs(3600), clock)
    }

    fn got(r: Option<Arc<Record>>) -> Option<CachedMember> {
        r.map(|r| r.member.clone())
    }

    #[test]
    fn a_fresh_entry_is_served_by_id_and_by_number() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = near(Duration::from_secs(60), clock.clone());
        let m = member(454881884228, 177, clock.now_ms());
        cache.insert(&m);
        assert_eq!(got(cache.get(m.member.user_id)), Some(m.clone()));
        assert_eq!(
            cache.id_for_number(m.member.number.unwrap()),
            Some(m.member.user_id)
        );
        assert_eq!(cache.id_for_number(MemberNumber::new(178).unwrap()), None);
    }

    #[test]
    fn past_the_near_ttl_only_the_stale_read_sees_an_entry() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = near(Duration::from_secs(60), clock.clone());
        let m = member(1, 1, clock.now_ms());
        cache.insert(&m);
        clock.advance_ms(61_000);
        assert_eq!(got(cache.get(m.member.user_id)), None, "no longer fresh");
        assert_eq!(got(cache.get_stale(m.member.user_id)), Some(m.clone()));
        clock.advance_ms(3_600_000);
        assert_eq!(
            got(cache.get_stale(m.member.user_id)),
            None,
            "never past the store record's expiry"
        );
    }

    #[test]
    fn a_record_already_expired_in_the_store_is_not_kept() {
        let clock = Arc::new(ManualClock::new(10_000_000));
        let cache = near(Duration::from_secs(60), clock.clone());
        // Written two hours ago with a one-hour store TTL: gone from the store.
        let old = member(2, 2, clock.now_ms() - 7_200_000);
        cache.insert(&old);
        assert_eq!(got(cache.get_stale(old.member.user_id)), None);
    }

    #[test]
    fn a_changed_number_no_longer_resolves_to_the_member() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = near(Duration::from_secs(60), clock.clone());
        cache.insert(&member(3, 30, clock.now_ms()));
        cache.insert(&member(3, 31, clock.now_ms()));
        assert_eq!(cache.id_for_number(MemberNumber::new(30).unwrap()), None);
        assert_eq!(
            cache.id_for_number(MemberNumber::new(31).unwrap()),
            UserId::new(3)
        );
    }

    #[test]
    fn invalidate_and_clear_forget_members() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = near(Duration::from_secs(60), clock.clone());
        let (a, b) = (member(4, 4, clock.now_ms()), member(5, 5, clock.now_ms()));
        cache.insert(&a);
        cache.insert(&b);
        cache.invalidate(a.member.user_id);
        assert_eq!(got(cache.get_stale(a.member.user_id)), None);
        assert_eq!(cache.id_for_number(a.member.number.unwrap()), None);
        assert!(cache.get(b.member.user_id).is_some());
        cache.clear();
        assert_eq!(got(cache.get_stale(b.member.user_id)), None);
    }

    #[test]
    fn the_json_is_the_members_serde_form() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = near(Duration::from_secs(60), clock.clone());
        let m = member(7, 77, clock.now_ms());
        cache.insert(&m);
        let record = cache.get(m.member.user_id).unwrap();
        let back: CachedMember = serde_json::from_slice(&record.json).unwrap();
        assert_eq!(back, m);
        assert!(record.json.ends_with(b"}"));
    }

    #[test]
    fn the_byte_bound_evicts_members_beyond_it() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        // Room for a handful of entries of ~1 500 bytes each.
        let cache = NearCache::new(
            8_000,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            clock.clone(),
        );
        for id in 1..=200 {
            cache.insert(&member(id, id, clock.now_ms()));
        }
        if let Some(m) = &cache.members {
            m.run_pending_tasks();
            assert!(m.weighted_size() <= 8_000, "{}", m.weighted_size());
            assert!(m.entry_count() < 200);
        }
    }

    #[test]
    fn distrusted_entries_are_only_seen_stale_and_are_still_alive() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = near(Duration::from_secs(60), clock.clone());
        let (a, b) = (member(8, 8, clock.now_ms()), member(9, 9, clock.now_ms()));
        cache.insert(&a);
        cache.distrust_all();
        cache.insert(&b);
        assert_eq!(got(cache.get(a.member.user_id)), None, "asks the store");
        assert_eq!(got(cache.get_stale(a.member.user_id)), Some(a.clone()));
        assert!(cache.get(b.member.user_id).is_some(), "inserted after");
        let mut alive: Vec<u64> = cache
            .alive()
            .iter()
            .map(|r| r.member.member.user_id.get())
            .collect();
        alive.sort_unstable();
        assert_eq!(alive, vec![8, 9]);
        assert_eq!(cache.clears(), 0);
        cache.clear();
        assert_eq!((cache.clears(), cache.alive().len()), (1, 0));
    }

    #[test]
    fn refresh_replaces_a_held_member_and_adds_no_other() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = near(Duration::from_secs(60), clock.clone());
        let held = member(10, 10, clock.now_ms());
        cache.insert(&held);
        let newer = member(10, 11, clock.now_ms() + 1);
        cache.refresh(&newer);
        cache.refresh(&member(12, 12, clock.now_ms()));
        assert_eq!(got(cache.get(UserId::new(10).unwrap())), Some(newer));
        assert_eq!(got(cache.get_stale(UserId::new(12).unwrap())), None);
    }

    #[test]
    fn a_disabled_cache_holds_nothing() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = NearCache::disabled(clock.clone());
        cache.insert(&member(6, 6, clock.now_ms()));
        assert!(cache.get_stale(UserId::new(6).unwrap()).is_none());
        assert!(!cache.is_enabled());
        assert!(cache.is_empty());
    }
}
