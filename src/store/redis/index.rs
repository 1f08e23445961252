//! Upkeep of the id set and the sorted indexes: what a write adds, what
//! expiry takes away (pruning, forgetting, putting back), and the reads that
//! rely on them — pages, the soonest-expiring members, the count.

use std::collections::HashMap;

use super::RedisStore;
use super::codec::member_from_hash;
use super::scripts::EXTEND_TTL;
use super::transport::{Batch, Replay, decode, eval};
use crate::domain::{CachedMember, UserId};
use crate::store::{Page, PageRequest, SortBy, SortOrder, StoreError, keys, number_sort_key};

/// Ids examined per pruning step; keeps each script call short so Redis is
/// never blocked noticeably.
const PRUNE_BATCH: usize = 200;

/// How often `page` re-reads after finding ids whose hash vanished between
/// pruning and reading (eviction, concurrent expiry).
const PAGE_ATTEMPTS: usize = 3;

/// The sorted indexes, in one hash slot (`{idx}` tag) so that a cluster can
/// update them together.
const INDEX_KEYS: [&str; 3] = [keys::IDX_NUMBER, keys::IDX_JOIN_TIME, keys::IDX_EXPIRY];

/// What the set and the indexes record of one member.
pub(super) struct IndexEntry {
    /// The member in the id set and the member of every sorted-set entry.
    id: UserId,
    /// Score in `idx:number` ([`number_sort_key`]: numberless members last).
    number: u64,
    /// Score in `idx:join_time`.
    join_ms: i64,
    /// Score in `idx:expiry`: when the hash expires, unix ms by the store's
    /// clock.
    expires_at: i64,
}

impl IndexEntry {
    pub(super) fn of(m: &CachedMember, expires_at: i64) -> Self {
        Self {
            id: m.member.user_id,
            number: number_sort_key(m.member.number),
            join_ms: m.member.join_time_ms(),
            expires_at,
        }
    }
}

impl RedisStore {
    /// Forgets set and index entries of members that expired by now. Walks
    /// only entries due by now, [`PRUNE_BATCH`] at a time; an entry whose
    /// hash is still alive (rewritten, or clocks differ) is skipped over.
    pub(super) async fn prune_expired(&self) -> Result<(), StoreError> {
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
            let alive = self.hashes_exist(&ids).await?;
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
    pub(super) async fn forget(&self, ids: &[UserId]) -> Result<u64, StoreError> {
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

        let alive = self.hashes_exist(ids).await?;
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
    pub(super) async fn reindex(&self, ids: &[UserId]) -> Result<u64, StoreError> {
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
    /// to the id set, `ZADD`s to the indexes (one slot), and, when
    /// `ttl_ms` is given, a TTL extension of those shared keys.
    pub(super) fn push_index(
        &self,
        batch: &mut Batch,
        entries: &[IndexEntry],
        ttl_ms: Option<i64>,
    ) {
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

    /// One page of an index, as [`Store::page`](crate::store::Store::page)
    /// promises: pruned first, and re-read when ids turn out to have lost
    /// their hash in between.
    pub(super) async fn read_page(&self, request: PageRequest) -> Result<Page, StoreError> {
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

    /// The `limit` members whose entries expire first.
    pub(super) async fn soonest_expiring(&self, limit: u64) -> Result<Vec<UserId>, StoreError> {
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

    /// Members in the id set once expired ones are pruned.
    pub(super) async fn count_members(&self) -> Result<u64, StoreError> {
        self.prune_expired().await?;
        let scard = redis::cmd("SCARD").arg(keys::USERS_ALL).take();
        self.command(Replay::Idempotent, &scard, "SCARD reply")
            .await
    }
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

fn parse_indexed_id(index: &str, raw: &str) -> Result<UserId, StoreError> {
    UserId::parse(raw).map_err(|e| StoreError::Corrupt(format!("{index} holds {raw:?}: {e}")))
}
