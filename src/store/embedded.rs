//! The embedded store: one redb file, so the service caches members with no
//! Redis at all (the default). redb is ACID and copy-on-write: a commit is
//! durable and a crash leaves the last committed state, so the cache survives
//! restarts without a warm-up storm against the throttled upstream.
//!
//! Tables mirror the Redis layout:
//! - `records`: user_id → JSON of the record plus its expiry (unix ms);
//! - `numbers`: member number → user_id;
//! - `idx_number` (number, user_id), `idx_join_time` (join ms, user_id):
//!   ordered keys for paging, the id kept as its decimal string so members
//!   with equal scores come out in the same order as a Redis sorted set
//!   (lexicographic by member);
//! - `idx_expiry` (expires ms, user_id): finds expired members without
//!   reading the others;
//! - `stats_counters` and `stats_meta`: the counters and last sync time;
//! - `rankings`: checkin_id → expiry (8 bytes, big-endian unix ms) followed
//!   by the refund module's opaque snapshot. Few camps, so expired entries
//!   are dropped by a full walk of this table on each write;
//!   `rankings_continuous` the same for continuous rankings.
//! - `refund_marks`, `refund_log`: a camp's refund marks and audit log
//!   (`embedded/marks.rs`), records that `clear` leaves alone.
//!
//! Decisions:
//! - **Time comes from the injected clock**, not from redb, so a test moves a
//!   [`ManualClock`](crate::clock::ManualClock) 24 h ahead instead of waiting.
//!   A record is alive while `expires_at > now`; reads filter on it, and
//!   writes plus `count`/`page` delete what has expired (O(expired)).
//! - **One write transaction per call**: a batch of members, their number
//!   entries and index entries commit together or not at all.
//! - **redb is blocking**, so every call runs on Tokio's blocking pool and
//!   never stalls the async workers. redb serialises writers itself.
//! - **Same observable behaviour as Redis**, down to `clear`'s counts: it
//!   reports the keys the Redis layout would have held (member hashes, number
//!   keys, the set and three indexes, the counters hash). Paging skips
//!   `offset` rows by walking them, O(offset + page), which is fine for the
//!   member counts of one group.
//! - Stale number entries cannot mislead: `user_id_by_number` checks the
//!   record's current number, as the Redis store does.

mod marks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::{
    ClearReport, LeaseEnd, LeaseState, Page, PageRequest, STAT_LAST_SYNC_TIME, SortBy, SortOrder,
    StatCounters, Store, StoreError, StoredStats, human_bytes, number_sort_key, ttl_millis,
};
use crate::clock::Clock;
use crate::domain::{CachedMember, CheckinId, MemberNumber, RankingType, UserId};
use crate::store::marks::{MarkChange, Persistence, RefundLogEntry, RefundMark};
use crate::store::{RankingKey, StoredRanking};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const NUMBERS: TableDefinition<u64, u64> = TableDefinition::new("numbers");
const IDX_NUMBER: TableDefinition<(u64, &str), ()> = TableDefinition::new("idx_number");
const IDX_JOIN_TIME: TableDefinition<(i64, &str), ()> = TableDefinition::new("idx_join_time");
const IDX_EXPIRY: TableDefinition<(i64, u64), ()> = TableDefinition::new("idx_expiry");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("stats_counters");
const META: TableDefinition<&str, i64> = TableDefinition::new("stats_meta");
const RANKINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("rankings");
/// Continuous rankings, apart from the accumulated ones (`rankings`, the
/// table existing stores already hold) so neither is read as the other.
const RANKINGS_CONTINUOUS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("rankings_continuous");

/// The table that keeps rankings of type `kind`.
fn rankings_table(kind: RankingType) -> TableDefinition<'static, u64, &'static [u8]> {
    match kind {
        RankingType::Accumulated => RANKINGS,
        RankingType::Continuous => RANKINGS_CONTINUOUS,
    }
}
/// The installation's identity towards the upstream (`device_id`); `clear`
/// leaves it alone.
const DEVICE: TableDefinition<&str, &str> = TableDefinition::new("device");

/// Bytes of the expiry header in front of every `rankings` value.
const RANKING_HEADER: usize = 8;

/// Keys besides member hashes and number keys that the Redis layout holds
/// while members are cached: `users:all` and the three sorted indexes.
const REDIS_MEMBERSHIP_KEYS: u64 = 4;

/// What `records` holds per member.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    /// The member exactly as the caller wrote it (cached_at included).
    record: CachedMember,
    /// Unix ms by the store's clock; the member is gone at this instant.
    expires_at: i64,
}

impl Row {
    fn alive(&self, now: i64) -> bool {
        self.expires_at > now
    }
}

/// Members, indexes and counters in a redb file.
pub struct EmbeddedStore {
    /// Shared with the blocking tasks that do the work.
    inner: Arc<Inner>,
}

struct Inner {
    /// redb's handle is `Sync` and serialises writers itself, so no lock of
    /// ours is needed around it.
    db: Database,
    /// Kept for `memory_usage` (the file size).
    path: PathBuf,
    /// Decides expiry; injected so tests can jump ahead in time.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the database file at `path`, creating it (and its parent
    /// directories) and every table if needed. Existing data is kept.
    /// Blocks briefly (file open, one commit); meant for start-up.
    /// If another handle in this process still holds the file (a command
    /// that just finished, whose background work is still letting go), the
    /// open waits up to two seconds for it; a file held longer — usually a
    /// running `serve` — is refused with a message that says so.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Embedded(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let db = create_waiting_for_release(path)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            // Opening a table in a write transaction creates it, so read
            // transactions never meet a missing table.
            txn.open_table(RECORDS).map_err(db_err)?;
            txn.open_table(NUMBERS).map_err(db_err)?;
            txn.open_table(IDX_NUMBER).map_err(db_err)?;
            txn.open_table(IDX_JOIN_TIME).map_err(db_err)?;
            txn.open_table(IDX_EXPIRY).map_err(db_err)?;
            txn.open_table(COUNTERS).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
            for kind in RankingType::ALL {
                txn.open_table(rankings_table(kind)).map_err(db_err)?;
            }
            txn.open_table(marks::MARKS).map_err(db_err)?;
            txn.open_table(marks::LOG).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path: path.to_owned(),
                clock,
            }),
        })
    }

    /// Runs `work` on the blocking pool.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| StoreError::Embedded(format!("store task failed: {e}")))?
    }

    /// Reads the record of each of `ids` in one read transaction, `None`
    /// where absent or expired, and answers `seen` of it in the same order.
    async fn read_alive<T, F>(&self, ids: &[UserId], seen: F) -> Result<Vec<T>, StoreError>
    where
        T: Send + 'static,
        F: Fn(Option<Row>) -> T + Send + 'static,
    {
        let ids = ids.to_vec();
        self.blocking(move |inner| {
            let now = inner.clock.now_ms();
            let txn = inner.db.begin_read().map_err(db_err)?;
            let records = txn.open_table(RECORDS).map_err(db_err)?;
            ids.iter()
                .map(|&id| Ok(seen(read_row(&records, id)?.filter(|row| row.alive(now)))))
                .collect()
        })
        .await
    }
}

impl Inner {
    /// Deletes expired members if any are due; a read transaction decides,
    /// so the common case takes no write lock.
    fn prune_if_due(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let due = {
            let txn = self.db.begin_read().map_err(db_err)?;
            let expiry = txn.open_table(IDX_EXPIRY).map_err(db_err)?;
            let first = expiry.first().map_err(db_err)?;
            first.is_some_and(|(key, _)| key.value().0 <= now)
        };
        if due {
            let txn = self.db.begin_write().map_err(db_err)?;
            prune_expired(&txn, now)?;
            txn.commit().map_err(db_err)?;
        }
        Ok(())
    }
}

/// redb's own page cache. Its default, 1 GiB, keeps every page a sync
/// wrote: the service's RSS after syncing 100 000 members was 106 MB and
/// grew with the file (about 300 MB at 300 000). At 4 MiB it is 28 MB at
/// both sizes (16 MiB: 52 and 59 MB; `zsxq-bench memory`), and a sync of
/// 100 000 took 13 s against 22 s, of 300 000 68 s against 60 s: the pages
/// it does not keep are in the kernel's page cache, which is not the
/// process's RSS and is given back under pressure.
const PAGE_CACHE_BYTES: usize = 4 << 20;

/// How long `open` waits for a handle that is being released.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn create_waiting_for_release(path: &Path) -> Result<Database, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match Database::builder()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(path)
        {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < RELEASE_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Embedded(format!(
                    "{} is already open (is `zsxq-cache serve` running with it? stop it, or use Redis)",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(StoreError::Embedded(format!(
                    "cannot open {}: {e}",
                    path.display()
                )));
            }
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn get_members(&self, ids: &[UserId]) -> Result<Vec<Option<CachedMember>>, StoreError> {
        self.read_alive(ids, |row| row.map(|row| row.record)).await
    }

    async fn user_id_by_number(&self, number: MemberNumber) -> Result<Option<UserId>, StoreError> {
        self.blocking(move |inner| {
            let now = inner.clock.now_ms();
            let txn = inner.db.begin_read().map_err(db_err)?;
            let numbers = txn.open_table(NUMBERS).map_err(db_err)?;
            let Some(raw) = numbers.get(number.get()).map_err(db_err)? else {
                return Ok(None);
            };
            let id = UserId::new(raw.value())
                .ok_or_else(|| StoreError::Corrupt(format!("number {number} maps to user 0")))?;
            let records = txn.open_table(RECORDS).map_err(db_err)?;
            let current = read_row(&records, id)?
                .filter(|row| row.alive(now) && row.record.member.number == Some(number));
            Ok(current.map(|_| id))
        })
        .await
    }

    async fn put_members(&self, members: &[CachedMember], ttl: Duration) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let members = members.to_vec();
        let ttl_ms = ttl_millis(ttl);
        self.blocking(move |inner| {
            let now = inner.clock.now_ms();
            let expires_at = now.saturating_add(ttl_ms);
            let txn = inner.db.begin_write().map_err(db_err)?;
            {
                let mut records = txn.open_table(RECORDS).map_err(db_err)?;
                let mut numbers = txn.open_table(NUMBERS).map_err(db_err)?;
                let mut by_number = txn.open_table(IDX_NUMBER).map_err(db_err)?;
                let mut by_join = txn.open_table(IDX_JOIN_TIME).map_err(db_err)?;
                let mut by_expiry = txn.open_table(IDX_EXPIRY).map_err(db_err)?;
                for m in &members {
                    let id = m.member.user_id;
                    let id_text = id.to_string();
                    if let Some(old) = read_row(&records, id)? {
                        let old_member = &old.record.member;
                        by_number
                            .remove((number_sort_key(old_member.number), id_text.as_str()))
                            .map_err(db_err)?;
                        by_join
                            .remove((old_member.join_time_ms(), id_text.as_str()))
                            .map_err(db_err)?;
                        by_expiry
                            .remove((old.expires_at, id.get()))
                            .map_err(db_err)?;
                        if let Some(old_number) = old_member.number
                            && old_member.number != m.member.number
                        {
                            let points_here = numbers
                                .get(old_number.get())
                                .map_err(db_err)?
                                .is_some_and(|v| v.value() == id.get());
                            if points_here {
                                numbers.remove(old_number.get()).map_err(db_err)?;
                            }
                        }
                    }
                    let row = Row {
                        record: m.clone(),
                        expires_at,
                    };
                    let bytes = serde_json::to_vec(&row)
                        .map_err(|e| StoreError::Embedded(format!("cannot encode record: {e}")))?;
                    records.insert(id.get(), bytes.as_slice()).map_err(db_err)?;
                    if let Some(number) = m.member.number {
                        numbers.insert(number.get(), id.get()).map_err(db_err)?;
                    }
                    by_number
                        .insert((number_sort_key(m.member.number), id_text.as_str()), ())
                        .map_err(db_err)?;
                    by_join
                        .insert((m.member.join_time_ms(), id_text.as_str()), ())
                        .map_err(db_err)?;
                    by_expiry
                        .insert((expires_at, id.get()), ())
                        .map_err(db_err)?;
                }
            }
            // Writes are the natural moment to drop what expired meanwhile,
            // so the file does not keep dead members until the next page.
            prune_expired(&txn, now)?;
            txn.commit().map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn cached_ids(&self, ids: &[UserId]) -> Result<Vec<bool>, StoreError> {
        self.read_alive(ids, |row| row.is_some()).await
    }

    async fn page(&self, request: PageRequest) -> Result<Page, StoreError> {
        self.blocking(move |inner| {
            inner.prune_if_due()?;
            let now = inner.clock.now_ms();
            let txn = inner.db.begin_read().map_err(db_err)?;
            let (total, ids) = match request.sort {
                SortBy::Number => page_ids(&txn, IDX_NUMBER, request)?,
                SortBy::JoinTime => page_ids(&txn, IDX_JOIN_TIME, request)?,
            };
            let records = txn.open_table(RECORDS).map_err(db_err)?;
            let mut members = Vec::with_capacity(ids.len());
            for raw in ids {
                let id = UserId::parse(&raw)
                    .map_err(|e| StoreError::Corrupt(format!("index holds {raw:?}: {e}")))?;
                // A member that expired since pruning is skipped, as the
                // Redis store skips a hash that vanished.
                if let Some(row) = read_row(&records, id)?.filter(|row| row.alive(now)) {
                    members.push(row.record);
                }
            }
            Ok(Page { members, total })
        })
        .await
    }

    async fn oldest(&self, limit: u64) -> Result<Vec<UserId>, StoreError> {
        self.blocking(move |inner| {
            inner.prune_if_due()?;
            let txn = inner.db.begin_read().map_err(db_err)?;
            let expiry = txn.open_table(IDX_EXPIRY).map_err(db_err)?;
            let mut ids = Vec::new();
            for entry in expiry.iter().map_err(db_err)? {
                if ids.len() as u64 >= limit {
                    break;
                }
                let (key, _) = entry.map_err(db_err)?;
                let (_, id) = key.value();
                let id = UserId::new(id)
                    .ok_or_else(|| StoreError::Corrupt("expiry index holds id 0".into()))?;
                ids.push(id);
            }
            Ok(ids)
        })
        .await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| {
            inner.prune_if_due()?;
            let txn = inner.db.begin_read().map_err(db_err)?;
            let records = txn.open_table(RECORDS).map_err(db_err)?;
            records.len().map_err(db_err)
        })
        .await
    }

    async fn clear(&self) -> Result<ClearReport, StoreError> {
        self.blocking(|inner| {
            let now = inner.clock.now_ms();
            let txn = inner.db.begin_write().map_err(db_err)?;
            let mut report = ClearReport::default();
            {
                let mut records = txn.open_table(RECORDS).map_err(db_err)?;
                let mut numbers = txn.open_table(NUMBERS).map_err(db_err)?;
                let mut alive_ids = std::collections::HashSet::new();
                for entry in records.iter().map_err(db_err)? {
                    let (key, value) = entry.map_err(db_err)?;
                    // A record that cannot be decoded still occupied a key;
                    // clearing is how corruption gets fixed, so never fail.
                    let alive = decode_row(key.value(), value.value())
                        .map(|row| row.alive(now))
                        .unwrap_or(true);
                    if alive {
                        alive_ids.insert(key.value());
                    }
                }
                let mut live_numbers = 0u64;
                for entry in numbers.iter().map_err(db_err)? {
                    let (_, id) = entry.map_err(db_err)?;
                    live_numbers += u64::from(alive_ids.contains(&id.value()));
                }
                let members = alive_ids.len() as u64;
                report.deleted_users = members;
                report.deleted_keys = members + live_numbers;
                if members > 0 {
                    report.deleted_keys += REDIS_MEMBERSHIP_KEYS;
                }
                records.retain(|_, _| false).map_err(db_err)?;
                numbers.retain(|_, _| false).map_err(db_err)?;
                txn.open_table(IDX_NUMBER)
                    .map_err(db_err)?
                    .retain(|_, _| false)
                    .map_err(db_err)?;
                txn.open_table(IDX_JOIN_TIME)
                    .map_err(db_err)?
                    .retain(|_, _| false)
                    .map_err(db_err)?;
                txn.open_table(IDX_EXPIRY)
                    .map_err(db_err)?
                    .retain(|_, _| false)
                    .map_err(db_err)?;
                let mut counters = txn.open_table(COUNTERS).map_err(db_err)?;
                let mut meta = txn.open_table(META).map_err(db_err)?;
                if !counters.is_empty().map_err(db_err)? || !meta.is_empty().map_err(db_err)? {
                    // The Redis stats hash.
                    report.deleted_keys += 1;
                }
                counters.retain(|_, _| false).map_err(db_err)?;
                meta.retain(|_, _| false).map_err(db_err)?;
                // Each live ranking is one `zsxq:ranking:*` key in Redis.
                for kind in RankingType::ALL {
                    let mut rankings = txn.open_table(rankings_table(kind)).map_err(db_err)?;
                    for entry in rankings.iter().map_err(db_err)? {
                        let (_, value) = entry.map_err(db_err)?;
                        if ranking_alive(value.value(), now) {
                            report.deleted_keys += 1;
                        }
                    }
                    rankings.retain(|_, _| false).map_err(db_err)?;
                }
            }
            txn.commit().map_err(db_err)?;
            Ok(report)
        })
        .await
    }

    async fn add_stats(&self, delta: &StatCounters) -> Result<(), StoreError> {
        if delta.is_zero() {
            return Ok(());
        }
        let delta = *delta;
        self.blocking(move |inner| {
            let txn = inner.db.begin_write().map_err(db_err)?;
            {
                let mut counters = txn.open_table(COUNTERS).map_err(db_err)?;
                for (name, add) in delta.fields() {
                    let current = counters.get(name).map_err(db_err)?.map_or(0, |v| v.value());
                    counters
                        .insert(name, current.saturating_add(add))
                        .map_err(db_err)?;
                }
            }
            txn.commit().map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn get_ranking(&self, key: RankingKey) -> Result<Option<Vec<u8>>, StoreError> {
        let RankingKey { checkin, kind } = key;
        self.blocking(move |inner| {
            let now = inner.clock.now_ms();
            let txn = inner.db.begin_read().map_err(db_err)?;
            let rankings = txn.open_table(rankings_table(kind)).map_err(db_err)?;
            let Some(value) = rankings.get(checkin.get()).map_err(db_err)? else {
                return Ok(None);
            };
            let bytes = value.value();
            if bytes.len() < RANKING_HEADER {
                return Err(StoreError::Corrupt(format!(
                    "ranking of camp {checkin} is {} bytes, shorter than its header",
                    bytes.len()
                )));
            }
            Ok(ranking_alive(bytes, now).then(|| bytes[RANKING_HEADER..].to_vec()))
        })
        .await
    }

    async fn put_ranking(&self, ranking: &StoredRanking<'_>) -> Result<(), StoreError> {
        let RankingKey { checkin, kind } = ranking.key;
        let mut value = Vec::with_capacity(RANKING_HEADER + ranking.bytes.len());
        let ttl_ms = ttl_millis(ranking.ttl);
        value.extend_from_slice(&[0; RANKING_HEADER]);
        value.extend_from_slice(ranking.bytes);
        self.blocking(move |inner| {
            let now = inner.clock.now_ms();
            let expires_at = now.saturating_add(ttl_ms);
            value[..RANKING_HEADER].copy_from_slice(&expires_at.to_be_bytes());
            let txn = inner.db.begin_write().map_err(db_err)?;
            {
                let mut rankings = txn.open_table(rankings_table(kind)).map_err(db_err)?;
                rankings
                    .retain(|_, bytes| ranking_alive(bytes, now))
                    .map_err(db_err)?;
                rankings
                    .insert(checkin.get(), value.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn set_last_sync_time(&self, ms: i64) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            let txn = inner.db.begin_write().map_err(db_err)?;
            txn.open_table(META)
                .map_err(db_err)?
                .insert(STAT_LAST_SYNC_TIME, ms)
                .map_err(db_err)?;
            txn.commit().map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn stats(&self) -> Result<StoredStats, StoreError> {
        self.blocking(|inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            let counters = txn.open_table(COUNTERS).map_err(db_err)?;
            let meta = txn.open_table(META).map_err(db_err)?;
            let counter = |name: &str| -> Result<u64, StoreError> {
                Ok(counters.get(name).map_err(db_err)?.map_or(0, |v| v.value()))
            };
            Ok(StoredStats {
                counters: StatCounters::read_fields(counter)?,
                last_sync_time: meta
                    .get(STAT_LAST_SYNC_TIME)
                    .map_err(db_err)?
                    .map(|v| v.value()),
            })
        })
        .await
    }

    async fn memory_usage(&self) -> Result<String, StoreError> {
        let metadata = tokio::fs::metadata(&self.inner.path).await.map_err(|e| {
            StoreError::Embedded(format!("cannot stat {}: {e}", self.inner.path.display()))
        })?;
        Ok(human_bytes(metadata.len()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|inner| {
            let txn = inner.db.begin_read().map_err(db_err)?;
            txn.open_table(RECORDS).map_err(db_err)?;
            Ok(())
        })
        .await
    }

    /// One process owns the file (redb locks it), and the cache's
    /// singleflight already makes one upstream call per member in a process:
    /// there is nobody to lease against.
    async fn try_lease(&self, _: UserId, _: &str, _: Duration) -> Result<LeaseState, StoreError> {
        Ok(LeaseState::Granted)
    }

    async fn end_lease(&self, _: UserId, _: &str, _: LeaseEnd) -> Result<(), StoreError> {
        Ok(())
    }

    async fn device_id(&self, candidate: &str) -> Result<String, StoreError> {
        let candidate = candidate.to_owned();
        self.blocking(move |inner| {
            // One write transaction: read and insert cannot interleave.
            let txn = inner.db.begin_write().map_err(db_err)?;
            let id = {
                let mut table = txn.open_table(DEVICE).map_err(db_err)?;
                let stored = table
                    .get("aduid")
                    .map_err(db_err)?
                    .map(|v| v.value().to_owned());
                match stored {
                    Some(id) => id,
                    None => {
                        table.insert("aduid", candidate.as_str()).map_err(db_err)?;
                        candidate
                    }
                }
            };
            txn.commit().map_err(db_err)?;
            Ok(id)
        })
        .await
    }

    /// Nothing to tell: no other process reads this file while we hold it.
    fn events_origin(&self) -> Option<String> {
        None
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

    /// A redb commit is durable (fsync) before it returns.
    async fn persistence(&self) -> Result<Persistence, StoreError> {
        Ok(Persistence::Durable)
    }
}

/// Whether a `rankings` value (expiry header + snapshot) is still alive at
/// `now`. A value too short to hold the header counts as alive, so that
/// reading reports it as corrupt and `clear` counts and removes it.
fn ranking_alive(bytes: &[u8], now: i64) -> bool {
    match bytes.first_chunk::<RANKING_HEADER>() {
        Some(header) => i64::from_be_bytes(*header) > now,
        None => true,
    }
}

/// Deletes every member whose expiry is at or before `now`, with its number
/// entry (if it still points to it) and index entries.
fn prune_expired(txn: &WriteTransaction, now: i64) -> Result<(), StoreError> {
    let mut by_expiry = txn.open_table(IDX_EXPIRY).map_err(db_err)?;
    let due: Vec<(i64, u64)> = by_expiry
        .range::<(i64, u64)>(..=(now, u64::MAX))
        .map_err(db_err)?
        .map(|entry| entry.map(|(key, _)| key.value()).map_err(db_err))
        .collect::<Result<_, _>>()?;
    if due.is_empty() {
        return Ok(());
    }
    let mut records = txn.open_table(RECORDS).map_err(db_err)?;
    let mut numbers = txn.open_table(NUMBERS).map_err(db_err)?;
    let mut by_number = txn.open_table(IDX_NUMBER).map_err(db_err)?;
    let mut by_join = txn.open_table(IDX_JOIN_TIME).map_err(db_err)?;
    for (expires_at, raw_id) in due {
        by_expiry.remove((expires_at, raw_id)).map_err(db_err)?;
        let Some(id) = UserId::new(raw_id) else {
            continue;
        };
        let row = read_row(&records, id)?;
        // Only the entry matching the record's current expiry means the
        // record itself is due; any other is a leftover.
        let Some(row) = row.filter(|row| row.expires_at == expires_at) else {
            continue;
        };
        let member = &row.record.member;
        let id_text = id.to_string();
        records.remove(raw_id).map_err(db_err)?;
        by_number
            .remove((number_sort_key(member.number), id_text.as_str()))
            .map_err(db_err)?;
        by_join
            .remove((member.join_time_ms(), id_text.as_str()))
            .map_err(db_err)?;
        let Some(number) = member.number else {
            continue;
        };
        let points_here = numbers
            .get(number.get())
            .map_err(db_err)?
            .is_some_and(|v| v.value() == raw_id);
        if points_here {
            numbers.remove(number.get()).map_err(db_err)?;
        }
    }
    Ok(())
}

/// The size of a sorted index and the ids of the page `request` asks for,
/// walking `offset` entries first. Both indexes key on (score, id as text).
fn page_ids<S>(
    txn: &ReadTransaction,
    table: TableDefinition<(S, &'static str), ()>,
    request: PageRequest,
) -> Result<(u64, Vec<String>), StoreError>
where
    S: redb::Key + 'static,
{
    let index = txn.open_table(table).map_err(db_err)?;
    let total = index.len().map_err(db_err)?;
    let entries = index.iter().map_err(db_err)?;
    let entries: Box<dyn Iterator<Item = _>> = match request.order {
        SortOrder::Asc => Box::new(entries),
        SortOrder::Desc => Box::new(entries.rev()),
    };
    let ids = entries
        .skip(usize::try_from(request.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(request.limit).unwrap_or(usize::MAX))
        .map(|entry| {
            entry
                .map(|(key, _)| key.value().1.to_owned())
                .map_err(db_err)
        })
        .collect::<Result<_, _>>()?;
    Ok((total, ids))
}

/// Reads and decodes one record.
fn read_row(
    records: &impl ReadableTable<u64, &'static [u8]>,
    id: UserId,
) -> Result<Option<Row>, StoreError> {
    match records.get(id.get()).map_err(db_err)? {
        None => Ok(None),
        Some(bytes) => decode_row(id.get(), bytes.value()).map(Some),
    }
}

fn decode_row(raw_id: u64, bytes: &[u8]) -> Result<Row, StoreError> {
    let row: Row = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("record of user {raw_id}: {e}")))?;
    if row.record.member.user_id.get() != raw_id {
        return Err(StoreError::Corrupt(format!(
            "record under user {raw_id} belongs to user {}",
            row.record.member.user_id
        )));
    }
    Ok(row)
}

/// Every redb error (open, transaction, table, storage, commit) as a store
/// error; the message keeps redb's own wording for diagnosis.
fn db_err(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Embedded(error.into().to_string())
}
