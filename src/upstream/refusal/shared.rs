//! The fleet's refusal state in Redis, shared by every replica.
//!
//! Decisions:
//! - **One key, compare-and-set.** The state is one JSON string under
//!   `zsxq:upstream:refusal`, read together with Redis's `TIME` (replicas
//!   agree on the clock) and written back with a compare-and-set script; a
//!   lost race is retried by the guard. One key, so it works unchanged on a
//!   Redis Cluster.
//! - **Per token.** The state names the token it is about by a fingerprint
//!   (12 hex digits of its SHA-1, never the token); a state written for
//!   another token reads as clean, so replicas restarted with a renewed
//!   token call at once.
//! - **A clean state is no key.** Writing the clean state deletes the key,
//!   and a state outlives its last change by [`KEEP`] beyond the end of its
//!   cool-down, so nothing is left behind once the upstream accepts us.

use std::time::Duration;

use super::state::{State, millis};
use crate::redis_link::{Link, RedisTarget};
use crate::store::keys;

/// How long the shared state outlives its last change when nothing renews
/// it, beyond the end of its cool-down.
const KEEP: Duration = Duration::from_secs(60 * 60);

/// Longest wait on Redis before the local copy decides.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Reads the state with Redis's clock: {state or '', seconds, microseconds}.
const READ: &str = r"
local t = redis.call('TIME')
return {redis.call('GET', KEYS[1]) or '', t[1], t[2]}
";

/// Replaces the state if it is still ARGV[1] ('' = absent): ARGV[2] is the
/// new state ('' deletes it), ARGV[3] its lifetime in ms. 1 = written.
const SWAP: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// The fleet's copy of the refusal state.
pub(super) struct Shared {
    /// Our own connection, like the fleet budget's.
    pub(super) conn: Link,
    /// The fingerprint of our token.
    token: String,
    /// [`READ`] and [`SWAP`], sent by their SHA-1 and loaded again
    /// whenever Redis does not know them.
    read: redis::Script,
    swap: redis::Script,
}

impl Shared {
    /// The state in the Redis at `target`, about `token` (kept only as a
    /// fingerprint). Nothing is dialled here. Must be called inside a Tokio
    /// runtime.
    pub(super) fn new(target: &RedisTarget, token: &str) -> redis::RedisResult<Self> {
        let conn = Link::new(target, CALL_TIMEOUT)?;
        let digest = sha1_smol::Sha1::from(token).digest().to_string();
        Ok(Self {
            conn,
            token: digest[..12].to_string(),
            read: redis::Script::new(READ),
            swap: redis::Script::new(SWAP),
        })
    }

    /// One read-step-swap round: the state as it now stands (without the
    /// token's fingerprint) and what `step` returned, or `Ok(None)` when
    /// another process changed the state in between.
    pub(super) async fn step<T>(
        &self,
        step: &mut impl FnMut(&mut State, i64) -> (bool, T),
    ) -> Result<Option<(State, T)>, String> {
        let mut conn = self.conn.clone();
        let read = self.read.key(keys::REFUSAL);
        let (raw, secs, micros): (String, i64, i64) =
            tokio::time::timeout(CALL_TIMEOUT, read.invoke_async(&mut conn))
                .await
                .map_err(|_| "no answer within 500 ms".to_string())?
                .map_err(|e| e.to_string())?;
        let now = secs * 1000 + micros / 1000;
        // A state we cannot read (another version wrote it), or one about
        // another token, starts afresh.
        let mut state: State = serde_json::from_str(&raw)
            .ok()
            .filter(|s: &State| s.token == self.token)
            .unwrap_or_default();
        let (changed, out) = step(&mut state, now);
        state.token.clone_from(&self.token);
        if changed {
            let mut clean = State::default();
            clean.token.clone_from(&self.token);
            let new = if state == clean {
                String::new()
            } else {
                serde_json::to_string(&state).map_err(|e| e.to_string())?
            };
            let ttl = state.closed_until.saturating_sub(now).max(0) + millis(KEEP);
            let mut swap = self.swap.key(keys::REFUSAL);
            swap.arg(&raw).arg(new).arg(ttl);
            let written: i64 = tokio::time::timeout(CALL_TIMEOUT, swap.invoke_async(&mut conn))
                .await
                .map_err(|_| "no answer within 500 ms".to_string())?
                .map_err(|e| e.to_string())?;
            if written == 0 {
                return Ok(None);
            }
        }
        state.token.clear();
        Ok(Some((state, out)))
    }
}
