//! The Redis store: the seed's layout (SPEC §4), plus sorted indexes so pages
//! and counts never walk every member.
//!
//! Layout, all names from [`keys`]:
//! - `zsxq:user:{id}` hash of the record, every value a string, so
//!   `HGETALL` in `redis-cli` shows what the seed shows — except that a
//!   value longer than 64 bytes (e.g. an avatar URL) is split into pieces
//!   `avatar_url`, `avatar_url:2`, … ([`LISTPACK_VALUE_MAX`]): one long value
//!   would turn the whole hash into a hashtable (1 076 B instead of 456 B);
//! - `zsxq:number:{n}` → user_id, written with the hash and expiring with it;
//! - `zsxq:users:all` set of ids (the seed's recipes read it);
//! - `zsxq:{idx}:number`, `zsxq:{idx}:join_time` sorted sets for O(log n +
//!   page) paging, and `zsxq:{idx}:expiry` (score = expiry in unix ms by the
//!   injected clock) to find index entries whose hash has expired. The
//!   `{idx}` hash tag keeps the three in one slot on a Redis Cluster;
//! - `zsxq:ranking:{checkin_id}` a camp's cached ranking (the refund
//!   module's JSON), one string with its own TTL;
//! - `zsxq:stats:cache` counters, the only key without a TTL;
//! - `zsxq:lease:user:{id}` short fetch leases (issue #8), and the pub/sub
//!   channel `zsxq:events` on which the write script announces changed
//!   records and `clear` announces itself (`cache/invalidation.rs`).
//!
//! **Cost per member** (`tests/store_memory.rs`, `used_memory` on a private
//! server with the default config, simulator members): hash with TTL ≈ 533
//! B, number key with TTL ≈ 134 B, set entry ≈ 68 B, each of the three
//! sorted-index entries ≈ 116 B (skiplist encoding beyond 128 entries):
//! ≈ 1 080 B in all (1 793 B before the hash was kept a listpack). Issue #8
//! asks for ≤ 736 B; the seed's own keys take ~735 B of that, so meeting it
//! means replacing the sorted sets with nearly free structures (not done).
//!
//! Decisions worth knowing before changing this file:
//! - **Connection.** A [`Link`] (`redis_link.rs`): a lazily created
//!   `ConnectionManager` for one server, or the cluster client for a Redis
//!   Cluster, with 500 ms connect and response timeouts and no retry loop of
//!   ours. Nothing is dialled at construction, so the service starts while
//!   Redis is down; the connection recovers by itself once Redis is back. A
//!   call that finds the previous dial refused is replayed once (nothing was
//!   sent, so that is always safe). Each round trip also sits under our own
//!   deadline, so no call can hang even if a library timeout were missed.
//! - **One code path for a server and a cluster.** A cluster refuses a
//!   pipeline or script whose keys span slots, so every script here touches
//!   only the keys it is given, all in one slot, and a batch of commands is
//!   split by slot ([`Batch`], [`RedisStore::exec`]): on a standalone server
//!   that is one group (one pipeline, a `MULTI` where asked), on a cluster
//!   one pipeline per slot, sent concurrently. The contract suite runs the
//!   same scenarios on both.
//! - **Writes in two rounds.** Round 1 writes the hashes ([`WRITE_MEMBERS`],
//!   once per slot group): it replaces each hash whole and reports which
//!   records changed and which numbers were left behind. Round 2 writes the
//!   number keys, the seed's set and the indexes, drops left-behind number
//!   keys that still point to the member ([`DROP_STALE_NUMBERS`]) and
//!   extends the TTL of the shared keys without ever shortening it (a
//!   short-TTL write must not make the set and indexes expire before older
//!   members — the seed's bug of keys expiring at different times); then
//!   changed ids are published on [`keys::EVENTS`]. Hashes go first so that
//!   nothing ever names a member whose hash is not there yet.
//! - **Expiry.** Redis expires hashes and number keys by itself. Set and index
//!   entries are pruned before `count` and `page`: entries of `idx:expiry`
//!   due by now are checked (`EXISTS`) in bounded batches and those whose
//!   hash is gone are forgotten. The check and the removal cannot be one
//!   script on a cluster, so [`RedisStore::forget`] re-checks afterwards and
//!   puts back a member that was rewritten in between. Cost is O(expired),
//!   not O(members).
//! - **Stale number keys.** `user_id_by_number` trusts a number key only if
//!   the member's hash still carries that number.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::cluster_routing::Slot;
use redis::{FromRedisValue, Pipeline, RedisError, RedisResult, Value};

use super::{
    ClearReport, DataIdentity, LeaseEnd, LeaseState, NOT_MEMBER_LEASE_TTL, Page, PageRequest,
    STAT_API_CALLS, STAT_CACHE_HITS, STAT_CACHE_MISSES, STAT_LAST_SYNC_TIME, STAT_TOTAL_REQUESTS,
    SortBy, SortOrder, StatCounters, Store, StoreError, StoredStats, keys, number_sort_key,
    ttl_millis,
};
use crate::clock::Clock;
use crate::domain::{CachedMember, CheckinId, Member, MemberNumber, UserId};
use crate::redis_link::{Link, RedisTarget};

/// Longest wait for a TCP connect plus Redis handshake. Redis runs next to
/// the service; anything slower is an outage and the cache falls back to the
/// upstream rather than making the operator wait.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest wait for the answer to one command or pipeline.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Our own bound on one round trip (dial + answer + slack), enforced outside
/// the client library so that no code path can hang.
const ROUND_TRIP_DEADLINE: Duration = Duration::from_millis(1_200);

/// Ids examined per pruning step; keeps each script call short so Redis is
/// never blocked noticeably.
const PRUNE_BATCH: usize = 200;

/// Ids per `SSCAN` step and keys per `SCAN` step of `clear`.
const CLEAR_SSCAN_COUNT: usize = 500;
const CLEAR_SCAN_COUNT: usize = 1_000;

/// How often `page` re-reads after finding ids whose hash vanished between
/// pruning and reading (eviction, concurrent expiry).
const PAGE_ATTEMPTS: usize = 3;

/// Deletes each number key in KEYS whose value is still the id in the same
/// position of ARGV: the key a member left behind when its number changed.
/// Another member may own that number by now, so the value is checked.
/// Returns how many were deleted. KEYS share one slot (one call per slot on
/// a cluster).
const DROP_STALE_NUMBERS: &str = r"
local dropped = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    dropped = dropped + redis.call('DEL', key)
  end
end
return dropped
";

/// Writes member hashes. KEYS = the hashes (one slot); ARGV[1] = TTL (ms);
/// then per member: its field count `n` and `n` field/value pairs. An
/// existing hash is replaced whole (so no piece of a longer old value
/// survives). Returns, per member, whether its content changed (anything
/// but `cached_at`/`updated_at`; 0 for a new member, which no replica can
/// hold in its near cache) and its previous number when that differs from
/// the new one (else ''), so the caller can drop the old number key and
/// announce the change.
const WRITE_MEMBERS: &str = r"
local pos = 2
local out = {}
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local old = redis.call('HGETALL', key)
  local changed, old_number = 0, ''
  if #old > 0 then
    local prev, old_count, new_count, differs = {}, 0, 0, false
    for j = 1, #old, 2 do
      if old[j] ~= 'cached_at' and old[j] ~= 'updated_at' then
        prev[old[j]] = old[j + 1]
        old_count = old_count + 1
      end
    end
    for j = pos, pos + 2 * n - 1, 2 do
      local f = ARGV[j]
      if f ~= 'cached_at' and f ~= 'updated_at' then
        new_count = new_count + 1
        if prev[f] ~= ARGV[j + 1] then differs = true end
        if f == 'number' and prev[f] and prev[f] ~= ARGV[j + 1] then
          old_number = prev[f]
        end
      end
    end
    if differs or old_count ~= new_count then changed = 1 end
    redis.call('DEL', key)
  end
  redis.call('HSET', key, unpack(ARGV, pos, pos + 2 * n - 1))
  redis.call('PEXPIRE', key, ARGV[1])
  pos = pos + 2 * n
  out[#out + 1] = changed
  out[#out + 1] = old_number
end
return out
";

/// Takes or renews a fetch lease. KEYS[1] = the lease key; ARGV[1] = owner,
/// ARGV[2] = TTL (ms). Returns {'granted'}, {'taken'} or {'gone', value}.
/// The same as `SET key owner NX PX ttl`, plus renewal by the holder and the
/// shared "not a member" answer, in one round trip.
const TRY_LEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {'granted'}
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'granted'}
end
if string.sub(v, 1, 5) == 'gone:' then return {'gone', v} end
return {'taken'}
";

/// Ends a lease if ARGV[1] still holds it: deletes it, or (ARGV[2] given)
/// replaces it with the "not a member" answer ARGV[2] for ARGV[3] ms.
const END_LEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// Gives every key in KEYS at least ARGV[1] ms to live, never shortening a
/// longer TTL, and adds a TTL to a key that lacks one.
const EXTEND_TTL: &str = r"
local ttl = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < ttl) then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 0
";

/// The sorted indexes, in one hash slot (`{idx}` tag) so that a cluster can
/// update them together.
const INDEX_KEYS: [&str; 3] = [keys::IDX_NUMBER, keys::IDX_JOIN_TIME, keys::IDX_EXPIRY];

/// Whether a failed request may be sent again.
#[derive(Debug, Clone, Copy)]
enum Replay {
    /// Sending twice does no harm (reads, writes of absolute values).
    Idempotent,
    /// Counters: replay only when the first attempt certainly never left,
    /// i.e. the connection was refused.
    OnlyUnsent,
}

impl Replay {
    fn allows(self, error: &RedisError) -> bool {
        match self {
            Replay::Idempotent => error.is_connection_refusal() || error.is_connection_dropped(),
            Replay::OnlyUnsent => error.is_connection_refusal(),
        }
    }
}

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
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password; never print it.
        f.debug_struct("RedisStore")
            .field("cluster", &self.link.is_cluster())
            .finish_non_exhaustive()
    }
}

/// Commands bound for Redis, each with the slot group of the key that
/// routes it ([`Link::slot_of`]): one group on a standalone server, one per
/// hash slot on a cluster.
#[derive(Default)]
struct Batch {
    cmds: Vec<(Option<Slot>, redis::Cmd)>,
}

impl Batch {
    fn push(&mut self, link: &Link, key: &str, cmd: redis::Cmd) {
        self.cmds.push((link.slot_of(key), cmd));
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
        })
    }

    /// Runs one round trip under [`ROUND_TRIP_DEADLINE`], replaying it once
    /// when `replay` allows the error it failed with.
    async fn call<T, F, Fut>(&self, replay: Replay, request: F) -> Result<T, StoreError>
    where
        F: Fn(Link) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut replayed = false;
        loop {
            let attempt = tokio::time::timeout(ROUND_TRIP_DEADLINE, request(self.link.clone()));
            match attempt.await {
                Err(_) => return Err(StoreError::Timeout(ROUND_TRIP_DEADLINE)),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if !replayed && replay.allows(&e) => replayed = true,
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends a pipeline (all its keys in one slot) and returns one raw reply
    /// per command.
    async fn pipeline(&self, replay: Replay, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        self.call(replay, |mut conn| async move {
            pipe.query_async::<Vec<Value>>(&mut conn).await
        })
        .await
    }

    /// Runs a batch and returns one reply per command, in order. On a
    /// standalone server it is one pipeline — a `MULTI`/`EXEC` when `atomic`;
    /// on a cluster one plain pipeline per slot, sent concurrently, so
    /// nothing ever crosses slots. A cluster gets no `MULTI`: atomicity
    /// across slots does not exist there anyway, and the cluster client does
    /// not follow a MOVED inside a transaction — after a failover every
    /// transaction to the moved slot failed until something else refreshed
    /// the slot map (seen in `tests/cluster.rs`). Callers order their writes
    /// so that a half-applied batch is harmless (see the module notes).
    async fn exec(
        &self,
        replay: Replay,
        atomic: bool,
        batch: Batch,
    ) -> Result<Vec<Value>, StoreError> {
        let atomic = atomic && !self.link.is_cluster();
        let total = batch.cmds.len();
        if total == 0 {
            return Ok(Vec::new());
        }
        let groups = group_by_slot(batch.cmds.iter().map(|(slot, _)| *slot));
        let mut cmds: Vec<Option<redis::Cmd>> =
            batch.cmds.into_iter().map(|(_, cmd)| Some(cmd)).collect();
        let pipes: Vec<Pipeline> = groups
            .iter()
            .map(|positions| {
                let mut pipe = redis::pipe();
                if atomic {
                    pipe.atomic();
                }
                for cmd in positions.iter().filter_map(|&i| cmds[i].take()) {
                    pipe.add_command(cmd);
                }
                pipe
            })
            .collect();
        let replies = futures_util::future::try_join_all(
            pipes.iter().map(|pipe| self.pipeline(replay, pipe)),
        )
        .await?;
        let mut out: Vec<Option<Value>> = vec![None; total];
        for (positions, values) in groups.iter().zip(replies) {
            if values.len() != positions.len() {
                return Err(short_reply(positions.len(), values.len()));
            }
            for (&i, value) in positions.iter().zip(values) {
                out[i] = Some(value);
            }
        }
        out.into_iter()
            .map(|v| v.ok_or_else(|| short_reply(total, 0)))
            .collect()
    }

    /// Sends one command and decodes its reply.
    async fn command<T: FromRedisValue>(
        &self,
        replay: Replay,
        cmd: &redis::Cmd,
        what: &str,
    ) -> Result<T, StoreError> {
        let value = self
            .call(replay, |mut conn| async move {
                cmd.query_async::<Value>(&mut conn).await
            })
            .await?;
        decode(value, what)
    }

    /// Forgets set and index entries of members that expired by now. Walks
    /// only entries due by now, [`PRUNE_BATCH`] at a time; an entry whose
    /// hash is still alive (rewritten, or clocks differ) is skipped over.
    async fn prune_expired(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut offset = 0usize;
        loop {
            let due = redis::cmd("ZRANGEBYSCORE")
                .arg(keys::IDX_EXPIRY)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(offset)
                .arg(PRUNE_BATCH)
                .take();
            let raw: Vec<String> = self
                .command(Replay::Idempotent, &due, "ZRANGEBYSCORE reply")
                .await?;
            let ids = raw
                .iter()
                .map(|r| parse_indexed_id(keys::IDX_EXPIRY, r))
                .collect::<Result<Vec<_>, _>>()?;
            let alive = self.cached_ids(&ids).await?;
            let gone: Vec<UserId> = ids
                .iter()
                .zip(&alive)
                .filter(|(_, alive)| !**alive)
                .map(|(&id, _)| id)
                .collect();
            let forgotten = self.forget(&gone).await?;
            if forgotten > 0 {
                tracing::debug!(removed = forgotten, "pruned expired members from indexes");
            }
            // Entries removed no longer occupy a rank; the rest are skipped.
            offset += ids.len() - usize::try_from(forgotten).unwrap_or(ids.len());
            if ids.len() < PRUNE_BATCH {
                return Ok(());
            }
        }
    }

    /// Forgets `ids`, whose hash was seen gone, from the set and the
    /// indexes; returns how many stay forgotten. The check and the removal
    /// cannot be one script on a cluster (the hash lives in another slot), so
    /// the removal is re-checked: a member rewritten in between is put back
    /// from its hash.
    async fn forget(&self, ids: &[UserId]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch::default();
        for index in INDEX_KEYS {
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(index);
            for id in ids {
                zrem.arg(id.get());
            }
            batch.push(&self.link, index, zrem);
        }
        let mut srem = redis::cmd("SREM");
        srem.arg(keys::USERS_ALL);
        for id in ids {
            srem.arg(id.get());
        }
        batch.push(&self.link, keys::USERS_ALL, srem);
        self.exec(Replay::Idempotent, true, batch).await?;

        let alive = self.cached_ids(ids).await?;
        let back: Vec<UserId> = ids
            .iter()
            .zip(&alive)
            .filter(|(_, alive)| **alive)
            .map(|(&id, _)| id)
            .collect();
        let restored = self.reindex(&back).await?;
        Ok(ids.len() as u64 - restored)
    }

    /// Puts `ids` back into the set and indexes from their hashes (expiry
    /// from the hash's own TTL); returns how many were found.
    async fn reindex(&self, ids: &[UserId]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch::default();
        for &id in ids {
            let key = keys::user(id);
            batch.push(&self.link, &key, redis::cmd("HGETALL").arg(&key).take());
            batch.push(&self.link, &key, redis::cmd("PTTL").arg(&key).take());
        }
        let replies = self.exec(Replay::Idempotent, false, batch).await?;
        let now = self.clock.now_ms();
        let mut entries = Vec::new();
        for (&id, pair) in ids.iter().zip(replies.chunks(2)) {
            let [fields, pttl] = pair else { continue };
            let fields: HashMap<String, String> = decode(fields.clone(), "member hash")?;
            let pttl: i64 = decode(pttl.clone(), "PTTL reply")?;
            if fields.is_empty() || pttl < 0 {
                continue;
            }
            let m = member_from_hash(id, fields)?;
            entries.push(IndexEntry::of(&m, now.saturating_add(pttl)));
        }
        let found = entries.len() as u64;
        let mut batch = Batch::default();
        self.push_index(&mut batch, &entries, None);
        self.exec(Replay::Idempotent, true, batch).await?;
        Ok(found)
    }

    /// Appends the set and index writes for `entries` to `batch`: `SADD`
    /// to the seed's set, `ZADD`s to the indexes (one slot), and, when
    /// `ttl_ms` is given, a TTL extension of those shared keys.
    fn push_index(&self, batch: &mut Batch, entries: &[IndexEntry], ttl_ms: Option<i64>) {
        if entries.is_empty() {
            return;
        }
        let mut sadd = redis::cmd("SADD");
        sadd.arg(keys::USERS_ALL);
        for e in entries {
            sadd.arg(e.id.get());
        }
        batch.push(&self.link, keys::USERS_ALL, sadd);
        batch.push(
            &self.link,
            keys::IDX_NUMBER,
            zadd(keys::IDX_NUMBER, entries.iter().map(|e| (e.number, e.id))),
        );
        batch.push(
            &self.link,
            keys::IDX_JOIN_TIME,
            zadd(
                keys::IDX_JOIN_TIME,
                entries.iter().map(|e| (e.join_ms, e.id)),
            ),
        );
        batch.push(
            &self.link,
            keys::IDX_EXPIRY,
            zadd(
                keys::IDX_EXPIRY,
                entries.iter().map(|e| (e.expires_at, e.id)),
            ),
        );
        if let Some(ttl_ms) = ttl_ms {
            let mut extend = eval(EXTEND_TTL, &[keys::USERS_ALL]);
            extend.arg(ttl_ms);
            batch.push(&self.link, keys::USERS_ALL, extend);
            let mut extend = eval(EXTEND_TTL, &INDEX_KEYS);
            extend.arg(ttl_ms);
            batch.push(&self.link, keys::IDX_NUMBER, extend);
        }
    }

    /// Reads the hashes of `ids`; `None` where absent.
    async fn read_members(&self, ids: &[UserId]) -> Result<Vec<Option<CachedMember>>, StoreError> {
        let mut batch = Batch::default();
        for &id in ids {
            let key = keys::user(id);
            batch.push(&self.link, &key, redis::cmd("HGETALL").arg(&key).take());
        }
        let replies = self.exec(Replay::Idempotent, false, batch).await?;
        ids.iter()
            .zip(replies)
            .map(|(&id, reply)| {
                let fields: HashMap<String, String> = decode(reply, "member hash")?;
                if fields.is_empty() {
                    Ok(None)
                } else {
                    member_from_hash(id, fields).map(Some)
                }
            })
            .collect()
    }

    /// Deletes `keys` one `DEL` each, returning which ones existed.
    async fn delete_each(&self, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        let mut batch = Batch::default();
        for key in keys {
            batch.push(&self.link, key, redis::cmd("DEL").arg(key).take());
        }
        let replies = self.exec(Replay::Idempotent, false, batch).await?;
        replies
            .into_iter()
            .map(|reply| decode::<u64>(reply, "DEL reply").map(|n| n > 0))
            .collect()
    }

    /// The nodes that hold data: every master of a cluster, or `None` for
    /// the one server. A cluster that lists no master is an error (nothing
    /// could be read or deleted there).
    async fn data_nodes(&self) -> Result<Vec<Option<(String, u16)>>, StoreError> {
        if !self.link.is_cluster() {
            return Ok(vec![None]);
        }
        let masters = self
            .call(
                Replay::Idempotent,
                |link| async move { link.masters().await },
            )
            .await?;
        if masters.is_empty() {
            return Err(StoreError::Corrupt("the cluster lists no master".into()));
        }
        Ok(masters.into_iter().map(Some).collect())
    }

    /// Runs `cmd` on one node of [`RedisStore::data_nodes`].
    async fn on_data_node(
        &self,
        node: &Option<(String, u16)>,
        cmd: &redis::Cmd,
    ) -> Result<Value, StoreError> {
        match node {
            None => self.command(Replay::Idempotent, cmd, "reply").await,
            Some((host, port)) => {
                self.call(Replay::Idempotent, |link| {
                    let cmd = cmd.clone();
                    async move { link.on_node(host, *port, cmd).await }
                })
                .await
            }
        }
    }

    /// Runs `cmd` once per node that holds data and returns the replies.
    async fn on_every_master(&self, cmd: &redis::Cmd) -> Result<Vec<Value>, StoreError> {
        let mut out = Vec::new();
        for node in &self.data_nodes().await? {
            out.push(self.on_data_node(node, cmd).await?);
        }
        Ok(out)
    }
}

/// What the set and the indexes record of one member.
struct IndexEntry {
    id: UserId,
    number: u64,
    join_ms: i64,
    expires_at: i64,
}

impl IndexEntry {
    fn of(m: &CachedMember, expires_at: i64) -> Self {
        Self {
            id: m.member.user_id,
            number: number_sort_key(m.member.number),
            join_ms: m.member.join_time_ms(),
            expires_at,
        }
    }
}

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
        let get = redis::cmd("GET").arg(keys::number(number)).take();
        let raw: Option<String> = self.command(Replay::Idempotent, &get, "number key").await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let id = UserId::parse(&raw).map_err(|e| {
            StoreError::Corrupt(format!("{} holds {raw:?}: {e}", keys::number(number)))
        })?;
        // The key may be stale: the member's number changed, or the number
        // now belongs to someone else. Only the hash is authoritative.
        let hget = redis::cmd("HGET").arg(keys::user(id)).arg("number").take();
        let current: Option<String> = self
            .command(Replay::Idempotent, &hget, "member number")
            .await?;
        Ok((current.as_deref() == Some(number.to_string().as_str())).then_some(id))
    }

    async fn put_members(&self, members: &[CachedMember], ttl: Duration) -> Result<(), StoreError> {
        let members = last_write_per_id(members);
        if members.is_empty() {
            return Ok(());
        }
        let ttl_ms = ttl_millis(ttl);
        let expires_at = self.clock.now_ms().saturating_add(ttl_ms);

        // Round 1: the hashes, one script call per slot group (one call in
        // all on a standalone server). Written first so that no number key,
        // set entry or index entry ever names a member whose hash is not
        // there yet.
        let groups = group_by_slot(
            members
                .iter()
                .map(|m| self.link.slot_of(&keys::user(m.member.user_id))),
        );
        let mut batch = Batch::default();
        for positions in &groups {
            let user_keys: Vec<String> = positions
                .iter()
                .map(|&i| keys::user(members[i].member.user_id))
                .collect();
            let mut write = eval(WRITE_MEMBERS, &user_keys);
            write.arg(ttl_ms);
            for &i in positions {
                let fields = hash_fields(members[i]);
                write.arg(fields.len());
                for (field, value) in fields {
                    write.arg(field).arg(value);
                }
            }
            batch.push(&self.link, &user_keys[0], write);
        }
        let replies = self.exec(Replay::Idempotent, false, batch).await?;
        let mut changed: Vec<UserId> = Vec::new();
        let mut stale_numbers: Vec<(String, UserId)> = Vec::new();
        for (positions, reply) in groups.iter().zip(replies) {
            let flat: Vec<Value> = decode(reply, "write reply")?;
            if flat.len() != positions.len() * 2 {
                return Err(short_reply(positions.len() * 2, flat.len()));
            }
            for (&i, pair) in positions.iter().zip(flat.chunks(2)) {
                let id = members[i].member.user_id;
                if decode::<i64>(pair[0].clone(), "write reply")? == 1 {
                    changed.push(id);
                }
                let old: String = decode(pair[1].clone(), "write reply")?;
                if let Ok(old) = MemberNumber::parse(&old) {
                    stale_numbers.push((keys::number(old), id));
                }
            }
        }

        // Round 2: number keys, the seed's set, the indexes (atomic per slot
        // group; on a standalone server one MULTI), the number keys members
        // left behind, and the announcement of changed records.
        let mut batch = Batch::default();
        for m in &members {
            // A member without a number has no number key (nothing to
            // resolve); its hash says `number` = "".
            let Some(number) = m.member.number else {
                continue;
            };
            let key = keys::number(number);
            let set = redis::cmd("SET")
                .arg(&key)
                .arg(m.member.user_id.get())
                .arg("PX")
                .arg(ttl_ms)
                .take();
            batch.push(&self.link, &key, set);
        }
        let entries: Vec<IndexEntry> = members
            .iter()
            .map(|m| IndexEntry::of(m, expires_at))
            .collect();
        self.push_index(&mut batch, &entries, Some(ttl_ms));
        for positions in group_by_slot(stale_numbers.iter().map(|(key, _)| self.link.slot_of(key)))
        {
            let number_keys: Vec<&str> = positions
                .iter()
                .map(|&i| stale_numbers[i].0.as_str())
                .collect();
            let mut drop = eval(DROP_STALE_NUMBERS, &number_keys);
            for &i in &positions {
                drop.arg(stale_numbers[i].1.get());
            }
            batch.push(&self.link, number_keys[0], drop);
        }
        self.exec(Replay::Idempotent, true, batch).await?;

        if !changed.is_empty() {
            let ids: Vec<String> = changed.iter().map(|id| id.to_string()).collect();
            let publish = redis::cmd("PUBLISH")
                .arg(keys::EVENTS)
                .arg(format!("{} u {}", self.origin, ids.join(",")))
                .take();
            // Best effort, as for clear: other replicas' near-cache entries
            // expire after NEAR_CACHE_TTL anyway.
            if let Err(e) = self
                .command::<i64>(Replay::Idempotent, &publish, "PUBLISH reply")
                .await
            {
                tracing::warn!(error = %e, "could not announce changed members to other replicas");
            }
        }
        Ok(())
    }

    async fn cached_ids(&self, ids: &[UserId]) -> Result<Vec<bool>, StoreError> {
        let mut batch = Batch::default();
        for &id in ids {
            let key = keys::user(id);
            batch.push(&self.link, &key, redis::cmd("EXISTS").arg(&key).take());
        }
        let replies = self.exec(Replay::Idempotent, false, batch).await?;
        replies
            .into_iter()
            .map(|reply| decode::<bool>(reply, "EXISTS reply"))
            .collect()
    }

    async fn page(&self, request: PageRequest) -> Result<Page, StoreError> {
        let PageRequest {
            sort,
            order,
            offset,
            limit,
        } = request;
        self.prune_expired().await?;
        let index = match sort {
            SortBy::Number => keys::IDX_NUMBER,
            SortBy::JoinTime => keys::IDX_JOIN_TIME,
        };
        let range = match order {
            SortOrder::Asc => "ZRANGE",
            SortOrder::Desc => "ZREVRANGE",
        };
        if limit == 0 {
            // Not ZRANGE 0 -1: that would fetch the whole index.
            let zcard = redis::cmd("ZCARD").arg(index).take();
            let total = self
                .command(Replay::Idempotent, &zcard, "ZCARD reply")
                .await?;
            return Ok(Page {
                members: Vec::new(),
                total,
            });
        }
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        let stop = start.saturating_add(i64::try_from(limit - 1).unwrap_or(i64::MAX));

        let mut attempt = 1;
        loop {
            let mut pipe = redis::pipe();
            pipe.zcard(index);
            pipe.cmd(range).arg(index).arg(start).arg(stop);
            let mut replies = self.pipeline(Replay::Idempotent, &pipe).await?.into_iter();
            let total: u64 = decode(replies.next().unwrap_or_default(), "ZCARD reply")?;
            let raw_ids: Vec<String> = decode(replies.next().unwrap_or_default(), "ZRANGE reply")?;
            if raw_ids.is_empty() {
                return Ok(Page {
                    members: Vec::new(),
                    total,
                });
            }
            let ids = raw_ids
                .iter()
                .map(|raw| parse_indexed_id(index, raw))
                .collect::<Result<Vec<_>, _>>()?;
            let records = self.read_members(&ids).await?;
            let vanished: Vec<UserId> = ids
                .iter()
                .zip(&records)
                .filter(|(_, record)| record.is_none())
                .map(|(&id, _)| id)
                .collect();
            let members: Vec<CachedMember> = records.into_iter().flatten().collect();
            if vanished.is_empty() {
                return Ok(Page { members, total });
            }
            let forgotten = self.forget(&vanished).await?;
            if attempt == PAGE_ATTEMPTS {
                return Ok(Page {
                    members,
                    total: total.saturating_sub(forgotten),
                });
            }
            attempt += 1;
        }
    }

    async fn oldest(&self, limit: u64) -> Result<Vec<UserId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.prune_expired().await?;
        let zrange = redis::cmd("ZRANGE")
            .arg(keys::IDX_EXPIRY)
            .arg(0)
            .arg(limit.saturating_sub(1))
            .take();
        let raw: Vec<String> = self
            .command(Replay::Idempotent, &zrange, "ZRANGE reply")
            .await?;
        raw.iter()
            .map(|r| parse_indexed_id(keys::IDX_EXPIRY, r))
            .collect()
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.prune_expired().await?;
        let scard = redis::cmd("SCARD").arg(keys::USERS_ALL).take();
        self.command(Replay::Idempotent, &scard, "SCARD reply")
            .await
    }

    async fn clear(&self) -> Result<ClearReport, StoreError> {
        let mut report = ClearReport::default();

        // 1. Members listed in the set: their hash and their number key.
        let mut cursor: u64 = 0;
        loop {
            let sscan = redis::cmd("SSCAN")
                .arg(keys::USERS_ALL)
                .arg(cursor)
                .arg("COUNT")
                .arg(CLEAR_SSCAN_COUNT)
                .take();
            let (next, raw_ids): (u64, Vec<String>) = self
                .command(Replay::Idempotent, &sscan, "SSCAN reply")
                .await?;
            // Garbage in the set is skipped here; the set itself and the
            // namespace sweep below still remove everything we own.
            let ids: Vec<UserId> = raw_ids
                .iter()
                .filter_map(|raw| UserId::parse(raw).ok())
                .collect();
            if !ids.is_empty() {
                let mut numbers = Batch::default();
                for &id in &ids {
                    let key = keys::user(id);
                    numbers.push(
                        &self.link,
                        &key,
                        redis::cmd("HGET").arg(&key).arg("number").take(),
                    );
                }
                let replies = self.exec(Replay::Idempotent, false, numbers).await?;
                let mut doomed = Vec::with_capacity(ids.len() * 2);
                let mut is_user = Vec::with_capacity(ids.len() * 2);
                for (&id, reply) in ids.iter().zip(replies) {
                    doomed.push(keys::user(id));
                    is_user.push(true);
                    let number: Option<String> = decode(reply, "member number").unwrap_or(None);
                    if let Some(n) = number.and_then(|raw| MemberNumber::parse(&raw).ok()) {
                        doomed.push(keys::number(n));
                        is_user.push(false);
                    }
                }
                let existed = self.delete_each(&doomed).await?;
                for (existed, is_user) in existed.into_iter().zip(is_user) {
                    if existed {
                        report.deleted_keys += 1;
                        report.deleted_users += u64::from(is_user);
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }

        // 2. The fixed keys: set, indexes, counters.
        let fixed: Vec<String> = keys::FIXED.iter().map(|k| (*k).to_owned()).collect();
        let existed = self.delete_each(&fixed).await?;
        report.deleted_keys += existed.into_iter().filter(|e| *e).count() as u64;

        // 3. Leftovers the set no longer knew about: stale number keys,
        // hashes whose set entry was lost. SCAN may repeat keys; DEL's reply
        // tells whether a key was still there, so nothing is counted twice.
        // On a cluster every master holds part of the keyspace and is
        // scanned in turn; a standalone server is the one "node".
        let nodes = self.data_nodes().await?;
        let mut seen = HashSet::new();
        for node in &nodes {
            let mut cursor: u64 = 0;
            loop {
                let scan = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(keys::NAMESPACE_PATTERN)
                    .arg("COUNT")
                    .arg(CLEAR_SCAN_COUNT)
                    .take();
                let reply = self.on_data_node(node, &scan).await?;
                let (next, found): (u64, Vec<String>) = decode(reply, "SCAN reply")?;
                let doomed: Vec<String> = found
                    .into_iter()
                    .filter(|key| keys::is_store_key(key) && seen.insert(key.clone()))
                    .collect();
                let existed = self.delete_each(&doomed).await?;
                for (key, existed) in doomed.iter().zip(existed) {
                    if existed {
                        report.deleted_keys += 1;
                        report.deleted_users += u64::from(key.starts_with(keys::USER_PREFIX));
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        // Other replicas drop their near caches. Best effort: the clear is
        // done either way, and their entries expire after NEAR_CACHE_TTL.
        let publish = redis::cmd("PUBLISH")
            .arg(keys::EVENTS)
            .arg(format!("{} c", self.origin))
            .take();
        if let Err(e) = self
            .command::<i64>(Replay::Idempotent, &publish, "PUBLISH reply")
            .await
        {
            tracing::warn!(error = %e, "could not announce the clear to other replicas");
        }
        Ok(report)
    }

    async fn add_stats(&self, delta: &StatCounters) -> Result<(), StoreError> {
        if delta.is_zero() {
            return Ok(());
        }
        let mut batch = Batch::default();
        for (field, value) in [
            (STAT_TOTAL_REQUESTS, delta.total_requests),
            (STAT_CACHE_HITS, delta.cache_hits),
            (STAT_CACHE_MISSES, delta.cache_misses),
            (STAT_API_CALLS, delta.api_calls),
        ] {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            let incr = redis::cmd("HINCRBY")
                .arg(keys::STATS)
                .arg(field)
                .arg(value)
                .take();
            batch.push(&self.link, keys::STATS, incr);
        }
        self.exec(Replay::OnlyUnsent, true, batch).await?;
        Ok(())
    }

    async fn get_ranking(&self, checkin: CheckinId) -> Result<Option<Vec<u8>>, StoreError> {
        let get = redis::cmd("GET").arg(keys::ranking(checkin)).take();
        self.command(Replay::Idempotent, &get, "ranking").await
    }

    async fn put_ranking(
        &self,
        checkin: CheckinId,
        snapshot: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let set = redis::cmd("SET")
            .arg(keys::ranking(checkin))
            .arg(snapshot)
            .arg("PX")
            .arg(ttl_millis(ttl))
            .take();
        let _: Value = self.command(Replay::Idempotent, &set, "SET reply").await?;
        Ok(())
    }

    async fn set_last_sync_time(&self, ms: i64) -> Result<(), StoreError> {
        let hset = redis::cmd("HSET")
            .arg(keys::STATS)
            .arg(STAT_LAST_SYNC_TIME)
            .arg(ms)
            .take();
        let _: u64 = self
            .command(Replay::Idempotent, &hset, "HSET reply")
            .await?;
        Ok(())
    }

    async fn stats(&self) -> Result<StoredStats, StoreError> {
        let hgetall = redis::cmd("HGETALL").arg(keys::STATS).take();
        let fields: HashMap<String, String> = self
            .command(Replay::Idempotent, &hgetall, "stats hash")
            .await?;
        let counter = |name: &str| -> Result<u64, StoreError> {
            fields.get(name).map_or(Ok(0), |raw| {
                raw.parse().map_err(|_| {
                    StoreError::Corrupt(format!("{} field {name} is {raw:?}", keys::STATS))
                })
            })
        };
        let last_sync_time = match fields.get(STAT_LAST_SYNC_TIME) {
            None => None,
            Some(raw) => Some(raw.parse::<i64>().map_err(|_| {
                StoreError::Corrupt(format!(
                    "{} field {STAT_LAST_SYNC_TIME} is {raw:?}",
                    keys::STATS
                ))
            })?),
        };
        Ok(StoredStats {
            counters: StatCounters {
                total_requests: counter(STAT_TOTAL_REQUESTS)?,
                cache_hits: counter(STAT_CACHE_HITS)?,
                cache_misses: counter(STAT_CACHE_MISSES)?,
                api_calls: counter(STAT_API_CALLS)?,
            },
            last_sync_time,
        })
    }

    async fn memory_usage(&self) -> Result<String, StoreError> {
        // Summed over the masters of a cluster (replicas hold copies).
        let info = redis::cmd("INFO").arg("memory").take();
        let mut bytes: u64 = 0;
        for reply in self.on_every_master(&info).await? {
            let text: String = decode(reply, "INFO reply")?;
            let used = used_memory_in(&text)
                .ok_or_else(|| StoreError::Corrupt("INFO memory lacks used_memory".into()))?;
            bytes = bytes.saturating_add(used);
        }
        Ok(human_bytes(bytes))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let ping = redis::cmd("PING").take();
        let reply: String = self
            .command(Replay::Idempotent, &ping, "PING reply")
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!("PING answered {reply:?}")))
        }
    }

    async fn try_lease(
        &self,
        id: UserId,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseState, StoreError> {
        let mut cmd = eval(TRY_LEASE, &[keys::lease_user(id)]);
        cmd.arg(owner).arg(ttl_millis(ttl));
        let reply: Vec<String> = self
            .command(Replay::Idempotent, &cmd, "lease reply")
            .await?;
        match reply.first().map(String::as_str) {
            Some("granted") => Ok(LeaseState::Granted),
            Some("taken") => Ok(LeaseState::Taken),
            Some("gone") => {
                let raw = reply.get(1).map(String::as_str).unwrap_or_default();
                Ok(parse_gone(raw).unwrap_or(LeaseState::Taken))
            }
            other => Err(StoreError::Corrupt(format!(
                "lease script answered {other:?}"
            ))),
        }
    }

    async fn end_lease(&self, id: UserId, owner: &str, end: LeaseEnd) -> Result<(), StoreError> {
        let mut cmd = eval(END_LEASE, &[keys::lease_user(id)]);
        cmd.arg(owner);
        if let LeaseEnd::NotMember { code, message } = &end {
            cmd.arg(format!("gone:{code}:{message}"))
                .arg(ttl_millis(NOT_MEMBER_LEASE_TTL));
        }
        let _: i64 = self
            .command(Replay::Idempotent, &cmd, "end lease reply")
            .await?;
        Ok(())
    }

    async fn data_identity(&self) -> Result<Option<DataIdentity>, StoreError> {
        let scard = redis::cmd("SCARD").arg(keys::USERS_ALL).take();
        let members: u64 = self
            .command(Replay::Idempotent, &scard, "SCARD reply")
            .await?;
        // On a cluster each node has its own run id and a failover changes
        // which ones serve, so none of them identifies the data.
        let run_id = if self.link.is_cluster() {
            None
        } else {
            let info = redis::cmd("INFO").arg("server").take();
            match self
                .command::<String>(Replay::Idempotent, &info, "INFO reply")
                .await
            {
                Ok(text) => run_id_in(&text),
                // A server that refuses INFO (renamed or forbidden, as some
                // managed services do) is watched by its id set alone; it is
                // not failing.
                Err(StoreError::Redis(e)) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {
                    None
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Some(DataIdentity { run_id, members }))
    }

    async fn device_id(&self, candidate: &str) -> Result<String, StoreError> {
        // One key, so one slot on a cluster; replaying it is harmless.
        let mut cmd = eval(DEVICE_ID, &[keys::DEVICE_ID]);
        cmd.arg(candidate);
        self.command(Replay::Idempotent, &cmd, "device id").await
    }

    fn events_origin(&self) -> Option<String> {
        Some(self.origin.clone())
    }
}

/// The `run_id` of an `INFO server` answer.
fn run_id_in(info: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}
/// Get-or-create of the device id: the stored one, else ARGV[1] stored with
/// `SET NX` (no expiry).
const DEVICE_ID: &str = r"
local stored = redis.call('GET', KEYS[1])
if stored then return stored end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
";

/// Reads a `gone:<code>:<message>` lease value back.
fn parse_gone(raw: &str) -> Option<LeaseState> {
    let rest = raw.strip_prefix("gone:")?;
    let (code, message) = rest.split_once(':')?;
    Some(LeaseState::NotMember {
        code: code.parse().ok()?,
        message: message.to_owned(),
    })
}

/// Positions of `slots` grouped by slot, groups in first-seen order: what
/// may share one pipeline or one script call ([`Link::slot_of`]; a single
/// server is one group).
fn group_by_slot(slots: impl IntoIterator<Item = Option<Slot>>) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<Option<Slot>, usize> = HashMap::new();
    for (i, slot) in slots.into_iter().enumerate() {
        let g = *group_of.entry(slot).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// `EVAL script numkeys keys…`, arguments to be appended by the caller. Plain
/// EVAL rather than EVALSHA: the scripts are a few hundred bytes, and EVAL
/// cannot fail with NOSCRIPT inside a transaction.
fn eval<K: AsRef<str>>(script: &str, keys: &[K]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for key in keys {
        cmd.arg(key.as_ref());
    }
    cmd
}

/// `ZADD index score id …` for every entry.
fn zadd<S: redis::ToRedisArgs>(
    index: &str,
    entries: impl Iterator<Item = (S, UserId)>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(index);
    for (score, id) in entries {
        cmd.arg(score).arg(id.get());
    }
    cmd
}

/// The `used_memory` figure (bytes) of an `INFO memory` answer.
pub fn used_memory_in(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
}

/// Bytes the way Redis's `used_memory_human` prints them (`1.02M`).
fn human_bytes(bytes: u64) -> String {
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

/// Decodes a reply, reporting a reply of the wrong shape as corrupt data.
fn decode<T: FromRedisValue>(value: Value, what: &str) -> Result<T, StoreError> {
    redis::from_redis_value(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn short_reply(expected: usize, got: usize) -> StoreError {
    StoreError::Corrupt(format!(
        "pipeline answered {got} replies for {expected} commands"
    ))
}

/// Keeps the last record per user id, in first-seen order, so one batch never
/// writes two versions of a member (which would leave a stale number key).
fn last_write_per_id(members: &[CachedMember]) -> Vec<&CachedMember> {
    let mut position: HashMap<UserId, usize> = HashMap::with_capacity(members.len());
    let mut out: Vec<&CachedMember> = Vec::with_capacity(members.len());
    for m in members {
        match position.get(&m.member.user_id) {
            Some(&i) => out[i] = m,
            None => {
                position.insert(m.member.user_id, out.len());
                out.push(m);
            }
        }
    }
    out
}

fn parse_indexed_id(index: &str, raw: &str) -> Result<UserId, StoreError> {
    UserId::parse(raw).map_err(|e| StoreError::Corrupt(format!("{index} holds {raw:?}: {e}")))
}

/// Longest value Redis keeps in a compact (listpack) hash with its default
/// `hash-max-listpack-value`. One longer value turns the whole hash into a
/// hashtable, which costs more than twice the memory (measured: 1 076 B
/// instead of 456 B for a member with a 91-byte avatar URL).
pub const LISTPACK_VALUE_MAX: usize = 64;

/// Appends `name = value`, a value longer than [`LISTPACK_VALUE_MAX`] bytes
/// cut into pieces `name`, `name:2`, `name:3`, … at character boundaries, so
/// `HGETALL` still reads naturally and the hash stays a listpack.
fn push_field(out: &mut Vec<(String, String)>, name: &str, value: &str) {
    if value.len() <= LISTPACK_VALUE_MAX {
        out.push((name.to_owned(), value.to_owned()));
        return;
    }
    let mut start = 0;
    let mut piece = 1;
    let mut emit = |out: &mut Vec<(String, String)>, text: &str| {
        let field = if piece == 1 {
            name.to_owned()
        } else {
            format!("{name}:{piece}")
        };
        out.push((field, text.to_owned()));
        piece += 1;
    };
    for (i, c) in value.char_indices() {
        if i + c.len_utf8() - start > LISTPACK_VALUE_MAX {
            emit(out, &value[start..i]);
            start = i;
        }
    }
    emit(out, &value[start..]);
}

/// Takes a text field written by [`push_field`], joining its pieces.
fn take_text(fields: &mut HashMap<String, String>, name: &str) -> String {
    let mut value = fields.remove(name).unwrap_or_default();
    for piece in 2.. {
        match fields.remove(&format!("{name}:{piece}")) {
            Some(more) => value.push_str(&more),
            None => break,
        }
    }
    value
}

/// The hash fields, all as strings, in the seed's order (seed §4.2.1); long
/// text values in pieces (see [`push_field`]).
fn hash_fields(m: &CachedMember) -> Vec<(String, String)> {
    let member = &m.member;
    let mut out = Vec::with_capacity(14);
    out.push(("user_id".to_owned(), member.user_id.to_string()));
    let number = member.number.map(|n| n.to_string()).unwrap_or_default();
    out.push(("number".to_owned(), number));
    for (name, value) in [
        ("name", &member.name),
        ("unique_id", &member.unique_id),
        ("avatar_url", &member.avatar_url),
        ("join_time", &member.join_time),
        ("status", &member.status),
        ("expired_time", &member.expired_time),
        ("introduction", &member.introduction),
    ] {
        push_field(&mut out, name, value);
    }
    out.push(("cached_at".to_owned(), m.cached_at.to_string()));
    out.push(("updated_at".to_owned(), m.updated_at.to_string()));
    out
}

/// Rebuilds a record from its hash. Identity and bookkeeping fields must be
/// present and well-formed; descriptive strings default to empty, as the
/// upstream omits them freely.
fn member_from_hash(
    id: UserId,
    mut fields: HashMap<String, String>,
) -> Result<CachedMember, StoreError> {
    let key = keys::user(id);
    let mut required = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| StoreError::Corrupt(format!("{key} lacks field {name}")))
    };
    let raw_id = required("user_id")?;
    let raw_number = required("number")?;
    let raw_cached_at = required("cached_at")?;
    let raw_updated_at = required("updated_at")?;
    let corrupt =
        |name: &str, raw: &str| StoreError::Corrupt(format!("{key} field {name} is {raw:?}"));

    let user_id = UserId::parse(&raw_id).map_err(|_| corrupt("user_id", &raw_id))?;
    if user_id != id {
        return Err(corrupt("user_id", &raw_id));
    }
    // "" is a member without a number, anything else must be one.
    let number = match raw_number.as_str() {
        "" => None,
        raw => Some(MemberNumber::parse(raw).map_err(|_| corrupt("number", raw))?),
    };
    let cached_at = raw_cached_at
        .parse()
        .map_err(|_| corrupt("cached_at", &raw_cached_at))?;
    let updated_at = raw_updated_at
        .parse()
        .map_err(|_| corrupt("updated_at", &raw_updated_at))?;
    let mut text = |name: &str| take_text(&mut fields, name);
    Ok(CachedMember {
        member: Member {
            user_id,
            number,
            name: text("name"),
            unique_id: text("unique_id"),
            avatar_url: text("avatar_url"),
            join_time: text("join_time"),
            status: text("status"),
            expired_time: text("expired_time"),
            introduction: text("introduction"),
        },
        cached_at,
        updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CachedMember {
        CachedMember {
            member: Member {
                user_id: UserId::parse("454881884228").unwrap(),
                number: MemberNumber::parse("177").ok(),
                name: "青弦 🎯".into(),
                unique_id: String::new(),
                avatar_url: "https://images.zsxq.com/a.jpg".into(),
                join_time: "2024-09-04T22:39:05.287+0800".into(),
                status: "joined".into(),
                expired_time: "2026-09-04T22:39:05.287+0800".into(),
                introduction: "高级前端开发工程师".into(),
            },
            cached_at: 1_730_080_000_000,
            updated_at: 1_730_080_000_001,
        }
    }

    #[test]
    fn a_record_survives_the_trip_through_hash_fields() {
        let m = sample();
        let fields: HashMap<String, String> = hash_fields(&m).into_iter().collect();
        assert_eq!(member_from_hash(m.member.user_id, fields).unwrap(), m);
    }

    #[test]
    fn long_values_travel_in_listpack_sized_pieces_and_come_back_whole() {
        let mut m = sample();
        m.member.avatar_url = format!(
            "https://images.zsxq.com/F{}?imageMogr2/auto-orient/thumbnail/150x/format/jpg",
            "a1b2c3d4e5f60718"
        );
        m.member.introduction =
            "高级前端开发工程师，专注性能优化与工程化，业余跑马拉松 🏃".repeat(3);
        let fields = hash_fields(&m);
        assert!(fields.iter().all(|(_, v)| v.len() <= LISTPACK_VALUE_MAX));
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"avatar_url:2"), "{names:?}");
        assert!(names.contains(&"introduction:3"), "{names:?}");
        let map: HashMap<String, String> = fields.into_iter().collect();
        assert_eq!(member_from_hash(m.member.user_id, map).unwrap(), m);
    }

    #[test]
    fn commands_group_by_slot_in_first_seen_order() {
        assert_eq!(group_by_slot([None, None, None]), vec![vec![0, 1, 2]]);
        let (a, b) = (
            Some(Slot::for_key("zsxq:user:1")),
            Some(Slot::for_key("zsxq:user:2")),
        );
        assert_ne!(a, b);
        assert_eq!(group_by_slot([b, a, b, a]), vec![vec![0, 2], vec![1, 3]]);
        assert!(group_by_slot([]).is_empty());
    }

    #[test]
    fn byte_counts_print_as_redis_prints_used_memory_human() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1_536), "1.50K");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.00M");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.00G");
    }

    #[test]
    fn a_gone_lease_reads_back_as_not_member() {
        assert_eq!(
            parse_gone("gone:1037:user left: the group"),
            Some(LeaseState::NotMember {
                code: 1037,
                message: "user left: the group".into()
            })
        );
        assert_eq!(parse_gone("0123abcd"), None);
    }

    #[test]
    fn a_hash_with_a_bad_number_or_foreign_id_is_corrupt() {
        let m = sample();
        let base: HashMap<String, String> = hash_fields(&m).into_iter().collect();

        let mut bad_number = base.clone();
        bad_number.insert("number".into(), "abc".into());
        assert!(matches!(
            member_from_hash(m.member.user_id, bad_number),
            Err(StoreError::Corrupt(_))
        ));

        let other = UserId::parse("1").unwrap();
        assert!(matches!(
            member_from_hash(other, base.clone()),
            Err(StoreError::Corrupt(_))
        ));

        let mut missing = base;
        missing.remove("cached_at");
        assert!(matches!(
            member_from_hash(m.member.user_id, missing),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_batch_keeps_only_the_last_write_of_each_member() {
        let first = sample();
        let mut second = sample();
        second.member.number = MemberNumber::parse("178").ok();
        let mut other = sample();
        other.member.user_id = UserId::parse("2").unwrap();
        let batch = [first, other.clone(), second.clone()];
        let kept = last_write_per_id(&batch);
        assert_eq!(kept, vec![&second, &other]);
    }
}
