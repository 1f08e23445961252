//! The fleet's share of the upstream budget: one GCRA in Redis that every
//! replica asks before each upstream attempt.
//!
//! Several replicas behind a load balancer share one Zsxq token, so the
//! upstream sees the sum of their calls. Each process keeps its own limiter
//! (`budget/`) to space its calls; this module adds the fleet-wide check,
//! so N replicas together stay within `API_RATE_LIMIT`, not N times it.
//!
//! Decisions:
//! - **One script, one key.** `zsxq:budget:upstream` is a hash holding the
//!   theoretical arrival time (`tat`, µs), the fleet's throttle penalty
//!   (`extra`, µs) and how long interactive callers hold the next slot
//!   (`interactive_until`, µs). One Lua script reads and updates it
//!   atomically; a single key also works unchanged on Redis Cluster.
//! - **Redis's clock.** The script reads `TIME` itself, so replicas whose
//!   clocks disagree still agree on the schedule. Times are integers of
//!   microseconds, written with `%d` (Lua's default number format keeps only
//!   14 digits).
//! - **Burst of one, same spacing as a process.** A slot is granted when
//!   `tat <= now`, and `tat` becomes `now + spacing`, where spacing is the
//!   local budget's period (2% safety margin and `API_REQUEST_DELAY`
//!   included) plus the fleet penalty. A refused caller is told how long to
//!   wait and asks again; nothing is reserved, so a caller that gives up
//!   (its request was cancelled) leaves no hole in the schedule.
//! - **Priority across the fleet.** An interactive caller that has to wait
//!   marks the next slot as wanted (`interactive_until`); background callers
//!   anywhere in the fleet are refused until it has passed, so a person
//!   waiting on one replica goes before a sync running on another.
//! - **Throttles slow the whole fleet.** A 1059/429 seen by any replica
//!   doubles `extra` (at least one period, at most 30 s); successes take a
//!   step off it — the same AIMD as the local budget, applied to the fleet's
//!   schedule. A local-only penalty would just hand the slots to the other
//!   replicas.
//! - **Redis down: degrade, never stall, never overspend badly.** A failed or
//!   slow (> 500 ms, the store's own response bound) call marks the fleet
//!   unreachable for a second; meanwhile each replica spaces its calls at
//!   `FLEET_SIZE_HINT` times the period — `API_RATE_LIMIT / FLEET_SIZE_HINT`
//!   a minute each — so a fleet whose operator set the hint to its size
//!   stays within the budget without Redis. With the default hint of 1 a
//!   lone replica loses nothing, and a larger fleet that left the hint at 1
//!   overspends only until the 1059 backoff (local AIMD) slows it.
//! - **Slots taken alone are paid back.** When only some replicas lose
//!   Redis (a partition, a slow answer), the others keep spending the whole
//!   budget through it, so the fallback slots are extra. Each replica counts
//!   them (one spacing each, at most [`DEBT_CAP`]) and, when Redis answers
//!   again, pushes the fleet's schedule back by that much in the same script
//!   call: the fleet's total over the next seconds comes back to the budget.
//!   The cap keeps a long outage (when every replica spent its share alone,
//!   which was within the budget) from pausing the fleet for long.
//! - **Self-cleaning.** The key expires by itself when unused for a minute
//!   plus the longest possible spacing (period and 30 s of penalty), so a
//!   forgotten penalty cannot outlive a quiet period by much.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::redis_link::{Link, RedisTarget};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;

use super::priority::Priority;
use crate::store::keys;

/// Longest a replica waits on Redis for a slot decision before it uses its
/// local fallback instead. Redis answers in well under a millisecond; the
/// bound is the store's (`RESPONSE_TIMEOUT`), generous enough that a busy
/// process that polls the answer late does not mistake itself for an outage.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Most fallback spending one replica pays back when Redis returns.
pub const DEBT_CAP: Duration = Duration::from_secs(5);

/// How long the fleet is not asked again after a failed call.
const COOL_DOWN: Duration = Duration::from_secs(1);

/// How long the budget's state outlives its last use (plus one spacing).
const KEEP_SECS: u64 = 60;

/// Largest fleet penalty, as for the local one.
const MAX_EXTRA: Duration = Duration::from_secs(30);

/// Takes the next slot if it is due. KEYS[1] = the budget hash; ARGV[1] =
/// steady spacing (µs), ARGV[2] = `i` (interactive) or `b` (background),
/// ARGV[3] = seconds the state is kept, ARGV[4] = µs of fallback spending
/// to pay back first. Returns {wait µs (0 = granted), penalty µs}.
const TAKE_SLOT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local s = redis.call('HMGET', KEYS[1], 'tat', 'extra', 'interactive_until')
local tat = tonumber(s[1]) or 0
local extra = tonumber(s[2]) or 0
local held = tonumber(s[3]) or 0
local spacing = tonumber(ARGV[1]) + extra
local debt = tonumber(ARGV[4]) or 0
if debt > 0 then
  tat = math.max(tat, now) + debt
  redis.call('HSET', KEYS[1], 'tat', string.format('%d', tat))
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
if ARGV[2] == 'b' and held > now then
  return {math.max(held, tat) - now, extra}
end
if tat > now then
  if ARGV[2] == 'i' then
    redis.call('HSET', KEYS[1], 'interactive_until', string.format('%d', tat + spacing))
    redis.call('EXPIRE', KEYS[1], ARGV[3])
  end
  return {tat - now, extra}
end
redis.call('HSET', KEYS[1], 'tat', string.format('%d', now + spacing))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {0, extra}
";

/// A throttle was seen: doubles the penalty. ARGV[1] = spacing (µs, the
/// least penalty), ARGV[2] = largest penalty (µs), ARGV[3] = seconds kept.
const WIDEN: &str = r"
local extra = tonumber(redis.call('HGET', KEYS[1], 'extra')) or 0
extra = math.min(math.max(extra * 2, tonumber(ARGV[1])), tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'extra', string.format('%d', extra))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return extra
";

/// A call succeeded: takes ARGV[1] µs off the penalty.
const NARROW: &str = r"
local extra = tonumber(redis.call('HGET', KEYS[1], 'extra')) or 0
if extra > 0 then
  extra = math.max(0, extra - tonumber(ARGV[1]))
  redis.call('HSET', KEYS[1], 'extra', string.format('%d', extra))
end
return extra
";

/// How the rate is shared with other replicas, for `/readyz` and the stats.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FleetMode {
    /// One process, its own budget (the embedded store, or `FLEET_BUDGET=false`).
    #[default]
    Off,
    /// Every replica takes its slots from the schedule in Redis.
    Shared,
    /// Redis is out of reach: `API_RATE_LIMIT / FLEET_SIZE_HINT` locally.
    Fallback,
}

/// What the fleet said to one request for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetAnswer {
    /// The slot is ours: call now.
    Granted,
    /// Ask again after this long.
    Wait(Duration),
    /// Redis did not answer (or recently failed): use the local fallback.
    Unreachable,
}

/// The fleet-wide budget in Redis, plus the local fallback for when Redis is
/// out of reach.
pub struct FleetBudget {
    /// Our own connection, separate from the store's so a slow store
    /// pipeline never delays a slot decision; multiplexed and reconnecting.
    conn: Link,
    /// [`TAKE_SLOT`], [`WIDEN`] and [`NARROW`], sent by their SHA-1 and
    /// loaded again whenever Redis does not know them.
    take: redis::Script,
    widen: redis::Script,
    narrow: redis::Script,
    /// The steady spacing of the fleet's calls (the local budget's period).
    spacing: Duration,
    /// Spaces this replica's calls at `FLEET_SIZE_HINT` periods while Redis
    /// is unreachable.
    fallback: DefaultDirectRateLimiter,
    /// `FLEET_SIZE_HINT`: how many replicas share the rate without Redis.
    size_hint: u32,
    /// Set while Redis is taken for unreachable; while in the future, Redis
    /// is not asked. Shared with the probe that clears it when Redis answers
    /// again, so an idle replica does not report a stale outage.
    down_until: Arc<Mutex<Option<Instant>>>,
    /// The fleet penalty in the last answer, µs; successes narrow it only
    /// while it is non-zero, so a healthy fleet makes one script call per
    /// upstream call.
    extra_seen_us: AtomicU64,
    /// Fallback slots not yet paid back to the fleet's schedule, µs.
    debt_us: AtomicU64,
}

impl std::fmt::Debug for FleetBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection's URL may hold a password: leave it out.
        f.debug_struct("FleetBudget")
            .field("spacing", &self.spacing)
            .field("size_hint", &self.size_hint)
            .finish_non_exhaustive()
    }
}

impl FleetBudget {
    /// A budget shared through the Redis at `url`, spacing the fleet's calls
    /// `spacing` apart; `size_hint` replicas share it when Redis is away.
    /// Nothing is dialled here, so a replica starts while Redis is down.
    /// Must be called inside a Tokio runtime.
    pub fn connect(
        target: &RedisTarget,
        spacing: Duration,
        size_hint: u32,
    ) -> redis::RedisResult<Self> {
        // One key, so a cluster routes every script call to its slot.
        let conn = Link::new(target, CALL_TIMEOUT)?;
        let size_hint = size_hint.max(1);
        let fallback_period = spacing
            .saturating_mul(size_hint)
            .max(Duration::from_micros(1));
        let quota = Quota::with_period(fallback_period)
            .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN));
        Ok(Self {
            conn,
            take: redis::Script::new(TAKE_SLOT),
            widen: redis::Script::new(WIDEN),
            narrow: redis::Script::new(NARROW),
            spacing,
            fallback: RateLimiter::direct(quota),
            size_hint,
            down_until: Arc::new(Mutex::new(None)),
            extra_seen_us: AtomicU64::new(0),
            debt_us: AtomicU64::new(0),
        })
    }

    /// Asks for the fleet's next slot.
    pub async fn try_take(&self, priority: Priority) -> FleetAnswer {
        if self.cooling_down() {
            return FleetAnswer::Unreachable;
        }
        let debt = self.debt_us.swap(0, Ordering::Relaxed);
        let mut invocation = self.take.key(keys::FLEET_BUDGET);
        invocation
            .arg(micros(self.spacing))
            .arg(match priority {
                Priority::Interactive => "i",
                Priority::Background => "b",
            })
            .arg(self.keep_secs())
            .arg(debt);
        match self.invoke::<(i64, i64)>(&invocation).await {
            Ok(Ok((wait_us, extra_us))) => {
                self.mark_reachable();
                self.extra_seen_us
                    .store(extra_us.max(0) as u64, Ordering::Relaxed);
                if wait_us <= 0 {
                    FleetAnswer::Granted
                } else {
                    FleetAnswer::Wait(Duration::from_micros(wait_us as u64))
                }
            }
            Ok(Err(e)) => {
                self.owe(debt);
                self.mark_unreachable(&e.to_string());
                FleetAnswer::Unreachable
            }
            Err(_) => {
                // The script may have run; paying twice only slows the
                // fleet a little, never lets it overspend.
                self.owe(debt);
                self.mark_unreachable("no answer within 500 ms");
                FleetAnswer::Unreachable
            }
        }
    }

    /// Waits for this replica's share of the budget while Redis is away; the
    /// slot is owed to the fleet's schedule.
    pub async fn fallback_slot(&self) {
        self.fallback.until_ready().await;
        self.owe(micros(self.spacing));
    }

    /// Adds `us` to what is paid back, up to [`DEBT_CAP`].
    fn owe(&self, us: u64) {
        let cap = micros(DEBT_CAP);
        let _ = self
            .debt_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_add(us).min(cap))
            });
    }

    /// Fallback spending not yet paid back.
    pub fn debt(&self) -> Duration {
        Duration::from_micros(self.debt_us.load(Ordering::Relaxed))
    }

    /// `FLEET_SIZE_HINT`.
    pub fn size_hint(&self) -> u32 {
        self.size_hint
    }

    /// Whether Redis answered the last time it was asked.
    pub fn reachable(&self) -> bool {
        self.down_until.lock().map(|d| d.is_none()).unwrap_or(false)
    }

    /// The fleet penalty in the last answer.
    pub fn penalty_seen(&self) -> Duration {
        Duration::from_micros(self.extra_seen_us.load(Ordering::Relaxed))
    }

    /// A throttle was answered to this replica: the whole fleet slows down.
    pub async fn widen(&self) {
        let mut invocation = self.widen.key(keys::FLEET_BUDGET);
        invocation
            .arg(micros(self.spacing))
            .arg(micros(MAX_EXTRA))
            .arg(self.keep_secs());
        self.adjust(invocation).await;
    }

    /// A call succeeded: the fleet speeds up a step, if it was slowed.
    pub async fn narrow(&self) {
        if self.extra_seen_us.load(Ordering::Relaxed) == 0 {
            return;
        }
        let step = (self.spacing / 4).max(Duration::from_millis(50));
        let mut invocation = self.narrow.key(keys::FLEET_BUDGET);
        invocation.arg(micros(step));
        self.adjust(invocation).await;
    }

    async fn adjust(&self, invocation: redis::ScriptInvocation<'_>) {
        if self.cooling_down() {
            return;
        }
        match self.invoke::<i64>(&invocation).await {
            Ok(Ok(extra_us)) => self
                .extra_seen_us
                .store(extra_us.max(0) as u64, Ordering::Relaxed),
            Ok(Err(e)) => self.mark_unreachable(&e.to_string()),
            Err(_) => self.mark_unreachable("no answer within 500 ms"),
        }
    }

    /// Runs a script under [`CALL_TIMEOUT`]. A call that found the
    /// connection refused or dropped (Redis restarted since the last call)
    /// is sent once more on a fresh connection: all three scripts may run
    /// twice without harm (a slot taken twice is only unused).
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<redis::RedisResult<T>, tokio::time::error::Elapsed> {
        tokio::time::timeout(CALL_TIMEOUT, async {
            let mut conn = self.conn.clone();
            match invocation.invoke_async::<T>(&mut conn).await {
                Err(e) if e.is_connection_refusal() || e.is_connection_dropped() => {
                    invocation.invoke_async::<T>(&mut conn).await
                }
                other => other,
            }
        })
        .await
    }

    fn keep_secs(&self) -> u64 {
        KEEP_SECS + (self.spacing + MAX_EXTRA).as_secs() + 1
    }

    fn cooling_down(&self) -> bool {
        match self.down_until.lock() {
            Ok(d) => d.is_some_and(|until| Instant::now() < until),
            Err(_) => true,
        }
    }

    fn mark_unreachable(&self, why: &str) {
        let Ok(mut d) = self.down_until.lock() else {
            return;
        };
        let newly = d.is_none();
        *d = Some(Instant::now() + COOL_DOWN);
        drop(d);
        if newly {
            tracing::warn!(
                error = why,
                fallback_per_min = self.fallback_rate_per_min(),
                "fleet budget unreachable in Redis: spacing this replica's upstream calls by FLEET_SIZE_HINT"
            );
            self.spawn_probe();
        }
    }

    /// PINGs Redis every cool-down until it answers (or a slot request got
    /// through first), then marks it reachable: `/readyz` and `/metrics` of
    /// a replica with no upstream traffic still tell the truth.
    fn spawn_probe(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (down_until, conn) = (Arc::downgrade(&self.down_until), self.conn.clone());
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(COOL_DOWN).await;
                let Some(down_until) = down_until.upgrade() else {
                    return;
                };
                if down_until.lock().map(|d| d.is_none()).unwrap_or(true) {
                    return;
                }
                let mut conn = conn.clone();
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut conn);
                if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, ping).await
                    && let Ok(mut d) = down_until.lock()
                    && d.take().is_some()
                {
                    tracing::info!("fleet budget reachable again");
                    return;
                }
            }
        });
    }

    fn mark_reachable(&self) {
        if let Ok(mut d) = self.down_until.lock()
            && d.take().is_some()
        {
            tracing::info!("fleet budget reachable again");
        }
    }

    /// Calls a minute this replica makes while Redis is unreachable.
    fn fallback_rate_per_min(&self) -> f64 {
        60.0 / (self.spacing.as_secs_f64() * f64::from(self.size_hint)).max(1e-6)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(url: &str) -> RedisTarget {
        RedisTarget::Single(url.to_owned())
    }
    use zsxq_test_support::RedisServer;

    #[tokio::test]
    async fn slots_are_granted_one_spacing_apart_by_redis_time() {
        let redis = RedisServer::start().expect("redis-server");
        let fleet =
            FleetBudget::connect(&single(&redis.url()), Duration::from_millis(200), 1).unwrap();
        assert_eq!(
            fleet.try_take(Priority::Interactive).await,
            FleetAnswer::Granted
        );
        let FleetAnswer::Wait(wait) = fleet.try_take(Priority::Interactive).await else {
            panic!("the next slot is not due yet");
        };
        assert!(
            wait > Duration::from_millis(150) && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        tokio::time::sleep(wait).await;
        assert_eq!(
            fleet.try_take(Priority::Interactive).await,
            FleetAnswer::Granted
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_on_a_redis_cluster_share_one_schedule() {
        let cluster = tokio::task::spawn_blocking(zsxq_test_support::RedisCluster::start)
            .await
            .unwrap()
            .expect("redis cluster");
        let target = RedisTarget::Cluster {
            nodes: cluster.urls(),
            read_from_replicas: false,
        };
        let spacing = Duration::from_millis(200);
        let a = FleetBudget::connect(&target, spacing, 1).unwrap();
        let b = FleetBudget::connect(&target, spacing, 1).unwrap();
        assert_eq!(
            a.try_take(Priority::Interactive).await,
            FleetAnswer::Granted
        );
        // The slot is taken fleet-wide: the other replica must wait for the
        // next one, as on a single server.
        let FleetAnswer::Wait(wait) = b.try_take(Priority::Interactive).await else {
            panic!("the second replica got a slot that was not due");
        };
        assert!(wait <= spacing, "{wait:?}");
        tokio::time::sleep(wait).await;
        assert_eq!(
            b.try_take(Priority::Interactive).await,
            FleetAnswer::Granted
        );
    }

    #[tokio::test]
    async fn a_waiting_interactive_caller_holds_the_next_slot_against_background_work() {
        let redis = RedisServer::start().expect("redis-server");
        let spacing = Duration::from_millis(100);
        let a = FleetBudget::connect(&single(&redis.url()), spacing, 1).unwrap();
        let b = FleetBudget::connect(&single(&redis.url()), spacing, 1).unwrap();
        assert_eq!(a.try_take(Priority::Background).await, FleetAnswer::Granted);
        // Replica a has a person waiting; replica b only a sync.
        assert!(matches!(
            a.try_take(Priority::Interactive).await,
            FleetAnswer::Wait(_)
        ));
        tokio::time::sleep(spacing + Duration::from_millis(5)).await;
        assert!(
            matches!(b.try_take(Priority::Background).await, FleetAnswer::Wait(_)),
            "background work must not take the slot an interactive caller waits for"
        );
        assert_eq!(
            a.try_take(Priority::Interactive).await,
            FleetAnswer::Granted
        );
    }

    #[tokio::test]
    async fn throttles_widen_the_fleet_spacing_and_successes_narrow_it() {
        let redis = RedisServer::start().expect("redis-server");
        let spacing = Duration::from_millis(100);
        let fleet = FleetBudget::connect(&single(&redis.url()), spacing, 1).unwrap();
        fleet.widen().await;
        fleet.widen().await;
        assert_eq!(fleet.penalty_seen(), spacing * 2);
        assert_eq!(
            fleet.try_take(Priority::Interactive).await,
            FleetAnswer::Granted
        );
        let FleetAnswer::Wait(wait) = fleet.try_take(Priority::Interactive).await else {
            panic!("not due yet");
        };
        assert!(wait > spacing * 2, "spacing plus penalty: {wait:?}");
        for _ in 0..10 {
            fleet.narrow().await;
        }
        assert_eq!(fleet.penalty_seen(), Duration::ZERO);
    }

    #[tokio::test]
    async fn an_unreachable_redis_answers_at_once_and_the_fallback_spaces_by_the_hint() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let spacing = Duration::from_millis(50);
        let fleet =
            FleetBudget::connect(&single(&format!("redis://{closed}")), spacing, 3).unwrap();
        let started = Instant::now();
        assert_eq!(
            fleet.try_take(Priority::Interactive).await,
            FleetAnswer::Unreachable
        );
        assert_eq!(
            fleet.try_take(Priority::Interactive).await,
            FleetAnswer::Unreachable
        );
        assert!(started.elapsed() < Duration::from_millis(900));
        assert!(!fleet.reachable());
        let started = Instant::now();
        for _ in 0..3 {
            fleet.fallback_slot().await;
        }
        // Two gaps of 3 × 50 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn slots_taken_while_redis_was_away_are_paid_back_to_the_fleet() {
        let mut redis = RedisServer::start().expect("redis-server");
        let spacing = Duration::from_millis(100);
        let fleet = FleetBudget::connect(&single(&redis.url()), spacing, 1).unwrap();
        redis.stop().unwrap();
        assert_eq!(
            fleet.try_take(Priority::Interactive).await,
            FleetAnswer::Unreachable
        );
        for _ in 0..3 {
            fleet.fallback_slot().await;
        }
        assert_eq!(fleet.debt(), spacing * 3);
        redis.restart().unwrap();
        // Nobody asks for a slot meanwhile: the probe notices Redis is back.
        let deadline = Instant::now() + COOL_DOWN * 4;
        while !fleet.reachable() {
            assert!(Instant::now() < deadline, "still taken for unreachable");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(fleet.debt(), spacing * 3, "the probe pays nothing back");
        let FleetAnswer::Wait(wait) = fleet.try_take(Priority::Interactive).await else {
            panic!("the schedule must be pushed back by the three slots taken alone");
        };
        assert!(
            wait > spacing * 2 && wait <= spacing * 3,
            "paid back: {wait:?}"
        );
        assert_eq!(fleet.debt(), Duration::ZERO);
        for _ in 0..1000 {
            fleet.owe(micros(Duration::from_secs(1)));
        }
        assert_eq!(
            fleet.debt(),
            DEBT_CAP,
            "a long outage is paid back only so far"
        );
    }

    #[tokio::test]
    async fn the_state_key_expires_by_itself() {
        let redis = RedisServer::start().expect("redis-server");
        let fleet =
            FleetBudget::connect(&single(&redis.url()), Duration::from_millis(10), 1).unwrap();
        assert_eq!(
            fleet.try_take(Priority::Background).await,
            FleetAnswer::Granted
        );
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(keys::FLEET_BUDGET)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 100, "{ttl}");
    }
}
