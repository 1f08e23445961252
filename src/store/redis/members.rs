//! Member records in Redis: reading hashes, resolving a number, and the
//! two-round write (hashes, then everything that names them).

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::RedisStore;
use super::codec::{hash_fields, member_from_hash};
use super::index::IndexEntry;
use super::scripts::{DROP_STALE_NUMBERS, WRITE_MEMBERS};
use super::transport::{Batch, Replay, decode, eval, group_by_slot, short_reply};
use crate::domain::{CachedMember, MemberNumber, UserId};
use crate::store::{StoreError, keys, ttl_millis};

impl RedisStore {
    /// Reads the hashes of `ids`; `None` where absent.
    pub(super) async fn read_members(
        &self,
        ids: &[UserId],
    ) -> Result<Vec<Option<CachedMember>>, StoreError> {
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

    /// Whether each of `ids` still has its hash.
    pub(super) async fn hashes_exist(&self, ids: &[UserId]) -> Result<Vec<bool>, StoreError> {
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

    /// The member that number `number` belongs to now: the number key, if
    /// the member's hash still carries that number.
    pub(super) async fn resolve_number(
        &self,
        number: MemberNumber,
    ) -> Result<Option<UserId>, StoreError> {
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

    /// Writes members in the two rounds the module's decisions describe:
    /// hashes first, then number keys, the id set and the indexes; then
    /// announces the changed records.
    pub(super) async fn write_members(
        &self,
        members: &[CachedMember],
        ttl: Duration,
    ) -> Result<(), StoreError> {
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

        // Round 2: number keys, the id set, the indexes (atomic per slot
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::codec::tests::sample;

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
