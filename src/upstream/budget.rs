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
//! - **Nobody waits, nobody calls:** a fetch started for people who waited
//!   runs inside [`waited_for`] with its [`Interest`]. While it waits for a
//!   slot, it gives up ([`UpstreamError::Abandoned`]) as soon as the
//!   interest is abandoned (every caller left or ran out of time); once it
//!   holds a slot the call goes out and its answer is kept. A client that
//!   sends a hundred requests and hangs up costs the hundred nothing.
//! - **A bounded interactive queue** ([`InteractiveQueue`],
//!   `INTERACTIVE_QUEUE_MAX`, by default what the rate serves within the
//!   request deadline): lookups that would start a new fetch are admitted
//!   while fewer than the bound wait for a slot. Over it, the caller is told
//!   at once ([`UpstreamError::QueueFull`], a 503 with `Retry-After`) rather
//!   than queued behind calls that could not be made before its deadline.
//! - **A fair share per client address** (IPv6 by its /64, as the HTTP rate
//!   limit keys it): a client alone may fill the queue, but once it is full
//!   no address holds more than `max / clients holding places` — a client
//!   under its share takes the newest place of the one holding the most,
//!   whose lookup is refused instead. `INTERACTIVE_QUEUE_PER_CLIENT` caps an
//!   address lower still. The queue's map is keyed by client address but
//!   only holds clients with a place, so it never has more entries than the
//!   bound. Refund lists and background work are not admitted through it:
//!   their fan-out is bounded where it is made.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit, watch};

/// Throttle share (moving average, weight [`SHARE_WEIGHT`] per answer)
/// above which throttles slow the pace. Random rejection of 25% keeps the
/// average near 0.29; five throttles in a row push it past 0.4.
pub const THROTTLE_SHARE_TRIGGER: f64 = 0.35;
const SHARE_WEIGHT: f64 = 0.1;

use super::error::UpstreamError;
use super::fleet::{FleetAnswer, FleetBudget};
use super::metrics::{PriorityLabels, UpstreamMetrics};

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
    /// While penalised, callers wait for the next slot one at a time, in
    /// order (a fair async mutex): each wakes once, at its slot.
    penalty_turn: tokio::sync::Mutex<()>,
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
    /// Lookups waiting for a slot, bounded in all and per client.
    queue: Arc<InteractiveQueue>,
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
            penalty_turn: tokio::sync::Mutex::new(()),
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
    /// for the duration of the HTTP call. Inside [`waited_for`], the wait is
    /// given up once its [`Interest`] is abandoned
    /// ([`UpstreamError::Abandoned`]); a slot once taken is kept.
    pub async fn acquire(&self, priority: Priority) -> Result<SemaphorePermit<'_>, UpstreamError> {
        let Ok(interest) = INTEREST.try_with(Interest::clone) else {
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

    /// While penalised, waits until the next slot is `period + extra` after
    /// the previous one, then claims it; free when there is no penalty.
    /// Waiters take turns (`penalty_turn`), and a slot is claimed only by a
    /// caller who is there to take it, so a waiter that gives up leaves no
    /// gap in the schedule and the others wake once each.
    async fn wait_penalty(&self) {
        if self.penalty().is_zero() {
            if let Ok(mut p) = self.penalty.lock() {
                p.next_free = None;
            }
            return;
        }
        let _turn = self.penalty_turn.lock().await;
        loop {
            let wait = {
                let Ok(mut p) = self.penalty.lock() else {
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

/// Least number of lookups allowed to wait for a slot at once when not
/// configured; the default is what the rate serves within the request
/// deadline, if more ([`default_queue_max`]).
pub const DEFAULT_QUEUE_MIN: usize = 32;

/// Longest `Retry-After` a refusal suggests.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(120);

/// The default interactive queue: as many lookups as `rate_per_min` serves
/// within `deadline` (a deeper queue only produces answers past their
/// deadline), at least [`DEFAULT_QUEUE_MIN`].
pub fn default_queue_max(rate_per_min: u32, deadline: Duration) -> usize {
    let servable = f64::from(rate_per_min) * deadline.as_secs_f64() / 60.0;
    (servable.ceil() as usize).max(DEFAULT_QUEUE_MIN)
}

tokio::task_local! {
    /// The client address the current request serves (set by the HTTP
    /// layer), for the interactive queue's per-client share.
    static CLIENT: Option<IpAddr>;
    /// Who waits for the fetch this task runs; read by [`Budget::acquire`].
    static INTEREST: Interest;
}

/// Runs `f` on behalf of `client`: fetches it starts count against that
/// address's share of the interactive queue.
pub async fn for_client<F: Future>(client: Option<IpAddr>, f: F) -> F::Output {
    CLIENT.scope(client, f).await
}

/// The client address of the request being served, if the HTTP layer set
/// one (`None` in-process: the CLI, tests).
pub fn current_client() -> Option<IpAddr> {
    CLIENT.try_with(|c| *c).ok().flatten()
}

/// Runs the fetch `f` for `interest`: its waits for a budget slot end once
/// nobody wants the answer any more ([`UpstreamError::Abandoned`]) or its
/// place in the queue was given to a client under its fair share.
pub async fn waited_for<F: Future>(interest: Interest, f: F) -> F::Output {
    INTEREST.scope(interest, f).await
}

/// The interest of the fetch the current task runs, inside [`waited_for`].
pub fn current_interest() -> Option<Interest> {
    INTEREST.try_with(Interest::clone).ok()
}

/// Whether anybody still wants a fetch's answer, and the queue place it
/// holds until it gets its slot. Cloned into the fetch; the one who sees the
/// callers go calls [`Interest::abandon`].
#[derive(Clone)]
pub struct Interest {
    inner: Arc<InterestInner>,
}

struct InterestInner {
    /// `true` once abandoned; waiters in `acquire` watch it.
    gone: watch::Sender<bool>,
    /// Why, when it was not that everyone left (the place was given away).
    reason: Mutex<Option<UpstreamError>>,
    /// Given back once the fetch has its slot (it no longer queues).
    ticket: Mutex<Option<QueueTicket>>,
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interest")
            .field("abandoned", &self.is_abandoned())
            .finish_non_exhaustive()
    }
}

impl Interest {
    /// An interest that holds no place in the interactive queue (a refund
    /// list's fetches: their fan-out is bounded where it is made).
    pub fn unqueued() -> Self {
        Self {
            inner: Arc::new(InterestInner {
                gone: watch::Sender::new(false),
                reason: Mutex::new(None),
                ticket: Mutex::new(None),
            }),
        }
    }

    /// Nobody waits any more: a fetch still queued for a slot gives up.
    pub fn abandon(&self) {
        self.inner.gone.send_replace(true);
        self.slot_taken();
    }

    /// Gives up for `reason` (what the waiters are answered).
    fn abandon_for(&self, reason: UpstreamError) {
        if let Ok(mut r) = self.inner.reason.lock() {
            r.get_or_insert(reason);
        }
        self.abandon();
    }

    pub fn is_abandoned(&self) -> bool {
        *self.inner.gone.borrow()
    }

    /// What a fetch given up answers: why its place was taken, or
    /// [`UpstreamError::Abandoned`].
    pub fn reason(&self) -> UpstreamError {
        self.inner
            .reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or(UpstreamError::Abandoned)
    }

    /// Resolves once abandoned.
    async fn abandoned(&self) {
        let mut gone = self.inner.gone.subscribe();
        if gone.wait_for(|g| *g).await.is_err() {
            // The sender lives as long as `self`: never reached.
            std::future::pending::<()>().await;
        }
    }

    /// The fetch left the queue: give its place back.
    fn slot_taken(&self) {
        let ticket = self.inner.ticket.lock().map(|mut t| t.take());
        drop(ticket);
    }
}

/// The lookups waiting for an upstream slot, bounded in all and per client
/// address (see the module docs).
#[derive(Debug)]
pub struct InteractiveQueue {
    /// `INTERACTIVE_QUEUE_MAX`.
    max: usize,
    /// `INTERACTIVE_QUEUE_PER_CLIENT`: a fixed cap under the fair share.
    per_client: usize,
    /// The budget's spacing, to say how long a refused caller should wait.
    period: Duration,
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    waiting: usize,
    /// Places held per client address, oldest first; only addresses holding
    /// one, so at most `max` entries.
    by_client: HashMap<Option<IpAddr>, Vec<Place>>,
    /// Names the next place.
    next_id: u64,
}

/// One place: whose fetch holds it, to give up if the place is given away.
#[derive(Debug)]
struct Place {
    id: u64,
    interest: std::sync::Weak<InterestInner>,
}

impl std::fmt::Debug for InterestInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InterestInner")
    }
}

/// A place in the [`InteractiveQueue`], given back when dropped.
#[derive(Debug)]
pub struct QueueTicket {
    queue: Arc<InteractiveQueue>,
    client: Option<IpAddr>,
    id: u64,
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        let Ok(mut state) = self.queue.state.lock() else {
            return;
        };
        // A place given away was already taken out.
        let Some(places) = state.by_client.get_mut(&self.client) else {
            return;
        };
        let Some(at) = places.iter().position(|p| p.id == self.id) else {
            return;
        };
        places.remove(at);
        if places.is_empty() {
            state.by_client.remove(&self.client);
        }
        state.waiting = state.waiting.saturating_sub(1);
    }
}

impl InteractiveQueue {
    /// At most `max` places (at least 1), at most `per_client` (1..=max) for
    /// one address.
    pub fn new(max: usize, per_client: usize, period: Duration) -> Self {
        let max = max.max(1);
        Self {
            max,
            per_client: per_client.clamp(1, max),
            period,
            state: Mutex::new(QueueState::default()),
        }
    }

    fn refusal(&self, waiting: usize, limit: usize, per_client: bool) -> UpstreamError {
        UpstreamError::QueueFull {
            waiting,
            limit,
            per_client,
            retry_after: (self.period * (waiting as u32).max(1))
                .clamp(Duration::from_secs(1), RETRY_AFTER_MAX),
        }
    }

    /// An interest holding a place for a fetch `client` starts, or the
    /// refusal to answer with. A client may hold at most its fair share of
    /// a full queue (`max` over the clients holding places, itself
    /// included) and never more than `per_client`: when the queue is full
    /// and `client` is under its share, the newest place of the client
    /// holding the most is given to it (that fetch is refused instead).
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Interest, UpstreamError> {
        let evicted;
        let interest = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let held = state.by_client.get(&client).map_or(0, Vec::len);
            if held >= self.per_client {
                return Err(self.refusal(held, self.per_client, true));
            }
            let clients = state.by_client.len() + usize::from(held == 0);
            let fair = (self.max / clients).max(1);
            evicted = if state.waiting < self.max {
                None
            } else if held >= fair {
                return Err(self.refusal(held, fair, true));
            } else {
                let victim = state
                    .by_client
                    .iter_mut()
                    .max_by_key(|(_, places)| places.len())
                    .filter(|(_, places)| places.len() > fair)
                    .and_then(|(_, places)| places.pop().map(|p| (p, places.len())));
                let Some((place, left)) = victim else {
                    return Err(self.refusal(state.waiting, self.max, false));
                };
                state.by_client.retain(|_, places| !places.is_empty());
                state.waiting -= 1;
                Some((place, left + 1, fair))
            };
            state.waiting += 1;
            state.next_id += 1;
            let id = state.next_id;
            let interest = Interest::unqueued();
            state.by_client.entry(client).or_default().push(Place {
                id,
                interest: Arc::downgrade(&interest.inner),
            });
            if let Ok(mut ticket) = interest.inner.ticket.lock() {
                *ticket = Some(QueueTicket {
                    queue: Arc::clone(self),
                    client,
                    id,
                });
            }
            interest
        };
        // Outside the lock: giving up drops the victim's ticket, which
        // takes the lock (and finds its place already gone).
        if let Some((place, held, fair)) = evicted
            && let Some(inner) = place.interest.upgrade()
        {
            tracing::debug!(
                held,
                fair,
                "a queued lookup gave its place to a client under its share"
            );
            Interest { inner }.abandon_for(self.refusal(held, fair, true));
        }
        Ok(interest)
    }

    /// Places held now.
    pub fn waiting(&self) -> usize {
        self.state.lock().map_or(0, |s| s.waiting)
    }

    /// Client addresses holding a place now.
    pub fn clients(&self) -> usize {
        self.state.lock().map_or(0, |s| s.by_client.len())
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
            drop(budget.acquire(Priority::Interactive).await.unwrap());
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
            drop(budget.acquire(Priority::Interactive).await.unwrap());
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
        drop(budget.acquire(Priority::Background).await.unwrap());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (b, o) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                drop(b.acquire(Priority::Background).await.unwrap());
                o.lock().unwrap().push(format!("bg{i}"));
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (b, o) = (budget.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            drop(b.acquire(Priority::Interactive).await.unwrap());
            o.lock().unwrap().push("interactive".to_string());
        }));
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        assert_eq!(order[0], "interactive", "order was {order:?}");
    }

    #[test]
    fn the_queue_bounds_the_whole_and_each_clients_share_and_forgets_idle_clients() {
        let (a, b, c) = (
            Some(IpAddr::from([10, 0, 0, 1])),
            Some(IpAddr::from([10, 0, 0, 2])),
            Some(IpAddr::from([10, 0, 0, 3])),
        );
        let q = Arc::new(InteractiveQueue::new(3, 2, Duration::from_secs(1)));
        let held = [q.admit(a).unwrap(), q.admit(a).unwrap()];
        assert!(matches!(
            q.admit(a),
            Err(UpstreamError::QueueFull {
                per_client: true,
                waiting: 2,
                ..
            })
        ));
        let other = q.admit(b).unwrap();
        // Full, and c's fair share (3 / 3 clients = 1) is taken from a, the
        // client holding more than its share.
        let third = q.admit(c).unwrap();
        assert!(held[1].is_abandoned(), "a's newest place went to c");
        assert!(matches!(
            held[1].reason(),
            UpstreamError::QueueFull {
                per_client: true,
                ..
            }
        ));
        assert!(!held[0].is_abandoned() && !other.is_abandoned());
        assert_eq!((q.waiting(), q.clients()), (3, 3));
        // Everyone at their share now: the next one is refused.
        let full = q.admit(Some(IpAddr::from([10, 0, 0, 4]))).unwrap_err();
        assert!(
            matches!(
                full,
                UpstreamError::QueueFull {
                    per_client: false,
                    waiting: 3,
                    limit: 3,
                    retry_after,
                } if retry_after >= Duration::from_secs(1)
            ),
            "{full:?}"
        );
        assert!(matches!(
            q.admit(c),
            Err(UpstreamError::QueueFull {
                per_client: true,
                ..
            })
        ));
        drop(held);
        drop((other, third));
        assert_eq!((q.waiting(), q.clients()), (0, 0), "no address kept");
    }

    #[tokio::test]
    async fn a_wait_whose_interest_is_abandoned_ends_at_once_and_takes_no_slot() {
        // One slot a second; the first is used, so the next waits ~1 s.
        let budget = Arc::new(Budget::new(60, Duration::ZERO, 5));
        drop(budget.acquire(Priority::Interactive).await.unwrap());
        let queue = Arc::new(InteractiveQueue::new(4, 4, budget.period()));
        let interest = queue.admit(None).unwrap();
        let waiter = {
            let (budget, interest) = (budget.clone(), interest.clone());
            tokio::spawn(waited_for(interest, async move {
                budget.acquire(Priority::Interactive).await.map(drop)
            }))
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(queue.waiting(), 1);
        interest.abandon();
        assert_eq!(queue.waiting(), 0, "the place is given back at once");
        let ended = tokio::time::timeout(Duration::from_millis(500), waiter)
            .await
            .expect("the wait ends without its slot")
            .unwrap();
        assert_eq!(ended, Err(UpstreamError::Abandoned));
        assert_eq!(budget.stats.acquired_interactive.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn waiters_that_give_up_while_penalised_leave_no_gap_in_the_schedule() {
        let budget = Arc::new(Budget::new(6000, Duration::ZERO, 5));
        for _ in 0..6 {
            budget.on_throttle(Priority::Interactive);
        }
        drop(budget.acquire(Priority::Interactive).await.unwrap());
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move { drop(budget.acquire(Priority::Interactive).await) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        for w in &waiters {
            w.abort();
        }
        let next_free = budget.penalty.lock().unwrap().next_free.unwrap();
        let spacing = budget.period() + budget.penalty();
        assert!(
            next_free <= Instant::now() + spacing,
            "the next slot is {:?} away, not one spacing ({spacing:?})",
            next_free.saturating_duration_since(Instant::now())
        );
    }
}
