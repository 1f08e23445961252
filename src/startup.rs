//! Wiring: the only place that builds the parts and connects them.
//!
//! `Application::build` takes a [`Config`] and a bound listener (so tests
//! bind port 0 and never collide), picks the store, wraps it in the circuit
//! breaker, creates the upstream budget and client, the cache (with its near
//! cache and write-back), the refund service, the metrics registry (each
//! part registering its own series) and the router. `run` serves with the
//! client's address known (for the per-client rate limit) and shuts down
//! gracefully: in-flight requests finish, up to `SHUTDOWN_GRACE_SECS`.
//! [`build_state`] is the same wiring without HTTP, for the commands that
//! work in-process (`sync`, `refund-list`, the benchmarks).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::cache::{CachePolicy, MemberCache, NearOptions};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConnectionLimits, StoreConfig};
use crate::http::edge::{ClientRateLimit, InFlight};
use crate::http::metrics::HttpMetrics;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::refund::RefundService;
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::guard::GuardedStore;
use crate::store::metrics::StoreMetrics;
use crate::store::redis::RedisStore;
use crate::upstream::device::DeviceId;
use crate::upstream::fleet::FleetBudget;
use crate::upstream::refusal::Refusal;
use crate::upstream::{self, Budget, Upstream, ZsxqClient};

/// How long a single store read may take before the breaker opens, when not
/// configured (`STORE_TIMEOUT_MS`). Redis on a LAN answers in well under a
/// millisecond; this only bounds the hang.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// How long the breaker stays open before probing the store again.
const STORE_COOL_DOWN: Duration = Duration::from_secs(1);
/// How often a shutdown that waits for requests says how many are left.
const SHUTDOWN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    /// `SHUTDOWN_GRACE_SECS`.
    shutdown_grace: Duration,
    /// Header and idle timeouts, connection cap.
    connection_limits: ConnectionLimits,
}

/// Opens the configured store behind the circuit breaker, with the default
/// read timeout.
pub async fn open_store(
    cfg: &StoreConfig,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(guard_store(
        open_unguarded_store(cfg, clock).await?,
        DEFAULT_STORE_TIMEOUT,
    ))
}

/// Wraps a store in the circuit breaker.
pub fn guard_store(inner: Box<dyn Store>, read_timeout: Duration) -> Arc<dyn Store> {
    Arc::new(GuardedStore::new(inner, read_timeout, STORE_COOL_DOWN))
}

/// Opens the configured store, without the breaker.
pub async fn open_unguarded_store(
    cfg: &StoreConfig,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Box<dyn Store>> {
    let inner: Box<dyn Store> = match cfg {
        StoreConfig::Embedded { path } => Box::new(
            EmbeddedStore::open(path, clock)
                .with_context(|| format!("opening the embedded store at {}", path.display()))?,
        ),
        StoreConfig::Redis { .. } => {
            let target = cfg
                .redis_target()
                .context("REDIS_URL lists no usable node")?;
            Box::new(
                RedisStore::connect_target(&target, clock)
                    .context("configuring the Redis store (check REDIS_URL / REDIS_HOST)")?,
            )
        }
    };
    Ok(inner)
}

/// The upstream budget: `API_RATE_LIMIT` for this process, shared with the
/// other replicas through Redis when Redis is the store (`FLEET_BUDGET`).
fn build_budget(config: &Config) -> anyhow::Result<Budget> {
    let budget = Budget::new(
        config.upstream.rate_per_min,
        config.upstream.request_delay,
        config.upstream.concurrency,
    )
    .with_queue(
        config.limits.interactive_queue,
        config.limits.queue_per_client,
    );
    let Some(target) = config.store.redis_target() else {
        return Ok(budget);
    };
    if !config.fleet.shared {
        return Ok(budget);
    }
    let fleet = FleetBudget::connect(&target, budget.period(), config.fleet.size_hint)
        .context("configuring the fleet budget in Redis (check REDIS_URL / REDIS_HOST)")?;
    Ok(budget.with_fleet(fleet))
}

/// What makes one installation towards the upstream: the group and the
/// token (only ever hashed, for the device id's candidate).
pub fn installation(config: &Config) -> String {
    format!(
        "{} {}",
        config.upstream.group_id,
        config.upstream.auth.secret().expose()
    )
}

/// The refusal guard: shared by the fleet through Redis when Redis is the
/// store, this process's own otherwise.
pub fn build_refusal(config: &Config) -> anyhow::Result<Refusal> {
    match config.store.redis_target() {
        Some(target) => Refusal::shared(
            &target,
            config.upstream.refusal,
            config.upstream.auth.secret().expose(),
        )
        .context("configuring the refusal state in Redis (check REDIS_URL / REDIS_HOST)"),
        None => Ok(Refusal::local(config.upstream.refusal)),
    }
}

/// Builds the service's parts from a configuration: store, budget,
/// upstream client, cache. Shared by `serve`, `demo` and the in-process CLI
/// commands, so they all run the very same wiring.
pub async fn build_state(config: &Config) -> anyhow::Result<Arc<AppState>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_unguarded_store(&config.store, clock.clone()).await?;
    build_state_with_store(config, store, clock)
}

/// [`build_state`] on a store the caller opened (fault-injection tests wrap
/// the configured one); it is put behind the circuit breaker here.
pub fn build_state_with_store(
    config: &Config,
    store: Box<dyn Store>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<AppState>> {
    let events_origin = store.events_origin();
    let guarded = GuardedStore::new(store, config.reliability.store_timeout, STORE_COOL_DOWN);
    let store_metrics = guarded.metrics().clone();
    let store: Arc<dyn Store> = Arc::new(guarded);
    let budget = Arc::new(build_budget(config)?);
    let refusal = Arc::new(build_refusal(config)?);
    let upstream: Arc<dyn Upstream> = Arc::new(
        ZsxqClient::new(config.upstream.clone(), budget.clone())
            .context("building the HTTP client")?
            .with_body_limit(config.limits.upstream_body_max)
            .with_device(DeviceId::stored(store.clone(), &installation(config)))
            .with_refusal(refusal.clone()),
    );
    let policy = CachePolicy {
        ttl: config.cache_ttl,
        soft_ttl: config.cache_soft_ttl,
        negative_ttl: config.negative_ttl,
        enabled: config.cache_enabled,
        number_search_wait: config.number_search_wait,
    };
    let near = NearOptions {
        max_bytes: config.reliability.near_cache_bytes,
        fresh_for: config.reliability.near_cache_ttl,
    };
    let cache = MemberCache::build(store, upstream, budget, clock, policy, near);
    // Other replicas' changes drop our near-cache entries (Redis only: the
    // store tells whether it announces its writes).
    let invalidation = match (&config.store, events_origin) {
        (StoreConfig::Redis { .. }, Some(origin)) if cache.near().is_enabled() => {
            let nodes = config
                .store
                .redis_target()
                .map(|t| t.nodes())
                .unwrap_or_default();
            Some(crate::cache::invalidation::spawn(
                nodes,
                origin,
                cache.near_handle(),
            ))
        }
        _ => None,
    };
    cache.spawn_stats_flusher();
    cache.spawn_write_back_flusher();
    if let Some(listener) = &invalidation {
        cache.watch_invalidations(listener.clone());
    }
    cache.spawn_store_watch();
    if config.cache_enabled {
        cache.spawn_warm_up(config.warmup_interval, config.warmup_batch);
    }
    let rate_limit = config.edge.http_rate_limit.map(|per_minute| {
        let limit = Arc::new(ClientRateLimit::new(per_minute));
        limit.spawn_janitor();
        limit
    });
    let refunds = RefundService::new(cache.clone());
    let in_flight = Arc::new(InFlight::default());
    let http_metrics = HttpMetrics::default();
    let metrics = build_metrics(
        config,
        &cache,
        &store_metrics,
        &http_metrics,
        in_flight.clone(),
        refusal.clone(),
    );
    Ok(Arc::new(AppState {
        cache,
        refunds,
        admin_token: config.admin_token.clone(),
        default_concurrency: config.upstream.concurrency.min(10),
        rate_limit,
        cors_origins: config.edge.cors_origins.clone(),
        gate: http::gate::Gate::new(
            config.edge.allowed_hosts.clone(),
            config.edge.read_token.as_ref(),
            config.admin_token.as_ref(),
            config.edge.cors_origins.clone(),
        ),
        in_flight,
        invalidation,
        metrics: Arc::new(metrics),
        http_metrics,
        limits: config.limits,
        refusal,
    }))
}

/// The registry behind `GET /metrics`: each part registers its own series
/// and the collectors that read its state at scrape time.
fn build_metrics(
    config: &Config,
    cache: &MemberCache,
    store: &StoreMetrics,
    http: &HttpMetrics,
    in_flight: Arc<InFlight>,
    refusal: Arc<Refusal>,
) -> Metrics {
    let mut registry = Registry::default();
    registry.register(
        "zsxq_build",
        "Build of the running service",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    http.register(&mut registry, in_flight);
    cache.register_metrics(&mut registry);
    upstream::register_metrics(
        &mut registry,
        cache.budget(),
        config.upstream.rate_per_min,
        refusal,
    );
    store.register(&mut registry);
    Metrics::new(registry)
}

impl Application {
    pub async fn build(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        let state = build_state(&config).await?;
        Ok(Self {
            listener,
            state,
            shutdown_grace: config.reliability.shutdown_grace,
            connection_limits: config.edge.connections,
        })
    }

    /// Builds on a store the caller opened; see [`build_state_with_store`].
    pub async fn build_with_store(
        config: Config,
        listener: TcpListener,
        store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let state = build_state_with_store(&config, store, clock)?;
        Ok(Self {
            listener,
            state,
            shutdown_grace: config.reliability.shutdown_grace,
            connection_limits: config.edge.connections,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting connections
    /// and lets in-flight requests finish — for at most the shutdown grace,
    /// after which the process ends with them cut (and says how many).
    /// Counters and queued write-backs are flushed on the way out.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let cache = self.state.cache.clone();
        let in_flight = self.state.in_flight.clone();
        let grace = self.shutdown_grace;
        let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            let _ = signalled.send(());
        };
        let mut workers =
            http::server::Workers::start(http::router(self.state), self.connection_limits)?;
        let server = workers.serve(self.listener, shutdown);
        let overdue = async {
            if on_signal.await.is_err() {
                std::future::pending::<()>().await;
            }
            wait_for_requests(&in_flight, grace).await;
        };
        tokio::select! {
            served = server => served?,
            () = overdue => tracing::warn!(
                in_flight = in_flight.get(),
                grace_secs = grace.as_secs(),
                "shutdown grace elapsed: ending with requests still running"
            ),
        }
        report_interrupted_sync(&cache, grace).await;
        cache.flush_stats().await;
        if !cache.write_back_queue().is_empty() {
            let flushed = tokio::time::timeout(
                Duration::from_secs(2),
                cache
                    .write_back_queue()
                    .flush(cache.store().as_ref(), cache.ttl()),
            )
            .await;
            let left = cache.write_back_queue().len();
            if left > 0 {
                tracing::warn!(left, outcome = ?flushed.ok(), "members fetched during a store outage were not written back before exit");
            }
        }
        // Last: tasks the handlers spawned (a sync) ran on the workers.
        workers.stop().await;
        tracing::info!("shut down");
        Ok(())
    }
}

/// Waits `grace`, saying every few seconds how many requests are still being
/// finished (a long sync is the usual one).
async fn wait_for_requests(in_flight: &InFlight, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return;
        }
        let n = in_flight.get();
        if n > 0 {
            tracing::info!(
                in_flight = n,
                left_secs = (deadline - now).as_secs(),
                "shutting down: waiting for in-flight requests"
            );
        }
        tokio::time::sleep((deadline - now).min(SHUTDOWN_PROGRESS_EVERY)).await;
    }
}

/// A sync job runs in its own task, outside any request: give it the grace
/// period to finish, then say what it completed. Members it cached stay
/// cached; running it again skips them (`force: false`).
async fn report_interrupted_sync(cache: &MemberCache, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while cache.jobs().running().is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(job) = cache.jobs().running() {
        tracing::warn!(
            job_id = job.job_id.as_str(),
            done = job.done,
            failed = job.failed,
            total = job.total,
            "shutdown interrupted a sync: {} of {} members were cached ({} failed); run the sync again to finish",
            job.done,
            job.total,
            job.failed
        );
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
