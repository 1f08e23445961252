//! `zsxq-bench hot`: the targets for hot lookups, cold stampedes, paging and
//! memory, measured in one run.
//!
//! Starts everything itself with the tests' app builder: a private
//! `redis-server`, the simulator (in this process), the service as
//! **separate processes** of this binary's hidden `serve` (so the load tool,
//! the harness and the service do not share a runtime, and the service's
//! RSS is its own), and nginx with `proxy_cache` in front of the same
//! service as the baseline. Then:
//!
//! 1. **Hot lookups** — `wrk` on `GET /api/users/:id` (a near-cache hit) at
//!    50 and 1000 connections, against the service and against nginx
//!    serving the same JSON from its cache; `redis-benchmark -t get` on the
//!    same Redis as the floor. Ratios are taken against nginx in the same
//!    run, because this machine is shared and noisy.
//! 2. **Cold stampede** — 1000 concurrent requests for a cold member, spread
//!    over three replicas on the one Redis; the simulator counts the member
//!    calls (target: exactly 1 per member).
//! 3. **Paging** — `GET /api/users` at 1 000 cached members (in a Redis of
//!    their own, behind a fourth replica) and at 100 000 (the replicas'
//!    Redis), written straight through the store, not the upstream; p50/p99
//!    over random pages in both orders, the two sizes taking turns request
//!    by request; target p50(100k) ≤ 1.5 × p50(1k).
//! 4. **Memory** — Redis `used_memory` per member, every key and index
//!    included, in a second private Redis: the 99 000 members beyond the
//!    first thousand written through the store, then in the original
//!    design's straightforward layout (the baseline), once with the
//!    simulator's real-looking long avatar URLs and once with every field
//!    short (`seed_layout::compare_layouts`); target ≤ 0.8 of the baseline
//!    on both. And the service's RSS (`VmRSS`) with 100 000 members in
//!    Redis.
//!
//! It needs `wrk`, `nginx`, `redis-server` and `redis-benchmark` on PATH
//! (`apt-get install -y wrk nginx redis-server redis-tools`) and refuses to
//! run without them. Run it from a release build; a debug build measures the
//! wrong thing and says so. Figures are printed, never asserted: a missed
//! target prints FAIL and the command exits non-zero.

mod report;
mod tools;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;

use zsxq_cache::clock::SystemClock;
use zsxq_cache::domain::CachedMember;
use zsxq_cache::store::Store;
use zsxq_cache::store::redis::RedisStore;
use zsxq_sim::{SimConfig, SimHandle, SimMember};
use zsxq_test_support::{RedisServer, Service, StoreKind, TestApp};

use self::report::{Report, WrkFigures, percentile};
use self::tools::{Nginx, check_tools, redis_benchmark, wrk};

/// The service's own target for memory: RSS of one replica with 100 000
/// members in Redis.
const RSS_TARGET_MB: f64 = 60.0;
/// Redis bytes per member in our layout over the straightforward layout's,
/// on the same members in the same run.
const MEMORY_RATIO_TARGET: f64 = 0.8;
/// Paging: p50 at 100k members over p50 at 1k.
const PAGING_RATIO_TARGET: f64 = 1.5;

#[derive(Debug, Clone, clap::Args)]
pub struct HotArgs {
    /// Seconds per wrk run (service and nginx, 50 and 1000 connections,
    /// `--rounds` times each).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// wrk runs per target and connection count. The service and nginx
    /// alternate, round after round, and each one's median round is
    /// reported: load from elsewhere on a shared machine then falls on both
    /// alike instead of on whichever ran during it.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Members in Redis for the large paging and memory figures.
    #[arg(long, default_value_t = 100_000)]
    pub members: usize,
    /// Concurrent cold requests per stampede.
    #[arg(long, default_value_t = 1000)]
    pub stampede: usize,
    /// Paging requests per measurement (each order and sort).
    #[arg(long, default_value_t = 400)]
    pub page_requests: usize,
    /// Only the hot lookups and the Redis floor: skip the stampedes, paging
    /// and memory (about a minute less), for iterating on the hot path.
    #[arg(long)]
    pub hot_only: bool,
}

pub async fn run(args: HotArgs) -> anyhow::Result<()> {
    check_tools()?;
    if cfg!(debug_assertions) {
        println!(
            "WARNING: this is a debug build; run `cargo run --release -p zsxq-bench -- hot` for real figures"
        );
    }
    let mut sim_cfg = SimConfig::for_tests();
    sim_cfg.members = 1_000;
    sim_cfg.token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    // A private Redis, the simulator in this process, and the variables of
    // three replicas: no upstream pacing to speak of, twenty calls at once.
    let env = TestApp::builder()
        .store(StoreKind::Redis)
        .sim(sim_cfg)
        .var("API_CONCURRENCY", "20")
        .var("WARMUP_INTERVAL", "0")
        .var("RUST_LOG", "warn")
        .environment()
        .await?;
    let (sim, redis) = (&env.sim, env.redis.as_ref().context("the run's Redis")?);
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(
            Service::try_start(&exe, &env, &[])
                .await
                .with_context(|| format!("starting service replica {i}"))?,
        );
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2_000)
        .build()?;
    let mut report = Report::default();

    // 1. Hot lookups.
    let hot = &sim.data.members[1];
    let hot_path = format!("/api/users/{}", hot.user_id);
    for _ in 0..2 {
        http.get(replicas[0].url(&hot_path)).send().await?;
    }
    let nginx = Nginx::start(env.dir(), replicas[0].addr.port()).await?;
    let through_nginx = nginx.url(&hot_path);
    for _ in 0..3 {
        http.get(&through_nginx).send().await?;
    }
    let cache_status = http
        .get(&through_nginx)
        .send()
        .await?
        .headers()
        .get("x-cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    println!("nginx proxy_cache status for the member: {cache_status}");
    let service_url = replicas[0].url(&hot_path);
    for conns in [50u32, 1000] {
        let (mut svc, mut ngx) = (Vec::new(), Vec::new());
        for round in 1..=args.rounds.max(1) {
            // Who goes first alternates too, so neither always follows the
            // other's leftovers (TIME_WAIT sockets, a warm cache).
            if round % 2 == 1 {
                svc.push(wrk(&service_url, conns, args.seconds).await?);
                ngx.push(wrk(&through_nginx, conns, args.seconds).await?);
            } else {
                ngx.push(wrk(&through_nginx, conns, args.seconds).await?);
                svc.push(wrk(&service_url, conns, args.seconds).await?);
            }
            let (s, n) = (svc[svc.len() - 1], ngx[ngx.len() - 1]);
            println!(
                "round {round}, {conns} connections: service {:.0} rps, p99 {:.2} ms | nginx {:.0} rps, p99 {:.2} ms",
                s.rps, s.p99_ms, n.rps, n.p99_ms
            );
        }
        report
            .hot
            .push((conns, WrkFigures::median(&svc), WrkFigures::median(&ngx)));
    }
    report.rounds = args.rounds.max(1);
    drop(nginx);
    for conns in [50u32, 1000] {
        report
            .redis_get
            .push((conns, redis_benchmark(redis.port(), conns).await?));
    }

    if args.hot_only {
        let ok = report.print();
        return if ok {
            Ok(())
        } else {
            bail!("some targets were missed (see FAIL above)")
        };
    }

    // 2. Cold stampede over the three replicas.
    sim.set_latency_ms(200);
    for m in &sim.data.members[10..13] {
        let calls = stampede(sim, &http, &replicas, m, args.stampede).await?;
        report.stampede.push((m.user_id, calls, replicas.len()));
    }
    let single = std::slice::from_ref(&replicas[1]);
    let m = &sim.data.members[20];
    let calls = stampede(sim, &http, single, m, args.stampede).await?;
    report.stampede.push((m.user_id, calls, 1));
    sim.set_latency_ms(0);

    // 3 and 4. Paging and memory, filling Redis through the store: the
    // large set into the replicas' Redis, the small one into a Redis of its
    // own behind a fourth replica, so both sizes are measured side by side.
    let store = RedisStore::connect(&redis.url(), Arc::new(SystemClock))?;
    let clear = http
        .delete(replicas[0].url("/api/users/cache"))
        .bearer_auth(&env.admin_token)
        .send()
        .await?;
    anyhow::ensure!(clear.status().is_success(), "clearing the cache failed");
    let members = zsxq_sim::generate(7, args.members.max(2_000), sim.data.group_id)
        .members
        .iter()
        .map(cached)
        .collect::<Result<Vec<_>, _>>()?;
    let small = 1_000.min(members.len());
    let small_redis = tokio::task::spawn_blocking(RedisServer::start)
        .await?
        .context("starting a redis-server for the small paging set")?;
    let small_replica = Service::try_start(&exe, &env, &[("REDIS_URL", small_redis.url())])
        .await
        .context("starting the small set's replica")?;
    let small_store = RedisStore::connect(&small_redis.url(), Arc::new(SystemClock))?;
    fill(&small_store, &members[..small]).await?;
    let started = Instant::now();
    fill(&store, &members).await?;
    let filled_in = started.elapsed();
    report.large = members.len();
    let sizes = [(&small_replica, small), (&replicas[0], members.len())];
    [report.paging_small, report.paging_large] = paging(&http, sizes, args.page_requests).await?;
    drop(small_replica);
    drop(small_redis);
    report.rss_mb = replicas
        .iter()
        .map(|r| r.rss_mb().context("a replica exited"))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "filled {} members through the store in {:.1} s",
        members.len(),
        filled_in.as_secs_f64()
    );
    // Memory, in the same run on the same members, in a Redis of its own:
    // our layout against the original design's straightforward one, on the
    // simulator's records and on the same records with short fields.
    let measured = tokio::task::spawn_blocking(RedisServer::start)
        .await?
        .context("starting a second redis-server for the memory figures")?;
    let long = &members[small..];
    let short: Vec<CachedMember> = long
        .iter()
        .map(zsxq_test_support::seed_layout::short_fields)
        .collect();
    for (kind, records) in [("long", long), ("short", short.as_slice())] {
        let figures = zsxq_test_support::seed_layout::compare_layouts(&measured.url(), records)
            .await
            .with_context(|| format!("measuring memory on {kind} records"))?;
        report.memory.push((kind, figures));
    }
    drop(measured);
    let ok = report.print();
    if ok {
        Ok(())
    } else {
        bail!("some targets were missed (see FAIL above)")
    }
}

/// `n` concurrent requests for one cold member, spread over `replicas`;
/// returns the member calls the simulator saw.
async fn stampede(
    sim: &SimHandle,
    http: &reqwest::Client,
    replicas: &[Service],
    m: &SimMember,
    n: usize,
) -> anyhow::Result<u64> {
    let before = sim.stats().by_kind.member_summary;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let url = replicas[i % replicas.len()].url(&format!("/api/users/{}", m.user_id));
        let http = http.clone();
        tasks.spawn(async move {
            let resp = http.get(url).send().await?;
            let ok = resp.status().is_success();
            let body: serde_json::Value = resp.json().await?;
            Ok::<_, reqwest::Error>((ok, body["data"]["number"].as_u64()))
        });
    }
    let mut wrong = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((true, Some(number)))) if number == m.number => {}
            _ => wrong += 1,
        }
    }
    anyhow::ensure!(wrong == 0, "{wrong} of {n} stampede answers were wrong");
    Ok(sim.stats().by_kind.member_summary - before)
}

fn cached(m: &SimMember) -> anyhow::Result<CachedMember> {
    let now = chrono::Utc::now().timestamp_millis();
    Ok(CachedMember {
        member: m
            .to_member()
            .context("a simulated member with id or number 0")?,
        cached_at: now,
        updated_at: now,
    })
}

async fn fill(store: &RedisStore, members: &[CachedMember]) -> anyhow::Result<()> {
    for chunk in members.chunks(500) {
        store
            .put_members(chunk, Duration::from_secs(86_400))
            .await
            .context("writing members to Redis")?;
    }
    Ok(())
}

/// Paging latency over random pages, both sorts and orders, for each of
/// `sizes` (a replica and the members its Redis holds): (p50, p99) ms each.
/// The sizes take turns request by request, so a burst of load from
/// elsewhere on the machine falls on both alike instead of on whichever was
/// being measured then; one size after the other once made the ratio swing
/// from 0.8 to 2.5 between runs of the same build.
async fn paging<const N: usize>(
    http: &reqwest::Client,
    sizes: [(&Service, usize); N],
    requests: usize,
) -> anyhow::Result<[(f64, f64); N]> {
    let page_size = 50;
    let mut took: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(requests));
    // A few unmeasured requests first (connections, Lua script cache).
    for i in 0..(requests + 20) {
        let sort = if i % 2 == 0 { "number" } else { "join_time" };
        let order = if i % 4 < 2 { "asc" } else { "desc" };
        for (k, (replica, members)) in sizes.iter().enumerate() {
            let pages = members.div_ceil(page_size).max(1);
            let page = rand::rng().random_range(1..=pages);
            let url = replica.url(&format!(
                "/api/users?page={page}&page_size={page_size}&sort_by={sort}&order={order}"
            ));
            let started = Instant::now();
            let resp = http.get(url).send().await?;
            anyhow::ensure!(resp.status().is_success(), "page {page}: {}", resp.status());
            let body: serde_json::Value = resp.json().await?;
            if i >= 20 {
                took[k].push(started.elapsed().as_secs_f64() * 1000.0);
            }
            let total = body["data"]["pagination"]["total_count"].as_u64();
            anyhow::ensure!(
                total == Some(*members as u64),
                "page total {total:?}, expected {members}"
            );
        }
    }
    Ok(took.map(|mut t| {
        t.sort_by(f64::total_cmp);
        (percentile(&t, 0.50), percentile(&t, 0.99))
    }))
}
