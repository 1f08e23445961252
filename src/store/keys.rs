//! Every Redis key name, built in one place and only from typed ids, so no
//! client input can shape a key (SPEC §4: the seed's names, so its
//! `redis-cli` recipes keep working).

use crate::domain::{MemberNumber, UserId};

/// `zsxq:user:{user_id}` — hash with the member record (seed §4.2.1).
pub fn user(id: UserId) -> String {
    format!("zsxq:user:{id}")
}

/// `zsxq:number:{number}` — string holding the user_id (seed §4.2.2).
pub fn number(n: MemberNumber) -> String {
    format!("zsxq:number:{n}")
}

/// Set of every cached user id (seed §4.2.3).
pub const USERS_ALL: &str = "zsxq:users:all";

/// Counters hash, no TTL (seed §4.2.4).
pub const STATS: &str = "zsxq:stats:cache";

/// Sorted set user_id → member number, for O(page) paging by number.
pub const IDX_NUMBER: &str = "zsxq:idx:number";

/// Sorted set user_id → join time (unix ms), for paging by join time.
pub const IDX_JOIN_TIME: &str = "zsxq:idx:join_time";

/// Sorted set user_id → expiry (unix ms). Lets the store drop index entries
/// of members whose hash has expired, so `zsxq:users:all` and the sorted
/// indexes never claim members that are gone.
pub const IDX_EXPIRY: &str = "zsxq:idx:expiry";

/// Every fixed key the store owns, for `clear`.
pub const FIXED: [&str; 5] = [USERS_ALL, STATS, IDX_NUMBER, IDX_JOIN_TIME, IDX_EXPIRY];

/// The namespace every key of ours lives under.
pub const NAMESPACE_PATTERN: &str = "zsxq:*";
