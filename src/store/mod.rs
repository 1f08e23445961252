//! Where cached members live: Redis in production, an embedded redb file by
//! default. Both sit behind [`Store`] so the cache logic, the HTTP layer and
//! the tests cannot tell them apart — the same test suite runs on both.
//!
//! Contract every implementation keeps:
//! - a member record, its number index entry and its place in every index are
//!   written together and expire together (`ttl` from `CACHE_TTL`);
//! - expired members vanish from lookups, counts and pages alike — no id set
//!   or index outlives the records it lists;
//! - `clear` removes every key the store made, number index and cached
//!   rankings included;
//! - no operation scans the whole keyspace (`KEYS` is never used);
//! - refund marks and their audit log (`marks.rs`) are records, not cache:
//!   no TTL, `clear` leaves them, and a batch of them is written atomically.

pub mod embedded;
pub mod guard;
pub mod keys;
pub mod marks;
pub mod metrics;
pub mod redis;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{CachedMember, CheckinId, MemberNumber, RankingType, UserId};
use marks::{MarkChange, Persistence, RefundLogEntry, RefundMark};

/// Store failures. The cache treats every one of them as "store unavailable"
/// and degrades to the upstream, so the variants only serve diagnosis.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("embedded store: {0}")]
    Embedded(String),
    #[error("store timed out after {0:?}")]
    Timeout(Duration),
    #[error("store unavailable (circuit open)")]
    Unavailable,
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The store cannot run on this server at all (a Redis too old).
    #[error("unsupported store: {0}")]
    Unsupported(String),
}

/// Names of the persisted counters: the fields of `zsxq:stats:cache`, used
/// by both stores so their stats read alike.
const STAT_TOTAL_REQUESTS: &str = "total_requests";
const STAT_CACHE_HITS: &str = "cache_hits";
const STAT_CACHE_MISSES: &str = "cache_misses";
const STAT_API_CALLS: &str = "api_calls";
const STAT_LAST_SYNC_TIME: &str = "last_sync_time";

/// Order of `GET /api/users` pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Number,
    JoinTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

/// What [`Store::page`] reads: the members in `sort` and `order`, skipping
/// `offset` rows and returning at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub sort: SortBy,
    pub order: SortOrder,
    /// Rows skipped before the page starts.
    pub offset: u64,
    /// Most rows returned; 0 asks for the total alone.
    pub limit: u64,
}

/// One page of cached members plus the total they were cut from.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub members: Vec<CachedMember>,
    pub total: u64,
}

/// What `clear` removed, as `DELETE /api/users/cache` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClearReport {
    pub deleted_keys: u64,
    pub deleted_users: u64,
}

/// The persisted counters of `zsxq:stats:cache`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatCounters {
    pub total_requests: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub api_calls: u64,
}

impl StatCounters {
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    pub fn add(&mut self, other: &StatCounters) {
        self.total_requests += other.total_requests;
        self.cache_hits += other.cache_hits;
        self.cache_misses += other.cache_misses;
        self.api_calls += other.api_calls;
    }

    /// Each counter with the name it is stored under, for a store to write.
    fn fields(&self) -> [(&'static str, u64); 4] {
        [
            (STAT_TOTAL_REQUESTS, self.total_requests),
            (STAT_CACHE_HITS, self.cache_hits),
            (STAT_CACHE_MISSES, self.cache_misses),
            (STAT_API_CALLS, self.api_calls),
        ]
    }

    /// The counters a store reads back, one stored name at a time.
    fn read_fields(
        mut counter: impl FnMut(&'static str) -> Result<u64, StoreError>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            total_requests: counter(STAT_TOTAL_REQUESTS)?,
            cache_hits: counter(STAT_CACHE_HITS)?,
            cache_misses: counter(STAT_CACHE_MISSES)?,
            api_calls: counter(STAT_API_CALLS)?,
        })
    }
}

/// Persisted statistics: counters plus the last successful sync (unix ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredStats {
    pub counters: StatCounters,
    pub last_sync_time: Option<i64>,
}

/// What [`Store::try_lease`] found: the fleet-wide right to fetch one cold
/// member from the upstream (one upstream call per cold member,
/// however many replicas ask at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// The caller holds the lease (newly, or renewed): fetch, write, then
    /// [`Store::end_lease`].
    Granted,
    /// Another process holds it: wait for its record to land in the store.
    Taken,
    /// The last holder learned that the user is not a member; the answer is
    /// shared for a short while so the others need not ask again.
    NotMember { code: i64, message: String },
}

/// How a lease holder's fetch ended, for [`Store::end_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEnd {
    /// Record written (or the fetch failed in a way others should retry):
    /// free the lease.
    Done,
    /// The upstream said "not a member": keep that answer under the lease
    /// key for [`NOT_MEMBER_LEASE_TTL`].
    NotMember { code: i64, message: String },
}

/// What tells a store's data apart from the data of a store that lost it:
/// [`Store::data_identity`], compared over time by the cache
/// (`cache/store_watch.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataIdentity {
    /// The server's `run_id` (Redis `INFO server`): a new one means the
    /// server restarted. `None` where there is no one id (a Redis Cluster:
    /// each node has its own and a failover changes which ones serve).
    pub run_id: Option<String>,
    /// Members the store lists (on Redis: the number index, no pruning).
    pub members: u64,
}

/// How long a shared "not a member" answer stays under a lease key.
pub const NOT_MEMBER_LEASE_TTL: Duration = Duration::from_secs(30);

/// Which cached ranking: a camp's, of one type (each type is kept apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankingKey {
    pub checkin: CheckinId,
    pub kind: RankingType,
}

/// A ranking to cache: its key, its bytes (opaque to the store: the refund
/// module owns their format) and how long it lives.
#[derive(Debug, Clone, Copy)]
pub struct StoredRanking<'a> {
    pub key: RankingKey,
    pub bytes: &'a [u8],
    pub ttl: Duration,
}

/// The storage contract. All methods are batched where the caller has several
/// members at hand, so a refund list of 167 people is one round trip.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/readyz` ("redis", "redis-cluster",
    /// "embedded").
    fn kind(&self) -> &'static str;

    /// Looks up several members at once; `None` where not cached or expired.
    /// The result has the same length and order as `ids`.
    async fn get_members(&self, ids: &[UserId]) -> Result<Vec<Option<CachedMember>>, StoreError>;

    /// Resolves a member number through the number index.
    async fn user_id_by_number(&self, number: MemberNumber) -> Result<Option<UserId>, StoreError>;

    /// Writes members with their number index and sorted-index entries, all
    /// expiring after `ttl`. A member whose number changed loses its old index
    /// entry.
    async fn put_members(&self, members: &[CachedMember], ttl: Duration) -> Result<(), StoreError>;

    /// Which of `ids` are currently cached (for sync's `force: false`).
    async fn cached_ids(&self, ids: &[UserId]) -> Result<Vec<bool>, StoreError>;

    /// One page of members, as [`PageRequest`] describes it, plus the total.
    async fn page(&self, request: PageRequest) -> Result<Page, StoreError>;

    /// The `limit` members closest to expiry (the oldest writes), for the
    /// scheduled warm-up that refreshes them before they lapse.
    async fn oldest(&self, limit: u64) -> Result<Vec<UserId>, StoreError>;

    /// How many members are cached right now (expired ones excluded).
    async fn count(&self) -> Result<u64, StoreError>;

    /// Removes every member, index and counter the store made.
    async fn clear(&self) -> Result<ClearReport, StoreError>;

    /// Adds to the persisted counters.
    async fn add_stats(&self, delta: &StatCounters) -> Result<(), StoreError>;

    /// A camp's cached ranking of one type (`key`), as [`Store::put_ranking`] was
    /// given it; `None` when absent or expired. Each type is kept apart: a
    /// ranking put as one type is never returned for the other. The bytes
    /// are opaque to the store: the refund module owns their format.
    async fn get_ranking(&self, key: RankingKey) -> Result<Option<Vec<u8>>, StoreError>;

    /// Caches a camp's ranking of one type for its `ttl`, replacing any
    /// earlier one of that type. `clear` removes it with everything else.
    async fn put_ranking(&self, ranking: &StoredRanking<'_>) -> Result<(), StoreError>;

    /// Records the time of the last completed sync (unix ms).
    async fn set_last_sync_time(&self, ms: i64) -> Result<(), StoreError>;

    async fn stats(&self) -> Result<StoredStats, StoreError>;

    /// Memory (Redis `used_memory_human`) or file size used, human readable.
    async fn memory_usage(&self) -> Result<String, StoreError>;

    /// Cheap reachability check.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Takes (or, for the same `owner`, renews) the lease on fetching
    /// member `id` for `ttl`. Single-process stores always grant it: the
    /// cache's in-process singleflight already makes one call per member.
    async fn try_lease(
        &self,
        id: UserId,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseState, StoreError>;

    /// Ends a lease `owner` holds (a lease someone else took over after it
    /// lapsed is left alone).
    async fn end_lease(&self, id: UserId, owner: &str, end: LeaseEnd) -> Result<(), StoreError>;

    /// What identifies the data held now, for stores that can lose it under
    /// a running process (Redis restarted empty or flushed); `None` for the
    /// embedded store, whose file only this process changes.
    async fn data_identity(&self) -> Result<Option<DataIdentity>, StoreError> {
        Ok(None)
    }
    /// The installation's device id (the upstream's `X-Aduid`): the stored
    /// one, or `candidate` if none was stored yet, which is then stored for
    /// good — atomically, so replicas starting together agree on one id.
    /// Never removed by `clear`.
    async fn device_id(&self, candidate: &str) -> Result<String, StoreError>;

    /// The name this store's writes carry on the change channel
    /// (`zsxq:events`), so the process can ignore its own messages; `None`
    /// for stores that publish nothing (the embedded one).
    fn events_origin(&self) -> Option<String>;

    /// Every mark of a camp's refund list, by participant.
    async fn refund_marks(
        &self,
        checkin: CheckinId,
    ) -> Result<HashMap<UserId, RefundMark>, StoreError>;

    /// Writes `changes` (at most one per user) and appends their log
    /// entries, all or nothing, if every user's stored mark still equals its
    /// `expected`; answers `false`, having written nothing, if one does not.
    async fn apply_refund_marks(
        &self,
        checkin: CheckinId,
        changes: &[MarkChange],
    ) -> Result<bool, StoreError>;

    /// The newest `limit` entries of a camp's audit log, newest first.
    async fn refund_log(
        &self,
        checkin: CheckinId,
        limit: usize,
    ) -> Result<Vec<RefundLogEntry>, StoreError>;

    /// Whether the data survives a restart of whatever holds it.
    async fn persistence(&self) -> Result<Persistence, StoreError>;
}

/// Where a member sorts in "by number" pages: its number, or for a member
/// without one, after every numbered member (last in ascending order, first
/// in descending, as SQL's default `NULLS LAST`/`NULLS FIRST`). 2^53 − 1 is
/// the largest integer a Redis score holds exactly.
pub(crate) fn number_sort_key(number: Option<MemberNumber>) -> u64 {
    number.map_or(NO_NUMBER_SORT_KEY, MemberNumber::get)
}

pub(crate) const NO_NUMBER_SORT_KEY: u64 = (1 << 53) - 1;

/// A TTL in whole milliseconds, at least 1 (Redis refuses 0 and both stores
/// must agree on when a member expires) and at most what fits an `i64`.
pub(crate) fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Formats a byte count the way Redis's `used_memory_human` does ("2.50M"),
/// so both stores report memory alike.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_never_zero_milliseconds() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_secs(86_400)), 86_400_000);
    }

    #[test]
    fn byte_counts_read_like_redis_used_memory_human() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(2_621_440), "2.50M");
    }

    #[test]
    fn byte_counts_print_as_redis_prints_used_memory_human() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1_536), "1.50K");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.00M");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.00G");
    }
}
