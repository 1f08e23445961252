//! The three orderings of the cached members — by number, by join time, by
//! expiry — as bucketed sorted sets, and the reads and upkeep that rely on
//! them: pages, the soonest-expiring members, the count, pruning.
//!
//! **Why buckets.** One sorted set of every member is skiplist-encoded past
//! 128 entries and costs ~120 B an entry; three of them cost more than the
//! member's hash is worth. Redis keeps a sorted set of at most 128 entries
//! (its default `zset-max-listpack-entries`) whose members and scores are
//! short as one packed listpack, ~12–18 B an entry. So each ordering is
//! cut into buckets of at most 127 entries (127 entries of an id and a small
//! score fit jemalloc's 1 536-byte size class, 128 spill into the next),
//! plus a directory (`…:dir`, one entry per bucket: its lower bound) and a
//! count string (`…:count`, one byte per bucket in directory order). A
//! bucket that would overflow splits in the write script: in half, or —
//! when the new entry comes after all of the bucket's, as expiry times and
//! numbers written in order do — by starting a new bucket with it, so
//! buckets filled in order stay full. Scores in a bucket are kept relative
//! to its base (the number after `!` in its name), so they are small
//! integers with short encodings.
//!
//! **Order.** Entries are ordered by (score, member text) inside a bucket,
//! as one sorted set would order them, and the directory orders buckets the
//! same way: its members are `<lowest member>!<base>`, and `!` sorts before
//! every digit. A page is one call of `INDEX_PAGE`: the count string gives
//! the total and the first bucket, then O(page) reads, so page order, ties
//! and totals are those of one sorted set.
//!
//! **Forgetting.** Rewrites remove the old entries exactly: the write
//! script reports the old hash's number, join time and `PEXPIRETIME`, and
//! the hash expires at the very expiry score its index entry has
//! (`PEXPIREAT`). An expired or evicted hash can no longer say where its
//! entries are, so the number and join-time indexes are swept for it
//! (`INDEX_SWEEP`, O(members), once per pruning step that found members
//! gone): carrying the number and join time in every expiry entry would cost
//! ~22 B a member, the margin the layout has. Pages and pruning check every
//! entry they read against the hash and drop the ones that do not match (a
//! hash gone, or a stale entry left by two writers of one member racing), so
//! a leftover heals where it is read.

use std::collections::{HashMap, HashSet};

use super::RedisStore;
use super::codec::member_from_hash;
use super::scripts::{INDEX_FIND, INDEX_PAGE, INDEX_SWEEP, INDEX_WRITE};
use super::transport::{Batch, Replay, decode, eval};
use crate::domain::{CachedMember, MemberNumber, UserId};
use crate::store::{Page, PageRequest, SortBy, SortOrder, StoreError, keys, number_sort_key};

/// Expiry entries examined per pruning step. Forgetting the members found
/// gone sweeps the number and join-time indexes once per step (see
/// [`RedisStore::forget`]), so the step is large enough to make that sweep
/// rare, and small enough that a step's hash reads stay one quick batch.
const PRUNE_BATCH: u64 = 1_000;

/// How often `page` re-reads after finding entries whose hash vanished or
/// no longer matches between pruning and reading.
const PAGE_ATTEMPTS: usize = 3;

/// One of the three orderings; the value is its position in the index
/// scripts' KEYS ([`keys::INDEX_DIRS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Index {
    Number = 1,
    JoinTime = 2,
    Expiry = 3,
}

impl Index {
    fn dir(self) -> &'static str {
        keys::INDEX_DIRS[self as usize - 1]
    }
}

/// One entry of one index: its score and its member text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Entry {
    index: Index,
    score: i64,
    member: String,
}

/// Where a member stands in the three indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placement {
    pub(super) id: UserId,
    /// [`number_sort_key`]: numberless members last.
    pub(super) number: i64,
    pub(super) join_ms: i64,
    /// When the hash expires (unix ms), or `None` for a hash without TTL.
    pub(super) expires_at: Option<i64>,
}

impl Placement {
    pub(super) fn of(m: &CachedMember, expires_at: i64) -> Self {
        Self {
            id: m.member.user_id,
            number: sort_key(m.member.number),
            join_ms: m.member.join_time_ms(),
            expires_at: Some(expires_at),
        }
    }

    /// The member's entries: one per index (none in the expiry index for a
    /// hash without TTL, which Redis never expires).
    pub(super) fn entries(&self) -> Vec<Entry> {
        let id = self.id.to_string();
        let expiry = self.expires_at.map(|at| (Index::Expiry, at));
        [
            Some((Index::Number, self.number)),
            Some((Index::JoinTime, self.join_ms)),
            expiry,
        ]
        .into_iter()
        .flatten()
        .map(|(index, score)| Entry {
            index,
            score,
            member: id.clone(),
        })
        .collect()
    }
}

/// A member's score in the number index: [`number_sort_key`] as an `i64`.
pub(super) fn sort_key(number: Option<MemberNumber>) -> i64 {
    i64::try_from(number_sort_key(number)).unwrap_or(i64::MAX)
}

fn parse_id(index: Index, raw: &str) -> Result<UserId, StoreError> {
    UserId::parse(raw)
        .map_err(|e| StoreError::Corrupt(format!("{} holds {raw:?}: {e}", index.dir())))
}

/// A member whose entries the number and join-time indexes are swept of
/// ([`RedisStore::forget`]), but for the ones at the scores kept.
struct Sweep {
    id: UserId,
    keep_number: Option<i64>,
    keep_join: Option<i64>,
}

impl Sweep {
    /// Its hash is gone: every entry goes.
    fn gone(id: UserId) -> Self {
        Self {
            id,
            keep_number: None,
            keep_join: None,
        }
    }

    /// Its hash is `m`: the entries it does not account for go.
    fn keeping(m: &CachedMember) -> Self {
        Self {
            id: m.member.user_id,
            keep_number: Some(sort_key(m.member.number)),
            keep_join: Some(m.member.join_time_ms()),
        }
    }
}

/// What one `INDEX_PAGE` call answered.
struct Range {
    /// Entries in the whole index (only when asked for).
    total: u64,
    /// The lowest expiry score (only with the total, and if there is
    /// one): whether anything is due for pruning.
    soonest: Option<i64>,
    /// (member, absolute score), in the order asked.
    entries: Vec<(String, i64)>,
}

/// The `INDEX_WRITE` call that removes `removals` and adds `additions`,
/// extending the TTL of every key it touches to at least `ttl_ms` (none when
/// 0). An entry both removed and added is left alone; additions go in
/// index order, so entries written in order fill their buckets.
pub(super) fn index_write(
    mut removals: Vec<Entry>,
    mut additions: Vec<Entry>,
    ttl_ms: i64,
) -> Option<redis::Cmd> {
    let kept: HashSet<Entry> = removals.iter().cloned().collect();
    let added: HashSet<Entry> = additions.iter().cloned().collect();
    removals.retain(|e| !added.contains(e));
    additions.retain(|e| !kept.contains(e));
    if removals.is_empty() && additions.is_empty() {
        return None;
    }
    additions.sort_by(|a, b| {
        (a.index, a.score, a.member.as_bytes()).cmp(&(b.index, b.score, b.member.as_bytes()))
    });
    let mut cmd = eval(INDEX_WRITE, &keys::INDEX_DIRS);
    cmd.arg(ttl_ms).arg(removals.len());
    for e in removals.iter().chain(&additions) {
        cmd.arg(e.index as u8).arg(e.score).arg(&e.member);
    }
    Some(cmd)
}

impl RedisStore {
    /// Sends one index write (see [`index_write`]); returns how many
    /// entries it removed.
    pub(super) async fn write_index(
        &self,
        removals: Vec<Entry>,
        additions: Vec<Entry>,
        ttl_ms: i64,
    ) -> Result<u64, StoreError> {
        match index_write(removals, additions, ttl_ms) {
            Some(cmd) => self.command(Replay::Idempotent, &cmd, "index write").await,
            None => Ok(0),
        }
    }

    /// Up to `limit` entries of `index` from rank `offset` in `order`,
    /// stopping at the first score above `max`; when `with_total`, also the
    /// index's size and the soonest expiry, which tells a counting reader in
    /// the same round trip whether it must prune first.
    async fn range(
        &self,
        index: Index,
        order: SortOrder,
        offset: u64,
        limit: u64,
        with_total: bool,
        max: Option<i64>,
    ) -> Result<Range, StoreError> {
        let keys: &[&str] = if with_total {
            &[index.dir(), keys::INDEX_EXPIRY]
        } else {
            &[index.dir()]
        };
        let mut cmd = eval(INDEX_PAGE, keys);
        cmd.arg(u8::from(order == SortOrder::Desc))
            .arg(offset)
            .arg(limit)
            .arg(u8::from(with_total));
        match max {
            Some(max) => cmd.arg(max),
            None => cmd.arg("+inf"),
        };
        let reply: Vec<redis::Value> = self.command(Replay::Idempotent, &cmd, "index page").await?;
        let mut reply = reply.into_iter();
        let total: u64 = decode(reply.next().unwrap_or_default(), "index page total")?;
        let soonest: String = decode(reply.next().unwrap_or_default(), "index page soonest")?;
        let soonest = match soonest.as_str() {
            "" => None,
            raw => Some(
                raw.parse::<i64>()
                    .map_err(|_| StoreError::Corrupt(format!("soonest expiry {raw:?}")))?,
            ),
        };
        let rest: Vec<String> = reply
            .map(|v| decode(v, "index page entry"))
            .collect::<Result<_, _>>()?;
        let entries = rest
            .chunks(2)
            .map(|pair| match pair {
                [member, score] => score
                    .parse::<i64>()
                    .map(|s| (member.clone(), s))
                    .map_err(|_| StoreError::Corrupt(format!("index score {score:?}"))),
                _ => Err(StoreError::Corrupt(
                    "index page answered an odd list".into(),
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Range {
            total,
            soonest,
            entries,
        })
    }

    /// Every member the number index lists under `number`, in index order.
    pub(super) async fn ids_with_number(
        &self,
        number: MemberNumber,
    ) -> Result<Vec<UserId>, StoreError> {
        let mut cmd = eval(INDEX_FIND, &[keys::INDEX_NUMBER]);
        cmd.arg(sort_key(Some(number)));
        let raw: Vec<String> = self.command(Replay::Idempotent, &cmd, "index find").await?;
        raw.iter().map(|r| parse_id(Index::Number, r)).collect()
    }

    /// The records of `ids` with when their hash expires (`PEXPIRETIME`,
    /// `None` without TTL); `None` where the hash is gone.
    pub(super) async fn read_with_expiry(
        &self,
        ids: &[UserId],
    ) -> Result<Vec<Option<(CachedMember, Option<i64>)>>, StoreError> {
        let mut batch = Batch::default();
        for &id in ids {
            let key = keys::user(id);
            batch.push(&self.link, &key, redis::cmd("HGETALL").arg(&key).take());
            batch.push(&self.link, &key, redis::cmd("PEXPIRETIME").arg(&key).take());
        }
        let replies = self.exec(Replay::Idempotent, false, batch).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (&id, pair) in ids.iter().zip(replies.chunks(2)) {
            let [fields, at] = pair else {
                out.push(None);
                continue;
            };
            let fields: HashMap<String, String> = decode(fields.clone(), "member hash")?;
            let at: i64 = decode(at.clone(), "PEXPIRETIME reply")?;
            if fields.is_empty() || at == -2 {
                out.push(None);
            } else {
                let m = member_from_hash(id, fields)?;
                out.push(Some((m, (at >= 0).then_some(at))));
            }
        }
        Ok(out)
    }

    /// Puts `ids` back into the indexes from their hashes (those whose hash
    /// is there); returns how many were found.
    pub(super) async fn reindex(&self, ids: &[UserId]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        let mut additions = Vec::new();
        let mut ttl_ms = 0;
        let mut found = 0;
        for current in self.read_with_expiry(ids).await? {
            let Some((m, at)) = current else { continue };
            found += 1;
            let placement = Placement {
                expires_at: at,
                ..Placement::of(&m, 0)
            };
            ttl_ms = ttl_ms.max(at.map_or(0, |at| at - now));
            additions.extend(placement.entries());
        }
        self.write_index(Vec::new(), additions, ttl_ms.max(1))
            .await?;
        Ok(found)
    }

    /// Removes `exact` (entries read with their score) and, from the
    /// number and join-time indexes, every entry of the members in `sweep`
    /// but the one at the score it names (none for a member whose hash is
    /// gone): an expired or evicted hash can no longer say where its entries
    /// are, so the two indexes are swept for them — O(members), one script
    /// call, only when something was found gone. Then puts back the members
    /// of `sweep` whose hash is there again with their number and join time
    /// unknown to the sweep: the check and the removal cannot be one script
    /// on a cluster (the hash lives in another slot), so a member rewritten
    /// in between must not stay unindexed. Returns how many entries stay
    /// removed.
    async fn forget(&self, exact: Vec<Entry>, sweep: &[Sweep]) -> Result<u64, StoreError> {
        if exact.is_empty() && sweep.is_empty() {
            return Ok(0);
        }
        let mut cmd = eval(INDEX_SWEEP, &keys::INDEX_DIRS);
        cmd.arg(exact.len());
        for e in &exact {
            cmd.arg(e.index as u8).arg(e.score).arg(&e.member);
        }
        for s in sweep {
            cmd.arg(s.id.get());
            for keep in [s.keep_number, s.keep_join] {
                match keep {
                    Some(score) => cmd.arg(score),
                    None => cmd.arg(""),
                };
            }
        }
        let removed: u64 = self
            .command(Replay::Idempotent, &cmd, "index sweep")
            .await?;
        let gone: Vec<UserId> = sweep
            .iter()
            .filter(|s| s.keep_number.is_none())
            .map(|s| s.id)
            .collect();
        let alive = self.hashes_exist(&gone).await?;
        let back: Vec<UserId> = gone
            .iter()
            .zip(&alive)
            .filter(|(_, alive)| **alive)
            .map(|(&id, _)| id)
            .collect();
        let restored = self.reindex(&back).await?;
        Ok(removed.saturating_sub(restored))
    }

    /// Forgets members whose hash expired by now. Walks only expiry entries
    /// due by now, [`PRUNE_BATCH`] at a time: an entry whose hash is gone
    /// goes with the member's entries in the other two indexes; an entry the
    /// hash no longer matches (left by a rewrite that found the hash already
    /// expired, or by two writers racing) goes with whatever the other
    /// indexes hold of the member beyond its current number and join time;
    /// an entry whose hash is alive and matching (clocks differ) is skipped
    /// over. Only [`counted_range`](Self::counted_range) calls it, after
    /// checking the layout.
    async fn prune_expired(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut offset = 0;
        loop {
            let due = self
                .range(
                    Index::Expiry,
                    SortOrder::Asc,
                    offset,
                    PRUNE_BATCH,
                    false,
                    Some(now),
                )
                .await?
                .entries;
            if due.is_empty() {
                return Ok(());
            }
            let ids = due
                .iter()
                .map(|(raw, _)| parse_id(Index::Expiry, raw))
                .collect::<Result<Vec<_>, _>>()?;
            let current = self.read_with_expiry(&ids).await?;
            let (mut exact, mut sweep, mut kept) = (Vec::new(), Vec::new(), 0);
            for ((&id, (raw, at)), now_there) in ids.iter().zip(&due).zip(current) {
                let entry = Entry {
                    index: Index::Expiry,
                    score: *at,
                    member: raw.clone(),
                };
                match now_there {
                    None => {
                        exact.push(entry);
                        sweep.push(Sweep::gone(id));
                    }
                    Some((m, expires_at)) if expires_at != Some(*at) => {
                        exact.push(entry);
                        sweep.push(Sweep::keeping(&m));
                    }
                    Some(_) => kept += 1,
                }
            }
            let forgotten = self.forget(exact, &sweep).await?;
            if forgotten > 0 {
                tracing::debug!(removed = forgotten, "pruned expired members from indexes");
            }
            // Entries removed no longer occupy a rank; the rest are skipped.
            offset += kept;
            if (due.len() as u64) < PRUNE_BATCH {
                return Ok(());
            }
        }
    }

    /// A counted range ([`range`](Self::range) with the total) of an index
    /// as it stands once expired members are pruned. The range answers the
    /// soonest expiry too, so the pruning walk ([`prune_expired`](Self::prune_expired))
    /// and a second read are only paid when something is due: a page is
    /// then one script call, where pruning first on every page cost a
    /// second one and made pages at 1 000 members half again as slow as with
    /// one sorted set.
    async fn counted_range(
        &self,
        index: Index,
        order: SortOrder,
        offset: u64,
        limit: u64,
    ) -> Result<Range, StoreError> {
        self.ensure_layout().await?;
        let range = self.range(index, order, offset, limit, true, None).await?;
        if range.soonest.is_none_or(|at| at > self.clock.now_ms()) {
            return Ok(range);
        }
        self.prune_expired().await?;
        self.range(index, order, offset, limit, true, None).await
    }

    /// One page of an index, as [`Store::page`](crate::store::Store::page)
    /// promises: pruned first, and re-read when entries turn out to have lost
    /// their hash, or not to match it, in between.
    pub(super) async fn read_page(&self, request: PageRequest) -> Result<Page, StoreError> {
        let PageRequest {
            sort,
            order,
            offset,
            limit,
        } = request;
        let index = match sort {
            SortBy::Number => Index::Number,
            SortBy::JoinTime => Index::JoinTime,
        };
        let mut attempt = 1;
        loop {
            let range = self.counted_range(index, order, offset, limit).await?;
            if range.entries.is_empty() {
                return Ok(Page {
                    members: Vec::new(),
                    total: range.total,
                });
            }
            let ids = range
                .entries
                .iter()
                .map(|(raw, _)| parse_id(index, raw))
                .collect::<Result<Vec<_>, _>>()?;
            let records = self.read_members(&ids).await?;
            let (mut members, mut exact, mut sweep) = (Vec::new(), Vec::new(), Vec::new());
            for ((id, (raw, score)), record) in ids.iter().zip(range.entries).zip(records) {
                let matches = record.as_ref().map(|m| match index {
                    Index::Number => sort_key(m.member.number) == score,
                    _ => m.member.join_time_ms() == score,
                });
                match (record, matches) {
                    (Some(m), Some(true)) => members.push(m),
                    // Evicted: its entries in both indexes go (its expiry
                    // entry when it comes due).
                    (None, _) => sweep.push(Sweep::gone(*id)),
                    (Some(_), _) => exact.push(Entry {
                        index,
                        score,
                        member: raw,
                    }),
                }
            }
            if exact.is_empty() && sweep.is_empty() {
                return Ok(Page {
                    members,
                    total: range.total,
                });
            }
            let forgotten = self.forget(exact, &sweep).await?;
            if attempt == PAGE_ATTEMPTS {
                return Ok(Page {
                    members,
                    total: range.total.saturating_sub(forgotten),
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
        let range = self
            .counted_range(Index::Expiry, SortOrder::Asc, 0, limit)
            .await?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (raw, _) in &range.entries {
            let id = parse_id(Index::Expiry, raw)?;
            if seen.insert(id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Members in the number index (which lists every member), without
    /// pruning.
    pub(super) async fn indexed_members(&self) -> Result<u64, StoreError> {
        let range = self
            .range(Index::Number, SortOrder::Asc, 0, 0, true, None)
            .await?;
        Ok(range.total)
    }

    /// Members cached once expired ones are pruned.
    pub(super) async fn count_members(&self) -> Result<u64, StoreError> {
        let range = self
            .counted_range(Index::Number, SortOrder::Asc, 0, 0)
            .await?;
        Ok(range.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_removed_and_added_in_one_write_is_left_alone() {
        let id = UserId::parse("31").unwrap();
        let old = Placement {
            id,
            number: 5,
            join_ms: 1,
            expires_at: Some(10),
        };
        let new = Placement {
            number: 6,
            expires_at: Some(20),
            ..old
        };
        let cmd = index_write(old.entries(), new.entries(), 100).unwrap();
        let args: Vec<String> = cmd
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
                _ => None,
            })
            .collect();
        // EVAL, the script, 3 keys, TTL, then 2 removals and 2 additions:
        // the join-time entry is the same before and after.
        assert_eq!(&args[6..8], ["100", "2"]);
        assert_eq!(args.len(), 8 + 4 * 3, "{args:?}");
        assert!(index_write(old.entries(), old.entries(), 100).is_none());
    }
}
