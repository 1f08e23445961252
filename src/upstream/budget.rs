//! The process-wide upstream budget: every call to Zsxq — lookups, sync,
//! rankings — takes a slot here first.
//!
//! - **Rate:** a GCRA limiter (governor) at `API_RATE_LIMIT` calls a minute,
//!   spread evenly with a burst of one, because the real upstream throttles
//!   bursts with 1059 long before any per-minute count is reached. The seed's
//!   `API_REQUEST_DELAY` is a floor on the spacing.
//! - **Concurrency:** at most `API_CONCURRENCY` calls in flight.
//! - **Priority:** a person waiting on a lookup or a refund list goes first;
//!   background work (sync, refresh) takes a slot only while no interactive
//!   caller is waiting.
//! - **Backoff on throttle (AIMD):** while throttles dominate, each 1059/429
//!   doubles an extra gap added to the spacing of every slot (at least one
//!   period, at most 30 s); each success takes a fixed step off it. A
//!   throttled upstream is not hammered at full rate, and the pace recovers
//!   gradually. "Dominate" matters: the real upstream rejects about a quarter
//!   of calls at random however slowly one goes, and slowing down for those
//!   only starves the caller (the retry handles them). So the gap only grows
//!   while a moving average of the throttle share is above
//!   [`THROTTLE_SHARE_TRIGGER`] — a burst of consecutive throttles, the
//!   signature of a real rate limit.
//! - **Safety margin:** slots are spaced 2% wider than `60 s / rate`, so the
//!   jitter of network latency can never squeeze 51 calls into an upstream's
//!   rolling minute of 50; the cost is 2% of throughput.
//! - **Fleet:** with Redis, a slot from this process's limiter is then
//!   checked against the fleet's schedule in Redis (`fleet.rs`), so several
//!   replicas together keep to `API_RATE_LIMIT`. One caller per process asks
//!   the fleet at a time (the others wait here, not in Redis), and it keeps
//!   the priority: background work gives its turn up to an interactive
//!   caller of this process, and the fleet refuses it while one of any
//!   process waits. Throttles and successes move the fleet's penalty too.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Throttle share (moving average, weight [`SHARE_WEIGHT`] per answer)
/// above which throttles slow the pace. Random rejection of 25% keeps the
/// average near 0.29; five throttles in a row push it past 0.4.
pub const THROTTLE_SHARE_TRIGGER: f64 = 0.35;
const SHARE_WEIGHT: f64 = 0.1;

use super::fleet::{FleetAnswer, FleetBudget};
use crate::metrics::{PriorityLabels, UpstreamMetrics};

/// Largest extra spacing after repeated throttles.
const MAX_PENALTY: Duration = Duration::from_secs(30);

/// Spacing multiplier; see the module docs.
const SAFETY: f64 = 1.02;

/// Longest sleep between two requests for a fleet slot: a long wait (a
/// penalty) is slept in steps, so background work notices an interactive
/// caller of its own process and gives up its turn.
const FLEET_POLL_MAX: Duration = Duration::from_millis(250);

/// Who is waiting for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// A person is waiting on the answer (lookup, refund list).
    Interactive,
    /// Sync, refresh and warm-up: uses what interactive work leaves.
    Background,
}

/// Counters the stats endpoint and logs report.
#[derive(Debug, Default)]
pub struct BudgetStats {
    /// HTTP requests actually sent upstream.
    pub calls: AtomicU64,
    /// Answers that were throttles (1059 / 429).
    pub throttled: AtomicU64,
    /// Retries made after retryable failures.
    pub retries: AtomicU64,
    /// Total microseconds callers waited for a slot, per priority.
    pub wait_us_interactive: AtomicU64,
    pub wait_us_background: AtomicU64,
    pub acquired_interactive: AtomicU64,
    pub acquired_background: AtomicU64,
    /// Times the fleet's schedule in Redis said "not yet".
    pub fleet_waits: AtomicU64,
    /// Slots taken from the local fallback because Redis was unreachable.
    pub fleet_fallbacks: AtomicU64,
}

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

/// A snapshot of [`BudgetStats`] for JSON.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct BudgetSnapshot {
    pub upstream_calls: u64,
    pub throttled: u64,
    pub retries: u64,
    /// Mean wait for a slot, milliseconds.
    pub queue_wait_ms_interactive: f64,
    pub queue_wait_ms_background: f64,
    /// Whether the budget is shared with other replicas right now.
    pub fleet: FleetMode,
}

pub struct Budget {
    limiter: DefaultDirectRateLimiter,
    in_flight: Semaphore,
    /// Interactive callers currently waiting for a rate slot; background work
    /// yields while this is non-zero.
    interactive_waiting: AtomicUsize,
    /// Extra spacing imposed after a throttle (the adaptive part).
    penalty: Mutex<Penalty>,
    /// The steady spacing between calls.
    period: Duration,
    /// `API_CONCURRENCY`, for callers that bound their own fan-out to it.
    concurrency: usize,
    /// The fleet's schedule in Redis; `None` for a lone process.
    fleet: Option<Arc<FleetBudget>>,
    /// Held by the one caller of this process that asks the fleet for a
    /// slot, so waiting callers poll nothing.
    fleet_turn: tokio::sync::Mutex<()>,
    pub stats: BudgetStats,
    /// The same events by priority, for `/metrics`.
    metrics: UpstreamMetrics,
}

#[derive(Debug, Default)]
struct Penalty {
    /// Added to the spacing of every slot while non-zero.
    extra: Duration,
    /// Moving average of the share of answers that were throttles.
    throttle_share: f64,
    /// While penalised, the earliest instant the next slot may start.
    next_free: Option<Instant>,
}

/// Decrements the waiting count when an interactive wait ends or is dropped.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Budget {
    /// `rate_per_min` calls a minute, no closer than `min_delay` apart, at
    /// most `concurrency` in flight.
    pub fn new(rate_per_min: u32, min_delay: Duration, concurrency: usize) -> Self {
        let by_rate = Duration::from_secs_f64(60.0 * SAFETY / f64::from(rate_per_min.max(1)));
        let period = by_rate.max(min_delay).max(Duration::from_micros(1));
        let quota = Quota::with_period(period)
            .expect("period is non-zero")
            .allow_burst(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(quota),
            in_flight: Semaphore::new(concurrency.max(1)),
            interactive_waiting: AtomicUsize::new(0),
            penalty: Mutex::new(Penalty::default()),
            period,
            concurrency: concurrency.max(1),
            fleet: None,
            fleet_turn: tokio::sync::Mutex::new(()),
            stats: BudgetStats::default(),
            metrics: UpstreamMetrics::default(),
        }
    }

    /// The instruments `/metrics` reports.
    pub fn metrics(&self) -> &UpstreamMetrics {
        &self.metrics
    }

    /// An HTTP request is about to be sent upstream.
    pub fn record_call(&self, priority: Priority) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .calls
            .get_or_create(&PriorityLabels::from(priority))
            .inc();
    }

    /// A failed call is about to be retried.
    pub fn record_retry(&self, priority: Priority) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .retries
            .get_or_create(&PriorityLabels::from(priority))
            .inc();
    }

    /// Shares the rate with the other replicas through `fleet`, which must
    /// space calls by [`Budget::period`].
    pub fn with_fleet(mut self, fleet: FleetBudget) -> Self {
        self.fleet = Some(Arc::new(fleet));
        self
    }

    /// How the rate is shared now.
    pub fn fleet_mode(&self) -> FleetMode {
        match &self.fleet {
            None => FleetMode::Off,
            Some(f) if f.reachable() => FleetMode::Shared,
            Some(_) => FleetMode::Fallback,
        }
    }

    /// The steady spacing between two calls.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Calls allowed in flight at once (`API_CONCURRENCY`).
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Waits for a rate slot and an in-flight permit. The permit must be held
    /// for the duration of the HTTP call.
    pub async fn acquire(&self, priority: Priority) -> SemaphorePermit<'_> {
        let started = Instant::now();
        match priority {
            Priority::Interactive => {
                self.interactive_waiting.fetch_add(1, Ordering::SeqCst);
                let _guard = WaitingGuard(&self.interactive_waiting);
                self.wait_penalty().await;
                self.limiter.until_ready().await;
                // Still counted as waiting: background work of this
                // process keeps yielding while we wait for the fleet.
                self.fleet_slot(priority).await;
            }
            Priority::Background => {
                self.wait_penalty().await;
                loop {
                    while self.interactive_waiting.load(Ordering::SeqCst) > 0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    match self.limiter.check() {
                        Ok(()) => break,
                        Err(not_until) => {
                            let wait = not_until.wait_time_from(DefaultClock::default().now());
                            tokio::time::sleep(wait).await;
                            // An interactive caller that arrived meanwhile
                            // takes this slot: the loop re-checks first.
                        }
                    }
                }
                self.fleet_slot(priority).await;
            }
        }
        // The semaphore is never closed, so acquire cannot fail.
        let permit = match self.in_flight.acquire().await {
            Ok(p) => p,
            Err(_) => unreachable!("budget semaphore is never closed"),
        };
        let waited = started.elapsed().as_micros() as u64;
        let (sum, count) = match priority {
            Priority::Interactive => (
                &self.stats.wait_us_interactive,
                &self.stats.acquired_interactive,
            ),
            Priority::Background => (
                &self.stats.wait_us_background,
                &self.stats.acquired_background,
            ),
        };
        sum.fetch_add(waited, Ordering::Relaxed);
        count.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .queue_wait
            .get_or_create(&PriorityLabels::from(priority))
            .observe(waited as f64 / 1e6);
        permit
    }

    /// Waits for the fleet's next slot, when the rate is shared. One caller
    /// of this process asks at a time; background work gives its turn up
    /// whenever an interactive caller of this process is waiting.
    async fn fleet_slot(&self, priority: Priority) {
        let Some(fleet) = &self.fleet else { return };
        let yields = |p: Priority| {
            p == Priority::Background && self.interactive_waiting.load(Ordering::SeqCst) > 0
        };
        loop {
            while yields(priority) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _turn = self.fleet_turn.lock().await;
            loop {
                if yields(priority) {
                    break;
                }
                match fleet.try_take(priority).await {
                    FleetAnswer::Granted => return,
                    FleetAnswer::Wait(wait) => {
                        self.stats.fleet_waits.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait.clamp(Duration::from_millis(1), FLEET_POLL_MAX))
                            .await;
                    }
                    FleetAnswer::Unreachable => {
                        self.stats.fleet_fallbacks.fetch_add(1, Ordering::Relaxed);
                        fleet.fallback_slot().await;
                        return;
                    }
                }
            }
        }
    }

    /// While penalised, reserves the next slot `period + extra` after the
    /// previous one and sleeps until it; free when there is no penalty.
    async fn wait_penalty(&self) {
        let slot = {
            let Ok(mut p) = self.penalty.lock() else {
                return;
            };
            if p.extra.is_zero() {
                p.next_free = None;
                return;
            }
            let now = Instant::now();
            let slot = p.next_free.map_or(now, |t| t.max(now));
            p.next_free = Some(slot + self.period + p.extra);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }

    /// A throttle was answered to a call of `priority`: double the extra
    /// spacing (at least one period, at most 30 s).
    pub fn on_throttle(&self, priority: Priority) {
        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .throttled
            .get_or_create(&PriorityLabels::from(priority))
            .inc();
        let mut dominant = false;
        if let Ok(mut p) = self.penalty.lock() {
            p.throttle_share = p.throttle_share * (1.0 - SHARE_WEIGHT) + SHARE_WEIGHT;
            dominant = p.throttle_share > THROTTLE_SHARE_TRIGGER;
            if dominant {
                p.extra = (p.extra * 2).max(self.period).min(MAX_PENALTY);
            }
        }
        // Random 1059s must not slow the fleet either: only a run of
        // throttles is passed on.
        if dominant {
            self.tell_fleet(true);
        }
    }

    /// A call succeeded: take one step off the extra spacing.
    pub fn on_success(&self) {
        if let Ok(mut p) = self.penalty.lock() {
            p.throttle_share *= 1.0 - SHARE_WEIGHT;
            let step = (self.period / 4).max(Duration::from_millis(50));
            p.extra = p.extra.saturating_sub(step);
        }
        if self
            .fleet
            .as_ref()
            .is_some_and(|f| !f.penalty_seen().is_zero())
        {
            self.tell_fleet(false);
        }
    }

    /// Moves the fleet's penalty in the background: the caller's answer is
    /// not held up by a Redis round trip.
    fn tell_fleet(&self, throttled: bool) {
        let (Some(fleet), Ok(runtime)) = (&self.fleet, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let fleet = fleet.clone();
        runtime.spawn(async move {
            if throttled {
                fleet.widen().await;
            } else {
                fleet.narrow().await;
            }
        });
    }

    /// Drops the throttle penalty and the slots it reserved: calls are
    /// paused by a longer cool-down (`refusal.rs`), after which one probe
    /// should go at the steady pace, not behind the penalty of the storm
    /// and the slots of callers who were answered and left.
    pub fn forgive_penalty(&self) {
        if let Ok(mut p) = self.penalty.lock() {
            *p = Penalty::default();
        }
    }

    /// The extra spacing now (zero when not penalised).
    pub fn penalty(&self) -> Duration {
        self.penalty.lock().map(|p| p.extra).unwrap_or_default()
    }

    pub fn snapshot(&self) -> BudgetSnapshot {
        let mean = |sum: &AtomicU64, n: &AtomicU64| {
            let n = n.load(Ordering::Relaxed);
            if n == 0 {
                0.0
            } else {
                sum.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
            }
        };
        BudgetSnapshot {
            upstream_calls: self.stats.calls.load(Ordering::Relaxed),
            throttled: self.stats.throttled.load(Ordering::Relaxed),
            retries: self.stats.retries.load(Ordering::Relaxed),
            queue_wait_ms_interactive: mean(
                &self.stats.wait_us_interactive,
                &self.stats.acquired_interactive,
            ),
            queue_wait_ms_background: mean(
                &self.stats.wait_us_background,
                &self.stats.acquired_background,
            ),
            fleet: self.fleet_mode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_spread_evenly_not_bursted() {
        // 600/min = one slot every ~100 ms; five slots need at least ~400 ms.
        let budget = Budget::new(600, Duration::ZERO, 5);
        let start = Instant::now();
        for _ in 0..5 {
            drop(budget.acquire(Priority::Interactive).await);
        }
        assert!(
            start.elapsed() >= Duration::from_millis(390),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_run_of_throttles_widens_the_spacing_multiplicatively_and_successes_narrow_it_additively() {
        let budget = Budget::new(600, Duration::ZERO, 5);
        let period = budget.period();
        // The first throttles only raise the share; then the gap grows.
        let mut first_penalised = None;
        for i in 1..=10 {
            budget.on_throttle(Priority::Interactive);
            if first_penalised.is_none() && !budget.penalty().is_zero() {
                first_penalised = Some(i);
                assert_eq!(budget.penalty(), period);
            }
        }
        assert_eq!(
            first_penalised,
            Some(5),
            "five throttles in a row trigger it"
        );
        assert_eq!(budget.penalty(), period * 32);
        for _ in 0..200 {
            budget.on_throttle(Priority::Interactive);
        }
        assert_eq!(budget.penalty(), MAX_PENALTY);
        budget.on_success();
        assert_eq!(
            budget.penalty(),
            MAX_PENALTY - Duration::from_millis(50).max(period / 4)
        );
        for _ in 0..10_000 {
            budget.on_success();
        }
        assert_eq!(budget.penalty(), Duration::ZERO);
    }

    #[test]
    fn random_rejection_of_a_quarter_of_calls_does_not_slow_the_pace() {
        let budget = Budget::new(600, Duration::ZERO, 5);
        for _ in 0..500 {
            budget.on_success();
            budget.on_success();
            budget.on_success();
            budget.on_throttle(Priority::Interactive);
            assert!(budget.penalty().is_zero());
        }
    }

    #[tokio::test]
    async fn a_penalty_spaces_slots_wider_than_the_rate() {
        // 6000/min = ~10 ms a slot; once penalised by two periods, each slot
        // waits ~30 ms.
        let budget = Budget::new(6000, Duration::ZERO, 5);
        for _ in 0..6 {
            budget.on_throttle(Priority::Interactive);
        }
        assert_eq!(budget.penalty(), budget.period() * 2);
        let start = Instant::now();
        for _ in 0..6 {
            drop(budget.acquire(Priority::Interactive).await);
        }
        // 5 gaps of period + 2 periods of extra = ~150 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(140),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn request_delay_is_a_floor_on_spacing() {
        let budget = Budget::new(6000, Duration::from_millis(100), 5);
        assert_eq!(budget.period(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn interactive_callers_overtake_waiting_background_work() {
        use std::sync::Arc;
        let budget = Arc::new(Budget::new(600, Duration::ZERO, 5));
        // Use the first slot so everyone below has to queue.
        drop(budget.acquire(Priority::Background).await);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (b, o) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                drop(b.acquire(Priority::Background).await);
                o.lock().unwrap().push(format!("bg{i}"));
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (b, o) = (budget.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            drop(b.acquire(Priority::Interactive).await);
            o.lock().unwrap().push("interactive".to_string());
        }));
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        assert_eq!(order[0], "interactive", "order was {order:?}");
    }
}
