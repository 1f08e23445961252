//! Token protection: stop calling Zsxq while it refuses us, before it bans
//! the token.
//!
//! 1059 is both the throttle and the anti-abuse refusal, and a token that
//! keeps calling through a run of them gets banned (401; see
//! `docs/UPSTREAM.md`). An isolated 1059 is normal and its retry usually
//! succeeds, so the client's retry handles it; a *run* of them means the
//! upstream has turned against us, and the only safe answer is silence.
//!
//! - `state.rs`: the state machine — when a run of 1059s or a rejected
//!   token closes the gate, for how long, and who probes.
//! - `shared.rs`: the fleet's copy of that state in Redis.
//! - `collector.rs`: its gauges for `/metrics`.
//!
//! Decisions:
//! - **One state machine, in Rust.** `State` (`state.rs`) is pure data with
//!   pure transitions; where Redis is the store, the state is shared by the
//!   whole fleet (`shared.rs`). On the embedded store (one process) it
//!   lives in memory.
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
//! - **Cheap when healthy.** A healthy fleet reads the key once per upstream
//!   call and writes nothing: a success is written back only when the state
//!   read before the call was not already clean.

mod collector;
mod shared;
mod state;
#[cfg(test)]
mod tests;

use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use tokio::sync::watch;

pub use self::collector::RefusalCollector;
pub use self::state::{MAX_COOL_DOWN, PROBE_GRACE, REFUSAL_RUN, RefusalPolicy, Standing, utc_time};

use self::shared::Shared;
use self::state::{Answer, State};
use super::error::UpstreamError;
use crate::redis_link::RedisTarget;

/// Lost compare-and-set races before the local copy decides.
const CAS_ATTEMPTS: usize = 8;

/// The refusal guard one client (and so one process) holds.
pub struct Refusal {
    /// How long cool-downs last and how often a dead token is probed.
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
        Ok(Self {
            shared: Some(Shared::new(target, token)?),
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
                match shared.step(&mut step).await {
                    Ok(Some((state, out))) => {
                        let standing = state.standing();
                        *self.local.lock().unwrap_or_else(PoisonError::into_inner) = state;
                        self.show(standing);
                        return out;
                    }
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
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
