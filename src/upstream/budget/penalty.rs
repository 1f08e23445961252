//! The budget's backoff on throttle: an extra gap added to the spacing of
//! every slot while throttles dominate (AIMD).
//!
//! Decisions:
//! - **Multiplicative up, additive down.** While throttles dominate, each
//!   1059/429 doubles the extra gap (at least one period, at most
//!   [`MAX_PENALTY`]); each success takes a fixed step off it. A throttled
//!   upstream is not hammered at full rate, and the pace recovers gradually.
//! - **Only when throttles dominate.** The real upstream rejects about a
//!   quarter of calls at random however slowly one goes, and slowing down
//!   for those only starves the caller (the client's retry handles them).
//!   So the gap only grows while a moving average of the throttle share is
//!   above [`THROTTLE_SHARE_TRIGGER`] — a burst of consecutive throttles,
//!   the signature of a real rate limit.
//! - **Slots claimed by who is there.** While penalised, callers take turns
//!   (a fair async mutex), and the next slot is claimed only by the caller
//!   who wakes to take it: a waiter that gives up leaves no gap in the
//!   schedule, and the others wake once each.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Throttle share (moving average, weight `SHARE_WEIGHT` per answer)
/// above which throttles slow the pace. Random rejection of 25% keeps the
/// average near 0.29; five throttles in a row push it past 0.4.
pub const THROTTLE_SHARE_TRIGGER: f64 = 0.35;
const SHARE_WEIGHT: f64 = 0.1;

/// Largest extra spacing after repeated throttles.
pub(super) const MAX_PENALTY: Duration = Duration::from_secs(30);

/// The extra spacing and the turn callers take while it applies.
#[derive(Debug)]
pub(super) struct Penalty {
    /// The steady spacing between calls, which the gap is added to.
    period: Duration,
    /// A std mutex: held for a few arithmetic steps, never across an await.
    state: Mutex<PenaltyState>,
    /// While penalised, callers wait for the next slot one at a time, in
    /// order (a fair async mutex): each wakes once, at its slot.
    turn: tokio::sync::Mutex<()>,
}

/// The penalty's numbers, changed together under one lock.
#[derive(Debug, Default)]
struct PenaltyState {
    /// Added to the spacing of every slot while non-zero.
    extra: Duration,
    /// Moving average of the share of answers that were throttles.
    throttle_share: f64,
    /// While penalised, the earliest instant the next slot may start.
    next_free: Option<Instant>,
}

impl Penalty {
    /// No penalty, for slots `period` apart.
    pub(super) fn new(period: Duration) -> Self {
        Self {
            period,
            state: Mutex::new(PenaltyState::default()),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// While penalised, waits until the next slot is `period + extra` after
    /// the previous one, then claims it; free when there is no penalty.
    pub(super) async fn wait(&self) {
        if self.extra().is_zero() {
            if let Ok(mut p) = self.state.lock() {
                p.next_free = None;
            }
            return;
        }
        let _turn = self.turn.lock().await;
        loop {
            let wait = {
                let Ok(mut p) = self.state.lock() else {
                    return;
                };
                if p.extra.is_zero() {
                    p.next_free = None;
                    return;
                }
                let now = Instant::now();
                match p.next_free {
                    Some(at) if at > now => at - now,
                    _ => {
                        p.next_free = Some(now + self.period + p.extra);
                        return;
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// A throttle was answered: while throttles dominate, double the extra
    /// spacing (at least one period, at most [`MAX_PENALTY`]). Whether they
    /// dominate.
    pub(super) fn throttled(&self) -> bool {
        let Ok(mut p) = self.state.lock() else {
            return false;
        };
        p.throttle_share = p.throttle_share * (1.0 - SHARE_WEIGHT) + SHARE_WEIGHT;
        let dominant = p.throttle_share > THROTTLE_SHARE_TRIGGER;
        if dominant {
            p.extra = (p.extra * 2).max(self.period).min(MAX_PENALTY);
        }
        dominant
    }

    /// A call succeeded: take one step off the extra spacing.
    pub(super) fn succeeded(&self) {
        if let Ok(mut p) = self.state.lock() {
            p.throttle_share *= 1.0 - SHARE_WEIGHT;
            let step = (self.period / 4).max(Duration::from_millis(50));
            p.extra = p.extra.saturating_sub(step);
        }
    }

    /// Drops the penalty and the slot it reserved.
    pub(super) fn forgive(&self) {
        if let Ok(mut p) = self.state.lock() {
            *p = PenaltyState::default();
        }
    }

    /// The extra spacing now (zero when not penalised).
    pub(super) fn extra(&self) -> Duration {
        self.state.lock().map(|p| p.extra).unwrap_or_default()
    }

    /// The earliest instant the next penalised slot may start.
    #[cfg(test)]
    pub(super) fn next_free(&self) -> Option<Instant> {
        self.state.lock().ok().and_then(|p| p.next_free)
    }
}
