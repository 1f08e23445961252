//! Configuration from the environment.
//!
//! Variable names and defaults are the ones existing deployments already
//! set. A `.env` file in the working directory is read first (real
//! environment variables win). Every value is parsed here, once:
//! a bad value stops start-up with a message that names the variable,
//! instead of surfacing later as a confusing runtime failure.
//!
//! This file holds what a [`Config`] is and the reading of the top-level
//! variables; `sections.rs` reads each part (limits, reliability, the HTTP
//! edge, the store), `vars.rs` single values and their checks.

mod sections;
pub use sections::{DEFAULT_QUEUE_MIN, RefusalPolicy, default_queue_max};
#[cfg(test)]
mod tests;
mod vars;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::GroupId;
use crate::redis_link::RedisTarget;
use vars::{Vars, err, is_version};

/// A string that must never be printed: the upstream token and the admin
/// token. `Debug` and `Display` show a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the upstream token is sent: the web client's cookie or the app's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// `Cookie: zsxq_access_token=<token>` (ZSXQ_ACCESS_TOKEN).
    Cookie(Secret),
    /// `Authorization: <token>` (ZSXQ_AUTHORIZATION).
    Header(Secret),
}

impl UpstreamAuth {
    pub fn secret(&self) -> &Secret {
        match self {
            Self::Cookie(s) | Self::Header(s) => s,
        }
    }
}

/// Where the cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A redb file; the default, so the product runs without Redis.
    Embedded { path: PathBuf },
    /// Redis: one server, or a cluster when `url` lists several nodes
    /// (comma-separated) or `REDIS_CLUSTER=true` (the password may be inside
    /// the URLs). `read_from_replicas` only with a cluster.
    Redis {
        url: Secret,
        cluster: bool,
        read_from_replicas: bool,
    },
}

impl StoreConfig {
    /// Where Redis is, for [`crate::redis_link`]; `None` for the embedded
    /// store. The URL list was validated when the configuration was read.
    pub fn redis_target(&self) -> Option<RedisTarget> {
        match self {
            StoreConfig::Embedded { .. } => None,
            StoreConfig::Redis {
                url,
                cluster,
                read_from_replicas,
            } => RedisTarget::parse(url.expose(), *cluster, *read_from_replicas).ok(),
        }
    }
}

/// Everything about talking to the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub base_url: String,
    pub group_id: GroupId,
    pub auth: UpstreamAuth,
    /// Calls per minute for the whole process, spread evenly.
    pub rate_per_min: u32,
    /// Upstream calls in flight at once.
    pub concurrency: usize,
    /// `API_REQUEST_DELAY`: minimum spacing between two calls.
    pub request_delay: Duration,
    /// Per-request timeout; a hung upstream must not hold a caller forever.
    pub timeout: Duration,
    /// Retries of a throttled (1059/429) or transient failure.
    pub max_retries: usize,
    /// First backoff after a throttle; doubled each retry, with jitter.
    pub retry_base: Duration,
    /// `ZSXQ_X_VERSION`: the web client version presented as `X-Version`
    /// (`d.d.d`); the upstream refuses very old ones.
    pub x_version: String,
    /// `UPSTREAM_COOL_DOWN_SECS` and `TOKEN_PROBE_SECS`: how long calls
    /// pause after a run of 1059s, and how often a rejected token is tried.
    pub refusal: RefusalPolicy,
}

/// `ZSXQ_X_VERSION`'s default: what the web client sent in 2025
/// (`docs/UPSTREAM.md`, "Headers").
pub const DEFAULT_X_VERSION: &str = "2.95.0";

/// How the service behaves when its dependencies misbehave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReliabilityConfig {
    /// `STORE_TIMEOUT_MS`: the longest a lookup waits on the store for a
    /// single read before the circuit breaker opens and the near cache or the
    /// upstream answers instead.
    pub store_timeout: Duration,
    /// `NEAR_CACHE_MB` in bytes: the near cache's memory bound (members'
    /// records and their JSON); 0 turns the near cache off, and so does the
    /// older `NEAR_CACHE_SIZE=0`.
    pub near_cache_bytes: u64,
    /// `NEAR_CACHE_TTL`: how long a near-cache entry is trusted without asking
    /// the store; never more than `CACHE_TTL`.
    pub near_cache_ttl: Duration,
    /// `SHUTDOWN_GRACE_SECS`: how long a shutdown waits for in-flight
    /// requests (a sync may be one of them) before the process ends anyway.
    pub shutdown_grace: Duration,
}

/// Who may talk to the HTTP API, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// `HTTP_RATE_LIMIT`: requests per minute per client IP; `None` = off.
    pub http_rate_limit: Option<NonZeroU32>,
    /// `CORS_ORIGINS`: origins a browser may call the API from; empty means
    /// no CORS headers at all (same-origin only).
    pub cors_origins: Vec<String>,
    /// `READ_TOKEN`: when set, every `/api/` request needs it (or the admin
    /// token) as a bearer token; `None` = reads are open.
    pub read_token: Option<Secret>,
    /// `ALLOWED_HOSTS` plus the loopback names and the bound address:
    /// the host names (lowercase, IPv6 in brackets, no port) a request's
    /// `Host` may carry. Anything else is a DNS-rebinding page's request.
    pub allowed_hosts: Vec<String>,
    /// Connection limits of the HTTP server.
    pub connections: ConnectionLimits,
}

/// How long and how many connections the HTTP server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `HTTP_HEADER_TIMEOUT_SECS`: the longest a client may take to send a
    /// request's headers, from its first byte (or from connecting).
    pub header_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_SECS`: how long a keep-alive connection may wait
    /// for its next request.
    pub idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: connections open at once; at the cap the
    /// longest-idle one is closed for a new one.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 1024,
        }
    }
}

/// How long a request may take and how much of the upstream one client may
/// hold: the budget belongs to people who wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `REQUEST_DEADLINE_SECS`: past it a request is answered 504 and
    /// whatever it still queued for is given up.
    pub request_deadline: Duration,
    /// `REFUND_DEADLINE_SECS`: the same for refund lists, their exports and a
    /// synchronous sync, which legitimately make many upstream calls.
    pub long_deadline: Duration,
    /// `INTERACTIVE_QUEUE_MAX`: lookups waiting for an upstream slot at once.
    pub interactive_queue: usize,
    /// `INTERACTIVE_QUEUE_PER_CLIENT`: of those, how many one client address
    /// may hold at most (under the fair share that applies anyway).
    pub queue_per_client: usize,
    /// `UPSTREAM_BODY_MAX_MB` in bytes: the largest upstream answer read.
    pub upstream_body_max: u64,
}

/// How several replicas share one upstream budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetConfig {
    /// `FLEET_BUDGET`: with Redis, take every upstream slot from the fleet's
    /// schedule in Redis (on by default; ignored on the embedded store).
    pub shared: bool,
    /// `FLEET_SIZE_HINT`: how many replicas share the budget; while Redis is
    /// unreachable each one uses `API_RATE_LIMIT / FLEET_SIZE_HINT`.
    pub size_hint: u32,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub store: StoreConfig,
    /// `CACHE_TTL`: how long a member record lives in the store.
    pub cache_ttl: Duration,
    /// `CACHE_ENABLED=false` sends every lookup to the upstream.
    pub cache_enabled: bool,
    /// `CACHE_SOFT_TTL`: older hits are refreshed in the background.
    pub cache_soft_ttl: Duration,
    /// `NEGATIVE_CACHE_TTL`: how long "not a member" answers are remembered.
    pub negative_ttl: Duration,
    /// `NUMBER_SEARCH_WAIT_MS`: how long a lookup of an uncached number
    /// waits for the member-list search before a 503 that says how far it got.
    pub number_search_wait: Duration,
    /// `WARMUP_INTERVAL` (0 = off) and `WARMUP_BATCH`: scheduled refresh of
    /// the members closest to expiry.
    pub warmup_interval: Duration,
    pub warmup_batch: u64,
    pub upstream: UpstreamConfig,
    /// Admin endpoints are refused unless this is set.
    pub admin_token: Option<Secret>,
    pub reliability: ReliabilityConfig,
    pub edge: EdgeConfig,
    pub fleet: FleetConfig,
    pub limits: LimitsConfig,
}

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// Reads `.env` from the working directory into the environment, without
/// overriding variables that are already set. A missing file is normal; a
/// malformed one is worth a warning only, because real environment
/// variables may still carry everything. Called before logging starts
/// (`RUST_LOG`, `LOG_FORMAT`) and again by [`Config::from_env`]; the second
/// read changes nothing.
pub fn load_dotenv() {
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("warning: .env could not be read: {e}");
    }
}

impl Config {
    /// Reads `.env` (if present) and then the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        load_dotenv();
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Parses a configuration from a variable map (the whole environment).
    pub fn from_vars(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let v = Vars(map);
        let host = v.parse(
            "HOST",
            IpAddr::from([127, 0, 0, 1]),
            "an IP address",
            |_| true,
        )?;
        let port = v.parse("PORT", 3013u16, "a port number 1..65535", |p| *p > 0)?;
        let cache_ttl = v.parse("CACHE_TTL", 86_400u64, "seconds, 1..31536000", |s| {
            (1..=31_536_000).contains(s)
        })?;
        let cache_enabled = v.bool("CACHE_ENABLED", true)?;
        let soft_ttl = v.parse(
            "CACHE_SOFT_TTL",
            cache_ttl * 3 / 4,
            "seconds, 1..CACHE_TTL",
            |s| (1..=cache_ttl).contains(s),
        )?;
        let negative_ttl = v.parse("NEGATIVE_CACHE_TTL", 300u64, "seconds, 0..86400", |s| {
            *s <= 86_400
        })?;
        let number_search_wait = v.parse(
            "NUMBER_SEARCH_WAIT_MS",
            10_000u64,
            "milliseconds, 100..60000",
            |ms| (100..=60_000).contains(ms),
        )?;
        let warmup_interval = v.parse("WARMUP_INTERVAL", 600u64, "seconds, 0..86400", |s| {
            *s <= 86_400
        })?;
        let warmup_batch = v.parse("WARMUP_BATCH", 20u64, "an integer 0..1000", |b| *b <= 1000)?;
        let rate_per_min = v.parse("API_RATE_LIMIT", 50u32, "calls per minute, 1..6000", |r| {
            (1..=6000).contains(r)
        })?;
        let concurrency = v.parse("API_CONCURRENCY", 5usize, "an integer 1..50", |c| {
            (1..=50).contains(c)
        })?;
        let delay_ms = v.parse("API_REQUEST_DELAY", 200u64, "milliseconds, 0..60000", |d| {
            *d <= 60_000
        })?;
        let timeout_ms = v.parse(
            "API_TIMEOUT_MS",
            10_000u64,
            "milliseconds, 100..120000",
            |t| (100..=120_000).contains(t),
        )?;
        let max_retries = v.parse("API_MAX_RETRIES", 4usize, "an integer 0..10", |r| *r <= 10)?;
        let retry_base_ms = v.parse(
            "API_RETRY_BASE_MS",
            1_000u64,
            "milliseconds, 1..60000",
            |r| (1..=60_000).contains(r),
        )?;

        let x_version = v.get("ZSXQ_X_VERSION").unwrap_or(DEFAULT_X_VERSION);
        if !is_version(x_version) {
            return Err(err(
                "ZSXQ_X_VERSION",
                format!("expected a version like {DEFAULT_X_VERSION}, got {x_version:?}"),
            ));
        }
        let cool_down = v.parse("UPSTREAM_COOL_DOWN_SECS", 60u64, "seconds, 1..3600", |s| {
            (1..=3_600).contains(s)
        })?;
        let probe_every = v.parse("TOKEN_PROBE_SECS", 60u64, "seconds, 1..3600", |s| {
            (1..=3_600).contains(s)
        })?;
        let base_url = v.get("ZSXQ_API_BASE").unwrap_or("https://api.zsxq.com");
        let base_url = base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(err(
                "ZSXQ_API_BASE",
                format!("expected an http(s) URL, got {base_url:?}"),
            ));
        }
        let group_id = match v.get("ZSXQ_GROUP_ID") {
            None => {
                return Err(err(
                    "ZSXQ_GROUP_ID",
                    "not set: the id of your 星球 (group), digits only",
                ));
            }
            Some(raw) => GroupId::parse(raw).map_err(|e| err("ZSXQ_GROUP_ID", e.to_string()))?,
        };
        let auth = match (v.get("ZSXQ_ACCESS_TOKEN"), v.get("ZSXQ_AUTHORIZATION")) {
            (Some(t), _) => UpstreamAuth::Cookie(Secret::new(t)),
            (None, Some(t)) => UpstreamAuth::Header(Secret::new(t)),
            (None, None) => {
                return Err(err(
                    "ZSXQ_ACCESS_TOKEN",
                    "not set: give ZSXQ_ACCESS_TOKEN (cookie) or ZSXQ_AUTHORIZATION (header)",
                ));
            }
        };

        let store = Self::store_from(&v)?;
        let admin_token = match v.get("ADMIN_TOKEN") {
            None => None,
            Some(t) if t.len() < 16 => {
                return Err(err("ADMIN_TOKEN", "too short: use at least 16 characters"));
            }
            Some(t) => Some(Secret::new(t)),
        };

        let reliability = Self::reliability_from(&v, cache_ttl)?;
        let edge = Self::edge_from(&v, host)?;
        let limits = Self::limits_from(&v, rate_per_min)?;
        let fleet = FleetConfig {
            shared: v.bool("FLEET_BUDGET", true)?,
            size_hint: v.parse(
                "FLEET_SIZE_HINT",
                1u32,
                "the number of replicas, 1..100",
                |n| (1..=100).contains(n),
            )?,
        };

        Ok(Config {
            host,
            port,
            store,
            cache_ttl: Duration::from_secs(cache_ttl),
            cache_enabled,
            cache_soft_ttl: Duration::from_secs(soft_ttl.max(1)),
            negative_ttl: Duration::from_secs(negative_ttl),
            number_search_wait: Duration::from_millis(number_search_wait),
            warmup_interval: Duration::from_secs(warmup_interval),
            warmup_batch,
            upstream: UpstreamConfig {
                base_url,
                group_id,
                auth,
                rate_per_min,
                concurrency,
                request_delay: Duration::from_millis(delay_ms),
                timeout: Duration::from_millis(timeout_ms),
                max_retries,
                retry_base: Duration::from_millis(retry_base_ms),
                x_version: x_version.to_string(),
                refusal: RefusalPolicy {
                    cool_down: Duration::from_secs(cool_down),
                    probe_every: Duration::from_secs(probe_every),
                },
            },
            admin_token,
            reliability,
            edge,
            fleet,
            limits,
        })
    }
}
