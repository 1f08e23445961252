//! Wiring: the only place that builds the parts and connects them.
//!
//! `Application::build` takes a [`Config`] and a bound listener (so tests
//! bind port 0 and never collide), picks the store, wraps it in the circuit
//! breaker, creates the upstream budget and client, the cache, the refund
//! service and the router. [`build_services`] is the same wiring without
//! HTTP, for the commands that work in-process (`refund-list`,
//! `bench-refund`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::cache::MemberCache;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StoreConfig};
use crate::http::{self, AppState};
use crate::refund::RefundService;
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

/// The service's parts, without HTTP: what `serve` runs behind the router
/// and what the CLI (`refund-list`, `bench-refund`) uses in-process.
pub struct Services {
    pub cache: Arc<MemberCache>,
    pub refunds: Arc<RefundService>,
}

/// Builds the store, upstream budget and client, cache and refund service
/// from a configuration. Spawns nothing: callers that run long start the
/// stats flusher themselves, callers that exit call `cache.flush_stats()`.
pub async fn build_services(config: &Config) -> anyhow::Result<Services> {
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
    let cache = MemberCache::new(
        store,
        upstream,
        budget,
        clock,
        config.cache_ttl,
        config.cache_enabled,
    );
    let refunds = RefundService::new(cache.clone());
    Ok(Services { cache, refunds })
}

impl Application {
    pub async fn build(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        let Services { cache, refunds } = build_services(&config).await?;
        cache.spawn_stats_flusher();
        let state = Arc::new(AppState {
            cache,
            refunds,
            admin_token: config.admin_token.clone(),
            default_concurrency: config.upstream.concurrency.min(10),
        });
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
