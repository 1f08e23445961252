//! `zsxq-cache bench hot`: the targets for hot lookups, cold stampedes,
//! paging and memory, measured in one run.
//!
//! Starts everything itself: a private `redis-server` (testkit), the
//! simulator (in this process), the service as **separate `serve`
//! processes** (so the load tool, the harness and the service do not share
//! a runtime, and the service's RSS is its own), and nginx with
//! `proxy_cache` in front of the same service as the baseline. Then:
//!
//! 1. **Hot lookups** — `wrk` on `GET /api/users/:id` (a near-cache hit) at
//!    50 and 1000 connections, against the service and against nginx
//!    serving the same JSON from its cache; `redis-benchmark -t get` on the
//!    same Redis as the floor. Ratios are taken against nginx in the same
//!    run, because this machine is shared and noisy.
//! 2. **Cold stampede** — 1000 concurrent requests for a cold member, spread
//!    over three replicas on the one Redis; the simulator counts the member
//!    calls (target: exactly 1 per member).
//! 3. **Paging** — `GET /api/users` at 1 000 and 100 000 cached members
//!    (written straight through the store, not the upstream), p50/p99 over
//!    random pages in both orders; target p50(100k) ≤ 1.5 × p50(1k).
//! 4. **Memory** — Redis `used_memory` per member over the 99 000 members
//!    added, against the same members written in the original design's
//!    straightforward layout into a second private Redis (the baseline: ours
//!    must not be fatter); and the service's RSS (`VmRSS`) with 100 000
//!    members in Redis.
//!
//! It needs `wrk`, `nginx`, `redis-server` and `redis-benchmark` on PATH
//! (`apt-get install -y wrk nginx redis-server redis-tools`) and refuses to
//! run without them. Run it from a release build; a debug build measures the
//! wrong thing and says so. Figures are printed, never asserted: a missed
//! target prints FAIL and the command exits non-zero.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use tokio::process::{Child, Command};

use zsxq_cache::clock::SystemClock;
use zsxq_cache::domain::CachedMember;
use zsxq_cache::store::Store;
use zsxq_cache::store::redis::RedisStore;
use zsxq_sim::{SimConfig, SimHandle, SimMember};
use zsxq_test_support::RedisServer;

/// The service's own target for memory: RSS of one replica with 100 000
/// members in Redis.
const RSS_TARGET_MB: f64 = 60.0;
/// The quoted target for the straightforward layout's bytes per member
/// (measured on other data); printed for reference next to the
/// same-run baseline, which is what the verdict compares against.
const BYTES_PER_MEMBER_TARGET: f64 = 736.0;
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

/// One `wrk` run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct WrkFigures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl WrkFigures {
    /// Each figure's median over `runs` (errors: the total).
    fn median(runs: &[Self]) -> Self {
        let median = |figure: fn(&Self) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(figure).collect();
            values.sort_by(f64::total_cmp);
            percentile(&values, 0.5)
        };
        Self {
            rps: median(|f| f.rps),
            p50_ms: median(|f| f.p50_ms),
            p99_ms: median(|f| f.p99_ms),
            errors: runs.iter().map(|f| f.errors).sum(),
        }
    }
}

pub async fn run(args: HotArgs) -> anyhow::Result<()> {
    check_tools()?;
    if cfg!(debug_assertions) {
        println!(
            "WARNING: this is a debug build; run `cargo run --release -- bench hot` for real figures"
        );
    }
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await?
        .context("starting redis-server")?;
    let mut sim_cfg = SimConfig::for_tests();
    sim_cfg.members = 1_000;
    sim_cfg.token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let sim = zsxq_sim::spawn(sim_cfg.clone())
        .await
        .context("starting the simulator")?;
    let work = tempfile::tempdir().context("temp dir")?;

    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(
            Replica::start(&sim, &sim_cfg.token, &redis.url(), work.path())
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
    let nginx = Nginx::start(work.path(), replicas[0].port).await?;
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
        let calls = stampede(&sim, &http, &replicas, m, args.stampede).await?;
        report.stampede.push((m.user_id, calls, replicas.len()));
    }
    let single = std::slice::from_ref(&replicas[1]);
    let m = &sim.data.members[20];
    let calls = stampede(&sim, &http, single, m, args.stampede).await?;
    report.stampede.push((m.user_id, calls, 1));
    sim.set_latency_ms(0);

    // 3 and 4. Paging and memory, filling Redis through the store.
    let store = RedisStore::connect(&redis.url(), Arc::new(SystemClock))?;
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let clear = http
        .delete(replicas[0].url("/api/users/cache"))
        .bearer_auth(&replicas[0].admin_token)
        .send()
        .await?;
    anyhow::ensure!(clear.status().is_success(), "clearing the cache failed");
    let members = zsxq_sim::generate(7, args.members.max(2_000), sim.data.group_id)
        .members
        .iter()
        .map(cached)
        .collect::<Result<Vec<_>, _>>()?;
    let small = 1_000.min(members.len());
    fill(&store, &members[..small]).await?;
    let used_small = zsxq_test_support::used_memory(&mut conn).await?;
    report.paging_small = paging(&http, &replicas[0], args.page_requests, small).await?;
    let started = Instant::now();
    fill(&store, &members[small..]).await?;
    let filled_in = started.elapsed();
    let used_large = zsxq_test_support::used_memory(&mut conn).await?;
    report.large = members.len();
    report.bytes_per_member =
        (used_large - used_small) as f64 / (members.len() - small).max(1) as f64;
    report.paging_large = paging(&http, &replicas[0], args.page_requests, members.len()).await?;
    report.rss_mb = replicas
        .iter()
        .map(|r| r.rss_mb())
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "filled {} members through the store in {:.1} s",
        members.len() - small,
        filled_in.as_secs_f64()
    );
    // The memory baseline, in the same run on the same members: the original
    // design's straightforward layout, in a Redis of its own.
    let baseline = tokio::task::spawn_blocking(RedisServer::start)
        .await?
        .context("starting a second redis-server for the layout baseline")?;
    let mut base_conn = redis::Client::open(baseline.url())?
        .get_multiplexed_async_connection()
        .await?;
    let base_before = zsxq_test_support::used_memory(&mut base_conn).await?;
    zsxq_test_support::seed_layout::write_straightforward(
        &mut base_conn,
        &members[small..],
        86_400,
    )
    .await?;
    report.baseline_bytes_per_member = (zsxq_test_support::used_memory(&mut base_conn).await?
        - base_before) as f64
        / (members.len() - small).max(1) as f64;
    drop(baseline);
    let ok = report.print();
    if ok {
        Ok(())
    } else {
        bail!("some targets were missed (see FAIL above)")
    }
}

fn check_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["wrk", "nginx", "redis-server", "redis-benchmark"]
        .into_iter()
        .filter(|tool| which(tool).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        bail!(
            "bench hot needs {} on PATH; install with `apt-get install -y wrk nginx redis-server redis-tools`",
            missing.join(", ")
        )
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One `zsxq-cache serve` process.
struct Replica {
    port: u16,
    admin_token: String,
    child: Child,
}

impl Replica {
    async fn start(
        sim: &SimHandle,
        token: &str,
        redis_url: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let admin_token = uuid::Uuid::new_v4().simple().to_string();
        let exe = std::env::current_exe().context("locating this binary")?;
        let vars: HashMap<&str, String> = [
            ("PORT", port.to_string()),
            ("HOST", "127.0.0.1".into()),
            ("REDIS_URL", redis_url.into()),
            ("ZSXQ_API_BASE", sim.base_url.clone()),
            ("ZSXQ_GROUP_ID", sim.data.group_id.to_string()),
            ("ZSXQ_ACCESS_TOKEN", token.into()),
            ("ADMIN_TOKEN", admin_token.clone()),
            ("API_RATE_LIMIT", "6000".into()),
            ("API_REQUEST_DELAY", "0".into()),
            ("API_CONCURRENCY", "20".into()),
            ("WARMUP_INTERVAL", "0".into()),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .collect();
        let child = Command::new(exe)
            .arg("serve")
            // A .env in the caller's directory must not leak in.
            .current_dir(dir)
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawning `zsxq-cache serve`")?;
        let replica = Self {
            port,
            admin_token,
            child,
        };
        wait_until_up(&replica.url("/healthz")).await?;
        Ok(replica)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The process's resident set, from `/proc/<pid>/status`.
    fn rss_mb(&self) -> anyhow::Result<f64> {
        let pid = self.child.id().context("service exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS missing")?;
        Ok(kb / 1024.0)
    }
}

async fn wait_until_up(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(resp) = http.get(url).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// nginx with `proxy_cache` in front of one replica.
struct Nginx {
    port: u16,
    child: Child,
}

impl Drop for Nginx {
    /// Stops the master with SIGTERM and waits for it, so it takes its
    /// workers down: after the `SIGKILL` of `kill_on_drop` alone, orphaned
    /// workers can keep running after a run, where they would skew whatever
    /// is measured next.
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else { return };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Nginx {
    async fn start(dir: &Path, upstream_port: u16) -> anyhow::Result<Self> {
        let port = free_port()?;
        let root = dir.join("nginx");
        for sub in ["cache", "tmp", "logs"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        // Workers may run as another user when nginx starts as root.
        let _ = Command::new("chmod")
            .args(["-R", "a+rwx"])
            .arg(dir)
            .status()
            .await;
        let conf = format!(
            r#"worker_processes auto;
worker_rlimit_nofile 65535;
user root;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    proxy_cache_path {root}/cache keys_zone=members:10m;
    upstream service {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://service;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The service answers only hosts it serves (ALLOWED_HOSTS).
            proxy_set_header Host $host;
            proxy_cache members;
            proxy_cache_valid 200 10m;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = root.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let nginx = which("nginx").context("nginx")?;
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nginx")?;
        let nginx = Self { port, child };
        wait_until_up(&nginx.url("/healthz")).await?;
        Ok(nginx)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

/// Runs wrk and reads its figures.
async fn wrk(url: &str, connections: u32, seconds: u64) -> anyhow::Result<WrkFigures> {
    let out = Command::new("wrk")
        .arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .args(["--timeout", "5s"])
        .arg(url)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<WrkFigures> {
    let mut f = WrkFigures::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            f.rps = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            f.p50_ms = duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            f.p99_ms = duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            f.errors += v.trim().parse::<u64>().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            f.errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (f.rps > 0.0).then_some(f)
}

/// wrk's `512.00us`, `3.21ms`, `1.02s`.
fn duration_ms(raw: &str) -> Option<f64> {
    let (value, factor) = if let Some(v) = raw.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = raw.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = raw.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    value.trim().parse::<f64>().ok().map(|v| v * factor)
}

/// `redis-benchmark -t get`: requests per second and p50 (ms).
async fn redis_benchmark(port: u16, connections: u32) -> anyhow::Result<(f64, f64)> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-t", "get", "-n", "300000", "-q", "-c"])
        .arg(connections.to_string())
        .output()
        .await
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "GET: 98039.22 requests per second, p50=0.271 msec"
    let line = text
        .split(['\r', '\n'])
        .rfind(|l| l.starts_with("GET:"))
        .with_context(|| format!("reading redis-benchmark's output: {text}"))?;
    let rps = line
        .trim_start_matches("GET:")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("redis-benchmark rps")?;
    let p50 = line
        .split("p50=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Ok((rps, p50))
}

/// `n` concurrent requests for one cold member, spread over `replicas`;
/// returns the member calls the simulator saw.
async fn stampede(
    sim: &SimHandle,
    http: &reqwest::Client,
    replicas: &[Replica],
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

/// Paging latency over random pages, both sorts and orders: (p50, p99) ms.
async fn paging(
    http: &reqwest::Client,
    replica: &Replica,
    requests: usize,
    members: usize,
) -> anyhow::Result<(f64, f64)> {
    let page_size = 50;
    let pages = members.div_ceil(page_size).max(1);
    let mut took = Vec::with_capacity(requests);
    // A few unmeasured requests first (connections, Lua script cache).
    for i in 0..(requests + 20) {
        let page = rand::rng().random_range(1..=pages);
        let sort = if i % 2 == 0 { "number" } else { "join_time" };
        let order = if i % 4 < 2 { "asc" } else { "desc" };
        let url = replica.url(&format!(
            "/api/users?page={page}&page_size={page_size}&sort_by={sort}&order={order}"
        ));
        let started = Instant::now();
        let resp = http.get(url).send().await?;
        anyhow::ensure!(resp.status().is_success(), "page {page}: {}", resp.status());
        let body: serde_json::Value = resp.json().await?;
        if i >= 20 {
            took.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let total = body["data"]["pagination"]["total_count"].as_u64();
        anyhow::ensure!(
            total == Some(members as u64),
            "page total {total:?}, expected {members}"
        );
    }
    took.sort_by(f64::total_cmp);
    Ok((percentile(&took, 0.50), percentile(&took, 0.99)))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Default)]
struct Report {
    /// (connections, service, nginx), each the median of `rounds` runs.
    hot: Vec<(u32, WrkFigures, WrkFigures)>,
    rounds: usize,
    /// (connections, (rps, p50 ms))
    redis_get: Vec<(u32, (f64, f64))>,
    /// (user id, upstream calls, replicas)
    stampede: Vec<(u64, u64, usize)>,
    paging_small: (f64, f64),
    paging_large: (f64, f64),
    large: usize,
    bytes_per_member: f64,
    /// The original design's straightforward layout on the same members
    /// (same run).
    baseline_bytes_per_member: f64,
    rss_mb: Vec<f64>,
}

impl Report {
    /// Prints the table; whether every target was met.
    fn print(&self) -> bool {
        let mut all_ok = true;
        let mut verdict = |ok: bool| {
            all_ok &= ok;
            if ok { "PASS" } else { "FAIL" }
        };
        println!();
        println!(
            "== hot GET /api/users/:id (near-cache hit), wrk -t2, same machine, same run, median of {} alternating rounds ==",
            self.rounds
        );
        println!(
            "{:>6} | {:>12} {:>9} {:>9} {:>6} | {:>12} {:>9} {:>9} {:>6} | {:>9} {:>9}",
            "conns",
            "service rps",
            "p50 ms",
            "p99 ms",
            "errors",
            "nginx rps",
            "p50 ms",
            "p99 ms",
            "errors",
            "rps ratio",
            "verdict"
        );
        for (conns, s, n) in &self.hot {
            let ratio = s.rps / n.rps;
            let ok = ratio >= 1.0 && (*conns < 1000 || s.p99_ms <= n.p99_ms);
            println!(
                "{conns:>6} | {:>12.0} {:>9.2} {:>9.2} {:>6} | {:>12.0} {:>9.2} {:>9.2} {:>6} | {:>9.2} {:>9}",
                s.rps,
                s.p50_ms,
                s.p99_ms,
                s.errors,
                n.rps,
                n.p50_ms,
                n.p99_ms,
                n.errors,
                ratio,
                verdict(ok)
            );
        }
        for (conns, (rps, p50)) in &self.redis_get {
            let service = self
                .hot
                .iter()
                .find(|(c, ..)| c == conns)
                .map_or(f64::NAN, |(_, s, _)| s.rps);
            println!(
                "floor: redis-benchmark -t get -c {conns}: {rps:.0} rps, p50 {p50:.3} ms (service at {:.2}× of it)",
                service / rps
            );
        }
        if self.stampede.is_empty() {
            // --hot-only: nothing else was measured.
            return all_ok;
        }
        println!();
        println!("== cold stampede (simulator at 200 ms a call) ==");
        for (id, calls, replicas) in &self.stampede {
            println!(
                "member {id}: {calls} upstream call(s) for the stampede over {replicas} replica(s)   {}",
                verdict(*calls == 1)
            );
        }
        println!();
        println!("== paging GET /api/users (page_size 50, random pages, both sorts and orders) ==");
        let ratio = self.paging_large.0 / self.paging_small.0;
        println!(
            "  1 000 members: p50 {:.2} ms, p99 {:.2} ms",
            self.paging_small.0, self.paging_small.1
        );
        println!(
            "{:>7} members: p50 {:.2} ms, p99 {:.2} ms   p50 ratio {ratio:.2} (target ≤ {PAGING_RATIO_TARGET})   {}",
            self.large,
            self.paging_large.0,
            self.paging_large.1,
            verdict(ratio <= PAGING_RATIO_TARGET)
        );
        println!();
        println!("== memory ==");
        println!(
            "Redis used_memory per member (every key and index): {:.0} B; straightforward seed layout on the same members: {:.0} B; ratio {:.2} (target ≤ 1)   {}",
            self.bytes_per_member,
            self.baseline_bytes_per_member,
            self.bytes_per_member / self.baseline_bytes_per_member.max(1.0),
            verdict(self.bytes_per_member <= self.baseline_bytes_per_member)
        );
        println!(
            "  (the quoted target ~{BYTES_PER_MEMBER_TARGET} B is the straightforward layout's figure on the data it was measured with; \
             on these members that layout takes the baseline above, and even the seed's own keys as we write them exceed {BYTES_PER_MEMBER_TARGET} B: \
             {} here)",
            if self.bytes_per_member <= BYTES_PER_MEMBER_TARGET {
                "met"
            } else {
                "not met"
            }
        );
        let worst = self.rss_mb.iter().copied().fold(0.0, f64::max);
        println!(
            "service RSS with {} members in Redis: {} MB (target ≤ {RSS_TARGET_MB})   {}",
            self.large,
            self.rss_mb
                .iter()
                .map(|r| format!("{r:.1}"))
                .collect::<Vec<_>>()
                .join(" / "),
            verdict(worst <= RSS_TARGET_MB)
        );
        all_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 10s test @ http://127.0.0.1:1/x
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.00us  300.00us  10.00ms   90.00%
  Latency Distribution
     50%  750.00us
     75%    1.00ms
     90%    1.20ms
     99%    2.50ms
  600000 requests in 10.00s, 400.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  60000.50
Transfer/sec:     40.00MB
";
        let f = parse_wrk(text).unwrap();
        assert_eq!(f.rps, 60000.5);
        assert!((f.p50_ms - 0.75).abs() < 1e-9);
        assert!((f.p99_ms - 2.5).abs() < 1e-9);
        assert_eq!(f.errors, 9);
        assert_eq!(duration_ms("1.5s"), Some(1500.0));
    }

    #[test]
    fn rounds_are_summarised_by_each_figures_median() {
        let run = |rps, p99_ms, errors| WrkFigures {
            rps,
            p50_ms: 1.0,
            p99_ms,
            errors,
        };
        let m = WrkFigures::median(&[run(90.0, 9.0, 1), run(50.0, 3.0, 0), run(70.0, 5.0, 2)]);
        assert_eq!(m.rps, 70.0);
        assert_eq!(m.p99_ms, 5.0);
        assert_eq!(m.errors, 3);
    }
}
