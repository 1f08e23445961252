//! The process-wide upstream budget: every call to Zsxq — lookups, sync,
//! rankings — takes a slot here first.
//!
//! Decisions:
//! - **Rate:** a GCRA limiter (governor) at `API_RATE_LIMIT` calls a minute,
//!   spread evenly with a burst of one, because the real upstream throttles
//!   bursts with 1059 long before any per-minute count is reached.
//!   `API_REQUEST_DELAY` is a floor on the spacing.
//! - **Concurrency:** at most `API_CONCURRENCY` calls in flight.
//! - **Priority:** a person waiting on a lookup or a refund list goes first;
//!   background work (sync, refresh) takes a slot only while no interactive
//!   caller is waiting.
//! - **Backoff on throttle:** while throttles dominate, the spacing of every
//!   slot widens, and successes narrow it again (`penalty.rs`).
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
//! - **Nobody waits, nobody calls:** a wait for a slot inside [`waited_for`]
//!   ends once its [`Interest`] is abandoned (`interest.rs`).
//! - **A bounded interactive queue with a fair share per client address**
//!   ([`InteractiveQueue`], `queue.rs`): a lookup that could not be served
//!   before its deadline is refused at once rather than queued.

mod collector;
mod interest;
mod penalty;
mod queue;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit};

pub use self::collector::BudgetCollector;
pub use self::interest::{Interest, current_interest, waited_for};
pub use self::penalty::THROTTLE_SHARE_TRIGGER;
pub use self::queue::{
    DEFAULT_QUEUE_MIN, InteractiveQueue, QueueTicket, current_client, default_queue_max, for_client,
};
pub use super::fleet::FleetMode;

use self::penalty::Penalty;
use super::error::UpstreamError;
use super::fleet::{FleetAnswer, FleetBudget};
use super::metrics::{PriorityLabels, UpstreamMetrics};
use super::priority::Priority;

/// Spacing multiplier; see the module docs.
const SAFETY: f64 = 1.02;

/// Longest sleep between two requests for a fleet slot: a long wait (a
/// penalty) is slept in steps, so background work notices an interactive
/// caller of its own process and gives up its turn.
const FLEET_POLL_MAX: Duration = Duration::from_millis(250);

/// Counters the stats endpoint and logs report.
#[derive(Debug, Default)]
pub struct BudgetStats {
    /// HTTP requests actually sent upstream.
    pub calls: AtomicU64,
    /// Answers that were throttles (1059 / 429).
    pub throttled: AtomicU64,
    /// Retries made after retryable failures.
    pub retries: AtomicU64,
    /// Total microseconds interactive callers waited for a slot.
    pub wait_us_interactive: AtomicU64,
    /// Total microseconds background work waited for a slot.
    pub wait_us_background: AtomicU64,
    /// Slots taken by interactive callers (the divisor of the mean wait).
    pub acquired_interactive: AtomicU64,
    /// Slots taken by background work.
    pub acquired_background: AtomicU64,
    /// Times the fleet's schedule in Redis said "not yet".
    pub fleet_waits: AtomicU64,
    /// Slots taken from the local fallback because Redis was unreachable.
    pub fleet_fallbacks: AtomicU64,
}

/// A snapshot of [`BudgetStats`] for JSON.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct BudgetSnapshot {
    /// [`BudgetStats::calls`].
    pub upstream_calls: u64,
    /// [`BudgetStats::throttled`].
    pub throttled: u64,
    /// [`BudgetStats::retries`].
    pub retries: u64,
    /// Mean wait of interactive callers for a slot, milliseconds.
    pub queue_wait_ms_interactive: f64,
    /// Mean wait of background work for a slot, milliseconds.
    pub queue_wait_ms_background: f64,
    /// Whether the budget is shared with other replicas right now.
    pub fleet: FleetMode,
}

/// The slots every upstream call of this process takes (see the module
/// docs); shared as an `Arc` by the client, the cache and the doctor.
pub struct Budget {
    /// Spaces slots one period apart, with a burst of one.
    limiter: DefaultDirectRateLimiter,
    /// `API_CONCURRENCY` permits, one held per call in flight.
    in_flight: Semaphore,
    /// Interactive callers currently waiting for a rate slot; background work
    /// yields while this is non-zero.
    interactive_waiting: AtomicUsize,
    /// Extra spacing imposed after a throttle (the adaptive part).
    penalty: Penalty,
    /// The steady spacing between calls.
    period: Duration,
    /// `API_CONCURRENCY`, for callers that bound their own fan-out to it.
    concurrency: usize,
    /// The fleet's schedule in Redis; `None` for a lone process.
    fleet: Option<Arc<FleetBudget>>,
    /// Held by the one caller of this process that asks the fleet for a
    /// slot, so waiting callers poll nothing.
    fleet_turn: tokio::sync::Mutex<()>,
    /// Counted for the stats endpoint, the logs and the doctor.
    pub stats: BudgetStats,
    /// The same events by priority, for `/metrics`.
    metrics: UpstreamMetrics,
    /// Lookups waiting for a slot, bounded in all and per client.
    queue: Arc<InteractiveQueue>,
}

/// Counts one event of `priority`: in the stats and, by priority, in
/// `/metrics`.
fn count(stat: &AtomicU64, family: &Family<PriorityLabels, Counter>, priority: Priority) {
    stat.fetch_add(1, Ordering::Relaxed);
    family.get_or_create(&PriorityLabels::from(priority)).inc();
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
            penalty: Penalty::new(period),
            period,
            concurrency: concurrency.max(1),
            fleet: None,
            fleet_turn: tokio::sync::Mutex::new(()),
            stats: BudgetStats::default(),
            metrics: UpstreamMetrics::default(),
            queue: Arc::new(InteractiveQueue::new(
                DEFAULT_QUEUE_MIN,
                DEFAULT_QUEUE_MIN,
                period,
            )),
        }
    }

    /// A place in the interactive queue for a fetch `client` starts
    /// ([`InteractiveQueue::admit`]), counting refusals for `/metrics`.
    pub fn admit(&self, client: Option<IpAddr>) -> Result<Interest, UpstreamError> {
        let admitted = self.queue.admit(client);
        if admitted.is_err() {
            self.metrics.queue_refused.inc();
        }
        admitted
    }

    /// Bounds the interactive queue: at most `max` lookups waiting for a
    /// slot, at most `per_client` of them for one client address.
    pub fn with_queue(mut self, max: usize, per_client: usize) -> Self {
        self.queue = Arc::new(InteractiveQueue::new(max, per_client, self.period));
        self
    }

    /// The interactive queue lookups are admitted through.
    pub fn queue(&self) -> &Arc<InteractiveQueue> {
        &self.queue
    }

    /// The instruments `/metrics` reports.
    pub fn metrics(&self) -> &UpstreamMetrics {
        &self.metrics
    }

    /// An HTTP request is about to be sent upstream.
    pub fn record_call(&self, priority: Priority) {
        count(&self.stats.calls, &self.metrics.calls, priority);
    }

    /// A failed call is about to be retried.
    pub fn record_retry(&self, priority: Priority) {
        count(&self.stats.retries, &self.metrics.retries, priority);
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
    /// for the duration of the HTTP call. Inside [`waited_for`], the wait is
    /// given up once its [`Interest`] is abandoned
    /// ([`UpstreamError::Abandoned`]); a slot once taken is kept.
    pub async fn acquire(&self, priority: Priority) -> Result<SemaphorePermit<'_>, UpstreamError> {
        let Some(interest) = current_interest() else {
            return Ok(self.take_slot(priority).await);
        };
        // Abandonment first: a slot that nobody needs is better left free.
        let permit = tokio::select! {
            biased;
            () = interest.abandoned() => {
                self.metrics.given_up.inc();
                return Err(interest.reason());
            }
            permit = self.take_slot(priority) => permit,
        };
        interest.slot_taken();
        Ok(permit)
    }

    /// [`Budget::acquire`] without the interest: waits however long it takes.
    /// Dropping the future gives the place up and spends nothing.
    async fn take_slot(&self, priority: Priority) -> SemaphorePermit<'_> {
        let started = Instant::now();
        match priority {
            Priority::Interactive => {
                self.interactive_waiting.fetch_add(1, Ordering::SeqCst);
                let _guard = WaitingGuard(&self.interactive_waiting);
                self.penalty.wait().await;
                self.limiter.until_ready().await;
                // Still counted as waiting: background work of this
                // process keeps yielding while we wait for the fleet.
                self.fleet_slot(priority).await;
            }
            Priority::Background => {
                self.penalty.wait().await;
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

    /// A throttle was answered to a call of `priority`: while throttles
    /// dominate, the extra spacing doubles (`penalty.rs`).
    pub fn on_throttle(&self, priority: Priority) {
        count(&self.stats.throttled, &self.metrics.throttled, priority);
        // Random 1059s must not slow the fleet either: only a run of
        // throttles is passed on.
        if self.penalty.throttled() {
            self.tell_fleet(true);
        }
    }

    /// A call succeeded: take one step off the extra spacing.
    pub fn on_success(&self) {
        self.penalty.succeeded();
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
    /// paused by a longer cool-down (`refusal/`), after which one probe
    /// should go at the steady pace, not behind the penalty of the storm
    /// and the slots of callers who were answered and left.
    pub fn forgive_penalty(&self) {
        self.penalty.forgive();
    }

    /// The extra spacing now (zero when not penalised).
    pub fn penalty(&self) -> Duration {
        self.penalty.extra()
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
