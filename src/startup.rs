//! Wiring: the only place that builds the parts and connects them.
//!
//! `Application::build` takes a [`Config`] and a bound listener (so tests
//! bind port 0 and never collide), picks the store, wraps it in the circuit
//! breaker, creates the upstream budget and client, the cache and the router.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::cache::{CachePolicy, MemberCache};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StoreConfig};
use crate::http::{self, AppState};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::guard::GuardedStore;
use crate::store::redis::RedisStore;
use crate::upstream::{Budget, Upstream, ZsxqClient};

/// How long one store operation may take before the breaker opens. Redis on
/// a LAN answers in well under a millisecond; this only bounds the hang.
const STORE_OP_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the breaker stays open before probing the store again.
const STORE_COOL_DOWN: Duration = Duration::from_secs(1);

pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
}

/// Opens the configured store behind the circuit breaker.
pub async fn open_store(
    cfg: &StoreConfig,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn Store>> {
    let inner: Box<dyn Store> = match cfg {
        StoreConfig::Embedded { path } => Box::new(
            EmbeddedStore::open(path, clock)
                .with_context(|| format!("opening the embedded store at {}", path.display()))?,
        ),
        StoreConfig::Redis { url } => Box::new(
            RedisStore::connect(url.expose(), clock)
                .context("configuring the Redis store (check REDIS_URL / REDIS_HOST)")?,
        ),
    };
    Ok(Arc::new(GuardedStore::new(
        inner,
        STORE_OP_TIMEOUT,
        STORE_COOL_DOWN,
    )))
}

/// Builds the service's parts from a configuration: store, budget,
/// upstream client, cache. Shared by `serve`, `demo` and the in-process CLI
/// commands, so they all run the very same wiring.
pub async fn build_state(config: &Config) -> anyhow::Result<Arc<AppState>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config.store, clock.clone()).await?;
    let budget = Arc::new(Budget::new(
        config.upstream.rate_per_min,
        config.upstream.request_delay,
        config.upstream.concurrency,
    ));
    let upstream: Arc<dyn Upstream> = Arc::new(
        ZsxqClient::new(config.upstream.clone(), budget.clone())
            .context("building the HTTP client")?,
    );
    let policy = CachePolicy {
        ttl: config.cache_ttl,
        soft_ttl: config.cache_soft_ttl,
        negative_ttl: config.negative_ttl,
        enabled: config.cache_enabled,
    };
    let cache = MemberCache::with_policy(store, upstream, budget, clock, policy);
    cache.spawn_stats_flusher();
    if config.cache_enabled {
        cache.spawn_warm_up(config.warmup_interval, config.warmup_batch);
    }
    Ok(Arc::new(AppState {
        cache,
        admin_token: config.admin_token.clone(),
        default_concurrency: config.upstream.concurrency.min(10),
    }))
}

impl Application {
    pub async fn build(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        let state = build_state(&config).await?;
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let cache = self.state.cache.clone();
        let router = http::router(self.state);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        cache.flush_stats().await;
        Ok(())
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
