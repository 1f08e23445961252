//! The Lua scripts the Redis store runs, one `.lua` file each under
//! `scripts/`. Each one touches only keys of one slot — the keys it is
//! given, and for the index scripts the buckets their directories name,
//! which share the directories' `{idx}` hash tag — so it runs unchanged on a
//! server and on a cluster. What a script takes
//! and answers is documented here rather than in the `.lua` file: the whole
//! text travels with every `EVAL` ([`super::transport::eval`]), so the files
//! hold code only.

/// Writes member hashes. KEYS = the hashes (one slot); ARGV[1] = when they
/// expire (unix ms, `PEXPIREAT`: the very score of their expiry index
/// entry); then per member: its field count `n` and `n` field/value pairs.
/// An existing hash is replaced whole (so no piece of a longer old value
/// survives). Returns five values per member: whether its content changed
/// (anything but `cached_at`/`updated_at`; 0 for a new member, which no
/// replica can hold in its near cache), whether a hash was there, and that
/// hash's `number`, `join_time` (pieces joined) and `PEXPIRETIME` ('' and
/// -1 when none), so the caller can remove the old index entries exactly
/// and announce the change.
pub(super) const WRITE_MEMBERS: &str = include_str!("scripts/write_members.lua");

/// Takes or renews a fetch lease. KEYS[1] = the lease key; ARGV[1] = owner,
/// ARGV[2] = TTL (ms). Returns {'granted'}, {'taken'} or {'gone', value}.
/// The same as `SET key owner NX PX ttl`, plus renewal by the holder and the
/// shared "not a member" answer, in one round trip.
pub(super) const TRY_LEASE: &str = include_str!("scripts/try_lease.lua");

/// Ends a lease if ARGV[1] still holds it: deletes it, or (ARGV[2] given)
/// replaces it with the "not a member" answer ARGV[2] for ARGV[3] ms.
pub(super) const END_LEASE: &str = include_str!("scripts/end_lease.lua");

/// Get-or-create of the device id: the stored one, else ARGV[1] stored with
/// `SET NX` (no expiry).
pub(super) const DEVICE_ID: &str = include_str!("scripts/device_id.lua");

/// Compare-and-set of refund marks. KEYS[1] = the camp's marks hash,
/// KEYS[2] = its log list (one slot: the `{checkin_id}` hash tag).
/// ARGV[1] = n; then per mark: the user id, the value expected now ('' for
/// none) and the new value; then the log entries, oldest first. Writes
/// nothing and returns 0 if any expected value differs; else writes every
/// mark, pushes every entry and returns 1.
pub(super) const APPLY_MARKS: &str = include_str!("scripts/apply_marks.lua");

/// The index scripts share `index_lib.lua`: finding the bucket of an entry
/// (the last directory entry not above it), adding with the split of a
/// bucket past 128 entries, removing (with the bucket, once empty). The
/// layout is described in `index.rs` and `keys.rs`; every key involved
/// carries the `{idx}` hash tag, so each script runs in one slot.
macro_rules! index_script {
    ($file:literal) => {
        concat!(
            include_str!("scripts/index_lib.lua"),
            include_str!(concat!("scripts/", $file))
        )
    };
}

/// Updates the indexes. KEYS = the three directories (number, join time,
/// expiry). ARGV[1] = TTL (ms) every touched key gets at least (never
/// shortened; 0 for none), ARGV[2] = the number of removals; then triples
/// (index 1–3, absolute score, member): the removals, then the additions.
/// An entry is removed only if it has that very score. Returns how many
/// entries were removed.
pub(super) const INDEX_WRITE: &str = index_script!("index_write.lua");

/// Reads an index in order. KEYS[1] = its directory, KEYS[2] (optional) =
/// the expiry directory; ARGV = descending (1/0), offset, limit, whether to
/// count the whole index (1/0), highest score to return ('+inf' for any).
/// Finds the first bucket of the page by the directory's count string (one
/// byte per bucket: no call per bucket), rebuilt from the buckets if it
/// does not match the directory, and corrects a bucket's byte where a read
/// finds it wrong. Returns {total (0 unless counted), soonest, member,
/// score, member, score, …}, scores absolute; `soonest` is the lowest
/// expiry score ('' without KEYS[2] or expiry entries, '0' if the first
/// bucket is listed but gone), so a reader learns in the same call whether
/// anything is due for pruning.
pub(super) const INDEX_PAGE: &str = index_script!("index_page.lua");

/// Forgets entries. KEYS = the three directories. ARGV[1] = n; then n
/// triples (index 1–3, absolute score, member) removed only at that very
/// score; then per member to sweep: its id and the number sort key and join
/// time to keep ('' for none). The sweep walks every bucket of the number
/// and join-time indexes — O(members) — and removes the member's entries
/// at any other score. Returns how many entries were removed.
pub(super) const INDEX_SWEEP: &str = index_script!("index_sweep.lua");

/// Members with one score. KEYS[1] = a directory, ARGV[1] = the score.
/// Returns the members, in index order.
pub(super) const INDEX_FIND: &str = index_script!("index_find.lua");
