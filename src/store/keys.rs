//! Every Redis key name, built in one place and only from typed ids, so no
//! client input can shape a key. The names are the ones operators'
//! `redis-cli` recipes already use, so those keep working.

use crate::domain::{CheckinId, RankingType, UserId};

/// Prefix of every member hash. Lua scripts that must reach a member's hash
/// from an id they read inside Redis (pruning expired index entries) append
/// the id to it; Rust code uses [`user`].
pub const USER_PREFIX: &str = "zsxq:user:";

/// `zsxq:user:{user_id}` — hash with the member record.
pub fn user(id: UserId) -> String {
    format!("{USER_PREFIX}{id}")
}

/// Prefix of the original design's `zsxq:number:{number}` strings (number →
/// user_id, one per member). This layout no longer writes them — the number
/// index answers lookups — but a Redis that the original layout filled
/// still holds them until the upgrade at first use or `clear` removes them.
pub const NUMBER_PREFIX: &str = "zsxq:number:";

/// Prefix of every cached camp ranking; Rust code uses [`ranking`].
pub const RANKING_PREFIX: &str = "zsxq:ranking:";

/// `zsxq:ranking:{checkin_id}` (accumulated) or
/// `zsxq:ranking:{checkin_id}:continuous` — string holding a camp's whole
/// ranking of that type as the refund module encoded it (JSON), with its own
/// TTL, so that re-generating or exporting a finished camp's refund list
/// costs no upstream call. The accumulated key has no suffix: it is the key
/// caches already hold. One key per type, so a streak is never read as a
/// total.
pub fn ranking(key: super::RankingKey) -> String {
    let id = key.checkin;
    match key.kind {
        RankingType::Accumulated => format!("{RANKING_PREFIX}{id}"),
        RankingType::Continuous => format!("{RANKING_PREFIX}{id}:continuous"),
    }
}

/// Prefix of a camp's refund records; Rust code uses [`refund_marks`] and
/// [`refund_log`].
pub const REFUND_PREFIX: &str = "zsxq:refund:";

/// `zsxq:refund:{checkin_id}:marks` — hash user_id → the participant's
/// refund mark (JSON). No TTL and not a store key: a cache clear must not
/// forget who was paid. The `{checkin_id}` hash tag puts it in one slot
/// with the camp's log, so one script writes both.
pub fn refund_marks(id: CheckinId) -> String {
    format!("{REFUND_PREFIX}{{{id}}}:marks")
}

/// `zsxq:refund:{checkin_id}:log` — list of the camp's audit entries (JSON),
/// newest first. No TTL, not a store key.
pub fn refund_log(id: CheckinId) -> String {
    format!("{REFUND_PREFIX}{{{id}}}:log")
}

/// Prefix of fleet leases on cold members; Rust code uses [`lease_user`].
pub const LEASE_USER_PREFIX: &str = "zsxq:lease:user:";

/// `zsxq:lease:user:{user_id}` — short-lived string naming the process that
/// is fetching this member from the upstream right now (`SET NX PX`), or
/// `gone:<code>:<message>` for a while after it learned the user is not a
/// member. Not a store key: `clear` leaves leases to lapse by themselves.
pub fn lease_user(id: UserId) -> String {
    format!("{LEASE_USER_PREFIX}{id}")
}

/// Pub/sub channel on which every write that changed a record, and every
/// clear, is announced, so other replicas drop their near-cache entries
/// (`cache/invalidation.rs` reads it; the message format is documented
/// there).
pub const EVENTS: &str = "zsxq:events";

/// The original design's set of every cached user id, replaced by the
/// number index (which lists every member too): an old-layout key, like
/// [`NUMBER_PREFIX`].
pub const OLD_USERS_ALL: &str = "zsxq:users:all";

/// Counters hash, no TTL.
pub const STATS: &str = "zsxq:stats:cache";

/// Every index key starts so: the hash tag `{idx}` keeps all of them in one
/// slot of a Redis Cluster, so one script updates every index atomically.
/// Each index is a directory plus listpack-sized buckets
/// (`store/redis/index.rs` says why and how):
/// - `zsxq:{idx}:<index>:dir`, a sorted set with one entry per bucket: the
///   bucket's lower bound, member `<lowest member>!<lowest score>`, score the
///   lowest score;
/// - `zsxq:{idx}:<index>:<lowest member>!<lowest score>`, the bucket: a
///   sorted set of at most 127 entries (so Redis keeps it a listpack), each
///   scored by its distance from the bucket's lowest score;
/// - `zsxq:{idx}:<index>:count`, a string of one byte per bucket, in
///   directory order: the bucket's entries (0–127), so a page finds its
///   offset and the total without a call per bucket.
pub const INDEX_PREFIX: &str = "zsxq:{idx}:";

/// Directory of the number index: members by [`number_sort_key`]
/// (numberless members last), each entry's member the user id.
///
/// [`number_sort_key`]: crate::store::number_sort_key
pub const INDEX_NUMBER: &str = "zsxq:{idx}:number:dir";

/// Directory of the join-time index: members by join time (unix ms), each
/// entry's member the user id.
pub const INDEX_JOIN_TIME: &str = "zsxq:{idx}:join_time:dir";

/// Directory of the expiry index: members by when their hash expires (unix
/// ms, the hash's own `PEXPIRETIME`), each entry's member the user id.
pub const INDEX_EXPIRY: &str = "zsxq:{idx}:expiry:dir";

/// The three directories, in the order the index scripts take them.
pub const INDEX_DIRS: [&str; 3] = [INDEX_NUMBER, INDEX_JOIN_TIME, INDEX_EXPIRY];

/// The original design's three skiplist sorted sets (user_id → score), one
/// per ordering; old-layout keys, like [`OLD_USERS_ALL`].
pub const OLD_INDEXES: [&str; 3] = [
    "zsxq:{idx}:number",
    "zsxq:{idx}:join_time",
    "zsxq:{idx}:expiry",
];

/// Whether `key` has the shape of an index key: a directory, a count hash,
/// or a bucket named by a user id (or nothing, for a first bucket) before
/// `!` and an integer after it. The store builds them only from parsed ids
/// and integer scores.
pub fn is_index_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(INDEX_PREFIX) else {
        return false;
    };
    let Some((index, bucket)) = rest.split_once(':') else {
        return false;
    };
    if !["number", "join_time", "expiry"].contains(&index) {
        return false;
    }
    if bucket == "dir" || bucket == "count" {
        return true;
    }
    let Some((low, base)) = bucket.split_once('!') else {
        return false;
    };
    let integer = |s: &str| s.strip_prefix('-').unwrap_or(s).parse::<u64>().is_ok();
    low.bytes()
        .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
        && integer(base)
}

/// The fleet-wide upstream budget (`upstream/fleet.rs`): a hash with the
/// schedule every replica takes its upstream slots from. Not a store key:
/// a cache clear leaves it alone, and it expires by itself a minute and a
/// half or so after its last use.
pub const FLEET_BUDGET: &str = "zsxq:budget:upstream";

/// The fleet's refusal state (`upstream/refusal/shared.rs`): one JSON string saying
/// whether calls are paused after a run of 1059s or stopped for a rejected
/// token. Not a store key: a cache clear must not resume calls to an
/// upstream that is refusing us. It expires an hour after its last change.
pub const REFUSAL: &str = "zsxq:upstream:refusal";

/// The installation's device id, sent as `X-Aduid` (`upstream/client.rs`):
/// written once (`SET NX`), never expires. Not a store key: the upstream
/// must keep seeing the same device after a cache clear.
pub const DEVICE_ID: &str = "zsxq:device:aduid";

/// Every fixed key the store owns or owned, for `clear`: the counters, the
/// index directories and the original layout's id set and sorted sets.
pub const FIXED: [&str; 8] = [
    STATS,
    INDEX_NUMBER,
    INDEX_JOIN_TIME,
    INDEX_EXPIRY,
    OLD_USERS_ALL,
    OLD_INDEXES[0],
    OLD_INDEXES[1],
    OLD_INDEXES[2],
];

/// The namespace every key of ours lives under.
pub const NAMESPACE_PATTERN: &str = "zsxq:*";

/// Whether the store made `key`: a member hash, an index key, a cached
/// ranking, a fixed key, or an old-layout number key.
/// `clear` sweeps `zsxq:*` for leftovers but deletes only these, so state
/// that other parts of the service may keep in the namespace (leases, rate
/// limits) survives a cache clear.
pub fn is_store_key(key: &str) -> bool {
    key.starts_with(USER_PREFIX)
        || key.starts_with(NUMBER_PREFIX)
        || key.starts_with(RANKING_PREFIX)
        || is_index_key(key)
        || FIXED.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_seed_names() {
        let id = UserId::parse("454881884228").unwrap();
        assert_eq!(user(id), "zsxq:user:454881884228");
        let camp = CheckinId::parse("8424481182").unwrap();
        assert_eq!(
            ranking(crate::store::RankingKey {
                checkin: camp,
                kind: RankingType::Accumulated,
            }),
            "zsxq:ranking:8424481182"
        );
        assert_eq!(
            ranking(crate::store::RankingKey {
                checkin: camp,
                kind: RankingType::Continuous,
            }),
            "zsxq:ranking:8424481182:continuous"
        );
        assert_eq!(lease_user(id), "zsxq:lease:user:454881884228");
        assert_eq!(refund_marks(camp), "zsxq:refund:{8424481182}:marks");
        assert_eq!(refund_log(camp), "zsxq:refund:{8424481182}:log");
    }

    #[test]
    fn only_keys_the_store_writes_count_as_store_keys() {
        assert!(is_store_key("zsxq:user:1"));
        assert!(is_store_key("zsxq:number:7"));
        assert!(is_store_key(STATS));
        assert!(is_store_key(INDEX_EXPIRY));
        assert!(is_store_key("zsxq:{idx}:number:454881884228!177"));
        assert!(is_store_key(
            "zsxq:{idx}:expiry:454881884228,177,-5!1730080000000"
        ));
        assert!(is_store_key("zsxq:{idx}:join_time:!-3"));
        assert!(is_store_key("zsxq:{idx}:expiry:count"));
        assert!(is_store_key(OLD_USERS_ALL));
        assert!(is_store_key(OLD_INDEXES[1]));
        assert!(!is_store_key("zsxq:{idx}:number:1!x"));
        assert!(!is_store_key("zsxq:{idx}:other:dir"));
        assert!(!is_store_key("zsxq:{idx}:number:a!1"));
        assert!(is_store_key("zsxq:ranking:8424481182"));
        assert!(is_store_key("zsxq:ranking:8424481182:continuous"));
        assert!(!is_store_key("zsxq:lease:sync"));
        assert!(!is_store_key("zsxq:lease:user:1"));
        assert!(!is_store_key(FLEET_BUDGET));
        assert!(!is_store_key(REFUSAL));
        assert!(!is_store_key(DEVICE_ID));
        let camp = CheckinId::parse("8424481182").unwrap();
        assert!(!is_store_key(&refund_marks(camp)));
        assert!(!is_store_key(&refund_log(camp)));
        assert!(!is_store_key("other:user:1"));
    }
}
