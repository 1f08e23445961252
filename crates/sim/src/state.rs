//! The simulator's shared runtime state: knobs that fault tests turn while it
//! runs (latency, throttling, and the broken-upstream [`SimFault`]s), the
//! call counters behind `/__sim/stats`, and the throttle that answers 1059.
//!
//! Everything on the request path is an atomic, so with latency 0 the
//! simulator keeps up with thousands of calls a second. The two pieces that
//! need a lock (the rolling rate window and the rejection RNG) use a
//! `std::sync::Mutex`: the critical sections are a few instructions and are
//! never held across an `.await`, which is exactly when a blocking mutex is
//! cheaper than Tokio's, and they are skipped entirely while the
//! corresponding knob is off.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::SimConfig;
use super::data::SimData;

/// The window of the per-minute limit.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Arrival times kept for [`SimState::arrivals`]: the most recent ones, so a
/// simulator left running for days holds a bounded log.
const ARRIVALS_KEPT: usize = 100_000;

/// How a broken upstream answers `/v2` calls, for fault tests.
/// The call is still counted, delayed, throttled and authenticated as usual;
/// the fault then replaces or spoils its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SimFault {
    /// Answers as upstream does.
    #[default]
    None,
    /// HTTP 200 with an HTML error page instead of JSON.
    Garbage,
    /// HTTP 200 with the real JSON cut off halfway.
    Truncated,
    /// HTTP 200, `succeeded: true`, but members lack `user_id` and lists
    /// (`checkins`, `ranking_list`) and the camp's `statistics` are missing.
    MissingFields,
    /// HTTP 500 with a plain-text body.
    #[serde(rename = "http_500")]
    #[value(name = "http-500")]
    Http500,
    /// The real answer, `slow_ms` late.
    Slow,
    /// HTTP 200 with a 100 MB body, streamed (never held by the simulator),
    /// its Content-Length announced.
    Huge,
    /// The same 100 MB, chunked: no Content-Length to refuse it by.
    HugeChunked,
}

impl SimFault {
    fn to_raw(self) -> u8 {
        match self {
            SimFault::None => 0,
            SimFault::Garbage => 1,
            SimFault::Truncated => 2,
            SimFault::MissingFields => 3,
            SimFault::Http500 => 4,
            SimFault::Slow => 5,
            SimFault::Huge => 6,
            SimFault::HugeChunked => 7,
        }
    }

    fn from_raw(raw: u8) -> Self {
        match raw {
            1 => SimFault::Garbage,
            2 => SimFault::Truncated,
            3 => SimFault::MissingFields,
            4 => SimFault::Http500,
            5 => SimFault::Slow,
            6 => SimFault::Huge,
            7 => SimFault::HugeChunked,
            _ => SimFault::None,
        }
    }
}

/// The knobs as they are at one moment; also the body of `/__sim/config` answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimKnobs {
    /// Probability that a call is answered 1059 at random.
    pub reject_ratio: f64,
    /// Delay added to every `/v2` call, in milliseconds.
    pub latency_ms: u64,
    /// Calls served per rolling minute before answering 1059; 0 = unlimited.
    pub rate_per_min: u32,
    /// Whether the member list may be read (otherwise 11507).
    pub member_list: bool,
    /// How `/v2` answers are spoiled, if at all.
    pub fault: SimFault,
    /// Extra delay of [`SimFault::Slow`], in milliseconds.
    pub slow_ms: u64,
    /// Consecutive 1059 answers that ban the token (0 = never).
    #[serde(default)]
    pub ban_after: u32,
    /// Calls still to be answered 1059 whatever the ratio.
    #[serde(default)]
    pub reject_next: u32,
    /// The ranking leaves one participant out (its page is one row short),
    /// while the camp's statistics still count them.
    #[serde(default)]
    pub hide_participant: bool,
    /// The member summary answers another member's record.
    #[serde(default)]
    pub wrong_summary: bool,
}

/// A change to the knobs: the body of `POST /__sim/config`. Absent fields
/// keep their value; unknown fields are refused so a typo cannot pass
/// silently as "no change".
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimKnobsPatch {
    /// New rejection probability, 0.0..=1.0.
    pub reject_ratio: Option<f64>,
    /// New per-call latency.
    pub latency_ms: Option<u64>,
    /// New per-minute limit (0 = unlimited); starts a fresh window.
    pub rate_per_min: Option<u32>,
    /// Allow or refuse the member list.
    pub member_list: Option<bool>,
    /// Turn a fault on (or `none` to turn it off).
    pub fault: Option<SimFault>,
    /// New delay of the `slow` fault.
    pub slow_ms: Option<u64>,
    /// New ban threshold (0 = never).
    pub ban_after: Option<u32>,
    /// Answer the next this many calls 1059.
    pub reject_next: Option<u32>,
    /// Hide a ranking participant, or stop hiding.
    pub hide_participant: Option<bool>,
    /// Answer summaries with another member's record, or stop.
    pub wrong_summary: Option<bool>,
}

/// Checks a rejection probability; shared by the CLI and the control endpoint.
pub fn check_ratio(ratio: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(format!(
            "reject ratio must be between 0.0 and 1.0, got {ratio}"
        ))
    }
}

/// The kinds of `/v2` call, counted separately in `/__sim/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `GET /v2/groups/{gid}/members/{uid}/summary`
    MemberSummary,
    /// `GET /v2/groups/{gid}/members/{uid}`
    Member,
    /// `GET /v2/groups/{gid}/members`
    MemberList,
    /// `GET /v2/groups/{gid}/checkins`
    Checkins,
    /// `GET /v2/groups/{gid}/checkins/{cid}/ranking_list`
    Ranking,
    /// `GET /v2/groups/{gid}/checkins/{cid}/statistics`
    Statistics,
    /// Any other `/v2` path (answered 404).
    Other,
}

impl CallKind {
    const COUNT: usize = 7;

    fn slot(self) -> usize {
        match self {
            CallKind::MemberSummary => 0,
            CallKind::Member => 1,
            CallKind::MemberList => 2,
            CallKind::Checkins => 3,
            CallKind::Ranking => 4,
            CallKind::Other => 5,
            CallKind::Statistics => 6,
        }
    }
}

/// Calls per endpoint kind, as reported by `/__sim/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCallsByKind {
    /// Member summary calls: the per-user lookups the cache exists to avoid.
    pub member_summary: u64,
    /// Plain member calls.
    pub member: u64,
    /// Member list pages: the bulk source of numbers.
    pub member_list: u64,
    /// Camp list calls.
    pub checkins: u64,
    /// Ranking pages.
    pub ranking: u64,
    /// Camp statistics calls.
    #[serde(default)]
    pub statistics: u64,
    /// Calls to unknown `/v2` paths; a non-zero value points at a client bug.
    #[serde(default)]
    pub other: u64,
}

/// The body of `/__sim/stats`: what benchmarks and tests measure the
/// client's upstream usage with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Every `/v2` request, including throttled and failed ones.
    pub calls: u64,
    /// `calls` split by endpoint.
    pub by_kind: SimCallsByKind,
    /// Calls answered 1059 by the rate limit or random rejection.
    pub throttled: u64,
    /// The token is banned: every call is answered 401 until the
    /// simulator restarts.
    #[serde(default)]
    pub banned: bool,
}

/// Why the throttle refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Drawn by `reject_ratio`.
    Random,
    /// Over `rate_per_min` in the last 60 s.
    RateLimited,
}

/// State shared by every request and by [`super::SimHandle`].
pub struct SimState {
    /// The group being served.
    pub data: Arc<SimData>,
    /// The accepted access token; compared, never echoed or logged.
    token: String,
    /// `reject_ratio` as `f64::to_bits`, since there is no atomic float.
    reject_ratio_bits: AtomicU64,
    latency_ms: AtomicU64,
    rate_per_min: AtomicU32,
    member_list: AtomicBool,
    /// [`SimFault`] as its raw tag, so the request path reads one atomic.
    fault: AtomicU8,
    slow_ms: AtomicU64,
    hide_participant: AtomicBool,
    wrong_summary: AtomicBool,
    calls: AtomicU64,
    by_kind: [AtomicU64; CallKind::COUNT],
    throttled: AtomicU64,
    /// When the calls admitted in the last minute were made. Only admitted
    /// calls are recorded: a client that backs off gets served again once the
    /// window has room, instead of being locked out by its own retries.
    window: Mutex<VecDeque<Instant>>,
    /// Seeded so a run with a given seed rejects the same sequence of calls.
    rng: Mutex<SmallRng>,
    /// When the simulator started; arrivals are measured from it.
    started: Instant,
    /// When each of the last [`ARRIVALS_KEPT`] `/v2` calls arrived, so tests
    /// can check a client's rate over any window, not just the totals (a
    /// fleet of replicas must stay within one budget).
    arrivals: Mutex<VecDeque<Instant>>,
    /// Whether calls without the web client's headers are accepted.
    pub lenient_headers: bool,
    /// The `X-Aduid` of the first call; any other device is refused.
    device: Mutex<Option<String>>,
    ban_after: AtomicU32,
    reject_next: AtomicU32,
    /// Consecutive 1059 answers so far.
    refusal_run: AtomicU32,
    banned: AtomicBool,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is left out on purpose: it must never reach a log.
        f.debug_struct("SimState")
            .field("group_id", &self.data.group_id)
            .field("knobs", &self.knobs())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SimState {
    /// Starts with the knobs of `cfg` and zeroed counters.
    pub fn new(cfg: &SimConfig, data: Arc<SimData>) -> Self {
        Self {
            data,
            token: cfg.token.clone(),
            reject_ratio_bits: AtomicU64::new(cfg.reject_ratio.clamp(0.0, 1.0).to_bits()),
            latency_ms: AtomicU64::new(cfg.latency_ms),
            rate_per_min: AtomicU32::new(cfg.rate_per_min),
            member_list: AtomicBool::new(!cfg.no_member_list),
            fault: AtomicU8::new(cfg.fault.to_raw()),
            slow_ms: AtomicU64::new(cfg.slow_ms),
            hide_participant: AtomicBool::new(false),
            wrong_summary: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            by_kind: Default::default(),
            throttled: AtomicU64::new(0),
            window: Mutex::new(VecDeque::new()),
            rng: Mutex::new(SmallRng::seed_from_u64(cfg.seed)),
            started: Instant::now(),
            arrivals: Mutex::new(VecDeque::new()),
            lenient_headers: cfg.lenient_headers,
            device: Mutex::new(None),
            ban_after: AtomicU32::new(cfg.ban_after),
            reject_next: AtomicU32::new(0),
            refusal_run: AtomicU32::new(0),
            banned: AtomicBool::new(false),
        }
    }

    /// Whether `aduid` is the device this token has been used from (the
    /// first one seen, remembered for the run).
    pub fn same_device(&self, aduid: &str) -> bool {
        let mut device = self.device.lock().unwrap_or_else(PoisonError::into_inner);
        device.get_or_insert_with(|| aduid.to_owned()) == aduid
    }

    /// Forgets the remembered device.
    pub fn forget_device(&self) {
        *self.device.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Counts a call's outcome towards the ban: a 1059 extends the run,
    /// anything else ends it; a run of `ban_after` bans the token.
    pub fn note_answer(&self, refused: bool) {
        if !refused {
            self.refusal_run.store(0, Ordering::Relaxed);
            return;
        }
        let run = self.refusal_run.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.ban_after.load(Ordering::Relaxed);
        if limit > 0 && run >= limit && !self.banned.swap(true, Ordering::Relaxed) {
            tracing::warn!(run, "sim: token banned after a run of 1059s");
        }
    }

    /// Whether the token is banned.
    pub fn banned(&self) -> bool {
        self.banned.load(Ordering::Relaxed)
    }

    /// Bans the token after `n` consecutive 1059s (0 = never).
    pub fn set_ban_after(&self, n: u32) {
        self.ban_after.store(n, Ordering::Relaxed);
    }

    /// Answers the next `n` calls 1059.
    pub fn reject_next(&self, n: u32) {
        self.reject_next.store(n, Ordering::Relaxed);
    }

    /// Whether `candidate` is the configured token.
    pub fn token_matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(candidate.as_bytes().ct_eq(self.token.as_bytes()))
    }

    /// The knobs now.
    pub fn knobs(&self) -> SimKnobs {
        SimKnobs {
            reject_ratio: self.reject_ratio(),
            latency_ms: self.latency_ms(),
            rate_per_min: self.rate_per_min.load(Ordering::Relaxed),
            member_list: self.member_list_allowed(),
            fault: self.fault(),
            slow_ms: self.slow_ms(),
            ban_after: self.ban_after.load(Ordering::Relaxed),
            reject_next: self.reject_next.load(Ordering::Relaxed),
            hide_participant: self.hide_participant(),
            wrong_summary: self.wrong_summary(),
        }
    }

    /// Applies a change after checking it whole: a bad field changes nothing.
    pub fn apply(&self, patch: SimKnobsPatch) -> Result<SimKnobs, String> {
        if let Some(ratio) = patch.reject_ratio {
            check_ratio(ratio)?;
        }
        if let Some(ratio) = patch.reject_ratio {
            self.set_reject_ratio(ratio);
        }
        if let Some(ms) = patch.latency_ms {
            self.set_latency_ms(ms);
        }
        if let Some(limit) = patch.rate_per_min {
            self.set_rate_per_min(limit);
        }
        if let Some(allowed) = patch.member_list {
            self.set_member_list_allowed(allowed);
        }
        if let Some(ms) = patch.slow_ms {
            self.set_slow_ms(ms);
        }
        if let Some(fault) = patch.fault {
            self.set_fault(fault);
        }
        if let Some(n) = patch.ban_after {
            self.set_ban_after(n);
        }
        if let Some(n) = patch.reject_next {
            self.reject_next(n);
        }
        if let Some(on) = patch.hide_participant {
            self.set_hide_participant(on);
        }
        if let Some(on) = patch.wrong_summary {
            self.set_wrong_summary(on);
        }
        Ok(self.knobs())
    }

    /// Whether the ranking leaves a participant out.
    pub fn hide_participant(&self) -> bool {
        self.hide_participant.load(Ordering::Relaxed)
    }

    pub fn set_hide_participant(&self, on: bool) {
        self.hide_participant.store(on, Ordering::Relaxed);
    }

    /// Whether summaries describe someone else.
    pub fn wrong_summary(&self) -> bool {
        self.wrong_summary.load(Ordering::Relaxed)
    }

    pub fn set_wrong_summary(&self, on: bool) {
        self.wrong_summary.store(on, Ordering::Relaxed);
    }

    /// The fault spoiling `/v2` answers now.
    pub fn fault(&self) -> SimFault {
        SimFault::from_raw(self.fault.load(Ordering::Relaxed))
    }

    /// Turns a fault on, or off with [`SimFault::None`].
    pub fn set_fault(&self, fault: SimFault) {
        self.fault.store(fault.to_raw(), Ordering::Relaxed);
    }

    /// The delay of the `slow` fault, in milliseconds.
    pub fn slow_ms(&self) -> u64 {
        self.slow_ms.load(Ordering::Relaxed)
    }

    /// Sets the delay of the `slow` fault.
    pub fn set_slow_ms(&self, ms: u64) {
        self.slow_ms.store(ms, Ordering::Relaxed);
    }

    /// Current rejection probability.
    pub fn reject_ratio(&self) -> f64 {
        f64::from_bits(self.reject_ratio_bits.load(Ordering::Relaxed))
    }

    /// Sets the rejection probability, clamped to 0.0..=1.0 (NaN counts as 0).
    pub fn set_reject_ratio(&self, ratio: f64) {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        self.reject_ratio_bits
            .store(ratio.to_bits(), Ordering::Relaxed);
    }

    /// Current per-call latency in milliseconds.
    pub fn latency_ms(&self) -> u64 {
        self.latency_ms.load(Ordering::Relaxed)
    }

    /// Sets the per-call latency.
    pub fn set_latency_ms(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Sets the per-minute limit (0 = unlimited) and starts a fresh window.
    pub fn set_rate_per_min(&self, limit: u32) {
        self.rate_per_min.store(limit, Ordering::Relaxed);
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Whether the member list may be read.
    pub fn member_list_allowed(&self) -> bool {
        self.member_list.load(Ordering::Relaxed)
    }

    /// Allows or refuses the member list.
    pub fn set_member_list_allowed(&self, allowed: bool) {
        self.member_list.store(allowed, Ordering::Relaxed);
    }

    /// Counts one `/v2` call.
    pub fn count_call(&self, kind: CallKind) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.by_kind[kind.slot()].fetch_add(1, Ordering::Relaxed);
        let mut arrivals = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        if arrivals.len() == ARRIVALS_KEPT {
            arrivals.pop_front();
        }
        arrivals.push_back(Instant::now());
    }

    /// When the recent `/v2` calls arrived (throttled ones included), as
    /// offsets from the simulator's start, oldest first.
    pub fn arrivals(&self) -> Vec<Duration> {
        self.arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|t| t.duration_since(self.started))
            .collect()
    }

    /// Decides whether a call may proceed, counting it as throttled if not.
    /// Random rejection is drawn first, so rejected calls use no quota.
    pub fn admit(&self) -> Result<(), Throttle> {
        let verdict = self.decide();
        if verdict.is_err() {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    fn decide(&self) -> Result<(), Throttle> {
        let forced = self
            .reject_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if forced.is_ok() {
            return Err(Throttle::Random);
        }
        let ratio = self.reject_ratio();
        if ratio > 0.0 {
            let draw: f64 = self
                .rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .random();
            if draw < ratio {
                return Err(Throttle::Random);
            }
        }
        let limit = self.rate_per_min.load(Ordering::Relaxed);
        if limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        while window
            .front()
            .is_some_and(|&t| now.duration_since(t) >= RATE_WINDOW)
        {
            window.pop_front();
        }
        if window.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return Err(Throttle::RateLimited);
        }
        window.push_back(now);
        Ok(())
    }

    /// The counters now.
    pub fn stats(&self) -> SimStats {
        let kind = |k: CallKind| self.by_kind[k.slot()].load(Ordering::Relaxed);
        SimStats {
            calls: self.calls.load(Ordering::Relaxed),
            by_kind: SimCallsByKind {
                member_summary: kind(CallKind::MemberSummary),
                member: kind(CallKind::Member),
                member_list: kind(CallKind::MemberList),
                checkins: kind(CallKind::Checkins),
                ranking: kind(CallKind::Ranking),
                statistics: kind(CallKind::Statistics),
                other: kind(CallKind::Other),
            },
            throttled: self.throttled.load(Ordering::Relaxed),
            banned: self.banned(),
        }
    }

    /// Zeroes the counters (not the rate window: a reset between benchmark
    /// phases must not hand a throttled client fresh quota).
    pub fn reset_stats(&self) {
        self.calls.store(0, Ordering::Relaxed);
        for counter in &self.by_kind {
            counter.store(0, Ordering::Relaxed);
        }
        self.throttled.store(0, Ordering::Relaxed);
        self.arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
