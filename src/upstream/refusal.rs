//! Token protection: stop calling Zsxq while it refuses us, before it bans
//! the token.
//!
//! 1059 is both the throttle and the anti-abuse refusal, and a token that
//! keeps calling through a run of them gets banned (401; see
//! `docs/UPSTREAM.md`). An isolated 1059 is normal and its retry usually
//! succeeds, so the client's retry handles it; a *run* of them means the
//! upstream has turned against us, and the only safe answer is silence.
//!
//! Decisions:
//! - **One state machine, in Rust.** [`State`] is pure data with pure
//!   transitions (`gate`, `answer`) on a millisecond clock, tested without
//!   I/O. Where Redis is the store, the state is shared by the whole fleet:
//!   one JSON string under `zsxq:upstream:refusal`, read together with
//!   Redis's `TIME` (replicas agree on the clock) and written back with a
//!   compare-and-set script, retried on a lost race. One key, so it works
//!   unchanged on a Redis Cluster. On the embedded store (one process) it
//!   lives in memory.
//! - **Consecutive, fleet-wide.** Every 1059 answer — retries included —
//!   adds to the streak; any answer that proves the token and signature
//!   were accepted (a success, "not a member", "not found"…) resets it.
//!   Timeouts and transport failures say nothing about the token and leave
//!   it alone. [`REFUSAL_RUN`] consecutive 1059s open a cool-down.
//! - **Cool-down that doubles.** The first lasts `UPSTREAM_COOL_DOWN_SECS`;
//!   when it ends one caller of the fleet probes (the others keep being
//!   refused for [`PROBE_GRACE`]); a probe answered 1059 opens the next
//!   cool-down at twice the length, up to [`MAX_COOL_DOWN`]. Answers of
//!   calls that were already in flight when a cool-down opened only add to
//!   the streak, they do not double it again.
//! - **Dead token.** 401, and 403 (forbidden for the account — unlike the
//!   member-list refusals 11507/1006/1030, which concern one endpoint), mean
//!   the token is dead or not allowed: nothing is called for
//!   `TOKEN_PROBE_SECS` (a minute), then one probe, fleet-wide. Every answer
//!   meanwhile says the token is the problem.
//! - **Refuse before the slot and after it.** The client checks this
//!   process's last view before it queues for a budget slot (a refused
//!   caller does not wait), abandons the queue the moment the view turns to
//!   refusing (people waiting get their answer at once, not after a queue of
//!   penalised slots), and asks the shared state once it holds a slot, right
//!   before sending — so no call leaves during a cool-down, whichever
//!   replica opened it.
//! - **Redis away: the local copy goes on.** Every read of the shared state
//!   is copied into the local one, which decides alone while Redis does not
//!   answer (500 ms bound), so an outage neither stalls calls nor forgets a
//!   cool-down.
//! - **Per token.** The shared state names the token it is about by a
//!   fingerprint (12 hex digits of its SHA-1, never the token); a state
//!   written for another token reads as clean, so replicas restarted with a
//!   renewed token call at once.
//! - **Cheap when healthy.** A healthy fleet reads the key once per upstream
//!   call and writes nothing: a success is written back only when the state
//!   read before the call was not already clean.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::error::UpstreamError;
use crate::redis_link::{Link, RedisTarget};
use crate::store::keys;

/// Consecutive 1059 answers (retries included) that open a cool-down. The
/// upstream rejects about a quarter of calls at random even when it is
/// happy, so a run of eight happens by chance about once in 80 000 calls;
/// a storm reaches it within seconds.
pub const REFUSAL_RUN: u32 = 8;

/// Longest cool-down, however long the refusals persist.
pub const MAX_COOL_DOWN: Duration = Duration::from_secs(30 * 60);

/// After one caller took the probe, how long the others stay refused while
/// its answer is awaited (longer than any request timeout).
pub const PROBE_GRACE: Duration = Duration::from_secs(30);

/// How long the shared state outlives its last change when nothing renews
/// it, beyond the end of its cool-down.
const KEEP: Duration = Duration::from_secs(60 * 60);

/// Longest wait on Redis before the local copy decides.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Lost compare-and-set races before the local copy decides.
const CAS_ATTEMPTS: usize = 8;

/// The knobs: `UPSTREAM_COOL_DOWN_SECS` and `TOKEN_PROBE_SECS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalPolicy {
    /// The first cool-down after a run of 1059s; each further one doubles.
    pub cool_down: Duration,
    /// How often a dead token is tried again.
    pub probe_every: Duration,
}

impl Default for RefusalPolicy {
    fn default() -> Self {
        Self {
            cool_down: Duration::from_secs(60),
            probe_every: Duration::from_secs(60),
        }
    }
}

/// The shared state. Times are unix milliseconds (0 = unset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// Consecutive 1059 answers since the last accepted call.
    #[serde(default)]
    streak: u32,
    /// When the current run of 1059s began.
    #[serde(default)]
    refusing_since: i64,
    /// No call before this instant (cool-down, probe grace or, for a dead
    /// token, the next probe).
    #[serde(default)]
    closed_until: i64,
    /// Length of the last cool-down, for the doubling.
    #[serde(default)]
    cool_ms: u64,
    /// A caller is probing whether the refusal is over.
    #[serde(default)]
    probing: bool,
    /// 401 or 403 while the token is taken for dead; 0 otherwise.
    #[serde(default)]
    token_code: i64,
    /// When the token was first rejected.
    #[serde(default)]
    token_since: i64,
    /// Which token this state is about (a fingerprint, never the token): a
    /// fleet restarted with a renewed token does not wait for the probe of
    /// the dead one.
    #[serde(default)]
    token: String,
}

/// What an upstream answer says about our standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 1059: refused (throttle, anti-abuse or signature).
    Refused,
    /// 401 / 403: the token is dead or not allowed.
    TokenRejected(i64),
    /// The upstream accepted the token and the signature.
    Accepted,
    /// Says nothing about the token (timeout, transport, our own refusal).
    Silent,
}

impl Answer {
    fn of(result: &Result<Value, UpstreamError>) -> Self {
        use UpstreamError as U;
        match result {
            Ok(_) => Self::Accepted,
            Err(U::Throttled { code: 1059, .. }) => Self::Refused,
            Err(U::Unauthorized { code }) => Self::TokenRejected(*code),
            Err(U::Forbidden { code: 403, .. }) => Self::TokenRejected(403),
            Err(
                U::NotMember { .. }
                | U::NotFound { .. }
                | U::Forbidden { .. }
                | U::BadParameter { .. }
                | U::VersionTooOld { .. }
                | U::Other { .. },
            ) => Self::Accepted,
            Err(_) => Self::Silent,
        }
    }
}

impl State {
    /// Whether a call may be sent at `now`; takes the probe when a closed
    /// period has just ended. `Ok(changed)` on a pass.
    fn gate(&mut self, now: i64, policy: &RefusalPolicy) -> Result<bool, Standing> {
        let closed = self.token_code != 0 || self.streak >= REFUSAL_RUN;
        if !closed {
            return Ok(false);
        }
        if now < self.closed_until {
            return Err(self.standing());
        }
        // The closed period is over: this caller probes, the others wait.
        self.probing = true;
        let grace = if self.token_code != 0 {
            policy.probe_every
        } else {
            PROBE_GRACE
        };
        self.closed_until = now + millis(grace);
        Ok(true)
    }

    /// Takes an answer in; whether the state changed.
    fn answer(&mut self, answer: Answer, now: i64, policy: &RefusalPolicy) -> bool {
        let before = self.clone();
        match answer {
            Answer::Silent => {}
            Answer::Accepted => *self = State::default(),
            Answer::TokenRejected(code) => {
                if self.token_code == 0 {
                    self.token_since = now;
                }
                self.token_code = code;
                self.probing = false;
                self.closed_until = now + millis(policy.probe_every);
            }
            Answer::Refused => {
                if self.streak == 0 {
                    self.refusing_since = now;
                }
                self.streak = self.streak.saturating_add(1);
                let open = self.streak >= REFUSAL_RUN
                    && self.token_code == 0
                    && (self.probing || now >= self.closed_until);
                if open {
                    self.cool_ms = if self.cool_ms == 0 {
                        millis(policy.cool_down) as u64
                    } else {
                        (self.cool_ms * 2).min(millis(MAX_COOL_DOWN) as u64)
                    };
                    self.closed_until = now + self.cool_ms as i64;
                    self.probing = false;
                }
            }
        }
        *self != before
    }

    /// How this state reads to a person.
    fn standing(&self) -> Standing {
        if self.token_code != 0 {
            Standing::TokenRejected {
                code: self.token_code,
                since_ms: self.token_since,
                until_ms: self.closed_until,
            }
        } else if self.streak >= REFUSAL_RUN {
            Standing::Refusing {
                since_ms: self.refusing_since,
                until_ms: self.closed_until,
            }
        } else {
            Standing::Ok
        }
    }
}

/// Whether the upstream is being called, for `/readyz`, `/metrics`, the web
/// page and the errors handed to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Standing {
    /// Calls go out.
    #[default]
    Ok,
    /// A run of 1059s since `since_ms`; no call before `until_ms`.
    Refusing { since_ms: i64, until_ms: i64 },
    /// The token was rejected (`code` 401/403) since `since_ms`; the next
    /// probe at `until_ms`.
    TokenRejected {
        code: i64,
        since_ms: i64,
        until_ms: i64,
    },
}

impl Standing {
    /// The error a caller gets at `now`, while calls are held back.
    pub fn refusal(&self, now: i64) -> Option<UpstreamError> {
        let wait = |until: i64| Duration::from_millis(until.saturating_sub(now).max(0) as u64);
        match *self {
            Standing::Ok => None,
            Standing::Refusing { since_ms, until_ms } if now < until_ms => {
                Some(UpstreamError::Refusing {
                    since_ms,
                    retry_after: wait(until_ms),
                })
            }
            Standing::TokenRejected {
                code,
                since_ms,
                until_ms,
            } if now < until_ms => Some(UpstreamError::TokenRejected {
                code,
                since_ms,
                retry_after: wait(until_ms),
            }),
            _ => None,
        }
    }

    /// `ok`, `refusing` or `token_rejected`.
    pub fn kind(&self) -> &'static str {
        match self {
            Standing::Ok => "ok",
            Standing::Refusing { .. } => "refusing",
            Standing::TokenRejected { .. } => "token_rejected",
        }
    }

    /// For `/readyz` and the web page: the state, since when, the next
    /// attempt and one sentence (Chinese and English) saying what is wrong.
    pub fn to_json(&self) -> Value {
        let time = utc_time;
        match *self {
            Standing::Ok => serde_json::json!({ "state": "ok" }),
            Standing::Refusing { since_ms, until_ms } => serde_json::json!({
                "state": "refusing",
                "since": time(since_ms),
                "retry_at": time(until_ms),
                "message": format!(
                    "知识星球持续以 1059 拒绝请求，自 {} 起暂停调用以保护令牌 (upstream refusing (1059) since {}; calls paused to protect the token)",
                    time(since_ms),
                    time(since_ms)
                ),
            }),
            Standing::TokenRejected {
                code,
                since_ms,
                until_ms,
            } => serde_json::json!({
                "state": "token_rejected",
                "code": code,
                "since": time(since_ms),
                "retry_at": time(until_ms),
                "message": format!(
                    "知识星球自 {} 起拒绝服务的令牌，请更新 ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION (token rejected since {} (code {code}): renew ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION)",
                    time(since_ms),
                    time(since_ms)
                ),
            }),
        }
    }
}

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

struct Shared {
    /// Our own connection, like the fleet budget's.
    conn: Link,
    /// The fingerprint of our token.
    token: String,
    read: redis::Script,
    swap: redis::Script,
}

/// The refusal guard one client (and so one process) holds.
pub struct Refusal {
    policy: RefusalPolicy,
    /// The fleet's state in Redis; `None` on the embedded store.
    shared: Option<Shared>,
    /// The deciding state without Redis, and the last state read from it.
    local: Mutex<State>,
    /// The standing as last seen, for callers waiting on a slot, `/metrics`
    /// and `/readyz`.
    view: watch::Sender<Standing>,
}

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusal")
            .field("policy", &self.policy)
            .field("shared", &self.shared.is_some())
            .field("standing", &*self.view.borrow())
            .finish()
    }
}

impl Refusal {
    /// A guard for one process.
    pub fn local(policy: RefusalPolicy) -> Self {
        Self {
            policy,
            shared: None,
            local: Mutex::new(State::default()),
            view: watch::Sender::new(Standing::Ok),
        }
    }

    /// A guard whose state the whole fleet shares through the Redis at
    /// `target`; `token` is the upstream token, kept only as a fingerprint.
    /// Nothing is dialled here. Must be called inside a Tokio runtime.
    pub fn shared(
        target: &RedisTarget,
        policy: RefusalPolicy,
        token: &str,
    ) -> redis::RedisResult<Self> {
        let conn = Link::new(target, CALL_TIMEOUT)?;
        let digest = sha1_smol::Sha1::from(token).digest().to_string();
        Ok(Self {
            shared: Some(Shared {
                conn,
                token: digest[..12].to_string(),
                read: redis::Script::new(READ),
                swap: redis::Script::new(SWAP),
            }),
            ..Self::local(policy)
        })
    }

    /// The standing as this process last saw it.
    pub fn standing(&self) -> Standing {
        *self.view.borrow()
    }

    /// The error for a caller about to queue for a slot, from the last view
    /// (no I/O): refused callers need not wait.
    pub fn refused_now(&self) -> Option<UpstreamError> {
        self.standing().refusal(now_ms())
    }

    /// Resolves with the error once this process's view turns to refusing;
    /// raced against the wait for a budget slot.
    pub async fn refused(&self) -> UpstreamError {
        let mut rx = self.view.subscribe();
        loop {
            if let Some(e) = rx.borrow_and_update().refusal(now_ms()) {
                return e;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The authoritative check, right before a call is sent: refused while
    /// the fleet is cooling down or the token is dead; the one caller that
    /// finds a closed period over takes the probe.
    pub async fn admit(&self) -> Result<(), UpstreamError> {
        let policy = self.policy;
        let verdict = self
            .update(|state, now| match state.gate(now, &policy) {
                Ok(changed) => (changed, Ok(())),
                Err(standing) => (false, Err(standing.refusal(now))),
            })
            .await;
        match verdict {
            Ok(()) | Err(None) => Ok(()),
            Err(Some(e)) => Err(e),
        }
    }

    /// Takes the answer of a call in; true when it closed the gate (a
    /// cool-down opened, or the token was found rejected).
    pub async fn record(&self, result: &Result<Value, UpstreamError>) -> bool {
        let answer = Answer::of(result);
        if answer == Answer::Silent
            || (answer == Answer::Accepted && self.standing() == Standing::Ok && self.clean())
        {
            return false;
        }
        let policy = self.policy;
        let before = self.standing();
        self.update(|state, now| (state.answer(answer, now, &policy), ()))
            .await;
        let after = self.standing();
        let closed = after != before && after.refusal(now_ms()).is_some();
        if after != before {
            match after {
                Standing::Ok => tracing::info!("upstream accepts calls again"),
                Standing::Refusing { until_ms, .. } => tracing::warn!(
                    run = REFUSAL_RUN,
                    pause_ms = until_ms.saturating_sub(now_ms()),
                    "upstream keeps refusing with 1059: calls paused to protect the token"
                ),
                Standing::TokenRejected { code, .. } => tracing::error!(
                    code,
                    "upstream rejected the token: calls stopped (one probe a minute); renew ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION"
                ),
            }
        }
        closed
    }

    /// Reads the fleet's state afresh (for `/readyz`: a replica that makes
    /// no calls still reports what the fleet knows).
    pub async fn refresh(&self) -> Standing {
        self.update(|_, _| (false, ())).await;
        self.standing()
    }

    /// Publishes the standing; waiters wake only when it changed.
    fn show(&self, standing: Standing) {
        self.view.send_if_modified(|shown| {
            let changed = *shown != standing;
            *shown = standing;
            changed
        });
    }

    /// Whether the local copy has nothing to reset (no streak either).
    fn clean(&self) -> bool {
        *self.local.lock().unwrap_or_else(PoisonError::into_inner) == State::default()
    }

    /// Applies `step` to the state — the fleet's in Redis when reachable,
    /// else the local copy — writing it back when `step` says it changed.
    async fn update<T>(&self, mut step: impl FnMut(&mut State, i64) -> (bool, T)) -> T {
        if let Some(shared) = &self.shared {
            for _ in 0..CAS_ATTEMPTS {
                match self.shared_step(shared, &mut step).await {
                    Ok(Some(out)) => return out,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "refusal state unreachable in Redis: deciding locally");
                        break;
                    }
                }
            }
        }
        let mut state = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, out) = step(&mut state, now_ms());
        let standing = state.standing();
        drop(state);
        self.show(standing);
        out
    }

    /// One read-step-swap round on Redis; `Ok(None)` when another process
    /// changed the state in between.
    async fn shared_step<T>(
        &self,
        shared: &Shared,
        step: &mut impl FnMut(&mut State, i64) -> (bool, T),
    ) -> Result<Option<T>, String> {
        let mut conn = shared.conn.clone();
        let read = shared.read.key(keys::REFUSAL);
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
            .filter(|s: &State| s.token == shared.token)
            .unwrap_or_default();
        let (changed, out) = step(&mut state, now);
        state.token.clone_from(&shared.token);
        if changed {
            let clean = State {
                token: shared.token.clone(),
                ..State::default()
            };
            let new = if state == clean {
                String::new()
            } else {
                serde_json::to_string(&state).map_err(|e| e.to_string())?
            };
            let ttl = state.closed_until.saturating_sub(now).max(0) + millis(KEEP);
            let mut swap = shared.swap.key(keys::REFUSAL);
            swap.arg(&raw).arg(new).arg(ttl);
            let written: i64 = tokio::time::timeout(CALL_TIMEOUT, swap.invoke_async(&mut conn))
                .await
                .map_err(|_| "no answer within 500 ms".to_string())?
                .map_err(|e| e.to_string())?;
            if written == 0 {
                return Ok(None);
            }
        }
        let standing = state.standing();
        state.token.clear();
        *self.local.lock().unwrap_or_else(PoisonError::into_inner) = state;
        self.show(standing);
        Ok(Some(out))
    }
}

/// The gauges `/metrics` shows, read from the guard at scrape time.
#[derive(Debug)]
pub struct RefusalCollector(pub Arc<Refusal>);

impl Collector for RefusalCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let standing = self.0.standing();
        let (refusing_since, token_since) = match standing {
            Standing::Ok => (0, 0),
            Standing::Refusing { since_ms, .. } => (since_ms, 0),
            Standing::TokenRejected { since_ms, .. } => (0, since_ms),
        };
        for (name, help, value) in [
            (
                "zsxq_upstream_refusing",
                "1 while calls are paused after a run of 1059 refusals, else 0",
                i64::from(refusing_since != 0),
            ),
            (
                "zsxq_upstream_token_rejected",
                "1 while the upstream rejects the token (401/403) and calls are stopped, else 0",
                i64::from(token_since != 0),
            ),
        ] {
            let metric = ConstGauge::new(value);
            let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(family)?;
        }
        for (name, help, since) in [
            (
                "zsxq_upstream_refusing_since_seconds",
                "Unix time the current run of 1059 refusals began (0 when none)",
                refusing_since,
            ),
            (
                "zsxq_upstream_token_rejected_since_seconds",
                "Unix time the upstream first rejected the token (0 when it accepts it)",
                token_since,
            ),
        ] {
            let metric = ConstGauge::new(since as f64 / 1000.0);
            let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(family)?;
        }
        Ok(())
    }
}

/// A unix-millisecond instant as people read it: `2026-12-01T21:40:00Z`.
pub fn utc_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RefusalPolicy = RefusalPolicy {
        cool_down: Duration::from_secs(60),
        probe_every: Duration::from_secs(60),
    };

    fn refused_run(state: &mut State, n: u32, now: i64) {
        for _ in 0..n {
            state.answer(Answer::Refused, now, &POLICY);
        }
    }

    #[test]
    fn isolated_1059s_never_close_the_gate() {
        let mut s = State::default();
        for round in 0..100 {
            refused_run(&mut s, REFUSAL_RUN - 1, round);
            assert_eq!(s.gate(round, &POLICY), Ok(false));
            s.answer(Answer::Accepted, round, &POLICY);
        }
        assert_eq!(s, State::default());
    }

    #[test]
    fn a_run_of_1059s_closes_the_gate_for_a_cool_down_that_doubles_while_refusals_persist() {
        let mut s = State::default();
        refused_run(&mut s, REFUSAL_RUN, 1_000);
        assert_eq!(
            s.standing(),
            Standing::Refusing {
                since_ms: 1_000,
                until_ms: 61_000
            }
        );
        assert!(s.gate(60_999, &POLICY).is_err());
        // Answers of calls already in flight do not lengthen it.
        refused_run(&mut s, 3, 2_000);
        assert_eq!(s.closed_until, 61_000);
        // The cool-down is over: one caller probes, the others wait.
        assert_eq!(s.gate(61_000, &POLICY), Ok(true));
        assert!(s.gate(61_001, &POLICY).is_err());
        // The probe is refused again: twice as long.
        s.answer(Answer::Refused, 61_200, &POLICY);
        assert_eq!(s.closed_until, 61_200 + 120_000);
        assert_eq!(s.gate(181_200, &POLICY), Ok(true));
        s.answer(Answer::Refused, 181_300, &POLICY);
        assert_eq!(s.closed_until, 181_300 + 240_000);
        // Never longer than the cap.
        for _ in 0..20 {
            let at = s.closed_until;
            assert_eq!(s.gate(at, &POLICY), Ok(true));
            s.answer(Answer::Refused, at, &POLICY);
        }
        assert_eq!(s.cool_ms, MAX_COOL_DOWN.as_millis() as u64);
        // A probe that gets through clears everything.
        let at = s.closed_until;
        assert_eq!(s.gate(at, &POLICY), Ok(true));
        s.answer(Answer::Accepted, at, &POLICY);
        assert_eq!(s, State::default());
        assert_eq!(s.gate(at, &POLICY), Ok(false));
    }

    #[test]
    fn a_probe_that_times_out_is_followed_by_another_after_the_grace() {
        let mut s = State::default();
        refused_run(&mut s, REFUSAL_RUN, 0);
        assert_eq!(s.gate(60_000, &POLICY), Ok(true));
        s.answer(Answer::Silent, 70_000, &POLICY);
        assert!(s.gate(70_000, &POLICY).is_err());
        assert_eq!(s.gate(60_000 + 30_000, &POLICY), Ok(true));
    }

    #[test]
    fn a_rejected_token_stops_calls_with_one_probe_a_minute() {
        let mut s = State::default();
        s.answer(Answer::TokenRejected(401), 5_000, &POLICY);
        let Err(standing) = s.gate(5_001, &POLICY) else {
            panic!("a dead token must not be called");
        };
        assert_eq!(
            standing,
            Standing::TokenRejected {
                code: 401,
                since_ms: 5_000,
                until_ms: 65_000
            }
        );
        let e = standing.refusal(5_001).unwrap();
        assert!(e.to_string().contains("ZSXQ_ACCESS_TOKEN"), "{e}");
        assert_eq!(s.gate(65_000, &POLICY), Ok(true));
        assert!(s.gate(65_001, &POLICY).is_err(), "one probe, not one each");
        s.answer(Answer::TokenRejected(401), 65_100, &POLICY);
        assert_eq!(s.token_since, 5_000, "since the first rejection");
        assert_eq!(s.closed_until, 125_100);
        // 1059s while dead change nothing about the probe.
        refused_run(&mut s, REFUSAL_RUN * 2, 70_000);
        assert_eq!(s.closed_until, 125_100);
        assert!(matches!(s.standing(), Standing::TokenRejected { .. }));
        s.answer(Answer::Accepted, 125_200, &POLICY);
        assert_eq!(s.standing(), Standing::Ok);
    }

    #[test]
    fn answers_are_read_for_what_they_say_about_the_token() {
        let throttled = Err(UpstreamError::from_code(1059, String::new()));
        assert_eq!(Answer::of(&throttled), Answer::Refused);
        let http_429 = Err(UpstreamError::Throttled {
            code: 429,
            retry_after: None,
        });
        assert_eq!(Answer::of(&http_429), Answer::Silent, "429 is a rate limit");
        assert_eq!(
            Answer::of(&Err(UpstreamError::from_code(401, String::new()))),
            Answer::TokenRejected(401)
        );
        assert_eq!(
            Answer::of(&Err(UpstreamError::from_code(403, String::new()))),
            Answer::TokenRejected(403)
        );
        for listing_refusal in [11507, 1006, 1030] {
            assert_eq!(
                Answer::of(&Err(UpstreamError::from_code(
                    listing_refusal,
                    String::new()
                ))),
                Answer::Accepted,
                "{listing_refusal} concerns the member list, not the token"
            );
        }
        assert_eq!(
            Answer::of(&Err(UpstreamError::from_code(1037, String::new()))),
            Answer::Accepted
        );
        assert_eq!(Answer::of(&Err(UpstreamError::Timeout)), Answer::Silent);
        assert_eq!(Answer::of(&Ok(Value::Null)), Answer::Accepted);
    }

    #[test]
    fn every_answer_while_held_back_says_why_in_both_languages_with_when_it_retries() {
        let refusing = UpstreamError::Refusing {
            since_ms: 1_764_625_200_000,
            retry_after: Duration::from_secs(42),
        };
        let dead = UpstreamError::TokenRejected {
            code: 401,
            since_ms: 1_764_625_200_000,
            retry_after: Duration::from_secs(60),
        };
        let api = crate::http::error::ApiError::from(refusing.clone());
        assert_eq!(api.status.as_u16(), 503);
        assert_eq!(api.retry_after, Some(Duration::from_secs(42)));
        assert!(
            api.message
                .contains("upstream refusing (1059) since 2025-12-01T21:40:00Z")
                && api.message.contains("暂停"),
            "{}",
            api.message
        );
        let api = crate::http::error::ApiError::from(dead.clone());
        assert_eq!(api.status.as_u16(), 503);
        assert!(
            api.message
                .contains("token rejected since 2025-12-01T21:40:00Z")
                && api.message.contains("令牌")
                && api.message.contains("ZSXQ_ACCESS_TOKEN"),
            "{}",
            api.message
        );
        // A refund row whose number could not be had says the same.
        let row = crate::cache::batch::missing_reason(&refusing);
        assert!(row.contains("1059") && row.contains("暂停"), "{row}");
        let row = crate::cache::batch::missing_reason(&dead);
        assert!(
            row.contains("令牌") && row.contains("ZSXQ_AUTHORIZATION"),
            "{row}"
        );
        assert!(!refusing.is_retryable() && !dead.is_retryable());
    }

    #[tokio::test]
    async fn the_local_guard_refuses_callers_and_wakes_those_waiting_for_a_slot() {
        let guard = Arc::new(Refusal::local(POLICY));
        let waiting = tokio::spawn({
            let guard = guard.clone();
            async move { guard.refused().await }
        });
        for _ in 0..REFUSAL_RUN {
            assert!(guard.admit().await.is_ok());
            guard
                .record(&Err(UpstreamError::from_code(1059, String::new())))
                .await;
        }
        let woken = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a waiting caller is told at once")
            .unwrap();
        assert!(matches!(woken, UpstreamError::Refusing { .. }), "{woken:?}");
        assert!(matches!(
            guard.admit().await,
            Err(UpstreamError::Refusing { .. })
        ));
        assert!(guard.refused_now().is_some());
        assert_eq!(guard.standing().kind(), "refusing");
    }

    #[tokio::test]
    async fn replicas_on_one_redis_share_the_cool_down() {
        let redis = zsxq_test_support::RedisServer::start().expect("redis-server");
        let target = RedisTarget::Single(redis.url());
        let a = Refusal::shared(&target, POLICY, "tok").unwrap();
        let b = Refusal::shared(&target, POLICY, "tok").unwrap();
        // Half the run on each replica: consecutive fleet-wide.
        for i in 0..REFUSAL_RUN {
            let replica = if i % 2 == 0 { &a } else { &b };
            assert!(replica.admit().await.is_ok());
            replica
                .record(&Err(UpstreamError::from_code(1059, String::new())))
                .await;
        }
        assert!(matches!(
            a.admit().await,
            Err(UpstreamError::Refusing { .. })
        ));
        assert!(matches!(
            b.admit().await,
            Err(UpstreamError::Refusing { .. })
        ));
        assert_eq!(b.refresh().await.kind(), "refusing");
        // A dead token seen by one replica stops the other.
        let c = Refusal::shared(&target, POLICY, "tok").unwrap();
        redis::cmd("DEL")
            .arg(keys::REFUSAL)
            .exec_async(&mut c.shared.as_ref().unwrap().conn.clone())
            .await
            .unwrap();
        assert!(a.admit().await.is_ok());
        a.record(&Err(UpstreamError::from_code(401, String::new())))
            .await;
        let e = c.admit().await.unwrap_err();
        assert!(
            matches!(e, UpstreamError::TokenRejected { code: 401, .. }),
            "{e:?}"
        );
        assert_eq!(c.standing().kind(), "token_rejected");
    }

    #[tokio::test]
    async fn an_unreachable_redis_leaves_the_decision_to_the_local_copy() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let guard = Refusal::shared(
            &RedisTarget::Single(format!("redis://{closed}")),
            POLICY,
            "tok",
        )
        .unwrap();
        for _ in 0..REFUSAL_RUN {
            assert!(guard.admit().await.is_ok());
            guard
                .record(&Err(UpstreamError::from_code(1059, String::new())))
                .await;
        }
        assert!(matches!(
            guard.admit().await,
            Err(UpstreamError::Refusing { .. })
        ));
    }
}
