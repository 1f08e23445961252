//! A simulated Zsxq (知识星球) API, faithful to `docs/UPSTREAM.md`: the same paths,
//! envelope, error codes, paging, auth and signature check, over a
//! deterministic group of members and check-in camps. The real API cannot be
//! reached from development machines, so the demo, the integration tests and
//! the benchmarks all talk to this instead; its faults (latency, a per-minute
//! limit and random rejections answered with 1059, the 11507 refusal of the
//! member list, and broken answers: garbage, truncated or incomplete JSON,
//! HTTP 500, slowness) can be turned on and off while it runs, from a test through
//! [`SimHandle`] or from outside through `POST /__sim/config`. It checks the
//! headers the web client sends (signature, a stable `X-Aduid`, an
//! `X-Version` that is not too old) and can ban a token that keeps calling
//! through a run of 1059s (`--ban-after`).
//!
//! Layout: `data` generates the group, `state` holds the knobs, counters and
//! throttle, `server` is the HTTP behaviour. This file wires them together.

mod data;
mod server;
mod state;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use data::{
    BENCHMARK_CHECKIN_DAYS, BENCHMARK_PARTICIPANTS, CampScope, DEPARTED_CAMP_POSITION,
    DEPARTED_COUNT, DepartedUser, RankingType, SimCamp, SimData, SimMember, continuous_days,
    generate, zsxq_time,
};
pub use server::{HIDDEN_POSITION, MAX_PAGE_COUNT, RANKING_PAGE_SIZE};
pub use state::{SimCallsByKind, SimFault, SimKnobs, SimKnobsPatch, SimStats};

use state::SimState;

/// Settings of the simulator: the `zsxq-cache sim` flags.
#[derive(clap::Args, Clone, PartialEq)]
pub struct SimConfig {
    /// Port to listen on (3014, next to the service's 3013).
    #[arg(long, default_value_t = 3014)]
    pub port: u16,
    /// How many members the simulated group has.
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// Seed of the generated data; the same seed gives the same group.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Delay added to every /v2 call, in milliseconds (upstream takes ~200).
    #[arg(long, default_value_t = 200)]
    pub latency_ms: u64,
    /// Calls served per rolling minute before answering 1059 (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate_per_min: u32,
    /// Probability (0.0..=1.0) that a call is answered 1059 at random.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub reject_ratio: f64,
    /// The access token clients must send (cookie or Authorization header).
    #[arg(long, default_value = "sim-token")]
    pub token: String,
    /// Refuse the member list with 11507, as for groups over 500 members.
    #[arg(long)]
    pub no_member_list: bool,
    /// The group id the simulator answers for; any other gets 11102.
    #[arg(long, default_value_t = 51122858222824)]
    pub group_id: u64,
    /// Spoil every /v2 answer: garbage, truncated, missing-fields, http-500
    /// or slow (for fault drills).
    #[arg(long, value_enum, default_value_t = SimFault::None)]
    pub fault: SimFault,
    /// Extra delay of `--fault slow`, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub slow_ms: u64,
    /// Accept calls without `X-Signature`, `X-Aduid` or `X-Version` (for
    /// hand-written `curl` checks); the real upstream refuses them with 1059.
    #[arg(long)]
    pub lenient_headers: bool,
    /// Ban the token after this many consecutive 1059 answers: 401 for the
    /// rest of the run, as upstream does to a client that keeps calling
    /// through a storm (0 = never).
    #[arg(long, default_value_t = 0)]
    pub ban_after: u32,
    /// Share of members the upstream shows without a number (0.0..=1.0;
    /// 1.0 is a group with member numbering off).
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub unnumbered_ratio: f64,
    /// Members (after the owner) who joined in one and the same
    /// millisecond, as after a bulk import; above 200 the member list
    /// cannot page through them all.
    #[arg(long, default_value_t = 0)]
    pub tied_joins: usize,
}

fn parse_ratio(raw: &str) -> Result<f64, String> {
    let ratio: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("not a number: {raw:?}"))?;
    state::check_ratio(ratio)
}

impl Default for SimConfig {
    /// The same values as the command-line defaults.
    fn default() -> Self {
        Self {
            port: 3014,
            members: 500,
            seed: 42,
            latency_ms: 200,
            rate_per_min: 0,
            reject_ratio: 0.0,
            token: "sim-token".to_string(),
            no_member_list: false,
            group_id: 51122858222824,
            fault: SimFault::None,
            slow_ms: 5_000,
            lenient_headers: false,
            ban_after: 0,
            unnumbered_ratio: 0.0,
            tied_joins: 0,
        }
    }
}

impl SimConfig {
    /// Defaults without faults: no latency, no limit, no rejection, member
    /// list allowed, port 0. Tests turn on what they exercise.
    pub fn for_tests() -> Self {
        Self {
            port: 0,
            latency_ms: 0,
            ..Self::default()
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand so the token never reaches a log line.
        f.debug_struct("SimConfig")
            .field("port", &self.port)
            .field("members", &self.members)
            .field("seed", &self.seed)
            .field("latency_ms", &self.latency_ms)
            .field("rate_per_min", &self.rate_per_min)
            .field("reject_ratio", &self.reject_ratio)
            .field("token", &"<redacted>")
            .field("no_member_list", &self.no_member_list)
            .field("group_id", &self.group_id)
            .field("fault", &self.fault)
            .field("slow_ms", &self.slow_ms)
            .field("lenient_headers", &self.lenient_headers)
            .field("ban_after", &self.ban_after)
            .field("unnumbered_ratio", &self.unnumbered_ratio)
            .field("tied_joins", &self.tied_joins)
            .finish()
    }
}

/// The group `cfg` describes: generated from its seed and size, with its
/// numbering and join-time ties applied.
pub fn generate_for(cfg: &SimConfig) -> SimData {
    let mut data = generate(cfg.seed, cfg.members, cfg.group_id);
    if cfg.unnumbered_ratio > 0.0 {
        data.hide_numbers(cfg.unnumbered_ratio);
    }
    if cfg.tied_joins > 0 {
        data.tie_joins(cfg.tied_joins);
    }
    data
}

/// The simulator's routes over `data`, with the knobs of `cfg`.
pub fn router(cfg: SimConfig, data: Arc<SimData>) -> axum::Router {
    server::router(Arc::new(SimState::new(&cfg, data)))
}

/// Serves the simulator on an already bound listener until `shutdown`
/// completes. Taking the listener lets callers bind port 0.
pub async fn serve(
    listener: TcpListener,
    cfg: SimConfig,
    data: Arc<SimData>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, members = data.members.len(), "simulated Zsxq API listening");
    }
    axum::serve(listener, router(cfg, data))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Starts a simulator on `127.0.0.1` and a free port (`cfg.port` is
/// ignored), with data generated from `cfg`, in a background task.
pub async fn spawn(cfg: SimConfig) -> std::io::Result<SimHandle> {
    let data = generate_for(&cfg);
    spawn_with_data(cfg, data).await
}

/// As [`spawn`], serving `data` (a group a test has edited) instead of the
/// one `cfg` generates.
pub async fn spawn_with_data(cfg: SimConfig, data: SimData) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let data = Arc::new(data);
    let state = Arc::new(SimState::new(&cfg, Arc::clone(&data)));
    let app = server::router(Arc::clone(&state));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                // A dropped sender means the handle is gone: stop as well.
                let _ = stopped.await;
            })
            .await
    });
    Ok(SimHandle {
        addr,
        data,
        base_url: format!("http://{addr}"),
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A running simulator started by [`spawn`]. Dropping it stops the server.
pub struct SimHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The group it serves, for computing expected answers.
    pub data: Arc<SimData>,
    /// `http://127.0.0.1:PORT`, to use as the client's API base.
    pub base_url: String,
    /// Shared with the server, so the knobs turn while it runs.
    state: Arc<SimState>,
    /// Fires the graceful shutdown; `None` once fired.
    stop: Option<oneshot::Sender<()>>,
    /// The serving task, awaited by [`SimHandle::shutdown`].
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    /// Sets the probability of a random 1059 (clamped to 0.0..=1.0).
    pub fn set_reject_ratio(&self, ratio: f64) {
        self.state.set_reject_ratio(ratio);
    }

    /// Sets the delay added to every `/v2` call.
    pub fn set_latency_ms(&self, ms: u64) {
        self.state.set_latency_ms(ms);
    }

    /// Sets the per-minute limit (0 = unlimited) and starts a fresh window.
    pub fn set_rate_per_min(&self, limit: u32) {
        self.state.set_rate_per_min(limit);
    }

    /// Allows the member list, or refuses it with 11507.
    pub fn set_member_list_allowed(&self, allowed: bool) {
        self.state.set_member_list_allowed(allowed);
    }

    /// Spoils every `/v2` answer with `fault` ([`SimFault::None`] = healthy).
    pub fn set_fault(&self, fault: SimFault) {
        self.state.set_fault(fault);
    }

    /// Answers the next `n` calls 1059, whatever the ratio.
    pub fn reject_next(&self, n: u32) {
        self.state.reject_next(n);
    }

    /// Forgets the device the token was used from, as when a new
    /// installation logs in: the next call's `X-Aduid` is accepted.
    pub fn forget_device(&self) {
        self.state.forget_device();
    }

    /// Bans the token after `n` consecutive 1059 answers (0 = never).
    pub fn set_ban_after(&self, n: u32) {
        self.state.set_ban_after(n);
    }

    /// Leaves one participant out of every ranking (statistics still count
    /// them), or stops.
    pub fn set_hide_participant(&self, on: bool) {
        self.state.set_hide_participant(on);
    }

    /// Answers member summaries with another member's record, or stops.
    pub fn set_wrong_summary(&self, on: bool) {
        self.state.set_wrong_summary(on);
    }

    /// Sets how late [`SimFault::Slow`] answers.
    pub fn set_slow_ms(&self, ms: u64) {
        self.state.set_slow_ms(ms);
    }

    /// The knobs now.
    pub fn knobs(&self) -> SimKnobs {
        self.state.knobs()
    }

    /// The call counters, as `GET /__sim/stats` reports them.
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// When the recent `/v2` calls arrived, as offsets from the simulator's
    /// start, oldest first (throttled calls included).
    pub fn arrivals(&self) -> Vec<std::time::Duration> {
        self.state.arrivals()
    }

    /// The most calls that arrived within any `window`, and where that
    /// window started: the rate a client really kept, whatever its average.
    pub fn max_calls_within(&self, window: std::time::Duration) -> (usize, std::time::Duration) {
        max_within(&self.arrivals(), window)
    }

    /// Zeroes the call counters, like `POST /__sim/reset`.
    pub fn reset_stats(&self) {
        self.state.reset_stats();
    }

    /// Stops accepting connections, lets in-flight calls finish and waits
    /// for the server to end.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

/// The most of the sorted `times` that fall within any half-open window of
/// length `window`, and the start of the first such window.
pub fn max_within(
    times: &[std::time::Duration],
    window: std::time::Duration,
) -> (usize, std::time::Duration) {
    let mut best = (0, std::time::Duration::ZERO);
    let mut first = 0;
    for (last, &t) in times.iter().enumerate() {
        while t.saturating_sub(times[first]) >= window {
            first += 1;
        }
        if last + 1 - first > best.0 {
            best = (last + 1 - first, times[first]);
        }
    }
    best
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
