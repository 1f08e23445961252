//! The Lua scripts the Redis store runs, one `.lua` file each under
//! `scripts/`. Each one touches only the keys it is given, all in one slot,
//! so it runs unchanged on a server and on a cluster. What a script takes
//! and answers is documented here rather than in the `.lua` file: the whole
//! text travels with every `EVAL` ([`super::transport::eval`]), so the files
//! hold code only.

/// Deletes each number key in KEYS whose value is still the id in the same
/// position of ARGV: the key a member left behind when its number changed.
/// Another member may own that number by now, so the value is checked.
/// Returns how many were deleted. KEYS share one slot (one call per slot on
/// a cluster).
pub(super) const DROP_STALE_NUMBERS: &str = include_str!("scripts/drop_stale_numbers.lua");

/// Writes member hashes. KEYS = the hashes (one slot); ARGV[1] = TTL (ms);
/// then per member: its field count `n` and `n` field/value pairs. An
/// existing hash is replaced whole (so no piece of a longer old value
/// survives). Returns, per member, whether its content changed (anything
/// but `cached_at`/`updated_at`; 0 for a new member, which no replica can
/// hold in its near cache) and its previous number when that differs from
/// the new one (else ''), so the caller can drop the old number key and
/// announce the change.
pub(super) const WRITE_MEMBERS: &str = include_str!("scripts/write_members.lua");

/// Takes or renews a fetch lease. KEYS[1] = the lease key; ARGV[1] = owner,
/// ARGV[2] = TTL (ms). Returns {'granted'}, {'taken'} or {'gone', value}.
/// The same as `SET key owner NX PX ttl`, plus renewal by the holder and the
/// shared "not a member" answer, in one round trip.
pub(super) const TRY_LEASE: &str = include_str!("scripts/try_lease.lua");

/// Ends a lease if ARGV[1] still holds it: deletes it, or (ARGV[2] given)
/// replaces it with the "not a member" answer ARGV[2] for ARGV[3] ms.
pub(super) const END_LEASE: &str = include_str!("scripts/end_lease.lua");

/// Gives every key in KEYS at least ARGV[1] ms to live, never shortening a
/// longer TTL, and adds a TTL to a key that lacks one.
pub(super) const EXTEND_TTL: &str = include_str!("scripts/extend_ttl.lua");

/// Get-or-create of the device id: the stored one, else ARGV[1] stored with
/// `SET NX` (no expiry).
pub(super) const DEVICE_ID: &str = include_str!("scripts/device_id.lua");
