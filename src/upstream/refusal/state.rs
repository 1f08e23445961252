//! The refusal state machine: pure data with pure transitions on a
//! millisecond clock, tested without I/O. The guard (`mod.rs`) runs it on
//! the fleet's copy in Redis (`shared.rs`) or on its own.
//!
//! Decisions:
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

pub use crate::config::RefusalPolicy;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::upstream::error::UpstreamError;

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

/// The refusal state, the fleet's or this process's. Times are unix
/// milliseconds (0 = unset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct State {
    /// Consecutive 1059 answers since the last accepted call.
    #[serde(default)]
    streak: u32,
    /// When the current run of 1059s began.
    #[serde(default)]
    refusing_since: i64,
    /// No call before this instant (cool-down, probe grace or, for a dead
    /// token, the next probe).
    #[serde(default)]
    pub(super) closed_until: i64,
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
    pub(super) token: String,
}

/// What an upstream answer says about our standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
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
    pub(super) fn of(result: &Result<Value, UpstreamError>) -> Self {
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
    pub(super) fn gate(&mut self, now: i64, policy: &RefusalPolicy) -> Result<bool, Standing> {
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
    pub(super) fn answer(&mut self, answer: Answer, now: i64, policy: &RefusalPolicy) -> bool {
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
    pub(super) fn standing(&self) -> Standing {
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

/// A unix-millisecond instant as people read it: `2026-12-01T21:40:00Z`.
pub fn utc_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `d` in whole milliseconds, saturating.
pub(super) fn millis(d: Duration) -> i64 {
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
}
