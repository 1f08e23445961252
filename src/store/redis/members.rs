//! Member records in Redis: reading hashes, resolving a number, and the
//! two-round write (hashes, then the indexes that name them).

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::RedisStore;
use super::codec::{hash_fields, member_from_hash};
use super::index::{Placement, sort_key};
use super::scripts::WRITE_MEMBERS;
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

    /// The member that number `number` belongs to now: of the members the
    /// number index lists under it, one whose hash still carries that
    /// number — the most recently cached one if two do (the number moved
    /// and the old holder was not rewritten since): an entry is only a
    /// hint, the hash is authoritative.
    pub(super) async fn resolve_number(
        &self,
        number: MemberNumber,
    ) -> Result<Option<UserId>, StoreError> {
        self.ensure_layout().await?;
        let ids = self.ids_with_number(number).await?;
        if ids.is_empty() {
            return Ok(None);
        }
        let mut batch = Batch::default();
        for &id in &ids {
            let key = keys::user(id);
            let hmget = redis::cmd("HMGET")
                .arg(&key)
                .arg("number")
                .arg("cached_at")
                .arg("updated_at")
                .take();
            batch.push(&self.link, &key, hmget);
        }
        let replies = self.exec(Replay::Idempotent, false, batch).await?;
        let wanted = number.to_string();
        let mut best: Option<((i64, i64), UserId)> = None;
        for (&id, reply) in ids.iter().zip(replies) {
            let [n, cached, updated]: [Option<String>; 3] = decode(reply, "member number")?;
            if n.as_deref() != Some(wanted.as_str()) {
                continue;
            }
            let time = |raw: Option<String>| raw.and_then(|r| r.parse().ok()).unwrap_or(i64::MIN);
            let when = (time(cached), time(updated));
            if best.is_none_or(|(seen, _)| when > seen) {
                best = Some((when, id));
            }
        }
        Ok(best.map(|(_, id)| id))
    }

    /// Writes members in the two rounds the module's decisions describe:
    /// hashes first, then the indexes (old entries out, new ones in); then
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
        self.ensure_layout().await?;
        let ttl_ms = ttl_millis(ttl);
        let expires_at = self.clock.now_ms().saturating_add(ttl_ms);

        // Round 1: the hashes, one script call per slot group (one call in
        // all on a standalone server). Written first so that no index entry
        // ever names a member whose hash is not there yet.
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
            write.arg(expires_at);
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
        let mut removals = Vec::new();
        for (positions, reply) in groups.iter().zip(replies) {
            let flat: Vec<Value> = decode(reply, "write reply")?;
            if flat.len() != positions.len() * 5 {
                return Err(short_reply(positions.len() * 5, flat.len()));
            }
            for (&i, old) in positions.iter().zip(flat.chunks(5)) {
                let id = members[i].member.user_id;
                if decode::<i64>(old[0].clone(), "write reply")? == 1 {
                    changed.push(id);
                }
                if decode::<i64>(old[1].clone(), "write reply")? == 1 {
                    let number: String = decode(old[2].clone(), "write reply")?;
                    let join: String = decode(old[3].clone(), "write reply")?;
                    let at: i64 = decode(old[4].clone(), "write reply")?;
                    removals.extend(old_placement(id, &number, &join, at).entries());
                }
            }
        }

        // Round 2: the indexes, one script call in the `{idx}` slot: the
        // entries of the hashes just replaced out, the new ones in.
        let additions = members
            .iter()
            .flat_map(|m| Placement::of(m, expires_at).entries())
            .collect();
        self.write_index(removals, additions, ttl_ms).await?;

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

/// Where the hash a write replaced stood in the indexes, from the fields the
/// write script read before replacing it (a garbled number or time places
/// it as the index did: numberless, or at 0).
fn old_placement(id: UserId, number: &str, join_time: &str, expires_at: i64) -> Placement {
    let number = match number {
        "" => None,
        raw => MemberNumber::parse(raw).ok(),
    };
    Placement {
        id,
        number: sort_key(number),
        join_ms: crate::domain::parse_zsxq_time_ms(join_time).unwrap_or(0),
        expires_at: (expires_at >= 0).then_some(expires_at),
    }
}

/// Keeps the last record per user id, in first-seen order, so one batch never
/// writes two versions of a member (which would leave a stale index entry).
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
