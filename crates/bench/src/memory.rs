//! `zsxq-bench memory`: the service's resident memory against the group's
//! size, on the embedded store and on a private Redis.
//!
//! For each store and each group size (`--members`, then `--grown`) it
//! starts the simulator (in this process, no latency) and the real service
//! binary as a child process, so the RSS read from `/proc` is the service's
//! alone, and reads `VmRSS`:
//! - at idle, before any sync (the baseline);
//! - after a sync of the whole group through `POST /api/users/sync` (the
//!   member list, 200 members a call), once the job reports done;
//! - after a second, forced sync of the same group: what the scheduled
//!   warm-up does every `WARMUP_INTERVAL`, so a creep per sync shows here;
//! - after `--lookups` distinct members were looked up one request each,
//!   which fills the near cache to its bound (`NEAR_CACHE_MB`): the RSS it
//!   added is printed beside the bytes its weigher charged, so the
//!   accounting can be checked against what the process really holds.
//!
//! The targets: RSS after syncing `--members` (100 000) at most
//! [`RSS_TARGET_MB`], and the growth from `--members` to `--grown` (300 000)
//! at most [`GROWTH_TARGET_MB`]. Each size is its own service run (the
//! simulator's group cannot grow under a running service), so the growth is
//! the difference of two runs' RSS after their sync; both start from the
//! same idle baseline, which is printed. The peak (`VmHWM`) is printed too:
//! a step that held the whole group for a moment shows there even when the
//! allocator gave the memory back.
//!
//! It needs the service binary built (`cargo build --release -p
//! zsxq-cache`; it is looked for beside this binary, or given with
//! `--service`) and `redis-server` on PATH for the Redis runs; at the
//! default sizes it takes about six minutes on two cores. Figures are
//! printed, never asserted: a missed target prints FAIL and the command
//! exits non-zero.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use zsxq_sim::SimConfig;
use zsxq_test_support::{Service, StoreKind, TestApp, TestEnv};

/// RSS after syncing `--members` (100 000) through the service.
const RSS_TARGET_MB: f64 = 60.0;
/// RSS growth from `--members` (100 000) to `--grown` (300 000).
const GROWTH_TARGET_MB: f64 = 15.0;

#[derive(Debug, Clone, clap::Args)]
pub struct MemoryArgs {
    /// Members of the first group (the RSS target's size).
    #[arg(long, default_value_t = 100_000)]
    pub members: usize,
    /// Members of the grown group (the growth target's size).
    #[arg(long, default_value_t = 300_000)]
    pub grown: usize,
    /// Stores to measure on.
    #[arg(long, value_delimiter = ',', default_value = "embedded,redis")]
    pub stores: Vec<BenchStore>,
    /// The service binary; by default `zsxq-cache` beside this binary.
    #[arg(long)]
    pub service: Option<PathBuf>,
    /// Simulated upstream latency per call, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra service variables, `NAME=value` (repeatable), to compare
    /// settings (`--var NEAR_CACHE_MB=0`).
    #[arg(long = "var")]
    pub vars: Vec<String>,
    /// Skip the second, forced sync of each group.
    #[arg(long)]
    pub no_resync: bool,
    /// Distinct members looked up after the syncs (0 skips it).
    #[arg(long, default_value_t = 20_000)]
    pub lookups: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchStore {
    Embedded,
    Redis,
}

impl BenchStore {
    fn kind(self) -> StoreKind {
        match self {
            Self::Embedded => StoreKind::Embedded,
            Self::Redis => StoreKind::Redis,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Redis => "redis",
        }
    }
}

/// One service run's readings, MiB.
#[derive(Debug, Clone, Copy)]
struct Run {
    members: usize,
    idle: Memory,
    synced: Memory,
    resynced: Option<Memory>,
    sync_secs: f64,
    /// After the lookups: memory, near-cache entries and charged MiB.
    looked_up: Option<(Memory, f64, f64)>,
}

/// `/proc/<pid>/status` figures, MiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: f64,
    anon: f64,
    peak: f64,
}

impl Memory {
    fn read(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .context("reading the service's /proc status (did it exit?)")?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let kib: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
            Ok(kib / 1024.0)
        };
        Ok(Self {
            rss: field("VmRSS:")?,
            anon: field("RssAnon:")?,
            peak: field("VmHWM:")?,
        })
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmRSS {:>6.1} MB (anon {:>6.1}), peak {:>6.1}",
            self.rss, self.anon, self.peak
        )
    }
}

pub async fn run(args: MemoryArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        println!(
            "WARNING: this is a debug build; run `cargo run --release -p zsxq-bench -- memory` for real figures"
        );
    }
    let service = match &args.service {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("zsxq-cache"),
    };
    if !service.is_file() {
        bail!(
            "no service binary at {} (build it: cargo build --release -p zsxq-cache, or pass --service)",
            service.display()
        );
    }
    let extra = parse_vars(&args.vars)?;
    println!(
        "bench memory: service {}, groups of {} and {} members, latency {} ms, extra variables {:?}",
        service.display(),
        args.members,
        args.grown,
        args.latency_ms,
        args.vars
    );
    let started = Instant::now();
    let mut ok = true;
    let mut results = Vec::new();
    for &store in &args.stores {
        let mut runs = Vec::new();
        for members in [args.members, args.grown] {
            let run = measure(&args, store, members, &service, &extra)
                .await
                .with_context(|| format!("{} store, {members} members", store.name()))?;
            println!(
                "[{:<8}] {:>7} members  idle: {}",
                store.name(),
                run.members,
                run.idle
            );
            println!(
                "[{:<8}] {:>7} members  sync: {}  ({:.1} s)",
                store.name(),
                run.members,
                run.synced,
                run.sync_secs
            );
            if let Some(again) = run.resynced {
                println!(
                    "[{:<8}] {:>7} members  sync again (force): {}",
                    store.name(),
                    run.members,
                    again
                );
            }
            if let Some((memory, entries, charged)) = run.looked_up {
                println!(
                    "[{:<8}] {:>7} members  after {} lookups: {memory}; near cache {entries:.0} entries charged {charged:.1} MB",
                    store.name(),
                    run.members,
                    args.lookups.min(run.members),
                );
            }
            runs.push(run);
        }
        results.push((store, runs));
    }
    println!();
    for (store, runs) in &results {
        let (small, large) = (&runs[0], &runs[1]);
        // The resync is what a long-running service settles at.
        let settled = |r: &Run| r.resynced.unwrap_or(r.synced).rss.max(r.synced.rss);
        let (at_small, at_large) = (settled(small), settled(large));
        let growth = at_large - at_small;
        let rss_ok = at_small <= RSS_TARGET_MB;
        let growth_ok = growth <= GROWTH_TARGET_MB;
        ok &= rss_ok && growth_ok;
        println!(
            "{:<8}: idle {:.1} MB; after {} members {:.1} MB (target <= {RSS_TARGET_MB} MB: {}); after {} members {:.1} MB; growth {:+.1} MB (target <= {GROWTH_TARGET_MB} MB: {})",
            store.name(),
            small.idle.rss,
            small.members,
            at_small,
            verdict(rss_ok),
            large.members,
            at_large,
            growth,
            verdict(growth_ok),
        );
    }
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    if ok {
        Ok(())
    } else {
        bail!("some targets were missed (see FAIL above)")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "pass" } else { "FAIL" }
}

fn parse_vars(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|v| {
            let (name, value) = v
                .split_once('=')
                .with_context(|| format!("--var {v:?}: expected NAME=value"))?;
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

/// One service run on a fresh store and a group of `members`.
async fn measure(
    args: &MemoryArgs,
    store: BenchStore,
    members: usize,
    service: &std::path::Path,
    extra: &[(String, String)],
) -> anyhow::Result<Run> {
    let mut sim = SimConfig::for_tests();
    sim.members = members;
    sim.latency_ms = args.latency_ms;
    // The quick test pacing (6000 calls a minute, no spacing): memory, not
    // the budget, is what this measures. No scheduled warm-up, so the only
    // syncs are the ones asked for.
    let env = TestApp::builder()
        .store(store.kind())
        .sim(sim)
        .var("WARMUP_INTERVAL", "0")
        .var("RUST_LOG", "warn")
        .environment()
        .await?;
    let extra: Vec<(&str, String)> = extra.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let svc = Service::try_start(service, &env, &extra).await?;
    let http = reqwest::Client::new();
    // Let start-up's own work (the store's first reads, the listener) end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = Memory::read(svc.pid())?;
    let started = Instant::now();
    let report = sync(&http, &svc, &env, false).await?;
    let sync_secs = started.elapsed().as_secs_f64();
    check_report(&report, members)?;
    settle().await;
    let synced = Memory::read(svc.pid())?;
    let resynced = if args.no_resync {
        None
    } else {
        let report = sync(&http, &svc, &env, true).await?;
        check_report(&report, members)?;
        settle().await;
        Some(Memory::read(svc.pid())?)
    };
    let looked_up = if args.lookups == 0 {
        None
    } else {
        look_up(&http, &svc, &env, args.lookups).await?;
        settle().await;
        let metrics = http.get(svc.url("/metrics")).send().await?.text().await?;
        Some((
            Memory::read(svc.pid())?,
            metric(&metrics, "zsxq_near_cache_entries"),
            metric(&metrics, "zsxq_near_cache_bytes") / f64::from(1 << 20),
        ))
    };
    Ok(Run {
        members,
        idle,
        synced,
        resynced,
        sync_secs,
        looked_up,
    })
}

/// Looks up the first `n` members of the group, one request each, 32 at
/// a time; every answer must carry the member's number.
async fn look_up(
    http: &reqwest::Client,
    svc: &Service,
    env: &TestEnv,
    n: usize,
) -> anyhow::Result<()> {
    const WORKERS: usize = 32;
    let members: Vec<(u64, u64)> = env
        .sim
        .data
        .members
        .iter()
        .take(n)
        .map(|m| (m.user_id, m.number))
        .collect();
    let members = std::sync::Arc::new(members);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (http, members, base) = (http.clone(), members.clone(), svc.url("/api/users/"));
        workers.spawn(async move {
            for &(id, number) in members.iter().skip(worker).step_by(WORKERS) {
                let body: Value = http.get(format!("{base}{id}")).send().await?.json().await?;
                anyhow::ensure!(
                    body["data"]["number"].as_u64() == Some(number),
                    "member {id}: {body}"
                );
            }
            Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

/// A series' value in a Prometheus exposition (0 when absent).
fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Background work after a sync (moka's maintenance, the write-back
/// flusher, the stats flush) runs within a second or two.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// Runs a sync as a job and waits for its report.
async fn sync(
    http: &reqwest::Client,
    svc: &Service,
    env: &TestEnv,
    force: bool,
) -> anyhow::Result<Value> {
    let started: Value = http
        .post(svc.url("/api/users/sync"))
        .bearer_auth(&env.admin_token)
        .json(&json!({"async": true, "force": force}))
        .send()
        .await?
        .json()
        .await?;
    let job = started["data"]["job_id"]
        .as_str()
        .with_context(|| format!("no job id in {started}"))?
        .to_string();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status: Value = http
            .get(svc.url(&format!("/api/users/sync/{job}")))
            .send()
            .await?
            .json()
            .await?;
        match status["data"]["state"].as_str() {
            Some("running") => continue,
            Some("done") => return Ok(status["data"]["report"].clone()),
            _ => bail!("sync job ended badly: {status}"),
        }
    }
}

/// The sync must have cached the whole group, or the figures mean nothing.
fn check_report(report: &Value, members: usize) -> anyhow::Result<()> {
    let listed = report["listed_count"].as_u64().unwrap_or(0);
    let failed = report["failed_count"].as_u64().unwrap_or(u64::MAX);
    anyhow::ensure!(
        listed as usize >= members && failed == 0,
        "the sync listed {listed} of {members} members with {failed} failures: {report}"
    );
    Ok(())
}
