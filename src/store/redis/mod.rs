//! The Redis store: the member hashes operators' `redis-cli` recipes read,
//! plus bucketed indexes so pages, counts and number lookups never walk
//! every member, at a cost per member well below the original design's own
//! layout.
//!
//! Layout, all names from [`keys`](crate::store::keys):
//! - `zsxq:user:{id}` hash of the record, every value a string, so
//!   `HGETALL` in `redis-cli` shows the record as the API does — except that
//!   a value longer than 64 bytes (e.g. an avatar URL) is split into pieces
//!   `avatar_url`, `avatar_url:2`, … ([`LISTPACK_VALUE_MAX`]): one long value
//!   would turn the whole hash into a hashtable (1 076 B instead of 456 B).
//!   It expires by itself at the score of its expiry index entry
//!   (`PEXPIREAT`);
//! - three indexes — by number (numberless members last), by join time, by
//!   expiry — each a directory `zsxq:{idx}:<index>:dir` and listpack-sized
//!   buckets `zsxq:{idx}:<index>:<low>!<base>` (`index.rs` says how and
//!   why). The number index is also the id set and answers number lookups;
//!   the `{idx}` hash tag keeps all of them in one slot on a Redis Cluster;
//! - `zsxq:ranking:{checkin_id}` a camp's cached ranking (the refund
//!   module's JSON), one string with its own TTL;
//! - `zsxq:stats:cache` counters, without a TTL;
//! - `zsxq:refund:{checkin_id}:marks` hash and `zsxq:refund:{checkin_id}:log`
//!   list, a camp's refund marks and audit log (`marks.rs`): records, not
//!   cache, so no TTL and `clear` leaves them;
//! - `zsxq:lease:user:{id}` short fetch leases, so that replicas make one
//!   upstream call per cold member between them, and the pub/sub channel
//!   `zsxq:events` on which the write script announces changed records and
//!   `clear` announces itself (`cache/invalidation.rs`).
//!
//! The original design's `zsxq:number:{n}` strings, `zsxq:users:all` set and
//! skiplist sorted sets cost more per member than a straightforward
//! record; they are gone (a Redis that still holds them is upgraded at first
//! use, `upgrade.rs`).
//!
//! **Cost per member** (`tests/store_memory.rs`, `used_memory` on a private
//! server with the default config, 20 000 simulator members, every key
//! included): 529 B with every field short, 0.77 of the straightforward
//! layout's 685 B on the same members; 590 B with real-looking avatar URLs,
//! 0.42 of its 1 404 B. The indexes take ~46–49 B of that, the hash with its
//! TTL the rest.
//!
//! The files: `transport.rs` sends (round trips, replay, slot groups),
//! `scripts.rs` holds the Lua scripts, `codec.rs` lays a record out as a
//! hash, `members.rs` reads and writes records, `index.rs` keeps the
//! indexes, `upgrade.rs` indexes an old-layout Redis anew, `leases.rs` the
//! fetch leases, `marks.rs` the refund marks, `admin.rs` the whole-store
//! operations.
//!
//! Decisions worth knowing before changing this module:
//! - **Connection.** A [`Link`] (`crate::redis_link`): a lazily created
//!   `ConnectionManager` for one server, or the cluster client for a Redis
//!   Cluster, with 500 ms connect and response timeouts and no retry loop of
//!   ours. Nothing is dialled at construction, so the service starts while
//!   Redis is down; the connection recovers by itself once Redis is back. A
//!   call that finds the previous dial refused is replayed once (nothing was
//!   sent, so that is always safe). Each round trip also sits under our own
//!   deadline, so no call can hang even if a library timeout were missed
//!   (`transport.rs`).
//! - **One code path for a server and a cluster.** A cluster refuses a
//!   pipeline or script whose keys span slots, so every script here touches
//!   only keys of one slot, and a batch of commands is split by slot
//!   (`Batch` and `RedisStore::exec` in `transport.rs`): on a standalone
//!   server that is one group, on a cluster one pipeline per slot, sent
//!   concurrently. The contract suite runs the same scenarios on both.
//! - **Writes in two rounds** (`members.rs`). Round 1 writes the hashes
//!   (`WRITE_MEMBERS`, once per slot group): it replaces each hash whole and
//!   reports which records changed and where each replaced hash stood in
//!   the indexes. Round 2 (`INDEX_WRITE`, one call in the `{idx}` slot)
//!   removes those old entries, adds the new ones and extends the TTL of the
//!   index keys it touched without ever shortening it; then changed ids are
//!   published on `keys::EVENTS`. Hashes go first so that nothing ever names
//!   a member whose hash is not there yet.
//! - **Expiry** (`index.rs`). Redis expires hashes by itself. Index entries
//!   are pruned before `count`, `page` and `oldest`: expiry entries due by
//!   now are checked against their hash in bounded batches, and a member
//!   whose hash is gone is forgotten from all three indexes. The check and
//!   the removal cannot be one script on a cluster, so the removal re-checks
//!   afterwards and puts back a member rewritten in between.
//! - **Numbers.** `user_id_by_number` trusts an index entry only if the
//!   member's hash still carries that number (`members.rs`).

mod admin;
mod codec;
mod index;
mod leases;
mod marks;
mod members;
mod scripts;
mod transport;
mod upgrade;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use redis::{RedisError, Value};

pub use admin::used_memory_in;
pub use codec::LISTPACK_VALUE_MAX;
pub use transport::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};

use super::{
    ClearReport, DataIdentity, LeaseEnd, LeaseState, Page, PageRequest, StatCounters, Store,
    StoreError, StoredStats, keys, ttl_millis,
};
use crate::clock::Clock;
use crate::domain::{CachedMember, CheckinId, MemberNumber, UserId};
use crate::redis_link::{Link, RedisTarget};
use crate::store::marks::{MarkChange, Persistence, RefundLogEntry, RefundMark};
use crate::store::{RankingKey, StoredRanking};
use transport::Replay;

/// Members, indexes and counters in Redis. Cheap to share behind an `Arc`;
/// all methods take `&self`.
pub struct RedisStore {
    /// Multiplexed, self-reconnecting connection to a server or a cluster;
    /// cloning it is an `Arc` clone, so each call works on its own handle.
    link: Link,
    /// Source of "now" for expiry scores, so pruning agrees with the TTLs the
    /// rest of the service reasons about.
    clock: Arc<dyn Clock>,
    /// Random name of this store (one per process), carried by every change
    /// announced on [`keys::EVENTS`] so the process can skip its own.
    origin: String,
    /// Set once this process has made sure the Redis holds no keys of the
    /// original layout (`upgrade.rs`).
    layout_checked: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password; never print it.
        f.debug_struct("RedisStore")
            .field("cluster", &self.link.is_cluster())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Builds the store for `url` (one server) without dialling: an
    /// unreachable Redis is not an error here, only on use, and the store
    /// reconnects by itself later. Fails only for a malformed URL or when
    /// called outside a Tokio runtime (the connection needs one).
    pub fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let target = RedisTarget::parse(url, false, false).map_err(|e| {
            StoreError::Redis(RedisError::from((
                redis::ErrorKind::Client,
                "bad Redis URL",
                e,
            )))
        })?;
        Self::connect_target(&target, clock)
    }

    /// As [`RedisStore::connect`], for a server or a cluster.
    pub fn connect_target(target: &RedisTarget, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Ok(Self {
            link: Link::new(target, RESPONSE_TIMEOUT.max(CONNECT_TIMEOUT))?,
            clock,
            origin: uuid::Uuid::new_v4().simple().to_string(),
            layout_checked: AtomicBool::new(false),
        })
    }
}

/// The contract, each operation done by the file that owns its keys.
#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        if self.link.is_cluster() {
            "redis-cluster"
        } else {
            "redis"
        }
    }

    async fn get_members(&self, ids: &[UserId]) -> Result<Vec<Option<CachedMember>>, StoreError> {
        self.read_members(ids).await
    }

    async fn user_id_by_number(&self, number: MemberNumber) -> Result<Option<UserId>, StoreError> {
        self.resolve_number(number).await
    }

    async fn put_members(&self, members: &[CachedMember], ttl: Duration) -> Result<(), StoreError> {
        self.write_members(members, ttl).await
    }

    async fn cached_ids(&self, ids: &[UserId]) -> Result<Vec<bool>, StoreError> {
        self.hashes_exist(ids).await
    }

    async fn page(&self, request: PageRequest) -> Result<Page, StoreError> {
        self.read_page(request).await
    }

    async fn oldest(&self, limit: u64) -> Result<Vec<UserId>, StoreError> {
        self.soonest_expiring(limit).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.count_members().await
    }

    async fn clear(&self) -> Result<ClearReport, StoreError> {
        self.clear_all().await
    }

    async fn add_stats(&self, delta: &StatCounters) -> Result<(), StoreError> {
        self.add_counters(delta).await
    }

    async fn get_ranking(&self, key: RankingKey) -> Result<Option<Vec<u8>>, StoreError> {
        let get = redis::cmd("GET").arg(keys::ranking(key)).take();
        self.command(Replay::Idempotent, &get, "ranking").await
    }

    async fn put_ranking(&self, ranking: &StoredRanking<'_>) -> Result<(), StoreError> {
        let set = redis::cmd("SET")
            .arg(keys::ranking(ranking.key))
            .arg(ranking.bytes)
            .arg("PX")
            .arg(ttl_millis(ranking.ttl))
            .take();
        let _: Value = self.command(Replay::Idempotent, &set, "SET reply").await?;
        Ok(())
    }

    async fn set_last_sync_time(&self, ms: i64) -> Result<(), StoreError> {
        self.record_sync_time(ms).await
    }

    async fn stats(&self) -> Result<StoredStats, StoreError> {
        self.read_stats().await
    }

    async fn memory_usage(&self) -> Result<String, StoreError> {
        self.used_memory().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.ping_server().await
    }

    async fn try_lease(
        &self,
        id: UserId,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseState, StoreError> {
        self.take_lease(id, owner, ttl).await
    }

    async fn end_lease(&self, id: UserId, owner: &str, end: LeaseEnd) -> Result<(), StoreError> {
        self.release_lease(id, owner, end).await
    }

    async fn data_identity(&self) -> Result<Option<DataIdentity>, StoreError> {
        self.identity().await
    }

    async fn device_id(&self, candidate: &str) -> Result<String, StoreError> {
        self.device_id_or(candidate).await
    }

    fn events_origin(&self) -> Option<String> {
        Some(self.origin.clone())
    }

    async fn refund_marks(
        &self,
        checkin: CheckinId,
    ) -> Result<HashMap<UserId, RefundMark>, StoreError> {
        self.read_marks(checkin).await
    }

    async fn apply_refund_marks(
        &self,
        checkin: CheckinId,
        changes: &[MarkChange],
    ) -> Result<bool, StoreError> {
        self.write_marks(checkin, changes).await
    }

    async fn refund_log(
        &self,
        checkin: CheckinId,
        limit: usize,
    ) -> Result<Vec<RefundLogEntry>, StoreError> {
        self.read_log(checkin, limit).await
    }

    async fn persistence(&self) -> Result<Persistence, StoreError> {
        self.check_persistence().await
    }
}
